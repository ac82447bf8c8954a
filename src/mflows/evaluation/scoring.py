"""``score(model, dataset)``: the evaluation protocol of docs/theory.md ("Evaluation") in one place.

The policy lives here and nowhere else; the command line (``mflows evaluate``) and the
benchmarks call it:

- distances and reconstruction errors are clipped at :data:`CLIP` (10) before averaging;
- which density is compared is chosen by the model's capabilities: a density on the model's
  manifold (``model.density_on_manifold``) is compared with the true density on the true manifold,
  an ambient density with the true ambient density; a model without an exact density (PAE) gets
  no likelihood metrics;
- generated samples and test points are drawn at the data set's default parameter point;
- every random draw has a fixed seed derived from ``seed`` (samples: ``seed``, test split and OOD
  points: ``seed``, observed points of the posterior: ``seed + 100``, model chain: ``seed``, true
  chain: ``seed + 1``);
- for conditional data sets with a prior, the posterior over theta is sampled by Metropolis MCMC
  on the model likelihood (and, where it is known, on the true likelihood to compute the MMD).

No file is read or written except the data set's own files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = ["CLIP", "ScoreOptions", "Scores", "score", "score_with_artifacts"]

#: clip applied to distances and reconstruction errors before averaging (as the paper did).
CLIP = 10.0


@dataclass(frozen=True)
class ScoreOptions:
    """Sample sizes, chain settings and seeds of :func:`score`.

    Attributes:
        n_test: test points for reconstruction error, log-likelihood and OOD AUC.
        n_generate: generated samples for the manifold distance (and FID).
        n_observed: i.i.d. observations at the default theta for the posterior.
        mcmc_steps: MCMC samples kept per chain (0: no posterior).
        mcmc_burn_in: MCMC burn-in steps.
        mcmc_step_size: Gaussian Metropolis step size.
        seed: seed of all evaluation randomness.
        inception_weights: local Inception weights for FID (image data only).
    """

    n_test: int = 1000
    n_generate: int = 10000
    n_observed: int = 20
    mcmc_steps: int = 5000
    mcmc_burn_in: int = 100
    mcmc_step_size: float = 0.15
    seed: int = 1
    inception_weights: str | None = None


class Scores(NamedTuple):
    """Metrics (plain floats / strings) and the arrays they were computed from (for plots)."""

    metrics: dict[str, Any]
    artifacts: dict[str, Any]


def is_image(dataset: Any) -> bool:
    """Whether the data set holds images (``data_dim`` a ``(C, H, W)`` tuple)."""
    return isinstance(dataset.data_dim, tuple)


def default_context(dataset: Any) -> np.ndarray | None:
    """The data set's default parameter point as a ``(p,)`` float32 array (None: unconditional)."""
    if not dataset.parameter_dim:
        return None
    return np.asarray(dataset.default_theta, dtype=np.float32).reshape(-1)


def draw_samples(
    model: Any, num: int, context: np.ndarray | None, batch_size: int = 2000
) -> np.ndarray:
    """``num`` samples of ``model`` (context ``(p,)`` shared by all) in batches, NumPy."""
    import torch

    from mflows.evaluation.metrics import model_dtype_device

    _, device = model_dtype_device(model)
    chunks = []
    with torch.no_grad():
        for start in range(0, num, batch_size):
            k = min(batch_size, num - start)
            ctx = None if context is None else torch.as_tensor(context, device=device)
            chunks.append(model.sample(k, context=ctx).detach().cpu().numpy())
    return np.concatenate(chunks, axis=0)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def score(model: Any, dataset: Any, options: ScoreOptions | None = None, **kwargs: Any) -> dict:
    """Scores a trained model on a data set with ground truth; returns the metrics.

    Metrics (when the data set and the model provide what they need):

    - ``manifold_distance``: mean of min(distance to the true manifold, 10) over
      ``n_generate`` generated samples; ``closure`` for data sets with closure tests;
    - ``reconstruction_error``: mean of min(|x - project(x)|, 10) over ``n_test`` test points;
    - ``log_likelihood`` (and ``nll_bits_per_dim``), ``true_log_likelihood``,
      ``log_likelihood_mae`` and ``log_likelihood_reference`` (which true density);
    - ``ood_auc`` (and ``ood_auc_log_likelihood`` / ``ood_auc_reconstruction``);
    - ``log_posterior_true_theta`` and ``posterior_mmd`` (MCMC over theta);
    - ``fid`` for images (simulated images with exact truth: only when Inception weights are
      found); for simulated images also ``fid_offline`` and ``kid_offline`` on fixed random
      conv features (:func:`mflows.evaluation.fid.offline_scores`), with ``*_reference`` for
      true images;
    - ``latent_mmd`` (and ``latent_mmd_reference``) for data sets that give the latent
      parameters of any image (``latent_of``): MMD between those of the generated samples and
      true latent samples. Such sets may set ``distance_clip``, the clip of the manifold
      distance and reconstruction error on their scale (default 10).

    Args:
        model: a trained mflows model (eval mode).
        dataset: an :mod:`mflows.data` data set.
        options: sample sizes, chains and seeds; keyword arguments override its fields.

    Returns:
        A dict of plain values (non-finite floats as ``None``).
    """
    return score_with_artifacts(model, dataset, options, **kwargs).metrics


def score_with_artifacts(
    model: Any,
    dataset: Any,
    options: ScoreOptions | None = None,
    *,
    device: str | None = None,
    progress: bool = False,
    **overrides: Any,
) -> Scores:
    """:func:`score`, also returning the arrays behind the metrics (samples, test points, ...)."""
    import dataclasses

    import torch

    from mflows.evaluation import metrics as M

    opts = dataclasses.replace(options or ScoreOptions(), **overrides)
    results: dict[str, Any] = {}
    artifacts: dict[str, Any] = {}
    context = default_context(dataset)
    artifacts["context"] = context

    # Generated samples ---------------------------------------------------------------------
    torch.manual_seed(opts.seed)
    samples = draw_samples(model, opts.n_generate, context)
    artifacts["samples"] = samples
    results["nonfinite_samples"] = int(
        (~np.isfinite(samples.reshape(len(samples), -1))).any(1).sum()
    )
    clip = getattr(dataset, "distance_clip", CLIP)  # image sets: a clip on their pixel scale
    if dataset.has_truth.get("distance_to_manifold", False):
        results["manifold_distance"] = M.manifold_distance(samples, dataset, clip=clip)
    if hasattr(dataset, "latent_of"):
        results.update(M.latent_mmd(samples, dataset, context, seed=opts.seed))
    if hasattr(dataset, "closure_tests"):
        from mflows.evaluation.closure import dataset_closure_score

        results["closure"] = dataset_closure_score(samples, dataset)

    # Test points: reconstruction, likelihood ------------------------------------------------
    test = dataset.load("test", n=opts.n_test, seed=opts.seed)
    scores = M.score_samples(model, test.x, context=test.theta)
    artifacts["test"] = test.x
    if scores.reconstruction_error is not None:
        results["reconstruction_error"] = float(
            np.mean(np.minimum(scores.reconstruction_error, clip))
        )
        artifacts["reconstruction_errors"] = scores.reconstruction_error
    if scores.log_prob is not None:
        true_logp = _true_log_density(model, dataset, test, results)
        stats = M.log_likelihood_stats(scores.log_prob, true_logp)
        d = int(np.prod(dataset.data_dim))
        results["log_likelihood"] = stats["mean"]
        results["nll_bits_per_dim"] = -stats["mean"] / (d * math.log(2.0))
        if "true_mean" in stats:
            results["true_log_likelihood"] = stats["true_mean"]
            results["log_likelihood_mae"] = stats["mean_abs_error"]
        artifacts["log_prob"] = scores.log_prob

    if is_image(dataset) and _fid_applies(dataset, opts):
        from mflows.evaluation import fid

        results["fid"] = fid(samples, test.x, weights=opts.inception_weights, device=device)
    if is_image(dataset) and hasattr(dataset, "latent_of"):
        results.update(_offline_fid(dataset, samples, test.x, context, opts.seed))

    # OOD detection ---------------------------------------------------------------------------
    if dataset.has_truth.get("sample_ood", False):
        _ood(model, dataset, opts, context, scores, results, artifacts)

    # Posterior over theta ------------------------------------------------------------------
    if (
        dataset.parameter_dim
        and scores.log_prob is not None
        and dataset.has_truth.get("log_prior", False)
        and opts.mcmc_steps > 0
    ):
        posterior = _posterior(model, dataset, opts, progress=progress)
        results.update(posterior.pop("metrics"))
        artifacts.update(posterior)
    return Scores({k: _finite(v) for k, v in results.items()}, artifacts)


def _fid_applies(dataset: Any, opts: ScoreOptions) -> bool:
    """FID for image sets; for simulated images with exact truth only when weights are found."""
    if not hasattr(dataset, "latent_of"):
        return True
    from mflows.evaluation.fid import find_inception_weights

    try:
        find_inception_weights(opts.inception_weights)
    except FileNotFoundError:
        return False
    return True


def _offline_fid(dataset: Any, samples: Any, test_x: Any, context: Any, seed: int) -> dict:
    """FID / KID on fixed random conv features (``fid_offline``, ``kid_offline``) of the finite
    samples against the test images; ``*_reference``: the same for as many true images."""
    from mflows.evaluation.fid import offline_features, offline_scores_of_features

    finite = samples[np.isfinite(samples.reshape(len(samples), -1)).all(axis=1)]
    if len(finite) < 2:
        return {}
    reference = dataset.sample(len(samples), theta=context, seed=seed + 2)
    test, generated, true = offline_features(test_x, finite, reference)
    return {
        **offline_scores_of_features(generated, test),
        **{f"{k}_reference": v for k, v in offline_scores_of_features(true, test).items()},
    }


def _true_log_density(model: Any, dataset: Any, test: Any, results: dict[str, Any]) -> Any:
    """The true log density to compare with: on the manifold or ambient, by capability."""
    if getattr(model, "density_on_manifold", False):
        if hasattr(dataset, "log_density_on_manifold"):
            results["log_likelihood_reference"] = "true density on the manifold"
            return dataset.log_density_on_manifold(test.x, test.theta)
        return None
    if not getattr(dataset, "ambient_density_known", True):  # truth only on the manifold
        return None
    if dataset.has_truth.get("log_density", False):
        results["log_likelihood_reference"] = "true ambient density"
        return dataset.log_density(test.x, test.theta)
    return None


def _ood(model, dataset, opts, context, scores, results, artifacts) -> None:
    from mflows.evaluation import metrics as M

    ood = dataset.sample_ood(opts.n_test, seed=opts.seed)
    ood_context = None if context is None else np.broadcast_to(context, (len(ood), len(context)))
    ood_scores = M.score_samples(model, ood, context=ood_context)
    if ood_scores.reconstruction_error is not None:
        artifacts["reconstruction_errors_ood"] = ood_scores.reconstruction_error
    kwargs: dict[str, Any] = {}
    if scores.log_prob is not None and ood_scores.log_prob is not None:
        kwargs.update(log_prob_in=scores.log_prob, log_prob_out=ood_scores.log_prob)
    if scores.reconstruction_error is not None:
        kwargs.update(
            recon_in=scores.reconstruction_error, recon_out=ood_scores.reconstruction_error
        )
    if kwargs:
        auc = M.ood_auc(**kwargs)
        results["ood_auc"] = auc["auc"]
        for key in ("auc_log_likelihood", "auc_reconstruction"):
            if key in auc:
                results[f"ood_{key}"] = auc[key]


def _posterior(model: Any, dataset: Any, opts: ScoreOptions, *, progress: bool) -> dict:
    """Posterior over theta from ``n_observed`` observations at the default theta.

    The model chain gives ``log_posterior_true_theta`` (Gaussian KDE at theta*, bandwidth 0.15);
    where the true likelihood is known, a second chain on it gives ``posterior_mmd``.
    """
    from mflows.evaluation import inference

    theta_true = np.asarray(dataset.default_theta, dtype=np.float64).reshape(-1)
    if dataset.has_truth.get("sample", False):
        observed = dataset.sample(opts.n_observed, theta=theta_true, seed=opts.seed + 100)
    else:  # file-backed: the test split is at the default theta
        observed = dataset.load("test", n=opts.n_observed, seed=opts.seed + 100).x
    common = {
        "num_samples": opts.mcmc_steps,
        "burn_in": opts.mcmc_burn_in,
        "step": opts.mcmc_step_size,
        "progress": progress,
    }
    model_chain = inference.model_posterior_samples(
        model, observed, dataset.log_prior, theta_true, seed=opts.seed, **common
    )
    result: dict[str, Any] = {
        "metrics": {
            "log_posterior_true_theta": inference.log_posterior_at(model_chain, theta_true)
        },
        "posterior_model": model_chain,
        "posterior_true": None,
        "theta_true": theta_true,
    }
    if dataset.has_truth.get("log_density", False):
        true_chain = inference.true_posterior_samples(
            dataset, observed, theta0=theta_true, seed=opts.seed + 1, **common
        )
        result["metrics"]["posterior_mmd"] = inference.posterior_mmd(model_chain, true_chain)
        result["posterior_true"] = true_chain
    return result
