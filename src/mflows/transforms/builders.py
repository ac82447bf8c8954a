"""Ready-made flows used by the models."""

from __future__ import annotations

from typing import Literal

import torch

from mflows.transforms.base import CompositeTransform, Transform
from mflows.transforms.coupling import AffineCoupling, RQSCoupling, alternating_mask
from mflows.transforms.linear import LULinear
from mflows.transforms.permutations import RandomPermutation
from mflows.transforms.splines import ElementwiseRQS

__all__ = ["make_tabular_flow"]


def make_tabular_flow(
    features: int,
    num_layers: int,
    *,
    context_features: int = 0,
    hidden_features: int = 100,
    num_blocks: int = 2,
    num_bins: int = 8,
    tail_bound: float = 3.0,
    linear: Literal["permutation", "lu", "none"] = "permutation",
    coupling: Literal["spline", "affine"] = "spline",
    dropout: float = 0.0,
    seed: int | None = None,
    identity_init: bool = True,
) -> Transform:
    """Coupling flow on ``(B, features)``, identity at initialisation (unless ``identity_init``
    is False).

    Layout: ``coupling_1, linear_1, coupling_2, ..., linear_{L-1}, coupling_L``; coupling masks
    alternate between even and odd features, and the linear layers in between are random
    permutations, LU layers or nothing. With ``features == 1`` (coupling impossible) the flow
    is ``num_layers`` elementwise splines whose parameters are free or a function of the context
    (the ``coupling`` and ``linear`` choices are then ignored).

    Args:
        features: d.
        num_layers: Number of coupling layers L.
        context_features: Context size (0: unconditional).
        hidden_features: Conditioner width.
        num_blocks: Conditioner residual blocks.
        num_bins: Spline bins.
        tail_bound: Spline interval [-B, B].
        linear: Linear layer between couplings.
        coupling: ``"spline"`` (:class:`RQSCoupling`) or ``"affine"`` (:class:`AffineCoupling`).
        dropout: Conditioner dropout.
        seed: If given, the permutations and the parameter initialisation are reproducible
            (the global RNG is left untouched).
        identity_init: zero the output layers of the conditioners, so that every coupling
            starts as the identity; False keeps PyTorch's default initialisation of those
            layers (a random start, as the paper's code: nflows-style residual nets).

    Returns:
        A :class:`CompositeTransform`.
    """
    if features < 1 or num_layers < 1:
        raise ValueError(
            f"expected features >= 1 and num_layers >= 1, got {features}, {num_layers}"
        )
    if linear not in ("permutation", "lu", "none"):
        raise ValueError(f"linear must be 'permutation', 'lu' or 'none', got {linear!r}")
    if coupling not in ("spline", "affine"):
        raise ValueError(f"coupling must be 'spline' or 'affine', got {coupling!r}")
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        layers: list[Transform] = []
        for i in range(num_layers):
            if features == 1:
                layers.append(
                    ElementwiseRQS(
                        1,
                        context_features,
                        num_bins,
                        tail_bound,
                        hidden_features,
                        num_blocks,
                        dropout,
                        zero_init_last=identity_init,
                    )
                )
                continue
            if i > 0 and linear == "permutation":
                layers.append(RandomPermutation(features, None if seed is None else seed + i))
            elif i > 0 and linear == "lu":
                layers.append(LULinear(features))
            mask = alternating_mask(features, i % 2)
            common = dict(
                context_features=context_features,
                hidden_features=hidden_features,
                num_blocks=num_blocks,
                dropout=dropout,
                zero_init_last=identity_init,
            )
            if coupling == "spline":
                layers.append(
                    RQSCoupling(features, mask, num_bins=num_bins, tail_bound=tail_bound, **common)
                )
            else:
                layers.append(AffineCoupling(features, mask, **common))
    return CompositeTransform(layers)
