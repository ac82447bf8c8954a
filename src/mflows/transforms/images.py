"""Image bijections on ``(B, C, H, W)`` and a multiscale flow on flat ``(B, C*H*W)`` vectors.

Also the pieces around the multiscale flow in the image models: the fixed pixel
preprocessing (:class:`PixelScaling`, :class:`PixelLogit`), the invertible linear layers on a
subset of coordinates across scales before the projection to u (:class:`PartialLinear`,
:func:`multiscale_subset`) and the data-dependent ActNorm start (:func:`init_actnorm`).

References:
    Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma, Dhariwal, 2018),
    arXiv:1807.03039.
    Density estimation using Real NVP (Dinh et al., 2016), arXiv:1605.08803.
    Neural Spline Flows (Durkan et al., 2019), arXiv:1906.04032.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mflows.nets import ConvResidualNet
from mflows.transforms.base import CompositeTransform, Transform, sum_except_batch
from mflows.transforms.linear import LULinear
from mflows.transforms.spline_head import spline_head
from mflows.transforms.splines import spline_param_count

__all__ = [
    "PREPROCESSING",
    "ActNorm",
    "ImageRQSCoupling",
    "InvertibleConv1x1",
    "MultiscaleFlow",
    "PartialLinear",
    "PixelLogit",
    "PixelScaling",
    "Squeeze",
    "init_actnorm",
    "make_image_flow",
    "make_preprocessing",
    "multiscale_subset",
]


class ActNorm(Transform):
    """Per-channel affine map y = x exp(s) + b; log|det J| = H W sum_c s_c.

    Initialised as the identity, so the layer stays a pure function under ``torch.func``; the
    data-dependent start (zero mean, unit variance per channel on one batch) is the separate,
    explicit step :func:`init_actnorm`, which ``mflows.fit`` runs on a fresh model.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s, b = self.log_scale[:, None, None], self.shift[:, None, None]
        hw = x.shape[-1] * x.shape[-2]
        return x * torch.exp(s) + b, (hw * self.log_scale.sum()).expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s, b = self.log_scale[:, None, None], self.shift[:, None, None]
        hw = y.shape[-1] * y.shape[-2]
        return (y - b) * torch.exp(-s), (-hw * self.log_scale.sum()).expand(y.shape[0])


class InvertibleConv1x1(Transform):
    """Invertible 1x1 convolution, LU-parametrised (identity at init, no bias).

    y[:, :, i, j] = W x[:, :, i, j];  log|det J| = H W log|det W|.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.lu = LULinear(channels, bias=False)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, ld = self.lu._linear(x.movedim(-3, -1))
        hw = x.shape[-1] * x.shape[-2]
        return y.movedim(-1, -3), (hw * ld).expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, ld = self.lu._solve(y.movedim(-3, -1))
        hw = y.shape[-1] * y.shape[-2]
        return x.movedim(-1, -3), (hw * ld).expand(y.shape[0])


def squeeze(x: Tensor) -> Tensor:
    """Space-to-depth ``(*, C, H, W) -> (*, 4C, H/2, W/2)``."""
    *batch, c, h, w = x.shape
    x = x.reshape(*batch, c, h // 2, 2, w // 2, 2)
    n = len(batch)
    x = x.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)  # (*, c, 2, 2, h/2, w/2)
    return x.reshape(*batch, 4 * c, h // 2, w // 2)


def unsqueeze(x: Tensor) -> Tensor:
    """Depth-to-space ``(*, 4C, H, W) -> (*, C, 2H, 2W)``, the inverse of :func:`squeeze`."""
    *batch, c4, h, w = x.shape
    x = x.reshape(*batch, c4 // 4, 2, 2, h, w)
    n = len(batch)
    x = x.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)  # (*, c, h, 2, w, 2)
    return x.reshape(*batch, c4 // 4, 2 * h, 2 * w)


class Squeeze(Transform):
    """Space-to-depth by a factor 2: ``(B, C, H, W) -> (B, 4C, H/2, W/2)``; log|det J| = 0."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f"Squeeze needs even H and W, got {tuple(x.shape[-2:])}")
        return squeeze(x), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return unsqueeze(y), y.new_zeros(y.shape[0])


class ImageRQSCoupling(Transform):
    """Rational-quadratic spline coupling along channels, with a convolutional conditioner.

    Channels where ``mask`` is True are transformed elementwise by splines whose parameters are
    a :class:`~mflows.nets.ConvResidualNet` of the other channels (and the context, broadcast as
    extra channels). Identity at init.

    Args:
        channels: C (>= 2).
        mask: Boolean ``(C,)`` of transformed channels (default: even channels).
        context_features: Context size.
        hidden_channels: Conditioner channels.
        num_blocks: Conditioner residual blocks.
        num_bins: Spline bins K.
        tail_bound: B.
        dropout: Conditioner dropout.
    """

    def __init__(
        self,
        channels: int,
        mask: Sequence[bool] | Tensor | None = None,
        context_features: int = 0,
        hidden_channels: int = 64,
        num_blocks: int = 2,
        num_bins: int = 8,
        tail_bound: float = 3.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if mask is None:
            mask = torch.arange(channels) % 2 == 0
        mask = torch.as_tensor(mask, dtype=bool)
        transform_idx = torch.nonzero(mask).flatten()
        identity_idx = torch.nonzero(~mask).flatten()
        if mask.shape != (channels,) or len(transform_idx) == 0 or len(identity_idx) == 0:
            raise ValueError("the channel mask needs shape (C,) with both kinds of channels")
        self.num_bins = num_bins
        self.tail_bound = tail_bound
        self.register_buffer("transform_idx", transform_idx)
        self.register_buffer("identity_idx", identity_idx)
        self.register_buffer("merge_idx", torch.argsort(torch.cat([identity_idx, transform_idx])))
        self.conditioner = ConvResidualNet(
            len(identity_idx),
            len(transform_idx) * spline_param_count(num_bins),
            hidden_channels,
            num_blocks,
            context_features,
            dropout=dropout,
        )

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        xa = x[..., self.identity_idx, :, :]
        xb = x[..., self.transform_idx, :, :]
        out = self.conditioner.output_layer
        yb, ld = spline_head(
            xb,
            self.conditioner.hidden(xa, context),
            out.weight,
            out.bias,
            self.num_bins,
            inverse,
            self.tail_bound,
        )
        y = torch.cat([xa, yb], dim=-3)[..., self.merge_idx, :, :]
        return y, sum_except_batch(ld)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, context, inverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(y, context, inverse=True)


class MultiscaleFlow(Transform):
    """Multiscale (Glow / Real NVP style) flow acting on FLAT vectors ``(B, C*H*W)``.

    Level l: squeeze, then ``steps_per_level`` steps (ActNorm, InvertibleConv1x1,
    ImageRQSCoupling with alternating channel masks), then (except at the last level) the first
    half of the channels is factored out. The output concatenates the last level first, then
    the factored-out parts from the deepest to the shallowest, so ``y[:, :n]`` holds the most
    processed coordinates.

    Args:
        shape: (C, H, W); H and W divisible by 2**levels.
        levels: Number of levels.
        steps_per_level: Steps per level.
        context_features, hidden_channels, num_blocks, num_bins, tail_bound, dropout:
            coupling settings (see :class:`ImageRQSCoupling`).
    """

    def __init__(
        self,
        shape: Sequence[int],
        levels: int = 2,
        steps_per_level: int = 2,
        context_features: int = 0,
        hidden_channels: int = 64,
        num_blocks: int = 2,
        num_bins: int = 8,
        tail_bound: float = 3.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        c, h, w = (int(s) for s in shape)
        if levels < 1 or h % 2**levels or w % 2**levels:
            raise ValueError(f"H and W of {tuple(shape)} must be divisible by 2**levels")
        self.shape = (c, h, w)
        self.levels = nn.ModuleList()
        self.factored_shapes: list[tuple[int, int, int]] = []
        for level in range(levels):
            c, h, w = 4 * c, h // 2, w // 2
            steps: list[Transform] = []
            for step in range(steps_per_level):
                steps += [
                    ActNorm(c),
                    InvertibleConv1x1(c),
                    ImageRQSCoupling(
                        c,
                        torch.arange(c) % 2 == step % 2,
                        context_features,
                        hidden_channels,
                        num_blocks,
                        num_bins,
                        tail_bound,
                        dropout,
                    ),
                ]
            self.levels.append(CompositeTransform(steps))
            if level < levels - 1:
                self.factored_shapes.append((c // 2, h, w))
                c = c - c // 2
        self.final_shape = (c, h, w)

    @property
    def features(self) -> int:
        c, h, w = self.shape
        return c * h * w

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = x.shape[0]
        x = x.reshape(batch, *self.shape)
        total = x.new_zeros(batch)
        outs = []
        for level, steps in enumerate(self.levels):
            x, ld = steps(squeeze(x), context)
            total = total + ld
            if level < len(self.levels) - 1:
                k = self.factored_shapes[level][0]
                outs.append(x[:, :k].reshape(batch, -1))
                x = x[:, k:]
        outs.append(x.reshape(batch, -1))
        return torch.cat(outs[::-1], dim=1), total

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = y.shape[0]
        sizes = [_numel(self.final_shape)] + [_numel(s) for s in self.factored_shapes[::-1]]
        parts = list(torch.split(y, sizes, dim=1))
        x = parts[0].reshape(batch, *self.final_shape)
        factored = parts[1:][::-1]  # shallowest first
        total = y.new_zeros(batch)
        for level in reversed(range(len(self.levels))):
            if level < len(self.levels) - 1:
                x = torch.cat([factored[level].reshape(batch, *self.factored_shapes[level]), x], 1)
            x, ld = self.levels[level].inverse(x, context)
            total = total + ld
            x = unsqueeze(x)
        return x.reshape(batch, -1), total


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def make_image_flow(
    shape: Sequence[int],
    levels: int = 2,
    steps_per_level: int = 2,
    *,
    context_features: int = 0,
    hidden_channels: int = 64,
    num_bins: int = 8,
    tail_bound: float = 3.0,
    num_blocks: int = 2,
    dropout: float = 0.0,
    seed: int | None = None,
) -> MultiscaleFlow:
    """Multiscale spline flow on flat ``(B, C*H*W)`` vectors, deepest level first in the output.

    See :class:`MultiscaleFlow`; ``seed`` makes the initialisation reproducible without
    touching the global RNG.
    """
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        return MultiscaleFlow(
            shape,
            levels,
            steps_per_level,
            context_features,
            hidden_channels,
            num_blocks,
            num_bins,
            tail_bound,
            dropout,
        )


# --------------------------------------------------------------------------- preprocessing
#: names of the pixel preprocessing layers (:func:`make_preprocessing`).
PREPROCESSING = ("scale", "logit", "none")


class PixelScaling(Transform):
    """Fixed affine map of dequantised pixels: y = x / 2^bits - 1/2 (``[0, 256)`` to
    ``[-1/2, 1/2)`` for 8 bits); log|det J| = -d log 2^bits. Acts elementwise on any shape.

    Args:
        num_bits: bits per pixel value.
    """

    def __init__(self, num_bits: int = 8):
        super().__init__()
        self.levels = float(2**num_bits)

    def _logdet(self, x: Tensor) -> Tensor:
        per_element = -torch.log(torch.tensor(self.levels, dtype=x.dtype, device=x.device))
        return (per_element * x[0].numel()).expand(x.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x / self.levels - 0.5, self._logdet(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return (y + 0.5) * self.levels, -self._logdet(y)


class PixelLogit(Transform):
    """Fixed logit map of dequantised pixels (Real NVP's preprocessing):

        p = alpha + (1 - 2 alpha) x / 2^bits,   y = log p - log(1 - p),
        log|det J| = sum [log((1 - 2 alpha) / 2^bits) - log p - log(1 - p)].

    It maps ``(-a, 2^bits + a)`` with ``a = alpha 2^bits / (1 - 2 alpha)`` onto R, so ``[0, 256)``
    lands in ``[logit(alpha), logit(1 - alpha))`` and a density on R gives a normalised one on
    that interval. ``p`` is clipped to ``[eps, 1 - eps]`` (float epsilon) so that out-of-range
    inputs give large finite values instead of NaN.

    Args:
        alpha: margin that keeps p away from 0 and 1 for pixel values in ``[0, 2^bits]``.
        num_bits: bits per pixel value.
    """

    def __init__(self, alpha: float = 0.05, num_bits: int = 8):
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"expected 0 <= alpha < 0.5, got {alpha}")
        self.alpha = float(alpha)
        self.levels = float(2**num_bits)
        self.slope = (1.0 - 2.0 * self.alpha) / self.levels  # dp/dx

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        eps = torch.finfo(x.dtype).eps
        p = (self.alpha + self.slope * x).clamp(eps, 1.0 - eps)
        y = torch.log(p) - torch.log1p(-p)
        ld = math.log(self.slope) + F.softplus(-y) + F.softplus(y)  # -log p - log(1 - p)
        return y, sum_except_batch(ld)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = torch.sigmoid(y)
        ld = -math.log(self.slope) - F.softplus(-y) - F.softplus(y)
        return (p - self.alpha) / self.slope, sum_except_batch(ld)


def make_preprocessing(name: str) -> Transform | None:
    """The pixel preprocessing layer ``"scale"`` (:class:`PixelScaling`, the default of the
    image models), ``"logit"`` (:class:`PixelLogit`, alpha = 0.05) or ``None`` for ``"none"``."""
    if name not in PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {', '.join(map(repr, PREPROCESSING))}")
    if name == "scale":
        return PixelScaling()
    if name == "logit":
        return PixelLogit()
    return None


# ------------------------------------------------- linear layers before the projection to u
def multiscale_subset(flow: MultiscaleFlow, channel_factor: int, min_features: int = 1) -> Tensor:
    """Indices of the flat output of ``flow`` that :class:`PartialLinear` mixes, deepest first.

    From the output block of level l (0 = finest), the first ``channel_factor * 2^l`` channels
    (at most all of them): the coarser the level, the more channels, so every scale contributes
    (level l+1 gives half the coordinates of level l). The factor is doubled until the subset
    holds at least ``min_features`` coordinates (or everything).
    """
    blocks = [flow.final_shape, *flow.factored_shapes[::-1]]  # output order: deepest first
    levels = list(range(len(blocks)))[::-1]
    starts = [0]
    for c, h, w in blocks:
        starts.append(starts[-1] + c * h * w)
    factor = max(int(channel_factor), 1)
    while True:
        parts = []
        for (c, h, w), level, start in zip(blocks, levels, starts):
            channels = min(factor * 2**level, c)
            parts.append(torch.arange(start, start + channels * h * w))
        index = torch.cat(parts)
        if index.numel() >= min_features or index.numel() == flow.features:
            return index
        factor *= 2


class PartialLinear(Transform):
    """Invertible linear layers on a subset of coordinates, which are then moved to the front.

    z = [W_L ... W_1 y[index], y[rest]] with LU-parametrised W_i (:class:`LULinear`, with bias,
    identity at init); log|det J| = sum_i log|det W_i| (moving coordinates is a permutation).
    After a :class:`MultiscaleFlow` and with ``index`` from :func:`multiscale_subset`, the
    manifold coordinates u = z[:, :n] can mix features of every scale. W = L U is never formed:
    y -> L (U y) costs O(k^2) per sample for k = len(index).

    Args:
        features: d.
        index: ``(k,)`` distinct coordinates to mix.
        num_layers: number of LU layers (>= 1).
    """

    def __init__(self, features: int, index: Tensor, num_layers: int = 2):
        super().__init__()
        index = torch.as_tensor(index, dtype=torch.long).flatten()
        taken = torch.zeros(features, dtype=torch.bool)
        taken[index] = True
        if int(taken.sum()) != index.numel() or num_layers < 1:
            raise ValueError("expected distinct indices in [0, features) and num_layers >= 1")
        order = torch.cat([index, torch.nonzero(~taken).flatten()])
        self.features = int(features)
        self.mixed = int(index.numel())
        self.register_buffer("order", order)
        self.register_buffer("restore", torch.argsort(order))
        self.layers = nn.ModuleList(LULinear(self.mixed) for _ in range(num_layers))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z = x[..., self.order]
        head, tail = z[..., : self.mixed], z[..., self.mixed :]
        total = x.new_zeros(())
        for layer in self.layers:
            head, ld = layer._linear(head)
            total = total + ld
        return torch.cat([head, tail], dim=-1), total.expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        head, tail = y[..., : self.mixed], y[..., self.mixed :]
        total = y.new_zeros(())
        for layer in reversed(self.layers):
            head, ld = layer._solve(head)
            total = total + ld
        return torch.cat([head, tail], dim=-1)[..., self.restore], total.expand(y.shape[0])


# ------------------------------------------------------------- data-dependent ActNorm start
#: per-channel standard deviations are floored here by :func:`init_actnorm`.
ACTNORM_STD_FLOOR = 1e-3


def _is_identity_actnorm(layer: ActNorm) -> bool:
    return bool(torch.all(layer.log_scale == 0)) and bool(torch.all(layer.shift == 0))


@torch.no_grad()
def init_actnorm(model: nn.Module, x: Any, context: Any = None, *, max_points: int = 256) -> int:
    """Data-dependent start of every ActNorm layer still at the identity (Glow's init).

    Runs (at most ``max_points`` evenly spaced rows of) ``x`` once through the outer flow of
    ``model`` (``model.outer``; or ``model`` itself when it is a flow) and, just before each
    ActNorm layer, sets its scale and shift so that its output has per-channel mean 0 and
    standard deviation 1 on that batch (the std floored at :data:`ACTNORM_STD_FLOOR`). Layers
    already changed (trained or initialised) are left alone, so calling it again does nothing.
    The result lives in the parameters, hence in ``state_dict``.

    Args:
        model: a model (uses ``model.outer`` and, for the context, ``model._outer_context``
            when present) or a flow acting on flat ``(B, d)`` vectors.
        x: data ``(N, *data_shape)`` as the model receives it.
        context: ``(N, p)`` for conditional models.
        max_points: rows used.

    Returns:
        The number of ActNorm layers set (0 for models without fresh ActNorm layers).
    """
    flow = getattr(model, "outer", model)
    if not isinstance(flow, nn.Module):
        return 0
    layers = [m for m in flow.modules() if isinstance(m, ActNorm) and _is_identity_actnorm(m)]
    if not layers:
        return 0
    reference = layers[0].log_scale
    x = torch.as_tensor(x, dtype=reference.dtype, device=reference.device)
    x = x.reshape(x.shape[0], -1)
    keep = torch.arange(x.shape[0])
    if x.shape[0] > max_points:
        keep = torch.linspace(0, x.shape[0] - 1, max_points).round().long()
    ctx = None
    if context is not None:
        ctx = torch.as_tensor(context, dtype=reference.dtype, device=reference.device)[keep]
        outer_context = getattr(model, "_outer_context", None)
        if callable(outer_context):
            ctx = outer_context(ctx)

    def start(layer: nn.Module, args: tuple[Any, ...]) -> None:
        h = args[0]
        mean = h.mean(dim=(0, 2, 3))
        std = h.std(dim=(0, 2, 3), correction=0).clamp_min(ACTNORM_STD_FLOOR)
        layer.log_scale.copy_(-torch.log(std))
        layer.shift.copy_(-mean / std)

    handles = [layer.register_forward_pre_hook(start) for layer in layers]
    try:
        flow(x[keep], ctx)
    finally:
        for handle in handles:
            handle.remove()
    return len(layers)
