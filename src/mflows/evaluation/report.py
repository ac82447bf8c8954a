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

__all__ = ["flatten_metrics", "format_value", "write_report"]

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
) -> Path:
    """Writes ``run_dir/report.html`` with the metrics, the plots and the configuration.

    Args:
        run_dir: Run directory (created if missing).
        metrics: Metric values, possibly nested (flattened to dotted names in the table).
        plots: PNG files to embed, in order; missing files raise ``FileNotFoundError``.
        config: Run configuration, shown as JSON (non-JSON values via ``str``).
        title: Page title.
        filename: Report file name.

    Returns:
        The path of the written report.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plot_paths = [Path(p) for p in plots]
    for p in plot_paths:
        if not p.is_file():
            raise FileNotFoundError(f"plot {p} does not exist")
    rows = "\n".join(
        f"<tr><td>{html.escape(name)}</td><td class='num'>{html.escape(format_value(v))}</td></tr>"
        for name, v in flatten_metrics(metrics).items()
    )
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
<h2>Metrics</h2>
<table>
<tr><th>metric</th><th>value</th></tr>
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
