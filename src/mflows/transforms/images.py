"""Image bijections on ``(B, C, H, W)`` and a multiscale flow on flat ``(B, C*H*W)`` vectors.

References:
    Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma, Dhariwal, 2018),
    arXiv:1807.03039.
    Density estimation using Real NVP (Dinh et al., 2016), arXiv:1605.08803.
    Neural Spline Flows (Durkan et al., 2019), arXiv:1906.04032.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mflows.nets import ConvResidualNet
from mflows.transforms.base import CompositeTransform, Transform, sum_except_batch
from mflows.transforms.linear import LULinear
from mflows.transforms.splines import (
    rational_quadratic_spline,
    spline_param_count,
    split_spline_params,
)

__all__ = [
    "ActNorm",
    "ImageRQSCoupling",
    "InvertibleConv1x1",
    "MultiscaleFlow",
    "Squeeze",
    "make_image_flow",
]


class ActNorm(Transform):
    """Per-channel affine map y = x exp(s) + b; log|det J| = H W sum_c s_c.

    Initialised as the identity (plain learned initialisation, no data-dependent init, so the
    layer stays a pure function under ``torch.func``).
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
        p = self.conditioner(xa, context)
        p = p.reshape(*xb.shape[:-2], -1, *xb.shape[-2:]).movedim(-3, -1)  # (B, Cb, H, W, P)
        w, h, d = split_spline_params(p, self.num_bins)
        yb, ld = rational_quadratic_spline(xb, w, h, d, inverse=inverse, tail_bound=self.tail_bound)
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
