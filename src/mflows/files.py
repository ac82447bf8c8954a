"""Atomic file writing: a reader never sees a half-written file, a crash never destroys the old one.

Every writer in mflows goes through :func:`atomic_path` (or the helpers built on it): the content
is written to a temporary file in the destination's directory, flushed to disk, given the usual
permissions and renamed over the destination with :func:`os.replace`, which is atomic on POSIX
and Windows. If anything fails before the rename, the temporary file is removed and the old
destination is untouched.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_torch_save", "atomic_write"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temporary path next to ``path``; on success it is renamed to ``path``.

    Args:
        path: the destination file; its parent directory is created if missing.
        suffix: suffix of the temporary file (some writers, e.g. ``numpy.save``, need ``.npy``).

    Example::

        with atomic_path("model.pt") as tmp:
            torch.save(state, tmp)
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600 files
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes, encoding: str = "utf-8") -> Path:
    """Writes text or bytes to ``path`` atomically and returns the path."""
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically; ``obj`` should hold plain types and tensors only,
    so that it can be read back with ``torch.load(..., weights_only=True)``."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)
