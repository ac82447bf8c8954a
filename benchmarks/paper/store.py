"""The results store: one JSON file per (experiment, model, seed) run.

Layout (relative to the store root, by default ``benchmarks/results/paper/``)::

    <experiment>/<model>-seed<k>.json     finished (or diverged) runs, committed
    .work/<experiment>/<model>-seed<k>/   scratch of runs in progress (git-ignored):
        checkpoints/                      per-epoch checkpoints of mflows.fit (resume)
        progress.json                     training seconds and epochs so far
        model.pt                          the trained model, before it is scored

Every file is written atomically (:func:`mflows.files.atomic_write`), so a killed runner
leaves either the previous or the new version of a file, never a partial one.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mflows.files import atomic_write

__all__ = [
    "DEFAULT_ROOT",
    "DIVERGED",
    "FINISHED",
    "Store",
    "git_revision",
    "machine_info",
]

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "results" / "paper"

#: status of a run whose model was trained and scored.
FINISHED = "finished"
#: status of a run whose training diverged (deterministic: rerunning gives the same).
DIVERGED = "diverged"


def _clean(value: Any) -> Any:
    """JSON-safe copy: NumPy scalars to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def git_revision(cwd: str | os.PathLike | None = None) -> str:
    """The short git revision of the repository, with ``-dirty`` for uncommitted changes."""
    cwd = cwd or Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "src"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """Where a run ran: CPU model and count, torch threads, device, versions."""
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_summary(machine: dict[str, Any]) -> str:
    """One short line for a table: ``GPU`` or ``<cpus>-CPU <model>, <threads> thread(s)``."""
    if machine.get("gpu"):
        return f"{machine['gpu']}"
    cpu = str(machine.get("cpu", "cpu")).replace("(R)", "").replace("(TM)", "")
    cpu = cpu.replace(" CPU", "").split(" @ ")[0]
    threads = machine.get("threads", "?")
    return f"{cpu} ({machine.get('cpus', '?')} cores), {threads} thread{'s' * (threads != 1)}"


@dataclass(frozen=True)
class Store:
    """The results store rooted at ``root``."""

    root: Path = DEFAULT_ROOT

    def result_path(self, experiment: str, model: str, seed: int) -> Path:
        """The JSON file of one run."""
        return Path(self.root) / experiment / f"{model}-seed{seed}.json"

    def work_dir(self, experiment: str, model: str, seed: int) -> Path:
        """The scratch directory of a run in progress."""
        return self._work(experiment, f"{model}-seed{seed}")

    def model_file(self, experiment: str, run: str) -> Path:
        """The trained model of run ``run`` (``<model>-seed<k>``), kept in its scratch directory."""
        return self._work(experiment, run) / "model.pt"

    def _work(self, experiment: str, run: str) -> Path:
        return Path(self.root) / ".work" / experiment / run

    def read(self, experiment: str, model: str, seed: int) -> dict[str, Any] | None:
        """The stored result of one run, or None."""
        path = self.result_path(experiment, model, seed)
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def write(self, result: dict[str, Any]) -> Path:
        """Stores ``result`` (needs ``experiment``, ``model``, ``seed``) atomically."""
        path = self.result_path(result["experiment"], result["model"], int(result["seed"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(_clean(result), indent=2) + "\n")
        return path

    def results(self, experiment: str) -> list[dict[str, Any]]:
        """Every stored result of ``experiment``, sorted by model and seed."""
        directory = Path(self.root) / experiment
        if not directory.is_dir():
            return []
        out = [json.loads(p.read_text()) for p in sorted(directory.glob("*-seed*.json"))]
        return sorted(out, key=lambda r: (r["model"], int(r["seed"])))

    def read_progress(self, experiment: str, model: str, seed: int) -> dict[str, Any]:
        """Training seconds and epochs of a run in progress (empty for a fresh run)."""
        path = self.work_dir(experiment, model, seed) / "progress.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_progress(self, experiment: str, model: str, seed: int, info: dict) -> None:
        """Records the progress of a run in progress (atomically)."""
        work = self.work_dir(experiment, model, seed)
        work.mkdir(parents=True, exist_ok=True)
        atomic_write(work / "progress.json", json.dumps(_clean(info), indent=2) + "\n")
