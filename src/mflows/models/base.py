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

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mflows import registry
from mflows.distributions import normal_log_prob
from mflows.errors import InvalidArgumentError
from mflows.files import atomic_torch_save
from mflows.validation import as_tensor, check_context, check_num_samples

SampleShape = int | tuple[int, ...] | torch.Size | list[int]

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
        #: options of :func:`mflows.jacobians.decoder_logdet` used by ``log_prob``:
        #: ``chunk_size`` (samples per vectorised chunk), ``jacobian_chunk`` (decoder Jacobian
        #: columns, or rows in reverse mode, per block; bounds memory on images) and ``mode``;
        #: ``None`` picks a memory-bounded default (``mflows.jacobians.jacobian_plan``).
        self.jacobian_options: dict[str, Any] = {
            "chunk_size": None,
            "jacobian_chunk": None,
            "mode": "auto",
        }
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

    @property
    def standardizer(self) -> Any:
        """The :class:`~mflows.transforms.standardize.Standardize` layer that maps x to
        standardised coordinates (first layer of the outer flow), or ``None`` (image models,
        FOM, models built with ``standardize=False``)."""
        from mflows.transforms.base import CompositeTransform
        from mflows.transforms.standardize import Standardize

        outer = getattr(self, "outer", None)
        if isinstance(outer, CompositeTransform) and len(outer.transforms) > 0:
            first = outer.transforms[0]
            if isinstance(first, Standardize):
                return first
        return None

    @property
    def event_shape(self) -> torch.Size:
        """Shape of one sample x, as in ``torch.distributions``: ``data_shape``."""
        return torch.Size(self.data_shape)

    @property
    def batch_shape(self) -> torch.Size:
        """``torch.Size([])``: a model is one distribution (per context)."""
        return torch.Size()

    def _leading(self, x: Any, name: str, event: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
        """Flattens leading batch dimensions: ``(*batch, *event) -> (prod(batch), *event)``.

        Returns the (possibly reshaped) input and the batch shape. Inputs with a single leading
        dimension, and anything malformed, are returned unchanged (checked downstream).
        """
        if x is None:
            return x, ()
        t = x if isinstance(x, Tensor) else None
        if t is None:
            try:
                array = np.asarray(x)
            except Exception:  # pragma: no cover - exotic inputs, checked downstream
                return x, ()
            if array.dtype == object:
                return x, ()
            t = torch.as_tensor(array)
        k = len(event)
        if t.dim() > k + 1 and tuple(t.shape[t.dim() - k :]) == tuple(event):
            batch = tuple(t.shape[: t.dim() - k])
            return t.reshape(-1, *event), batch
        if t.dim() == k + 1:
            return t, (int(t.shape[0]),)
        return x, ()

    def _leading_context(self, context: Any, batch: tuple[int, ...]) -> Any:
        if context is None or len(batch) <= 1 or self.context_dim == 0:
            return context
        t = context if isinstance(context, Tensor) else torch.as_tensor(np.asarray(context))
        if t.dim() == len(batch) + 1 and tuple(t.shape[:-1]) == batch:
            return t.reshape(-1, t.shape[-1])
        raise InvalidArgumentError(
            f"expected context of shape ({', '.join(map(str, batch))}, {self.context_dim}) "
            f"to match the batch dimensions of the input, got {tuple(t.shape)}"
        )

    @staticmethod
    def _restore(out: Tensor, batch: tuple[int, ...]) -> Tensor:
        if len(batch) <= 1:
            return out
        return out.reshape(*batch, *out.shape[1:])

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
        if torch.compiler.is_compiling():
            return out  # a data-dependent branch would break the compiled graph
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
            x: ``(*B, *data_dim)`` (any number >= 1 of leading batch dimensions).
            context: ``(*B, context_dim)`` for conditional models, else ``None``.

        Returns:
            ``(*B, latent_dim)``.
        """
        x, batch = self._leading(x, "x", self.data_shape)
        context = self._leading_context(context, batch)
        x = self._check_x(x)
        u = self._chunked(self._encode, x, self._check_context(context, x.shape[0]))
        return self._restore(self._checked("encode", u, x), batch)

    def decode(self, u: Any, context: Any = None) -> Tensor:
        """Points on the manifold x = g(u).

        Args:
            u: ``(*B, latent_dim)``.
            context: ``(*B, context_dim)`` or ``None``.

        Returns:
            ``(*B, *data_dim)``.
        """
        u, batch = self._leading(u, "u", (self.latent_dim,))
        context = self._leading_context(context, batch)
        u = self._check_u(u)
        context = self._check_context(context, u.shape[0])
        x = self._checked("decode", self._chunked(self._decode, u, context), u)
        return self._restore(self._unflatten(x), batch)

    def project(self, x: Any, context: Any = None) -> Tensor:
        """Projection onto the manifold x' = g(g^-1(x)); ``(*B, *data_dim) -> (*B, *data_dim)``."""
        x, batch = self._leading(x, "x", self.data_shape)
        context = self._leading_context(context, batch)
        x = self._check_x(x)
        context = self._check_context(context, x.shape[0])
        x_proj = self._chunked(self._project, x, context)
        return self._restore(self._unflatten(self._checked("project", x_proj, x)), batch)

    def log_prob(self, x: Any, context: Any = None, *, jacobian_chunk: int | None = None) -> Tensor:
        """Exact log density of x (manifold models: of its projection onto the manifold).

        With standardisation (:attr:`standardizer`) this is still the density of the original
        x: the standardising layer is part of the flow and its log-Jacobian is included.

        Args:
            x: ``(*B, *data_dim)`` (any number >= 1 of leading batch dimensions).
            context: ``(*B, context_dim)`` or ``None``.
            jacobian_chunk: for models whose density needs the decoder Jacobian (M-flow,
                M_e-flow, FOM): how many of its n columns (rows, in reverse mode) are computed
                at once, for this call; peak memory grows with it, the result does not depend
                on it. ``None``: ``jacobian_options["jacobian_chunk"]``, whose default ``None``
                keeps each block to ~1M tangent entries (at most 85 columns, ~0.5 GB, for
                (3, 64, 64) images). Ignored by the other models.

        Returns:
            ``(*B,)``.
        """
        x, batch = self._leading(x, "x", self.data_shape)
        context = self._leading_context(context, batch)
        x = self._check_x(x)
        context = self._check_context(context, x.shape[0])
        with self._jacobian_chunk_override(jacobian_chunk):
            logp = self._chunked(self._log_prob, x, context)
        return self._restore(self._checked("log_prob", logp, x, log_density=True), batch)

    @contextlib.contextmanager
    def _jacobian_chunk_override(self, jacobian_chunk: int | None) -> Iterator[None]:
        """Sets ``jacobian_options["jacobian_chunk"]`` for the duration of a call."""
        if jacobian_chunk is None:
            yield
            return
        if isinstance(jacobian_chunk, bool) or not isinstance(jacobian_chunk, int):
            raise InvalidArgumentError(
                f"expected jacobian_chunk a positive integer or None, got {jacobian_chunk!r}"
            )
        if jacobian_chunk < 1:
            raise InvalidArgumentError(
                f"expected jacobian_chunk a positive integer or None, got {jacobian_chunk!r}"
            )
        previous = self.jacobian_options.get("jacobian_chunk")
        self.jacobian_options["jacobian_chunk"] = jacobian_chunk
        try:
            yield
        finally:
            self.jacobian_options["jacobian_chunk"] = previous

    def latent_log_prob(self, u: Any, context: Any = None) -> Tensor:
        """log p_u(u) = log N(h^-1(u)) + log |det J_h^-1(u)| through the inner flow h.

        Args:
            u: ``(*B, latent_dim)``.
            context: ``(*B, context_dim)`` or ``None``.

        Returns:
            ``(*B,)``.
        """
        u, batch = self._leading(u, "u", (self.latent_dim,))
        context = self._leading_context(context, batch)
        u = self._check_u(u)
        context = self._check_context(context, u.shape[0])
        logp = self._chunked(self._latent_log_prob, u, context)
        return self._restore(self._checked("latent_log_prob", logp, u, log_density=True), batch)

    def _sample_setup(
        self, sample_shape: Any, context: Any
    ) -> tuple[int, tuple[int, ...], Tensor | None]:
        """Number of draws, output batch shape and the flat ``(num, c)`` context."""
        if isinstance(sample_shape, (int, np.integer)) and not isinstance(sample_shape, bool):
            shape: tuple[int, ...] = (check_num_samples(sample_shape),)
            legacy = True
        elif isinstance(sample_shape, (tuple, list, torch.Size)):
            shape = tuple(check_num_samples(s) for s in sample_shape)
            legacy = False
        else:
            shape = (check_num_samples(sample_shape),)  # raises for anything else
            legacy = True
        count = math.prod(shape)
        if self.context_dim == 0 or context is None:
            return count, shape, self._check_context(context, count, allow_single=True)
        t = context if isinstance(context, Tensor) else torch.as_tensor(np.asarray(context))
        if t.dim() <= 1 or (legacy and t.dim() == 2):
            # (c,): shared by every sample; (num, c) with an int num: one context per sample
            return count, shape, self._check_context(t, count, allow_single=True)
        batch = tuple(t.shape[:-1])
        flat = self._check_context(t.reshape(-1, t.shape[-1]), None)
        assert flat is not None
        rows = flat.shape[0]
        flat = flat.unsqueeze(0).expand(count, rows, flat.shape[-1]).reshape(-1, flat.shape[-1])
        return count * rows, shape + batch, flat

    def sample(
        self,
        sample_shape: SampleShape = (),
        context: Any = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Samples x = g(h(u~)), u~ ~ N(0, I_n); reparameterised (differentiable).

        Args:
            sample_shape: an int ``num`` or a shape (``torch.distributions`` style).
            context: ``None`` for unconditional models; ``(context_dim,)`` (shared by all
                samples); with an int ``num`` also ``(num, context_dim)``, one context per
                sample (the original call form); with a tuple ``sample_shape`` a batch of
                contexts ``(*C, context_dim)``, giving ``(*sample_shape, *C, *data_dim)``.
            generator: optional random generator for repeatable samples.

        Returns:
            ``(*sample_shape, *data_dim)`` (``(num, *data_dim)`` for an int).
        """
        x, _ = self._sample_impl(sample_shape, context, generator, with_log_prob=False)
        return x

    def rsample(
        self,
        sample_shape: SampleShape = (),
        context: Any = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Reparameterised samples (gradients reach the parameters); same as :meth:`sample`."""
        return self.sample(sample_shape, context, generator=generator)

    def sample_and_log_prob(
        self,
        sample_shape: SampleShape = (),
        context: Any = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Samples and their log densities (as :meth:`log_prob` would give at the samples).

        Manifold models evaluate the density at the drawn latent u directly (no encoding);
        for an M_e-flow this equals ``log_prob(x)`` where the encoder inverts the decoder.

        Returns:
            ``(x, log_prob)`` with shapes ``(*S, *data_dim)`` and ``(*S,)``.
        """
        x, logp = self._sample_impl(sample_shape, context, generator, with_log_prob=True)
        assert logp is not None
        return x, logp

    def _sample_impl(
        self,
        sample_shape: Any,
        context: Any,
        generator: torch.Generator | None,
        with_log_prob: bool,
    ) -> tuple[Tensor, Tensor | None]:
        num, shape, context = self._sample_setup(sample_shape, context)
        u = self._sample_latent(num, context, generator)
        x = self._checked("sample", self._chunked(self._decode, u, context), context)
        logp = None
        if with_log_prob:
            both = torch.cat([u, x], dim=1)
            logp = self._chunked(
                lambda ux, ci: self._sample_log_prob(
                    ux[:, : self.latent_dim], ux[:, self.latent_dim :], ci
                ),
                both,
                context,
            )
            logp = logp.reshape(shape)
        return x.reshape(*shape, *self.data_shape), logp

    def _sample_log_prob(self, u: Tensor, x: Tensor, context: Tensor | None) -> Tensor:
        """log p at samples x = decode(u); default: ``_log_prob(x)``."""
        return self._log_prob(x, context)

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
