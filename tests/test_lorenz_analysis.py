"""The Lorenz side-study tools: per-point gradients, encoder Jacobians and the left-out sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from benchmarks.paper.lorenz_errors import (
    encoder_top_singular_values,
    reconstruction_gradient_norms,
    split_errors,
)
from benchmarks.paper.lorenz_seam import VARIANTS, kept
from mflows import make_model


class _Projection(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the pure tensor functions behind project() (project() checks its input on the host,
        # which vmap cannot trace)
        return self.model._decode(self.model._encode(x, None), None)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = make_model(
        "mflow", 3, 2, outer_layers=2, inner_layers=1, hidden_features=16, identity_init=False
    )
    return m.eval()


@pytest.fixture(scope="module")
def points():
    return torch.randn(6, 3, generator=torch.Generator().manual_seed(1))


def test_gradient_norms_match_per_sample_gradients_from_torch_func(model, points):
    names = [n for n, p in model.named_parameters()]
    manifold = {id(p) for p in model.manifold_parameters()}
    params = {n: p.detach() for n, p in model.named_parameters() if id(p) in manifold}
    others = {n: p.detach() for n, p in model.named_parameters() if id(p) not in manifold}
    assert params and len(params) + len(others) == len(names)

    projection = _Projection(model)

    def loss(p, x):
        weights = {f"model.{k}": v for k, v in {**p, **others}.items()}
        projected = functional_call(projection, weights, (x[None],))
        return (x[None] - projected).square().sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, points)
    expected = torch.sqrt(
        sum(g.square().sum(dim=tuple(range(1, g.dim()))) for g in per_sample.values())
    )
    got = reconstruction_gradient_norms(model, points)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4)
    assert np.ptp(got) > 0


def test_encoder_singular_values_match_finite_differences(model, points):
    got = encoder_top_singular_values(model, points)
    h = 1e-3
    for xi, top in zip(points.double(), got):
        cols = []
        for k in range(3):
            e = torch.zeros(3, dtype=torch.float64)
            e[k] = h
            with torch.no_grad():
                up = model.double().encode((xi + e)[None])[0]
                down = model.encode((xi - e)[None])[0]
            cols.append((up - down) / (2 * h))
        model.float()
        jac = torch.stack(cols, dim=-1)
        assert jac.shape == (2, 3)
        assert top == pytest.approx(float(torch.linalg.matrix_norm(jac, ord=2)), rel=1e-3)


def test_split_errors_bins_cover_every_point(model):
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    r = split_errors(model, x, gradient_points=20)
    assert sum(row["points"] for row in r["by_abs_x0"]) == 50
    assert sum(row["points"] for row in r["gradient_by_abs_x0"]) == 20
    with torch.no_grad():
        xt = torch.as_tensor(x)
        direct = (xt - model.project(xt)).norm(dim=-1).mean().item()
    assert r["mean_reconstruction_error"] == pytest.approx(direct, rel=1e-5)
    assert 0 < r["share_of_squared_gradient_norm_in_top_1_percent"] <= 1


def test_left_out_sets():
    x = np.random.default_rng(0).normal(scale=0.8, size=(20000, 3))
    a = np.abs(x[:, 0])
    assert kept(x, "none", 0).all()
    seam = kept(x, "seam", 0)
    assert not seam[a < 0.3].any() and seam[a >= 0.3].all()
    band = kept(x, "band", 0)
    lo, hi = VARIANTS["band"]
    assert not band[(a >= lo) & (a < hi)].any() and band[(a < lo) | (a >= hi)].all()
    random = kept(x, "random", 0)
    assert abs(random.mean() - seam.mean()) < 0.02  # the same share, anywhere
    assert random[a < 0.3].mean() > 0.5
    assert not np.array_equal(random, kept(x, "random", 1))


def test_summary_table_lists_every_stored_run(tmp_path):
    import json

    from benchmarks.paper.lorenz_seam import summary

    bins = [
        {"from": lo, "to": hi, "points": 10, "mean_reconstruction_error": err}
        for lo, hi, err in [(0, 0.1, 0.4), (0.1, 0.3, 0.2), (0.3, 0.6, 0.1), (0.6, 1, 0.05)]
    ]
    for variant, seed in [("none", 0), ("seam", 1)]:
        record = {
            "variant": variant,
            "seed": seed,
            "n_train_kept": 5,
            "history": [{"val_mse": 0.5, "gradient_norm_max": 7.0}],
            "test": {"mean_reconstruction_error": 0.1875, "by_abs_x0": bins},
        }
        (tmp_path / f"{variant}-seed{seed}.json").write_text(json.dumps(record))
    rows = summary(tmp_path).splitlines()[2:]
    assert [r.split(" | ")[0:3] for r in rows] == [
        ["| none", "trainer", "0"],
        ["| seam", "trainer", "1"],
    ]
    # the two bins below 0.3 merge into their point-weighted mean
    assert rows[0].endswith("| 0.1875 / 0.3000 / 0.1000 / 0.0500 |")


def test_plain_loop_trains_only_the_manifold_and_reports_every_epoch():
    from types import SimpleNamespace

    from benchmarks.paper.lorenz_seam import plain_loop

    torch.manual_seed(0)
    m = make_model("mflow", 3, 2, outer_layers=2, inner_layers=1, hidden_features=16)
    inner = {k: v.clone() for k, v in m.inner.state_dict().items()}
    outer = {k: v.clone() for k, v in m.outer.state_dict().items()}
    rng = np.random.default_rng(0)
    u = rng.normal(size=(400, 2))
    x = np.c_[u, 0.3 * u[:, 0] ** 2].astype(np.float32)  # a curved surface
    training = SimpleNamespace(
        lr=3e-3, weight_decay=0.0, clip=5.0, batch_size=50, validation_split=0.1, epochs=20
    )
    seen = []
    plain_loop(
        m, x, SimpleNamespace(training=training), 4, 0, lambda e, r, n: seen.append((e, r, n))
    )
    assert [e for e, _, _ in seen] == [1, 2, 3, 4]
    assert all(len(n) == 360 // 50 for _, _, n in seen)
    assert seen[-1][1]["val_mse"] < seen[0][1]["val_mse"]
    assert all(torch.equal(v, m.inner.state_dict()[k]) for k, v in inner.items())
    assert any(not torch.equal(v, m.outer.state_dict()[k]) for k, v in outer.items())


def test_pseudo_huber_is_the_squared_error_for_small_errors_and_linear_for_large():
    from benchmarks.paper.lorenz_seam import pseudo_huber

    e = torch.tensor([1e-8, 1e-6, 4.0, 100.0], dtype=torch.float64)
    assert torch.equal(pseudo_huber(e, None), e)
    got = pseudo_huber(e, 0.05)
    assert got[:2] == pytest.approx(e[:2].numpy(), rel=1e-3)
    # large errors: 2 delta |r| - 2 delta^2 in the distance r = sqrt(e)
    assert got[2:] == pytest.approx((2 * 0.05 * e[2:].sqrt() - 2 * 0.05**2).numpy(), rel=1e-3)
    # a point's gradient in its distance r is bounded by 2 delta
    r = torch.tensor([0.01, 1.0, 100.0], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(pseudo_huber(r.square(), 0.05).sum(), r)
    assert bool((g <= 2 * 0.05 + 1e-12).all()) and g[-1] == pytest.approx(0.1, rel=1e-3)
