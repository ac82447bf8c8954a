"""Evaluation: metrics, MMD, MCMC inference over theta, FID, closure test, plots and reports.

:func:`score` (:mod:`mflows.evaluation.scoring`) applies the paper's evaluation protocol to a
model and a data set and returns the metrics; the command line and the benchmarks use it.

Metric functions take NumPy arrays or tensors (and callables) and return floats; the thin
wrappers that take a model or a data set use only the protocols of ``docs/interfaces.md``.
"""

from mflows.evaluation.closure import (
    closure_residuals,
    closure_score,
    closure_scores,
    dataset_closure_score,
)
from mflows.evaluation.fid import (
    INCEPTION_WEIGHTS_FILE,
    InceptionV3Features,
    compute_features,
    fid,
    find_inception_weights,
    frechet_distance,
    load_inception,
)
from mflows.evaluation.inference import (
    log_posterior_at,
    model_log_likelihood_fn,
    model_posterior_samples,
    posterior_mmd,
    sample_posterior,
    torch_threads,
    true_log_likelihood_fn,
    true_posterior_samples,
    uses_latent_shortcut,
)
from mflows.evaluation.mcmc import metropolis, slice_sample
from mflows.evaluation.metrics import (
    ModelScores,
    log_likelihood_stats,
    manifold_distance,
    manifold_distances,
    mean_reconstruction_error,
    ood_auc,
    reconstruction_error,
    reconstruction_errors,
    roc_auc,
    score_samples,
)
from mflows.evaluation.mmd import median_distance, mmd
from mflows.evaluation.plots import (
    plot_image_grid,
    plot_latent_traversal,
    plot_learned_manifold,
    plot_manifold_density,
    plot_posterior,
    plot_reconstruction_errors,
    plot_reconstructions,
    plot_samples,
    plot_training_curves,
)
from mflows.evaluation.report import write_report
from mflows.evaluation.scoring import CLIP, ScoreOptions, Scores, score, score_with_artifacts

__all__ = [
    "CLIP",
    "INCEPTION_WEIGHTS_FILE",
    "InceptionV3Features",
    "ModelScores",
    "ScoreOptions",
    "Scores",
    "closure_residuals",
    "closure_score",
    "closure_scores",
    "compute_features",
    "dataset_closure_score",
    "fid",
    "find_inception_weights",
    "frechet_distance",
    "load_inception",
    "log_likelihood_stats",
    "log_posterior_at",
    "manifold_distance",
    "manifold_distances",
    "mean_reconstruction_error",
    "median_distance",
    "metropolis",
    "mmd",
    "model_log_likelihood_fn",
    "model_posterior_samples",
    "ood_auc",
    "plot_image_grid",
    "plot_latent_traversal",
    "plot_learned_manifold",
    "plot_manifold_density",
    "plot_posterior",
    "plot_reconstruction_errors",
    "plot_reconstructions",
    "plot_samples",
    "plot_training_curves",
    "posterior_mmd",
    "reconstruction_error",
    "reconstruction_errors",
    "roc_auc",
    "sample_posterior",
    "score",
    "score_samples",
    "score_with_artifacts",
    "slice_sample",
    "torch_threads",
    "true_log_likelihood_fn",
    "true_posterior_samples",
    "uses_latent_shortcut",
    "write_report",
]
