"""Tests of mflows.training: schemes, phase isolation, resume, NaN guard, early stopping, inputs.

All tests train tiny real models (mflows.models.make_model) on the power data (d = 3, n = 2).
"""

from __future__ import annotations

import csv
import math
import re
import warnings

import numpy as np
import pytest
import torch

import mflows.data
from mflows.initialization import initialize_from_data
from mflows.models import make_model
from mflows.training import (
    Phase,
    Schedule,
    Stage,
    TrainingDivergedError,
    compute_losses,
    fit,
    load_checkpoint,
    schedule_for,
)

SINKHORN = {"blur": 0.3, "scaling": 0.7}


def tiny(kind: str, context_dim: int = 0, seed: int = 0, dtype=torch.float32):
    arch = {"hidden_features": 16, "num_blocks": 1, "seed": seed}
    if kind != "fom":
        arch.update(num_bins=4, tail_bound=6.0)
    if kind in ("af", "pie", "mflow", "emflow"):
        arch["outer_layers"] = 2
    if kind != "af":
        arch["inner_layers"] = 2
    if kind in ("emflow", "pae"):
        arch.update(encoder_hidden_features=16, encoder_num_blocks=1)
    if kind == "pae":
        arch.update(decoder_hidden_features=16, decoder_num_blocks=1)
    latent = 3 if kind == "af" else 2
    return make_model(kind, 3, latent, context_dim, **arch).to(dtype)


@pytest.fixture(scope="module")
def power():
    return mflows.data.get("power").load("train", n=120, seed=3)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def evaluate(model, x, weights, context=None, scores=None):
    torch.manual_seed(123)  # same Sinkhorn samples before and after training
    x = torch.as_tensor(x, dtype=model.dtype)
    if context is not None:
        context = torch.as_tensor(context, dtype=model.dtype)
        scores = None if scores is None else torch.as_tensor(scores, dtype=model.dtype)
    with torch.set_grad_enabled("score" in weights):
        terms = compute_losses(model, x, context, scores, weights, SINKHORN)
    return {k: float(v.detach()) for k, v in terms.items() if k != "loss"}


COMMON = {"batch_size": 30, "progress": False, "sinkhorn_options": SINKHORN}


@pytest.mark.parametrize(
    ("kind", "algorithm", "epochs", "terms"),
    [
        ("af", "likelihood", 3, ("nll",)),
        ("pie", "likelihood", 3, ("nll",)),
        ("mflow", "likelihood", 2, ("nll", "mse")),
        ("mflow", "alternating", 3, ("mse", "latent_nll")),
        ("mflow", "sequential", (2, 2), ("mse", "latent_nll")),
        ("emflow", "alternating", 3, ("mse", "latent_nll")),
        ("pae", "pae", (2, 2), ("mse", "latent_nll")),
        ("mflow", "ot", 3, ("sinkhorn",)),
        # regression: the original crashed on OT + alternating unless the score loss was on
        ("mflow", "ot-alternating", 3, ("sinkhorn", "latent_nll")),
    ],
)
def test_scheme_reduces_its_losses(power, kind, algorithm, epochs, terms):
    model = tiny(kind)
    weights = {t: 1.0 for t in terms}
    # start from the data-aware initialisation that fit applies (fit then leaves it alone)
    initialize_from_data(model, power.x)
    before = evaluate(model, power.x, weights)
    history = fit(
        model,
        power.x,
        algorithm=algorithm,
        epochs=epochs,
        lr=3e-3,
        reconstruction_weight=10.0,
        **COMMON,
    )
    after = evaluate(model, power.x, weights)
    total = sum(epochs) if isinstance(epochs, tuple) else epochs
    assert len(history) == total
    for t in terms:
        assert after[t] < before[t], (t, before[t], after[t])
    assert all(math.isfinite(v) for v in history.train_loss + history.val_loss)


def test_scandal_trains_the_score(power):
    # Conditional M-flow on the power data with a synthetic joint score t = -theta
    # (the score of a standard normal "prior" term): the score loss must drop.
    model = tiny("mflow", context_dim=1)
    theta = power.theta
    scores = -theta
    weights = {"latent_nll": 1.0, "score": 1.0}
    before = evaluate(model, power.x, weights, theta, scores)
    fit(
        model,
        power.x,
        theta,
        algorithm="alternating",
        scores=scores,
        scandal=True,
        scandal_weight=5.0,
        epochs=3,
        lr=3e-3,
        **COMMON,
    )
    after = evaluate(model, power.x, weights, theta, scores)
    assert after["score"] < before["score"]


@pytest.mark.parametrize("kind", ["mflow", "emflow"])
def test_md_phases_change_only_their_parameters(power, kind):
    model = tiny(kind)
    names = {id(p): n for n, p in model.named_parameters()}
    manifold = {names[id(p)] for p in model.manifold_parameters()}
    density = {names[id(p)] for p in model.density_parameters()}
    assert manifold and density and not manifold & density
    states = [snapshot(model)]
    schedule = schedule_for("alternating", model, epochs=2, alternate="epoch")
    fit(
        model,
        power.x,
        schedule=schedule,
        early_stopping=False,
        callback=lambda epoch, record: states.append(snapshot(model)),
        **COMMON,
    )
    # epoch 1 trained the manifold phase, epoch 2 the density phase
    for (before, after), owned, frozen in [
        ((states[0], states[1]), manifold, density),
        ((states[1], states[2]), density, manifold),
    ]:
        for name in frozen:
            assert torch.equal(before[name], after[name]), name
        assert any(not torch.equal(before[name], after[name]) for name in owned)


def test_ot_manifold_phase_leaves_h_untouched(power):
    model = tiny("mflow")
    density = [
        n for n, p in model.named_parameters() if any(p is q for q in model.density_parameters())
    ]
    before = snapshot(model)
    schedule = Schedule((Stage((Phase("ot-manifold", "manifold", {"sinkhorn": 1.0}),), 1),))
    fit(model, power.x, schedule=schedule, **COMMON)
    after = snapshot(model)
    for name in density:
        assert torch.equal(before[name], after[name])


class Interrupt(Exception):
    pass


def _interrupt_at(epoch_to_stop):
    def callback(epoch, record):
        if epoch == epoch_to_stop:
            raise Interrupt

    return callback


@pytest.mark.parametrize(
    ("algorithm", "epochs", "stop"),
    [("alternating", 3, 2), ("sequential", (1, 2), 2), ("sequential", (1, 1), 1)],
)
def test_resume_is_bit_identical(power, tmp_path, algorithm, epochs, stop):
    kwargs = dict(algorithm=algorithm, epochs=epochs, lr=3e-3, patience=3, **COMMON)
    reference = tiny("mflow")
    ref_history = fit(reference, power.x, checkpoint_dir=tmp_path / "a", **kwargs)

    model = tiny("mflow")
    with pytest.raises(Interrupt):
        fit(model, power.x, checkpoint_dir=tmp_path / "b", callback=_interrupt_at(stop), **kwargs)
    assert len(load_checkpoint(tmp_path / "b")["history"]["records"]) == stop
    fresh = tiny("mflow", seed=7)  # a new process would rebuild the model differently
    history = fit(fresh, power.x, checkpoint_dir=tmp_path / "b", resume=True, **kwargs)
    assert_same_state(snapshot(reference), snapshot(fresh))
    assert history.val_loss == ref_history.val_loss
    assert history.best_epoch == ref_history.best_epoch
    # Resuming a finished run changes nothing.
    again = fit(fresh, power.x, checkpoint_dir=tmp_path / "b", resume=True, **kwargs)
    assert again.val_loss == ref_history.val_loss
    assert_same_state(snapshot(reference), snapshot(fresh))


def test_resume_refuses_a_different_run(power, tmp_path):
    fit(
        tiny("mflow"), power.x, algorithm="alternating", epochs=1, checkpoint_dir=tmp_path, **COMMON
    )
    with pytest.raises(ValueError, match="batch_size"):
        fit(
            tiny("mflow"),
            power.x,
            algorithm="alternating",
            epochs=1,
            checkpoint_dir=tmp_path,
            resume=True,
            batch_size=20,
            progress=False,
        )


def test_nan_guard_names_epoch_and_keeps_last_good_checkpoint(power, tmp_path):
    model = tiny("af")

    def poison(epoch, record):
        if epoch == 2:
            with torch.no_grad():
                next(iter(model.parameters())).fill_(float("nan"))

    with pytest.raises(TrainingDivergedError, match=r"epoch 3, batch 1/\d+.*nll=nan") as info:
        fit(
            model,
            power.x,
            algorithm="likelihood",
            epochs=4,
            checkpoint_dir=tmp_path,
            callback=poison,
            **COMMON,
        )
    assert isinstance(info.value, FloatingPointError)
    assert f"{tmp_path / 'checkpoint.pt'} (after epoch 2)" in str(info.value)
    state = load_checkpoint(tmp_path)
    assert len(state["history"]["records"]) == 2
    restored = tiny("af", seed=5)
    restored.load_state_dict(state["model_state"])
    assert all(torch.isfinite(v).all() for v in restored.state_dict().values())
    assert torch.isfinite(restored.log_prob(torch.as_tensor(power.x[:10]))).all()


def test_huge_learning_rate_diverges_cleanly(power):
    model = tiny("af")
    with pytest.raises(TrainingDivergedError, match="epoch"):
        fit(model, power.x * 1e30, algorithm="likelihood", epochs=1, standardize=False, **COMMON)


def test_early_stopping_restores_a_deep_copy_of_the_best_weights(power):
    # Wreck the weights after epoch 2; with a tiny lr later epochs cannot recover, so the best
    # epoch is 2 and the final weights must equal the weights seen after epoch 2 (the original
    # aliased the live parameters and silently kept the last epoch).
    def run(early_stopping):
        model = tiny("mflow")
        seen = {}

        def wreck(epoch, record):
            seen[epoch] = snapshot(model)
            if epoch == 2:
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(torch.randn_like(p))

        history = fit(
            model,
            power.x,
            algorithm="alternating",
            epochs=3,
            lr=1e-5,
            callback=wreck,
            early_stopping=early_stopping,
            standardize=False,  # the lr-1e-5 premise was measured in raw data space
            **COMMON,
        )
        return model, history, seen

    model, history, seen = run(True)
    assert history.best_epoch == 2
    assert min(range(3), key=lambda i: history.val_loss[i]) + 1 == 2
    assert_same_state(snapshot(model), seen[2])
    # Without early stopping the same run ends elsewhere: restoring really changed the weights.
    last, history_last, _ = run(False)
    assert history_last.val_loss == history.val_loss
    assert history_last.best_epoch is None
    assert any(not torch.equal(v, seen[2][k]) for k, v in snapshot(last).items())


def test_alternating_early_stopping_follows_the_reconstruction_error(power):
    # latent NLLs of different manifolds are not comparable (each is measured in the coordinates
    # of its own chart): the alternating scheme keeps the epoch with the best validation MSE,
    # whatever the latent NLL does.
    schedule = schedule_for("alternating", tiny("mflow"), epochs=3)
    assert schedule.stages[0].monitor == ("mse",)
    model = tiny("mflow")
    history = fit(model, power.x, algorithm="alternating", epochs=3, **COMMON)
    mse = history.column("val_mse")
    assert history.column("val_monitor") == mse
    assert history.best_epoch == 1 + min(range(3), key=lambda i: mse[i])
    with pytest.raises(ValueError, match="monitor"):
        Stage((Phase("m", "manifold", {"mse": 1.0}),), 1, monitor=("latent_nll",))


def test_deterministic_for_a_fixed_seed(power):
    a, b, c = tiny("emflow"), tiny("emflow"), tiny("emflow")
    kwargs = dict(algorithm="alternating", epochs=2, **COMMON)
    ha = fit(a, power.x, seed=1, **kwargs)
    hb = fit(b, power.x, seed=1, **kwargs)
    fit(c, power.x, seed=2, **kwargs)
    assert_same_state(snapshot(a), snapshot(b))
    assert ha.val_loss == hb.val_loss
    assert any(not torch.equal(v, snapshot(c)[k]) for k, v in snapshot(a).items())


def test_history_csv_checkpoint_and_quiet_progress(power, tmp_path, capsys):
    history = fit(
        tiny("mflow"),
        power.x,
        algorithm="sequential",
        epochs=(1, 2),
        log_dir=tmp_path / "logs",
        checkpoint_dir=tmp_path / "ckpt",
        **COMMON,
    )
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    for directory in ("logs", "ckpt"):
        with open(tmp_path / directory / "history.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
        assert [r["phases"] for r in rows] == ["manifold", "density", "density"]
        assert float(rows[0]["train_mse"]) == pytest.approx(history.records[0]["train_mse"])
        assert rows[2]["val_latent_nll"] != ""
    assert history.wall_time > 0
    assert history.best_epoch in (2, 3)
    state = load_checkpoint(tmp_path / "ckpt")
    assert state["progress"]["finished"]
    history.to_csv(tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_text().splitlines()[0].startswith("epoch,stage,phases")


def test_progress_bar_is_shown_by_default(power, capsys):
    fit(tiny("af"), power.x, algorithm="likelihood", epochs=1, batch_size=90)
    assert "epoch" in capsys.readouterr().err


# ------------------------------------------------------------------------------ bad inputs
def _raises(match, model, x, context=None, **kwargs):
    kwargs.setdefault("algorithm", "likelihood")
    with pytest.raises(ValueError, match=match):
        fit(model, x, context, epochs=1, progress=False, **kwargs)


def test_bad_inputs_raise_before_training(power):
    x = torch.as_tensor(power.x)
    bad = x.clone()
    bad[3, 1] = float("nan")
    af, mf = tiny("af"), tiny("mflow")
    untouched = snapshot(mf)
    _raises("non-finite", af, bad)
    _raises("inf|non-finite", af, x.clone().index_fill_(0, torch.tensor([0]), math.inf))
    _raises("too few samples", af, x[:2], validation_split=0.25)
    _raises("too few samples", af, x[:1], validation_split=0.0)
    _raises(r"x.shape\[-1\] == 3", af, x[:, :2])
    _raises("validation_split", af, x, validation_split=1.0)
    _raises("unconditional", af, x, torch.zeros(len(x), 1))
    _raises("unknown training algorithm 'flow'.*likelihood.*sequential", mf, x, algorithm="flow")
    _raises("does not fit a model of kind 'af'", af, x, algorithm="alternating")
    _raises("does not fit a model of kind 'pie'", tiny("pie"), x, algorithm="sequential")
    _raises("does not fit a model of kind 'mflow'", mf, x, algorithm="pae")
    _raises("does not fit a model of kind 'pae'", tiny("pae"), x, algorithm="likelihood")
    _raises("conditional model", mf, x, algorithm="alternating", scandal=True)
    cond = tiny("mflow", context_dim=1)
    theta = torch.as_tensor(power.theta)
    _raises(r"context of shape \(120, 1\)", cond, x)
    _raises(r"\(120, 1\) to match x", cond, x, theta[:-1])
    _raises(r"context.shape\[-1\] == 1", cond, x, torch.zeros(len(x), 2))
    _raises("scores of shape", cond, x, theta, algorithm="alternating", scandal=True)
    _raises(r"scores of shape \(120, 1\) to match", cond, x, theta, scores=theta[:5], scandal=True)
    _raises("needs a likelihood", cond, x, theta, algorithm="ot", scores=theta, scandal=True)
    assert_same_state(untouched, snapshot(mf))


# ------------------------------------------------------------------- schedules and checkpoints
def test_schedules_are_data():
    mf, af = tiny("mflow"), tiny("af")
    seq = schedule_for("sequential", mf, epochs=(3, 2))
    assert [s.epochs for s in seq.stages] == [3, 2]
    assert [s.phases[0].parameters for s in seq.stages] == ["manifold", "density"]
    assert seq.stages[0].phases[0].losses == {"mse": 1.0}
    alt = schedule_for("alternating", mf, epochs=4, alternate="epoch", scandal=True)
    (stage,) = alt.stages
    assert [p.name for p in stage.phases_in_epoch(0)] == ["manifold"]
    assert [p.name for p in stage.phases_in_epoch(1)] == ["density"]
    assert stage.phases[1].losses == {"latent_nll": 1.0, "score": 1.0}
    ot_alt = schedule_for("ot-alternating", mf, epochs=2)
    assert [p.losses for p in ot_alt.stages[0].phases] == [{"sinkhorn": 1.0}, {"latent_nll": 1.0}]
    lik = schedule_for("likelihood", mf, epochs=2, reconstruction_weight=7.0)
    assert lik.stages[0].phases[0].losses == {"nll": 1.0, "mse": 7.0}
    assert schedule_for("likelihood", af, epochs=2).stages[0].phases[0].losses == {"nll": 1.0}
    assert seq.describe()["stages"][1]["phases"][0]["losses"] == {"latent_nll": 1.0}
    with pytest.raises(ValueError, match="losses must be"):
        Phase("x", "all", {"bogus": 1.0})
    with pytest.raises(ValueError, match="parameters must be"):
        Phase("x", "encoder", {"mse": 1.0})


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    from pathlib import Path

    from mflows.training import checkpoint

    header = {"format": checkpoint.CHECKPOINT_FORMAT, "version": checkpoint.CHECKPOINT_VERSION}
    checkpoint.save_checkpoint({**header, "a": 1}, tmp_path / "c.pt")

    def broken_save(obj, path):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint({**header, "a": 2}, tmp_path / "c.pt")
    monkeypatch.undo()
    assert checkpoint.load_checkpoint(tmp_path / "c.pt")["a"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


# --------------------------------------------------------------------- defaults, ranges, NaN
def test_fit_trainer_and_schedule_for_share_their_defaults():
    import inspect

    from mflows.training import Trainer, defaults

    def params(f):
        return {k: v.default for k, v in inspect.signature(f).parameters.items()}

    fit_defaults, trainer_defaults = params(fit), params(Trainer.__init__)
    schedule_defaults = params(schedule_for)
    for name in ("batch_size", "lr", "weight_decay", "optimizer", "clip", "early_stopping",
                 "patience", "seed"):  # fmt: skip
        assert trainer_defaults[name] == fit_defaults[name], name
    for name in ("epochs", "reconstruction_weight", "scandal_weight", "alternate"):
        assert schedule_defaults[name] == fit_defaults[name], name
    assert (fit_defaults["weight_decay"], fit_defaults["clip"]) == (1e-4, 1.0)
    assert fit_defaults["reconstruction_weight"] == defaults.RECONSTRUCTION_WEIGHT == 1000.0
    schedule = schedule_for("likelihood", tiny("mflow"))
    assert schedule.stages[0].phases[0].losses["mse"] == fit_defaults["reconstruction_weight"]
    trainer = Trainer(tiny("mflow"), schedule)
    assert (trainer.weight_decay, trainer.clip) == (1e-4, 1.0)


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"clip": 0.0}, r"clip > 0 \(None switches it off\)"),
        ({"clip": -1.0}, "clip > 0"),
        ({"clip": math.nan}, "clip must be finite"),
        ({"reconstruction_weight": -1.0}, "reconstruction_weight >= 0"),
        ({"reconstruction_weight": math.inf}, "reconstruction_weight must be finite"),
        ({"lr": math.inf}, "lr must be finite"),
        ({"lr": math.nan}, "lr must be finite"),
        ({"lr": 0.0}, "lr > 0"),
        ({"lr": -1e-3}, "lr > 0"),
        ({"weight_decay": math.nan}, "weight_decay must be finite"),
        ({"weight_decay": -1.0}, "weight_decay >= 0"),
        ({"epochs": 0}, "epochs >= 1"),
        ({"epochs": 2.5}, "epochs must be an integer"),
        ({"epochs": True}, "epochs must be an integer"),
        ({"batch_size": 0}, "batch_size >= 1"),
        ({"batch_size": 10.0}, "batch_size must be an integer"),
        ({"validation_split": 1.0}, "validation_split < 1"),
        ({"validation_split": -0.1}, "0 <= validation_split"),
        ({"validation_split": math.nan}, "validation_split must be finite"),
        ({"patience": 0}, "patience >= 1"),
        ({"seed": -1}, "seed >= 0"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"optimizer": "sgd"}, "optimizer must be one of"),
        ({"alternate": "step"}, "alternate must be one of"),
        ({"scandal_weight": -2.0}, "scandal_weight >= 0"),
        ({"epochs": (1, 1)}, "only meaningful for 'sequential' and 'pae'"),
        ({"epochs": (1, 0)}, r"epochs\[1\] >= 1"),
        ({"epochs": (1, 2, 3)}, "a pair"),
    ],
)
def test_fit_refuses_options_out_of_range(power, option, match):
    from mflows.errors import InvalidArgumentError

    model = tiny("mflow")
    untouched = snapshot(model)
    kwargs = {"algorithm": "alternating", "epochs": 1, "progress": False, **option}
    with pytest.raises(InvalidArgumentError, match=match):
        fit(model, power.x, **kwargs)
    assert_same_state(untouched, snapshot(model))


def test_fit_accepts_the_edges_of_the_ranges(power):
    import numpy as np

    model = tiny("mflow")
    history = fit(model, power.x, algorithm="likelihood", epochs=np.int64(1), clip=None,
                  reconstruction_weight=0.0, validation_split=0.0, weight_decay=0.0,
                  batch_size=np.int32(40), progress=False)  # fmt: skip
    assert len(history) == 1


@pytest.mark.parametrize("with_checkpoint", [True, False])
def test_huge_learning_rate_is_a_divergence_naming_the_last_checkpoint(
    power, tmp_path, with_checkpoint
):
    # lr = 1e30 used to end in the model's input check ("u contains non-finite values"), which
    # the application reported as "training cannot start".
    model = tiny("mflow")
    ckpt = tmp_path / "ckpt" if with_checkpoint else None
    with pytest.raises(TrainingDivergedError) as info:
        fit(model, power.x, algorithm="alternating", epochs=2, lr=1e30, checkpoint_dir=ckpt,
            **COMMON)  # fmt: skip
    message = str(info.value)
    assert re.search(r"epoch 1, batch \d+/\d+, phase '\w+': .*=nan", message), message
    assert "non-finite: " in message
    if with_checkpoint:
        assert f"the last good checkpoint is {ckpt / 'checkpoint.pt'} (written before" in message
        state = load_checkpoint(ckpt)
        assert all(torch.isfinite(v).all() for v in state["model_state"].values())
    else:
        assert "no checkpoint was written" in message
    # the model in memory never holds weights from a non-finite step
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def _poison_step(monkeypatch, at_call):
    """Makes the loss of the ``at_call``-th training step NaN (validation is left alone)."""
    from mflows.training import trainer

    real = trainer.compute_losses
    calls = {"n": 0}

    def poisoned(model, x, *args, **kwargs):
        terms = real(model, x, *args, **kwargs)
        if torch.is_grad_enabled() and model.training:
            calls["n"] += 1
            if calls["n"] == at_call:
                terms["loss"] = terms["loss"] * math.nan
        return terms

    monkeypatch.setattr(trainer, "compute_losses", poisoned)


@pytest.mark.parametrize("mode", ["every-step", "deferred", "unfused"])
def test_a_non_finite_step_never_reaches_the_weights(power, monkeypatch, mode):
    from mflows.training import trainer

    if mode == "deferred":  # as on GPUs: the flag is read once per epoch here
        monkeypatch.setattr(trainer, "_check_interval", lambda device: 10**9)
    if mode == "unfused":  # an optimiser without a fused kernel: checked before its step

        def unfused(name, params, lr, weight_decay):
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True), False

        monkeypatch.setattr(trainer, "_make_optimizer", unfused)
    _poison_step(monkeypatch, at_call=2)  # batch 1, density phase (alternating per batch)
    model = tiny("mflow")
    seen = []
    with pytest.raises(
        TrainingDivergedError, match=r"epoch 1, batch 1/3, phase 'density'.*loss=nan"
    ):
        fit(model, power.x, algorithm="alternating", epochs=2, callback=lambda *a: seen.append(1),
            **COMMON)  # fmt: skip
    assert not seen  # raised within the first epoch
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_fit_compile_gives_the_eager_losses():
    """fit(compile=...) trains through torch.compile (a quick backend here) to the same losses."""
    from mflows.compile import CompileFallbackWarning

    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    histories = []
    for compile in (False, "aot_eager"):
        model = make_model("mflow", 3, 2, outer_layers=1, inner_layers=1, hidden_features=8,
                           num_blocks=1, num_bins=4, seed=0)  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("error", CompileFallbackWarning)
            histories.append(
                fit(
                    model,
                    x,
                    algorithm="alternating",
                    epochs=1,
                    batch_size=16,
                    progress=False,
                    compile=compile,
                )
            )
    eager, compiled = (h.column("train_loss") for h in histories)
    assert np.allclose(eager, compiled, rtol=1e-4, atol=1e-5), (eager, compiled)


def test_fit_applies_the_thread_policy_and_restores_the_count():
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    model = make_model("mflow", 3, 2, outer_layers=1, inner_layers=1, hidden_features=8,
                       num_blocks=1, num_bins=4, seed=0)  # fmt: skip
    seen = []
    before = torch.get_num_threads()
    fit(model, x, algorithm="alternating", epochs=1, batch_size=16, progress=False, threads=1,
        callback=lambda epoch, record: seen.append(torch.get_num_threads()))  # fmt: skip
    assert seen == [1]
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        fit(model, x, epochs=1, progress=False, threads=0)


@pytest.mark.parametrize(
    ("losses", "factor"),
    [({"mse": 1.0, "latent_nll": 1.0}, 10), ({"nested_mse": 1.0}, 1), ({"sinkhorn": 1.0}, 1)],
)
def test_validation_batches(power, monkeypatch, losses, factor):
    """Per-sample losses are validated in batches of 10 training batches, with the values of one
    pass over all points; losses that depend on the batch keep the training batch size."""
    from mflows.training import trainer as trainer_module

    model = tiny("mflow")
    stage = Stage((Phase("p", "all", losses),), epochs=1)
    trainer = trainer_module.Trainer(model, Schedule((stage,)), batch_size=7, progress=False)
    sizes = []
    real = trainer_module.compute_losses

    def spy(model, x, *args):
        sizes.append(len(x))
        return real(model, x, *args)

    monkeypatch.setattr(trainer_module, "compute_losses", spy)
    val = (torch.as_tensor(power.x[:100], dtype=torch.float32), None, None)
    record = trainer._validate(stage, val)
    expected = [70, 30] if factor == 10 else [7] * 14 + [2]
    assert sizes == expected
    if factor == 10:
        model.eval()
        with torch.no_grad():
            whole = real(model, val[0], None, None, losses, {})
        for name in losses:
            assert record[f"val_{name}"] == pytest.approx(float(whole[name]), rel=1e-5)


def test_history_records_the_gradient_norms_of_the_steps(power):
    # one batch per epoch, so an epoch has one step and its gradient norm is that of the loss at
    # the starting weights, computed here independently with autograd (no data-aware start, no
    # standardisation, no validation split: the trainer sees the model and data as given)
    x = power.x[:8]
    options = dict(epochs=1, batch_size=8, clip=None, progress=False, validation_split=0.0)
    history = fit(tiny("af"), x, data_init=False, standardize=False, **options)
    reference = tiny("af")
    loss = -reference.log_prob(torch.as_tensor(x, dtype=torch.float32)).mean()
    grads = torch.autograd.grad(loss, [p for p in reference.parameters() if p.requires_grad])
    expected = float(torch.sqrt(sum(g.square().sum() for g in grads)))
    record = history.records[0]
    assert record["gradient_norm_max"] == pytest.approx(expected, rel=1e-5)
    assert record["gradient_norm_median"] == record["gradient_norm_max"]
    # several steps: the median lies below the largest norm, and clipping does not change them
    many = fit(tiny("af"), power.x, epochs=1, batch_size=10, clip=1e-3, progress=False)
    record = many.records[0]
    assert 0 < record["gradient_norm_median"] < record["gradient_norm_max"]
    assert record["gradient_norm_median"] > 1e-3


def test_alternating_epochs_record_one_gradient_norm_pair_per_phase(power):
    history = fit(tiny("mflow"), power.x, algorithm="alternating", epochs=1, **COMMON)
    record = history.records[0]
    for phase in ("manifold", "density"):
        assert record[f"gradient_norm_median_{phase}"] <= record[f"gradient_norm_max_{phase}"]
    assert "gradient_norm_max" not in record
    # alternating by epoch: one phase an epoch, still named by phase (their scales differ)
    history = fit(
        tiny("mflow"), power.x, algorithm="alternating", epochs=2, alternate="epoch", **COMMON
    )
    first, second = history.records
    names = {r["phases"]: {k for k in r if k.startswith("gradient_norm")} for r in (first, second)}
    assert names == {
        "manifold": {"gradient_norm_median_manifold", "gradient_norm_max_manifold"},
        "density": {"gradient_norm_median_density", "gradient_norm_max_density"},
    }
