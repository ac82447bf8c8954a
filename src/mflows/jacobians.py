"""Decoder Jacobians and the manifold volume term log det(J^T J).

This is the only module in mflows that builds Jacobians. The exact M-flow density

    log p_M(x) = log p_u(u) - 1/2 log det(J_g(u)^T J_g(u)),   u = g^-1(x),

needs the d x n Jacobian J_g of the decoder g: R^n -> R^d at every sample. It is computed with
:mod:`torch.func`: forward mode (``vmap(jacfwd(g))``, n Jacobian-vector products per sample, all
vectorised) when n is small compared to d, reverse mode (``vmap(jacrev(g))``, d
vector-Jacobian products) when n is close to d (``n > REVERSE_MODE_RATIO * d``). The batch is
processed in chunks to bound memory. Both keep the autograd graph to the parameters of ``g``, so
``log_prob`` can be differentiated for simultaneous M-flow training.

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

from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import jacfwd, jacrev, vmap

from mflows.errors import InvalidArgumentError

__all__ = ["REVERSE_MODE_RATIO", "decoder_jacobian", "decoder_logdet", "logdet_jtj"]

#: ``mode="auto"`` uses reverse mode when ``n > REVERSE_MODE_RATIO * d``: forward mode costs n
#: JVPs, reverse mode d VJPs, and one JVP costs more than one VJP. Measured with spline flows
#: on CPU at d = 40 (docs/benchmarks.md), forward mode wins clearly up to n = 0.6 d and the two
#: are within ~10% from n = 0.8 d on.
REVERSE_MODE_RATIO = 0.8

#: default bound on the number of Jacobian entries (chunk x d x n) computed at once.
_MAX_ENTRIES_PER_CHUNK = 2**22

DecodeFn = Callable[[Tensor, Tensor | None], Tensor]


def _per_sample(decode_fn: DecodeFn, conditional: bool) -> Callable[..., Tensor]:
    # Under vmap every sample loses its batch dimension; the flows expect one, so add a batch
    # dimension of 1 before calling the decoder and flatten its output to (d,).
    if conditional:

        def single(ui: Tensor, ci: Tensor) -> Tensor:
            return decode_fn(ui.unsqueeze(0), ci.unsqueeze(0)).reshape(-1)

    else:

        def single(ui: Tensor) -> Tensor:
            return decode_fn(ui.unsqueeze(0), None).reshape(-1)

    return single


def decoder_jacobian(
    decode_fn: DecodeFn,
    u: Tensor,
    context: Tensor | None = None,
    chunk_size: int | None = None,
    mode: str = "auto",
    out_features: int | None = None,
) -> Tensor:
    """Jacobian of a decoder ``g: R^n -> R^d`` at every sample of a batch.

    J[b, i, j] = d g_i(u_b) / d u_bj, with g's output flattened (images give d = C H W).

    Args:
        decode_fn: ``(B, n), context (B, c) or None -> (B, *out)``; must be ``torch.func``-safe
            and act on each sample independently.
        u: points in latent space, shape ``(B, n)``.
        context: ``(B, c)`` conditioning passed to ``decode_fn``, or ``None``.
        chunk_size: number of samples per vectorised chunk; ``None`` picks one so that at most
            ~4M Jacobian entries are computed at once.
        mode: ``"forward"`` (``jacfwd``: n JVPs per sample), ``"reverse"`` (``jacrev``: d VJPs)
            or ``"auto"`` (reverse when ``n > REVERSE_MODE_RATIO * d``).
        out_features: d, if known (saves one probing forward pass).

    Returns:
        The Jacobians, shape ``(B, d, n)``; differentiable w.r.t. the parameters of ``g``.
    """
    if u.dim() != 2:
        raise InvalidArgumentError(f"expected u of shape (B, n), got {tuple(u.shape)}")
    batch, n = u.shape
    single = _per_sample(decode_fn, context is not None)
    if batch == 0:
        if out_features is None:
            with torch.no_grad():
                out_features = decode_fn(u, context).shape[1:].numel()
        return u.new_zeros(0, int(out_features), n)
    if out_features is None:
        with torch.no_grad():
            probe = decode_fn(u[:1], None if context is None else context[:1])
        out_features = probe[0].numel()
    d = int(out_features)
    if mode == "auto":
        mode = "reverse" if n > REVERSE_MODE_RATIO * d else "forward"
    if mode == "forward":
        jac = jacfwd(single, argnums=0)
    elif mode == "reverse":
        jac = jacrev(single, argnums=0)
    else:
        raise InvalidArgumentError(f"mode must be 'auto', 'forward' or 'reverse', got {mode!r}")
    batched = vmap(jac)
    if chunk_size is None:
        chunk_size = max(1, _MAX_ENTRIES_PER_CHUNK // max(1, d * n))
    pieces = []
    for start in range(0, batch, chunk_size):
        ui = u[start : start + chunk_size]
        if context is None:
            pieces.append(batched(ui))
        else:
            pieces.append(batched(ui, context[start : start + chunk_size]))
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

    Returns:
        ``(B,)``.
    """
    jacobian = decoder_jacobian(
        decode_fn, u, context, chunk_size=chunk_size, mode=mode, out_features=out_features
    )
    return logdet_jtj(jacobian, method=method)
