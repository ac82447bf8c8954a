"""Figure of the n = 2 sphere experiment: learned density on the sphere next to the truth.

Usage (after ``python -m benchmarks.paper.run --experiment sphere2 ...``)::

    python -m benchmarks.paper.figures --model fom --seed 0

Reads the trained model kept in the run's scratch directory
(``benchmarks/results/paper/.work/sphere2/<model>-seed<k>/model.pt``) and writes
``benchmarks/results/paper/figures/sphere2_<model>-seed<k>.png``: the true density on the unit
sphere S^2 (w.r.t. its area) and the model's density at the same points (for FOM, M-flow and
M_e-flow: the density on the learned manifold at the model's projection of the point), both as
log densities on an equirectangular map (polar angle vs azimuth) with one colour scale.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.paper.store import Store

__all__ = ["plot_sphere_density", "sphere_grid"]


def sphere_grid(resolution: int = 120) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Polar angles, azimuths (cell centres) and the ``(R * 2R, 3)`` points on the unit sphere."""
    polar = (np.arange(resolution) + 0.5) * np.pi / resolution
    azimuth = (np.arange(2 * resolution) + 0.5) * np.pi / resolution
    t, p = np.meshgrid(polar, azimuth, indexing="ij")
    points = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1)
    return polar, azimuth, points.reshape(-1, 3)


def plot_sphere_density(model, dataset, path: str | Path, title: str, resolution: int = 120):
    """Writes the two-panel figure of ``model`` against the truth of ``dataset``; returns stats."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    polar, azimuth, points = sphere_grid(resolution)
    true = dataset.log_density_on_manifold(points)
    with torch.no_grad():
        x = torch.as_tensor(points, dtype=torch.float32)
        learned = np.concatenate(
            [model.log_prob(x[i : i + 2000]).double().numpy() for i in range(0, len(x), 2000)]
        )
    shape = (len(polar), len(azimuth))
    vmax = float(true.max()) + 0.5
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), constrained_layout=True)
    extent = (0, 2 * np.pi, np.pi, 0)
    for ax, logp, name in ((axes[0], true, "truth"), (axes[1], learned, title)):
        im = ax.imshow(
            logp.reshape(shape),
            extent=extent,
            aspect="auto",
            vmin=vmax - 8.0,
            vmax=vmax,
            cmap="viridis",
        )
        ax.set_title(name)
        ax.set_xlabel("azimuth")
        ax.set_ylabel("polar angle")
    fig.colorbar(im, ax=axes, label="log density on the sphere")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    # sphere area element sin(polar) for the mass check
    weights = np.repeat(np.sin(polar), len(azimuth)) * (np.pi / resolution) ** 2
    return {
        "true_mass": float((np.exp(true) * weights).sum()),
        "model_mass": float((np.exp(learned) * weights).sum()),
        "mean_abs_error_on_grid": float(np.mean(np.abs(learned - true))),
    }


def main(argv: Sequence[str] | None = None) -> int:
    from mflows import data
    from mflows.models import load

    parser = argparse.ArgumentParser(prog="python -m benchmarks.paper.figures")
    parser.add_argument("--model", default="fom")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--root", default=None, help="store root (default benchmarks/results/paper)"
    )
    args = parser.parse_args(argv)
    store = Store(Path(args.root)) if args.root else Store()
    model_file = store.work_dir("sphere2", args.model, args.seed) / "model.pt"
    if not model_file.is_file():
        parser.error(f"{model_file} does not exist: run the sphere2 experiment first")
    model = load(model_file).eval()
    dataset = data.get("spherical_gaussian", n=2, d=3, epsilon=0.01)
    out = Path(store.root) / "figures" / f"sphere2_{args.model}-seed{args.seed}.png"
    stats = plot_sphere_density(model, dataset, out, f"{args.model}, seed {args.seed}")
    print(f"wrote {out}: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
