"""Benchmark: learning rotated, curved synthetic manifolds with old and new model defaults.

Each manifold is the graph of a smooth map over a box of parameters t in [-2, 2]^n,

    y(t) = (t, a_1(t), ..., a_{d-n}(t)),   x = s Q y(t),

with bends and twists a_j (sines, quadratics, products), a random orthogonal Q (so the manifold
is aligned with no coordinate plane) and s = 1.5 (coordinates within about +-3); the data are a
two-component Gaussian mixture on t (conditional case: the mixture centres move with theta in
[-1, 1]). The truth is known, so the distance of a point to the manifold is computed exactly up
to optimisation: nearest neighbour in a dense set of manifold points, refined by L-BFGS on t.

Reported against training steps (one step = one batch; an alternating step trains the manifold
and the density on the same batch): the reconstruction error mean |x - project(x)| on 1,000 test
points and, at the end, the mean distance of 1,000 generated samples to the manifold.
"old" = ``linear="permutation"`` and ``fit(..., data_init=False)`` (the defaults before this
change), "new" = the defaults (LU layers, PCA initialisation in ``fit``).

One JSON per run in ``benchmarks/results/manifolds/`` (written as each run finishes)::

    OMP_NUM_THREADS=1 PYTHONPATH=src nohup python benchmarks/manifolds.py > manifolds.log &
    python benchmarks/manifolds.py --only sheet24-mflow-new --epochs 2     # one quick run
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mflows
import mflows.data

RESULTS = Path(__file__).parent / "results" / "manifolds"


@dataclass(frozen=True)
class Manifold:
    """A curved n-dimensional manifold in R^d, rotated by a random orthogonal matrix."""

    n: int
    d: int
    seed: int = 0
    scale: float = 1.5
    box: float = 2.0

    @property
    def rotation(self) -> np.ndarray:
        q, r = np.linalg.qr(np.random.default_rng(1000 + self.seed).standard_normal((self.d,) * 2))
        return q * np.sign(np.diag(r))

    def bends(self, t: torch.Tensor) -> torch.Tensor:
        """The d - n curved coordinates a_j(t) ``(B, d - n)``."""
        s = t.sum(1)
        terms = [
            0.8 * torch.sin(1.3 * s),
            0.35 * (t**2).sum(1) - 0.5,
            0.6 * torch.cos(t[:, 0]) * t[:, -1],
            0.5 * torch.sin(1.7 * t[:, 0] - 0.5 * t[:, -1]),
            0.3 * t[:, 0] * t[:, -1] + 0.2 * s,
        ]
        return torch.stack(terms[: self.d - self.n], 1)

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        """x(t) ``(B, n) -> (B, d)`` (differentiable, float64 recommended)."""
        y = torch.cat([t, self.bends(t)], 1)
        q = torch.as_tensor(self.rotation, dtype=t.dtype)
        return self.scale * y @ q.T

    def sample_t(self, num: int, seed: int, theta: np.ndarray | None = None) -> np.ndarray:
        """Mixture of two Gaussians on t (centres moved by theta), clipped to the box."""
        g = np.random.default_rng(seed)
        comp = g.integers(0, 2, num)
        centres = np.stack([np.full(self.n, -0.6), np.full(self.n, 0.7)])[comp]
        if theta is not None:
            centres = centres + 0.5 * theta.reshape(-1, 1)
        t = centres + 0.45 * g.standard_normal((num, self.n))
        return np.clip(t, -self.box + 0.1, self.box - 0.1)

    def sample(self, num: int, seed: int, theta: np.ndarray | None = None) -> np.ndarray:
        t = torch.as_tensor(self.sample_t(num, seed, theta), dtype=torch.float64)
        return self.embed(t).numpy().astype(np.float32)

    def distance(self, x: np.ndarray, grid: int | None = None) -> np.ndarray:
        """Euclidean distance of each row of ``x`` to the manifold (NN start, then L-BFGS)."""
        x64 = torch.as_tensor(np.asarray(x), dtype=torch.float64)
        per_axis = grid or {1: 4000, 2: 200, 3: 34}.get(self.n, 12)
        axis = torch.linspace(-self.box, self.box, per_axis, dtype=torch.float64)
        mesh = torch.stack(torch.meshgrid(*[axis] * self.n, indexing="ij"), -1)
        dense_t = mesh.reshape(-1, self.n)
        dense_x = self.embed(dense_t)
        nearest = torch.cat([torch.cdist(c, dense_x).argmin(1) for c in x64.split(500)])
        t = dense_t[nearest].clone().requires_grad_(True)
        opt = torch.optim.LBFGS([t], max_iter=200, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            tc = t.clamp(-self.box, self.box)
            loss = (self.embed(tc) - x64).square().sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            refined = (self.embed(t.clamp(-self.box, self.box)) - x64).norm(dim=1)
            coarse = (dense_x[nearest] - x64).norm(dim=1)
        return torch.minimum(refined, coarse).numpy()


MANIFOLDS = {
    "sheet24": Manifold(2, 4, seed=0),
    "curve13": Manifold(1, 3, seed=1),
    "sheet35": Manifold(2, 5, seed=2),
    "solid36": Manifold(3, 6, seed=3),
}


def _reconstruction(model: Any, x: torch.Tensor, context: torch.Tensor | None) -> float:
    with torch.no_grad():
        err = (x - model.project(x, context)).norm(dim=1).clamp_max(10.0)
    return float(err.mean())


def run(name: str, spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Trains one model and returns the record (also written as JSON)."""
    torch.manual_seed(0)
    kind, defaults = spec["kind"], spec["defaults"]
    conditional = spec.get("conditional", False)
    arch = dict(spec.get("arch", {}))
    if defaults == "old" and kind in ("mflow", "emflow", "pie"):
        arch["linear"] = "permutation"
    if spec["data"] == "power":
        data = mflows.data.get("power")
        train = data.load("train", n=spec["n_train"], seed=0)
        test = data.load("test", n=1000, seed=0)
        x, theta = train.x, train.theta
        x_test, theta_test = test.x, test.theta
        d, n, truth = 3, 2, None
        p = 1 if conditional else 0
    else:
        truth = MANIFOLDS[spec["data"]]
        d, n = truth.d, truth.n
        rng = np.random.default_rng(7)
        theta = rng.uniform(-1, 1, (spec["n_train"], 1)).astype(np.float32) if conditional else None
        theta_test = rng.uniform(-1, 1, (1000, 1)).astype(np.float32) if conditional else None
        x = truth.sample(spec["n_train"], 11, theta)
        x_test = truth.sample(1000, 12, theta_test)
        p = 1 if conditional else 0
    model = mflows.make_model(kind, data_dim=d, latent_dim=n, context_dim=p, seed=0, **arch)
    xt = torch.as_tensor(x_test)
    ct = torch.as_tensor(theta_test) if p else None
    batch = spec.get("batch_size", 256)
    n_fit = round(len(x) * 0.75)
    steps_per_epoch = math.ceil(n_fit / batch)
    curve: list[dict[str, float]] = []

    def callback(epoch: int, record: dict[str, Any]) -> None:
        curve.append(
            {
                "epoch": epoch,
                "steps": epoch * steps_per_epoch,
                "reconstruction": _reconstruction(model, xt, ct),
                "time": record.get("time", math.nan),
            }
        )
        print(f"  {name} epoch {epoch}: rec {curve[-1]['reconstruction']:.4f}", flush=True)

    from mflows.initialization import initialize_from_data

    init_report = None
    if defaults == "new":
        init_report = initialize_from_data(model, x[:n_fit], None if theta is None else theta)
    init_rec = _reconstruction(model, xt, ct)
    start = time.perf_counter()
    mflows.fit(
        model,
        x,
        theta if p else None,
        algorithm=spec["algorithm"],
        epochs=spec.get("epochs", args.epochs),
        batch_size=batch,
        progress=False,
        callback=callback,
        data_init=False,  # done above (same call as fit's), so that init_rec is measured
    )
    wall = time.perf_counter() - start
    final_rec = _reconstruction(model, xt, ct)
    sample_context = torch.zeros(1) if p else None
    with torch.no_grad():
        samples = model.sample(1000, sample_context, generator=torch.Generator().manual_seed(3))
    samples = samples.numpy()
    if truth is not None:
        dist = np.minimum(truth.distance(samples), 10.0)
    else:
        dist = np.minimum(data.distance_to_manifold(samples), 10.0)
    target = spec.get("target")
    hit = next((c["steps"] for c in curve if target and c["reconstruction"] <= target), None)
    record = {
        "name": name,
        **{k: v for k, v in spec.items() if k != "arch"},
        "arch": arch,
        "data_dim": d,
        "latent_dim": n,
        "init": None if init_report is None else init_report.reason,
        "init_applied": bool(init_report and init_report.applied),
        "reconstruction_init": init_rec,
        "reconstruction": final_rec,
        "sample_distance": float(np.mean(dist)),
        "steps": len(curve) * steps_per_epoch,
        "steps_to_target": hit,
        "wall_s": wall,
        "curve": curve,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=1))
    print(
        f"{name}: init {init_rec:.4f} -> rec {final_rec:.4f}, "
        f"samples {record['sample_distance']:.4f}, {wall:.0f} s",
        flush=True,
    )
    return record


def specs(epochs: int) -> dict[str, dict[str, Any]]:
    """All runs, in the order they are run."""
    out: dict[str, dict[str, Any]] = {}
    readme = {"algorithm": "alternating", "n_train": 20_000, "batch_size": 256, "epochs": 20}
    for defaults in ("new", "old"):
        out[f"sheet24-mflow-{defaults}"] = {
            "data": "sheet24",
            "kind": "mflow",
            "defaults": defaults,
            **readme,
        }
    for defaults in ("new", "old"):
        out[f"power-mflow-{defaults}"] = {
            "data": "power",
            "kind": "mflow",
            "defaults": defaults,
            "algorithm": "alternating",
            "n_train": 10_000,
            "batch_size": 100,
            "epochs": 20,
            "target": 0.003,
        }
    short = {"algorithm": "alternating", "n_train": 10_000, "batch_size": 256, "epochs": epochs}
    for data in ("curve13", "sheet35", "solid36"):
        for defaults in ("new", "old"):
            out[f"{data}-mflow-{defaults}"] = {
                "data": data,
                "kind": "mflow",
                "defaults": defaults,
                **short,
            }
    for defaults in ("new", "old"):
        out[f"sheet24-mflow-conditional-{defaults}"] = {
            "data": "sheet24",
            "kind": "mflow",
            "defaults": defaults,
            "conditional": True,
            **short,
        }
    for kind, algorithm in (
        ("emflow", "alternating"),
        ("pie", "likelihood"),
        ("pae", "pae"),
        ("af", "likelihood"),
    ):
        for defaults in ("new", "old") if kind in ("emflow", "pie") else ("new",):
            out[f"sheet24-{kind}-{defaults}"] = {
                "data": "sheet24",
                "kind": kind,
                "defaults": defaults,
                **short,
                "algorithm": algorithm,
            }
    return out


def table() -> str:
    """The markdown table of every result JSON (for docs/benchmarks.md)."""
    rows = [
        "| run | model | defaults | steps | wall | rec. error at init | rec. error "
        "| sample distance | rec. error by step (every few epochs) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = list(specs(6))
    rank = {name: i for i, name in enumerate(order)}
    for path in sorted(RESULTS.glob("*.json"), key=lambda p: (rank.get(p.stem, len(rank)), p.stem)):
        r = json.loads(path.read_text())
        stride = max(1, len(r["curve"]) // 5)
        curve = ", ".join(
            f"{c['steps']}: {c['reconstruction']:.3g}" for c in r["curve"][stride - 1 :: stride]
        )
        data = r["data"] + (" (conditional)" if r.get("conditional") else "")
        rows.append(
            f"| {data} (n={r['latent_dim']}, d={r['data_dim']}) | {r['kind']} {r['algorithm']} "
            f"| {r['defaults']} | {r['steps']} | {r['wall_s']:.0f} s "
            f"| {r['reconstruction_init']:.3f} | **{r['reconstruction']:.4f}** "
            f"| {r['sample_distance']:.4f} | {curve} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the short runs")
    parser.add_argument("--only", nargs="*", default=None, help="run only these names")
    parser.add_argument("--skip-done", action="store_true", help="skip runs with a JSON")
    parser.add_argument("--table", action="store_true", help="print the results table only")
    args = parser.parse_args()
    if args.table:
        print(table())
        return
    torch.set_num_threads(1)
    for name, spec in specs(args.epochs).items():
        if args.only and name not in args.only:
            continue
        if args.skip_done and (RESULTS / f"{name}.json").exists():
            continue
        run(name, spec, args)


if __name__ == "__main__":
    main()
