"""Conditioner networks: a residual MLP and a convolutional residual network.

Both take an optional context vector and avoid batch normalisation (which would break
``torch.func.vmap`` and per-sample Jacobians). The last layer is zero-initialised by default, so
a coupling layer built on them starts as the identity map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvResidualNet", "ResidualMLP"]


def _join_context(x: Tensor, context: Tensor | None, context_features: int) -> Tensor:
    if context_features == 0:
        return x
    if context is None:
        raise ValueError(f"expected a context of shape (B, {context_features}), got None")
    return torch.cat([x, context.expand(*x.shape[:-1], context_features)], dim=-1)


class _ResidualBlock(nn.Module):
    """h + W2 drop(act(W1 act(h)))."""

    def __init__(self, features: int, activation: type[nn.Module], dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            activation(),
            nn.Linear(features, features),
            activation(),
            nn.Dropout(dropout),
            nn.Linear(features, features),
        )

    def forward(self, h: Tensor) -> Tensor:
        act, first, _, drop, second = self.net
        if type(act) is nn.ReLU:
            t = F.relu(F.linear(F.relu(h), first.weight, first.bias))
        else:
            t = act(F.linear(act(h), first.weight, first.bias))
        if drop.p > 0.0:
            t = drop(t)
        return h + F.linear(t, second.weight, second.bias)


class ResidualMLP(nn.Module):
    """Residual multi-layer perceptron ``(*, in + context) -> (*, out)``.

    h_0 = W_in [x, c];  h_{k+1} = h_k + W_2 act(W_1 act(h_k));  y = W_out act(h_K).

    Args:
        in_features: Input features (may be 0 when the net only reads the context).
        out_features: Output features.
        hidden_features: Width of the residual stream.
        num_blocks: Number of residual blocks.
        context_features: Size of the context vector concatenated to the input (0: none).
        activation: Activation class.
        dropout: Dropout probability inside the blocks.
        zero_init_last: Zero the output layer (weights and bias), so the net outputs 0 at init.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int = 100,
        num_blocks: int = 2,
        context_features: int = 0,
        activation: type[nn.Module] = nn.ReLU,
        dropout: float = 0.0,
        zero_init_last: bool = True,
    ):
        super().__init__()
        if in_features + context_features <= 0:
            raise ValueError("ResidualMLP needs in_features + context_features > 0")
        self.in_features = in_features
        self.out_features = out_features
        self.context_features = context_features
        self.initial = nn.Linear(in_features + context_features, hidden_features)
        self.blocks = nn.Sequential(
            *(_ResidualBlock(hidden_features, activation, dropout) for _ in range(num_blocks))
        )
        self.final = nn.Sequential(activation(), nn.Linear(hidden_features, out_features))
        if zero_init_last:
            nn.init.zeros_(self.final[-1].weight)
            nn.init.zeros_(self.final[-1].bias)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Maps ``x`` of shape ``(*, in)`` and ``context`` ``(*, c)`` to ``(*, out)``."""
        h = _join_context(x, context, self.context_features)
        h = F.linear(h, self.initial.weight, self.initial.bias)
        for block in self.blocks:
            h = block(h)
        act, last = self.final
        h = F.relu(h) if type(act) is nn.ReLU else act(h)
        return F.linear(h, last.weight, last.bias)


class _ConvResidualBlock(nn.Module):
    def __init__(self, channels: int, activation: type[nn.Module], dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            activation(),
            nn.Conv2d(channels, channels, 3, padding=1),
            activation(),
            nn.Dropout(dropout),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, h: Tensor) -> Tensor:
        return h + self.net(h)


class ConvResidualNet(nn.Module):
    """Convolutional residual network ``(B, in, H, W) -> (B, out, H, W)``.

    The context ``(B, c)`` is broadcast to ``(B, c, H, W)`` and concatenated as extra input
    channels. 3x3 convolutions with padding keep the spatial size; the output layer is a 1x1
    convolution, zero-initialised by default.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        hidden_channels: Channels of the residual stream.
        num_blocks: Number of residual blocks.
        context_features: Size of the context vector (0: none).
        activation: Activation class.
        dropout: Dropout probability inside the blocks.
        zero_init_last: Zero the output layer.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 64,
        num_blocks: int = 2,
        context_features: int = 0,
        activation: type[nn.Module] = nn.ReLU,
        dropout: float = 0.0,
        zero_init_last: bool = True,
    ):
        super().__init__()
        self.context_features = context_features
        self.initial = nn.Conv2d(in_channels + context_features, hidden_channels, 3, padding=1)
        self.blocks = nn.Sequential(
            *(_ConvResidualBlock(hidden_channels, activation, dropout) for _ in range(num_blocks))
        )
        self.final = nn.Sequential(activation(), nn.Conv2d(hidden_channels, out_channels, 1))
        if zero_init_last:
            nn.init.zeros_(self.final[-1].weight)
            nn.init.zeros_(self.final[-1].bias)

    def _with_context(self, x: Tensor, context: Tensor | None) -> Tensor:
        if self.context_features > 0:
            if context is None:
                raise ValueError(
                    f"expected a context of shape (B, {self.context_features}), got None"
                )
            c = context[..., :, None, None].expand(*x.shape[:-3], -1, *x.shape[-2:])
            x = torch.cat([x, c], dim=-3)
        return x

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Maps ``x`` ``(B, in, H, W)`` and ``context`` ``(B, c)`` to ``(B, out, H, W)``."""
        return self.output_layer(self.hidden(x, context))

    def hidden(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The features that the output layer (``output_layer``) maps: ``forward`` without it."""
        return self.final[0](self.blocks(self.initial(self._with_context(x, context))))

    @property
    def output_layer(self) -> nn.Conv2d:
        """The 1x1 output convolution."""
        return self.final[-1]
