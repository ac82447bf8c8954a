"""Tests of mflows.models: exact densities against closed forms, autograd and quadrature.

The first part uses small hand-written transforms defined here (independent of
mflows.transforms); the second builds every kind with ``make_model``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mflows.embeddings import SphereChart
from mflows.models import FOM, PAE, PIE, AmbientFlow, EMFlow, MFlow, load, make_model
from mflows.transforms.base import CompositeTransform, IdentityTransform, Transform

F64 = {"dtype": torch.float64}
LOG2PI = math.log(2 * math.pi)


def std_normal(z):
    return -0.5 * z.square().sum(-1) - 0.5 * z.shape[-1] * LOG2PI


# ---------------------------------------------------------------- test transforms
class Linear(Transform):
    """Generative map x = A z; forward (normalising) z = A^-1 x."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, x, context=None):
        z = x @ torch.linalg.inv(self.a).T
        return z, -torch.linalg.slogdet(self.a).logabsdet.expand(x.shape[0])

    def inverse(self, z, context=None):
        return z @ self.a.T, torch.linalg.slogdet(self.a).logabsdet.expand(z.shape[0])


class Permutation(Transform):
    """y = x[:, perm]."""

    def __init__(self, perm):
        super().__init__()
        perm = torch.as_tensor(perm)
        self.register_buffer("perm", perm)
        self.register_buffer("inv", torch.argsort(perm))

    def forward(self, x, context=None):
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, y, context=None):
        return y[:, self.inv], y.new_zeros(y.shape[0])


class Coupling(Transform):
    """Affine coupling: y1 = x1, y2 = x2 exp(s(x1, c)) + t(x1, c), s bounded by tanh."""

    def __init__(self, d, c=0):
        super().__init__()
        self.k = d // 2
        self.net = nn.Sequential(
            nn.Linear(self.k + c, 8), nn.Tanh(), nn.Linear(8, 2 * (d - self.k))
        )
        with torch.no_grad():
            for p in self.net.parameters():
                p.mul_(2.0)

    def _st(self, x1, context):
        h = x1 if context is None else torch.cat([x1, context], -1)
        s, t = self.net(h).chunk(2, -1)
        return torch.tanh(s), t

    def forward(self, x, context=None):
        x1, x2 = x[:, : self.k], x[:, self.k :]
        s, t = self._st(x1, context)
        return torch.cat([x1, x2 * torch.exp(s) + t], -1), s.sum(-1)

    def inverse(self, y, context=None):
        y1, y2 = y[:, : self.k], y[:, self.k :]
        s, t = self._st(y1, context)
        return torch.cat([y1, (y2 - t) * torch.exp(-s)], -1), -s.sum(-1)


class SinhArcsinh(Transform):
    """Elementwise y = sinh(a asinh(x) + b), a > 0."""

    def __init__(self, d):
        super().__init__()
        self.log_a = nn.Parameter(0.3 * torch.randn(d))
        self.b = nn.Parameter(0.3 * torch.randn(d))

    def _logdet(self, x):
        a = self.log_a.exp()
        inner = a * torch.asinh(x) + self.b
        return (torch.log(a * torch.cosh(inner)) - 0.5 * torch.log1p(x.square())).sum(-1)

    def forward(self, x, context=None):
        y = torch.sinh(self.log_a.exp() * torch.asinh(x) + self.b)
        return y, self._logdet(x)

    def inverse(self, y, context=None):
        x = torch.sinh((torch.asinh(y) - self.b) / self.log_a.exp())
        return x, -self._logdet(x)


def nonlinear_flow(d, c=0, perms=None):
    """A flow with non-involutive permutations between nonlinear layers."""
    gen = torch.Generator().manual_seed(d)
    perms = perms or [torch.roll(torch.arange(d), 1), torch.randperm(d, generator=gen)]
    layers = [Coupling(d, c), Permutation(perms[0]), SinhArcsinh(d), Coupling(d, c)]
    layers += [Permutation(perms[1]), SinhArcsinh(d)]
    return CompositeTransform(layers).double()


# ---------------------------------------------------------------- references
def jacobian_of(fn, u, vectorize=False):
    """(B, d, n) by torch.autograd.functional.jacobian (reverse mode), one sample at a time."""
    return torch.stack(
        [
            torch.autograd.functional.jacobian(
                lambda ub: fn(ub.unsqueeze(0)).reshape(-1), ub, vectorize=vectorize
            )
            for ub in u
        ]
    )


def reference_manifold_log_prob(model, x, context=None, inner_log_prob=None, vectorize=False):
    """log p_u(u) - 1/2 log det(J^T J) with J from autograd, u = model.encode(x)."""
    with torch.no_grad():
        u = model.encode(x, context)
    if context is None:
        jac = jacobian_of(lambda ub: model.decode(ub), u, vectorize)
        lp = inner_log_prob(u) if inner_log_prob else model.latent_log_prob(u)
    else:
        jac = torch.stack(
            [
                torch.autograd.functional.jacobian(
                    lambda ub, cb=cb: model.decode(ub.unsqueeze(0), cb.unsqueeze(0)).reshape(-1),
                    ub,
                )
                for ub, cb in zip(u, context)
            ]
        )
        lp = model.latent_log_prob(u, context)
    return lp - 0.5 * torch.linalg.slogdet(jac.mT @ jac).logabsdet


def reference_inner_log_prob(inner, u):
    """log N(h(u)) + log|det J_h(u)| with J_h from autograd."""
    z = inner(u)[0]
    jac = jacobian_of(lambda ub: inner(ub)[0], u)
    return std_normal(z) + torch.linalg.slogdet(jac).logabsdet


# ---------------------------------------------------------------- hand-made flows
def test_linear_outer_map_closed_form():
    torch.manual_seed(0)
    d, n = 5, 2
    a = torch.randn(d, d, **F64) + 2 * torch.eye(d, **F64)
    model = MFlow(Linear(a), IdentityTransform(), d, n).double()
    x = torch.randn(7, d, **F64)
    u = torch.linalg.solve(a, x.T).T[:, :n]
    a_n = a[:, :n]
    expected = std_normal(u) - 0.5 * torch.linalg.slogdet(a_n.T @ a_n).logabsdet
    torch.testing.assert_close(model.log_prob(x), expected)
    torch.testing.assert_close(model.encode(x), u)
    torch.testing.assert_close(model.project(x), u @ a_n.T)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_mflow_density_through_permutations_matches_autograd(n):
    # Regression test for the original code's transposed permutation Jacobian: the
    # permutations here are not their own inverses.
    torch.manual_seed(1)
    d = 5
    perms = [torch.tensor([1, 2, 3, 4, 0]), torch.tensor([2, 0, 4, 1, 3])]
    for p in perms:
        assert not torch.equal(p[p], torch.arange(d))
    model = MFlow(nonlinear_flow(d, perms=perms), nonlinear_flow(n), d, n).double()
    x = torch.randn(6, d, **F64)
    torch.testing.assert_close(model.log_prob(x), reference_manifold_log_prob(model, x))
    u = model.encode(x)
    torch.testing.assert_close(model.latent_log_prob(u), reference_inner_log_prob(model.inner, u))


def test_mflow_manifold_properties():
    torch.manual_seed(2)
    model = MFlow(nonlinear_flow(4), nonlinear_flow(2), 4, 2).double()
    u = torch.randn(8, 2, **F64)
    x = model.decode(u)
    torch.testing.assert_close(model.encode(x), u)
    x_proj = model.project(torch.randn(8, 4, **F64))
    torch.testing.assert_close(model.project(x_proj), x_proj)
    samples = model.sample(20)
    torch.testing.assert_close(model.project(samples), samples)
    # the off-manifold coordinates of decoded points are exactly zero
    torch.testing.assert_close(model.outer(samples)[0][:, 2:], torch.zeros(20, 2, **F64))


def test_log_prob_is_differentiable_for_simultaneous_training():
    torch.manual_seed(3)
    model = MFlow(nonlinear_flow(4), nonlinear_flow(2), 4, 2).double()
    x = torch.randn(5, 4, **F64)
    params = list(model.parameters())
    grads = torch.autograd.grad(model.log_prob(x).sum(), params)
    # reference: build J with autograd (create_graph) and differentiate the same formula
    u = model.encode(x)
    jac = torch.stack(
        [
            torch.autograd.functional.jacobian(
                lambda ub: model.decode(ub.unsqueeze(0)).reshape(-1), ub, create_graph=True
            )
            for ub in u
        ]
    )
    ref = (model.latent_log_prob(u) - 0.5 * torch.linalg.slogdet(jac.mT @ jac).logabsdet).sum()
    ref_grads = torch.autograd.grad(ref, params)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)
    assert any(g.abs().sum() > 0 for g in grads[: len(list(model.outer.parameters()))])


@pytest.mark.parametrize("mode", ["auto", "forward", "reverse"])
def test_full_dimensional_mflow_equals_ambient_flow(mode):
    torch.manual_seed(4)
    d = 3
    outer, inner = nonlinear_flow(d), nonlinear_flow(d)
    mflow = MFlow(outer, inner, d, d).double()
    mflow.jacobian_options["mode"] = mode
    ambient = AmbientFlow(CompositeTransform([outer, inner]), d).double()
    x = torch.randn(6, d, **F64)
    torch.testing.assert_close(mflow.log_prob(x), ambient.log_prob(x))


def test_ambient_flow_interface():
    torch.manual_seed(5)
    d = 4
    model = AmbientFlow(nonlinear_flow(d), d).double()
    x = torch.randn(5, d, **F64)
    z = model.encode(x)
    jac = jacobian_of(lambda xb: model.outer(xb)[0], x)
    torch.testing.assert_close(
        model.log_prob(x), std_normal(z) + torch.linalg.slogdet(jac).logabsdet
    )
    torch.testing.assert_close(model.decode(z), x)
    torch.testing.assert_close(model.project(x), x)
    assert model.latent_dim == d and model.density_parameters() == []
    assert model.sample(3).shape == (3, d)


def test_pie_densities():
    torch.manual_seed(6)
    d, n, eps = 4, 2, 0.05
    model = PIE(nonlinear_flow(d), nonlinear_flow(n), d, n, epsilon=eps).double()
    x = torch.randn(6, d, **F64)
    z = model.outer(x)[0]
    jac = jacobian_of(lambda xb: model.outer(xb)[0], x)
    v = z[:, n:]
    expected = (
        reference_inner_log_prob(model.inner, z[:, :n])
        + std_normal(v / eps)
        - (d - n) * math.log(eps)
        + torch.linalg.slogdet(jac).logabsdet
    )
    torch.testing.assert_close(model.log_prob(x), expected)
    torch.testing.assert_close(model.log_prob_manifold(x), reference_manifold_log_prob(model, x))
    samples = model.sample(10)
    torch.testing.assert_close(model.outer(samples)[0][:, n:], torch.zeros(10, d - n, **F64))
    torch.testing.assert_close(model.project(samples), samples)


def test_emflow_uses_its_encoder():
    torch.manual_seed(7)
    d, n = 4, 2
    encoder = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, n)).double()
    model = EMFlow(nonlinear_flow(d), encoder, nonlinear_flow(n), d, n).double()
    x = torch.randn(6, d, **F64)
    torch.testing.assert_close(model.encode(x), encoder(x))
    torch.testing.assert_close(model.log_prob(x), reference_manifold_log_prob(model, x))
    # the projection is the decoded encoding; samples lie on the decoder's manifold
    torch.testing.assert_close(model.project(x), model.decode(encoder(x)))
    samples = model.sample(10)
    torch.testing.assert_close(model.outer(samples)[0][:, n:], torch.zeros(10, d - n, **F64))
    n_outer = len(list(model.outer.parameters()))
    assert len(model.manifold_parameters()) == n_outer + len(list(encoder.parameters()))


def test_pae_has_no_density_of_x():
    torch.manual_seed(8)
    enc = nn.Linear(3, 1).double()
    dec = nn.Linear(1, 3).double()
    model = PAE(enc, dec, nonlinear_flow(1), 3, 1).double()
    x = torch.randn(4, 3, **F64)
    with pytest.raises(NotImplementedError, match="latent_log_prob"):
        model.log_prob(x)
    u = model.encode(x)
    torch.testing.assert_close(model.latent_log_prob(u), reference_inner_log_prob(model.inner, u))
    torch.testing.assert_close(model.project(x), dec(enc(x)))


# ---------------------------------------------------------------- quadrature
def test_curve_density_integrates_to_one():
    torch.manual_seed(9)
    model = MFlow(nonlinear_flow(2), IdentityTransform(), 2, 1).double()
    u = torch.linspace(-9, 9, 6001, **F64).unsqueeze(-1)
    with torch.no_grad():
        x = model.decode(u)
        mid = model.decode(0.5 * (u[1:] + u[:-1]))
        density = model.log_prob(mid).exp()
    arc = (x[1:] - x[:-1]).norm(dim=-1)  # arc-length elements from decode only
    assert abs((density * arc).sum().item() - 1.0) < 1e-3


def test_sphere_chart_density_integrates_to_one():
    # FOM on S^2 in R^3 with a nonlinear inner flow: integrate over the angles with the
    # area element from finite differences of decode (no Jacobian code involved).
    torch.manual_seed(10)
    inner = CompositeTransform([Linear(torch.tensor([[0.3, 0.0], [0.1, 0.5]], **F64))])
    model = FOM(SphereChart(2, 3), inner, 3, 2).double()
    k = 400
    theta = torch.linspace(0, math.pi, k + 1, **F64)
    phi = torch.linspace(0, 2 * math.pi, 2 * k + 1, **F64)
    tc, pc = 0.5 * (theta[1:] + theta[:-1]), 0.5 * (phi[1:] + phi[:-1])
    grid = torch.stack(torch.meshgrid(tc, pc, indexing="ij"), -1).reshape(-1, 2)
    h = 1e-6
    with torch.no_grad():
        dt = (model.decode(grid + torch.tensor([h, 0], **F64)) - model.decode(grid)) / h
        dp = (model.decode(grid + torch.tensor([0, h], **F64)) - model.decode(grid)) / h
        area = torch.linalg.cross(dt, dp).norm(dim=-1) * (math.pi / k) ** 2
        density = model.log_prob(model.decode(grid)).exp()
    # the inner density is a Gaussian in the angles, truncated by the chart: compare with the
    # mass the inner flow puts on the chart's domain, integrated directly in u.
    with torch.no_grad():
        mass_u = (model.latent_log_prob(grid).exp() * (math.pi / k) ** 2).sum()
    assert abs((density * area).sum().item() - mass_u.item()) < 1e-3


@pytest.mark.parametrize("n", [1, 2])
def test_unbounded_sphere_chart_density_is_normalised(n):
    # The default FOM chart maps all of R^n onto the sphere: with an inner density that puts
    # much of its mass far outside [0, pi] x [0, 2 pi) the density must still integrate to 1.
    model = make_model("fom", n + 1, n, inner_layers=0).double()
    assert model.chart.unbounded
    k = 2000 if n == 1 else 300
    lows = [0.0] * (n - 1) + [0.0]
    highs = [math.pi] * (n - 1) + [2 * math.pi]
    axes = [
        torch.linspace(lo, hi, (k if i < n - 1 else 2 * k) + 1, **F64)
        for i, (lo, hi) in enumerate(zip(lows, highs))
    ]
    centers = [0.5 * (a[1:] + a[:-1]) for a in axes]
    cell = math.prod(float(a[1] - a[0]) for a in axes)
    phi = torch.stack(torch.meshgrid(*centers, indexing="ij"), -1).reshape(-1, n)
    y = SphereChart(n, n + 1).decode(phi)  # points on the sphere from raw angles
    area = torch.ones(len(phi), **F64)
    for i in range(n - 1):
        area = area * torch.sin(phi[:, i]) ** (n - 1 - i)
    with torch.no_grad():
        density = model.log_prob(y).exp()
        torch.testing.assert_close(model.project(y), y)
        torch.testing.assert_close(model.decode(model.encode(y)), y)
    assert abs((density * area).sum().item() * cell - 1.0) < 2e-3
    # the raw-angle chart of the paper loses the mass outside its domain
    angles = make_model("fom", n + 1, n, inner_layers=0, chart="sphere-angles").double()
    with torch.no_grad():
        lost = (angles.log_prob(y).exp() * area).sum().item() * cell
    assert lost < 0.9


def test_unbounded_sphere_chart_closed_form():
    n, d = 3, 5
    chart = SphereChart(n, d, unbounded=True).double()
    u = torch.randn(7, n, **F64) * 2
    scale = torch.tensor([math.pi, math.pi, 2 * math.pi], **F64)
    phi = scale * torch.sigmoid(u)
    torch.testing.assert_close(chart.decode(u), SphereChart(n, d).double().decode(phi))
    torch.testing.assert_close(chart.encode(chart.decode(u)), u)
    model = FOM(chart, IdentityTransform(), d, n).double()
    log_dphi_du = torch.log(scale * torch.sigmoid(u) * torch.sigmoid(-u)).sum(-1)
    expected = (
        std_normal(u)
        - log_dphi_du
        - sum((n - i) * torch.log(torch.sin(phi[:, i - 1])) for i in range(1, n))
    )
    # J^T J is ill-conditioned near the poles: compare at 1e-5 relative accuracy
    torch.testing.assert_close(model.log_prob(chart.decode(u)), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="sphere-angles"):
        make_model("fom", 3, 2, chart="torus")


def test_surface_density_integrates_to_one():
    torch.manual_seed(11)
    model = MFlow(nonlinear_flow(3), IdentityTransform(), 3, 2).double()
    k, lim = 240, 7.0
    edges = torch.linspace(-lim, lim, k + 1, **F64)
    centers = 0.5 * (edges[1:] + edges[:-1])
    grid = torch.stack(torch.meshgrid(centers, centers, indexing="ij"), -1).reshape(-1, 2)
    step = 2 * lim / k
    h = 1e-6
    with torch.no_grad():
        x = model.decode(grid)
        du = (model.decode(grid + torch.tensor([h, 0], **F64)) - x) / h
        dv = (model.decode(grid + torch.tensor([0, h], **F64)) - x) / h
        area = torch.linalg.cross(du, dv).norm(dim=-1) * step**2
        density = model.log_prob(x).exp()
    assert abs((density * area).sum().item() - 1.0) < 1e-3


# ---------------------------------------------------------------- FOM
def test_fom_sphere_closed_form():
    torch.manual_seed(12)
    n, d = 3, 5
    model = FOM(SphereChart(n, d), IdentityTransform(), d, n).double()
    phi = torch.rand(9, n, **F64) * torch.tensor([math.pi, math.pi, 2 * math.pi], **F64)
    x = model.decode(phi)
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(9, **F64))
    torch.testing.assert_close(model.encode(x), phi)
    expected = std_normal(phi) - sum(
        (n - i) * torch.log(torch.sin(phi[:, i - 1])) for i in range(1, n)
    )
    torch.testing.assert_close(model.log_prob(x), expected)
    # off-manifold points are projected radially; projection is idempotent
    y = torch.randn(9, d, **F64)
    proj = model.project(y)
    torch.testing.assert_close(
        proj[:, : n + 1], y[:, : n + 1] / y[:, : n + 1].norm(dim=-1, keepdim=True)
    )
    torch.testing.assert_close(model.project(proj), proj)
    assert model.manifold_parameters() == []


class Paraboloid:
    """User chart: u -> (u, |u|^2) in R^{n+1}; encode keeps the first n coordinates."""

    latent_dim, data_dim = 2, 3

    def decode(self, u):
        return torch.cat([u, u.square().sum(-1, keepdim=True)], -1)

    def encode(self, x):
        return x[:, :2]


def test_fom_user_chart_and_save(tmp_path):
    torch.manual_seed(13)
    model = make_model("fom", 3, 2, chart=Paraboloid(), inner_layers=0).double()
    u = torch.randn(6, 2, **F64)
    x = model.decode(u)
    expected = std_normal(u) - 0.5 * torch.log1p(4 * u.square().sum(-1))
    torch.testing.assert_close(model.log_prob(x), expected)
    model.save(tmp_path / "fom.pt")
    with pytest.raises(ValueError, match="chart"):
        load(tmp_path / "fom.pt")
    loaded = load(tmp_path / "fom.pt", chart=Paraboloid())
    torch.testing.assert_close(loaded.log_prob(x), expected)


# ---------------------------------------------------------------- validation
def test_input_validation_messages():
    model = MFlow(nonlinear_flow(4, c=2), nonlinear_flow(2, c=2), 4, 2, context_dim=2).double()
    x = torch.randn(3, 4, **F64)
    ctx = torch.randn(3, 2, **F64)
    with pytest.raises(ValueError, match=r"expected x.shape\[-1\] == 4, got 3"):
        model.log_prob(x[:, :3], ctx)
    with pytest.raises(ValueError, match="non-finite"):
        model.log_prob(torch.full((3, 4), float("nan"), **F64), ctx)
    with pytest.raises(ValueError, match="floating-point"):
        model.log_prob(torch.ones(3, 4, dtype=torch.int64), ctx)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        model.log_prob(x)
    with pytest.raises(ValueError, match=r"expected context.shape\[-1\] == 2, got 3"):
        model.log_prob(x, torch.randn(3, 3, **F64))
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        model.log_prob(x, torch.randn(2, 2, **F64))
    with pytest.raises(ValueError, match=r"expected u.shape\[-1\] == 2"):
        model.decode(torch.randn(3, 5, **F64), ctx)
    with pytest.raises(ValueError, match="non-negative integer"):
        model.sample(-1, ctx[0])
    unconditional = MFlow(nonlinear_flow(4), nonlinear_flow(2), 4, 2).double()
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.log_prob(x, ctx)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        unconditional.log_prob(torch.randn(4, **F64))
    # NumPy inputs are accepted and converted to the model's dtype
    out = unconditional.log_prob(x.numpy().astype(np.float32))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64


def test_conditional_model_uses_context():
    torch.manual_seed(14)
    model = MFlow(nonlinear_flow(4), nonlinear_flow(2, c=2), 4, 2, context_dim=2).double()
    x = torch.randn(5, 4, **F64)
    c1, c2 = torch.zeros(5, 2, **F64), torch.ones(5, 2, **F64)
    assert not torch.allclose(model.log_prob(x, c1), model.log_prob(x, c2))
    torch.testing.assert_close(model.log_prob(x, c1), reference_manifold_log_prob(model, x, c1))
    # the manifold does not depend on theta: the likelihood ratio has no Jacobian term
    ratio = model.log_prob(x, c1) - model.log_prob(x, c2)
    u = model.encode(x, c1)
    torch.testing.assert_close(ratio, model.latent_log_prob(u, c1) - model.latent_log_prob(u, c2))
    assert model.sample(4, torch.zeros(2)).shape == (4, 4)
    assert model.sample(4, torch.zeros(4, 2)).shape == (4, 4)
    with pytest.raises(ValueError, match="conditional"):
        model.sample(4)


# ---------------------------------------------------------------- make_model (builders)
SMALL = {"outer_layers": 2, "inner_layers": 2, "hidden_features": 16, "num_blocks": 1}
SMALL_AE = {"encoder_hidden_features": 16, "encoder_num_blocks": 1}
KIND_OPTIONS = {
    "af": {"outer_layers": 2, "hidden_features": 16, "num_blocks": 1},
    "fom": {"inner_layers": 2, "hidden_features": 16, "num_blocks": 1},
    "pie": SMALL,
    "mflow": SMALL,
    "emflow": {**SMALL, **SMALL_AE},
    "pae": {
        "inner_layers": 2,
        "hidden_features": 16,
        "num_blocks": 1,
        **SMALL_AE,
        "decoder_hidden_features": 16,
        "decoder_num_blocks": 1,
    },
}
ALL_KINDS = tuple(KIND_OPTIONS)


def build(kind, d=4, n=2, c=0, **options):
    n = None if kind == "af" else n
    return make_model(kind, d, n, c, seed=0, **{**KIND_OPTIONS[kind], **options})


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_kind_interface_and_dtype(kind, dtype):
    model = build(kind, c=2).to(dtype)
    n = 4 if kind == "af" else 2
    x = torch.randn(5, 4, dtype=dtype)
    ctx = torch.randn(5, 2, dtype=dtype)
    u = model.encode(x, ctx)
    assert u.shape == (5, n) and u.dtype == dtype
    assert model.decode(u, ctx).shape == (5, 4)
    assert model.project(x, ctx).shape == (5, 4)
    assert model.latent_log_prob(u, ctx).shape == (5,)
    assert model.sample(3, ctx[0]).shape == (3, 4)
    if kind == "pae":
        with pytest.raises(NotImplementedError):
            model.log_prob(x, ctx)
    else:
        logp = model.log_prob(x, ctx)
        assert logp.shape == (5,) and logp.dtype == dtype and torch.isfinite(logp).all()
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        model.encode(x)
    params = set(map(id, model.parameters()))
    split = set(map(id, model.manifold_parameters())) | set(map(id, model.density_parameters()))
    assert split == params


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_save_load_round_trip(kind, tmp_path):
    model = build(kind, c=1).double()
    with torch.no_grad():  # perturb so that zero-initialised layers are not trivially equal
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(6, 4, **F64)
    ctx = torch.randn(6, 1, **F64)
    model.save(tmp_path / "model.pt")
    loaded = load(tmp_path / "model.pt")
    assert loaded.kind == kind and loaded.dtype == torch.float64
    assert loaded.config == model.config
    if kind == "pae":
        torch.testing.assert_close(loaded.project(x, ctx), model.project(x, ctx))
        u = model.encode(x, ctx)
        torch.testing.assert_close(loaded.latent_log_prob(u, ctx), model.latent_log_prob(u, ctx))
    else:
        torch.testing.assert_close(loaded.log_prob(x, ctx), model.log_prob(x, ctx))


@pytest.mark.parametrize("kind", ["mflow", "pie", "fom"])
def test_built_models_round_trip_on_the_manifold(kind):
    model = build(kind, d=5, n=2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    u = torch.rand(6, 2, **F64) + 0.5  # inside the sphere chart's domain as well
    x = model.decode(u)
    torch.testing.assert_close(model.encode(x), u)
    y = model.project(torch.randn(6, 5, **F64))
    torch.testing.assert_close(model.project(y), y)
    s = model.sample(6)
    torch.testing.assert_close(model.project(s), s)


def test_built_mflow_with_lu_and_permutations_matches_autograd():
    for linear in ("permutation", "lu"):
        model = build("mflow", d=5, n=3, linear=linear).double()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        x = torch.randn(4, 5, **F64)
        logp = model.log_prob(x)
        torch.testing.assert_close(logp, reference_manifold_log_prob(model, x))
        # simultaneous training differentiates the exact density: gradients reach f and h
        logp.sum().backward()
        for params in (model.manifold_parameters(), model.density_parameters()):
            assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
            assert any(p.grad.abs().sum() > 0 for p in params)


def test_built_mflow_curve_integrates_to_one():
    model = build("mflow", d=2, n=1, inner_layers=0).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    u = torch.linspace(-9, 9, 6001, **F64).unsqueeze(-1)
    with torch.no_grad():
        x = model.decode(u)
        density = model.log_prob(model.decode(0.5 * (u[1:] + u[:-1]))).exp()
    arc = (x[1:] - x[:-1]).norm(dim=-1)
    assert abs((density * arc).sum().item() - 1.0) < 1e-3


def test_pie_conditional_outer_switch():
    original = build("pie", c=2)
    unconditional_manifold = build("pie", c=2, conditional_outer=False)
    assert original.conditional_outer and not unconditional_manifold.conditional_outer
    x = torch.randn(3, 4)
    u = unconditional_manifold.encode(x, torch.zeros(3, 2))
    torch.testing.assert_close(u, unconditional_manifold.encode(x, torch.ones(3, 2)))


def test_make_model_rejects_bad_options():
    with pytest.raises(ValueError, match=r"valid options: .*outer_layers"):
        make_model("mflow", 4, 2, outer_layer=3)
    with pytest.raises(ValueError, match="unknown model kind"):
        make_model("vae", 4, 2)
    with pytest.raises(ValueError, match="latent_dim"):
        make_model("mflow", 4, 5)
    with pytest.raises(ValueError, match="linear"):
        make_model("mflow", 4, 2, linear="householder")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["af", "pie", "mflow", "emflow", "fom"])
def test_log_prob_on_gpu_matches_cpu(kind):
    model = build(kind).double()
    x = torch.randn(8, 4, **F64)
    expected = model.log_prob(x)
    gpu = model.to("cuda")
    got = gpu.log_prob(x.numpy())  # NumPy input goes to the model's device
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), expected)
    assert gpu.sample(4).device.type == "cuda"


# ---------------------------------------------------------------- image models
IMAGE = (3, 4, 4)
IMAGE_OPTIONS = {
    "levels": 2,
    "steps_per_level": 1,
    "inner_layers": 1,
    "hidden_features": 8,
    "num_blocks": 1,
    "image_options": {"hidden_channels": 4},
}


@pytest.mark.parametrize("kind", ["af", "pie", "mflow", "emflow"])
def test_image_models(kind):
    options = dict(IMAGE_OPTIONS)
    if kind == "emflow":
        options.update(encoder_hidden_features=8, encoder_num_blocks=1)
    if kind == "af":
        options.pop("inner_layers")
    model = make_model(kind, IMAGE, None if kind == "af" else 3, seed=0, **options).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(2, *IMAGE, **F64)
    n = 48 if kind == "af" else 3
    u = model.encode(x)
    assert u.shape == (2, n)
    assert model.decode(u).shape == (2, *IMAGE)
    assert model.sample(2).shape == (2, *IMAGE)
    proj = model.project(x)
    assert proj.shape == (2, *IMAGE)
    if kind != "emflow":
        torch.testing.assert_close(model.encode(model.decode(u)), u)
    if kind in ("pie", "mflow"):
        torch.testing.assert_close(model.project(proj), proj)
    logp = model.log_prob(x)
    assert logp.shape == (2,) and torch.isfinite(logp).all()
    if kind == "af":
        jac = jacobian_of(lambda xb: model.outer(xb)[0], x.reshape(2, -1), True)
        ref = std_normal(u) + torch.linalg.slogdet(jac).logabsdet
    elif kind == "pie":
        torch.testing.assert_close(
            model.log_prob_manifold(x), reference_manifold_log_prob(model, x, vectorize=True)
        )
        z = model.outer(x.reshape(2, -1))[0]
        jac = jacobian_of(lambda xb: model.outer(xb)[0], x.reshape(2, -1), True)
        ref = (
            model.latent_log_prob(z[:, :n])
            + std_normal(z[:, n:] / model.epsilon)
            - z[:, n:].shape[-1] * math.log(model.epsilon)
            + torch.linalg.slogdet(jac).logabsdet
        )
    else:
        ref = reference_manifold_log_prob(model, x, vectorize=True)
    torch.testing.assert_close(logp, ref)
    with pytest.raises(ValueError, match=r"\(B, 3, 4, 4\)"):
        model.log_prob(x.reshape(2, -1))


# ---------------------------------------------------------------- spline tail bound
def _perturbed_curve_model(dtype):
    # the model of the audit's reproducer (built with the defaults of that time: permutations)
    model = make_model("mflow", 2, 1, seed=4, linear="permutation").to(dtype)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in model.parameters():
            if (p == 0).all():
                p.add_(0.2 * torch.randn(p.shape, generator=gen).to(dtype))
    return model


def test_mflow_density_at_the_spline_tail_bound_is_right():
    """Regression: u = +B (the spline's upper tail bound) gave log_prob = inf (now -5.42)."""
    model = _perturbed_curve_model(torch.float32)
    u = torch.tensor([[3.0], [3.0 + 1e-6], [2.9999], [-3.0], [-3.0 - 1e-6]])
    with torch.no_grad():
        logp = model.log_prob(model.decode(u))
    assert torch.isfinite(logp).all()
    # float64 reference: latent density and a central finite-difference Jacobian of g
    ref_model = _perturbed_curve_model(torch.float64)
    u64, eps = u.double(), 1e-7
    with torch.no_grad():
        jac = (ref_model.decode(u64 + eps) - ref_model.decode(u64 - eps)) / (2 * eps)
        ref = ref_model.latent_log_prob(u64) - torch.log(jac.norm(dim=-1))
    torch.testing.assert_close(logp.double(), ref, atol=2e-3, rtol=0)
    assert abs(logp[0].item() - (-5.419)) < 2e-3


# ---------------------------------------------------------------- scale-safe sphere chart
def _reference_angles(y: np.ndarray, n: int) -> np.ndarray:
    """Hyperspherical angles of rows of y (float64 NumPy, independent of SphereChart)."""
    y = y[:, : n + 1]
    phi = [np.arctan2(np.linalg.norm(y[:, k + 1 :], axis=1), y[:, k]) for k in range(n - 1)]
    phi.append(np.mod(np.arctan2(y[:, n], y[:, n - 1]), 2 * np.pi))
    return np.stack(phi, axis=1)


@pytest.mark.parametrize("magnitude", [1e-30, 1e-16, 1.0, 1e20, 1e30])
@pytest.mark.parametrize(("n", "d"), [(1, 2), (2, 3), (3, 5)])
def test_sphere_chart_is_scale_safe_in_float32(n, d, magnitude):
    """Regression: encode squared x and was wrong for |x| >= 1e20 or <= 1e-16 in float32."""
    rng = np.random.default_rng(n + d)
    direction = rng.normal(size=(8, d))
    expected = _reference_angles(direction, n)
    x = torch.tensor(direction * magnitude, dtype=torch.float32)
    angles = SphereChart(n, d).float().encode(x)
    np.testing.assert_allclose(angles.double().numpy(), expected, atol=2e-6, rtol=0)
    logit = SphereChart(n, d, unbounded=True).float().encode(x)
    scale = np.full(n, np.pi)
    scale[-1] = 2 * np.pi
    p = expected / scale
    np.testing.assert_allclose(logit.double().numpy(), np.log(p / (1 - p)), atol=2e-4, rtol=0)
    # the FOM density of a point is that of its radial projection, at any magnitude
    model = make_model("fom", d, n, inner_layers=0)
    unit = torch.tensor(direction / np.linalg.norm(direction[:, : n + 1], axis=1)[:, None])
    torch.testing.assert_close(model.log_prob(x), model.log_prob(unit.float()), atol=1e-4, rtol=0)


# ---------------------------------------------------------------- bounded memory: chunks
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_public_methods_evaluate_large_batches_in_chunks(kind):
    """Regression: log_prob held every intermediate of the whole batch (1e5 samples: +806 MB)."""
    torch.manual_seed(0)
    model = build(kind, c=1).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, ctx = torch.randn(23, 4, **F64), torch.randn(23, 1, **F64)
    u = model.encode(x, ctx)
    model.batch_chunk_size = None
    methods = {
        "encode": lambda: model.encode(x, ctx),
        "decode": lambda: model.decode(u, ctx),
        "project": lambda: model.project(x, ctx),
        "latent_log_prob": lambda: model.latent_log_prob(u, ctx),
        "sample": lambda: model.sample(23, ctx, generator=torch.Generator().manual_seed(0)),
    }
    if kind != "pae":
        methods["log_prob"] = lambda: model.log_prob(x, ctx)
    whole = {name: f() for name, f in methods.items()}
    seen: list[int] = []
    for private in ("_encode", "_decode", "_project", "_log_prob", "_latent_log_prob"):
        original = getattr(model, private)

        def spy(data, context, _original=original):
            seen.append(data.shape[0])
            return _original(data, context)

        setattr(model, private, spy)
    model.batch_chunk_size = 5
    for name, f in methods.items():
        seen.clear()
        torch.testing.assert_close(f(), whole[name], atol=1e-12, rtol=1e-12)
        assert seen and max(seen) <= 5, (name, seen)
    model.batch_chunk_size = 0
    with pytest.raises(ValueError, match="batch_chunk_size"):
        model.encode(x, ctx)


# ---------------------------------------------------------------- option range checks
@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("mflow", {"tail_bound": 0.0}, r"expected tail_bound > 0 and finite, got 0.0"),
        ("mflow", {"tail_bound": -1.0}, r"expected tail_bound > 0 and finite, got -1.0"),
        ("mflow", {"tail_bound": float("inf")}, r"expected tail_bound > 0 and finite, got inf"),
        ("mflow", {"tail_bound": float("nan")}, r"expected tail_bound > 0 and finite, got nan"),
        ("mflow", {"tail_bound": True}, r"tail_bound"),
        ("mflow", {"tail_bound": 1e30}, r"1e-06 <= tail_bound <= 10000"),
        ("mflow", {"num_bins": 0}, r"expected num_bins an integer >= 1, got 0"),
        ("mflow", {"outer_layers": 2.0}, r"expected outer_layers an integer >= 1, got 2.0"),
        ("mflow", {"outer_layers": True}, r"outer_layers an integer"),
        ("mflow", {"inner_layers": -1}, r"inner_layers an integer >= 0"),
        ("mflow", {"hidden_features": "100"}, r"hidden_features an integer"),
        ("mflow", {"num_blocks": 1.5}, r"num_blocks an integer"),
        ("emflow", {"encoder_num_blocks": 0}, r"encoder_num_blocks an integer >= 1"),
        ("pae", {"decoder_hidden_features": None}, r"decoder_hidden_features an integer"),
        ("pie", {"pie_epsilon": 0.0}, r"expected pie_epsilon > 0 and finite, got 0.0"),
        ("pie", {"pie_epsilon": float("inf")}, r"expected pie_epsilon > 0 and finite, got inf"),
        ("pie", {"conditional_outer": "yes"}, r"conditional_outer True or False"),
        ("mflow", {"seed": 1.5}, r"seed an integer"),
    ],
)
def test_make_model_refuses_out_of_range_options(kind, options, message):
    from mflows.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=message):
        make_model(kind, 4, 2, **options)


def test_make_model_refuses_bad_dimensions():
    from mflows.errors import InvalidArgumentError

    for data_dim in (0, 3.0, True, (3, 4), (3, 4, 0), "4"):
        with pytest.raises(InvalidArgumentError, match="data_dim"):
            make_model("mflow", data_dim, 1)
    for latent_dim in (2.0, True, 0, 5, None):
        with pytest.raises(InvalidArgumentError, match="latent_dim"):
            make_model("mflow", 4, latent_dim)
    with pytest.raises(InvalidArgumentError, match="context_dim"):
        make_model("mflow", 4, 2, 1.0)
    # an ambient flow's latent dimension is d: anything else is refused, not replaced
    with pytest.raises(InvalidArgumentError, match="latent_dim == data_dim == 4"):
        make_model("af", 4, 2)
    assert make_model("af", 4, 4).latent_dim == 4 and make_model("af", 4).latent_dim == 4
    assert make_model("mflow", np.int64(4), np.int64(2)).latent_dim == 2  # NumPy ints are ints


# ---------------------------------------------------------------- save / load safety
def test_failing_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    build("mflow").save(path)
    before = path.read_bytes()
    other = build("mflow", num_bins=4)

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        other.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary left


def test_load_refuses_other_versions_and_damaged_files(tmp_path):
    from mflows.errors import CheckpointError

    path = tmp_path / "model.pt"
    build("mflow").save(path)
    payload = torch.load(path, weights_only=True)
    for version, name in ((2, "v2.pt"), (None, "none.pt")):
        torch.save({**payload, "version": version}, tmp_path / name)
        with pytest.raises(CheckpointError, match=f"version {version!r}"):
            load(tmp_path / name)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an mflows model file"):
        load(tmp_path / "other.pt")
    (tmp_path / "truncated.pt").write_bytes(path.read_bytes()[:200])
    (tmp_path / "text.pt").write_text("not a torch file")
    for name in ("truncated.pt", "text.pt"):
        with pytest.raises(CheckpointError, match="delete it and save or train the model again"):
            load(tmp_path / name)
    bad_weights = {**payload, "state_dict": {"outer.nothing": torch.zeros(1)}}
    torch.save(bad_weights, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="damaged"):
        load(tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="no such model file"):
        load(tmp_path / "missing.pt")


def test_load_runs_no_code_from_a_crafted_file(tmp_path):
    from mflows.errors import CheckpointError

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("pwned",))

    torch.save({"format": "mflows-model", "version": 1, "config": Payload()}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError):
        load(tmp_path / "x.pt")
    assert not marker.exists()


# ---------------------------------------------------------------- extreme inputs
def test_extreme_inputs_are_refused_not_returned_as_nan():
    from mflows.errors import InvalidArgumentError

    torch.manual_seed(0)
    model = build("emflow", d=4, n=2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.ones(2, 4)
    x[0] = 3e38  # overflows the float32 encoder network
    with pytest.raises(InvalidArgumentError, match=r"encode cannot evaluate 1 of 2 samples"):
        model.encode(x)
    # a model that itself produces NaN (a diverged training) returns it: the trainer reports it
    with torch.no_grad():
        next(model.encoder.parameters()).fill_(float("nan"))
    assert torch.isnan(model.encode(torch.ones(2, 4))).all()


def test_identity_init_false_gives_the_couplings_a_random_start():
    """identity_init (default True) zeroes the conditioners' output layers: every coupling is
    the identity at first. False keeps PyTorch's default init there (the paper's code), so
    the couplings start away from the identity; the option is recorded and survives a save."""
    from mflows.errors import InvalidArgumentError
    from mflows.training.fingerprint import model_fingerprint
    from mflows.transforms.coupling import Coupling

    torch.manual_seed(0)
    for identity in (True, False):
        model = make_model("mflow", 4, 2, seed=0, identity_init=identity)
        couplings = [m for m in model.modules() if isinstance(m, Coupling)]
        assert couplings
        xs = [torch.randn(64, c.features) for c in couplings]
        moved = [float((c(x)[0] - x).abs().max()) for c, x in zip(couplings, xs)]
        if identity:
            assert max(moved) < 1e-5
        else:
            assert min(moved) > 1e-3
        assert model.config["architecture"]["identity_init"] is identity
        # checkpoints written before the option existed (no key) match the default
        assert ("identity_init" in str(model_fingerprint(model))) is not identity
    with pytest.raises(InvalidArgumentError, match="identity_init"):
        make_model("mflow", 4, 2, identity_init="no")
