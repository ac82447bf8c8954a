"""Every plot function writes a PNG; the HTML report embeds every plot and every metric."""

from __future__ import annotations

import base64
import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from mflows.evaluation import (
    plot_image_grid,
    plot_learned_manifold,
    plot_manifold_density,
    plot_posterior,
    plot_reconstruction_errors,
    plot_samples,
    plot_training_curves,
    write_report,
)
from mflows.evaluation.inference import torch_threads
from mflows.evaluation.plots import read_history
from mflows.evaluation.report import flatten_metrics, format_value


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small tensors: one torch thread avoids thread hand-offs on a shared machine."""
    with torch_threads(1):
        yield


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    data = Path(path).read_bytes()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


def _surface(u: np.ndarray) -> np.ndarray:
    """A 2-d paraboloid in R^3 (or a 1-d parabola for n = 1)."""
    if u.shape[1] == 1:
        return np.concatenate([u, u**2, np.zeros_like(u)], axis=1)
    return np.concatenate([u, (u**2).sum(1, keepdims=True)], axis=1)


class _StandInModel(torch.nn.Module):
    """A model with the decode / log_prob / sample / encode protocol on the paraboloid."""

    latent_dim = 2

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def decode(self, u, context=None):
        return torch.cat([u, (u**2).sum(1, keepdim=True)], 1)

    def encode(self, x, context=None):
        return x[:, :2]

    def log_prob(self, x, context=None):
        return -0.5 * (x[:, :2] ** 2).sum(1)

    def sample(self, num, context=None):
        return self.decode(torch.randn(num, 2))


def _trainer_history():
    """A History of the trainer, with non-numeric columns and NaN validation losses."""
    from mflows.training.trainer import History

    records = [
        {
            "epoch": e + 1,
            "stage": "manifold",
            "train_loss": 1.0 / (e + 1),
            "val_loss": float("nan") if e == 0 else 1.1 / (e + 1),
            "train_nll": -1.0 - e,
            "val_nll": -0.9 - e,
            "lr": 1e-3 * 0.5**e,
            "time": 0.1,
        }
        for e in range(4)
    ]
    return History(records=records)


@pytest.fixture(scope="module")
def plots(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("plots")
    rng = np.random.default_rng(0)
    history_csv = out / "history.csv"
    with open(history_csv, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "train_loss", "val_loss", "lr"])
        for e in range(5):
            writer.writerow([e, 1.0 / (e + 1), 1.2 / (e + 1), 1e-3 * 0.9**e])
    u = rng.normal(size=(300, 2))
    paths = [
        plot_training_curves(history_csv, out / "curves_csv.png"),
        plot_training_curves({"epoch": [0, 1, 2], "loss": [3.0, 2.0, -1.0]}, out / "curves.png"),
        plot_training_curves(_trainer_history(), out / "curves_history.png"),
        plot_samples(_surface(u), _surface(u + 0.1), out / "samples_3d.png", max_points=200),
        plot_samples(rng.normal(size=(200, 6)), rng.normal(size=(200, 6)), out / "pairs.png"),
        plot_samples(rng.normal(size=(200, 1)), None, out / "samples_1d.png"),
        plot_manifold_density(
            _surface, lambda x: -(x**2).sum(1), 2, out / "manifold_2d.png", resolution=20
        ),
        plot_manifold_density(_surface, None, 1, out / "manifold_1d.png", truth=_surface(u)),
        plot_learned_manifold(_StandInModel(), out / "learned_manifold.png", resolution=15),
        plot_reconstruction_errors(
            rng.uniform(0.001, 0.01, 300), rng.uniform(0.1, 1.0, 300), out / "recon.png"
        ),
        plot_reconstruction_errors(np.zeros(10), None, out / "recon_zero.png"),
        plot_posterior(
            rng.normal(size=(500, 1)), rng.normal(size=(500, 1)), out / "post_1d.png", [0.0]
        ),
        plot_posterior(
            rng.normal(size=(500, 2)), rng.normal(size=(500, 2)), out / "post_2d.png", [0.0, 0.1]
        ),
        plot_image_grid(rng.integers(0, 256, (10, 3, 8, 8)), out / "images.png"),
        plot_image_grid(rng.uniform(0, 255, (4, 8, 8, 1)), out / "images_grey.png"),
    ]
    return paths


def test_every_plot_function_writes_a_png(plots):
    assert len(plots) == 15
    for path in plots:
        assert isinstance(path, Path)
        assert _is_png(path), path


def test_read_history_formats(tmp_path):
    class History:
        def __init__(self):
            self.records = [{"epoch": 0, "loss": 2.0}, {"epoch": 1, "loss": 1.0, "val": 1.5}]

    data = read_history(History())
    np.testing.assert_array_equal(data["loss"], [2.0, 1.0])
    assert np.isnan(data["val"][0]) and data["val"][1] == 1.5
    with pytest.raises(TypeError):
        read_history(3)


class _ImageCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def test_report_embeds_every_plot_and_metric(plots, tmp_path):
    metrics = {
        "manifold_distance": 0.0123456789,
        "reconstruction_error": np.float32(0.5),
        "ood": {"auc": 0.987, "auc_reconstruction": 0.95},
        "log_likelihood": {"mean": -1.25, "num_nonfinite": 0},
        "posterior": {"mmd": 0.02, "log_posterior": float("-inf")},
        "epochs": 7,
    }
    config = {"dataset": "power", "model": {"kind": "mflow", "latent_dim": 2}, "path": tmp_path}
    report = write_report(tmp_path / "run", metrics, plots, config, title="power <M-flow>")
    assert report == tmp_path / "run" / "report.html"
    text = report.read_text()
    assert list((tmp_path / "run").iterdir()) == [report]  # no temporary files left behind
    assert "power &lt;M-flow&gt;" in text
    # every plot, byte for byte, as a data URI
    parser = _ImageCollector()
    parser.feed(text)
    assert len(parser.sources) == len(plots)
    for src, path in zip(parser.sources, plots):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == path.read_bytes()
    # every metric with its value
    for name, value in flatten_metrics(metrics).items():
        assert f"<td>{name}</td>" in text
        assert format_value(value) in text
    assert "0.0123457" in text and "-inf" in text and "0.5" in text
    # the configuration, as JSON
    assert json.dumps("mflow") in text and "latent_dim" in text
    # rewriting replaces the report atomically
    write_report(tmp_path / "run", {"only": 1.0}, [], None)
    assert "only" in report.read_text() and "manifold_distance" not in report.read_text()
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "run", {}, [tmp_path / "missing.png"])


def test_learned_manifold_plot_of_a_model_without_density(tmp_path):
    import mflows

    model = mflows.make_model("pae", 3, 2, hidden_features=8, num_blocks=1, seed=0).eval()
    assert not model.exact_density
    path = plot_learned_manifold(model, tmp_path / "pae.png", resolution=8)
    assert path.is_file() and path.stat().st_size > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_learned_manifold_plot_of_a_gpu_model(tmp_path):
    import mflows

    model = mflows.make_model("mflow", 3, 2, outer_layers=2, inner_layers=1, seed=0).to("cuda")
    path = plot_learned_manifold(model, tmp_path / "gpu.png", resolution=8)
    assert path.exists() and path.stat().st_size > 0


def test_training_panels_group_the_gradient_norms():
    from mflows.evaluation.plots import training_panels

    ones = np.ones(3)
    data = {
        "epoch": np.arange(3.0),
        "train_mse": ones,
        "val_mse": ones,
        "gradient_norm_median": ones,
        "gradient_norm_max": ones,
        "gradient_norm_median_manifold": ones,
        "gradient_norm_max_manifold": ones,
        "gradient_norm_max_density": ones,
        "lr": ones,
        "val_loss": np.full(3, np.nan),
        "time": ones,
    }
    panels = training_panels(data, "epoch", skip=("time",))
    assert {k: sorted(v) for k, v in panels.items()} == {
        "mse": ["train_mse", "val_mse"],
        "gradient_norm": ["gradient_norm_max", "gradient_norm_median"],
        "gradient_norm_manifold": ["gradient_norm_max_manifold", "gradient_norm_median_manifold"],
        "gradient_norm_density": ["gradient_norm_max_density"],
        "lr": ["lr"],
    }


def test_training_curves_of_a_real_fit_show_the_gradient_norms(tmp_path):
    import mflows
    from mflows.evaluation.plots import read_history, training_panels

    power = mflows.data.get("power").load("train", n=60, seed=0)
    model = mflows.make_model("mflow", 3, 2, outer_layers=1, inner_layers=1, hidden_features=8)
    history = mflows.fit(model, power.x, algorithm="alternating", epochs=2, progress=False)
    panels = training_panels(read_history(history), "epoch")
    assert {"gradient_norm_manifold", "gradient_norm_density"} <= set(panels)
    assert plot_training_curves(history, tmp_path / "curves.png").stat().st_size > 0
