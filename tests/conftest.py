"""Shared test helpers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mflows.experiments.rundir import LOCK_FILE


@contextmanager
def _held(run_dir: Path) -> Iterator[int]:
    """Writes the lock of ``run_dir`` as held by a live process (its pid is yielded); the process
    ends on exit, which leaves the lock stale."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (Path(run_dir) / LOCK_FILE).write_text(f"{other.pid}\n")
        yield other.pid
    finally:
        other.kill()
        other.wait()


@pytest.fixture
def held_by_another_process():
    """``with held_by_another_process(run_dir) as pid:`` another live process holds the lock."""
    return _held
