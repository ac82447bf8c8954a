"""Shared helpers of the paper-reproduction and speed benchmarks (not part of the library).

Used by the benchmark scripts run from this folder (``speed.py``, ``compare_speed.py``,
``image_logprob.py``, ``paper_power.py``, ``paper_sphere.py``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "Timer",
    "export_src",
    "fmt",
    "generate",
    "markdown_table",
    "print_settings",
    "replace_marked_block",
    "write_json",
]


class Timer:
    """Context manager measuring wall time in seconds (``timer.seconds``)."""

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        self.seconds = float("nan")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._start


def fmt(value: Any, digits: int = 3) -> str:
    """Formats a table cell: ``-`` for missing, fixed point for moderate floats."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and (abs(value) < 10 ** (-digits) or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are formatted with :func:`fmt`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c) for c in row) + " |")
    return "\n".join(lines)


def print_settings(title: str, settings: dict[str, Any]) -> None:
    """Prints the command line, the environment and the benchmark settings."""
    print(f"# {title}")
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
        f"cuda {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}"
    )
    for key, value in settings.items():
        print(f"  {key}: {value}")
    sys.stdout.flush()


def write_json(path: str | os.PathLike | None, payload: dict[str, Any]) -> None:
    """Writes ``payload`` as JSON (NaN/inf as strings) when a path is given."""
    if not path:
        return

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (np.floating, float)):
            v = float(v)
            return v if math.isfinite(v) else str(v)
        if isinstance(v, np.integer):
            return int(v)
        return v

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(clean(payload), indent=2) + "\n")


def generate(
    model: Any, num: int, context: Any = None, batch_size: int = 2000, seed: int = 0
) -> np.ndarray:
    """Draws ``num`` samples in batches (context ``(p,)`` shared by all), float64 NumPy."""
    generator = torch.Generator(device=model.device).manual_seed(seed)
    ctx = None
    if context is not None:
        ctx = torch.as_tensor(np.asarray(context), dtype=model.dtype, device=model.device)
    out = []
    with torch.no_grad():
        for start in range(0, num, batch_size):
            b = min(batch_size, num - start)
            out.append(model.sample(b, ctx, generator=generator).double().cpu().numpy())
    return np.concatenate(out)


def run_jobs(
    commands: dict[str, list[str]],
    jobs: int,
    log_dir: str | os.PathLike,
    threads: int = 1,
    timeout: float | None = None,
) -> dict[str, int]:
    """Runs named commands in parallel processes, ``jobs`` at a time.

    Each process gets ``OMP_NUM_THREADS=threads`` and writes ``log_dir/NAME.log``. A process
    still running ``timeout`` seconds after it started is killed (return code -9).

    Returns:
        The return code of each command.
    """
    import subprocess

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    pending = list(commands)
    running: dict[str, tuple[subprocess.Popen, Any, float]] = {}
    codes: dict[str, int] = {}
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            log = open(log_dir / f"{name}.log", "w")
            proc = subprocess.Popen(commands[name], stdout=log, stderr=subprocess.STDOUT, env=env)
            running[name] = (proc, log, time.monotonic())
        time.sleep(0.5)
        for name, (proc, log, start) in list(running.items()):
            if proc.poll() is None and timeout is not None and time.monotonic() - start > timeout:
                proc.kill()
                proc.wait()
                print(f"[{name}] killed after {timeout:.0f} s", flush=True)
            if proc.poll() is not None:
                log.close()
                codes[name] = proc.returncode
                del running[name]
    return codes


def run_models(
    script: str,
    names: list[str],
    forwarded: list[str],
    labels: dict[str, str],
    jobs: int,
    threads: int = 1,
    timeout: float | None = None,
) -> list[dict[str, Any]]:
    """Runs ``script --models NAME --out TMP/NAME.json *forwarded`` per model (:func:`run_jobs`).

    Returns:
        The first result of each model's JSON, or ``{"model", "label", "failed": rc}`` for a
        model whose process failed (its log tail is printed).
    """
    import json
    import sys
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=f"{Path(script).stem}_"))
    commands = {
        m: [sys.executable, script, "--models", m, "--out", str(tmp / f"{m}.json"), *forwarded]
        for m in names
    }
    codes = run_jobs(commands, jobs, tmp, threads, timeout)
    results = []
    for name in names:
        path = tmp / f"{name}.json"
        if codes[name] == 0 and path.exists():
            results.append(json.loads(path.read_text())["results"][0])
        else:
            print(f"[{name}] FAILED (rc {codes[name]}); log tail:", flush=True)
            print((tmp / f"{name}.log").read_text()[-2000:], flush=True)
            results.append({"model": name, "label": labels[name], "failed": codes[name]})
    return results


def export_src(revision: str, target: Path) -> Path:
    """Extracts ``src/`` of a git revision of this repository into ``target``; returns its path."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", revision, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "src"


def replace_marked_block(text: str, marker: str, block: str, *, append: bool = False) -> str:
    """``text`` with the lines between ``<!-- marker:begin -->`` and ``<!-- marker:end -->``
    replaced by ``block`` (the generated parts of docs/benchmarks.md).

    Raises ``ValueError`` when the markers are missing, unless ``append`` is set: then the
    marked block is added at the end.
    """
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        if not append:
            raise ValueError(f"the markers {begin} ... {end} are missing")
        return text.rstrip("\n") + f"\n\n{begin}\n{block.rstrip()}\n{end}\n"
    return text[: start + len(begin)] + "\n" + block.rstrip() + "\n" + text[stop:]
