"""Manifold-dimension estimation: nested-dropout loss, criteria, truncation, one real recovery."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mflows
from mflows import losses as L
from mflows.cli import main
from mflows.dimension import (
    choose_dimension,
    density_schedule,
    reconstruction_curve,
    truncate,
)
from mflows.errors import InvalidArgumentError
from mflows.training.trainer import compute_losses


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _model(d=4, m=3, seed=0):
    return mflows.make_model(
        "mflow", d, m, outer_layers=2, inner_layers=1, hidden_features=16, linear="lu", seed=seed
    )


def test_nested_error_masks_the_trailing_coordinates():
    torch.manual_seed(0)
    x, u = torch.randn(6, 4), torch.randn(6, 3)
    decode = torch.nn.Linear(3, 4)
    keep = torch.tensor([1, 2, 3, 1, 2, 3])
    expected = torch.stack(
        [
            ((x[i] - decode(torch.cat([u[i, :k], torch.zeros(3 - k)]))) ** 2).sum()
            for i, k in enumerate(keep.tolist())
        ]
    ).mean()
    got = L.nested_reconstruction_error(x, u, decode, keep)
    torch.testing.assert_close(got, expected)
    full = L.nested_reconstruction_error(x, u, decode, torch.full((6,), 3))
    torch.testing.assert_close(full, L.reconstruction_error(x, decode(u)))
    # log variant: mean over the k present of log of the per-k mean error
    sq = ((x - decode(u * (torch.arange(3) < keep[:, None]))) ** 2).sum(-1)
    per_k = torch.stack([sq[keep == k].mean() for k in (1, 2, 3)])
    torch.testing.assert_close(
        L.nested_reconstruction_error(x, u, decode, keep, log=True), per_k.log().mean()
    )
    # keep=None: every sample at every k, the exact mean over k
    every = torch.stack(
        [L.nested_reconstruction_error(x, u, decode, torch.full((6,), k)) for k in (1, 2, 3)]
    ).mean()
    torch.testing.assert_close(L.nested_reconstruction_error(x, u, decode, None), every)
    got.backward()
    assert decode.weight.grad is not None and decode.weight.grad.abs().sum() > 0


def test_truncation_sizes_range_distribution_and_seed():
    g = torch.Generator().manual_seed(3)
    k = L.truncation_sizes(20000, 4, 0.5, generator=g)
    assert k.min() == 1 and k.max() == 4
    freq = torch.bincount(k, minlength=5)[1:].double() / len(k)
    expected = torch.tensor([8, 4, 2, 1], dtype=torch.float64) / 15
    torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)
    again = L.truncation_sizes(20000, 4, 0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(k, again)
    uniform = L.truncation_sizes(20000, 4, 1.0, generator=g)
    assert (torch.bincount(uniform)[1:].double() / 20000 - 0.25).abs().max() < 0.015


def test_nested_loss_in_compute_losses_is_seeded_and_deterministic_in_eval():
    model = _model()
    x = torch.randn(32, 4)
    model.eval()
    a = compute_losses(model, x, None, None, {"nested_mse": 1.0})["nested_mse"]
    b = compute_losses(model, x, None, None, {"nested_mse": 1.0})["nested_mse"]
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(5)
    c = compute_losses(model, x, None, None, {"nested_mse": 1.0})["nested_mse"]
    torch.manual_seed(5)
    d = compute_losses(model, x, None, None, {"nested_mse": 1.0})["nested_mse"]
    assert torch.equal(c, d) and torch.isfinite(c)


def test_choose_dimension_criteria():
    errors = [0.5, 0.2, 1e-3, 8e-4, 6e-4]
    assert choose_dimension(errors, 1.0, "ratio") == 3
    assert choose_dimension(errors, 1.0, "threshold") == 3
    assert choose_dimension(errors, 1.0, "threshold", threshold=0.3) == 2
    assert choose_dimension([0.5, 0.4], 1.0, "threshold") == 2  # none below: max_dim
    with pytest.raises(InvalidArgumentError):
        choose_dimension(errors, 1.0, "elbow")
    with pytest.raises(InvalidArgumentError):
        choose_dimension(errors, 1.0, "ratio", threshold=0.1)
    with pytest.raises(InvalidArgumentError):
        choose_dimension(errors, 1.0, "threshold", threshold=2.0)


def test_truncated_model_is_the_first_k_coordinates():
    model = _model()
    x = torch.randn(50, 4)
    curve = reconstruction_curve(model, x)
    assert len(curve) == 3
    for k in (1, 2, 3):
        small = truncate(model, k)
        assert small.latent_dim == k
        u = model.encode(x)
        with torch.no_grad():
            padded = torch.cat([u[:, :k], torch.zeros(50, 3 - k)], 1)
            torch.testing.assert_close(small.decode(u[:, :k]), model.decode(padded))
            err = ((x - small.project(x)) ** 2).sum(-1).mean()
        assert abs(float(err) - curve[k - 1]) < 1e-4 * max(1.0, curve[k - 1])
    with pytest.raises(InvalidArgumentError):
        truncate(model, 4)
    # the density of the truncated model trains on its own
    small = truncate(model, 2)
    before = [p.detach().clone() for p in small.outer.parameters()]
    mflows.fit(small, x, schedule=density_schedule(1), progress=False, batch_size=25)
    assert all(torch.equal(a, b) for a, b in zip(before, small.outer.parameters()))


def test_estimate_dimension_validates_and_is_reproducible():
    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    with pytest.raises(InvalidArgumentError):
        mflows.estimate_dimension(x, 4)
    with pytest.raises(InvalidArgumentError):
        mflows.estimate_dimension(x, 2, decay=-1.0)
    kw = dict(epochs=1, outer_layers=1, hidden_features=8, batch_size=20)
    a = mflows.estimate_dimension(x, 2, seed=1, **kw)
    b = mflows.estimate_dimension(x, 2, seed=1, **kw)
    assert a.errors == b.errors and a.dimension == b.dimension
    assert a.to_dict()["max_dim"] == 2 and len(a.relative_errors) == 2


def test_recovers_the_dimension_of_a_noisy_plane_curve():
    """A real recovery: a 1-d curved manifold (a parabola) in R^4 with small noise, max_dim 3."""
    rng = np.random.default_rng(0)
    t = rng.uniform(-1.5, 1.5, size=1200)
    x = np.stack([t, 0.5 * t**2, np.zeros_like(t), np.zeros_like(t)], 1)
    x = (x + 0.01 * rng.normal(size=x.shape)).astype(np.float32)
    est = mflows.estimate_dimension(
        x, 3, epochs=16, outer_layers=3, hidden_features=32, num_blocks=1, seed=0
    )
    assert est.dimension == 1, est.relative_errors  # measured: 1 for seeds 0, 1, 2
    assert est.relative_errors[0] < 0.01


def test_cli_dimension_writes_json_and_plot(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "dim"
    status = main(
        [
            "dimension",
            "--data",
            str(tmp_path / "x.npy"),
            "--max-dim",
            "2",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "chosen n =" in printed
    result = json.loads((out / "dimension.json").read_text())
    assert result["max_dim"] == 2 and result["dimension"] in (1, 2)
    assert (out / "dimension.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["dimension", "--data", str(tmp_path / "x.npy"), "--max-dim", "9"]) == 2


def test_recovers_the_2_sphere_in_d9():
    """The 2-sphere in R^9 (noise 0.01), one run, max_dim 4, 10 epochs, decay 0.5.

    A regression check of this short configuration: measured seeds 0 and 2 give 2, seed 1
    gives 3; with the default decay 0.8 (tuned on 20 epochs, max_dim 8) all three give 3 here
    (the elbow one dimension late, see docs/guide.md, "Choosing the manifold dimension").
    """
    x = mflows.data.get("spherical_gaussian", n=2, d=9).load("train", 2000).x
    est = mflows.estimate_dimension(x, 4, epochs=10, seed=0, decay=0.5)
    assert est.dimension == 2, est.relative_errors
    rel = est.relative_errors
    # the 2-manifold explains most of what the 1-manifold leaves (measured: 0.037 vs 0.36)
    assert rel[1] < 0.15 * rel[0]


def test_nested_training_resumes_bit_identically(tmp_path):
    from mflows.dimension import nested_schedule

    x = np.random.default_rng(1).normal(size=(80, 4)).astype(np.float32)

    def run(**kw):
        model = _model(seed=3)
        model.nested_decay = 0.5
        mflows.fit(model, x, schedule=nested_schedule(3), progress=False, batch_size=20, **kw)
        return model

    reference = run()

    def stop(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(checkpoint_dir=tmp_path, callback=stop)
    resumed = run(checkpoint_dir=tmp_path, resume=True)
    for (k, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_default_criterion_on_recorded_curves():
    """Held-out curves E_k / E_0 of benchmarks/dimension.py (default budget, seed 0): the default
    threshold criterion picks the true n on each; the ratio criterion is fooled on the 2-sphere,
    whose first coordinate alone explains 89 % of the variance."""
    sphere2 = [0.11329, 0.02205, 0.00988, 0.0077, 0.00583, 0.00398, 0.00257, 0.00076]
    sphere5 = [0.35782, 0.23577, 0.16322, 0.10681, 0.02879, 0.01484, 0.00854, 0.00428]
    power = [0.0973, 0.00852]
    for curve, n in ((sphere2, 2), (sphere5, 5), (power, 2)):
        assert choose_dimension(curve, 1.0) == n
    assert choose_dimension(sphere2, 1.0, "ratio") == 1
