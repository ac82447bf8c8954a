"""Decoder Jacobians and the manifold volume term log det(J^T J).

This is the only module in mflows that builds Jacobians. The exact M-flow density

    log p_M(x) = log p_u(u) - 1/2 log det(J_g(u)^T J_g(u)),   u = g^-1(x),

needs the d x n Jacobian J_g of the decoder g: R^n -> R^d at every sample. It is computed with
:mod:`torch.func`: forward mode (Jacobian-vector products, one per column) when n is small
compared to d, reverse mode (vector-Jacobian products, one per row) when n is close to d
(``n > REVERSE_MODE_RATIO * d``). Memory is bounded in two directions: the batch is processed
in chunks of samples, and each chunk's Jacobian in blocks of columns (forward mode) or rows
(reverse mode). A block of k columns is one ``vmap`` over k basis directions of a ``jvp`` of
the batched decoder: the decoder's forward pass runs once per block, unbatched over the
directions, and only the tangents carry the k directions. Intermediates thus grow with
samples x k x (activations per sample), not with n: the default image M-flow on (3, 64, 64)
at n = 512 peaks at 0.8 GB (process total) instead of 2.6 GB, and runs 1.7x faster on CPU
(docs/benchmarks.md, "Exact likelihood for images").
Both modes keep the autograd graph to the parameters of ``g``, so ``log_prob`` can be
differentiated for simultaneous M-flow training.

The log-determinant uses a Cholesky factorisation of J^T J computed in float64
(log det J^T J = 2 sum log L_ii), cast back to the dtype of J. Forming J^T J squares the
condition number, but in float64 that is harmless up to cond(J) ~ 1e7, which is already the
limit of what a float32 J can resolve; measured on CPU it is 2.5-7x faster than a reduced QR of
J (J = Q R, log det J^T J = 2 sum log |R_ii|) and 2.5-8x more accurate when J is float32, as
the QR then runs in float32 (benchmarks/likelihood.py --logdet, docs/benchmarks.md). The QR is
available as ``method="qr"``; it never forms J^T J and stays in J's dtype (useful on GPUs with
slow float64). Where J^T J is numerically singular the Cholesky result is ``-inf``.

References:
    Flows for simultaneous manifold learning and density estimation.
    J. Brehmer and K. Cranmer, NeurIPS 2020, arXiv:2003.13913.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap

from mflows.errors import InvalidArgumentError

__all__ = [
    "REVERSE_MODE_RATIO",
    "block_ranges",
    "decoder_jacobian",
    "decoder_logdet",
    "jacobian_plan",
    "logdet_jtj",
]

#: ``mode="auto"`` uses reverse mode when ``n > REVERSE_MODE_RATIO * d``: forward mode costs n
#: JVPs, reverse mode d VJPs, and one JVP costs more than one VJP. Measured with spline flows
#: on CPU at d = 40 (docs/benchmarks.md), forward mode wins clearly up to n = 0.6 d and the two
#: are within ~10% from n = 0.8 d on.
REVERSE_MODE_RATIO = 0.8

#: default bound on the number of tangent (or cotangent) entries, samples x block x d, pushed
#: through the decoder at once. Each intermediate of the decoder then holds this many entries
#: times its width relative to d; for a (3, 64, 64) image flow with 64 hidden channels, 2**20
#: means blocks of at most 85 columns (7 blocks of 73-74 at n = 512) and ~0.5 GB of
#: intermediates.
MAX_TANGENT_ENTRIES = 2**20

DecodeFn = Callable[[Tensor, Tensor | None], Tensor]


def _check_chunk(value: int | None, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"expected {name} a positive integer or None, got {value!r}")


def block_ranges(total: int, size: int) -> list[range]:
    """Splits ``range(total)`` into consecutive blocks of at most ``size`` (balanced).

    ``block_ranges(10, 4)`` gives three blocks of sizes 4, 3, 3: as many blocks as blocks of
    ``size`` need, with sizes that differ by at most one, so no block is a tiny remainder.
    """
    if total <= 0:
        return []
    count = math.ceil(total / max(1, size))
    base, extra = divmod(total, count)
    blocks, start = [], 0
    for i in range(count):
        stop = start + base + (1 if i < extra else 0)
        blocks.append(range(start, stop))
        start = stop
    return blocks


def jacobian_plan(
    batch: int,
    n: int,
    d: int,
    mode: str = "forward",
    chunk_size: int | None = None,
    jacobian_chunk: int | None = None,
) -> tuple[int, int]:
    """Samples per chunk and Jacobian columns (or rows) per block used by :func:`decoder_jacobian`.

    Args:
        batch: number of samples.
        n: latent dimension (Jacobian columns).
        d: output dimension (Jacobian rows).
        mode: ``"forward"`` (blocks of columns) or ``"reverse"`` (blocks of rows).
        chunk_size: samples per chunk, or ``None`` (fill :data:`MAX_TANGENT_ENTRIES`).
        jacobian_chunk: columns (rows) per block, or ``None`` (all of them if one sample's
            full set fits in :data:`MAX_TANGENT_ENTRIES`, else balanced blocks that do).

    Returns:
        ``(samples per chunk, directions per block)``, both >= 1.
    """
    _check_chunk(chunk_size, "chunk_size")
    _check_chunk(jacobian_chunk, "jacobian_chunk")
    directions = n if mode == "forward" else d
    # a tangent (cotangent) of the output has d entries per sample and direction
    if jacobian_chunk is None:
        fit = max(1, MAX_TANGENT_ENTRIES // max(1, d))
        jacobian_chunk = len(block_ranges(directions, fit)[0]) if directions > 0 else 1
    block = max(1, min(int(jacobian_chunk), max(1, directions)))
    if chunk_size is None:
        chunk_size = max(1, MAX_TANGENT_ENTRIES // max(1, block * d))
    return max(1, min(int(chunk_size), max(1, batch))), block


def _jacobian_chunk_forward(
    fn: Callable[[Tensor], Tensor], u: Tensor, blocks: list[range], d: int
) -> Tensor:
    """Columns of the Jacobian of the batched ``fn`` at ``u`` by blocks of JVPs: ``(s, d, n)``."""
    s, n = u.shape
    pieces = []
    for cols in blocks:
        k = len(cols)
        basis = u.new_zeros(k, s, n)
        index = torch.arange(k, device=u.device)
        basis[index, :, cols.start + index] = 1.0
        # vmap over the k directions only: the primal (forward pass) is computed once.
        out = vmap(lambda t: jvp(fn, (u,), (t,))[1])(basis)
        pieces.append(out.reshape(k, s, d).permute(1, 2, 0))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)


def _jacobian_chunk_reverse(
    fn: Callable[[Tensor], Tensor], u: Tensor, blocks: list[range], d: int
) -> Tensor:
    """Rows of the Jacobian of the batched ``fn`` at ``u`` by blocks of VJPs: ``(s, d, n)``."""
    s = u.shape[0]
    out, pullback = vjp(lambda v: fn(v).reshape(s, -1), u)
    pieces = []
    for rows in blocks:
        r = len(rows)
        basis = out.new_zeros(r, s, d)
        index = torch.arange(r, device=u.device)
        basis[index, :, rows.start + index] = 1.0
        (grads,) = vmap(pullback)(basis)  # (r, s, n)
        pieces.append(grads.permute(1, 0, 2))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)


def decoder_jacobian(
    decode_fn: DecodeFn,
    u: Tensor,
    context: Tensor | None = None,
    chunk_size: int | None = None,
    mode: str = "auto",
    out_features: int | None = None,
    jacobian_chunk: int | None = None,
) -> Tensor:
    """Jacobian of a decoder ``g: R^n -> R^d`` at every sample of a batch.

    J[b, i, j] = d g_i(u_b) / d u_bj, with g's output flattened (images give d = C H W).

    Memory: at most ``chunk_size`` samples and ``jacobian_chunk`` columns (forward mode) or
    rows (reverse mode) are pushed through the decoder at once; the result does not depend on
    either (up to float rounding). The decoder's forward pass is recomputed once per block.

    Args:
        decode_fn: ``(B, n), context (B, c) or None -> (B, *out)``; must be ``torch.func``-safe
            and act on each sample independently.
        u: points in latent space, shape ``(B, n)``.
        context: ``(B, c)`` conditioning passed to ``decode_fn``, or ``None``.
        chunk_size: samples per vectorised chunk; ``None`` picks one so that at most
            :data:`MAX_TANGENT_ENTRIES` tangent entries (samples x block x d) go at once.
        mode: ``"forward"`` (JVPs, one per column), ``"reverse"`` (VJPs, one per row) or
            ``"auto"`` (reverse when ``n > REVERSE_MODE_RATIO * d``).
        out_features: d, if known (saves one probing forward pass).
        jacobian_chunk: Jacobian columns (forward) or rows (reverse) per block; ``None``: all
            of them when one sample's full set fits in :data:`MAX_TANGENT_ENTRIES`, else
            balanced blocks that fit (``jacobian_plan``).

    Returns:
        The Jacobians, shape ``(B, d, n)``; differentiable w.r.t. the parameters of ``g``.
    """
    if u.dim() != 2:
        raise InvalidArgumentError(f"expected u of shape (B, n), got {tuple(u.shape)}")
    if mode not in ("auto", "forward", "reverse"):
        raise InvalidArgumentError(f"mode must be 'auto', 'forward' or 'reverse', got {mode!r}")
    _check_chunk(chunk_size, "chunk_size")
    _check_chunk(jacobian_chunk, "jacobian_chunk")
    batch, n = u.shape
    if out_features is None:
        with torch.no_grad():
            probe = decode_fn(u[:1], None if context is None else context[:1])
        out_features = probe.shape[1:].numel()
    d = int(out_features)
    if batch == 0:
        return u.new_zeros(0, d, n)
    if mode == "auto":
        mode = "reverse" if n > REVERSE_MODE_RATIO * d else "forward"
    samples, block = jacobian_plan(batch, n, d, mode, chunk_size, jacobian_chunk)
    blocks = block_ranges(n if mode == "forward" else d, block)
    compute = _jacobian_chunk_forward if mode == "forward" else _jacobian_chunk_reverse
    pieces = []
    for start in range(0, batch, samples):
        ui = u[start : start + samples]
        ci = None if context is None else context[start : start + samples]

        def fn(v: Tensor, ci: Tensor | None = ci) -> Tensor:
            return decode_fn(v, ci).reshape(v.shape[0], -1)

        pieces.append(compute(fn, ui, blocks, d))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, 0)


def logdet_jtj(jacobian: Tensor, method: str = "cholesky") -> Tensor:
    """log det(J^T J) of a batch of tall matrices.

    ``"cholesky"``: J^T J = L L^T in float64, log det = 2 sum_i log L_ii, cast back.
    ``"qr"``: J = Q R (reduced), log det(J^T J) = 2 sum_i log |R_ii|, in the dtype of J.

    Args:
        jacobian: ``(B, d, n)`` with d >= n.
        method: ``"cholesky"`` (default, see the module docstring) or ``"qr"``.

    Returns:
        ``(B,)``; ``-inf`` where J is (numerically) rank deficient.
    """
    if jacobian.dim() != 3 or jacobian.shape[-2] < jacobian.shape[-1]:
        raise InvalidArgumentError(
            f"expected a (B, d, n) Jacobian with d >= n, got {tuple(jacobian.shape)}"
        )
    if method == "qr":
        r = torch.linalg.qr(jacobian, mode="reduced").R
        return 2.0 * torch.log(torch.diagonal(r, dim1=-2, dim2=-1).abs()).sum(-1)
    if method == "cholesky":
        j64 = jacobian.to(torch.float64)
        chol, info = torch.linalg.cholesky_ex(j64.mT @ j64)
        diag = torch.diagonal(chol, dim1=-2, dim2=-1)
        logdet = 2.0 * torch.log(diag.clamp_min(torch.finfo(torch.float64).tiny)).sum(-1)
        logdet = torch.where(info == 0, logdet, torch.full_like(logdet, -torch.inf))
        return logdet.to(jacobian.dtype)
    raise InvalidArgumentError(f"method must be 'qr' or 'cholesky', got {method!r}")


def decoder_logdet(
    decode_fn: DecodeFn,
    u: Tensor,
    context: Tensor | None = None,
    chunk_size: int | None = None,
    mode: str = "auto",
    method: str = "cholesky",
    out_features: int | None = None,
    jacobian_chunk: int | None = None,
) -> Tensor:
    """log det(J_g(u)^T J_g(u)) for a batch: :func:`decoder_jacobian` then :func:`logdet_jtj`.

    Args:
        decode_fn: the decoder, see :func:`decoder_jacobian`.
        u: ``(B, n)``.
        context: ``(B, c)`` or ``None``.
        chunk_size: samples per chunk, see :func:`decoder_jacobian`.
        mode: ``"auto"``, ``"forward"`` or ``"reverse"``.
        method: ``"cholesky"`` or ``"qr"``.
        out_features: d, if known.
        jacobian_chunk: Jacobian columns (forward mode) or rows (reverse mode) per block, see
            :func:`decoder_jacobian`.

    Returns:
        ``(B,)``.
    """
    jacobian = decoder_jacobian(
        decode_fn,
        u,
        context,
        chunk_size=chunk_size,
        mode=mode,
        out_features=out_features,
        jacobian_chunk=jacobian_chunk,
    )
    return logdet_jtj(jacobian, method=method)
