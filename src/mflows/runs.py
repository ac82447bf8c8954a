"""Run directories: train, evaluate and sample a configured experiment.

A run directory holds everything about one experiment::

    run_dir/
      config.json     the resolved RunConfig (written first)
      model.pt        the trained model (``mflows.load``); written last, atomically
      history.csv     loss curves
      metrics.json    written by evaluate_run
      plots/*.png     written by evaluate_run
      report.html     written by evaluate_run (embeds every plot)

Files are written to a temporary name and renamed, so a failed or interrupted step never leaves a
half-written final file: in particular a failed :func:`train_run` leaves no ``model.pt``.

This module is library-level orchestration used by the CLI; it imports the data, model, training
and evaluation packages lazily so that ``mflows --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mflows.config import (
    ConfigError,
    DataConfig,
    EvaluationConfig,
    ModelConfig,
    RunConfig,
    TrainingConfig,
    apply_overrides,
    load_config,
    save_config,
)
from mflows.errors import RunError

__all__ = [
    "CONFIG_FILE",
    "HISTORY_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "REPORT_FILE",
    "DemoResult",
    "LoadedRun",
    "RunError",
    "build_model",
    "dataset_names",
    "demo_config",
    "describe_dataset",
    "evaluate_run",
    "fit_options",
    "format_metrics",
    "get_dataset",
    "load_run",
    "model_architecture",
    "run_demo",
    "sample_run",
    "save_array",
    "train_run",
]

CONFIG_FILE = "config.json"
MODEL_FILE = "model.pt"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
PLOTS_DIR = "plots"


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_array(array: np.ndarray, path: str | Path) -> Path:
    """``numpy.save`` to ``path`` through a temporary file (``.npy`` appended if missing)."""
    path = Path(path)
    if path.suffix != ".npy":
        path = path.with_name(path.name + ".npy")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, np.asarray(array))
    os.replace(tmp, path)
    return path


def _device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise RunError("device 'cuda' requested but CUDA is not available; use --device cpu")
    return torch.device(name)


# --------------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------------


def dataset_names() -> list[str]:
    """Names of the registered data sets."""
    from mflows import data

    return list(data.names())


def _check_dataset_name(name: str) -> None:
    names = dataset_names()
    if name not in names:
        raise RunError(f"unknown data set {name!r}; valid data sets: {', '.join(names)}")


def get_dataset(config: DataConfig):
    """Instantiate the data set of ``config`` (options that are ``None`` are left out).

    Raises:
        RunError: for an unknown name or options the data set does not take.
    """
    from mflows import data

    _check_dataset_name(config.name)
    options = config.options()
    try:
        return data.get(config.name, **options)
    except (TypeError, ValueError) as error:
        raise RunError(f"data set {config.name!r} with options {options}: {error}") from None
    except (FileNotFoundError, OSError, RuntimeError) as error:
        raise RunError(f"data set {config.name!r}: {error}") from None


def describe_dataset(name: str, data_dir: str | None = None) -> str:
    """Human-readable description of a data set (``mflows data describe``)."""
    return get_dataset(DataConfig(name=name, data_dir=data_dir)).describe()


def _load_split(dataset, split: str, n: int | None, seed: int):
    try:
        return dataset.load(split, n=n, seed=seed)
    except (FileNotFoundError, OSError, RuntimeError) as error:
        # RuntimeError covers mflows.data.DataNotAvailableError (missing / corrupt files)
        raise RunError(f"cannot load the {split} split of {dataset.name}: {error}") from None


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def _model_latent_dim(config: ModelConfig, dataset) -> int:
    d = int(np.prod(dataset.data_dim))
    if config.kind == "af":
        return d
    n = config.latent_dim if config.latent_dim is not None else dataset.latent_dim
    if n is None:
        raise ConfigError(
            f"data set {dataset.name} has no known manifold dimension: set model.latent_dim "
            "(--modellatentdim)"
        )
    if not 0 < n < d:
        raise ConfigError(f"model.latent_dim must be in [1, {d - 1}] for {dataset.name}, got {n}")
    return int(n)


def model_architecture(config: ModelConfig, dataset, seed: int | None = None) -> dict[str, Any]:
    """Keyword arguments of :func:`mflows.models.make_model` for ``config`` and ``dataset``.

    Only the options the model kind accepts (``mflows.models.ARCHITECTURE_KEYS``) are passed.
    """
    from mflows.models import ARCHITECTURE_KEYS

    fields = dataclasses.asdict(config)
    arch = {k: fields[k] for k in ARCHITECTURE_KEYS[config.kind] if k in fields}
    if "seed" in ARCHITECTURE_KEYS[config.kind]:
        arch["seed"] = seed
    if config.kind == "fom":
        chart = config.chart
        if chart is None:
            if not dataset.name.endswith("spherical_gaussian"):
                raise ConfigError(
                    f"FOM (--specified) needs a prescribed chart; mflows provides the sphere "
                    f"chart for the spherical data sets, not for {dataset.name}"
                )
            chart = "sphere"
        arch["chart"] = chart
    return arch


def build_model(config: RunConfig, dataset):
    """Build the (untrained) model of ``config`` for ``dataset``."""
    import torch

    from mflows.models import make_model

    torch.manual_seed(config.training.seed)
    latent_dim = _model_latent_dim(config.model, dataset)
    context_dim = int(dataset.parameter_dim or 0)
    arch = model_architecture(config.model, dataset, seed=config.training.seed)
    try:
        model = make_model(
            config.model.kind, dataset.data_dim, latent_dim, context_dim=context_dim, **arch
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"cannot build model {config.model.kind!r}: {error}") from None
    return model.to(_device(config.device))


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def fit_options(config: TrainingConfig) -> dict[str, Any]:
    """Keyword arguments of :func:`mflows.training.fit` for ``config``."""
    options = dataclasses.asdict(config)
    scandal = options.pop("scandal")
    options["scandal"] = scandal is not None
    options["scandal_weight"] = 1.0 if scandal is None else float(scandal)
    return options


def _write_history(history: Any, path: Path) -> None:
    if hasattr(history, "to_csv"):
        tmp = path.with_name(f".{path.name}.tmp")
        history.to_csv(tmp)
        os.replace(tmp, path)
        return
    rows = list(getattr(history, "rows", history) or [])
    if not rows:
        _atomic_write_text(path, "")
        return
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = [",".join(keys)]
    lines += [",".join(str(row.get(k, "")) for k in keys) for row in rows]
    _atomic_write_text(path, "\n".join(lines) + "\n")


def train_run(
    config: RunConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Build the data set and model of ``config``, train it and save the run.

    Writes ``config.json`` first, then trains with per-epoch checkpoints in
    ``checkpoints/`` (rerunning the same command after an interruption resumes from them), then
    writes ``history.csv`` and finally ``model.pt``, each through a temporary file and a rename.

    Args:
        config: the resolved configuration.
        out_dir: run directory; created if needed.
        progress: show a progress bar.
        overwrite: replace an existing run (trained or interrupted) in ``out_dir``.

    Returns:
        The run directory.

    Raises:
        RunError: if ``out_dir`` already holds a model and ``overwrite`` is False, if an
            interrupted run there has a different configuration, or the data cannot be loaded.
        ConfigError: if the configuration does not fit the data set.
    """
    from mflows import training

    config.validate()
    out = Path(out_dir)
    if (out / MODEL_FILE).exists() and not overwrite:
        raise RunError(f"{out} already holds a trained model; pass --overwrite or pick a new --out")
    dataset = get_dataset(config.data)
    batch = _load_split(dataset, "train", config.data.n_train, config.data.seed)
    if config.training.scandal is not None and batch.scores is None:
        raise ConfigError(
            f"training.scandal needs joint scores, which data set {dataset.name} does not provide"
        )
    model = build_model(config, dataset)

    checkpoints = out / "checkpoints"
    if overwrite:
        shutil.rmtree(checkpoints, ignore_errors=True)
    elif (out / CONFIG_FILE).is_file() and checkpoints.is_dir():
        previous = load_config(out / CONFIG_FILE)
        if previous != config:
            raise RunError(
                f"{out} holds an interrupted run with a different configuration; pass "
                "--overwrite to start afresh or rerun with the same settings to resume"
            )
    out.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_FILE, METRICS_FILE, REPORT_FILE):
        (out / name).unlink(missing_ok=True)
    save_config(config, out / CONFIG_FILE)

    options = fit_options(config.training)
    scores = batch.scores if config.training.scandal is not None else None
    start = time.perf_counter()
    try:
        history = training.fit(
            model,
            batch.x,
            context=batch.theta,
            scores=scores,
            progress=progress,
            checkpoint_dir=checkpoints,
            resume=True,
            device=config.device,
            **options,
        )
    except ValueError as error:
        if "cannot resume" in str(error):
            raise RunError(f"{error}; pass --overwrite to start afresh") from None
        raise ConfigError(f"training cannot start: {error}") from None
    elapsed = time.perf_counter() - start

    _write_history(history, out / HISTORY_FILE)
    tmp = out / f".{MODEL_FILE}.tmp"
    model.save(tmp)
    os.replace(tmp, out / MODEL_FILE)
    info = {
        "training_seconds": elapsed,
        "n_train": int(batch.x.shape[0]),
        "best_epoch": getattr(history, "best_epoch", None),
    }
    _atomic_write_text(out / "train_info.json", json.dumps(info, indent=2) + "\n")
    shutil.rmtree(checkpoints, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------
# Loading runs
# --------------------------------------------------------------------------------------------


class LoadedRun(NamedTuple):
    """A trained run: its resolved configuration, model and data set."""

    config: RunConfig
    model: Any
    dataset: Any
    run_dir: Path


def _run_config(run_dir: Path, overrides: Iterable[str], device: str | None) -> RunConfig:
    """The saved configuration of a run (with overrides), after checking the run is complete."""
    if not run_dir.is_dir():
        raise RunError(f"run directory {str(run_dir)!r} does not exist")
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError(f"{run_dir} is not a run directory (no {CONFIG_FILE}); train one first")
    if not (run_dir / MODEL_FILE).is_file():
        raise RunError(
            f"{run_dir} has no checkpoint ({MODEL_FILE}); training did not finish - rerun "
            "`mflows train`"
        )
    config = apply_overrides(load_config(run_dir / CONFIG_FILE), overrides)
    if device is not None:
        config = dataclasses.replace(config, device=device)
    return config.validate()


def _load_model(run_dir: Path, config: RunConfig):
    from mflows.models import load

    try:
        model = load(run_dir / MODEL_FILE)
    except (ValueError, RuntimeError, OSError, EOFError) as error:
        raise RunError(f"cannot read the checkpoint {run_dir / MODEL_FILE}: {error}") from None
    model = model.to(_device(config.device))
    model.eval()
    return model


def load_run(
    run_dir: str | Path, overrides: Iterable[str] = (), device: str | None = None
) -> LoadedRun:
    """Load the configuration, trained model and data set of a run directory.

    Raises:
        RunError: if the directory or its ``model.pt`` is missing or unreadable.
    """
    run_dir = Path(run_dir)
    config = _run_config(run_dir, overrides, device)
    dataset = get_dataset(config.data)
    return LoadedRun(config, _load_model(run_dir, config), dataset, run_dir)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _context_for(dataset, theta: Sequence[float] | np.ndarray | None) -> np.ndarray | None:
    if not dataset.parameter_dim:
        if theta is not None:
            raise RunError(f"data set {dataset.name} is unconditional: do not pass --theta")
        return None
    value = dataset.default_theta if theta is None else theta
    value = np.asarray(value, dtype=np.float32).reshape(-1)
    if value.shape != (dataset.parameter_dim,):
        raise RunError(
            f"--theta needs {dataset.parameter_dim} value(s) for {dataset.name}, got {value.size}"
        )
    return value


def _sample(model, num: int, context: np.ndarray | None, batch_size: int = 2000) -> np.ndarray:
    import torch

    chunks = []
    with torch.no_grad():
        for start in range(0, num, batch_size):
            k = min(batch_size, num - start)
            ctx = None if context is None else torch.as_tensor(context)
            chunks.append(model.sample(k, context=ctx).detach().cpu().numpy())
    return np.concatenate(chunks, axis=0)


def sample_run(
    run_dir: str | Path,
    n: int,
    *,
    theta: Sequence[float] | np.ndarray | None = None,
    seed: int | None = 0,
    device: str | None = None,
    overrides: Iterable[str] = (),
) -> np.ndarray:
    """Draw ``n`` samples from the model of a run, ``(n, *data_dim)`` float32.

    Conditional models sample at ``theta`` (default: the data set's ``default_theta``).
    """
    import torch

    if n <= 0:
        raise RunError(f"number of samples must be positive, got {n}")
    run = load_run(run_dir, overrides, device=device)
    context = _context_for(run.dataset, theta)
    if seed is not None:
        torch.manual_seed(seed)
    return _sample(run.model, n, context).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def _is_image(dataset) -> bool:
    return isinstance(dataset.data_dim, tuple)


#: Model kinds whose ``log_prob`` is a density on a (learned or prescribed) manifold.
MANIFOLD_DENSITY_KINDS = ("mflow", "emflow", "fom")


def _try(fn, *args, **kwargs):
    """Call ``fn``; ``None`` if the data set / model does not provide it."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        return None


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def evaluate_run(
    run_dir: str | Path,
    *,
    overrides: Iterable[str] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Compute the SPEC §7 metrics available for a run; write metrics.json, plots, report.

    Metrics (when the data set and model provide what they need):

    - ``manifold_distance``: mean of min(distance to the true manifold, 10) over
      ``n_generate`` generated samples;
    - ``reconstruction_error``: mean of min(|x - x'|, 10) over ``n_test`` test points;
    - ``log_likelihood``: mean model log-likelihood of test points (``nll_bits_per_dim`` the
      corresponding NLL in bits per dimension), ``true_log_likelihood`` and
      ``log_likelihood_mae`` against the true density;
    - ``ood_auc`` (and ``ood_auc_log_likelihood`` / ``ood_auc_reconstruction``);
    - ``posterior_mmd`` and ``log_posterior_true_theta``: Metropolis chains on the model and the
      true likelihood of ``n_observed`` observations at the default theta;
    - ``closure`` for lhc40d, ``fid`` for images.

    Raises:
        RunError: for a missing checkpoint or, for image data, missing Inception weights.
    """
    from mflows.evaluation import metrics as M

    run_dir = Path(run_dir)
    config = _run_config(run_dir, overrides, None)
    dataset = get_dataset(config.data)
    ev: EvaluationConfig = config.evaluation
    if _is_image(dataset):  # check before any expensive work
        from mflows.evaluation.fid import find_inception_weights  # the lookup FID itself uses

        try:
            find_inception_weights(ev.inception_weights)
        except FileNotFoundError as error:
            raise RunError(f"{error} (command line: --inception-weights FILE)") from None
    model = _load_model(run_dir, config)
    run = LoadedRun(config, model, dataset, run_dir)

    results: dict[str, Any] = {
        "dataset": dataset.name,
        "model": config.model.kind,
        "algorithm": config.training.algorithm,
    }
    artifacts: dict[str, Any] = {}
    context = _context_for(dataset, None)
    artifacts["context"] = context

    # Generated samples ---------------------------------------------------------------------
    import torch

    torch.manual_seed(ev.seed)
    samples = _sample(model, ev.n_generate, context)
    artifacts["samples"] = samples
    if dataset.has_truth.get("distance_to_manifold", False):
        results["manifold_distance"] = M.manifold_distance(samples, dataset)
    if hasattr(dataset, "closure_tests"):
        from mflows.evaluation.closure import dataset_closure_score

        results["closure"] = dataset_closure_score(samples, dataset)

    # Test points: reconstruction, likelihood ------------------------------------------------
    test = _load_split(dataset, "test", ev.n_test, ev.seed)
    scores = M.score_samples(model, test.x, context=test.theta)
    artifacts["test"] = test.x
    if scores.reconstruction_error is not None:
        results["reconstruction_error"] = float(
            np.mean(np.minimum(scores.reconstruction_error, 10))
        )
        artifacts["reconstruction_errors"] = scores.reconstruction_error
    if scores.log_prob is not None:
        # Compare like with like: manifold models give a density on their manifold, so the
        # reference is the true density on the true manifold (no off-manifold noise factor);
        # AF and PIE give an ambient density, compared with the full true density.
        true_logp = None
        on_manifold = config.model.kind in MANIFOLD_DENSITY_KINDS
        if on_manifold and hasattr(dataset, "log_density_on_manifold"):
            true_logp = _try(dataset.log_density_on_manifold, test.x, test.theta)
            results["log_likelihood_reference"] = "true density on the manifold"
        elif not on_manifold and dataset.has_truth.get("log_density", False):
            true_logp = _try(dataset.log_density, test.x, test.theta)
            results["log_likelihood_reference"] = "true ambient density"
        stats = M.log_likelihood_stats(scores.log_prob, true_logp)
        d = int(np.prod(dataset.data_dim))
        results["log_likelihood"] = stats["mean"]
        results["nll_bits_per_dim"] = -stats["mean"] / (d * math.log(2.0))
        if "true_mean" in stats:
            results["true_log_likelihood"] = stats["true_mean"]
            results["log_likelihood_mae"] = stats["mean_abs_error"]
        artifacts["log_prob"] = scores.log_prob

    if _is_image(dataset):
        from mflows.evaluation import fid

        results["fid"] = fid(samples, test.x, weights=ev.inception_weights, device=config.device)

    # OOD detection ---------------------------------------------------------------------------
    if dataset.has_truth.get("sample_ood", False):
        ood = dataset.sample_ood(ev.n_test, seed=ev.seed)
        ood_context = (
            None if context is None else np.broadcast_to(context, (len(ood), len(context)))
        )
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

    # Posterior over theta ------------------------------------------------------------------
    if (
        dataset.parameter_dim
        and scores.log_prob is not None
        and dataset.has_truth.get("log_prior", False)
    ):
        posterior = _posterior(model, dataset, ev, progress=progress)
        results.update(posterior.pop("metrics"))
        artifacts.update(posterior)

    # Plots and report ------------------------------------------------------------------------
    metrics = {k: (_finite(v) if isinstance(v, float) else v) for k, v in results.items()}
    _atomic_write_text(run_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    _write_plots_and_report(run, metrics, artifacts)
    return metrics


def _posterior(model, dataset, ev: EvaluationConfig, *, progress: bool) -> dict[str, Any]:
    """Posterior over theta from ``n_observed`` observations at the default theta.

    The model chain gives ``log_posterior_true_theta`` (Gaussian KDE at theta*, bandwidth 0.15);
    where the true likelihood is known, a second chain on it gives ``posterior_mmd``.
    """
    from mflows.evaluation import inference

    theta_true = np.asarray(dataset.default_theta, dtype=np.float64).reshape(-1)
    if dataset.has_truth.get("sample", False):
        observed = dataset.sample(ev.n_observed, theta=theta_true, seed=ev.seed + 100)
    else:  # file-backed: the test split is at the default theta
        observed = _load_split(dataset, "test", ev.n_observed, ev.seed + 100).x
    common = {
        "num_samples": ev.mcmc_steps,
        "burn_in": ev.mcmc_burn_in,
        "step": ev.mcmc_step_size,
        "progress": progress,
    }
    model_chain = inference.model_posterior_samples(
        model, observed, dataset.log_prior, theta_true, seed=ev.seed, **common
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
            dataset, observed, theta0=theta_true, seed=ev.seed + 1, **common
        )
        result["metrics"]["posterior_mmd"] = inference.posterior_mmd(model_chain, true_chain)
        result["posterior_true"] = true_chain
    return result


def _make_plots(run: LoadedRun, artifacts: dict[str, Any], plots_dir: Path) -> list[Path]:
    """Draw every plot that applies to the run into ``plots_dir``; return the paths."""
    from mflows.evaluation import plots as P

    model, dataset = run.model, run.dataset
    paths: list[Path] = []
    history = run.run_dir / HISTORY_FILE
    if history.is_file() and history.stat().st_size > 0:
        paths.append(P.plot_training_curves(history, plots_dir / "training_curves.png"))
    samples, test = artifacts["samples"], artifacts["test"]
    if _is_image(dataset):
        paths.append(P.plot_image_grid(samples[:36], plots_dir / "samples.png", title="samples"))
        paths.append(P.plot_image_grid(test[:36], plots_dir / "test_images.png", title="data"))
    else:
        paths.append(P.plot_samples(samples, test, plots_dir / "samples_vs_truth.png"))
        if model.kind != "af" and model.latent_dim <= 2:
            path = plots_dir / "learned_manifold.png"
            if model.kind == "pae":  # no density in x: draw the manifold only
                context = artifacts.get("context")

                def decode(u: np.ndarray) -> np.ndarray:
                    import torch

                    ctx = None if context is None else torch.as_tensor(context)
                    if ctx is not None:
                        ctx = ctx.reshape(1, -1).expand(len(u), -1)
                    with torch.no_grad():
                        return model.decode(u, context=ctx).cpu().numpy()

                resolution = run.config.evaluation.plot_resolution
                paths.append(
                    P.plot_manifold_density(
                        decode, None, model.latent_dim, path, resolution=resolution, truth=test
                    )
                )
            else:
                paths.append(
                    P.plot_learned_manifold(
                        model,
                        path,
                        context=artifacts.get("context"),
                        truth=test,
                        resolution=run.config.evaluation.plot_resolution,
                    )
                )
    if "reconstruction_errors" in artifacts:
        paths.append(
            P.plot_reconstruction_errors(
                artifacts["reconstruction_errors"],
                artifacts.get("reconstruction_errors_ood"),
                plots_dir / "reconstruction_errors.png",
            )
        )
    if "posterior_model" in artifacts:
        paths.append(
            P.plot_posterior(
                artifacts["posterior_model"],
                artifacts["posterior_true"],
                plots_dir / "posterior.png",
                theta_true=artifacts["theta_true"],
            )
        )
    return [Path(p) for p in paths]


def _write_plots_and_report(run: LoadedRun, metrics: dict[str, Any], artifacts: dict) -> None:
    """Write plots/ (replaced as a whole) and report.html (embedding every plot)."""
    import matplotlib

    matplotlib.use("Agg")
    from mflows.evaluation import write_report

    plots_dir = run.run_dir / PLOTS_DIR
    tmp_dir = run.run_dir / f".{PLOTS_DIR}.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    try:
        names = [p.name for p in _make_plots(run, artifacts, tmp_dir)]
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    shutil.rmtree(plots_dir, ignore_errors=True)
    os.replace(tmp_dir, plots_dir)
    config = dataclasses.asdict(run.config)
    title = (
        f"mflows: {run.config.model.kind} ({run.config.training.algorithm}) on {run.dataset.name}"
    )
    write_report(
        run.run_dir,
        metrics=metrics,
        plots=[plots_dir / name for name in names],
        config=config,
        title=title,
        filename=REPORT_FILE,
    )


def format_metrics(metrics: dict[str, Any]) -> str:
    """A short aligned text table of the numeric metrics."""
    rows = [(k, v) for k, v in metrics.items() if isinstance(v, int | float) or v is None]
    width = max((len(k) for k, _ in rows), default=0)
    lines = []
    for key, value in rows:
        text = "n/a" if value is None else f"{value:.4g}"
        lines.append(f"  {key:<{width}}  {text}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Demo
# --------------------------------------------------------------------------------------------


class DemoResult(NamedTuple):
    """Where the demo wrote its run and what it measured."""

    run_dir: Path
    report: Path
    metrics: dict[str, Any]


def demo_config(quick: bool = False) -> RunConfig:
    """The demo: an M-flow with alternating M/D training on the polynomial-surface mixture.

    The full demo (2 x 10^4 samples, 5 + 5 spline couplings with 64 hidden units, 40 epochs,
    shortened MCMC chains) takes about 4-5 minutes on 2 busy CPU cores with one torch thread and
    reaches manifold distance ~0.005, reconstruction error ~0.005, OOD AUC ~0.97 and posterior
    MMD ~0.004 (paper, M-flow alternating: 0.002 / 0.003 / 0.986 / 0.020). ``quick`` is a
    seconds-long smoke test.
    """
    if quick:
        return RunConfig(
            data=DataConfig(name="power", n_train=600, seed=0),
            model=ModelConfig(
                kind="mflow", outer_layers=2, inner_layers=2, hidden_features=16, num_blocks=1,
                num_bins=6, tail_bound=6.0,
            ),
            training=TrainingConfig(
                algorithm="alternating", epochs=2, batch_size=100, lr=3e-3, weight_decay=1e-4,
                clip=1.0, validation_split=0.2,
            ),
            evaluation=EvaluationConfig(
                n_test=200, n_generate=500, n_observed=20, mcmc_steps=150, mcmc_burn_in=20,
                plot_resolution=20,
            ),
        )  # fmt: skip
    return RunConfig(
        data=DataConfig(name="power", n_train=20000, seed=0),
        model=ModelConfig(
            kind="mflow", outer_layers=5, inner_layers=5, hidden_features=64, num_blocks=2,
            num_bins=10, tail_bound=6.0,
        ),
        training=TrainingConfig(
            algorithm="alternating", epochs=40, batch_size=100, lr=1e-3, weight_decay=1e-4,
            clip=1.0, validation_split=0.1,
        ),
        evaluation=EvaluationConfig(
            n_test=1000, n_generate=5000, n_observed=20, mcmc_steps=1000, mcmc_burn_in=100,
        ),
    )  # fmt: skip


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    quick: bool = False,
    progress: bool = True,
    device: str | None = None,
) -> DemoResult:
    """Train, evaluate and report the demo run (see :func:`demo_config`)."""
    config = demo_config(quick)
    if device is not None:
        config = dataclasses.replace(config, device=device)
    run_dir = train_run(config, out_dir, progress=progress, overwrite=True)
    metrics = evaluate_run(run_dir, progress=progress)
    return DemoResult(Path(run_dir), Path(run_dir) / REPORT_FILE, metrics)
