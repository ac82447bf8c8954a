"""The one table of model kinds, training algorithms and what each kind can do.

Every decision that depends on the kind of a model outside :mod:`mflows.models.factory` reads this
table (usually through the model's attributes, e.g. ``model.exact_density``), never compares kind
strings. The module imports nothing heavy, so configuration code can use it without torch.

Capabilities (see docs/theory.md for the models):

=====================  =============================================================================
``has_manifold``       the model defines a manifold (projection / reconstruction error make sense);
                       False for the ambient flow ``af``
``exact_density``      ``log_prob`` is an exact (tractable) density; False for ``pae``
``density_on_manifold`` ``log_prob`` is a density on the model's manifold (compare it with the true
                       density on the true manifold); False: an ambient density in x
``has_encoder``        the encoder is a separate network, not the inverse of the decoder
``has_latent_density`` a density over the manifold coordinates u (the inner flow h)
``prescribed_manifold`` the manifold is given (a chart), not learned
``latent_likelihood``  with a theta-independent outer flow, ``log p(x|theta)`` differs from the
                       latent density of u = g^-1(x) by a theta-independent term (MCMC shortcut)
=====================  =============================================================================

``theta_enters_manifold`` depends on the instance (``conditional_outer``): it is a property of
the model, see :meth:`mflows.models.Model.theta_enters_manifold`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mflows.errors import InvalidArgumentError

__all__ = [
    "ALGORITHMS",
    "COMPATIBLE",
    "KINDS",
    "Capabilities",
    "algorithms_for",
    "capabilities",
    "check_algorithm",
    "check_kind",
    "kinds_with",
]


@dataclass(frozen=True)
class Capabilities:
    """What a model kind can do; see the module docstring for each field."""

    has_manifold: bool
    exact_density: bool
    density_on_manifold: bool
    has_encoder: bool
    has_latent_density: bool
    prescribed_manifold: bool
    latent_likelihood: bool

    def as_dict(self) -> dict[str, bool]:
        """The capabilities as a plain dict."""
        return asdict(self)


_CAPABILITIES: dict[str, Capabilities] = {
    "af": Capabilities(
        has_manifold=False, exact_density=True, density_on_manifold=False, has_encoder=False,
        has_latent_density=False, prescribed_manifold=False, latent_likelihood=False,
    ),
    "fom": Capabilities(
        has_manifold=True, exact_density=True, density_on_manifold=True, has_encoder=False,
        has_latent_density=True, prescribed_manifold=True, latent_likelihood=True,
    ),
    "pie": Capabilities(
        has_manifold=True, exact_density=True, density_on_manifold=False, has_encoder=False,
        has_latent_density=True, prescribed_manifold=False, latent_likelihood=True,
    ),
    "mflow": Capabilities(
        has_manifold=True, exact_density=True, density_on_manifold=True, has_encoder=False,
        has_latent_density=True, prescribed_manifold=False, latent_likelihood=True,
    ),
    "emflow": Capabilities(
        has_manifold=True, exact_density=True, density_on_manifold=True, has_encoder=True,
        has_latent_density=True, prescribed_manifold=False, latent_likelihood=True,
    ),
    "pae": Capabilities(
        has_manifold=True, exact_density=False, density_on_manifold=False, has_encoder=True,
        has_latent_density=True, prescribed_manifold=False, latent_likelihood=False,
    ),
}  # fmt: skip

#: Model kinds understood by :func:`mflows.make_model`.
KINDS: tuple[str, ...] = tuple(_CAPABILITIES)

#: Training algorithms of :func:`mflows.fit` and the model kinds each one fits.
COMPATIBLE: dict[str, tuple[str, ...]] = {
    "likelihood": ("af", "fom", "pie", "mflow", "emflow"),
    "alternating": ("mflow", "emflow", "pae"),
    "sequential": ("mflow", "emflow", "pae"),
    "pae": ("pae",),
    "ot": ("af", "fom", "pie", "mflow", "emflow", "pae"),
    "ot-alternating": ("mflow", "emflow", "pae"),
}

#: Training algorithm names.
ALGORITHMS: tuple[str, ...] = tuple(COMPATIBLE)


def check_kind(kind: str) -> str:
    """Returns ``kind`` if it is a known model kind.

    Raises:
        InvalidArgumentError: for an unknown kind (the message lists the valid ones).
    """
    if kind not in _CAPABILITIES:
        raise InvalidArgumentError(
            f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}"
        )
    return kind


def capabilities(kind: str) -> Capabilities:
    """The capabilities of a model kind."""
    return _CAPABILITIES[check_kind(kind)]


def algorithms_for(kind: str) -> tuple[str, ...]:
    """The training algorithms that fit a model kind, in table order."""
    check_kind(kind)
    return tuple(a for a, kinds in COMPATIBLE.items() if kind in kinds)


def kinds_with(**required: bool) -> tuple[str, ...]:
    """The kinds whose capabilities match every ``name=value`` given, e.g. ``has_encoder=True``."""
    unknown = set(required) - set(Capabilities.__dataclass_fields__)
    if unknown:
        raise InvalidArgumentError(f"unknown capability name(s): {', '.join(sorted(unknown))}")
    return tuple(
        k for k, c in _CAPABILITIES.items() if all(getattr(c, n) == v for n, v in required.items())
    )


def check_algorithm(algorithm: str, kind: str) -> None:
    """Checks that ``algorithm`` is known and fits a model of ``kind``.

    Raises:
        InvalidArgumentError: naming the algorithms that do fit the kind.
    """
    check_kind(kind)
    if algorithm not in COMPATIBLE:
        raise InvalidArgumentError(
            f"unknown training algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}"
        )
    if kind not in COMPATIBLE[algorithm]:
        raise InvalidArgumentError(
            f"algorithm {algorithm!r} does not fit a model of kind {kind!r}; algorithms for "
            f"{kind!r}: {', '.join(algorithms_for(kind))}"
        )
