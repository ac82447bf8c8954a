"""The command line a researcher expects: own data, seeds, devices, extending runs, configs by
name, prior checks, fast --help, caches."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mflows.cli import build_parser, main, train_config_from_args

SMALL = [
    "--set", "model.outer_layers=2", "--set", "model.inner_layers=1",
    "--set", "model.hidden_features=16", "--set", "model.num_blocks=1",
    "--set", "training.batch_size=50", "--threads", "1", "--quiet",
]  # fmt: skip
EVAL = [
    "--set", "evaluation.n_test=100", "--set", "evaluation.n_generate=100",
    "--set", "evaluation.plot_resolution=10", "--quiet",
]  # fmt: skip


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def own_files(tmp_path_factory) -> Path:
    """x on a parabolic surface with a parameter, OOD points off it; .npy and .csv files."""
    root = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 2))
    theta = rng.uniform(-1, 1, size=(500, 1))
    x = np.c_[z, 0.3 * z[:, 0] ** 2 + 0.2 * theta[:, 0]] + 0.01 * rng.normal(size=(500, 3))
    np.save(root / "x.npy", x)
    np.savetxt(root / "theta.csv", theta, delimiter=",", header="theta", comments="")
    np.save(root / "ood.npy", x[:100] + rng.normal(size=(100, 3)))
    return root


@pytest.fixture(scope="module")
def own_run(own_files: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "own"
    code = main(
        [
            "train", "--data", str(own_files / "x.npy"), "--theta", str(own_files / "theta.csv"),
            "--ood-data", str(own_files / "ood.npy"), "--latent-dim", "2", "--epochs", "1",
            "--seed", "5", "--out", str(run), *SMALL,
        ]
    )  # fmt: skip
    assert code == 0
    return run


def test_own_data_run_records_files_hashes_and_seed(own_run: Path, own_files: Path):
    config = json.loads((own_run / "config.json").read_text())
    data = config["data"]
    assert data["name"] == "arrays"
    assert data["x_file"] == str((own_files / "x.npy").resolve())
    assert data["theta_file"].endswith("theta.csv") and data["x_ood_file"].endswith("ood.npy")
    assert set(dict(i.split(":") for i in data["checksums"].split(","))) == {
        "x_file", "theta_file", "x_ood_file",
    }  # fmt: skip
    assert config["training"]["seed"] == 5 and data["seed"] == 5
    assert config["model"]["latent_dim"] == 2
    info = json.loads((own_run / "train_info.json").read_text())
    from mflows.experiments.build import resolve_device

    assert info["seed"] == 5 and "torch" in info["versions"]
    assert info["device"] == resolve_device("auto")  # the default device: a GPU when present


def test_own_data_evaluate_gives_truth_free_metrics_and_report(own_run: Path, capsys):
    code, _, err = _run(capsys, "evaluate", own_run, *EVAL)
    assert code == 0, err
    metrics = json.loads((own_run / "metrics.json").read_text())
    for key in ("reconstruction_error", "log_likelihood", "ood_auc"):
        assert np.isfinite(metrics[key]), key
    assert "manifold_distance" not in metrics and "posterior_mmd" not in metrics
    assert 0.0 <= metrics["ood_auc"] <= 1.0
    report = (own_run / "report.html").read_text()
    assert "<h2>Run</h2>" in report and "best epoch" in report and "versions" in report
    assert "lower" in report and "mean |x - project(x)|" in report  # glossary
    assert "theta (samples and OOD points)" in report
    assert {p.name for p in (own_run / "plots").iterdir()} >= {"samples_vs_truth.png"}


def test_own_data_sample_checks_theta_range(own_run: Path, tmp_path: Path, capsys):
    code, _, err = _run(capsys, "sample", own_run, "-n", "7", "--theta", "0.5",
                        "--out", tmp_path / "s.npy")  # fmt: skip
    assert code == 0, err
    assert np.load(tmp_path / "s.npy").shape == (7, 3)
    code, _, err = _run(capsys, "sample", own_run, "-n", "7", "--theta", "3",
                        "--out", tmp_path / "t.npy")  # fmt: skip
    assert code == 2 and "outside the range of the training parameters" in err
    assert not (tmp_path / "t.npy").exists()


def test_changed_data_file_is_refused(own_files: Path, tmp_path: Path, capsys):
    x = tmp_path / "x.npy"
    x.write_bytes((own_files / "x.npy").read_bytes())
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--data", x, "--latent-dim", "2", "--epochs", "1",
                        "--out", run, *SMALL)  # fmt: skip
    assert code == 0, err
    array = np.load(x)
    array[0, 0] += 1.0
    np.save(x, array)
    code, _, err = _run(capsys, "evaluate", run, *EVAL)
    assert code == 2 and "changed since the run was trained" in err and str(x) in err
    x.unlink()
    code, _, err = _run(capsys, "sample", run, "-n", "3", "--out", tmp_path / "s.npy")
    assert code == 2 and "does not exist" in err


@pytest.mark.parametrize(
    ("rows", "argv", "match"),
    [
        ("nan", [], r"x has 2 row\(s\) with NaN or infinite values \(rows 3, 8\)"),
        ("ok", ["--theta", "short.npy"], r"x has 60 rows, theta 59"),
        ("ok", ["--test-data", "wide.npy"], r"x_test has points of shape \(4,\)"),
        ("ok", ["--test-theta", "short.npy"], r"theta_test given without x_test"),
    ],
)
def test_own_data_errors_are_precise(tmp_path: Path, capsys, rows, argv, match):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 3))
    if rows == "nan":
        x[[3, 8], 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "short.npy", rng.normal(size=(59, 1)))
    np.save(tmp_path / "wide.npy", rng.normal(size=(10, 4)))
    argv = [str(tmp_path / a) if a.endswith(".npy") else a for a in argv]
    code, _, err = _run(capsys, "train", "--data", tmp_path / "x.npy", *argv,
                        "--latent-dim", "2", "--out", tmp_path / "run", *SMALL)  # fmt: skip
    assert code == 2
    assert err.startswith("mflows train: error:")
    import re

    assert re.search(match, err), err
    assert not (tmp_path / "run" / "model.pt").exists()


def test_own_data_flag_errors(tmp_path: Path, capsys):
    code, _, err = _run(capsys, "train", "--theta", "t.npy", "--out", tmp_path / "r")
    assert code == 2 and "--theta needs --data" in err
    code, _, err = _run(capsys, "train", "--data", tmp_path / "missing.npy", "--out",
                        tmp_path / "r")  # fmt: skip
    assert code == 2 and "no such file" in err
    np.save(tmp_path / "x.npy", np.zeros((50, 3)) + np.arange(3))
    code, _, err = _run(capsys, "train", "--data", tmp_path / "x.npy", "--out", tmp_path / "r",
                        *SMALL)  # fmt: skip
    assert code == 2 and "set model.latent_dim" in err and "--latent-dim" in err


def test_extend_a_finished_run(own_files: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", own_files / "x.npy", "--latent-dim", "2", "--epochs", "2",
            "--out", run, *SMALL]  # fmt: skip
    assert _run(capsys, *argv)[0] == 0
    code, _, err = _run(capsys, "train", run, "--epochs", "3", "--threads", "1")
    assert code == 0, err
    assert "extending" in err and "epochs 3 to 3" in err
    history = (run / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3"]
    assert json.loads((run / "config.json").read_text())["training"]["epochs"] == 3
    assert json.loads((run / "train_info.json").read_text())["extended_from"] == 2
    # --resume RUN is the same; not more epochs than done: refused
    code, _, err = _run(capsys, "train", "--resume", run, "--epochs", "3", "--quiet")
    assert code == 2 and "trained for 3 epochs" in err and "--epochs greater than 3" in err
    code, _, err = _run(capsys, "train", run, "--epochs", "5", "--lr", "0.1")
    assert code == 2 and "--lr" in err
    code, _, err = _run(capsys, "train", run)
    assert code == 2 and "needs --epochs N" in err
    assert not (run / "checkpoints").exists()


def test_resume_message(tmp_path: Path, monkeypatch, capsys, own_files: Path):
    from mflows.experiments import runs

    run = tmp_path / "run"
    argv = ["train", "--data", own_files / "x.npy", "--latent-dim", "2", "--epochs", "3",
            "--out", run, "--threads", "1", "--set", "model.outer_layers=2",
            "--set", "model.hidden_features=16"]  # fmt: skip
    from mflows import training

    real_fit = training.fit

    def fit_then_crash(*args, callback=None, **kwargs):
        def crash(epoch, record):
            callback(epoch, record)
            if epoch == 2:
                raise KeyboardInterrupt

        return real_fit(*args, **kwargs, callback=crash)

    monkeypatch.setattr(training, "fit", fit_then_crash)
    assert _run(capsys, *argv)[0] == 130
    monkeypatch.setattr(training, "fit", real_fit)
    code, _, err = _run(capsys, *argv)
    assert code == 0, err
    assert "resuming from epoch 2 of 3" in err
    assert len((run / "history.csv").read_text().splitlines()) == 4
    assert runs is not None


def test_progress_bars_count_steps_within_epochs(own_files: Path, tmp_path: Path, capsys):
    """The step bar (rate, ETA) runs inside each epoch: 400 training points less 20% for
    validation, batches of 50, two phases per batch with alternating training: 14 steps."""
    code, _, err = _run(capsys, "train", "--data", own_files / "x.npy", "--latent-dim", "2",
                        "--epochs", "2", "--out", tmp_path / "r", "--threads", "1",
                        "--set", "model.outer_layers=2", "--set", "model.hidden_features=16",
                        "--set", "training.batch_size=50",
                        "--set", "training.validation_split=0.2")  # fmt: skip
    assert code == 0, err
    assert "epoch 1/2:   0%|          | 0/14" in err and "step/s" in err and "epoch 2/2" in err
    assert "epochs: 100%" in err and "2/2" in err


def test_progress_steps_estimate():
    from mflows.experiments.progress import TrainingProgress, steps_per_epoch

    assert steps_per_epoch(1000, 100, 0.25, "alternating", "batch") == 16
    assert steps_per_epoch(1000, 100, 0.25, "alternating", "epoch") == 8
    assert steps_per_epoch(1000, 100, 0.0, "likelihood", "batch") == 10
    import torch

    with TrainingProgress(3, 1, 4) as bars:  # counts optimiser steps, restarts per epoch
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        for _ in range(5):
            opt.step()
        assert bars._count == 5
        bars.callback(2, {"train_loss": 1.0, "val_loss": float("nan")})
        assert bars.steps == 5 and bars._count == 0 and bars.done == 2
    opt.step()  # the hook is gone after the block
    assert bars._count == 0


def test_seed_makes_training_reproducible(own_files: Path, tmp_path: Path, capsys):
    import torch

    models = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        argv = ["train", "--data", own_files / "x.npy", "--latent-dim", "2", "--epochs", "1",
                "--seed", str(seed), "--out", tmp_path / name, *SMALL]  # fmt: skip
        assert _run(capsys, *argv)[0] == 0
        from mflows import load

        models.append(load(tmp_path / name / "model.pt").state_dict())
    same = all(torch.equal(models[0][k], models[1][k]) for k in models[0])
    differ = any(not torch.equal(models[0][k], models[2][k]) for k in models[0])
    assert same and differ
    code, _, err = _run(capsys, "train", "--seed", "-1", "--out", tmp_path / "d")
    assert code == 2 and "--seed must be >= 0" in err


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------


def test_device_names(monkeypatch):
    import torch

    from mflows.errors import ConfigError
    from mflows.experiments.build import resolve_device

    parser = build_parser()
    for name in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert parser.parse_args(["train", "--out", "x", "--device", name]).device == name
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--out", "x", "--device", "gpu"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None:
        monkeypatch.setattr(mps, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    for name in ("cuda", "cuda:1", "mps"):
        with pytest.raises(ConfigError, match="not available"):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ConfigError, match=r"has 2 CUDA device\(s\)"):
        resolve_device("cuda:2")


def test_default_device_is_auto():
    args = build_parser().parse_args(["train", "--out", "x"])
    assert train_config_from_args(args).device == "auto"


def test_unavailable_device_is_a_clear_error(tmp_path: Path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = _run(capsys, "train", "--dataset", "power", "--device", "cuda:0",
                        "--out", tmp_path / "r", *SMALL)  # fmt: skip
    assert code == 2 and "CUDA is not available" in err


# --------------------------------------------------------------------------------------------
# TensorBoard, configs by name, smoke recipes, prior check, caches, --help speed
# --------------------------------------------------------------------------------------------


def test_tensorboard_missing_warns_once(own_files: Path, tmp_path: Path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name)
    )
    code, _, err = _run(capsys, "train", "--data", own_files / "x.npy", "--latent-dim", "2",
                        "--epochs", "2", "--tensorboard", "--out", tmp_path / "r",
                        *SMALL)  # fmt: skip
    assert code == 0
    assert err.count("warning: --tensorboard needs the tensorboard package") == 1
    assert not (tmp_path / "r" / "tensorboard").exists()


def test_tensorboard_logs_when_installed(own_files: Path, tmp_path: Path, capsys):
    pytest.importorskip("tensorboard")
    code, _, err = _run(capsys, "train", "--data", own_files / "x.npy", "--latent-dim", "2",
                        "--epochs", "1", "--tensorboard", "--out", tmp_path / "r",
                        *SMALL)  # fmt: skip
    assert code == 0, err
    assert any((tmp_path / "r" / "tensorboard").iterdir())


def test_configs_by_name(capsys):
    code, out, _ = _run(capsys, "config", "list")
    names = out.split()
    assert code == 0 and "power_mf_alternating" in names and len(names) >= 70
    code, out, _ = _run(capsys, "config", "show", "power_pae")
    assert code == 0 and 'kind = "pae"' in out
    args = build_parser().parse_args(["train", "--out", "x", "--config", "power_pae"])
    assert train_config_from_args(args).model.kind == "pae"
    code, _, err = _run(capsys, "train", "--config", "power_mf_alternatng", "--out", "x")
    assert code == 2 and "did you mean: power_mf_alternating" in err


@pytest.mark.parametrize("name", ["power_mf_sequential", "power_pae", "power_emf_alternating"])
def test_smoke_recipe_of_the_configs_readme_runs(name: str, tmp_path: Path, capsys):
    code, _, err = _run(capsys, "train", "--config", name, "--set", "training.epochs=1",
                        "--set", "data.n_train=200", "--out", tmp_path / "r", *SMALL)  # fmt: skip
    assert code == 0, err
    history = (tmp_path / "r" / "history.csv").read_text().splitlines()
    expected = 2 if name.endswith(("sequential", "pae")) else 1  # one epoch per stage
    assert len(history) - 1 == expected


def test_sample_theta_outside_the_prior_is_refused(tmp_path: Path, capsys):
    run = tmp_path / "r"
    code, _, err = _run(capsys, "train", "--dataset", "power", "--algorithm", "mf",
                        "--alternate", "--epochs", "1", "--set", "data.n_train=200",
                        "--out", run, *SMALL)  # fmt: skip
    assert code == 0, err
    code, _, err = _run(capsys, "sample", run, "-n", "3", "--theta", "3", "--out",
                        tmp_path / "s.npy")  # fmt: skip
    assert code == 2 and "outside the prior of power" in err and "[-1, 1]" in err
    code, _, err = _run(capsys, "sample", run, "-n", "3", "--theta", "0.9", "--out",
                        tmp_path / "s.npy")  # fmt: skip
    assert code == 0, err


def test_data_cache_lists_and_clears(tmp_path: Path, capsys):
    cache = tmp_path / "lorenz"
    cache.mkdir()
    (cache / "trajectories-0123.npy").write_bytes(b"\0" * 2_000_000)
    (cache / "trajectories-0123.npy.sha256").write_text("0" * 64)  # its checksum
    (cache / "keep.txt").write_text("not a cache")
    code, out, _ = _run(capsys, "data", "cache", "--data-dir", tmp_path)
    assert code == 0 and "2.0 MB" in out and "trajectories-0123.npy" in out
    code, out, _ = _run(capsys, "data", "cache", "--clear", "--data-dir", tmp_path)
    assert code == 0 and "removed 2 cache file(s), 2.0 MB" in out
    assert [p.name for p in cache.iterdir()] == ["keep.txt"]


def test_lorenz_states_the_cache_size_up_front(tmp_path: Path, capsys):
    from mflows.data import Lorenz

    ds = Lorenz(num_trajectories=2, steps=50, t_max=2.0, warmup=0.5, data_dir=tmp_path)
    ds.load("train", n=10)
    err = capsys.readouterr().err
    assert "2 trajectories x 50 steps" in err and "GB" in err and "data cache --clear" in err
    assert ds.cache_path.stat().st_size <= 2 * 50 * 3 * 4 + 128


def test_cli_import_does_not_load_torch_and_help_is_fast():
    code = (
        "import sys, mflows, mflows.cli; "
        "print(sorted(m for m in ('torch', 'scipy', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mflows.cli", "--help"], capture_output=True, check=True)
    subprocess.run(
        [sys.executable, "-m", "mflows.cli", "train", "--help"], capture_output=True, check=True
    )
    assert (time.perf_counter() - start) / 2 < 1.0


def test_version(capsys):
    import mflows

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mflows {mflows.__version__}"


def test_lazy_top_level_names_still_work():
    import mflows

    assert callable(mflows.make_model) and callable(mflows.fit) and mflows.data.from_arrays
    assert "make_model" in dir(mflows)
    with pytest.raises(AttributeError):
        mflows.nothing_here
