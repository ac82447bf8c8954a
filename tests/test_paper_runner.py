"""The paper-reproduction results store, runner and renderer (benchmarks/paper/) at tiny budgets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.paper import render
from benchmarks.paper import run as runner
from benchmarks.paper.experiments import EXPERIMENTS, config_dir, get_experiment
from benchmarks.paper.store import FINISHED, Store

TINY = ("evaluation.n_test=40", "evaluation.n_generate=60")


def _options(**kwargs) -> runner.RunOptions:
    base = {"epochs": 2, "n_train": 240, "overrides": TINY}
    return runner.RunOptions(**{**base, **kwargs})


def _sphere2(name: str = "fom"):
    exp = get_experiment("sphere2")
    return exp, exp.model(name)


def test_every_model_has_a_paper_configuration():
    for exp in EXPERIMENTS.values():
        for spec in exp.models:
            assert (config_dir() / f"{spec.config}.toml").is_file(), spec.config


def test_run_writes_the_result_and_skips_it_afterwards(tmp_path):
    store = Store(tmp_path)
    exp, spec = _sphere2()
    assert runner.run_one(store, exp, spec, 0, _options()) == "finished"
    result = store.read("sphere2", "fom", 0)
    for key in (
        "experiment",
        "model",
        "seed",
        "epochs",
        "n_train",
        "git_revision",
        "wall_time_s",
        "machine",
        "metrics",
        "status",
        "budget",
    ):
        assert key in result, key
    assert result["status"] == FINISHED and result["epochs"] == 2 and result["n_train"] == 240
    assert result["budget"]["epochs"] == 2 and result["budget"]["n_train"] == 240
    assert [r["epoch"] for r in result["history"]] == [1, 2] and "val_loss" in result["history"][0]
    metrics = result["metrics"]
    assert metrics["dataset"] == "spherical_gaussian" and metrics["model"] == "fom"
    assert metrics["manifold_distance"] < 1e-5  # FOM's chart is the exact sphere
    assert np.isfinite(metrics["log_likelihood_mae"])
    assert not (store.work_dir("sphere2", "fom", 0) / "checkpoints").exists()
    before = store.result_path("sphere2", "fom", 0).read_text()
    assert runner.run_one(store, exp, spec, 0, _options()) == "skipped"
    # another budget is not silently mixed in: skipped without replace, rerun with it
    assert runner.run_one(store, exp, spec, 0, _options(epochs=1)) == "skipped"
    assert store.result_path("sphere2", "fom", 0).read_text() == before
    assert runner.run_one(store, exp, spec, 0, _options(epochs=1, replace=True)) == "finished"
    assert store.read("sphere2", "fom", 0)["epochs"] == 1


def test_interrupted_run_resumes_bit_identically(tmp_path, monkeypatch):
    exp, spec = _sphere2("mflow_alt")
    reference = Store(tmp_path / "reference")
    assert runner.run_one(reference, exp, spec, 1, _options()) == "finished"

    store = Store(tmp_path / "interrupted")
    original = runner._deadline_callback

    def stop_after_first_epoch(*args, **kwargs):
        inner = original(*args, **kwargs)

        def callback(epoch, record):
            inner(epoch, record)
            raise runner.DeadlineReached("simulated kill after the first epoch")

        return callback

    monkeypatch.setattr(runner, "_deadline_callback", stop_after_first_epoch)
    assert runner.run_one(store, exp, spec, 1, _options()) == "stopped"
    assert store.read("sphere2", "mflow_alt", 1) is None
    assert store.read_progress("sphere2", "mflow_alt", 1)["epochs_done"] == 1
    assert any((store.work_dir("sphere2", "mflow_alt", 1) / "checkpoints").iterdir())
    monkeypatch.setattr(runner, "_deadline_callback", original)
    assert runner.run_one(store, exp, spec, 1, _options()) == "finished"
    ours, ref = store.read("sphere2", "mflow_alt", 1), reference.read("sphere2", "mflow_alt", 1)
    assert ours["epochs"] == ref["epochs"] == 2
    assert ours["metrics"] == ref["metrics"]  # bit-identical training, same scoring seeds


def test_time_limit_stops_before_starting(tmp_path):
    exp, spec = _sphere2()
    store = Store(tmp_path)
    assert runner.run_one(store, exp, spec, 0, _options(deadline=0.0)) == "stopped"
    assert store.read("sphere2", "fom", 0) is None


def test_a_run_held_by_another_runner_is_skipped_and_the_rest_go_on(
    tmp_path, capsys, held_by_another_process
):
    store = Store(tmp_path)
    held = store.work_dir("sphere2", "fom", 0)
    held.mkdir(parents=True)
    argv = ["--experiment", "sphere2", "--models", "fom", "--seeds", "0", "1"]
    argv += ["--epochs", "1", "--n-train", "240", "--root", str(tmp_path)]
    for override in TINY:
        argv += ["--set", override]
    with held_by_another_process(held):
        assert runner.main(argv) == 0
    captured = capsys.readouterr()
    log = captured.out + captured.err
    assert "fom-seed0: in use by another runner, skipped" in log
    assert store.read("sphere2", "fom", 0) is None
    assert store.read("sphere2", "fom", 1)["status"] == FINISHED


def _fake(store: Store, model: str, seed: int, mmd: float, status: str = FINISHED) -> None:
    store.write(
        {
            "experiment": "power",
            "model": model,
            "seed": seed,
            "status": status,
            "epochs": 50,
            "n_train": 75000,
            "train_time_s": 100.0 + seed,
            "git_revision": "abc1234",
            "budget": {"epochs": 50, "n_train": 100000, "patience": None},
            "machine": {"cpu": "Test Processor", "cpus": 2, "threads": 1, "device": "cpu"},
            "metrics": {"posterior_mmd": mmd, "manifold_distance": 0.002, "ood_auc": None},
        }
    )


def test_render_from_files_only(tmp_path):
    store = Store(tmp_path / "store")
    for seed, mmd in enumerate([0.03, 0.01, 0.02]):
        _fake(store, "mflow_alt", seed, mmd)
    _fake(store, "af", 0, float("nan"), status="diverged")
    block = render.render_block(store)
    row = next(line for line in block.splitlines() if line.startswith("| M-flow alternating"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "3"
    assert "0.020 [0.010, 0.030]" in cells  # median [min, max] of the MMD
    assert "0.020" in cells and "0.986" in cells  # the paper's MMD and AUC beside ours
    assert "Test Processor (2 cores), 1 thread" in row
    assert "50 epochs max, fixed epochs, 100000 samples" in row
    assert "| AF | 0 (+1 diverged) |" in block
    assert "sphere" not in block  # experiments without files are left out

    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{render.BEGIN}\nstale row\n{render.END}\noutro\n")
    assert render.main(["--root", str(store.root), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{render.END}\noutro\n")
    assert "stale row" not in text and "0.020 [0.010, 0.030]" in text
    with pytest.raises(ValueError, match="markers"):
        render.rewrite("no markers", "x")
    # a second store goes to its own marked block, and the header names that store
    doc.write_text(text + "<!-- short:begin -->\n<!-- short:end -->\n")
    assert render.main(["--root", str(store.root), "--doc", str(doc), "--marker", "short"]) == 0
    text = doc.read_text()
    assert text.count("0.020 [0.010, 0.030]") == 2
    assert f"--root {store.root} --marker short" in text


def _write_lhc_files(directory: Path, n: int = 240, n_test: int = 40) -> None:
    """Random files with the shapes of the real lhc40d files (40 observables, 2 parameters)."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True)
    np.save(directory / "x_train.npy", rng.normal(100, 50, size=(n, 40)).astype(np.float32))
    np.save(directory / "theta_train.npy", rng.normal(size=(n, 2)).astype(np.float32))
    np.save(directory / "t_xz_train.npy", rng.normal(size=(n, 2)).astype(np.float32))
    for suffix, theta in (("", (0, 0)), ("1", (0.5, 0)), ("2", (-1, -1))):
        x = rng.normal(100, 50, size=(n_test, 40)).astype(np.float32)
        np.save(directory / f"x_test{suffix}.npy", x)
        np.save(directory / f"theta_test{suffix}.npy", np.tile(np.float32(theta), (n_test, 1)))


def test_lhc40d_pipeline_runs_at_the_paper_architecture_on_generated_files(tmp_path):
    _write_lhc_files(tmp_path / "data" / "lhc40d")
    exp = get_experiment("lhc40d")
    spec = exp.model("mflow_alt_scandal")
    options = runner.RunOptions(
        epochs=1,
        mcmc_steps=10,
        overrides=(*TINY, f"data.data_dir={tmp_path / 'data'}"),
    )
    config = runner.resolve_config(exp, spec, 0, options)
    assert (config.model.outer_layers, config.model.inner_layers) == (20, 15)
    assert config.model.latent_dim == 14 and config.training.scandal == 2.0
    store = Store(tmp_path / "store")
    assert runner.run_one(store, exp, spec, 0, options) == "finished"
    metrics = store.read("lhc40d", "mflow_alt_scandal", 0)["metrics"]
    for key in ("closure", "log_posterior_true_theta", "reconstruction_error"):
        assert metrics.get(key) is not None and np.isfinite(metrics[key]), key
    stored = json.loads(store.result_path("lhc40d", "mflow_alt_scandal", 0).read_text())
    assert stored["kind"] == "mflow" and 0 < stored["n_train"] <= 240  # the train split


def test_sphere_density_figure_integrates_to_one(tmp_path):
    from benchmarks.paper.figures import plot_sphere_density
    from mflows import data, make_model

    dataset = data.get("spherical_gaussian", n=2, d=3, epsilon=0.01)
    model = make_model("fom", 3, 2, chart="sphere", inner_layers=2, seed=0).eval()
    stats = plot_sphere_density(model, dataset, tmp_path / "f.png", "untrained FOM", 100)
    assert (tmp_path / "f.png").stat().st_size > 1000
    # both densities are w.r.t. the sphere's area: midpoint quadrature over S^2 gives ~1
    assert abs(stats["true_mass"] - 1) < 0.01 and abs(stats["model_mass"] - 1) < 0.01


def test_model_overrides_reach_the_configuration():
    """A row's own overrides (the stereographic FOM) survive the experiment's row rewriting."""
    exp = get_experiment("sphere2")
    spec = next(m for m in exp.models if m.name == "fom_stereo")
    config = runner.resolve_config(exp, spec, 0, runner.RunOptions())
    assert config.model.chart == "sphere-stereographic" and config.model.latent_dim == 2
    plain = next(m for m in exp.models if m.name == "fom")
    assert runner.resolve_config(exp, plain, 0, runner.RunOptions()).model.chart == "sphere"


def test_a_field_added_later_and_left_unset_does_not_restart_an_interrupted_run():
    saved = {"model": {"kind": "mflow", "outer_layers": 5}, "seed": 0}
    assert runner.same_config(
        saved, {"model": {"kind": "mflow", "outer_layers": 5, "identity_init": None}, "seed": 0}
    )
    assert not runner.same_config(
        saved, {"model": {"kind": "mflow", "outer_layers": 5, "identity_init": False}, "seed": 0}
    )
    assert not runner.same_config(saved, {"model": {"kind": "mflow", "outer_layers": 6}, "seed": 0})
    assert not runner.same_config({**saved, "gone": 1}, saved)
