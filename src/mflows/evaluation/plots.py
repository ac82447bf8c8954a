"""Diagnostic plots written as PNG files (matplotlib, non-interactive Agg backend).

Every function takes arrays (or callables), saves one figure to ``path``, closes it and returns
the path as a :class:`~pathlib.Path`. Figures are made with the object-oriented API, so the
global pyplot state and backend are left alone.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mflows.evaluation.metrics import model_dtype_device, to_numpy
from mflows.files import atomic_path

__all__ = [
    "plot_image_grid",
    "plot_latent_traversal",
    "plot_learned_manifold",
    "plot_manifold_density",
    "plot_posterior",
    "plot_reconstruction_errors",
    "plot_reconstructions",
    "plot_samples",
    "plot_training_curves",
    "read_history",
    "training_panels",
]

_DPI = 100


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def _subsample(x: np.ndarray, max_points: int, seed: int = 0) -> np.ndarray:
    if x.shape[0] <= max_points:
        return x
    idx = np.random.default_rng(seed).choice(x.shape[0], max_points, replace=False)
    return x[np.sort(idx)]


def _flat(x: Any) -> np.ndarray:
    a = to_numpy(x)
    return a[:, None] if a.ndim == 1 else a.reshape(a.shape[0], -1)


def read_history(history: Any) -> dict[str, np.ndarray]:
    """Training history as ``{column: values}`` from a CSV path, a mapping or a History object.

    A CSV needs a header row; non-numeric cells become NaN. Objects are read through
    ``to_dict()`` / ``as_dict()`` when present, else a list of row mappings in ``records`` or
    ``rows``.
    """
    if isinstance(history, str | os.PathLike):
        with open(history, newline="") as fh:
            rows = list(csv.DictReader(fh))
        columns = list(rows[0].keys()) if rows else []
        return {c: np.array([_as_float(r.get(c)) for r in rows]) for c in columns}
    if not isinstance(history, Mapping):
        for attr in ("to_dict", "as_dict"):
            if hasattr(history, attr):
                return read_history(getattr(history, attr)())
        for attr in ("records", "rows"):
            rows = getattr(history, attr, None)
            if rows is not None:
                cols = list(dict.fromkeys(k for r in rows for k in r))
                return {c: np.array([_as_float(r.get(c)) for r in rows]) for c in cols}
        raise TypeError(f"cannot read a training history from {type(history).__name__}")
    return {str(k): np.array([_as_float(v) for v in np.ravel(vals)]) for k, vals in history.items()}


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def training_panels(
    data: Mapping[str, np.ndarray], x_key: str | None, skip: Sequence[str] = ()
) -> dict[str, dict[str, np.ndarray]]:
    """Groups the columns of a history into panels: ``panel -> {column: values}``.

    ``train_<term>`` and ``val_<term>`` share the panel ``<term>``; the median and largest
    gradient norm share ``gradient_norm`` (``gradient_norm_<phase>`` per phase); every other
    column with a finite value gets its own panel.
    """
    groups: dict[str, dict[str, np.ndarray]] = {}
    for name, values in data.items():
        if name == x_key or name in skip or not np.isfinite(values).any():
            continue
        if name.startswith(("train_", "val_")):
            term = name.split("_", 1)[1]
        elif name.startswith(("gradient_norm_median", "gradient_norm_max")):
            phase = name.removeprefix("gradient_norm_").split("_", 1)[1:]
            term = "_".join(["gradient_norm", *phase])
        else:
            term = name
        groups.setdefault(term, {})[name] = values
    return groups


def plot_training_curves(
    history: Any,
    path: str | os.PathLike,
    x_key: str | None = None,
    title: str = "training curves",
    skip: Sequence[str] = ("time", "wall_time"),
) -> Path:
    """Plots the numeric columns of a training history against epochs (or steps).

    Columns ``train_<term>`` and ``val_<term>`` share one panel per term (``loss``, ``nll``,
    ``reconstruction``, ...), the median and largest gradient norm of the steps share one
    (per phase), and every other numeric column (e.g. ``lr``) gets its own panel
    (:func:`training_panels`).
    A panel uses a log scale when all its values are positive.

    Args:
        history: CSV path, ``{name: values}`` mapping or History object (see :func:`read_history`).
        path: Output PNG.
        x_key: Column for the x axis; ``epoch`` or ``step`` when present, else the row index.
        title: Figure title.
        skip: Columns left out.
    """
    data = read_history(history)
    if x_key is None:
        x_key = next((k for k in ("epoch", "step", "iteration") if k in data), None)
    n = max((len(v) for v in data.values()), default=0)
    xs = np.asarray(data[x_key] if x_key is not None else np.arange(n))
    panels = list(training_panels(data, x_key, skip).items()) or [("(empty history)", {})]
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = _figure(4.5 * cols, 3.5 * rows)
    for i, (term, series) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for name, values in series.items():
            mask = np.isfinite(values)
            ax.plot(xs[: len(values)][mask], values[mask], label=name, marker=".")
        finite = np.concatenate([v[np.isfinite(v)] for v in series.values()] or [np.zeros(0)])
        if finite.size and (finite > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel(x_key or "row")
        if term.startswith("gradient_norm"):
            ax.set_ylabel("step gradient norm (before clipping)")
        else:
            ax.set_ylabel(f"{term} (per batch, averaged over the epoch)")
        ax.set_title(term)
        if series:
            ax.legend(fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def _pairs(d: int, max_dims: int) -> list[tuple[int, int]]:
    dims = min(d, max_dims)
    return [(i, j) for i in range(dims) for j in range(i + 1, dims)]


def plot_samples(
    samples: Any,
    truth: Any | None,
    path: str | os.PathLike,
    labels: tuple[str, str] = ("model", "truth"),
    max_points: int = 2000,
    max_dims: int = 5,
    title: str = "samples",
) -> Path:
    """Generated samples against true samples.

    3-d data (power, lorenz): three 3-d scatter views from different angles; 2-d data: one
    scatter; 1-d: histograms; higher d: scatter plots of every pair of the first ``max_dims``
    coordinates.

    Args:
        samples: Model samples, shape ``(N, d)``.
        truth: True samples, shape ``(M, d)``, or ``None``.
        path: Output PNG.
        labels: Legend labels of the two sets.
        max_points: Points drawn per set (random subset).
        max_dims: Coordinates shown for d > 3.
        title: Figure title.
    """
    sets = [(labels[0], _subsample(_flat(samples), max_points), "C0")]
    if truth is not None:
        sets.append((labels[1], _subsample(_flat(truth), max_points, seed=1), "C1"))
    d = sets[0][1].shape[1]
    if d == 3:
        fig = _figure(15, 5)
        for k, (elev, azim) in enumerate([(30, -60), (10, 20), (80, 0)]):
            ax = fig.add_subplot(1, 3, k + 1, projection="3d")
            for name, pts, color in sets:
                ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=2, alpha=0.4, c=color, label=name)
            ax.view_init(elev=elev, azim=azim)
            ax.set_xlabel("x0")
            ax.set_ylabel("x1")
            ax.set_zlabel("x2")
        ax.legend(markerscale=4)
    elif d == 1:
        fig = _figure(5, 4)
        ax = fig.add_subplot(1, 1, 1)
        for name, pts, color in sets:
            ax.hist(pts[:, 0], bins=50, density=True, alpha=0.5, color=color, label=name)
        ax.legend()
    else:
        pairs = _pairs(d, max_dims)
        cols = min(len(pairs), 4)
        rows = math.ceil(len(pairs) / cols)
        fig = _figure(3.5 * cols, 3.5 * rows)
        for k, (i, j) in enumerate(pairs):
            ax = fig.add_subplot(rows, cols, k + 1)
            for name, pts, color in sets:
                ax.scatter(pts[:, i], pts[:, j], s=2, alpha=0.4, c=color, label=name)
            ax.set_xlabel(f"x{i}")
            ax.set_ylabel(f"x{j}")
        ax.legend(markerscale=4, fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def _latent_grid(latent_dim: int, bounds: tuple[float, float], resolution: int) -> np.ndarray:
    line = np.linspace(bounds[0], bounds[1], resolution)
    if latent_dim == 1:
        return line[:, None]
    if latent_dim == 2:
        u0, u1 = np.meshgrid(line, line, indexing="ij")
        return np.stack([u0.ravel(), u1.ravel()], axis=1)
    raise ValueError(f"the manifold plot needs latent_dim in (1, 2), got {latent_dim}")


def plot_manifold_density(
    decode_fn: Callable[[np.ndarray], Any],
    log_prob_fn: Callable[[np.ndarray], Any] | None,
    latent_dim: int,
    path: str | os.PathLike,
    bounds: tuple[float, float] = (-3.0, 3.0),
    resolution: int | None = None,
    truth: Any | None = None,
    title: str = "learned manifold",
) -> Path:
    """The learned manifold g(U), coloured by the model density on it.

    Decodes a grid of u (a ``resolution`` x ``resolution`` grid for n = 2, a line of
    ``resolution`` points for n = 1) and colours each decoded point x = g(u) by
    ``log_prob_fn(x)``. 3-d data are drawn in 3-d, 2-d data in the plane, higher d in the
    first two coordinates.

    Args:
        decode_fn: ``u (K, n) -> x (K, d)``.
        log_prob_fn: ``x (K, d) -> (K,)``, or ``None`` for a plain manifold plot.
        latent_dim: n, 1 or 2.
        path: Output PNG.
        bounds: Range of each u coordinate.
        resolution: Grid points per axis (60 for n = 2, 400 for n = 1 by default).
        truth: Optional true samples ``(M, d)`` drawn in grey for reference.
        title: Figure title.
    """
    if resolution is None:
        resolution = 60 if latent_dim == 2 else 400
    u = _latent_grid(latent_dim, bounds, resolution)
    x = _flat(decode_fn(u))
    color = None
    if log_prob_fn is not None:
        color = to_numpy(log_prob_fn(x)).reshape(-1)
        finite = np.isfinite(color)
        if finite.any():
            low = np.percentile(color[finite], 2)  # keep a few outliers from washing it out
            color = np.where(finite, np.maximum(color, low), low)
        else:
            color = None
    ref = None if truth is None else _subsample(_flat(truth), 2000)
    d = x.shape[1]
    style: dict[str, Any] = {"c": "C0"} if color is None else {"c": color, "cmap": "viridis"}
    fig = _figure(6.5, 5.5)
    if d == 3:
        ax = fig.add_subplot(1, 1, 1, projection="3d")
        if ref is not None:
            ax.scatter(ref[:, 0], ref[:, 1], ref[:, 2], s=1, c="0.6", alpha=0.3)
        art = ax.scatter(x[:, 0], x[:, 1], x[:, 2], s=4, **style)
    else:
        ax = fig.add_subplot(1, 1, 1)
        xs, ys = x[:, 0], (x[:, 1] if d > 1 else np.zeros(len(x)))
        if ref is not None:
            ax.scatter(ref[:, 0], ref[:, 1] if d > 1 else 0 * ref[:, 0], s=1, c="0.6", alpha=0.3)
        art = ax.scatter(xs, ys, s=4, **style)
    if color is not None:
        fig.colorbar(art, ax=ax, label="log p(x)")
    ax.set_title(title)
    return _save(fig, path)


def plot_learned_manifold(
    model: Any,
    path: str | os.PathLike,
    context: Any | None = None,
    bounds: tuple[float, float] | None = None,
    resolution: int | None = None,
    truth: Any | None = None,
) -> Path:
    """:func:`plot_manifold_density` for an mflows model (``decode`` and ``log_prob``).

    Args:
        model: A model with ``latent_dim`` 1 or 2.
        path: Output PNG.
        context: Parameters ``(p,)`` for conditional models (broadcast to the grid).
        bounds: Range of u; by default +-3 standard deviations of the inner flow's samples
            in u (estimated through ``encode(sample(...))``), else (-3, 3).
        resolution: Grid points per axis.
        truth: True samples ``(M, d)`` for reference.
    """
    import torch

    dtype, device = model_dtype_device(model)

    def tensor(a: Any):
        return torch.as_tensor(to_numpy(a), dtype=dtype, device=device)

    def ctx(num: int):
        if context is None:
            return None
        return tensor(context).reshape(1, -1).expand(num, -1)

    def decode(u: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return to_numpy(model.decode(tensor(u), context=ctx(len(u))))

    def log_prob(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = tensor(x)
            return to_numpy(model.log_prob(t, context=ctx(len(x))))

    if bounds is None:
        try:
            with torch.no_grad():
                xs = model.sample(500, context=None if context is None else ctx(500))
                u = to_numpy(model.encode(xs, context=None if context is None else ctx(500)))
            bounds = (float(u.mean() - 3 * u.std()), float(u.mean() + 3 * u.std()))
        except (RuntimeError, ValueError, NotImplementedError):
            bounds = (-3.0, 3.0)
    density = log_prob if getattr(model, "exact_density", True) else None  # PAE: manifold only
    return plot_manifold_density(decode, density, model.latent_dim, path, bounds, resolution, truth)


def plot_reconstruction_errors(
    errors_test: Any,
    errors_ood: Any | None,
    path: str | os.PathLike,
    bins: int = 50,
    log_x: bool = True,
    title: str = "reconstruction error",
) -> Path:
    """Histograms of reconstruction errors |x - x'| of test and OOD samples.

    Args:
        errors_test: Errors of test samples, shape ``(N,)``.
        errors_ood: Errors of OOD samples, shape ``(M,)``, or ``None``.
        path: Output PNG.
        bins: Number of bins (log-spaced when ``log_x`` and all errors are positive).
        log_x: Use a logarithmic x axis where possible.
        title: Figure title.
    """
    sets = [("test", to_numpy(errors_test).reshape(-1), "C0")]
    if errors_ood is not None:
        sets.append(("OOD", to_numpy(errors_ood).reshape(-1), "C3"))
    values = np.concatenate([s[1][np.isfinite(s[1])] for s in sets])
    use_log = log_x and values.size > 0 and (values > 0).all()
    if values.size == 0:
        edges = np.linspace(0, 1, bins + 1)
    elif use_log:
        low, high = values.min(), values.max()
        edges = np.geomspace(low, high * (1 + 1e-9) if high > low else low * 10, bins + 1)
    else:
        edges = np.histogram_bin_edges(values, bins=bins)
    fig = _figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    for name, vals, color in sets:
        ax.hist(vals[np.isfinite(vals)], bins=edges, alpha=0.5, color=color, label=name)
    if use_log:
        ax.set_xscale("log")
    ax.set_xlabel("|x - x'|")
    ax.set_ylabel("count")
    ax.legend()
    ax.set_title(title)
    return _save(fig, path)


def plot_posterior(
    model_samples: Any,
    true_samples: Any | None,
    path: str | os.PathLike,
    theta_true: Any | None = None,
    labels: Sequence[str] | None = None,
    max_points: int = 3000,
    title: str = "posterior",
) -> Path:
    """Model posterior samples against true posterior samples.

    One parameter: overlaid histograms; several: a corner plot (histograms on the diagonal,
    scatter plots below it). theta* is marked when given.

    Args:
        model_samples: MCMC samples of the model posterior, shape ``(S, p)``.
        true_samples: Samples of the true posterior, shape ``(S', p)``, or ``None``.
        path: Output PNG.
        theta_true: The true parameter, shape ``(p,)``.
        labels: Parameter names (``theta_0``, ... by default).
        max_points: Scatter points per set.
        title: Figure title.
    """
    sets = [("model", _flat(model_samples), "C0")]
    if true_samples is not None:
        sets.append(("true", _flat(true_samples), "C1"))
    p = sets[0][1].shape[1]
    labels = list(labels) if labels is not None else [f"theta_{i}" for i in range(p)]
    star = None if theta_true is None else to_numpy(theta_true).reshape(-1)
    fig = _figure(max(4.0, 3.2 * p), max(3.5, 3.2 * p))
    for i in range(p):
        for j in range(i + 1):
            ax = fig.add_subplot(p, p, i * p + j + 1)
            if i == j:
                edges = np.histogram_bin_edges(np.concatenate([s[:, i] for _, s, _ in sets]), 40)
                for name, s, color in sets:
                    ax.hist(s[:, i], bins=edges, density=True, alpha=0.5, color=color, label=name)
                if star is not None:
                    ax.axvline(star[i], color="k", ls="--", label="theta*")
                if i == 0:
                    ax.legend(fontsize="small")
            else:
                for _name, s, color in sets:
                    pts = _subsample(s, max_points)
                    ax.scatter(pts[:, j], pts[:, i], s=2, alpha=0.3, c=color)
                if star is not None:
                    ax.plot(star[j], star[i], "k*", ms=10)
                ax.set_ylabel(labels[i])
            if i == p - 1:
                ax.set_xlabel(labels[j])
    fig.suptitle(title)
    return _save(fig, path)


def plot_image_grid(
    images: Any,
    path: str | os.PathLike,
    ncols: int | None = None,
    value_range: tuple[float, float] = (0.0, 255.0),
    title: str | None = None,
) -> Path:
    """A grid of images.

    Args:
        images: Shape ``(N, C, H, W)`` or ``(N, H, W, C)`` with C in {1, 3}, or ``(N, H, W)``.
        path: Output PNG.
        ncols: Images per row (about sqrt(N) by default).
        value_range: Pixel range mapped to black..white (values are clipped to it).
        title: Optional title.
    """
    x = to_numpy(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"expected images.shape == (N, C, H, W), got {x.shape}")
    if x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(0, 2, 3, 1)
    low, high = value_range
    x = np.clip((x - low) / (high - low), 0.0, 1.0)
    n, h, w, c = x.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.ones((nrows * (h + 2) + 2, ncols * (w + 2) + 2, c))
    for k in range(n):
        r, q = divmod(k, ncols)
        grid[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + q * (w + 2) : 2 + q * (w + 2) + w] = x[k]
    scale = max(1.0, 6.0 / max(grid.shape[:2]) * 100)
    fig = _figure(grid.shape[1] / _DPI * scale, grid.shape[0] / _DPI * scale)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid[..., 0] if c == 1 else grid, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_reconstructions(
    images: Any,
    reconstructions: Any,
    path: str | os.PathLike,
    value_range: tuple[float, float] = (0.0, 255.0),
    title: str | None = "test images (top), their projections (bottom)",
) -> Path:
    """Images next to their reconstructions: two rows of :func:`plot_image_grid`.

    Args:
        images: ``(N, C, H, W)`` images.
        reconstructions: Same shape: e.g. ``model.project(images)``.
        path: Output PNG.
        value_range: Pixel range mapped to black..white.
        title: Optional title.
    """
    x, r = to_numpy(images), to_numpy(reconstructions)
    if x.shape != r.shape:
        raise ValueError(f"images and reconstructions differ in shape: {x.shape} vs {r.shape}")
    return plot_image_grid(
        np.concatenate([x, r]), path, ncols=len(x), value_range=value_range, title=title
    )


def plot_latent_traversal(
    model: Any,
    path: str | os.PathLike,
    u_reference: Any,
    steps: int = 8,
    context: Any | None = None,
    value_range: tuple[float, float] = (0.0, 255.0),
) -> Path:
    """Images decoded along the learned manifold's coordinates u.

    For ``latent_dim == 2`` a ``steps x steps`` grid over both coordinates; otherwise one row per
    coordinate (at most 8), the others held at their median. The range of each coordinate runs
    from the 2nd to the 98th percentile of ``u_reference`` (e.g. ``model.encode(test images)``).

    Args:
        model: A model with a manifold (``decode``).
        path: Output PNG.
        u_reference: ``(M, latent_dim)`` coordinates that set the ranges.
        steps: Images per coordinate.
        context: Parameters ``(p,)`` for conditional models.
        value_range: Pixel range mapped to black..white.
    """
    import torch

    u_ref = to_numpy(u_reference).reshape(len(u_reference), -1)
    n = u_ref.shape[1]
    low, high = np.percentile(u_ref, 2, axis=0), np.percentile(u_ref, 98, axis=0)
    lines = [np.linspace(low[i], high[i], steps) for i in range(n)]
    if n == 2:
        a, b = np.meshgrid(lines[0], lines[1], indexing="ij")
        u = np.stack([a.ravel(), b.ravel()], axis=1)
    else:
        rows = []
        for i in range(min(n, 8)):
            row = np.repeat(np.median(u_ref, axis=0)[None], steps, axis=0)
            row[:, i] = lines[i]
            rows.append(row)
        u = np.concatenate(rows)
    dtype, device = model_dtype_device(model)
    ctx = None
    if context is not None:
        ctx = torch.as_tensor(to_numpy(context), dtype=dtype, device=device)
        ctx = ctx.reshape(1, -1).expand(len(u), -1)
    with torch.no_grad():
        images = to_numpy(model.decode(torch.as_tensor(u, dtype=dtype, device=device), ctx))
    title = "latent traversal: u_1 down, u_2 across" if n == 2 else "latent traversal, per u_i"
    return plot_image_grid(images, path, ncols=steps, value_range=value_range, title=title)
