"""``lorenz``: points on trajectories of the Lorenz system (d = 3, attractor of dimension ~2).

    dx/dt = sigma (y - x),  dy/dt = x (rho - z) - y,  dz/dt = x y - beta z,

with sigma = 10, beta = 8/3, rho = 28. ``num_trajectories`` initial states ``1 + 0.1 N(0, I)``
(drawn from ``trajectory_seed``) are integrated with SciPy's ``solve_ivp`` (DOP853, relative
and absolute tolerance 1e-9) from t = 0 to ``t_max``; ``steps`` equally spaced states from
``warmup`` to ``t_max`` are kept and standardised with fixed means and standard deviations.
All trajectories are integrated together as one vectorised system, in time chunks to bound
memory, and cached on disk (float32, written atomically) under the data directory with a key that
includes every option; a SHA-256 checksum stored next to the cache is checked when the cache is
opened, and a garbled, truncated or unverifiable cache is rebuilt (with a warning). Data points are
states picked at random: splits use disjoint sets of stored time steps (step index modulo 10: 0-7
train, 8 val, 9 test).

The attractor has no tractable density (``log_density`` raises ``NotImplementedError``) and no
closed-form distance. ``distance_to_manifold`` and ``project_to_manifold`` therefore use the
nearest of ``reference_points`` stored states (evenly strided over all trajectories and steps, in
standardised coordinates, searched with a k-d tree): an approximation whose resolution is the
spacing of the reference states (with the defaults: held-out test states lie at a median
0.0025 and a 90% quantile of 0.005 from it, the OOD points, noise 0.1, at a median 0.06; the
tree is built in about 2 s). Both are exact for the stored reference states themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..files import atomic_write
from .base import SPLITS, Batch, SeedLike, SimulatedDataset, as_rng, split_rng
from .download import dataset_dir, publish

__all__ = ["Lorenz"]

MEANS = np.array([-0.68170659, -0.55421554, 23.71924285])
STDS = np.array([7.98203267, 9.0880048, 8.31979251])
_SPLIT_RESIDUES = {"train": np.arange(8), "val": np.array([8]), "test": np.array([9])}


class Lorenz(SimulatedDataset):
    """Random points on trajectories of the Lorenz system, standardised (d = 3, n = 2).

    Args:
        num_trajectories: Number of trajectories (random initial states), default 100.
        steps: States stored per trajectory, equally spaced in ``[warmup, t_max]``, default 10^6.
        t_max: End of the integration, default 1000.
        warmup: Start of the stored part, default 50.
        trajectory_seed: Seed of the initial states, default 711.
        sigma, beta, rho: The Lorenz parameters.
        rtol, atol: Tolerances of the integrator.
        data_dir: Root data directory of the cache (see :func:`mflows.data.download.data_dir`).
        cache: Whether to keep the trajectories on disk.
        progress: Whether to print a progress message and bar while integrating.
        reference_points: Stored states used by ``distance_to_manifold`` and
            ``project_to_manifold`` (nearest-neighbour approximation of the attractor).
    """

    name = "lorenz"
    data_dim = 3
    latent_dim = 2

    def __init__(
        self,
        num_trajectories: int = 100,
        steps: int = 1_000_000,
        t_max: float = 1000.0,
        warmup: float = 50.0,
        trajectory_seed: int = 711,
        sigma: float = 10.0,
        beta: float = 8.0 / 3.0,
        rho: float = 28.0,
        rtol: float = 1e-9,
        atol: float = 1e-9,
        data_dir: str | os.PathLike | None = None,
        cache: bool = True,
        progress: bool = True,
        reference_points: int = 1_000_000,
    ) -> None:
        if num_trajectories < 1 or steps < 10:
            raise ValueError(
                f"lorenz: expected num_trajectories >= 1 and steps >= 10, "
                f"got {num_trajectories} and {steps}"
            )
        if not 0.0 <= warmup < t_max:
            raise ValueError(f"lorenz: expected 0 <= warmup < t_max, got {warmup} and {t_max}")
        self.options = {
            "num_trajectories": int(num_trajectories),
            "steps": int(steps),
            "t_max": float(t_max),
            "warmup": float(warmup),
            "trajectory_seed": int(trajectory_seed),
            "sigma": float(sigma),
            "beta": float(beta),
            "rho": float(rho),
            "rtol": float(rtol),
            "atol": float(atol),
        }
        self.data_dir = data_dir
        self.cache = cache
        self.progress = progress
        if int(reference_points) < 1:
            raise ValueError(f"lorenz: expected reference_points >= 1, got {reference_points}")
        self.reference_points = int(reference_points)
        self._trajectories: np.ndarray | None = None
        self._tree = None

    # Trajectories -----------------------------------------------------------------------------

    @property
    def cache_path(self) -> Path:
        """The cache file for these options."""
        key = hashlib.sha256(json.dumps(self.options, sort_keys=True).encode()).hexdigest()[:16]
        return dataset_dir(self.name, self.data_dir) / f"trajectories-{key}.npy"

    def initial_states(self) -> np.ndarray:
        """The ``(num_trajectories, 3)`` initial states ``1 + 0.1 N(0, I)``."""
        rng = np.random.default_rng(self.options["trajectory_seed"])
        return 1.0 + 0.1 * rng.standard_normal((self.options["num_trajectories"], 3))

    def trajectories(self) -> np.ndarray:
        """Raw (unstandardised) states ``(num_trajectories, steps, 3)``, cached on disk."""
        if self._trajectories is None:
            path = self.cache_path
            shape = (self.options["num_trajectories"], self.options["steps"], 3)
            if self.cache and path.is_file() and not _cache_is_valid(path, shape):
                warnings.warn(
                    f"lorenz: the cache {path} is damaged or unverified; rebuilding it",
                    RuntimeWarning,
                    stacklevel=2,
                )
                _remove_cache(path)
            if self.cache and not path.is_file():
                announce_cache(path, shape, self.progress)
                _integrate_to_file(self._integrate, path, shape)
            if self.cache:
                self._trajectories = np.load(path, mmap_mode="r")
            else:
                self._trajectories = self._integrate(np.empty(shape, dtype=np.float32))
        return self._trajectories

    def _integrate(self, out: np.ndarray) -> np.ndarray:
        """Integrates every trajectory into ``out`` ``(num_trajectories, steps, 3)``."""
        from scipy.integrate import solve_ivp

        o = self.options
        sigma, beta, rho = o["sigma"], o["beta"], o["rho"]
        m, steps = o["num_trajectories"], o["steps"]

        def rhs(t: float, state: np.ndarray) -> np.ndarray:
            x, y, z = state.reshape(m, 3).T
            return np.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], 1).ravel()

        def solve(t0: float, t1: float, y0: np.ndarray, t_eval: np.ndarray | None) -> np.ndarray:
            result = solve_ivp(
                rhs, (t0, t1), y0, method="DOP853", t_eval=t_eval, rtol=o["rtol"], atol=o["atol"]
            )
            if not result.success:
                raise RuntimeError(f"lorenz: integration failed: {result.message}")
            return result.y

        if self.progress:
            print(
                f"lorenz: integrating {m} trajectories with {steps} stored steps "
                f"(one-off; cached at {self.cache_path if self.cache else 'nowhere'})",
                file=sys.stderr,
            )
        times = np.linspace(o["warmup"], o["t_max"], steps)
        state = solve(0.0, o["warmup"], self.initial_states().ravel(), None)[:, -1]
        chunks = np.array_split(np.arange(steps), max(1, steps // 50_000))
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(chunks), desc="lorenz", unit="chunk", file=sys.stderr)
        t_prev = o["warmup"]
        for idx in chunks:
            t_eval = times[idx]
            ys = solve(t_prev, t_eval[-1], state, t_eval)
            out[:, idx, :] = ys.reshape(m, 3, len(idx)).transpose(0, 2, 1)
            state, t_prev = ys[:, -1], t_eval[-1]
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return out

    # Data -------------------------------------------------------------------------------------

    def standardise(self, x: np.ndarray) -> np.ndarray:
        """``(x - means) / stds`` with the fixed constants of the paper."""
        return (np.asarray(x, dtype=np.float64) - MEANS) / STDS

    def _pick(self, n: int, rng: np.random.Generator, residues: np.ndarray | None) -> np.ndarray:
        traj = self.trajectories()
        m, steps = traj.shape[:2]
        if residues is None:
            flat = rng.integers(0, m * steps, size=n)
        else:
            blocks = (m * steps) // 10
            flat = 10 * rng.integers(0, blocks, size=n) + rng.choice(residues, size=n)
        order = np.argsort(flat)  # sorted reads are kinder to the memory map
        x = np.empty((n, 3))
        x[order] = traj.reshape(m * steps, 3)[flat[order]]
        return self.standardise(x)

    def sample(self, n: int, theta: np.ndarray | None = None, seed: SeedLike = None) -> np.ndarray:
        """``n`` random stored states (any split), standardised, ``(n, 3)``."""
        self._theta_rows(theta, n)
        return self._pick(int(n), as_rng(seed), None)

    def load(self, split: str, n: int | None = None, seed: int = 0) -> Batch:
        self._check_split(split)
        n = self.split_sizes[split] if n is None else int(n)
        x = self._pick(n, split_rng(seed, split), _SPLIT_RESIDUES[split])
        return Batch(x.astype(np.float32), None, None)

    def _reference_tree(self):
        if self._tree is None:
            from scipy.spatial import cKDTree

            flat = self.trajectories().reshape(-1, 3)
            stride = max(1, len(flat) // self.reference_points)
            reference = np.ascontiguousarray(self.standardise(flat[::stride]))
            self._tree = cKDTree(reference)
        return self._tree

    def _nearest(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != 3 or not np.isfinite(x).all():
            raise ValueError(f"lorenz: expected finite points of shape (B, 3), got {x.shape}")
        tree = self._reference_tree()
        distance, index = tree.query(x, workers=-1)
        return distance, tree.data[index]

    def distance_to_manifold(self, x: np.ndarray) -> np.ndarray:
        """Distance of standardised points ``(B, 3)`` to the nearest reference state, ``(B,)``."""
        return self._nearest(x)[0]

    def project_to_manifold(self, x: np.ndarray) -> np.ndarray:
        """The nearest reference state of each standardised point, ``(B, 3)``."""
        return self._nearest(x)[1]

    def sample_ood(self, n: int, seed: SeedLike = None) -> np.ndarray:
        """Data points plus ``N(0, 0.1^2 I)`` noise (as the original code did), ``(n, 3)``."""
        rng = as_rng(seed)
        return self.sample(n, None, rng) + 0.1 * rng.standard_normal((n, 3))

    def _extra_description(self) -> list[str]:
        o = self.options
        return [
            f"{o['num_trajectories']} trajectories x {o['steps']} steps in "
            f"[{o['warmup']}, {o['t_max']}], simulated on first use and cached on disk"
        ]


def cache_size_bytes(shape: tuple[int, int, int]) -> int:
    """Bytes on disk of a trajectory cache of ``shape`` (float32 plus the ``.npy`` header)."""
    return int(np.prod(shape)) * 4 + 128


def announce_cache(path: Path, shape: tuple[int, int, int], enabled: bool = True) -> None:
    """Says up front how large the trajectory cache will be and where it goes (stderr)."""
    if not enabled:
        return
    size = cache_size_bytes(shape)
    print(
        f"lorenz: simulating {shape[0]} trajectories x {shape[1]} steps once (whatever the "
        f"sample size); the cache takes {size / 1e9:.2f} GB in {path.parent} (remove it with "
        "`mflows data cache --clear`; Lorenz(steps=..., cache=False) for less)",
        file=sys.stderr,
    )


def _integrate_to_file(integrate, path: Path, shape: tuple[int, int, int]) -> None:
    """Runs ``integrate(out)`` on a memory-mapped temporary ``.npy`` file, then renames it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        integrate(out)
        out.flush()
        del out
        digest = _sha256(tmp)
        _checksum_path(path).unlink(missing_ok=True)
        publish(tmp, path)
        atomic_write(_checksum_path(path), digest + "\n")
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_is_valid(path: Path, shape: tuple[int, int, int]) -> bool:
    """Whether the cache matches its stored checksum and holds a float32 array of ``shape``."""
    try:
        expected = _checksum_path(path).read_text().strip()
        if expected != _sha256(path):
            return False
        array = np.load(path, mmap_mode="r")
        return array.shape == shape and array.dtype == np.float32
    except (OSError, ValueError):
        return False


def _remove_cache(path: Path) -> None:
    for p in (path, _checksum_path(path)):
        p.unlink(missing_ok=True)


assert set(_SPLIT_RESIDUES) == set(SPLITS)
