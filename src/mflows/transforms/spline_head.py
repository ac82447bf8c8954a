"""The head of an image spline coupling: a 1x1 convolution into elementwise splines.

In :class:`~mflows.transforms.images.ImageRQSCoupling` the conditioner's last layer is a 1x1
convolution that turns hidden features ``a`` ``(B, c, H, W)`` into P = 3K - 1 spline
parameters theta for each transformed element, and the spline then maps ``x_b`` elementwise:

    y = RQS(x_b; theta),   theta = W a + b   (per pixel).

A Jacobian-vector product through this head by the plain chain rule pushes every tangent of
``a`` through the 1x1 convolution (c -> C_b P channels) and through the spline's parameter
arithmetic (softmax, cumulative sums, bin lookup) with P entries per element. The exact
likelihood of an image M-flow pushes n such tangents (the columns of the decoder Jacobian), and
this head was about a third of the time (docs/benchmarks.md). Both steps are linear in the
tangent, so they fold into one small matrix per pixel:

    y_dot = dy/dx_b * x_dot + M a_dot,   M[j, c] = sum_k dy_j/dtheta_{jk} W[(j, k), c],

where the elementwise derivatives dy/dx_b and dy/dtheta come from one reverse pass through the
spline at the point, once per call, and each tangent then costs one ``(C_b x c)``
matrix-vector product per pixel (12x fewer multiply-adds than the 1x1 convolution at K = 8,
and no P-fold tangent tensors). The log-determinant's tangent is folded the same way.

:func:`spline_head` computes exactly the plain function; only its forward-mode rule differs
(it agrees with the chain rule to float rounding). The folded rule is used where gradients are
off (``torch.no_grad()``, as in evaluation, where ``log_prob`` pushes its Jacobian columns):
with gradients on (training, or a ``log_prob`` that is to be differentiated), and under
``torch.compile``, which does not trace custom forward-mode rules, it is the plain function,
so autograd's derivatives of every order are untouched. (A reverse-mode rule for the folded
path, by recomputing the plain function, made a training step of a 16 x 16 image M-flow a
third slower.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import vjp

from mflows.transforms.splines import packed_rational_quadratic_spline

__all__ = ["pixel_matvec", "spline_head"]


def _params(xb: Tensor, a: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """theta ``(B, C_b, H, W, P)`` from the 1x1 convolution of ``a``."""
    p = F.conv2d(a, weight, bias)
    return p.reshape(*xb.shape[:-2], -1, *xb.shape[-2:]).movedim(-3, -1)


def _spline(
    xb: Tensor, theta: Tensor, num_bins: int, inverse: bool, tail_bound: float
) -> tuple[Tensor, Tensor]:
    return packed_rational_quadratic_spline(
        xb, theta, num_bins, inverse=inverse, tail_bound=tail_bound
    )


def _plain(
    xb: Tensor,
    a: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    num_bins: int,
    inverse: bool,
    tail_bound: float,
) -> tuple[Tensor, Tensor]:
    return _spline(xb, _params(xb, a, weight, bias), num_bins, inverse, tail_bound)


# ------------------------------------------------------------------ per-pixel matrix-vector
def _pixel_rows(a: Tensor) -> Tensor:
    """``(k, B, c, H, W) -> (B H W, k, c)``: the k vectors of each pixel as the rows of a matrix.

    bmm needs each matrix with unit stride along its rows: channels stored last already are;
    channels first take one copy (bmm would otherwise copy every pixel's matrix). For one
    sample it is a 2-D transpose, which torch copies blockwise, ~6x faster than the general
    permuted copy at (64, 64, 32, 32).
    """
    k, b, c, h, w = a.shape
    rows = a.permute(1, 3, 4, 0, 2).reshape(b * h * w, k, c)
    if rows.stride(-1) == 1:
        return rows
    if b == 1:
        return a.reshape(k * c, h * w).t().contiguous().view(h * w, k, c)
    return rows.contiguous()


def _matvec(a: Tensor, m: Tensor) -> Tensor:
    """``out[i, b, :, h, w] = m[b, h, w]^T a[i, b, :, h, w]`` for k vectors ``a`` ``(k, B, c,
    H, W)`` and one ``m`` ``(B, H, W, c, K)``: one batched matrix product, the k vectors of a
    pixel as the rows of its matrix. Returns ``(k, B, K, H, W)``."""
    k, b, c, h, w = a.shape
    out = torch.bmm(_pixel_rows(a), m.reshape(b * h * w, c, -1))  # (B H W, k, K)
    return out.reshape(b, h, w, k, -1).permute(3, 0, 4, 1, 2)


class _PixelMatVec(torch.autograd.Function):
    @staticmethod
    def forward(a: Tensor, m: Tensor) -> Tensor:
        return _matvec(a.unsqueeze(0), m)[0]

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, grad: Tensor | None):
        if grad is None:
            return None, None
        a, m = ctx.saved_tensors
        grad_a = pixel_matvec(grad, m.mT) if ctx.needs_input_grad[0] else None
        grad_m = None
        if ctx.needs_input_grad[1]:
            grad_m = torch.einsum("bchw,bkhw->bhwck", a, grad)
        return grad_a, grad_m

    @staticmethod
    def jvp(ctx, a_dot: Tensor | None, m_dot: Tensor | None) -> Tensor:
        a, m = ctx.saved_tensors
        out = None if a_dot is None else pixel_matvec(a_dot, m)
        if m_dot is not None:
            term = pixel_matvec(a, m_dot)
            out = term if out is None else out + term
        if out is None:
            return a.new_zeros(a.shape[0], m.shape[-1], *a.shape[-2:])
        return out

    @staticmethod
    def vmap(info, in_dims, a: Tensor, m: Tensor):
        a_dim, m_dim = in_dims
        if m_dim is None:
            # tangents of one point: the vmapped directions become the rows of each pixel's
            # product (torch's rule would copy m once per direction)
            return _matvec(a.movedim(a_dim, 0), m), 0
        size = info.batch_size
        a = a.expand(size, *a.shape) if a_dim is None else a.movedim(a_dim, 0)
        m = m.movedim(m_dim, 0)
        out = pixel_matvec(a.flatten(0, 1), m.flatten(0, 1))
        return out.unflatten(0, (size, -1)), 0


def pixel_matvec(a: Tensor, m: Tensor) -> Tensor:
    """A matrix-vector product at every pixel: ``(B, c, H, W), (B, H, W, c, k) -> (B, k, H, W)``.

    ``out[b, :, h, w] = m[b, h, w]^T a[b, :, h, w]``. Under ``torch.func.vmap`` over ``a`` alone
    (many tangents, one ``m``) the vmapped entries are stacked as rows of one product per pixel.
    """
    return _PixelMatVec.apply(a, m)


# ------------------------------------------------------------------------------ the head
class _SplineHead(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(xb, a, weight, bias, num_bins, inverse, tail_bound):
        return _plain(xb, a, weight, bias, num_bins, inverse, tail_bound)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        xb, a, weight, bias, num_bins, inverse, tail_bound = inputs
        ctx.spline = (num_bins, inverse, tail_bound)
        ctx.save_for_forward(xb, a, weight, bias)

    @staticmethod
    def jvp(ctx, xb_dot, a_dot, weight_dot, bias_dot, *_):
        xb, a, weight, bias = ctx.saved_tensors
        theta = _params(xb, a, weight, bias)
        # elementwise derivatives of (y, log|dy/dx|) with respect to x_b and theta
        (y, ld), pull = vjp(lambda x, t: _spline(x, t, *ctx.spline), xb, theta)
        one, zero = torch.ones_like(y), torch.zeros_like(y)
        y_x, y_theta = pull((one, zero))
        ld_x, ld_theta = pull((zero, one))
        d_theta = torch.stack([y_theta, ld_theta])  # (2, B, C_b, H, W, P)
        cb, p = theta.shape[-4], theta.shape[-1]
        tangents = []
        if a_dot is not None:
            per_pixel = torch.einsum("sbjhwk,jkc->bhwcsj", d_theta, weight.reshape(cb, p, -1))
            folded = pixel_matvec(a_dot, per_pixel.flatten(-2))  # (B, 2 C_b, H, W)
            tangents.append(folded.unflatten(-3, (2, cb)).movedim(-4, 0))
        if weight_dot is not None:
            tangents.append((d_theta * _params(xb, a, weight_dot, bias_dot)).sum(-1))
        elif bias_dot is not None:
            tangents.append((d_theta * bias_dot.reshape(cb, 1, 1, p)).sum(-1))
        if xb_dot is not None:
            tangents.append(torch.stack([y_x, ld_x]) * xb_dot)
        if not tangents:
            return torch.zeros_like(y), torch.zeros_like(ld)
        total = tangents[0]
        for term in tangents[1:]:
            total = total + term
        return total[0], total[1]


def spline_head(
    xb: Tensor,
    a: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    num_bins: int,
    inverse: bool = False,
    tail_bound: float = 3.0,
) -> tuple[Tensor, Tensor]:
    """Splines of ``xb`` with parameters from a 1x1 convolution of the features ``a``.

    Args:
        xb: transformed channels ``(B, C_b, H, W)``.
        a: conditioner features ``(B, c, H, W)``.
        weight: 1x1 convolution weight ``(C_b P, c, 1, 1)``, P = 3K - 1 parameters per
            channel (channel j uses outputs ``j P ... j P + P - 1``, in the layout of
            :func:`~mflows.transforms.splines.split_spline_params`).
        bias: ``(C_b P,)`` or ``None``.
        num_bins: K.
        inverse: apply the inverse spline.
        tail_bound: B.

    Returns:
        ``(y_b, log|dy_b/dx_b|)``, both ``(B, C_b, H, W)`` (the log-derivative elementwise).
    """
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return _plain(xb, a, weight, bias, num_bins, inverse, float(tail_bound))
    return _SplineHead.apply(xb, a, weight, bias, num_bins, inverse, float(tail_bound))
