"""Property tests of every transform, driven by one registry of factories (float64)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch.func import jacfwd, jacrev, vmap

from mflows.nets import ConvResidualNet, ResidualMLP
from mflows.transforms import (
    ActNorm,
    AffineCoupling,
    CompositeTransform,
    ElementwiseRQS,
    IdentityTransform,
    ImageRQSCoupling,
    InverseTransform,
    InvertibleConv1x1,
    LULinear,
    MultiscaleFlow,
    RandomPermutation,
    ReversePermutation,
    RQSCoupling,
    Squeeze,
    Transform,
    make_image_flow,
    make_tabular_flow,
    rational_quadratic_spline,
)

DTYPE = torch.float64
SMALL = dict(hidden_features=16, num_blocks=1)
SMALL_IMG = dict(hidden_channels=8, num_blocks=1)


@dataclass
class Case:
    """A transform factory, the per-sample input shape and the context size."""

    make: Callable[[], Transform]
    shape: tuple[int, ...]
    context: int = 0
    identity_init: bool = False  # forward is the identity map right after construction


REGISTRY: dict[str, Case] = {
    "identity": Case(IdentityTransform, (3,), identity_init=True),
    "elementwise_rqs": Case(lambda: ElementwiseRQS(3, num_bins=5), (3,), identity_init=True),
    "elementwise_rqs_ctx": Case(
        lambda: ElementwiseRQS(2, context_features=2, **SMALL), (2,), 2, identity_init=True
    ),
    "rqs_coupling": Case(lambda: RQSCoupling(5, **SMALL), (5,), identity_init=True),
    "rqs_coupling_ctx_mask": Case(
        lambda: RQSCoupling(4, mask=[False, True, True, False], context_features=3, **SMALL),
        (4,),
        3,
        identity_init=True,
    ),
    "affine_coupling": Case(lambda: AffineCoupling(5, **SMALL), (5,), identity_init=True),
    "affine_coupling_ctx": Case(
        lambda: AffineCoupling(4, context_features=2, **SMALL), (4,), 2, identity_init=True
    ),
    "random_permutation": Case(lambda: RandomPermutation(6, seed=3), (6,)),
    "reverse_permutation": Case(lambda: ReversePermutation(5), (5,)),
    "lu_linear": Case(lambda: LULinear(4), (4,), identity_init=True),
    "composite": Case(
        lambda: CompositeTransform(
            [RQSCoupling(4, **SMALL), LULinear(4), AffineCoupling(4, mask=[0, 1, 0, 1], **SMALL)]
        ),
        (4,),
        identity_init=True,
    ),
    "inverse_of_coupling": Case(
        lambda: InverseTransform(RQSCoupling(4, context_features=1, **SMALL)), (4,), 1
    ),
    "tabular_spline_perm": Case(lambda: make_tabular_flow(5, 3, seed=0, **SMALL), (5,)),
    "tabular_affine_lu_ctx": Case(
        lambda: make_tabular_flow(
            4, 3, context_features=2, linear="lu", coupling="affine", **SMALL
        ),
        (4,),
        2,
        identity_init=True,
    ),
    "tabular_spline_none_ctx": Case(
        lambda: make_tabular_flow(3, 2, context_features=2, linear="none", num_bins=4, **SMALL),
        (3,),
        2,
        identity_init=True,
    ),
    "tabular_1d": Case(lambda: make_tabular_flow(1, 2, **SMALL), (1,), identity_init=True),
    "tabular_1d_ctx": Case(
        lambda: make_tabular_flow(1, 2, context_features=2, **SMALL), (1,), 2, identity_init=True
    ),
    "actnorm": Case(lambda: ActNorm(3), (3, 2, 2), identity_init=True),
    "conv1x1": Case(lambda: InvertibleConv1x1(3), (3, 2, 2), identity_init=True),
    "squeeze": Case(Squeeze, (2, 4, 2)),
    "image_coupling": Case(lambda: ImageRQSCoupling(3, **SMALL_IMG), (3, 2, 2), identity_init=True),
    "image_coupling_ctx": Case(
        lambda: ImageRQSCoupling(2, context_features=2, num_bins=4, **SMALL_IMG),
        (2, 2, 2),
        2,
        identity_init=True,
    ),
    "multiscale": Case(
        lambda: make_image_flow((1, 4, 4), levels=2, steps_per_level=1, **SMALL_IMG), (16,)
    ),
    "multiscale_ctx": Case(
        lambda: make_image_flow(
            (2, 2, 2), levels=1, steps_per_level=2, context_features=2, num_bins=4, **SMALL_IMG
        ),
        (8,),
        2,
    ),
}
NAMES = sorted(REGISTRY)
CONTEXT_NAMES = [n for n in NAMES if REGISTRY[n].context]
IDENTITY_NAMES = [n for n in NAMES if REGISTRY[n].identity_init]


def perturb(t: Transform, scale: float = 0.15, seed: int = 0) -> Transform:
    """Adds Gaussian noise to every parameter (zero-initialised layers would hide bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in t.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return t


def build(name: str, dtype: torch.dtype = DTYPE, seed: int = 0) -> Transform:
    torch.manual_seed(seed)
    return perturb(REGISTRY[name].make().to(dtype), seed=seed).eval()


def inputs(name: str, batch: int, dtype: torch.dtype = DTYPE, seed: int = 1):
    case = REGISTRY[name]
    gen = torch.Generator().manual_seed(seed)
    x = 1.5 * torch.randn(batch, *case.shape, generator=gen, dtype=dtype)  # some in the tails
    c = torch.randn(batch, case.context, generator=gen, dtype=dtype) if case.context else None
    return x, c


def per_sample(t: Transform, c: torch.Tensor | None, inverse: bool = False):
    """The map of one flattened sample (and its context) as a function for autograd."""
    fn = t.inverse if inverse else t.forward

    def f(xi: torch.Tensor, ci: torch.Tensor | None = None) -> torch.Tensor:
        return fn(xi[None], None if ci is None else ci[None])[0][0]

    return f


_REFERENCE: dict[str, torch.Tensor] = {}


def reference_jacobians(name: str, t: Transform, x, c) -> torch.Tensor:
    """Autograd Jacobians of the forward map at ``inputs(name, 3)``, computed once per name."""
    if name not in _REFERENCE:
        _REFERENCE[name] = autograd_jacobians(per_sample(t, c), x, c)
    return _REFERENCE[name]


def autograd_jacobians(f, x, c):
    rows = []
    for i in range(x.shape[0]):
        ci = None if c is None else c[i]
        jac = torch.autograd.functional.jacobian(lambda v, ci=ci: f(v, ci), x[i])
        rows.append(jac.reshape(x[i].numel(), x[i].numel()))
    return torch.stack(rows)


@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("name", NAMES)
def test_round_trip_and_shapes(name, batch):
    t = build(name)
    x, c = inputs(name, batch)
    y, ld = t(x, c)
    assert ld.shape == (batch,)
    if name == "squeeze":  # the only shape-changing layer
        assert y.shape == (batch, 8, 2, 1)
    else:
        assert y.shape == x.shape
    xr, ild = t.inverse(y, c)
    assert xr.shape == x.shape and ild.shape == (batch,)
    torch.testing.assert_close(xr, x, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(ild, -ld, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_batch_rows_independent(name):
    t = build(name)
    x, c = inputs(name, 5)
    y, ld = t(x, c)
    for i in (0, 3):
        yi, ldi = t(x[i : i + 1], None if c is None else c[i : i + 1])
        torch.testing.assert_close(yi[0], y[i])
        torch.testing.assert_close(ldi[0], ld[i])


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("name", NAMES)
def test_logabsdet_matches_autograd_jacobian(name, inverse):
    t = build(name)
    x, c = inputs(name, 3)
    if inverse:  # evaluate the inverse at points in the range of the forward map
        x = t(x, c)[0].detach()
    if inverse:
        jac = autograd_jacobians(per_sample(t, c, inverse=True), x, c)
    else:
        jac = reference_jacobians(name, t, x, c)
    _, ld = (t.inverse if inverse else t.forward)(x, c)
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert torch.all(sign != 0)
    torch.testing.assert_close(ld, logabsdet, atol=1e-8, rtol=1e-8)
    assert not torch.allclose(jac, torch.eye(jac.shape[-1], dtype=DTYPE)) or name in (
        "identity",
        "squeeze",
    )


@pytest.mark.parametrize("name", NAMES)
def test_vmap_jacobians_match_autograd(name):
    t = build(name)
    x, c = inputs(name, 3)
    f = per_sample(t, c)
    ref = reference_jacobians(name, t, x, c)
    d = x[0].numel()
    args = (x,) if c is None else (x, c)
    for jac in (jacfwd, jacrev):
        j = vmap(jac(f))(*args).reshape(3, d, d)
        torch.testing.assert_close(j, ref, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize(
    "name", [n for n in NAMES if any(True for _ in REGISTRY[n].make().parameters())]
)
def test_gradients_reach_every_parameter(name):
    t = build(name)
    x, c = inputs(name, 6)
    y, ld = t(x, c)
    xr, ild = t.inverse(x, c)
    (y.square().sum() + ld.sum() + xr.square().sum() + ild.sum()).backward()
    for pname, p in t.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_finite_for_large_inputs(name, dtype):
    t = build(name, dtype)
    x, c = inputs(name, 4, dtype)
    x = x.sign() * 1e3
    x = x.clone().requires_grad_(True)
    y, ld = t(x, c)
    xr, ild = t.inverse(y.detach() if name == "squeeze" else x, c)  # squeeze needs 4 | C
    for v in (y, ld, xr, ild):
        assert torch.isfinite(v).all()
    (y.sum() + ld.sum() + xr.sum() + ild.sum()).backward()
    assert torch.isfinite(x.grad).all()
    for p in t.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    t = build(name, seed=0)
    torch.manual_seed(123)
    fresh = REGISTRY[name].make().to(DTYPE).eval()
    x, c = inputs(name, 4)
    fresh.load_state_dict(copy.deepcopy(t.state_dict()))
    y1, ld1 = t(x, c)
    y2, ld2 = fresh(x, c)
    assert torch.equal(y1, y2) and torch.equal(ld1, ld2)


@pytest.mark.parametrize("name", CONTEXT_NAMES)
def test_context_changes_output(name):
    t = build(name)
    x, c = inputs(name, 4)
    y1, ld1 = t(x, c)
    y2, ld2 = t(x, c + 1.0)
    assert not torch.allclose(y1, y2)
    assert not torch.allclose(ld1, ld2)
    with pytest.raises(ValueError):
        t(x, None)


@pytest.mark.parametrize("name", IDENTITY_NAMES)
def test_identity_at_initialisation(name):
    t = REGISTRY[name].make().to(DTYPE)
    x, c = inputs(name, 5)
    y, ld = t(x, c)
    torch.testing.assert_close(y, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(ld, torch.zeros_like(ld), atol=1e-12, rtol=0)


# --- the spline function -------------------------------------------------------------------


def _spline_params(n, k, scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = scale * torch.randn(n, k, generator=gen, dtype=DTYPE)
    h = scale * torch.randn(n, k, generator=gen, dtype=DTYPE)
    d = scale * torch.randn(n, k - 1, generator=gen, dtype=DTYPE)
    return w, h, d


def _knots(u, bound, min_size=1e-3):
    s = min_size + (1 - min_size * u.shape[-1]) * torch.softmax(u, -1)
    return torch.cat([torch.zeros_like(s[..., :1]), torch.cumsum(s, -1)], -1) * 2 * bound - bound


def test_spline_interpolates_knots_with_derivatives():
    bound, k = 2.0, 6
    w, h, d = _spline_params(4, k)
    xk, yk = _knots(w, bound), _knots(h, bound)
    dk = 1e-3 + torch.nn.functional.softplus(d + math.log(math.expm1(1 - 1e-3)))
    dk = torch.cat([torch.ones(4, 1, dtype=DTYPE), dk, torch.ones(4, 1, dtype=DTYPE)], -1)
    # evaluate at every knot (broadcasting the parameters over the knots)
    x = xk.clone().requires_grad_(True)
    y, ld = rational_quadratic_spline(
        x,
        w[:, None].expand(-1, k + 1, -1),
        h[:, None].expand(-1, k + 1, -1),
        d[:, None].expand(-1, k + 1, -1),
        tail_bound=bound,
    )
    torch.testing.assert_close(y, yk, atol=1e-12, rtol=0)
    (grad,) = torch.autograd.grad(y.sum(), x)
    # at the knots the one-sided derivative equals d_k; autograd picks the bin to the right
    torch.testing.assert_close(grad, dk, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(ld.exp(), dk, atol=1e-9, rtol=1e-9)


def test_spline_monotone_derivative_and_inverse_on_grid():
    bound, k = 3.0, 8
    w, h, d = _spline_params(1, k, scale=2.0, seed=1)
    x = torch.linspace(-5, 5, 2001, dtype=DTYPE).requires_grad_(True)
    args = [a.expand(2001, -1) for a in (w, h, d)]
    y, ld = rational_quadratic_spline(x, *args, tail_bound=bound)
    assert torch.all(torch.diff(y) > 0)
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(ld, grad.log(), atol=1e-10, rtol=1e-10)
    tails = x.abs() > bound
    assert torch.equal(y[tails], x[tails]) and torch.all(ld[tails] == 0)
    xr, ild = rational_quadratic_spline(y, *args, inverse=True, tail_bound=bound)
    torch.testing.assert_close(xr, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(ild, -ld, atol=1e-9, rtol=0)


def test_spline_tails_join_smoothly():
    w, h, d = _spline_params(2, 8, scale=1.5)
    eps = 1e-7
    for b in (-3.0, 3.0):
        x = torch.tensor([[b - eps, b + eps]], dtype=DTYPE).expand(2, 2)
        args = [a[:, None].expand(-1, 2, -1) for a in (w, h, d)]
        y, ld = rational_quadratic_spline(x, *args)
        # continuous with slope 1 at +-B: |y - x| = O(eps^2) inside, 0 outside
        torch.testing.assert_close(y, x, atol=1e-10, rtol=0)
        torch.testing.assert_close(ld, torch.zeros_like(ld), atol=1e-3, rtol=0)
        assert torch.all(ld[x.abs() > 3] == 0)


def _boundary_points(bound: float, dtype: torch.dtype) -> torch.Tensor:
    """-B, +B and their neighbours one ulp inside and outside, in ``dtype``."""
    b = torch.tensor(bound, dtype=dtype)
    inf = torch.tensor(math.inf, dtype=dtype)
    points = [b, torch.nextafter(b, inf), torch.nextafter(b, -inf)]
    points += [-p for p in points]
    return torch.stack(points)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_spline_derivative_at_the_tail_bounds(inverse, dtype):
    """At and one ulp around +-B the derivative is the spline's (about 1), in both modes.

    Regression: round-off put the inverse's bin fraction at 1 + 4e-15 for y = B, and a plain
    clamp zeroed its derivative, so Jacobians and M-flow densities were wrong there.
    """
    bound, k, n_sets = 3.0, 8, 20
    x = _boundary_points(bound, dtype)
    w, h, d = (a.to(dtype) for a in _spline_params(n_sets, k, scale=2.0, seed=3))
    args = [a[:, None].expand(-1, x.numel(), -1) for a in (w, h, d)]
    xs = x.expand(n_sets, -1).clone().requires_grad_(True)
    y, ld = rational_quadratic_spline(xs, *args, inverse=inverse, tail_bound=bound)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    (grad,) = torch.autograd.grad(y.sum(), xs)
    tol = 1e-3 if dtype == torch.float32 else 1e-9  # float32: round-off of the quadratic root
    # the boundary knot derivatives are 1, so the map has slope 1 at the bounds (in float32 one
    # ulp inside a narrow boundary bin already moves it by up to ~1e-3)
    slope_tol = 1e-2 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(grad, torch.ones_like(grad), atol=slope_tol, rtol=0)
    torch.testing.assert_close(ld.exp(), grad, atol=tol, rtol=0)

    def single(xi, wi, hi, di):
        y = rational_quadratic_spline(xi[None], wi[None], hi[None], di[None], inverse=inverse)
        return y[0][0]

    for jac in (jacfwd, jacrev):
        j = vmap(vmap(jac(single)))(xs.detach(), *args)
        torch.testing.assert_close(j, grad, atol=tol, rtol=0)


def test_spline_inverse_at_the_bound_of_a_random_spline_matches_finite_differences():
    """The inverse at y = B (the issue's failing case) has the finite-difference slope."""
    w, h, d = _spline_params(40, 8, scale=2.0, seed=4)
    y = torch.full((40,), 3.0, dtype=DTYPE, requires_grad=True)
    x, ld = rational_quadratic_spline(y, w, h, d, inverse=True)
    (grad,) = torch.autograd.grad(x.sum(), y)
    eps = 1e-7

    def at(shift: float) -> torch.Tensor:
        return rational_quadratic_spline(y.detach() - shift, w, h, d, inverse=True)[0]

    fd = (3.0 * at(0.0) - 4.0 * at(eps) + at(2.0 * eps)) / (2.0 * eps)  # one-sided, 2nd order
    torch.testing.assert_close(grad, fd, atol=1e-5, rtol=0)
    torch.testing.assert_close(ld.exp(), grad, atol=1e-9, rtol=0)


SPLINE_NAMES = ["elementwise_rqs", "rqs_coupling", "inverse_of_coupling", "tabular_spline_perm"]


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("name", SPLINE_NAMES)
def test_spline_layers_at_the_tail_bounds_match_autograd(name, inverse):
    """Inputs exactly at -B, +B and one ulp around them: log|det| equals autograd's Jacobian."""
    t = build(name)
    x, c = inputs(name, 6)
    bounds = _boundary_points(3.0, DTYPE)  # the layers' default tail bound
    x = bounds[: x.shape[0], None].expand_as(x).clone()
    x[:, ::2] = 0.5  # the conditioners see ordinary values, the splines the bounds
    jac = autograd_jacobians(per_sample(t, c, inverse=inverse), x, c)
    y, ld = (t.inverse if inverse else t.forward)(x, c)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    torch.testing.assert_close(ld, torch.linalg.slogdet(jac).logabsdet, atol=1e-8, rtol=1e-8)
    args = (x,) if c is None else (x, c)
    f = per_sample(t, c, inverse=inverse)
    for jacobian in (jacfwd, jacrev):
        torch.testing.assert_close(vmap(jacobian(f))(*args), jac, atol=1e-10, rtol=1e-8)


def test_spline_zero_parameters_is_identity():
    x = torch.linspace(-4, 4, 101, dtype=DTYPE)
    z = torch.zeros(101, 8, dtype=DTYPE)
    y, ld = rational_quadratic_spline(x, z, z, z[:, :7])
    torch.testing.assert_close(y, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(ld, torch.zeros_like(ld), atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spline_large_inputs_finite_gradients(dtype):
    w, h, d = (a.to(dtype).requires_grad_(True) for a in _spline_params(4, 8, scale=3.0))
    x = torch.tensor([-1e3, -3.0, 3.0, 1e3], dtype=dtype, requires_grad=True)
    for inverse in (False, True):
        y, ld = rational_quadratic_spline(x, w, h, d, inverse=inverse)
        grads = torch.autograd.grad(y.sum() + ld.sum(), (x, w, h, d))
        assert torch.isfinite(y).all() and torch.isfinite(ld).all()
        assert all(torch.isfinite(g).all() for g in grads)


def test_spline_rejects_bad_shapes():
    w, h, d = _spline_params(3, 4)
    with pytest.raises(ValueError):
        rational_quadratic_spline(torch.zeros(3, dtype=DTYPE), w, h, d[:, :2])


# --- layer-specific checks ---------------------------------------------------------------


def test_permutation_inverse_uses_argsort():
    p = RandomPermutation(7, seed=5)
    assert torch.equal(p.inverse_permutation, torch.argsort(p.permutation))
    assert torch.equal(RandomPermutation(7, seed=5).permutation, p.permutation)
    x = torch.arange(7.0)[None]
    assert torch.equal(ReversePermutation(7)(x)[0], x.flip(-1))


def test_lu_linear_matches_dense_matrix():
    t = build("lu_linear")
    x, _ = inputs("lu_linear", 5)
    w = t.weight()
    y, ld = t(x)
    torch.testing.assert_close(y, x @ w.T + t.bias)
    torch.testing.assert_close(ld, torch.linalg.slogdet(w)[1].expand(5))


def test_squeeze_is_pixel_unshuffle():
    x = torch.randn(2, 3, 4, 6, dtype=DTYPE)
    y, ld = Squeeze()(x)
    assert torch.equal(y, torch.nn.functional.pixel_unshuffle(x, 2)) and torch.all(ld == 0)
    with pytest.raises(ValueError):
        Squeeze()(torch.zeros(1, 1, 3, 4))


def test_multiscale_puts_deepest_level_first():
    torch.manual_seed(0)
    flow = make_image_flow((1, 4, 4), levels=2, steps_per_level=1, **SMALL_IMG).to(DTYPE)
    assert isinstance(flow, MultiscaleFlow)
    x, _ = inputs("multiscale", 3)
    y0, _ = flow(x)
    perturb(flow.levels[-1])  # only the deepest level changes
    y1, _ = flow(x)
    n = math.prod(flow.final_shape)
    assert n == 8 and flow.factored_shapes == [(2, 2, 2)]
    torch.testing.assert_close(y1[:, n:], y0[:, n:], atol=0, rtol=0)
    assert not torch.allclose(y1[:, :n], y0[:, :n])


def test_multiscale_rejects_indivisible_shape():
    with pytest.raises(ValueError):
        make_image_flow((1, 6, 6), levels=2)


def test_make_tabular_flow_seed_is_reproducible_and_validates():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = perturb(make_tabular_flow(4, 2, linear="lu", seed=7, **SMALL))
    assert torch.equal(torch.get_rng_state(), state)
    b = perturb(make_tabular_flow(4, 2, linear="lu", seed=7, **SMALL))
    for (na, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), na
    with pytest.raises(ValueError):
        make_tabular_flow(4, 2, linear="householder")
    with pytest.raises(ValueError):
        make_tabular_flow(4, 2, coupling="maf")


def test_nets_shapes_context_and_zero_init():
    net = ResidualMLP(3, 5, hidden_features=8, context_features=2)
    out = net(torch.randn(4, 3), torch.randn(4, 2))
    assert out.shape == (4, 5) and torch.all(out == 0)
    with pytest.raises(ValueError):
        net(torch.randn(4, 3))
    conv = ConvResidualNet(2, 6, hidden_channels=4, context_features=3, zero_init_last=False)
    out = conv(torch.randn(2, 2, 4, 4), torch.randn(2, 3))
    assert out.shape == (2, 6, 4, 4) and out.abs().sum() > 0


def test_spline_matches_zuko_on_the_same_knots():
    """Independent reference: zuko's RQS evaluated on the knots and derivatives we build."""
    zuko_transforms = pytest.importorskip("zuko.transforms")
    bound, k = 3.0, 7
    w, h, d = _spline_params(50, k, scale=1.5, seed=4)
    x = torch.linspace(-2.99, 2.99, 50, dtype=DTYPE)
    y, ld = rational_quadratic_spline(x, w, h, d, tail_bound=bound)
    ref = zuko_transforms.MonotonicRQSTransform(w, h, d, bound=bound)
    dk = 1e-3 + torch.nn.functional.softplus(d + math.log(math.expm1(1 - 1e-3)))
    ref.horizontal, ref.vertical = _knots(w, bound), _knots(h, bound)
    ref.derivatives = torch.nn.functional.pad(dk, (1, 1), value=1.0)
    y_ref, ld_ref = ref.call_and_ladj(x)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ld, ld_ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(
        rational_quadratic_spline(y, w, h, d, inverse=True, tail_bound=bound)[0],
        ref.inv(y_ref),
        atol=1e-10,
        rtol=1e-10,
    )
