"""M-flow likelihood estimators for the sbi package (optional: ``pip install 'mflows[sbi]'``).

``likelihood_estimator("mflow", latent_dim=2)`` returns a builder that sbi's neural likelihood
estimation (NLE) accepts as its ``density_estimator``::

    from sbi.inference import NLE
    import mflows.sbi

    inference = NLE(prior, density_estimator=mflows.sbi.likelihood_estimator("mflow", latent_dim=2))
    inference.append_simulations(theta, x).train()
    posterior = inference.build_posterior()
    samples = posterior.sample((1000,), x=x_observed)

In NLE the estimator's *input* is the simulator output x and its *condition* is theta. The
estimator is a conditional M-flow (or M_e-flow) whose manifold does not depend on theta
(``conditional_outer=False``); theta enters the inner flow h only. sbi's own trainer minimises
:meth:`loss`, which is the M/D scheme in one step: the reconstruction error (in standardised
coordinates) for the manifold parameters plus the latent negative log-likelihood
``-log p_u(u | theta)`` with a stop-gradient on u for the density parameters; the two terms touch
disjoint parameters.

``log_prob(x, theta)`` is the exact M-flow density on the manifold,
``log p_u(u | theta) - 1/2 log det(J_g^T J_g)`` at u = g^-1(x). For the posterior only
``log p(x | theta)`` up to theta-independent terms matters; with a theta-independent manifold
the Jacobian term does not depend on theta and cancels from posterior ratios. It is still
included (computed once per distinct x and cached while the parameters do not change), so that
``log_prob`` is a proper density.

The data x are standardised inside the model (mean / standard deviation of the training
simulations, set when sbi builds the estimator), theta is z-scored likewise; both are saved with
the estimator. See docs/guide.md, "Simulation-based inference with sbi".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from mflows.errors import InvalidArgumentError

__all__ = ["DEFAULT_ARCHITECTURE", "SBI_KINDS", "likelihood_estimator"]

#: defaults that differ from :func:`mflows.make_model`'s: LU layers between the couplings of the
#: outer flow learn the (rotated) orientation of the manifold far faster than permutations.
DEFAULT_ARCHITECTURE: dict[str, Any] = {"linear": "lu"}

#: the kinds that can serve as sbi likelihood estimators (exact density, encoder, decoder).
SBI_KINDS = ("mflow", "emflow")


def _require_sbi() -> Any:
    try:
        import sbi  # noqa: F401
        from sbi.neural_nets.estimators.base import ConditionalDensityEstimator
    except ImportError as error:
        raise ImportError(
            "mflows.sbi needs the sbi package: pip install 'mflows[sbi]' (or pip install sbi)"
        ) from error
    return ConditionalDensityEstimator


@functools.cache
def _estimator_class() -> type:
    base = _require_sbi()

    class MflowsLikelihoodEstimator(base):  # type: ignore[misc, valid-type]
        """An mflows manifold model as an sbi ``ConditionalDensityEstimator`` (module docstring).

        Args:
            model: a conditional ``mflow`` / ``emflow`` with ``conditional_outer=False``.
            theta_shift: z-scoring shift of theta, ``(p,)``.
            theta_scale: z-scoring scale of theta, ``(p,)``.
            reconstruction_weight: weight of the reconstruction error in :meth:`loss`.
        """

        def __init__(
            self,
            model: Any,
            theta_shift: Tensor,
            theta_scale: Tensor,
            reconstruction_weight: float = 1.0,
        ):
            super().__init__(
                net=model,
                input_shape=torch.Size([model.data_size]),
                condition_shape=torch.Size([model.context_dim]),
            )
            self.register_buffer("theta_shift", theta_shift.clone())
            self.register_buffer("theta_scale", theta_scale.clone())
            self.reconstruction_weight = float(reconstruction_weight)
            self._volume_cache: tuple[Any, Tensor, Tensor] | None = None

        @property
        def model(self) -> Any:
            """The mflows model."""
            return self.net

        def _theta(self, condition: Tensor) -> Tensor:
            flat = condition.reshape(-1, self.model.context_dim).to(self.model.dtype)
            return (flat - self.theta_shift) / self.theta_scale

        def _x(self, x: Tensor) -> Tensor:
            return x.reshape(-1, self.model.data_size).to(self.model.dtype)

        def loss(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
            """Per-sample M/D loss ``w * |z(x) - z(x')|^2 - log p_u(stop_grad(u) | theta)``.

            z(.) are the standardised coordinates and x' the projection of x. Returns
            ``(batch,)``.
            """
            model = self.model
            x, theta = self._x(input), self._theta(condition)
            u = model._encode(x, theta)
            x_proj = model._decode(u, theta)
            standardizer = model.standardizer
            diff = x - x_proj
            if standardizer is not None:
                diff = diff / standardizer.scale
            mse = diff.square().sum(-1)
            nll = -model._latent_log_prob(u.detach(), theta)
            return self.reconstruction_weight * mse + nll

        def _volume(self, x: Tensor) -> Tensor:
            """-1/2 log det(J_g^T J_g) at g^-1(x) for ``(N, d)`` x, once per distinct row."""
            from mflows.models.mflow import _volume_logdet

            model = self.model
            rows, inverse = torch.unique(x.detach(), dim=0, return_inverse=True)
            key = tuple(p._version for p in model.parameters())
            cache = self._volume_cache
            cacheable = not torch.is_grad_enabled()
            if (
                cacheable
                and cache is not None
                and cache[0] == key
                and cache[1].shape == rows.shape
                and torch.equal(cache[1], rows)
            ):
                volume = cache[2]
            else:
                u = model._encode(rows, None)
                volume = -0.5 * _volume_logdet(model, model._decode, u, None)
                if cacheable:
                    self._volume_cache = (key, rows, volume)
            return volume[inverse]

        def log_prob(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
            """Exact log p(x | theta) on the manifold; ``(sample, batch)`` as sbi expects."""
            self._check_condition_shape(condition)
            self._check_input_shape(input)
            x, theta, _ = self._broadcast_and_align(input, condition)
            shape = x.shape[:-1]
            flat_x, flat_theta = self._x(x), self._theta(theta)
            u = self.model._encode(flat_x, flat_theta)
            logp = self.model._latent_log_prob(u, flat_theta) + self._volume(flat_x)
            return logp.reshape(shape)

        def sample(self, sample_shape: torch.Size, condition: Tensor, **kwargs: Any) -> Tensor:
            """Samples ``(*sample_shape, batch, d)`` for conditions ``(batch, p)``."""
            self._check_condition_shape(condition)
            batch = condition.shape[:-1]
            theta = self._theta(condition).reshape(*batch, -1)
            return self.model.sample(tuple(sample_shape), theta)

        def sample_and_log_prob(
            self, sample_shape: torch.Size, condition: Tensor, **kwargs: Any
        ) -> tuple[Tensor, Tensor]:
            """Samples and their exact log densities (no re-encoding)."""
            self._check_condition_shape(condition)
            batch = condition.shape[:-1]
            theta = self._theta(condition).reshape(*batch, -1)
            return self.model.sample_and_log_prob(tuple(sample_shape), theta)

    return MflowsLikelihoodEstimator


def likelihood_estimator(
    kind: str = "mflow",
    latent_dim: int = 2,
    *,
    reconstruction_weight: float = 1.0,
    z_score_theta: bool = True,
    standardize: bool = True,
    **architecture: Any,
) -> Callable[[Tensor, Tensor], Any]:
    """A builder for sbi's NLE: ``builder(theta, x)`` returns a fresh estimator.

    Args:
        kind: ``"mflow"`` (default) or ``"emflow"``.
        latent_dim: manifold dimension n (< dimension of x).
        reconstruction_weight: weight of the reconstruction error in the training loss.
        z_score_theta: z-score theta with the training simulations' mean and std.
        standardize: standardise x inside the model (its first layer; statistics of the
            training simulations).
        **architecture: further options of :func:`mflows.make_model` (``conditional_outer`` is
            fixed to False: the manifold does not depend on theta; ``linear`` defaults to
            ``"lu"``, :data:`DEFAULT_ARCHITECTURE`).

    Returns:
        The builder, to pass as ``density_estimator`` to ``sbi.inference.NLE``.

    Raises:
        ImportError: sbi is not installed.
        InvalidArgumentError: a kind other than mflow / emflow, or ``conditional_outer=True``.
    """
    _require_sbi()
    if kind not in SBI_KINDS:
        raise InvalidArgumentError(
            f"likelihood_estimator supports kinds {', '.join(SBI_KINDS)}, got {kind!r}"
        )
    if architecture.get("conditional_outer", False):
        raise InvalidArgumentError(
            "likelihood_estimator builds theta-independent manifolds: conditional_outer must be "
            "False"
        )
    architecture = {
        **DEFAULT_ARCHITECTURE,
        **architecture,
        "conditional_outer": False,
        "standardize": standardize,
    }

    def build(theta: Tensor, x: Tensor) -> Any:
        from mflows.models import make_model
        from mflows.transforms.standardize import data_statistics

        theta = torch.as_tensor(theta).reshape(len(theta), -1)
        x = torch.as_tensor(x).reshape(len(x), -1)
        model = make_model(kind, x.shape[1], latent_dim, theta.shape[1], **architecture)
        if standardize and model.standardizer is not None:
            model.standardizer.set_statistics(x)
        if z_score_theta:
            shift, scale = data_statistics(theta)
        else:
            shift, scale = torch.zeros(theta.shape[1]), torch.ones(theta.shape[1])
        dtype = model.dtype
        return _estimator_class()(model, shift.to(dtype), scale.to(dtype), reconstruction_weight)

    return build
