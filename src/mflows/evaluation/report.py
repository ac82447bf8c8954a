"""A self-contained HTML report of an evaluated run.

The report embeds every plot as a base64 PNG data URI (no side files, so it can be mailed or
attached as one file), a table of the metrics (nested dicts flattened to dotted keys) and the
run's configuration. It is written atomically: to a temporary file in the run directory, then
moved over ``report.html`` with :func:`os.replace`.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mflows.files import atomic_write

__all__ = ["GLOSSARY", "flatten_metrics", "format_value", "write_report"]

#: metric -> (definition, which way is better); shown next to each metric in the report.
GLOSSARY: dict[str, tuple[str, str]] = {
    "manifold_distance": (
        "mean distance of generated samples to the true manifold (clipped at 10)",
        "lower",
    ),
    "reconstruction_error": ("mean |x - project(x)| over test points (clipped at 10)", "lower"),
    "log_likelihood": ("mean model log density of the test points", "higher"),
    "nll_bits_per_dim": ("negative log-likelihood in bits per data dimension", "lower"),
    "true_log_likelihood": ("mean true log density of the same test points", "reference"),
    "log_likelihood_mae": ("mean |model - true| log density over test points", "lower"),
    "ood_auc": ("AUC separating test from out-of-distribution points (best detector)", "higher"),
    "ood_auc_log_likelihood": ("OOD AUC with the log-likelihood as detector", "higher"),
    "ood_auc_reconstruction": ("OOD AUC with the reconstruction error as detector", "higher"),
    "log_posterior_true_theta": ("log posterior density (KDE of MCMC) at the true theta", "higher"),
    "posterior_mmd": ("MMD between model and true posterior samples over theta", "lower"),
    "fid": ("Frechet Inception distance of samples to test images", "lower"),
    "nonfinite_samples": ("generated samples with NaN or infinite values", "lower"),
    "closure": ("closure-test score of generated samples", "lower"),
}

_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.8em; text-align: left; }
td.num { text-align: right; font-family: monospace; }
figure { margin: 1em 0; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
"""


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flattens nested dicts into ``{"a.b": value}``."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def format_value(value: Any) -> str:
    """Formats a metric: floats with 6 significant digits, sequences element-wise."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if hasattr(value, "tolist"):  # NumPy scalars and arrays, tensors
        value = value.tolist()
        if not isinstance(value, list):
            return format_value(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def _metric_row(name: str, value: Any) -> str:
    definition, better = GLOSSARY.get(name.rsplit(".", 1)[-1], ("", ""))
    return (
        f"<tr><td>{html.escape(name)}</td><td class='num'>{html.escape(format_value(value))}</td>"
        f"<td>{html.escape(better)}</td><td>{html.escape(definition)}</td></tr>"
    )


def _image_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.stem.replace("_", " "))
    return (
        f'<figure id="{html.escape(path.stem)}"><img alt="{name}" '
        f'src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>'
    )


def write_report(
    run_dir: str | os.PathLike,
    metrics: Mapping[str, Any],
    plots: Sequence[str | os.PathLike],
    config: Mapping[str, Any] | None = None,
    title: str = "mflows evaluation report",
    filename: str = "report.html",
    details: Mapping[str, Any] | None = None,
) -> Path:
    """Writes ``run_dir/report.html`` with the metrics, the plots and the configuration.

    Args:
        run_dir: Run directory (created if missing).
        metrics: Metric values, possibly nested (flattened to dotted names in the table).
        plots: PNG files to embed, in order; missing files raise ``FileNotFoundError``.
        config: Run configuration, shown as JSON (non-JSON values via ``str``).
        title: Page title.
        filename: Report file name.
        details: facts about the run shown above the metrics (run time, best epoch, seed,
            versions, the theta used, ...).

    Returns:
        The path of the written report.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plot_paths = [Path(p) for p in plots]
    for p in plot_paths:
        if not p.is_file():
            raise FileNotFoundError(f"plot {p} does not exist")
    rows = "\n".join(_metric_row(name, v) for name, v in flatten_metrics(metrics).items())
    detail_rows = "\n".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(format_value(v))}</td></tr>"
        for k, v in flatten_metrics(details or {}).items()
    )
    run_section = f"<h2>Run</h2>\n<table>\n{detail_rows}\n</table>" if detail_rows else ""
    config_text = json.dumps(dict(config or {}), indent=2, sort_keys=True, default=str)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    figures = "\n".join(_image_tag(p) for p in plot_paths) or "<p>No plots.</p>"
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p>Run directory: <code>{html.escape(str(run_dir))}</code>; written {stamp}.</p>
{run_section}
<h2>Metrics</h2>
<table>
<tr><th>metric</th><th>value</th><th>better</th><th>definition</th></tr>
{rows}
</table>
<h2>Plots</h2>
{figures}
<h2>Configuration</h2>
<pre>{html.escape(config_text, quote=False)}</pre>
</body>
</html>
"""
    return atomic_write(run_dir / filename, page)
