"""Optional compilation with ``torch.compile``: compile what compiles, fall back cleanly.

:func:`compile_function` wraps a function (a loss, a model method) so that the first call
compiles it; where compilation or the compiled call fails (``vmap(jacfwd)`` inside the exact
M-flow likelihood does not compile in current torch, a platform may lack a C++ compiler), one
:class:`CompileFallbackWarning` is issued and the plain function is used from then on. Errors
that the plain function raises too (bad inputs) propagate unchanged, without the warning.

Compilation costs seconds to minutes once per process and per input shape (the last, smaller
batch of an epoch compiles a second graph unless ``dynamic`` is set), so it pays off on long
runs only; docs/benchmarks.md has the numbers.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["CompileFallbackWarning", "compile_function", "compile_losses", "module_guard_options"]

F = TypeVar("F", bound=Callable[..., Any])


#: Compiled variants kept per compiled function (torch's default is 8); see _recompile_limit.
RECOMPILE_LIMIT = 64


class CompileFallbackWarning(RuntimeWarning):
    """``torch.compile`` failed on a function; mflows runs it uncompiled instead."""


def compile_function(fn: F, *, name: str | None = None, **options: Any) -> F:
    """``torch.compile(fn, **options)`` with a clean fallback to ``fn``.

    Args:
        fn: the function to compile.
        name: label in the warning (default: ``fn.__qualname__``).
        **options: keyword arguments of ``torch.compile`` (``mode``, ``dynamic``, ``backend``...).

    Returns:
        A function with the signature of ``fn``; its ``compiled`` attribute says whether the
        compiled version is in use (``None`` until the first call).
    """
    label = name or getattr(fn, "__qualname__", repr(fn))
    try:
        compiled = torch.compile(fn, **options)
    except Exception as error:  # pragma: no cover - torch.compile unavailable on the platform
        compiled = None
        reason: Exception | None = error
    else:
        reason = None

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if wrapper.compiled is not False and compiled is not None:
            try:
                with _recompile_limit(RECOMPILE_LIMIT), _quiet_fallback_notes():
                    out = compiled(*args, **kwargs)
            except Exception as error:
                try:
                    out = fn(*args, **kwargs)
                except Exception:
                    raise  # the plain function fails too: a genuine error, not a compile one
                _fallback(label, error)
                wrapper.compiled = False
                return out
            wrapper.compiled = True
            return out
        if wrapper.compiled is None and reason is not None:
            _fallback(label, reason)
            wrapper.compiled = False
        return fn(*args, **kwargs)

    wrapper.compiled = None  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _recompile_limit(limit: int):
    """Raises torch's per-function limit of compiled variants for the duration of a call.

    torch keeps at most ``recompile_limit`` (8) graphs per Python function and runs it
    uncompiled from then on, with one log line. The training losses are one function for every
    model, phase, batch size and train/eval mode that a process trains, so a process that fits
    several models (a sweep, the paper runner, sbi rounds) reached the limit after about five
    models and trained the rest eagerly, twice as slow.
    """
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    return config.patch({name: max(limit, getattr(config, name))})


class _DropFallbackNotes(logging.Filter):
    """Drops inductor's note that an op runs through its generic dispatcher (see below)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "missing a c-shim implementation" not in record.getMessage()


_DROP_FALLBACK_NOTES = _DropFallbackNotes()


@contextlib.contextmanager
def _quiet_fallback_notes():
    """Silences inductor's per-op warning "... is missing a c-shim implementation".

    With the C++ wrapper, inductor logs one warning for every call site of an op without a C
    entry point (``linalg_solve_triangular`` of the LU layers: dozens per graph), and runs it
    through torch's dispatcher: correct, and not something a user can act on.
    """
    logger = logging.getLogger("torch._inductor.ir")
    logger.addFilter(_DROP_FALLBACK_NOTES)
    try:
        yield
    finally:
        logger.removeFilter(_DROP_FALLBACK_NOTES)


def _fallback(label: str, error: Exception) -> None:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    warnings.warn(
        f"torch.compile failed on {label} ({type(error).__name__}: {first[:200]}); "
        "running it uncompiled",
        CompileFallbackWarning,
        stacklevel=3,
    )


def compile_losses(losses: F, *, fixed_modules: bool = False, **options: Any) -> F:
    """Compiles a training loss function of ``(model, batch...)`` (see :func:`compile_function`).

    The intended hook: ``fit(..., compile=True)`` wraps the trainer's loss computation once per
    run, ``losses = compile_losses(compute_losses)``, and keeps its finiteness checks (host
    synchronisations) outside the compiled function, where they cause no graph break.

    Args:
        losses: the loss function.
        fixed_modules: the caller calls the result with one set of modules only, whose
            attributes do not change between calls (a trainer and its model). The compiled
            variants are then private to this call (see :func:`module_guard_options`).
        **options: keyword arguments of ``torch.compile``.
    """
    options.setdefault("dynamic", False)
    if fixed_modules:
        extra = module_guard_options()
        if extra:
            inner = {**extra.pop("options"), **dict(options.get("options") or {})}
            options.update(extra, options=inner)
    return compile_function(losses, name=getattr(losses, "__qualname__", None), **options)


def module_guard_options() -> dict[str, Any]:
    """``torch.compile`` options for a function that always sees the same, unchanging modules.

    Before each compiled call, torch checks guards on the attributes of every module the
    function reads (0.4 ms a call for the power M-flow, 5 % of a compiled step). A trainer
    calls its losses with one model, always in training mode, so those checks cannot fail; the
    guards on the other arguments (shapes, the loss weights) stay. Skipping them is only sound
    if no other model can reach these compiled variants: they are kept apart from those of
    every other ``torch.compile`` of the same function (``isolate_recompiles``), at the price
    of compiling again for each such call (the trainer makes one per model architecture).
    Empty where torch lacks either option (before 2.13).
    """
    skip = getattr(torch.compiler, "skip_guard_on_all_nn_modules_unsafe", None)
    if skip is None or "isolate_recompiles" not in inspect.signature(torch.compile).parameters:
        return {}
    return {"isolate_recompiles": True, "options": {"guard_filter_fn": skip}}
