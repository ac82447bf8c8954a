"""Run directories: file names, the lock, the checks before writing, atomic writers.

A run directory holds everything about one experiment::

    run_dir/
      config.json     the resolved RunConfig (written first)
      model.pt        the trained model (``mflows.load``); written last
      history.csv     loss curves
      train_info.json training time, sample size, epochs, best epoch, seed, device, versions
      tensorboard/    TensorBoard events (``mflows train --tensorboard``)
      metrics.json    written by ``evaluate_run``
      plots/*.png     written by ``evaluate_run``
      report.html     written by ``evaluate_run`` (embeds every plot)
      checkpoints/    per-epoch checkpoints while training (removed when it finishes)
      .lock           pid of the process writing to the directory

Every file is written through :mod:`mflows.files` (temporary file, then rename), so a failed or
interrupted step never leaves a half-written file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mflows.errors import RunError, RunLockedError
from mflows.files import atomic_path, atomic_write

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "HISTORY_FILE",
    "LOCK_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "PLOTS_DIR",
    "REPORT_FILE",
    "RUN_FILES",
    "TENSORBOARD_DIR",
    "TRAIN_INFO_FILE",
    "clear_run",
    "lock_run",
    "save_array",
    "write_history",
]

CONFIG_FILE = "config.json"
MODEL_FILE = "model.pt"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
TRAIN_INFO_FILE = "train_info.json"
PLOTS_DIR = "plots"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
LOCK_FILE = ".lock"

#: what a run writes (and what ``overwrite`` removes); nothing else in the directory is touched.
RUN_FILES = (
    CONFIG_FILE,
    MODEL_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    REPORT_FILE,
    TRAIN_INFO_FILE,
    PLOTS_DIR,
    CHECKPOINT_DIR,
    TENSORBOARD_DIR,
)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or "0")
    except (OSError, ValueError):
        return None


@contextmanager
def lock_run(run_dir: str | Path) -> Iterator[Path]:
    """Holds the lock of a run directory (created if missing) while the block runs.

    The lock is a file holding the pid of its owner. A lock held by a live process raises
    :class:`RunLockedError`; a stale lock (its process is gone, or the file is garbled) is taken
    over.

    Raises:
        RunLockedError: another live process writes to ``run_dir``.
        RunError: ``run_dir`` exists and is not a directory.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir} exists and is not a directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_FILE
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _read_pid(lock)
            if pid is not None and pid != os.getpid() and _pid_alive(pid):
                raise RunLockedError(
                    f"{run_dir} is in use by another mflows process (pid {pid}); wait for it to "
                    f"finish, or delete {lock} if that process is not an mflows run"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        break
    else:  # pragma: no cover - lost the race three times
        raise RunLockedError(f"{run_dir} is in use by another process (cannot take {lock})")
    try:
        yield lock
    finally:
        if _read_pid(lock) == os.getpid():
            lock.unlink(missing_ok=True)


def clear_run(run_dir: Path) -> None:
    """Removes the files a run writes (:data:`RUN_FILES`) from ``run_dir``, nothing else."""
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def save_array(array: np.ndarray, path: str | Path) -> Path:
    """``numpy.save`` to ``path`` atomically (``.npy`` appended if missing); returns the path."""
    path = Path(path)
    if path.suffix != ".npy":
        path = path.with_name(path.name + ".npy")
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(array))
    return path


def write_history(history: Any, path: Path) -> None:
    """Writes the loss curves of a :class:`mflows.training.History` (or rows of dicts) as CSV."""
    if hasattr(history, "to_csv"):
        with atomic_path(path) as tmp:
            history.to_csv(tmp)
        return
    rows = list(getattr(history, "rows", history) or [])
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = [",".join(keys)] if keys else []
    lines += [",".join(str(row.get(k, "")) for k in keys) for row in rows]
    atomic_write(path, "\n".join(lines) + ("\n" if lines else ""))
