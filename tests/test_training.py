"""Tests of mflows.training: schemes, phase isolation, resume, NaN guard, early stopping, inputs.

All tests train tiny real models (mflows.models.make_model) on the power data (d = 3, n = 2).
"""

from __future__ import annotations

import csv
import math

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
    assert str(tmp_path / "checkpoint.pt") in str(info.value)
    state = load_checkpoint(tmp_path)
    assert len(state["history"]["records"]) == 2
    restored = tiny("af", seed=5)
    restored.load_state_dict(state["model_state"])
    assert all(torch.isfinite(v).all() for v in restored.state_dict().values())
    assert torch.isfinite(restored.log_prob(torch.as_tensor(power.x[:10]))).all()


def test_huge_learning_rate_diverges_cleanly(power):
    model = tiny("af")
    with pytest.raises(TrainingDivergedError, match="epoch"):
        fit(model, power.x * 1e30, algorithm="likelihood", epochs=1, **COMMON)


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
    # latent NLLs of different manifolds are not comparable (SPEC §2): the alternating scheme
    # keeps the epoch with the best validation MSE, whatever the latent NLL does.
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
    _raises(
        "unknown algorithm 'flow'.*likelihood, sequential, alternating", mf, x, algorithm="flow"
    )
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
    from mflows.training import checkpoint

    checkpoint.save_checkpoint({"format": checkpoint.CHECKPOINT_FORMAT, "a": 1}, tmp_path / "c.pt")

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(
            {"format": checkpoint.CHECKPOINT_FORMAT, "a": 2}, tmp_path / "c.pt"
        )
    monkeypatch.undo()
    assert checkpoint.load_checkpoint(tmp_path / "c.pt")["a"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
