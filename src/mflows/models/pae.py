"""Probabilistic autoencoder (PAE): unrestricted encoder and decoder, a flow on the latent.

e: R^d -> R^n and g: R^n -> R^d are residual MLPs (for images convolutional nets,
:mod:`mflows.conv_nets`) trained as an autoencoder; the inner flow h
models the density of u = e(x). Since g is not a flow, x has no tractable density:
``log_prob`` raises and ``latent_log_prob`` gives log p_u(u).

References:
    The probabilistic autoencoder. V. Boehm and U. Seljak, 2020, arXiv:2006.05479.
    Flows for simultaneous manifold learning and density estimation.
    J. Brehmer and K. Cranmer, NeurIPS 2020, arXiv:2003.13913.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from mflows.models.base import Model
from mflows.transforms.base import Transform

__all__ = ["PAE"]


class PAE(Model):
    """PAE; see the module docstring.

    Args:
        encoder: network ``(B, d) -> (B, n)``.
        decoder: network ``(B, n) -> (B, d)``.
        inner: h as a transform ``u -> u~`` on ``(B, n)`` (the context enters h only).
        data_dim: d or ``(C, H, W)``.
        latent_dim: n.
        context_dim: dimension of theta.
        config: rebuild information (set by ``make_model``).
        standardizer: an optional :class:`~mflows.transforms.standardize.Standardize`: the
            encoder sees standardised x and the decoder output is mapped back to data space.
    """

    kind = "pae"

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        inner: Transform,
        data_dim: int | tuple[int, ...],
        latent_dim: int,
        context_dim: int = 0,
        config: dict[str, Any] | None = None,
        standardizer: Transform | None = None,
    ):
        super().__init__(data_dim, latent_dim, context_dim, config)
        self.encoder = encoder
        self.decoder = decoder
        self.inner = inner
        if standardizer is not None:
            self.input_standardizer = standardizer

    @property
    def standardizer(self) -> Any:
        """The standardising layer around the encoder and decoder, or ``None``."""
        return getattr(self, "input_standardizer", None)

    def _encode(self, x: Tensor, context: Tensor | None) -> Tensor:
        standardizer = self.standardizer
        if standardizer is not None:
            x = standardizer(x)[0]
        return self.encoder(x)

    def _decode(self, u: Tensor, context: Tensor | None) -> Tensor:
        x = self.decoder(u)
        standardizer = self.standardizer
        if standardizer is not None:
            x = standardizer.inverse(x)[0]
        return x

    def _sample_log_prob(self, u: Tensor, x: Tensor, context: Tensor | None) -> Tensor:
        return self.log_prob(x)  # raises NotImplementedError with the explanation

    def log_prob(self, x: Any, context: Any = None) -> Tensor:
        """Not available: raises :class:`NotImplementedError` (see the module docstring)."""
        raise NotImplementedError(
            "a PAE defines no tractable density of x (its decoder is not invertible); use "
            "model.latent_log_prob(model.encode(x)) for the density of the latent u"
        )

    def manifold_parameters(self) -> list[nn.Parameter]:
        """Parameters of the encoder and the decoder."""
        return list(self.encoder.parameters()) + list(self.decoder.parameters())
