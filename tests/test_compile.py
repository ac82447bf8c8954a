"""Optional compilation: same losses and gradients as eager, one warning on fallback."""

from __future__ import annotations

import warnings

import pytest
import torch

from mflows.compile import CompileFallbackWarning, compile_function, compile_losses
from mflows.models import make_model
from mflows.transforms.linear import LULinear

TINY = dict(outer_layers=1, inner_layers=1, hidden_features=8, num_blocks=1, num_bins=4)


def _mse(model, x, context):
    return (x - model.project(x, context)).square().sum(-1).mean()


def _latent_nll(model, u, context):
    return -model.latent_log_prob(u, context).mean()


def test_compiled_losses_and_gradients_match_eager():
    torch.manual_seed(0)
    model = make_model("mflow", 3, 2, context_dim=1, seed=0, **TINY)
    for p in model.parameters():  # move away from the identity initialisation
        p.data.add_(0.1 * torch.randn_like(p))
    x, c = torch.randn(16, 3), torch.randn(16, 1)
    u = model.encode(x, c).detach()
    for fn, data in [(_mse, x), (_latent_nll, u)]:
        compiled = compile_losses(fn, backend="aot_eager")  # inductor: benchmarks/compare_speed.py
        with warnings.catch_warnings():
            warnings.simplefilter("error", CompileFallbackWarning)
            got = compiled(model, data, c)
        assert compiled.compiled is True
        (grads_got,) = [torch.autograd.grad(got, list(model.parameters()), allow_unused=True)]
        want = fn(model, data, c)
        grads_want = torch.autograd.grad(want, list(model.parameters()), allow_unused=True)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for a, b in zip(grads_got, grads_want):
            if b is None:
                assert a is None or torch.count_nonzero(a) == 0
            else:
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _broken_backend(graph_module, example_inputs):
    raise RuntimeError("this backend cannot compile anything")


def test_fallback_warns_once_and_gives_eager_results():
    calls = []

    def square_sum(x):
        calls.append(1)
        return (x * x).sum()

    fn = compile_function(square_sum, backend=_broken_backend)
    x = torch.arange(4.0)
    with pytest.warns(CompileFallbackWarning, match="square_sum"):
        assert fn(x).item() == 14.0
    assert fn.compiled is False
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        assert fn(x + 1).item() == 30.0
        assert fn(x).item() == 14.0


def test_genuine_errors_propagate_without_warning():
    def needs_matrix(x):
        return torch.linalg.inv(x)

    fn = compile_function(needs_matrix, backend=_broken_backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        with pytest.raises(RuntimeError):
            fn(torch.zeros(3))
    assert fn.compiled is not True


@pytest.mark.parametrize(
    "kind, weights",
    [
        ("mflow", {"mse": 1.0}),
        ("mflow", {"latent_nll": 1.0}),
        ("af", {"nll": 1.0}),
        ("mflow-lu", {"mse": 1.0}),  # LU layers: the triangular solves of the decoder
    ],
)
def test_training_losses_compile_to_one_graph(kind, weights):
    # the input and output checks of the models are data-dependent branches; under compilation
    # they step aside, so a training step is one graph (graph breaks cost fusion, extra guard
    # evaluations and one warning per compilation)
    from mflows.training.trainer import compute_losses

    torch._dynamo.reset()
    tiny = dict(TINY) if kind != "af" else {k: v for k, v in TINY.items() if k != "inner_layers"}
    if kind == "mflow-lu":
        kind, tiny["linear"], tiny["outer_layers"] = "mflow", "lu", 2
    model = make_model(kind, 3, 2 if kind == "mflow" else None, context_dim=1, seed=0, **tiny)
    if tiny.get("linear") == "lu":
        assert any(isinstance(m, LULinear) for m in model.modules())
    x, c = torch.randn(16, 3), torch.randn(16, 1)
    explanation = torch._dynamo.explain(compute_losses)(model, x, c, None, weights, {})
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_more_variants_than_torchs_limit_stay_compiled():
    # torch compiles at most 8 variants of a function and then runs it eagerly; a process that
    # trains many models hits that (one variant per model, phase, batch size and mode)
    from torch._dynamo.utils import counters

    def scale(x):
        return x * 2.0 + 1.0

    torch._dynamo.reset()
    counters.clear()
    fn = compile_function(scale, dynamic=False)
    for size in range(1, 13):  # 12 static shapes: 12 variants
        torch.testing.assert_close(fn(torch.ones(size)), torch.full((size,), 3.0))
    assert fn.compiled is True
    assert counters["stats"]["unique_graphs"] == 12
    assert torch._dynamo.config.recompile_limit == 8  # the global setting is left alone


@pytest.mark.parametrize(
    ("compile", "layers", "expected"),
    [(True, 1, {"cpp_wrapper": True}), (True, 20, None), ("aot_eager", 1, None)],
)
def test_trainer_asks_inductor_for_its_cpp_wrapper_on_small_cpu_models(
    monkeypatch, compile, layers, expected
):
    """On the CPU, fit(compile=True) compiles small models with inductor's C++ wrapper and large
    ones without (docs/benchmarks.md); another backend gets no inductor options."""
    from mflows.training import trainer as trainer_module
    from mflows.training.phases import schedule_for

    seen = {}

    def spy(fn, **options):
        seen.update(options)
        return fn

    monkeypatch.setattr(trainer_module, "compile_losses", spy)
    monkeypatch.setattr(trainer_module, "_COMPILED_LOSSES", {})
    arch = dict(TINY, outer_layers=layers, inner_layers=layers)
    model = make_model("mflow", 3, 2, seed=0, **arch)
    assert (len(list(model.parameters())) <= trainer_module.CPP_WRAPPER_MAX_TENSORS) == (
        layers == 1
    )
    trainer_module.Trainer(model, schedule_for("alternating", model, epochs=1), compile=compile)
    assert seen.get("options") == expected
    assert seen.get("backend", "inductor") == ("inductor" if compile is True else compile)


def test_inductor_notes_on_ops_without_c_entry_points_are_silenced(caplog):
    """With inductor's C++ wrapper, ops without a C entry point (the LU layers' triangular
    solve) log one warning per call site; compiled calls drop exactly those notes."""
    import logging

    logger = logging.getLogger("torch._inductor.ir")

    def noisy(x):
        logger.warning("%s is missing a c-shim implementation, using proxy executor", "op")
        logger.warning("another warning")
        return x + 1

    fn = compile_function(noisy, backend="eager")
    with caplog.at_level(logging.WARNING, logger="torch._inductor.ir"):
        fn(torch.zeros(2))
    messages = [r.getMessage() for r in caplog.records]
    assert "another warning" in messages
    assert not any("c-shim" in m for m in messages)
    logger.warning("%s is missing a c-shim implementation", "op")  # outside: not filtered
    assert any("c-shim" in r.getMessage() for r in caplog.records)


def test_eager_calls_between_compiled_steps_cause_no_recompilation():
    # the transforms keep small caches of constants for eager calls; a compiled graph that read
    # them would be compiled again once an eager call (a validation pass) had filled them
    from torch._dynamo.utils import counters

    from mflows.training.trainer import compute_losses
    from mflows.transforms import splines
    from mflows.transforms.constants import _CACHE

    torch._dynamo.reset()
    counters.clear()
    splines._PAIRS.clear()
    _CACHE.clear()
    model = make_model("mflow", 3, 2, context_dim=1, seed=0, **TINY)
    x, c = torch.randn(16, 3), torch.randn(16, 1)
    fn = compile_losses(compute_losses, backend="eager")
    fn(model, x, c, None, {"mse": 1.0}, {})
    compute_losses(model, x, c, None, {"mse": 1.0}, {})  # eager: fills the caches
    assert splines._PAIRS
    fn(model, x, c, None, {"mse": 1.0}, {})
    assert fn.compiled is True
    assert counters["stats"]["unique_graphs"] == 1


def test_losses_compiled_for_one_model_skip_its_module_guards_but_stay_apart():
    """A trainer's compiled losses skip torch's guards on module attributes (one model, never
    changed). Such variants must not serve another model: two models of different sizes and
    both phases' loss weights, called in turn, each get their own eager values."""
    from torch._dynamo.utils import counters

    from mflows.compile import module_guard_options
    from mflows.training.trainer import compute_losses

    if tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 13):
        assert module_guard_options()["isolate_recompiles"] is True  # in use where torch has it
    torch._dynamo.reset()
    counters.clear()
    models = [
        make_model("mflow", 3, 2, context_dim=1, seed=0, **TINY),
        make_model("mflow", 3, 2, context_dim=1, seed=1, **dict(TINY, outer_layers=2)),
    ]
    for model in models:  # away from the identity initialisation, where both project alike
        for p in model.parameters():
            p.data.add_(0.1 * torch.randn_like(p))
    fns = [compile_losses(compute_losses, fixed_modules=True, backend="eager") for _ in models]
    x, c = torch.randn(16, 3), torch.randn(16, 1)
    for _ in range(2):
        for model, fn in zip(models, fns):
            for weights in ({"mse": 1.0}, {"latent_nll": 1.0}):
                got = fn(model, x, c, None, weights, {})
                want = compute_losses(model, x, c, None, weights, {})
                assert fn.compiled is True
                torch.testing.assert_close(got["loss"], want["loss"], rtol=0, atol=0)
    # one graph per model and phase, none compiled twice
    assert counters["stats"]["unique_graphs"] == 4


def test_validation_shares_the_encoding_between_projection_and_latent_loss(monkeypatch):
    """Without gradients, compute_losses encodes once for mse + latent_nll; the values are
    those of separate passes, bit for bit, for every kind with a manifold."""
    from mflows.training import trainer as trainer_module

    x, c = torch.randn(32, 3), torch.randn(32, 1)
    weights = {"mse": 1.0, "latent_nll": 1.0}
    for kind in ("pie", "mflow", "emflow", "pae", "fom"):
        model = make_model(kind, 3, 2, context_dim=1, seed=0).eval()
        calls = []

        def counted(*args, _encode=model.encode, _calls=calls, **kwargs):
            _calls.append(1)
            return _encode(*args, **kwargs)

        monkeypatch.setattr(model, "encode", counted)
        with torch.no_grad():
            shared = trainer_module.compute_losses(model, x, c, None, weights)
            assert len(calls) == 1
            monkeypatch.setattr(type(model), "has_manifold", False)
            separate = trainer_module.compute_losses(model, x, c, None, weights)
            monkeypatch.undo()
        assert len(calls) == 2  # one more for the separate latent loss (project is internal)
        for k in separate:
            torch.testing.assert_close(shared[k], separate[k], rtol=0, atol=0)


def test_trainers_share_compiled_losses_only_between_models_of_one_architecture(monkeypatch):
    """Graphs without module guards may serve another model only if it traces alike: trainers
    of two seeds of one architecture share them, another architecture does not; and a model
    trained through shared graphs gets the losses of its own weights."""
    from mflows.training import trainer as trainer_module
    from mflows.training.phases import schedule_for

    monkeypatch.setattr(trainer_module, "_COMPILED_LOSSES", {})

    def losses_of(model):
        schedule = schedule_for("alternating", model, epochs=1)
        return trainer_module.Trainer(model, schedule, compile="aot_eager")._losses

    a, b = (make_model("mflow", 3, 2, context_dim=1, seed=s, **TINY) for s in (0, 1))
    other = make_model("mflow", 3, 2, context_dim=1, seed=0, **dict(TINY, num_bins=6))
    assert losses_of(a) is losses_of(b)
    assert losses_of(other) is not losses_of(a)
    assert len(trainer_module._COMPILED_LOSSES) == 2
    x, c = torch.randn(16, 3), torch.randn(16, 1)
    shared = losses_of(b)
    for model in (a, b, other):
        for p in model.parameters():
            p.data.add_(0.1 * torch.randn_like(p))
    for model in (a, b):
        for weights in ({"mse": 1.0}, {"latent_nll": 1.0}):
            got = shared(model, x, c, None, weights, {})
            want = trainer_module.compute_losses(model, x, c, None, weights, {})
            torch.testing.assert_close(got["loss"], want["loss"], rtol=0, atol=0)
