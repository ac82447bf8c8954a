"""Triangular solves for row vectors, with derivatives and a batching rule of their own.

``solve_rows(a, b)`` is ``b a^-T`` for a triangular ``a``: each row of ``b`` is mapped to the
solution x of ``a x = b_row``. It computes what ``torch.linalg.solve_triangular`` does, but
under ``torch.func.vmap`` with ``a`` not batched (the columns of a decoder Jacobian pushed
through an LU layer: many tangents, one matrix) the batch is folded into the rows of ``b``
and solved in one call. torch's own batching rule copies ``a`` once per batch entry and solves
each entry separately, which at d = 3072 made a 64-column Jacobian 500 times slower than one
solve with 64 right-hand sides.

Forward-mode (``jvp``) and reverse-mode derivatives with respect to both ``a`` (its triangle)
and ``b`` are defined in terms of ``solve_rows`` itself, so they compose (``jacfwd``, double
backward). For matrices smaller than :data:`FOLD_MIN_SIZE`, and under ``torch.compile`` (which
does not trace custom forward-mode rules), it is torch's solver.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["FOLD_MIN_SIZE", "solve_rows"]

#: Matrix size from which ``solve_rows`` uses its own rules. Measured under vmap(jvp) with
#: 14-64 tangents (CPU, 1 thread): torch's rules are faster up to d = 128, and slower from
#: d = 256 on (at d = 512 and 64 tangents 144 ms against 2.7 ms).
FOLD_MIN_SIZE = 128


def _triangle(m: Tensor, upper: bool, unitriangular: bool) -> Tensor:
    """The part of ``m`` that a triangular solve reads (no diagonal if unitriangular)."""
    offset = 1 if unitriangular else 0
    return torch.triu(m, offset) if upper else torch.tril(m, -offset)


def _solve(a: Tensor, b: Tensor, upper: bool, unitriangular: bool) -> Tensor:
    """``b a^-T`` by torch's solver, for ``b`` of shape ``(*, N, d)`` (``a`` ``(*, d, d)``)."""
    return torch.linalg.solve_triangular(
        a.mT, b, upper=not upper, left=False, unitriangular=unitriangular
    )


def _solve_flat(a: Tensor, b: Tensor, upper: bool, unitriangular: bool) -> Tensor:
    """``b a^-T`` by torch's solver for one ``(d, d)`` matrix and rows ``b`` of any shape
    ``(*, d)`` (flattened to one block of right-hand sides)."""
    return _solve(a, b.reshape(-1, b.shape[-1]), upper, unitriangular).reshape(b.shape)


class _SolveRows(torch.autograd.Function):
    @staticmethod
    def forward(a: Tensor, b: Tensor, upper: bool, unitriangular: bool) -> Tensor:
        return _solve_flat(a, b, upper, unitriangular)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        a, _, upper, unitriangular = inputs
        ctx.upper, ctx.unitriangular = upper, unitriangular
        ctx.set_materialize_grads(False)  # no d x d zero tangent for a matrix without one
        ctx.save_for_backward(a, output)
        ctx.save_for_forward(a, output)

    @staticmethod
    def backward(ctx, grad_x: Tensor | None):
        if grad_x is None:
            return None, None, None, None
        a, x = ctx.saved_tensors
        # x = b a^-T:  grad_b = grad_x a^-1 = solve_rows(a^T, grad_x),  grad_a = -grad_b^T x
        grad_b = solve_rows(a.mT, grad_x, not ctx.upper, ctx.unitriangular)
        grad_a = None
        if ctx.needs_input_grad[0]:
            flat_g = grad_b.reshape(-1, grad_b.shape[-1])
            flat_x = x.reshape(-1, x.shape[-1])
            grad_a = _triangle(-flat_g.mT @ flat_x, ctx.upper, ctx.unitriangular)
        return grad_a, grad_b, None, None

    @staticmethod
    def jvp(ctx, a_dot: Tensor | None, b_dot: Tensor | None, *_) -> Tensor:
        a, x = ctx.saved_tensors
        # x a^T = b:  x_dot a^T = b_dot - x a_dot^T
        if a_dot is None and b_dot is None:
            return torch.zeros_like(x)
        rhs = torch.zeros_like(x) if b_dot is None else b_dot
        if a_dot is not None:
            rhs = rhs - x @ _triangle(a_dot, ctx.upper, ctx.unitriangular).mT
        return solve_rows(a, rhs, ctx.upper, ctx.unitriangular)

    @staticmethod
    def vmap(info, in_dims, a: Tensor, b: Tensor, upper: bool, unitriangular: bool):
        a_dim, b_dim = in_dims[0], in_dims[1]
        if a_dim is None:  # then b is batched: fold the batch into its rows, one solve
            return solve_rows(a, b.movedim(b_dim, 0), upper, unitriangular), 0
        a = a.movedim(a_dim, 0)
        size = a.shape[0]
        if b_dim is None:
            b = b.expand(size, *b.shape)
        else:
            b = b.movedim(b_dim, 0)
        # one matrix per batch entry (e.g. an ensemble's stacked weights): torch's batched solve
        rows = b.reshape(size, -1, b.shape[-1])
        return _solve(a, rows, upper, unitriangular).reshape(b.shape), 0


def solve_rows(a: Tensor, b: Tensor, upper: bool, unitriangular: bool = False) -> Tensor:
    """``b a^-T`` for a triangular ``(d, d)`` matrix ``a`` and rows ``b`` of shape ``(*, d)``.

    Only the triangle of ``a`` named by ``upper`` is read (not its diagonal when
    ``unitriangular``, which takes it to be 1), as in ``torch.linalg.solve_triangular``.

    Args:
        a: ``(d, d)`` triangular matrix.
        b: ``(*, d)`` right-hand sides, one per row.
        upper: whether ``a`` is upper triangular.
        unitriangular: whether the diagonal of ``a`` is taken to be ones.

    Returns:
        ``x`` of the shape of ``b`` with ``a x_row = b_row`` for every row.
    """
    if a.shape[-1] < FOLD_MIN_SIZE or torch.compiler.is_compiling():
        # small matrices: torch's copies are cheap and its rules run in C++ (the Python rules
        # above cost ~1 ms more per pair of solves at d = 40); torch.compile does not trace
        # custom jvp rules, and the batching problem is one of torch.func's eager vmap
        return _solve_flat(a, b, upper, unitriangular)
    return _SolveRows.apply(a, b, upper, unitriangular)
