"""Where data files live, and how they get there: cache directory, download, checksums.

The data directory is, in order of precedence: the ``data_dir`` argument, the environment
variable ``MFLOWS_DATA_DIR``, ``$XDG_DATA_HOME/mflows``, ``~/.local/share/mflows``. Each data set
keeps its files in a sub-directory named after it.

Files are fetched into a temporary file next to their destination, checked against their
SHA256 (when known) and only then renamed into place, so an interrupted or corrupted download
never leaves a half-written file behind. Where the original sources publish no checksum, the
SHA256 of a file is recorded in the directory's ``SHA256SUMS`` the first time it is seen
(trust on first use) and verified on every later load. Every failure ends in one
:class:`DataNotAvailableError` naming the files expected and where to put them.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from mflows.errors import DataNotAvailableError

__all__ = [
    "CHECKSUM_FILE",
    "DataNotAvailableError",
    "RemoteFile",
    "data_dir",
    "dataset_dir",
    "download",
    "fetch",
    "google_drive_url",
    "sha256sum",
]

CHECKSUM_FILE = "SHA256SUMS"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A file a data set needs.

    Attributes:
        name: File name inside the data set's directory, e.g. ``"x_train.npy"``.
        url: Where to download it from (``http(s)://``, ``file://`` or a local path), or ``None``
            when it must be provided by hand.
        sha256: Expected SHA256 hex digest, or ``None`` when not published (then recorded on
            first use).
        size: Expected size in bytes, or ``None``.
    """

    name: str
    url: str | None = None
    sha256: str | None = None
    size: int | None = None


def google_drive_url(file_id: str) -> str:
    """Direct-download URL of a publicly shared Google Drive file (skips the virus-scan page)."""
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


def data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The root data directory (see the module docstring for the order of precedence)."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("MFLOWS_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "mflows"


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """The directory of data set ``name`` under :func:`data_dir`."""
    return data_dir(root) / name


def sha256sum(path: str | os.PathLike) -> str:
    """SHA256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_checksums(directory: Path) -> dict[str, str]:
    path = directory / CHECKSUM_FILE
    sums: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.strip().split(maxsplit=1)
            if len(parts) == 2:
                sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _write_checksums(directory: Path, sums: dict[str, str]) -> None:
    text = "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))
    atomic_write_bytes(directory / CHECKSUM_FILE, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        publish(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def publish(tmp: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Gives a finished temporary file the usual permissions and renames it to ``dest``."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600 files
    os.replace(tmp, dest)


def _remove(path: str | os.PathLike) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _open_source(source: str):
    """A binary stream and its length (or ``None``) for a URL or a local path."""
    parsed = urlparse(source)
    if parsed.scheme in ("http", "https", "ftp"):
        response = urlopen(Request(source, headers={"User-Agent": "mflows"}), timeout=60)
        content_type = response.headers.get("Content-Type", "") if response.headers else ""
        if content_type.startswith("text/html"):
            response.close()
            raise OSError(f"{source} returned an HTML page instead of the data file")
        length = response.headers.get("Content-Length") if response.headers else None
        return response, int(length) if length else None
    path = Path(parsed.path if parsed.scheme == "file" else source).expanduser()
    return open(path, "rb"), path.stat().st_size


def download(
    source: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    progress: bool = True,
) -> str:
    """Copies ``source`` (URL or local path) to ``dest`` atomically and returns its SHA256.

    The data go to a temporary file next to ``dest``; the digest (and size) are checked before
    the rename, and the temporary file is removed on any failure.

    Raises:
        OSError: The source cannot be read (``URLError`` is an ``OSError``).
        ValueError: The checksum or size does not match.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        stream, total = _open_source(source)
        h = hashlib.sha256()
        written = 0
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr)
        with stream, os.fdopen(fd, "wb") as out:
            fd = -1
            for chunk in iter(lambda: stream.read(_CHUNK), b""):
                out.write(chunk)
                h.update(chunk)
                written += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        if bar is not None:
            bar.close()
        digest = h.hexdigest()
        if size is not None and written != size:
            raise ValueError(f"size mismatch: expected {size} bytes, got {written}")
        if sha256 is not None and digest != sha256.lower():
            raise ValueError(f"checksum mismatch: expected sha256 {sha256}, got {digest}")
        publish(tmp, dest)
        return digest
    except BaseException:
        if fd >= 0:
            os.close(fd)
        _remove(tmp)
        raise


def fetch(
    dataset: str,
    files: Sequence[RemoteFile],
    directory: str | os.PathLike,
    *,
    download_missing: bool = True,
    progress: bool = True,
) -> dict[str, Path]:
    """Makes sure every file in ``files`` is in ``directory`` and intact; returns their paths.

    Present files are verified against their known SHA256 or the one recorded in
    ``directory/SHA256SUMS`` (a file seen for the first time has its digest recorded there).
    Missing files are downloaded when ``download_missing`` and a URL is known.

    Raises:
        DataNotAvailableError: One error for all problems, listing the expected files, where to
            put them and what went wrong with each.
    """
    directory = Path(directory)
    recorded = _read_checksums(directory)
    new_sums: dict[str, str] = {}
    problems: list[str] = []
    paths: dict[str, Path] = {}
    for spec in files:
        path = directory / spec.name
        paths[spec.name] = path
        expected = spec.sha256 or recorded.get(spec.name)
        try:
            if path.is_file():
                if spec.size is not None and path.stat().st_size != spec.size:
                    raise ValueError(
                        f"size mismatch: expected {spec.size} bytes, got {path.stat().st_size}"
                    )
                digest = sha256sum(path)
                if expected is not None and digest != expected.lower():
                    raise ValueError(
                        f"checksum mismatch: expected sha256 {expected}, got {digest} "
                        "(the file is corrupted or was replaced; delete it to download it again)"
                    )
            elif not download_missing:
                raise FileNotFoundError("missing (downloads disabled)")
            elif spec.url is None:
                raise FileNotFoundError("missing, and no download URL is known")
            else:
                digest = download(
                    spec.url, path, sha256=expected, size=spec.size, progress=progress
                )
            if recorded.get(spec.name) != digest and spec.sha256 is None:
                new_sums[spec.name] = digest
        except (OSError, ValueError) as error:
            reason = error.reason if isinstance(error, URLError) else error
            problems.append(f"{spec.name}: {reason}")
    if new_sums:
        try:
            _write_checksums(directory, {**recorded, **new_sums})
        except OSError:  # a read-only data directory still loads; the digest is just not kept
            pass
    if problems:
        raise DataNotAvailableError(_message(dataset, files, directory, problems))
    return paths


def _message(
    dataset: str, files: Iterable[RemoteFile], directory: Path, problems: list[str]
) -> str:
    lines = [
        f"The data set {dataset!r} is not available.",
        "Problems:",
        *(f"  - {p}" for p in problems),
        f"Expected these files in {directory}:",
    ]
    for spec in files:
        where = f" (from {spec.url})" if spec.url else ""
        lines.append(f"  - {spec.name}{where}")
    lines.append(
        "Download them by hand (or copy them from another machine) into that directory, or "
        "point mflows at a directory that has them with data_dir=... or the environment "
        "variable MFLOWS_DATA_DIR (each data set lives in a sub-directory named after it)."
    )
    return "\n".join(lines)
