"""fit_ensemble: K seeds at once equal K separate fits (weights, histories, early stopping)."""

from __future__ import annotations

import math

import pytest
import torch

import mflows
from mflows.errors import InvalidArgumentError, TrainingDivergedError
from mflows.models import make_model
from mflows.training import fit, fit_ensemble

# float32 training of a few epochs: rounding differences of the vectorised kernels only
ATOL = 1e-4


def _data(n: int = 300, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    x[:, 2] = 0.5 * x[:, 0] * x[:, 1] + 0.05 * x[:, 2]
    theta = torch.randn(n, 1, generator=g)
    return x, theta


def _mflow(seed: int):
    """Small conditional M-flow with LU layers (so the data-aware initialisation runs)."""
    return make_model(
        "mflow",
        3,
        2,
        context_dim=1,
        outer_layers=2,
        inner_layers=2,
        hidden_features=16,
        num_blocks=1,
        seed=seed,
    )


def _af(seed: int):
    return make_model("af", 3, outer_layers=2, hidden_features=16, num_blocks=1, seed=seed)


ALT = dict(algorithm="alternating", epochs=3, batch_size=50, progress=False)


def _max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


def _assert_same_history(h1, h2, rel=1e-4):
    assert len(h1) == len(h2)
    assert h1.best_epoch == h2.best_epoch
    for r1, r2 in zip(h1.records, h2.records):
        assert r1["epoch"] == r2["epoch"] and r1["phases"] == r2["phases"]
        for key in ("train_loss", "val_loss", "lr"):
            assert r1[key] == pytest.approx(r2[key], rel=rel, abs=1e-6), key
        norms = [key for key in r1 if key.startswith("gradient_norm")]
        assert norms and set(norms) == {key for key in r2 if key.startswith("gradient_norm")}
        for key in norms:
            assert r1[key] == pytest.approx(r2[key], rel=10 * rel), key


def test_single_member_equals_fit():
    x, theta = _data()
    alone = _mflow(3)
    history = fit(alone, x, theta, seed=3, **ALT)
    (member,), (member_history,) = fit_ensemble(_mflow, x, theta, seeds=[3], **ALT)
    assert _max_difference(alone, member) < ATOL
    _assert_same_history(history, member_history)
    assert set(member_history.records[-1]) == set(history.records[-1])


def test_members_are_independent():
    """Member i of a 3-member ensemble equals the 1-member ensemble and the fit of seed i."""
    x, theta = _data()
    models, histories = fit_ensemble(_mflow, x, theta, seeds=[0, 1, 2], **ALT)
    assert _max_difference(models[0], models[1]) > 1e-2  # really different members
    for i in range(3):
        (single,), (single_history,) = fit_ensemble(_mflow, x, theta, seeds=[i], **ALT)
        assert _max_difference(models[i], single) < 1e-5
        _assert_same_history(histories[i], single_history, rel=1e-5)
        alone = _mflow(i)
        history = fit(alone, x, theta, seed=i, **ALT)
        assert _max_difference(models[i], alone) < ATOL
        # final validation loss of each member = that of its separate run
        assert histories[i].val_loss[-1] == pytest.approx(history.val_loss[-1], rel=1e-4)


def test_likelihood_ambient_flow_and_template_model():
    x, _ = _data()
    options = dict(algorithm="likelihood", epochs=2, batch_size=64, progress=False)
    # a template model: its architecture is rebuilt per seed (its own weights are not used)
    models, histories = fit_ensemble(_af(99), x, seeds=[4, 5], lr=[1e-3, 3e-3], **options)
    for model, history, seed, lr in zip(models, histories, [4, 5], [1e-3, 3e-3]):
        alone = _af(seed)
        reference = fit(alone, x, seed=seed, lr=lr, **options)
        assert _max_difference(model, alone) < ATOL
        _assert_same_history(history, reference)
        assert "train_nll" in history.records[0]


def test_sequential_two_stages():
    x, theta = _data()
    options = dict(algorithm="sequential", epochs=(2, 2), batch_size=50, progress=False)
    models, histories = fit_ensemble(_mflow, x, theta, seeds=[0, 1], **options)
    for i in range(2):
        alone = _mflow(i)
        history = fit(alone, x, theta, seed=i, **options)
        assert _max_difference(models[i], alone) < ATOL
        _assert_same_history(histories[i], history)


def test_separate_early_stopping():
    """A member whose validation error gets worse stops early; the others go on unchanged.

    With lr 1e-2 member 0 (seed 0) overshoots: its validation MSE is worst after epoch 2 and 3,
    so patience 2 stops it after epoch 3 with the weights of epoch 1; member 1 (lr 3e-2)
    improves every epoch and runs all 6.
    """
    x, theta = _data()
    options = dict(ALT, epochs=6, patience=2)
    lrs = [1e-2, 3e-2, 1e-2]
    models, histories = fit_ensemble(_mflow, x, theta, seeds=[0, 1, 2], lr=lrs, **options)
    lengths = [len(h) for h in histories]
    assert lengths[0] < 6 and lengths[1] == 6, lengths
    assert histories[0].best_epoch < histories[1].best_epoch
    for i, lr in enumerate(lrs):
        alone = _mflow(i)
        history = fit(alone, x, theta, seed=i, lr=lr, **options)
        _assert_same_history(histories[i], history)
        # the stopped member keeps the weights of its best epoch, as fit restores them
        assert _max_difference(models[i], alone) < ATOL


def test_models_save_and_load(tmp_path):
    x, theta = _data(200)
    models, _ = fit_ensemble(_mflow, x, theta, seeds=[0, 1], **dict(ALT, epochs=1))
    for i, model in enumerate(models):
        model.save(tmp_path / f"m{i}.pt")
        loaded = mflows.load(tmp_path / f"m{i}.pt")
        assert _max_difference(model, loaded) == 0.0
        assert torch.allclose(loaded.log_prob(x[:5], theta[:5]), model.log_prob(x[:5], theta[:5]))


def test_divergence_stops_one_member_or_raises():
    x, theta = _data()
    options = dict(ALT, epochs=2, clip=None)
    with pytest.raises(TrainingDivergedError, match="member 1"):
        fit_ensemble(_mflow, x, theta, seeds=[0, 1], lr=[1e-3, 1e30], **options)
    models, histories = fit_ensemble(
        _mflow, x, theta, seeds=[0, 1], lr=[1e-3, 1e30], on_divergence="stop", **options
    )
    assert histories[1].records[-1].get("diverged") == 1.0
    assert len(histories[0]) == 2 and "diverged" not in histories[0].records[-1]
    assert all(torch.isfinite(p).all() for p in models[1].parameters())
    alone = _mflow(0)
    fit(alone, x, theta, seed=0, **options)
    assert _max_difference(models[0], alone) < ATOL


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seeds": []}, "seeds"),
        ({"seeds": [0, 1], "lr": [1e-3]}, "one lr per seed"),
        ({"seeds": [0], "lr": -1.0}, "lr"),
        ({"seeds": [0], "algorithm": "ot"}, "supports the algorithms"),
        ({"seeds": [0], "on_divergence": "ignore"}, "on_divergence"),
        ({"seeds": [0], "validation_split": 1.5}, "validation_split"),
    ],
)
def test_invalid_arguments(kwargs, match):
    x, theta = _data(50)
    with pytest.raises(InvalidArgumentError, match=match):
        fit_ensemble(_mflow, x, theta, progress=False, **kwargs)


def test_members_of_different_architectures_are_refused():
    x, theta = _data(50)

    def make(seed):
        return make_model("mflow", 3, 2, context_dim=1, hidden_features=8 + seed, seed=seed)

    with pytest.raises(InvalidArgumentError, match="architecture"):
        fit_ensemble(make, x, theta, seeds=[0, 1], progress=False)


def test_public_name():
    assert mflows.fit_ensemble is fit_ensemble
    assert math.isfinite(1.0)
