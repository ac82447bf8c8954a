"""Train, evaluate and sample the run of a configuration (layout: :mod:`mflows.experiments.rundir`).

This is the application behind ``mflows train | evaluate | sample``; it is also usable from
Python. The scoring policy is the library's (:func:`mflows.evaluation.score`); this module adds
the run directory: configuration and model files, plots and the HTML report.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mflows.errors import (
    CheckpointError,
    ConfigError,
    MflowsError,
    ResumeMismatchError,
    RunError,
    TrainingDivergedError,
)
from mflows.experiments import rundir as R
from mflows.experiments.build import (
    build_model,
    data_checksums,
    get_dataset,
    load_split,
    resolve_device,
    torch_device,
)
from mflows.experiments.config import RunConfig, apply_overrides, load_config, save_config
from mflows.files import atomic_write

__all__ = [
    "LoadedRun",
    "evaluate_run",
    "extend_run",
    "format_metrics",
    "load_run",
    "sample_run",
    "train_run",
]


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _check_out_dir(out: Path, config: RunConfig, overwrite: bool) -> None:
    """Refuses to write a run into ``out`` when that could destroy something.

    Without ``overwrite``: a non-empty directory that is not a run, a finished run, or an
    interrupted run with a different configuration are refused; an interrupted run with the
    same configuration is resumed.
    """
    if out.exists() and not out.is_dir():
        raise RunError(f"{out} exists and is not a directory")
    if overwrite or not out.is_dir():
        return
    entries = [p.name for p in out.iterdir() if p.name != R.LOCK_FILE]
    if not entries:
        return
    if not (out / R.CONFIG_FILE).is_file():
        raise RunError(
            f"{out} is not empty and holds no mflows run ({', '.join(sorted(entries)[:3])}"
            f"{', ...' if len(entries) > 3 else ''}); pick a new directory or pass "
            "overwrite=True to write the run files there"
        )
    if (out / R.MODEL_FILE).exists():
        raise RunError(
            f"{out} already holds a trained model; pass overwrite=True to replace it or pick a "
            "new directory"
        )
    try:
        previous = load_config(out / R.CONFIG_FILE)
    except ConfigError as error:
        raise RunError(
            f"{out} holds an unreadable {R.CONFIG_FILE} ({error}); pass overwrite=True to start "
            "afresh"
        ) from None
    if previous != config:
        raise RunError(
            f"{out} holds an interrupted run with a different configuration; pass "
            "overwrite=True to start afresh, or rerun with the same settings to resume"
        )


def train_run(
    config: RunConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
    log_dir: str | Path | None = None,
    messages: Callable[[str], None] | None = None,
) -> Path:
    """Build the data set and model of ``config``, train it and save the run.

    Writes ``config.json`` first, then trains with per-epoch checkpoints in ``checkpoints/``
    (rerunning the same command after an interruption resumes from them), then writes
    ``history.csv`` and finally ``model.pt``. The directory is locked while training.

    Args:
        config: the resolved configuration.
        out_dir: run directory; created if needed.
        progress: show a progress bar.
        overwrite: replace an existing run, or write into a non-empty directory that is not a
            run (only the run's own files are replaced there).
        log_dir: also write the loss curves there as TensorBoard events (when tensorboard is
            installed).
        messages: called with one-line status messages ("resuming from epoch 7 of 50").

    Returns:
        The run directory.

    Raises:
        RunError: when ``out_dir`` cannot be used (see :func:`_check_out_dir`), or a checkpoint
            there is corrupt or was written for another run.
        RunLockedError: another live process writes to ``out_dir``.
        ConfigError: if the configuration does not fit the data set.
        TrainingDivergedError: if the loss became NaN or infinite.
    """

    config = with_data_checksums(config.validate())
    out = Path(out_dir)
    _check_out_dir(out, config, overwrite)
    device, dataset, batch = _training_data(config)
    if config.training.scandal is not None and batch.scores is None:
        raise ConfigError(
            f"training.scandal needs joint scores, which data set {dataset.name} does not provide"
        )
    model = build_model(config, dataset)

    with R.lock_run(out):
        _check_out_dir(out, config, overwrite)  # again, now that nobody else writes here
        if overwrite:
            R.clear_run(out)
        for name in (R.MODEL_FILE, R.METRICS_FILE, R.REPORT_FILE):
            (out / name).unlink(missing_ok=True)
        save_config(config, out / R.CONFIG_FILE)
        checkpoints = out / R.CHECKPOINT_DIR
        start = time.perf_counter()
        try:
            history = _fit_with_progress(
                model,
                batch,
                config,
                _fit_options(config),
                checkpoints=checkpoints,
                progress=progress,
                messages=messages,
                device=device,
                log_dir=log_dir,
            )
        except TrainingDivergedError:
            raise
        except (CheckpointError, ResumeMismatchError) as error:
            raise RunError(
                f"{error}; pass overwrite=True to start afresh, or delete {checkpoints}"
            ) from None
        except MflowsError:
            raise
        except ValueError as error:
            if "resume" in str(error) or "checkpoint" in str(error):
                raise RunError(
                    f"{error}; pass overwrite=True to start afresh, or delete {checkpoints}"
                ) from None
            raise ConfigError(f"training cannot start: {error}") from None
        except (RuntimeError, EOFError, OSError) as error:
            if checkpoints.is_dir() and any(checkpoints.iterdir()):
                raise RunError(
                    f"cannot resume from {checkpoints} ({type(error).__name__}: {error}); pass "
                    f"overwrite=True to start afresh, or delete {checkpoints}"
                ) from None
            raise
        elapsed = time.perf_counter() - start

        R.write_history(history, out / R.HISTORY_FILE)
        _save_model(model, out)
        info = {
            "training_seconds": elapsed,
            "n_train": int(batch.x.shape[0]),
            "best_epoch": getattr(history, "best_epoch", None),
            "epochs": len(getattr(history, "records", []) or []) or config.training.epochs,
            "seed": config.training.seed,
            "device": device,
            "versions": versions(),
        }
        atomic_write(out / R.TRAIN_INFO_FILE, json.dumps(info, indent=2) + "\n")
        shutil.rmtree(checkpoints, ignore_errors=True)
    return out


def with_data_checksums(config: RunConfig) -> RunConfig:
    """``config`` with ``data.checksums`` recorded for your own data files (when not yet set)."""
    if config.data.x_file is None or config.data.checksums:
        return config
    data = dataclasses.replace(config.data, checksums=data_checksums(config.data))
    return dataclasses.replace(config, data=data)


def versions() -> dict[str, str]:
    """Versions of Python, mflows, torch and numpy (recorded with each run)."""
    import platform

    import torch

    import mflows

    return {
        "python": platform.python_version(),
        "mflows": mflows.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def _resumed_epochs(checkpoints: Path) -> int:
    """Epochs done by an interrupted run that left a checkpoint (0 when there is none)."""
    from mflows.training.checkpoint import CHECKPOINT_NAME, load_checkpoint

    path = checkpoints / CHECKPOINT_NAME
    if not path.is_file():
        return 0
    try:
        return len(load_checkpoint(path)["history"]["records"])
    except Exception:  # unreadable: the trainer reports it precisely
        return 0


def _fit_with_progress(
    model,
    batch,
    config: RunConfig,
    options: dict[str, Any],
    *,
    checkpoints: Path,
    progress: bool,
    messages: Callable[[str], None] | None,
    **kwargs: Any,
):
    """``fit`` with resume message and the progress bars of :mod:`mflows.experiments.progress`."""
    from mflows import training
    from mflows.experiments.progress import TrainingProgress, steps_per_epoch

    epochs = options["epochs"]
    total = sum(epochs) if isinstance(epochs, tuple | list) else int(epochs)
    done = _resumed_epochs(checkpoints)
    if done and messages is not None:
        messages(f"resuming from epoch {done} of {total} (checkpoints in {checkpoints})")
    t = config.training
    steps = steps_per_epoch(
        len(batch.x), t.batch_size, t.validation_split, t.algorithm, t.alternate
    )
    scores = batch.scores if t.scandal is not None else None
    with TrainingProgress(total, done, steps, enabled=progress) as bars:
        return training.fit(
            model,
            batch.x,
            context=batch.theta,
            scores=scores,
            progress=False,
            checkpoint_dir=checkpoints,
            resume=True,
            callback=bars.callback,
            **kwargs,
            **options,
        )


def _training_data(config: RunConfig) -> tuple[str, Any, Any]:
    """The device, data set and training split of ``config``."""
    dataset = get_dataset(config.data)
    batch = load_split(dataset, "train", config.data.n_train, config.data.seed)
    return resolve_device(config.device), dataset, batch


def _save_model(model, run_dir: Path) -> None:
    from mflows.files import atomic_path

    with atomic_path(run_dir / R.MODEL_FILE) as tmp:
        model.save(tmp)


def _fit_options(config: RunConfig) -> dict[str, Any]:
    from mflows.experiments.build import fit_options

    return fit_options(config.training)


def extend_run(
    run_dir: str | Path,
    epochs: int,
    *,
    progress: bool = True,
    log_dir: str | Path | None = None,
    messages: Callable[[str], None] | None = None,
) -> Path:
    """Train a finished run further, to ``epochs`` epochs in all.

    The trained weights of ``model.pt`` are the starting point; the ``epochs - done`` new epochs
    run the configured scheme with a fresh optimiser and learning-rate schedule (an interrupted
    extension resumes from its checkpoints when rerun). ``history.csv`` is continued,
    ``config.json`` records the new total, metrics and report of the old model are removed.

    Raises:
        RunError: for an unfinished or unreadable run, or ``epochs`` not above the epochs done.
    """
    run_dir = Path(run_dir)
    config = _run_config(run_dir, (), None)
    done = config.training.epochs
    if epochs <= done:
        raise RunError(
            f"{run_dir} was trained for {done} epochs; to extend it ask for more than {done} in all"
        )
    extra = epochs - done
    device, _, batch = _training_data(config)
    model = _load_model(run_dir, config)
    model.train()
    previous = _read_history(run_dir / R.HISTORY_FILE)
    with R.lock_run(run_dir):
        checkpoints = run_dir / R.CHECKPOINT_DIR
        if messages is not None:
            messages(f"extending {run_dir}: epochs {done + 1} to {epochs} ({extra} more)")
        options = _fit_options(
            dataclasses.replace(config, training=dataclasses.replace(config.training, epochs=extra))
        )
        start = time.perf_counter()
        try:
            history = _fit_with_progress(
                model,
                batch,
                config,
                options,
                checkpoints=checkpoints,
                progress=progress,
                messages=messages,
                device=device,
                log_dir=log_dir,
            )
        except (CheckpointError, ResumeMismatchError) as error:
            raise RunError(f"{error}; delete {checkpoints} to restart the extension") from None
        elapsed = time.perf_counter() - start
        records = [dict(r) for r in getattr(history, "records", [])]
        for record in records:
            if isinstance(record.get("epoch"), int | float):
                record["epoch"] = int(record["epoch"]) + done
        R.write_history(previous + records, run_dir / R.HISTORY_FILE)
        _save_model(model, run_dir)
        new_config = dataclasses.replace(
            config, training=dataclasses.replace(config.training, epochs=epochs)
        )
        save_config(new_config, run_dir / R.CONFIG_FILE)
        info = _read_json(run_dir / R.TRAIN_INFO_FILE)
        best = getattr(history, "best_epoch", None)
        info.update(
            training_seconds=float(info.get("training_seconds", 0.0)) + elapsed,
            best_epoch=None if best is None else int(best) + done,
            epochs=epochs,
            extended_from=done,
            device=device,
            versions=versions(),
        )
        atomic_write(run_dir / R.TRAIN_INFO_FILE, json.dumps(info, indent=2) + "\n")
        for name in (R.METRICS_FILE, R.REPORT_FILE):
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(checkpoints, ignore_errors=True)
    return run_dir


def _read_history(path: Path) -> list[dict[str, Any]]:
    import csv

    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key, value in row.items():
            for kind in (int, float):
                try:
                    row[key] = kind(value)
                    break
                except (TypeError, ValueError):
                    continue
    return rows


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


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
    if not (run_dir / R.CONFIG_FILE).is_file():
        raise RunError(f"{run_dir} is not a run directory (no {R.CONFIG_FILE}); train one first")
    if not (run_dir / R.MODEL_FILE).is_file():
        raise RunError(
            f"{run_dir} has no trained model ({R.MODEL_FILE}); training did not finish - rerun "
            "the training to resume it"
        )
    config = apply_overrides(load_config(run_dir / R.CONFIG_FILE), overrides)
    if device is not None:
        config = dataclasses.replace(config, device=device)
    return config.validate()


def _load_model(run_dir: Path, config: RunConfig):
    from mflows.models import load

    path = run_dir / R.MODEL_FILE
    try:
        model = load(path)
    except Exception as error:  # corrupt files raise many kinds of errors
        raise RunError(
            f"cannot read the model file {path} ({type(error).__name__}: {error}); it is corrupt "
            "or from another version: retrain (overwrite=True) or delete the run"
        ) from None
    model = model.to(torch_device(config.device))
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
    model = _load_model(run_dir, config)
    # evaluation and sampling: mflows' thread policy unless the user chose (--threads, env)
    from mflows.threads import apply_default_policy

    apply_default_policy(model, batch_size=1000)
    return LoadedRun(config, model, dataset, run_dir)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _context_for(dataset, theta: Sequence[float] | np.ndarray | None) -> np.ndarray | None:
    if not dataset.parameter_dim:
        if theta is not None:
            raise ConfigError(f"data set {dataset.name} is unconditional: theta must not be given")
        return None
    value = dataset.default_theta if theta is None else theta
    value = np.asarray(value, dtype=np.float32).reshape(-1)
    if value.shape != (dataset.parameter_dim,):
        raise ConfigError(
            f"theta needs {dataset.parameter_dim} value(s) for {dataset.name}, got {value.size}"
        )
    if not np.isfinite(value).all():
        raise ConfigError(f"theta must be finite, got {value.tolist()}")
    _check_prior(dataset, value)
    return value


def _check_prior(dataset, theta: np.ndarray) -> None:
    """Refuses a theta outside the data set's prior support (or, for your own data, outside
    the range of the training parameters)."""
    if dataset.has_truth.get("log_prior", False):
        if not np.isfinite(dataset.log_prior(theta[None].astype(np.float64))).all():
            doc = (type(dataset).log_prior.__doc__ or "").strip().splitlines()
            prior = doc[0].replace("``", "").rstrip(".;") if doc else "see its description"
            raise ConfigError(
                f"theta = {theta.tolist()} is outside the prior of {dataset.name} "
                f"(log prior: {prior})"
            )
        return
    bounds = getattr(dataset, "theta_range", None)
    if bounds is not None:
        low, high = bounds
        if np.any(theta < low) or np.any(theta > high):
            raise ConfigError(
                f"theta = {theta.tolist()} is outside the range of the training parameters of "
                f"{dataset.name} ({low.tolist()} .. {high.tolist()}); the model was not "
                "trained there"
            )


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

    Raises:
        RunError: if some samples are not finite (the model is broken at that theta).
    """
    import torch

    from mflows.evaluation.scoring import draw_samples

    if n <= 0:
        raise ConfigError(f"number of samples must be positive, got {n}")
    if seed is not None and not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    run = load_run(run_dir, overrides, device=device)
    context = _context_for(run.dataset, theta)
    if seed is not None:
        torch.manual_seed(seed)
    samples = draw_samples(run.model, n, context).astype(np.float32)
    bad = int((~np.isfinite(samples.reshape(n, -1))).any(axis=1).sum())
    if bad:
        raise RunError(
            f"{bad} of {n} samples are not finite (NaN or inf): the model of {run.run_dir} is "
            f"numerically broken{'' if context is None else f' at theta = {context.tolist()}'}; "
            "nothing was written"
        )
    return samples


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def evaluate_run(
    run_dir: str | Path,
    *,
    overrides: Iterable[str] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Score a run with :func:`mflows.evaluation.score`; write metrics.json, plots, report.html.

    Raises:
        RunError: for a missing or unreadable model, or, for image data other than simulated
            images with exact truth (``blobs``), missing Inception weights.
    """
    from mflows.evaluation.scoring import is_image, score_with_artifacts

    run_dir = Path(run_dir)
    config = _run_config(run_dir, overrides, None)
    dataset = get_dataset(config.data)
    ev = config.evaluation
    # check before any expensive work; simulated images (``latent_of``: exact truth) are scored
    # without Inception weights (FID only when found, offline FID / KID always)
    if is_image(dataset) and not hasattr(dataset, "latent_of"):
        from mflows.evaluation.fid import find_inception_weights

        try:
            find_inception_weights(ev.inception_weights)
        except FileNotFoundError as error:
            raise RunError(f"{error} (set evaluation.inception_weights)") from None
    model = _load_model(run_dir, config)
    run = LoadedRun(config, model, dataset, run_dir)
    options = ev.score_options()
    with R.lock_run(run_dir):
        scored = score_with_artifacts(
            model, dataset, options, device=resolve_device(config.device), progress=progress
        )
        metrics = {
            "dataset": dataset.name,
            "model": config.model.kind,
            "algorithm": config.training.algorithm,
            **scored.metrics,
        }
        atomic_write(run_dir / R.METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
        _write_plots_and_report(run, metrics, scored.artifacts)
    return metrics


def _make_plots(run: LoadedRun, artifacts: dict[str, Any], plots_dir: Path) -> list[Path]:
    """Draw every plot that applies to the run into ``plots_dir``; return the paths."""
    from mflows.evaluation import plots as P
    from mflows.evaluation.scoring import is_image

    model, dataset = run.model, run.dataset
    paths: list[Path] = []
    history = run.run_dir / R.HISTORY_FILE
    if history.is_file() and history.stat().st_size > 0:
        paths.append(P.plot_training_curves(history, plots_dir / "training_curves.png"))
    samples, test = artifacts["samples"], artifacts["test"]
    resolution = run.config.evaluation.plot_resolution
    if is_image(dataset):
        paths.append(P.plot_image_grid(samples[:36], plots_dir / "samples.png", title="samples"))
        paths.append(P.plot_image_grid(test[:36], plots_dir / "test_images.png", title="data"))
        if model.has_manifold:
            paths.extend(_image_manifold_plots(model, test, artifacts.get("context"), plots_dir))
    else:
        context = artifacts.get("context")
        where = "" if context is None else f" at theta = {np.round(context, 4).tolist()}"
        paths.append(
            P.plot_samples(
                samples,
                test,
                plots_dir / "samples_vs_truth.png",
                labels=("model samples", "test data"),
                title=f"{dataset.name}: samples{where}",
            )
        )
        if model.has_manifold and model.latent_dim <= 2:
            path = plots_dir / "learned_manifold.png"
            context = artifacts.get("context")
            paths.append(
                P.plot_learned_manifold(
                    model, path, context=context, truth=test, resolution=resolution
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


def _image_manifold_plots(model, test: np.ndarray, context, plots_dir: Path) -> list[Path]:
    """Reconstructions of 12 test images and a traversal of the learned manifold."""
    import torch

    from mflows.evaluation import plots as P
    from mflows.evaluation.metrics import model_dtype_device

    dtype, device = model_dtype_device(model)
    x = torch.as_tensor(test[:200], dtype=dtype, device=device)
    ctx = None
    if context is not None:
        ctx = torch.as_tensor(context, dtype=dtype, device=device).reshape(1, -1)
        ctx = ctx.expand(len(x), -1)
    with torch.no_grad():
        projected = model.project(x[:12], context=None if ctx is None else ctx[:12]).cpu()
        u = model.encode(x, context=ctx).cpu().numpy()
    return [
        P.plot_reconstructions(test[:12], projected.numpy(), plots_dir / "reconstructions.png"),
        P.plot_latent_traversal(model, plots_dir / "latent_traversal.png", u, context=context),
    ]


def _write_plots_and_report(run: LoadedRun, metrics: dict[str, Any], artifacts: dict) -> None:
    """Write plots/ (replaced as a whole) and report.html (embedding every plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import os

    from mflows.evaluation import write_report

    plots_dir = run.run_dir / R.PLOTS_DIR
    tmp_dir = run.run_dir / f".{R.PLOTS_DIR}.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    try:
        names = [p.name for p in _make_plots(run, artifacts, tmp_dir)]
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    shutil.rmtree(plots_dir, ignore_errors=True)
    os.replace(tmp_dir, plots_dir)
    title = (
        f"mflows: {run.config.model.kind} ({run.config.training.algorithm}) on {run.dataset.name}"
    )
    info = _read_json(run.run_dir / R.TRAIN_INFO_FILE)
    context = artifacts.get("context")
    details = {
        "data": run.dataset.name,
        "theta (samples and OOD points)": "none (unconditional)"
        if context is None
        else np.asarray(context).tolist(),
        "training time (s)": info.get("training_seconds"),
        "epochs": info.get("epochs", run.config.training.epochs),
        "best epoch": info.get("best_epoch"),
        "seed (training)": run.config.training.seed,
        "seed (evaluation)": run.config.evaluation.seed,
        "device": info.get("device", run.config.device),
        "versions": info.get("versions") or versions(),
    }
    write_report(
        run.run_dir,
        metrics=metrics,
        plots=[plots_dir / name for name in names],
        config=dataclasses.asdict(run.config),
        title=title,
        filename=R.REPORT_FILE,
        details=details,
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
