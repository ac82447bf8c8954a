"""Convolutional encoder and decoder for image models (M_e-flow encoder, PAE encoder/decoder).

Both act on FLAT vectors ``(B, C*H*W)`` (the models' convention) and reshape internally. The
encoder halves the resolution with strided 3x3 convolutions while both sides are even and
larger than 4 (16 px: 2 stages down to 4x4, 32 px: 3, 64 px: 4), doubling the channels at
every stage up to ``channels`` at the lowest resolution, so every stage costs about the same;
residual blocks sit at every resolution, ``num_blocks`` of them at the lowest one, and a linear
head maps the flattened features (and the context, if any) to ``(B, n)``. The decoder mirrors
it (linear, residual blocks, nearest-neighbour upsampling followed by 3x3 convolutions).

An optional fixed ``preprocessing`` transform (the model's pixel scaling or logit layer) is
applied to the encoder input, and its inverse to the decoder output, so the networks work on
values of order one while the models see pixels. No batch normalisation (``torch.func``-safe).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvDecoder", "ConvEncoder", "conv_stages"]

#: smallest side the encoder downsamples to.
MIN_SIDE = 4
#: fewest channels of a stage (unless ``channels`` itself is smaller).
MIN_CHANNELS = 8


def conv_stages(height: int, width: int) -> int:
    """Number of stride-2 stages: halve while both sides are even and larger than 4."""
    stages = 0
    while height % 2 == 0 and width % 2 == 0 and min(height, width) > MIN_SIDE:
        height, width, stages = height // 2, width // 2, stages + 1
    return stages


def _stage_channels(channels: int, stages: int) -> list[int]:
    """Channels at resolution 0 (full) ... ``stages`` (lowest): doubling up to ``channels``."""
    floor = min(channels, MIN_CHANNELS)
    return [max(channels >> (stages - s), floor) for s in range(stages + 1)]


class _ConvBlock(nn.Module):
    """h + conv(relu(conv(relu(h)))) with 3x3 convolutions."""

    def __init__(self, channels: int):
        super().__init__()
        self.first = nn.Conv2d(channels, channels, 3, padding=1)
        self.second = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.second(F.relu(self.first(F.relu(h))))


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) != 3 or any(int(s) < 1 for s in shape):
        raise ValueError(f"expected an image shape (C, H, W), got {tuple(shape)}")
    c, h, w = (int(s) for s in shape)
    return c, h, w


class ConvEncoder(nn.Module):
    """Image encoder ``(B, C*H*W) [, context (B, p)] -> (B, out_features)``.

    Args:
        shape: image shape (C, H, W).
        out_features: n.
        channels: channels at the lowest resolution.
        num_blocks: residual blocks at the lowest resolution (one more at every other).
        context_features: size of a context vector joined to the features before the head.
        preprocessing: a fixed transform applied to the input first (or ``None``).
    """

    def __init__(
        self,
        shape: Sequence[int],
        out_features: int,
        channels: int = 64,
        num_blocks: int = 2,
        context_features: int = 0,
        preprocessing: nn.Module | None = None,
    ):
        super().__init__()
        c, h, w = _check_shape(shape)
        self.shape = (c, h, w)
        self.context_features = int(context_features)
        self.preprocessing = preprocessing
        stages = conv_stages(h, w)
        widths = _stage_channels(channels, stages)
        self.stem = nn.Conv2d(c, widths[0], 3, padding=1)
        layers: list[nn.Module] = []
        for s in range(stages):
            layers += [_ConvBlock(widths[s]), nn.Conv2d(widths[s], widths[s + 1], 3, 2, 1)]
        layers += [_ConvBlock(widths[-1]) for _ in range(num_blocks)]
        self.body = nn.Sequential(*layers)
        flat = widths[-1] * (h >> stages) * (w >> stages)
        self.head = nn.Linear(flat + self.context_features, out_features)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``x`` ``(B, C*H*W)`` (or ``(B, C, H, W)``), ``context`` ``(B, p)`` -> ``(B, n)``."""
        batch = x.shape[0]
        x = x.reshape(batch, -1)
        if self.preprocessing is not None:
            x = self.preprocessing(x)[0]
        h = self.body(self.stem(x.reshape(batch, *self.shape)))
        h = F.relu(h).reshape(batch, -1)
        if self.context_features:
            if context is None:
                raise ValueError(f"expected a context of shape (B, {self.context_features})")
            h = torch.cat([h, context], dim=-1)
        return self.head(h)


class ConvDecoder(nn.Module):
    """Image decoder ``(B, in_features) -> (B, C*H*W)``, the mirror of :class:`ConvEncoder`.

    Args:
        in_features: n.
        shape: image shape (C, H, W).
        channels: channels at the lowest resolution.
        num_blocks: residual blocks at the lowest resolution (one more at every other).
        preprocessing: a fixed transform whose inverse maps the output to pixels (or ``None``).
    """

    def __init__(
        self,
        in_features: int,
        shape: Sequence[int],
        channels: int = 64,
        num_blocks: int = 2,
        preprocessing: nn.Module | None = None,
    ):
        super().__init__()
        c, h, w = _check_shape(shape)
        self.shape = (c, h, w)
        self.preprocessing = preprocessing
        stages = conv_stages(h, w)
        widths = _stage_channels(channels, stages)
        self.low = (widths[-1], h >> stages, w >> stages)
        self.head = nn.Linear(in_features, widths[-1] * self.low[1] * self.low[2])
        layers: list[nn.Module] = [_ConvBlock(widths[-1]) for _ in range(num_blocks)]
        for s in reversed(range(stages)):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(widths[s + 1], widths[s], 3, padding=1),
                _ConvBlock(widths[s]),
            ]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(widths[0], c, 3, padding=1)

    def forward(self, u: Tensor, context: Tensor | None = None) -> Tensor:
        """``u`` ``(B, n)`` -> ``(B, C*H*W)`` (the context is not used)."""
        batch = u.shape[0]
        h = self.body(self.head(u).reshape(batch, *self.low))
        x = self.out(F.relu(h)).reshape(batch, -1)
        if self.preprocessing is not None:
            x = self.preprocessing.inverse(x)[0]
        return x
