"""Your own data as a :class:`~mflows.data.Dataset`: :func:`from_arrays` and :func:`load_array`.

A data set built from arrays is usable everywhere a registered one is (``load`` of the three
splits, ``data_dim``, ``parameter_dim``, ``default_theta``), so ``fit``, ``score`` and the
command line work on it unchanged. Nothing about the truth is known: ``has_truth`` says so and
the truth methods raise :class:`NotImplementedError`, except ``sample_ood`` when OOD points were
given. Metrics that need no truth (reconstruction error, log-likelihood, OOD AUC) still apply.

Example:
    >>> import numpy as np
    >>> from mflows import data
    >>> x = np.random.default_rng(0).normal(size=(500, 3))
    >>> ds = data.from_arrays(x, name="mine")
    >>> ds.load("train").x.shape, ds.load("test").x.shape
    ((400, 3), (50, 3))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mflows.errors import InvalidArgumentError

from .base import SPLITS, Batch, Dataset, SeedLike

__all__ = ["ArrayDataset", "from_arrays", "load_array"]

#: how many offending row indices an error message lists.
_SHOW_ROWS = 5


def _rows_text(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:_SHOW_ROWS])
    more = f", ... ({len(rows)} rows in all)" if len(rows) > _SHOW_ROWS else ""
    return f"{shown}{more}"


def _as_rows(what: str, value: Any, *, vector_ok: bool) -> np.ndarray:
    """``value`` as a float32 array with one row per point; checks dtype, rank and finiteness."""
    try:
        array = np.asarray(value)
    except Exception as error:  # ragged lists and the like
        raise InvalidArgumentError(f"{what} cannot be read as an array: {error}") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InvalidArgumentError(f"{what} must hold numbers, got dtype {array.dtype}")
    if array.ndim == 1 and vector_ok:
        array = array[:, None]
    if array.ndim == 1:
        raise InvalidArgumentError(
            f"{what} must have one row per point, shape (N, d); got shape {array.shape} "
            "(for one feature use x[:, None])"
        )
    if array.ndim not in (2, 4):
        raise InvalidArgumentError(
            f"{what} must be (N, d) vectors or (N, C, H, W) images; got shape {array.shape}"
        )
    if array.shape[0] == 0:
        raise InvalidArgumentError(f"{what} is empty (shape {array.shape})")
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))
    if bad.size:
        raise InvalidArgumentError(
            f"{what} has {bad.size} row(s) with NaN or infinite values (rows {_rows_text(bad)}); "
            "remove or impute them"
        )
    return array


class ArrayDataset(Dataset):
    """Your own data, given as arrays (built by ``from_arrays``)."""

    name = "arrays"

    def __init__(
        self,
        splits: dict[str, tuple[np.ndarray, np.ndarray | None]],
        *,
        name: str,
        x_ood: np.ndarray | None,
        latent_dim: int | None,
        default_theta: np.ndarray | None,
    ) -> None:
        self.name = name  # type: ignore[misc]  # an instance name, unlike the registered sets
        self._splits = splits
        self._x_ood = x_ood
        x = splits["train"][0]
        self.data_dim = x.shape[1] if x.ndim == 2 else tuple(x.shape[1:])
        self.latent_dim = latent_dim
        theta = splits["train"][1]
        self.parameter_dim = 0 if theta is None else int(theta.shape[1])
        self.default_theta = default_theta
        self.theta_range = (
            None
            if theta is None
            else (theta.min(axis=0).astype(np.float64), theta.max(axis=0).astype(np.float64))
        )

    def __len__(self) -> int:
        return sum(len(x) for x, _ in self._splits.values())

    def split_size(self, split: str) -> int:
        """Number of points in ``split``."""
        self._check_split(split)
        return len(self._splits[split][0])

    def load(self, split: str, n: int | None = None, seed: int = 0) -> Batch:
        """The first ``n`` points of ``split`` (all of them when ``n`` is None or larger).

        ``seed`` is accepted for the protocol and ignored: the splits are fixed arrays.
        """
        self._check_split(split)
        x, theta = self._splits[split]
        if len(x) == 0:
            raise ValueError(f"{self.name}: the {split} split is empty")
        if n is not None:
            if n < 0:
                raise ValueError(f"{self.name}: expected n >= 0, got {n}")
            x = x[:n]
            theta = None if theta is None else theta[:n]
        return Batch(x, theta, None)

    def sample_ood(self, n: int, seed: SeedLike = None) -> np.ndarray:
        """The first ``n`` of the out-of-distribution points given to :func:`from_arrays`."""
        if self._x_ood is None:
            raise NotImplementedError(f"{self.name}: no out-of-distribution points were given")
        return self._x_ood[:n]

    @property
    def has_truth(self) -> dict[str, bool]:
        truth = dict.fromkeys(super().has_truth, False)
        truth["sample_ood"] = self._x_ood is not None
        return truth

    def _extra_description(self) -> list[str]:
        sizes = ", ".join(f"{s} {self.split_size(s)}" for s in SPLITS)
        lines = [f"points:             {sizes}"]
        if self._x_ood is not None:
            lines.append(f"OOD points:         {len(self._x_ood)}")
        if self.theta_range is not None:
            low, high = self.theta_range
            lines.append(f"theta range:        {low.tolist()} .. {high.tolist()}")
        return lines


def from_arrays(
    x: Any,
    theta: Any = None,
    x_test: Any = None,
    theta_test: Any = None,
    x_val: Any = None,
    theta_val: Any = None,
    x_ood: Any = None,
    *,
    name: str = "arrays",
    latent_dim: int | None = None,
    default_theta: Any = None,
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
    split_seed: int = 0,
) -> ArrayDataset:
    """A data set from your own arrays, usable wherever a registered data set is.

    Splits that are not given are carved off ``x`` (rows picked by a fixed permutation drawn
    from ``split_seed``, so the same arrays always give the same splits): ``test_fraction``
    for the test split, then ``val_fraction`` for the validation split; the rest is ``train``.

    Args:
        x: ``(N, d)`` points (or ``(N, C, H, W)`` images).
        theta: ``(N, p)`` parameters of each point (a 1-D array means p = 1), for conditional
            models; None: unconditional.
        x_test, theta_test: an explicit test split (``theta_test`` needed when ``theta`` is
            given).
        x_val, theta_val: an explicit validation split.
        x_ood: out-of-distribution points, for the OOD AUC.
        name: the name shown in reports.
        latent_dim: the manifold dimension when known (else the model's must be set).
        default_theta: the parameter point to sample and evaluate generated samples at
            (default: the mean of the training ``theta``).
        test_fraction: fraction of ``x`` held out as test split when ``x_test`` is None.
        val_fraction: fraction of ``x`` held out as validation split when ``x_val`` is None.
        split_seed: seed of the permutation that carves the splits.

    Raises:
        InvalidArgumentError: for arrays that are not numeric, have the wrong rank or
            dimensions, mismatched lengths, or rows with NaN / infinite values (the message
            names the first few rows).
    """
    x = _as_rows("x", x, vector_ok=False)
    conditional = theta is not None
    if conditional:
        theta = _as_rows("theta", theta, vector_ok=True)
        if theta.ndim != 2:
            raise InvalidArgumentError(f"theta must be (N, p), got shape {theta.shape}")
        if len(theta) != len(x):
            raise InvalidArgumentError(
                f"x and theta must have one row per point: x has {len(x)} rows, theta {len(theta)}"
            )

    def explicit(what: str, xs: Any, thetas: Any) -> tuple[np.ndarray, np.ndarray | None] | None:
        if xs is None:
            if thetas is not None:
                raise InvalidArgumentError(f"theta_{what} given without x_{what}")
            return None
        xs = _as_rows(f"x_{what}", xs, vector_ok=False)
        if xs.shape[1:] != x.shape[1:]:
            raise InvalidArgumentError(
                f"x_{what} has points of shape {xs.shape[1:]}, x has {x.shape[1:]}"
            )
        if not conditional:
            if thetas is not None:
                raise InvalidArgumentError(f"theta_{what} given but x has no theta")
            return xs, None
        if thetas is None:
            raise InvalidArgumentError(
                f"theta_{what} is needed with x_{what}: the training data are conditional"
            )
        thetas = _as_rows(f"theta_{what}", thetas, vector_ok=True)
        if thetas.shape[1:] != theta.shape[1:]:
            raise InvalidArgumentError(
                f"theta_{what} has {thetas.shape[1]} parameter(s), theta has {theta.shape[1]}"
            )
        if len(thetas) != len(xs):
            raise InvalidArgumentError(
                f"x_{what} and theta_{what} must have one row per point: {len(xs)} vs "
                f"{len(thetas)} rows"
            )
        return xs, thetas

    test = explicit("test", x_test, theta_test)
    val = explicit("val", x_val, theta_val)
    for key, value in {"test_fraction": test_fraction, "val_fraction": val_fraction}.items():
        if not 0.0 <= value < 1.0:
            raise InvalidArgumentError(f"{key} must be in [0, 1), got {value}")
    order = np.random.default_rng(split_seed).permutation(len(x))
    n_test = 0 if test is not None else round(test_fraction * len(x))
    n_val = 0 if val is not None else round(val_fraction * len(x))
    if len(x) - n_test - n_val < 2:
        raise InvalidArgumentError(
            f"x has only {len(x)} rows: too few to train on after holding out the test and "
            "validation splits"
        )

    def take(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        rows = np.sort(rows)
        return x[rows], None if theta is None else theta[rows]

    splits = {
        "test": test if test is not None else take(order[:n_test]),
        "val": val if val is not None else take(order[n_test : n_test + n_val]),
        "train": take(order[n_test + n_val :]),
    }
    if x_ood is not None:
        x_ood = _as_rows("x_ood", x_ood, vector_ok=False)
        if x_ood.shape[1:] != x.shape[1:]:
            raise InvalidArgumentError(
                f"x_ood has points of shape {x_ood.shape[1:]}, x has {x.shape[1:]}"
            )
    if latent_dim is not None:
        d = int(np.prod(x.shape[1:]))
        if not 0 < int(latent_dim) < d:
            raise InvalidArgumentError(f"latent_dim must be in [1, {d - 1}], got {latent_dim}")
    if conditional:
        train_theta = splits["train"][1]
        default = train_theta.mean(axis=0) if default_theta is None else default_theta
        default = np.asarray(default, dtype=np.float32).reshape(-1)
        if default.shape != (theta.shape[1],) or not np.isfinite(default).all():
            raise InvalidArgumentError(
                f"default_theta must be {theta.shape[1]} finite value(s), got {default.tolist()}"
            )
    else:
        if default_theta is not None:
            raise InvalidArgumentError("default_theta given but x has no theta")
        default = None
    if not name or not isinstance(name, str):
        raise InvalidArgumentError(f"name must be a non-empty string, got {name!r}")
    return ArrayDataset(
        splits, name=name, x_ood=x_ood, latent_dim=latent_dim, default_theta=default
    )


def load_array(path: str | Path, key: str | None = None) -> np.ndarray:
    """Reads an array from a ``.npy``, ``.npz`` or ``.csv`` file.

    ``.npz``: the only array in the file, else the array named ``key`` (default ``x``), so one
    ``.npz`` can hold ``x``, ``theta``, ``x_test``, ... side by side. ``.csv``:
    comma-separated numbers, one row per point; a first line that is not numeric is taken as a
    header and skipped; empty or non-numeric fields raise.

    Raises:
        FileNotFoundError: no such file.
        InvalidArgumentError: an unknown suffix or a file that cannot be parsed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "No such file", str(path))
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                if len(names) == 1:
                    return archive[names[0]]
                key = key or "x"
                if key not in names:
                    raise InvalidArgumentError(
                        f"{path} holds arrays {', '.join(names)}; no array named {key!r}"
                    )
                return archive[key]
        if suffix in (".csv", ".txt"):
            return _load_csv(path)
    except InvalidArgumentError:
        raise
    except (ValueError, OSError, EOFError) as error:
        raise InvalidArgumentError(f"cannot read {path}: {error}") from None
    raise InvalidArgumentError(f"{path}: unknown file type {suffix!r}; use .npy, .npz or .csv")


def _load_csv(path: Path) -> np.ndarray:
    with path.open() as handle:
        first = handle.readline()
    skip = 0
    try:
        [float(v) for v in first.strip().split(",") if v.strip()]
    except ValueError:
        skip = 1  # a header line
    try:
        array = np.loadtxt(path, delimiter=",", skiprows=skip, dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise InvalidArgumentError(
            f"cannot read {path} as comma-separated numbers: {error}"
        ) from None
    return array
