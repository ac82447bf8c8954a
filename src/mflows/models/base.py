"""The model interface shared by every kind: encode, decode, project, densities, sampling.

Public methods validate their inputs (:mod:`mflows.validation`), flatten images to
``(B, C*H*W)``, and call the flat private methods that each kind implements:

* ``_encode(x, context) -> u``, ``(B, d) -> (B, n)``
* ``_decode(u, context) -> x``, ``(B, n) -> (B, d)``
* ``_log_prob(x, context) -> (B,)``
* ``_latent_log_prob(u, context) -> (B,)``
* ``_sample_latent(num, context, generator) -> (num, n)``

so the maths lives in one place per kind and the checks in one place for all.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mflows import registry
from mflows.distributions import normal_log_prob
from mflows.errors import InvalidArgumentError
from mflows.files import atomic_torch_save
from mflows.validation import as_tensor, check_context, check_num_samples

__all__ = ["DEFAULT_BATCH_CHUNK_SIZE", "EXTREME_INPUT", "FORMAT_NAME", "FORMAT_VERSION", "Model"]

FORMAT_NAME = "mflows-model"
FORMAT_VERSION = 1

#: inputs above this magnitude that make a model's output non-finite are refused (not NaN).
EXTREME_INPUT = 1e6

#: default :attr:`Model.batch_chunk_size`: a few tens of MB of intermediates for tabular data.
DEFAULT_BATCH_CHUNK_SIZE = 4096


class Model(nn.Module):
    """Base class of all mflows models (see docs/interfaces.md, "Models").

    Args:
        data_dim: d as an int, or an image shape ``(C, H, W)``.
        latent_dim: n (the manifold dimension; d for the ambient flow).
        context_dim: dimension of the conditioning variable theta (0: unconditional).
        config: what :func:`mflows.models.make_model` needs to rebuild the model, or ``None``
            for a model assembled by hand (it can then not be saved).
    """

    kind: str = "base"

    # -- capabilities of the kind (the one table is mflows.registry) ---------------------------
    @property
    def capabilities(self) -> registry.Capabilities:
        """What this kind of model can do (:func:`mflows.registry.capabilities`)."""
        return registry.capabilities(self.kind)

    has_manifold = property(lambda self: self.capabilities.has_manifold)
    exact_density = property(lambda self: self.capabilities.exact_density)
    density_on_manifold = property(lambda self: self.capabilities.density_on_manifold)
    has_encoder = property(lambda self: self.capabilities.has_encoder)
    has_latent_density = property(lambda self: self.capabilities.has_latent_density)
    prescribed_manifold = property(lambda self: self.capabilities.prescribed_manifold)

    @property
    def theta_enters_manifold(self) -> bool:
        """Whether the context theta moves the manifold (a conditional outer flow / encoder)."""
        conditional = bool(getattr(self, "conditional_outer", False))
        return self.has_manifold and self.context_dim > 0 and conditional

    def __init__(
        self,
        data_dim: int | tuple[int, ...],
        latent_dim: int,
        context_dim: int = 0,
        config: dict[str, Any] | None = None,
    ):
        super().__init__()
        if isinstance(data_dim, int):
            self.data_shape: tuple[int, ...] = (int(data_dim),)
            self.data_dim: int | tuple[int, ...] = int(data_dim)
        else:
            self.data_shape = tuple(int(s) for s in data_dim)
            self.data_dim = self.data_shape
        self.data_size = int(math.prod(self.data_shape))
        self.latent_dim = int(latent_dim)
        self.context_dim = int(context_dim)
        self.config = copy.deepcopy(config) if config is not None else None
        #: options of :func:`mflows.jacobians.decoder_logdet` used by ``log_prob``.
        self.jacobian_options: dict[str, Any] = {"chunk_size": None, "mode": "auto"}
        self.logdet_method = "cholesky"
        #: the public methods process at most this many samples at once (``None``: no limit),
        #: so that peak memory does not grow with the batch; results do not depend on it.
        self.batch_chunk_size: int | None = DEFAULT_BATCH_CHUNK_SIZE
        # Carries dtype and device for models without parameters (e.g. FOM with identity h).
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    # ------------------------------------------------------------------ helpers
    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model."""
        return self._anchor.dtype

    @property
    def device(self) -> torch.device:
        """Device of the model."""
        return self._anchor.device

    def _check_x(self, x: Any, name: str = "x") -> Tensor:
        t = as_tensor(x, name, self.data_shape, dtype=self.dtype, device=self.device)
        return t.reshape(t.shape[0], self.data_size)

    def _check_u(self, u: Any, name: str = "u") -> Tensor:
        return as_tensor(u, name, (self.latent_dim,), dtype=self.dtype, device=self.device)

    def _check_context(self, context: Any, batch: int, allow_single: bool = False):
        return check_context(
            context,
            self.context_dim,
            batch,
            dtype=self.dtype,
            device=self.device,
            allow_single=allow_single,
        )

    def _unflatten(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.data_shape)

    def _checked(
        self, method: str, out: Tensor, inputs: Tensor | None, log_density: bool = False
    ) -> Tensor:
        """Refuses non-finite outputs caused by inputs of extreme magnitude.

        Where ``out`` is NaN or infinite (a log density may be -inf: a density that underflows)
        and the samples concerned have an input entry above :data:`EXTREME_INPUT` in absolute
        value, the inputs are outside what the model can evaluate in its dtype: raise. Other
        non-finite outputs come from the model itself (e.g. a diverged training) and are
        returned as they are, so that the trainer can report the divergence.
        """
        finite = torch.isfinite(out)
        if log_density:
            finite = finite | (out == -torch.inf)
        if inputs is None or out.dim() == 0 or bool(finite.all()):
            return out
        bad_rows = ~finite.reshape(out.shape[0], -1).all(-1)
        magnitude = inputs.reshape(inputs.shape[0], -1).abs().amax(-1)
        extreme = bad_rows & (magnitude > EXTREME_INPUT)
        if not bool(extreme.any()):
            return out
        raise InvalidArgumentError(
            f"{method} cannot evaluate {int(extreme.sum())} of {out.shape[0]} samples: their "
            f"entries (up to |{float(magnitude[extreme].max()):.3g}|) are far outside the range "
            f"of standardised data and overflow this {str(self.dtype).replace('torch.', '')} "
            "model; rescale the data"
        )

    def _chunked(
        self, fn: Callable[[Tensor, Tensor | None], Tensor], data: Tensor, context: Tensor | None
    ) -> Tensor:
        """``fn(data, context)`` evaluated on chunks of :attr:`batch_chunk_size` samples."""
        size = self.batch_chunk_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise InvalidArgumentError(
                f"expected batch_chunk_size a positive integer or None, got {size!r}"
            )
        if size is None or data.shape[0] <= size:
            return fn(data, context)
        parts = [
            fn(data[i : i + size], None if context is None else context[i : i + size])
            for i in range(0, data.shape[0], size)
        ]
        return torch.cat(parts)

    # ------------------------------------------------------------ public API
    def encode(self, x: Any, context: Any = None) -> Tensor:
        """Manifold coordinates u = g^-1(x).

        Args:
            x: ``(B, *data_dim)``.
            context: ``(B, context_dim)`` for conditional models, else ``None``.

        Returns:
            ``(B, latent_dim)``.
        """
        x = self._check_x(x)
        u = self._chunked(self._encode, x, self._check_context(context, x.shape[0]))
        return self._checked("encode", u, x)

    def decode(self, u: Any, context: Any = None) -> Tensor:
        """Points on the manifold x = g(u).

        Args:
            u: ``(B, latent_dim)``.
            context: ``(B, context_dim)`` or ``None``.

        Returns:
            ``(B, *data_dim)``.
        """
        u = self._check_u(u)
        context = self._check_context(context, u.shape[0])
        return self._unflatten(self._checked("decode", self._chunked(self._decode, u, context), u))

    def project(self, x: Any, context: Any = None) -> Tensor:
        """Projection onto the manifold x' = g(g^-1(x)); ``(B, *data_dim) -> (B, *data_dim)``."""
        x = self._check_x(x)
        context = self._check_context(context, x.shape[0])
        x_proj = self._chunked(self._project, x, context)
        return self._unflatten(self._checked("project", x_proj, x))

    def log_prob(self, x: Any, context: Any = None) -> Tensor:
        """Exact log density of x (manifold models: of its projection onto the manifold).

        Args:
            x: ``(B, *data_dim)``.
            context: ``(B, context_dim)`` or ``None``.

        Returns:
            ``(B,)``.
        """
        x = self._check_x(x)
        logp = self._chunked(self._log_prob, x, self._check_context(context, x.shape[0]))
        return self._checked("log_prob", logp, x, log_density=True)

    def latent_log_prob(self, u: Any, context: Any = None) -> Tensor:
        """log p_u(u) = log N(h^-1(u)) + log |det J_h^-1(u)| through the inner flow h.

        Args:
            u: ``(B, latent_dim)``.
            context: ``(B, context_dim)`` or ``None``.

        Returns:
            ``(B,)``.
        """
        u = self._check_u(u)
        context = self._check_context(context, u.shape[0])
        logp = self._chunked(self._latent_log_prob, u, context)
        return self._checked("latent_log_prob", logp, u, log_density=True)

    def sample(
        self, num: int, context: Any = None, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Samples x = g(h(u~)), u~ ~ N(0, I_n); reparameterised (differentiable).

        Args:
            num: number of samples.
            context: ``(context_dim,)`` (shared by all samples), ``(num, context_dim)`` or
                ``None`` for unconditional models.
            generator: optional random generator for repeatable samples.

        Returns:
            ``(num, *data_dim)``.
        """
        num = check_num_samples(num)
        context = self._check_context(context, num, allow_single=True)
        u = self._sample_latent(num, context, generator)
        return self._unflatten(
            self._checked("sample", self._chunked(self._decode, u, context), context)
        )

    def manifold_parameters(self) -> list[nn.Parameter]:
        """Parameters of the manifold (outer flow f, encoders, decoders)."""
        raise NotImplementedError

    def density_parameters(self) -> list[nn.Parameter]:
        """Parameters of the density on the manifold (inner flow h)."""
        if getattr(self, "inner", None) is None:
            return []
        return list(self.inner.parameters())

    def save(self, path: str | Path) -> None:
        """Writes ``config`` and ``state_dict`` to ``path`` (read back by :func:`load`).

        The file is written atomically (a temporary file renamed over ``path``): an interrupted
        save leaves any previous file at ``path`` intact.
        """
        if self.config is None:
            raise InvalidArgumentError(
                "this model was assembled by hand (config is None); build it with "
                "mflows.make_model to save it, or save its state_dict yourself"
            )
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        payload = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "config": self.config,
            "dtype": str(self.dtype).replace("torch.", ""),
            "state_dict": state,
        }
        atomic_torch_save(payload, Path(path))

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, data_dim={self.data_dim}, latent_dim={self.latent_dim}, "
            f"context_dim={self.context_dim}"
        )

    # ----------------------------------------------------- default internals
    def _project(self, x: Tensor, context: Tensor | None) -> Tensor:
        return self._decode(self._encode(x, context), context)

    def _latent_log_prob(self, u: Tensor, context: Tensor | None) -> Tensor:
        inner = getattr(self, "inner", None)
        if inner is None:
            return normal_log_prob(u)
        z, logabsdet = inner(u, context)
        return normal_log_prob(z) + logabsdet

    def _sample_latent(
        self, num: int, context: Tensor | None, generator: torch.Generator | None
    ) -> Tensor:
        z = torch.randn(
            num, self.latent_dim, dtype=self.dtype, device=self.device, generator=generator
        )
        inner = getattr(self, "inner", None)
        if inner is None:
            return z
        return self._chunked(lambda zi, ci: inner.inverse(zi, ci)[0], z, context)

    def _encode(self, x: Tensor, context: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _decode(self, u: Tensor, context: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        raise NotImplementedError
