"""solve_rows: values, derivatives and batching against torch.linalg.solve_triangular."""

from __future__ import annotations

import pytest
import torch
from torch.func import jacfwd, jacrev, jvp, vmap

from mflows.transforms import triangular
from mflows.transforms.triangular import solve_rows

F64 = {"dtype": torch.float64}


@pytest.fixture(autouse=True)
def own_rules_for_every_size(monkeypatch):
    """The tests use small matrices; make them take the custom rules (FOLD_MIN_SIZE = 1)."""
    monkeypatch.setattr(triangular, "FOLD_MIN_SIZE", 1)


def _reference(a, b, upper, unit):
    return torch.linalg.solve_triangular(a.mT, b, upper=not upper, left=False, unitriangular=unit)


def _matrix(d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, d, generator=g, **F64) * 0.3 + 2 * torch.eye(d, **F64)


@pytest.mark.parametrize("upper", [True, False])
@pytest.mark.parametrize("unit", [True, False])
def test_values_and_derivatives_match_torch(upper, unit):
    a, b = _matrix(5, 0), torch.randn(3, 5, **F64)
    x = solve_rows(a, b, upper, unit)
    torch.testing.assert_close(x, _reference(a, b, upper, unit))
    # a x_row = b_row with a's triangle (unit diagonal if unitriangular)
    tri = torch.triu(a) if upper else torch.tril(a)
    if unit:
        tri = tri - torch.diag(torch.diagonal(tri)) + torch.eye(5, **F64)
    torch.testing.assert_close(x @ tri.T, b)
    for argnum in (0, 1):
        expected = jacrev(lambda a, b: _reference(a, b, upper, unit), argnums=argnum)(a, b)
        for transform in (jacfwd, jacrev):
            got = transform(lambda a, b: solve_rows(a, b, upper, unit), argnums=argnum)(a, b)
            torch.testing.assert_close(got, expected)
    a_, b_ = a.clone().requires_grad_(), b.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: solve_rows(a, b, upper, unit), (a_, b_))
    assert torch.autograd.gradgradcheck(lambda a, b: solve_rows(a, b, upper, unit), (a_, b_))


def test_vmap_over_right_hand_sides_and_over_matrices():
    a, b = _matrix(6, 1), torch.randn(2, 6, **F64)
    tangents = torch.randn(7, 2, 6, **F64)
    got = vmap(lambda t: jvp(lambda v: solve_rows(a, v, True), (b,), (t,))[1])(tangents)
    torch.testing.assert_close(got, _reference(a, tangents, True, False))
    batch = a + 0.1 * torch.randn(4, 6, 6, **F64)
    got = vmap(lambda m: solve_rows(m, b, False))(batch)
    torch.testing.assert_close(got, torch.stack([_reference(m, b, False, False) for m in batch]))
    got = vmap(solve_rows, in_dims=(0, 0, None))(batch, tangents[:4], True)
    expected = torch.stack([_reference(m, t, True, False) for m, t in zip(batch, tangents)])
    torch.testing.assert_close(got, expected)


def test_rows_of_any_leading_shape():
    a, b = _matrix(4, 2), torch.randn(2, 3, 4, **F64)
    torch.testing.assert_close(
        solve_rows(a, b, True), _reference(a, b.reshape(-1, 4), True, False).reshape(2, 3, 4)
    )


def test_compiles_to_the_same_values_and_gradients():
    torch._dynamo.reset()
    a, b = _matrix(5, 3).requires_grad_(), torch.randn(3, 5, **F64).requires_grad_()

    def loss(a, b):
        return solve_rows(a, b, True).square().sum()

    expected = torch.autograd.grad(loss(a, b), (a, b))
    compiled = torch.compile(loss, fullgraph=True)
    value = compiled(a, b)
    torch.testing.assert_close(value, loss(a, b))
    for got, want in zip(torch.autograd.grad(value, (a, b)), expected):
        torch.testing.assert_close(got, want)


def test_small_matrices_take_torchs_rules_with_the_same_result(monkeypatch):
    calls = []
    original = triangular._SolveRows.apply
    monkeypatch.setattr(triangular._SolveRows, "apply", lambda *a: calls.append(1) or original(*a))
    a, b = _matrix(6, 4), torch.randn(3, 6, **F64)
    custom = solve_rows(a, b, True)
    assert len(calls) == 1
    monkeypatch.setattr(triangular, "FOLD_MIN_SIZE", 7)
    torch.testing.assert_close(solve_rows(a, b, True), custom)
    assert len(calls) == 1


def test_lu_layer_at_the_fold_size_inverts_and_has_the_autograd_jacobian(monkeypatch):
    from mflows.transforms.linear import LULinear

    monkeypatch.undo()  # the real threshold: this layer is wide enough for the own rules
    d = triangular.FOLD_MIN_SIZE + 2
    layer = LULinear(d).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(3, d, **F64)
    y, logdet = layer(x)
    back, inv_logdet = layer.inverse(y)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(inv_logdet, -logdet)
    # forward-mode Jacobian of the inverse (the decoder's direction) against reverse mode
    fwd = jacfwd(lambda v: layer.inverse(v)[0])(y[:1])
    rev = torch.autograd.functional.jacobian(lambda v: layer.inverse(v)[0], y[:1])
    torch.testing.assert_close(fwd, rev)
    torch.testing.assert_close(fwd.reshape(d, d), torch.linalg.inv(layer.weight()))
