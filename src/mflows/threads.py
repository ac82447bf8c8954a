"""Intra-op thread policy: small models run on one CPU thread unless the user says otherwise.

torch uses one intra-op thread per core by default. For the small tabular flows of mflows a
training step is thousands of tiny ops (a 100 x 100 matrix product takes ~25 us); splitting
them over threads gains little on an idle machine, and when another process keeps a core busy
every op waits for the descheduled thread: one epoch of a 4-d M-flow then took 85 s of CPU
instead of 2.4 s. So mflows picks the thread count from the work per step:

* the user's choice always wins: an explicit ``threads`` argument (the CLI's ``--threads``),
  ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` in the environment, or a call of
  ``torch.set_num_threads`` (detected as a count different from the one torch started with and
  from the last one mflows set);
* otherwise :func:`recommended_threads`: 1 thread below :data:`WORK_PER_THREAD`
  multiply-adds per forward pass (parameters x batch size, x H x W for image models), then one
  more thread per further :data:`WORK_PER_THREAD`, capped at the CPUs this process may use.

:func:`apply_default_policy` sets the count; :func:`thread_policy` is the context-manager form,
restoring the previous count on exit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from mflows.errors import InvalidArgumentError

__all__ = [
    "WORK_PER_THREAD",
    "apply_default_policy",
    "available_cpus",
    "recommended_threads",
    "thread_policy",
    "user_threads",
]

#: Multiply-adds per forward pass (parameters x batch) that justify one more thread.
WORK_PER_THREAD = 1_000_000_000

_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_STARTUP = torch.get_num_threads()
_applied: int | None = None


def available_cpus() -> int:
    """CPUs this process may run on (affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def _natural_defaults() -> set[int]:
    cpus = os.cpu_count() or 1
    return {cpus, available_cpus(), max(1, cpus // 2)}


def user_threads(environ: Mapping[str, str] | None = None) -> int | None:
    """The intra-op thread count the user chose, or ``None`` if they did not choose one.

    Looks at ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` (first valid positive integer), then at
    ``torch.get_num_threads()``: a count that differs from the one torch started with (and from
    the last one mflows applied), or a start-up count that is not one of torch's defaults (the
    number of CPUs), means ``torch.set_num_threads`` was called.
    """
    environ = os.environ if environ is None else environ
    for name in _ENV_VARS:
        value = environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    current = torch.get_num_threads()
    if _applied is not None and current == _applied:
        return None
    if current != _STARTUP or _STARTUP not in _natural_defaults():
        return current
    return None


def _pixels(model: nn.Module | None) -> int:
    """H x W for image models (convolution weights are applied at every pixel), else 1."""
    shape = getattr(model, "data_dim", None)
    if isinstance(shape, (tuple, list)) and len(shape) == 3:
        return int(shape[1]) * int(shape[2])
    return 1


def recommended_threads(
    model: nn.Module | None = None, batch_size: int = 100, *, parameters: int | None = None
) -> int:
    """Thread count for training or evaluating ``model`` at ``batch_size`` (module docstring).

    Args:
        model: the model (its parameter count measures the work); or give ``parameters``.
        batch_size: samples per step.
        parameters: parameter count, instead of ``model``.

    Returns:
        An integer in ``[1, available_cpus()]``.
    """
    if parameters is None:
        parameters = 0 if model is None else sum(p.numel() for p in model.parameters())
    work = int(parameters) * max(1, int(batch_size)) * _pixels(model)
    return max(1, min(available_cpus(), work // WORK_PER_THREAD + 1))


def apply_default_policy(
    model: nn.Module | None = None,
    batch_size: int = 100,
    threads: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Sets torch's intra-op thread count by the policy and returns the count in effect.

    Args:
        model: the model to be trained or evaluated.
        batch_size: samples per step.
        threads: explicit count (e.g. the CLI's ``--threads``); wins over everything.
        environ: environment to read (default ``os.environ``).

    Raises:
        InvalidArgumentError: ``threads`` is not a positive integer.
    """
    global _applied
    if threads is not None:
        if isinstance(threads, bool) or int(threads) != threads or threads < 1:
            raise InvalidArgumentError(f"threads must be a positive integer, got {threads!r}")
        count = int(threads)
    else:
        chosen = user_threads(environ)
        if chosen is not None:
            return torch.get_num_threads()
        count = recommended_threads(model, batch_size)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    _applied = count
    return count


@contextlib.contextmanager
def thread_policy(
    model: nn.Module | None = None,
    batch_size: int = 100,
    threads: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Iterator[int]:
    """Context manager: :func:`apply_default_policy`, then restore the previous count.

    Yields:
        The thread count in effect inside the block.
    """
    global _applied
    previous, previous_applied = torch.get_num_threads(), _applied
    try:
        yield apply_default_policy(model, batch_size, threads, environ)
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
        _applied = previous_applied
