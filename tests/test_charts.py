"""The stereographic sphere chart: inverse pairs, volume element, centring, FOM density."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mflows
from mflows.embeddings import SphereChart, StereographicChart
from mflows.errors import InvalidArgumentError


def _random_sphere(n: int, count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    y = torch.randn(count, n + 1, generator=generator, dtype=torch.float64)
    return y / y.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("n,d", [(1, 2), (2, 3), (2, 5), (5, 9)])
def test_encode_decode_are_inverse(n: int, d: int) -> None:
    chart = StereographicChart(n, d).double()
    chart.set_center(torch.arange(1.0, n + 2))  # in float64: the buffer's dtype
    u = 2.0 * torch.randn(50, n, dtype=torch.float64)
    x = chart.decode(u)
    assert x.shape == (50, d)
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(50, dtype=torch.float64))
    torch.testing.assert_close(x[:, n + 1 :], torch.zeros(50, d - n - 1, dtype=torch.float64))
    torch.testing.assert_close(chart.encode(x), u)
    y = torch.nn.functional.pad(_random_sphere(n, 50), (0, d - n - 1))
    torch.testing.assert_close(chart.decode(chart.encode(y)), y)
    # off the sphere: the radial projection (off-sphere coordinates dropped)
    off = 3.0 * y + torch.nn.functional.pad(torch.zeros(50, n + 1), (0, d - n - 1), value=0.1)
    torch.testing.assert_close(chart.decode(chart.encode(off)), y)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_volume_element_against_autograd(n: int) -> None:
    chart = StereographicChart(n, n + 3).double()
    chart.set_center(torch.randn(n + 1))
    u = torch.randn(20, n, dtype=torch.float64)
    jac = torch.func.vmap(torch.func.jacfwd(chart.decode))(u)  # (B, d, n)
    logdet = torch.linalg.slogdet(jac.transpose(1, 2) @ jac)[1]
    closed = 2.0 * n * torch.log(2.0 / (1.0 + u.square().sum(-1)))
    torch.testing.assert_close(logdet, closed)


def test_centre_and_pole() -> None:
    c = torch.tensor([0.3, -0.4, 0.5], dtype=torch.float64)
    chart = StereographicChart(2, 4).double()
    chart.set_center(c)
    assert chart.is_fitted
    q = chart.rotation
    torch.testing.assert_close(q @ q.T, torch.eye(3, dtype=torch.float64))
    centre = chart.decode(torch.zeros(1, 2, dtype=torch.float64))[0, :3]
    torch.testing.assert_close(centre, c / c.norm())
    pole = torch.nn.functional.pad(-c / c.norm(), (0, 1)).unsqueeze(0)
    u = chart.encode(pole)
    assert torch.isfinite(u).all() and float(u.norm()) > 1e6
    with pytest.raises(InvalidArgumentError):
        chart.set_center(torch.zeros(3))
    with pytest.raises(InvalidArgumentError):
        chart.set_center(torch.ones(4))


def _perturbed_mass_on_the_sphere(model, m: int = 400) -> float:
    """Perturbs the inner flow of a FOM on S^2 away from the identity, then integrates its
    density over the sphere by the midpoint rule in (polar, azimuth)."""
    with torch.no_grad():
        for p in model.inner.parameters():
            p.add_(0.03 * torch.randn_like(p))
    polar = (torch.arange(m, dtype=torch.float64) + 0.5) * math.pi / m
    azimuth = (torch.arange(2 * m, dtype=torch.float64) + 0.5) * math.pi / m
    a, b = torch.meshgrid(polar, azimuth, indexing="ij")
    x = torch.stack([a.cos(), a.sin() * b.cos(), a.sin() * b.sin()], -1).reshape(-1, 3)
    with torch.no_grad():
        density = model.log_prob(x).exp().reshape(m, 2 * m)
    return float((density * a.sin()).sum()) * (math.pi / m) ** 2


def test_fom_density_integrates_to_one_on_the_sphere() -> None:
    torch.manual_seed(0)
    model = mflows.make_model("fom", 3, 2, chart="sphere-stereographic", seed=3).double()
    model.chart.set_center([0.2, -0.5, 0.8])
    total = _perturbed_mass_on_the_sphere(model)
    assert abs(total - 1.0) < 2e-3, total


def test_fit_centres_the_chart_and_save_keeps_it(tmp_path) -> None:
    rng = np.random.default_rng(0)
    c = np.array([0.6, 0.0, -0.8])
    y = c + 0.3 * rng.normal(size=(600, 3))
    x = (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)
    model = mflows.make_model("fom", 3, 2, chart="sphere-stereographic", seed=0)
    assert not model.chart.is_fitted
    mflows.fit(model, x, epochs=1, batch_size=100, progress=False)
    assert model.chart.is_fitted
    assert float(torch.dot(model.chart.center.double(), torch.tensor(c))) > 0.99
    model.save(tmp_path / "fom.pt")
    loaded = mflows.load(tmp_path / "fom.pt")
    torch.testing.assert_close(loaded.chart.rotation, model.chart.rotation)
    xt = torch.as_tensor(x[:20])
    torch.testing.assert_close(loaded.log_prob(xt), model.log_prob(xt))
    before = model.chart.rotation.clone()
    mflows.fit(model, x[::-1].copy(), epochs=1, batch_size=100, progress=False)
    torch.testing.assert_close(model.chart.rotation, before)  # set once, never moved by fit


def test_probit_sphere_chart_closed_form() -> None:
    """phi = range * Phi(u): decode/encode invert each other and the FOM log density matches
    the change of variables by hand (normal base, dphi/du = range * N(u), the area element)."""
    n, d = 3, 5
    chart = SphereChart(n, d, unbounded=True, squash="normal").double()
    u = torch.randn(7, n, dtype=torch.float64) * 1.5
    scale = torch.tensor([math.pi, math.pi, 2 * math.pi], dtype=torch.float64)
    normal = torch.distributions.Normal(0.0, 1.0)
    phi = scale * normal.cdf(u)
    torch.testing.assert_close(chart.decode(u), SphereChart(n, d).double().decode(phi))
    torch.testing.assert_close(chart.encode(chart.decode(u)), u)
    model = mflows.make_model("fom", d, n, chart="sphere-probit", inner_layers=0).double()
    assert model.chart.squash == "normal"
    area = sum((n - i) * torch.log(torch.sin(phi[:, i - 1])) for i in range(1, n))
    # with the identity inner flow, N(u) / (range * N(u)) = 1 / range: uniform angles
    expected = -torch.log(scale).sum() - area
    with torch.no_grad():
        got = model.log_prob(chart.decode(u))
    torch.testing.assert_close(got, expected.expand(7), rtol=1e-5, atol=1e-6)


def test_probit_fom_density_integrates_to_one() -> None:
    torch.manual_seed(1)
    model = mflows.make_model("fom", 3, 2, chart="sphere-probit", seed=3).double()
    total = _perturbed_mass_on_the_sphere(model)
    assert abs(total - 1.0) < 2e-3, total
