"""The image coupling's spline head and its folded forward-mode rule.

References: the plain function (a 1x1 convolution, then the packed spline) differentiated by
autograd's chain rule, finite differences (``gradcheck``), and ``einsum`` for ``pixel_matvec``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import jacfwd, jvp, vmap

from mflows.transforms.spline_head import pixel_matvec, spline_head
from mflows.transforms.splines import packed_rational_quadratic_spline, spline_param_count

K = 4
P = spline_param_count(K)
BOUND = 2.0


def _plain(xb, a, weight, bias, inverse=False):
    theta = F.conv2d(a, weight, bias)
    theta = theta.reshape(*xb.shape[:-2], -1, *xb.shape[-2:]).movedim(-3, -1)
    return packed_rational_quadratic_spline(xb, theta, K, inverse=inverse, tail_bound=BOUND)


def _inputs(batch=2, cb=2, hidden=3, side=3, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    # x spans the spline's interval and both tails
    xb = 1.5 * BOUND * (2 * torch.rand(batch, cb, side, side, generator=gen, dtype=dtype) - 1)
    a = torch.randn(batch, hidden, side, side, generator=gen, dtype=dtype)
    weight = 0.7 * torch.randn(cb * P, hidden, 1, 1, generator=gen, dtype=dtype)
    bias = 0.3 * torch.randn(cb * P, generator=gen, dtype=dtype)
    return xb, a, weight, bias


def _head(inverse):
    return lambda xb, a, w, b: spline_head(xb, a, w, b, K, inverse, BOUND)


@pytest.mark.parametrize("inverse", [False, True])
def test_values_are_the_plain_functions(inverse):
    args = _inputs(dtype=torch.float32)
    for got, want in zip(_head(inverse)(*args), _plain(*args, inverse=inverse), strict=True):
        assert torch.equal(got, want)
    assert bool((args[0].abs() > BOUND).any()) and bool((args[0].abs() < BOUND).any())


@pytest.mark.parametrize("inverse", [False, True])
def test_forward_derivatives_against_finite_differences(inverse):
    # the folded forward-mode rule (used with gradients off) against central differences
    args = _inputs()
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        tangents = tuple(torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in args)
        with torch.no_grad():
            _, folded = jvp(_head(inverse), args, tangents)
            eps = 1e-6
            up = _head(inverse)(*(t + eps * v for t, v in zip(args, tangents, strict=True)))
            down = _head(inverse)(*(t - eps * v for t, v in zip(args, tangents, strict=True)))
        for got, hi, lo in zip(folded, up, down, strict=True):
            torch.testing.assert_close(got, (hi - lo) / (2 * eps), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("inverse", [False, True])
def test_jacobians_in_every_argument_match_the_chain_rule(inverse):
    args = _inputs()
    plain = lambda *t: _plain(*t, inverse=inverse)  # noqa: E731
    with torch.no_grad():
        for argnum in range(4):
            folded = jacfwd(_head(inverse), argnums=argnum)(*args)
            chain = jacfwd(plain, argnums=argnum)(*args)
            for got, want in zip(folded, chain, strict=True):
                assert not torch.equal(got, torch.zeros_like(got))
                torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_with_gradients_on_it_is_the_plain_function_for_autograd():
    args = tuple(t.requires_grad_() for t in _inputs())
    y, ld = spline_head(*args, K, True, BOUND)
    assert "SplineHead" not in type(y.grad_fn).__name__
    got = torch.autograd.grad((y.square().sum() + ld.sum()), args)
    y, ld = _plain(*args, inverse=True)
    want = torch.autograd.grad((y.square().sum() + ld.sum()), args)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)


def test_many_tangents_of_one_point_and_tangents_per_sample():
    # the decoder-Jacobian pattern (vmap over directions, point not batched) and the pattern
    # with the point batched as well (vmap over samples outside)
    xb, a, weight, bias = _inputs()
    gen = torch.Generator().manual_seed(5)
    a_dirs = torch.randn(7, *a.shape, generator=gen, dtype=a.dtype)
    x_dirs = torch.randn(7, *xb.shape, generator=gen, dtype=xb.dtype)

    def push(fn):
        return lambda x, h, tx, ta: jvp(lambda p, q: fn(p, q, weight, bias), (x, h), (tx, ta))[1]

    head = push(_head(True))
    plain = push(lambda *t: _plain(*t, inverse=True))
    per_sample = vmap(lambda x, h, tx, ta: head(x[None], h[None], tx[None], ta[None]))
    reference = vmap(lambda x, h, tx, ta: plain(x[None], h[None], tx[None], ta[None]))
    with torch.no_grad():
        got = vmap(head, in_dims=(None, None, 0, 0))(xb, a, x_dirs, a_dirs)
        want = vmap(plain, in_dims=(None, None, 0, 0))(xb, a, x_dirs, a_dirs)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
        got = per_sample(xb, a, x_dirs[0], a_dirs[0])
        want = reference(xb, a, x_dirs[0], a_dirs[0])
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_pixel_matvec_against_einsum_with_every_batching():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(6, 2, 3, 4, 5, generator=gen, dtype=torch.float64)
    m = torch.randn(6, 2, 4, 5, 3, 7, generator=gen, dtype=torch.float64)

    def reference(x, y):
        return torch.einsum("bchw,bhwck->bkhw", x, y)

    torch.testing.assert_close(pixel_matvec(a[0], m[0]), reference(a[0], m[0]))
    for dims in ((0, None), (None, 0), (0, 0)):
        got = vmap(pixel_matvec, in_dims=dims)(
            a if dims[0] == 0 else a[0], m if dims[1] == 0 else m[0]
        )
        want = vmap(reference, in_dims=dims)(
            a if dims[0] == 0 else a[0], m if dims[1] == 0 else m[0]
        )
        torch.testing.assert_close(got, want)
    # one sample (the blockwise 2-D transpose), and a batch dimension that vmap keeps inside
    got = vmap(pixel_matvec, in_dims=(0, None))(a[:, :1], m[0, :1])
    torch.testing.assert_close(got, vmap(reference, in_dims=(0, None))(a[:, :1], m[0, :1]))
    inner = a[:, :1].movedim(0, 2)  # (1, 3, 6, 4, 5), vmapped over dim 2
    got = vmap(pixel_matvec, in_dims=(2, None))(inner, m[0, :1])
    torch.testing.assert_close(got, vmap(reference, in_dims=(0, None))(a[:, :1], m[0, :1]))
    # channels stored last (as convolutions with channels-last weights produce them): no copy
    last = a.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    assert last.stride(2) == 1
    got = vmap(pixel_matvec, in_dims=(0, None))(last, m[0])
    torch.testing.assert_close(got, vmap(reference, in_dims=(0, None))(a, m[0]))
    args = (a[0, :1, :, :2, :2].clone().requires_grad_(), m[0, :1, :2, :2].clone().requires_grad_())
    assert torch.autograd.gradcheck(pixel_matvec, args, check_forward_ad=True)
    assert torch.autograd.gradgradcheck(pixel_matvec, args)


def test_compiled_head_is_the_plain_function():
    args = _inputs(dtype=torch.float32)
    compiled = torch.compile(_head(False), backend="eager", fullgraph=True)
    with torch.no_grad():
        for got, want in zip(compiled(*args), _plain(*args), strict=True):
            torch.testing.assert_close(got, want)
