"""The ``mflows`` command line: flag mapping, help, actionable errors and end-to-end runs."""

from __future__ import annotations

import base64
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mflows.cli import SCHEMES, UNSUPPORTED_FLAGS, build_parser, main, train_config_from_args

# The README of the original code (seeds/000): flags -> model and training scheme.
PAPER_TABLE = {
    ("flow", ()): ("af", "likelihood"),
    ("mf", ("--specified",)): ("fom", "likelihood"),
    ("pie", ()): ("pie", "likelihood"),
    ("mf", ()): ("mflow", "likelihood"),
    ("mf", ("--alternate",)): ("mflow", "alternating"),
    ("mf", ("--sequential",)): ("mflow", "sequential"),
    ("gamf", ()): ("mflow", "ot"),
    ("gamf", ("--alternate",)): ("mflow", "ot-alternating"),
    ("emf", ()): ("emflow", "likelihood"),
    ("emf", ("--alternate",)): ("emflow", "alternating"),
    ("emf", ("--sequential",)): ("emflow", "sequential"),
    ("pae", ()): ("pae", "sequential"),
    ("pae", ("--sequential",)): ("pae", "sequential"),
}
SCHEDULE_FLAGS = ("--specified", "--alternate", "--sequential")


def _config(*argv: str):
    args = build_parser().parse_args(["train", "--out", "unused", *argv])
    return train_config_from_args(args)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------------------------
# Paper flags -> config
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["flow", "pie", "mf", "emf", "gamf", "pae"])
@pytest.mark.parametrize(
    "flags",
    [()]
    + [(f,) for f in SCHEDULE_FLAGS]
    + [tuple(c) for c in itertools.combinations(SCHEDULE_FLAGS, 2)],
)
def test_every_algorithm_flag_combination(algorithm, flags, capsys):
    argv = ["--dataset", "power", "--algorithm", algorithm, *flags]
    expected = PAPER_TABLE.get((algorithm, flags))
    if expected is not None:
        config = _config(*argv)
        assert (config.model.kind, config.training.algorithm) == expected
        return
    code, _, err = _run(capsys, "train", "--out", "unused", *argv)
    assert code == 2
    assert "incompatible flags" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_scheme_table_is_the_paper_table():
    table = {(a, () if s == "default" else (f"--{s}",)): v for (a, s), v in SCHEMES.items()}
    assert table == PAPER_TABLE


def test_paper_flags_set_config_fields():
    config = _config(
        "--dataset", "spherical_gaussian", "--truelatentdim", "2", "--datadim", "3",
        "--epsilon", "0.05", "--algorithm", "emf", "--alternate", "--modellatentdim", "2",
        "--outerlayers", "3", "--innerlayers", "4", "--lineartransform", "lu",
        "--splinebins", "10", "--splinerange", "6", "--pieepsilon", "0.1",
        "--encoderblocks", "3", "--encoderhidden", "50", "--epochs", "7", "--batchsize", "64",
        "--lr", "3e-4", "--msefactor", "100", "--weightdecay", "1e-5",
        "--clip", "5", "--validationsplit", "0.1", "--samplesize", "500",
        "--outertransform", "affine-coupling",
        "--innertransform", "affine-coupling",
    )  # fmt: skip
    d, m, t = config.data, config.model, config.training
    assert (d.name, d.latent_dim, d.data_dim, d.epsilon, d.n_train) == (
        "spherical_gaussian", 2, 3, 0.05, 500,
    )  # fmt: skip
    assert (m.kind, m.latent_dim, m.outer_layers, m.inner_layers, m.linear) == (
        "emflow", 2, 3, 4, "lu",
    )  # fmt: skip
    assert (m.num_bins, m.tail_bound, m.pie_epsilon, m.coupling) == (10, 6.0, 0.1, "affine")
    assert (m.encoder_num_blocks, m.encoder_hidden_features) == (3, 50)
    assert (t.algorithm, t.epochs, t.batch_size, t.lr, t.reconstruction_weight) == (
        "alternating", 7, 64, 3e-4, 100.0,
    )  # fmt: skip
    assert (t.weight_decay, t.clip, t.validation_split) == (1e-5, 5.0, 0.1)


def test_conditionalouter_and_scandal():
    config = _config("--dataset", "power", "--algorithm", "pie", "--conditionalouter")
    assert config.model.conditional_outer is True
    # without the flag: the factory's default for the kind (the same model as make_model builds)
    assert _config("--dataset", "power", "--algorithm", "pie").model.conditional_outer is None
    unconditional = ("--algorithm", "pie", "--set", "model.conditional_outer=false")
    assert _config(*unconditional).model.conditional_outer is False
    assert _config("--algorithm", "mf", "--sequential", "--scandal").training.scandal == 1.0
    assert _config("--algorithm", "mf", "--sequential", "--scandal", "2").training.scandal == 2.0
    assert _config("--algorithm", "mf").training.scandal is None


def test_precedence_config_then_flags_then_set(tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "lorenz"\n[training]\nepochs = 11\nlr = 0.01\nbatch_size = 7\n')
    config = _config("--config", str(cfg), "--epochs", "12", "--set", "training.epochs=13")
    assert config.data.name == "lorenz"
    assert config.training.epochs == 13  # --set wins over the flag
    assert config.training.lr == 0.01  # from the file
    assert config.training.batch_size == 7
    config = _config("--config", str(cfg), "--lr", "0.5")
    assert config.training.lr == 0.5  # the flag wins over the file


def test_linear_alias_and_bad_choice(capsys):
    assert _config("--lineartransform", "linear").model.linear == "lu"
    code, _, err = _run(capsys, "train", "--out", "x", "--lineartransform", "householder")
    assert code == 2 and "invalid choice" in err


@pytest.mark.parametrize("flag", sorted(UNSUPPORTED_FLAGS))
def test_unsupported_paper_flags_are_rejected(flag, capsys):
    code, _, err = _run(capsys, "train", "--out", "x", "--algorithm", "mf", flag)
    assert code == 2
    assert f"flag {flag} of the original code is not supported" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_flag_errors(capsys):
    code, _, err = _run(capsys, "train", "--out", "x", "--algorithm", "nf")
    assert code == 2 and "unknown algorithm 'nf'" in err
    for name in ("flow", "pie", "mf", "emf", "gamf", "pae"):
        assert name in err
    code, _, err = _run(capsys, "train", "--out", "x", "--alternate")
    assert code == 2 and "--alternate needs --algorithm" in err
    code, _, err = _run(capsys, "train", "--out", "x", "--set", "training.epochz=3")
    assert code == 2 and "unknown config key 'training.epochz'" in err and "epochs" in err
    code, _, err = _run(capsys, "train", "--out", "x", "--set", "training.epochs=three")
    assert code == 2 and "training.epochs expects int, got 'three'" in err
    code, _, err = _run(capsys, "train", "--out", "x", "--algorithm", "gamf", "--scandal")
    assert code == 2 and "--scandal needs a likelihood phase" in err
    code, _, err = _run(
        capsys, "train", "--out", "x", "--outertransform", "rq-coupling",
        "--innertransform", "affine-coupling",
    )  # fmt: skip
    assert code == 2 and "same coupling" in err


# --------------------------------------------------------------------------------------------
# Help
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        ([], ["train", "evaluate", "sample", "data", "demo", "examples"]),
        (["train"], ["--dataset", "--algorithm", "--alternate", "--sequential", "--scandal",
                     "--config", "--set", "--out", "--quiet", "--device", "--data-dir",
                     "--modellatentdim", "--splinebins", "gamf", "ot-alternating", "examples"]),
        (["evaluate"], ["run_dir", "--set", "--inception-weights", "metrics.json", "examples"]),
        (["sample"], ["run_dir", "-n", "--out", "--theta", "examples"]),
        (["data"], ["list", "describe", "examples"]),
        (["data", "describe"], ["name", "--data-dir"]),
        (["demo"], ["--out", "--quick", "--quiet", "report"]),
    ],
)  # fmt: skip
def test_help_of_every_command(argv, mentions, capsys):
    code, out, _ = _run(capsys, *argv, "--help")
    assert code == 0
    for word in mentions:
        assert word in out, word


def test_no_command_prints_help(capsys):
    code, out, _ = _run(capsys)
    assert code == 2 and "COMMAND" in out


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "mflows", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "mflows" in proc.stdout


# --------------------------------------------------------------------------------------------
# End to end on tiny settings: train -> evaluate -> sample
# --------------------------------------------------------------------------------------------

TINY = [
    "--set", "data.n_train=300",
    "--set", "model.outer_layers=2", "--set", "model.inner_layers=2",
    "--set", "model.hidden_features=16", "--set", "model.num_blocks=1",
    "--set", "training.epochs=2", "--set", "training.batch_size=50",
    "--set", "evaluation.n_test=100", "--set", "evaluation.n_generate=200",
    "--set", "evaluation.mcmc_steps=60", "--set", "evaluation.mcmc_burn_in=10",
    "--set", "evaluation.plot_resolution=15", "--threads", "1",
]  # fmt: skip
EXPECTED_METRICS = (
    "manifold_distance",
    "reconstruction_error",
    "log_likelihood",
    "nll_bits_per_dim",
    "true_log_likelihood",
    "log_likelihood_mae",
    "ood_auc",
    "ood_auc_reconstruction",
    "ood_auc_log_likelihood",
    "posterior_mmd",
    "log_posterior_true_theta",
)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "power-mf"
    config = "power_mf_alternating"  # a shipped config, by name
    code = main(["train", "--config", str(config), "--out", str(run_dir), "--quiet", *TINY])
    assert code == 0
    return run_dir


def test_train_writes_a_complete_run(trained_run: Path):
    names = {p.name for p in trained_run.iterdir()}
    assert {"config.json", "model.pt", "history.csv"} <= names
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".")]
    config = json.loads((trained_run / "config.json").read_text())
    assert config["model"]["kind"] == "mflow" and config["training"]["algorithm"] == "alternating"
    assert config["training"]["epochs"] == 2 and config["data"]["n_train"] == 300
    # the --set overrides win over the config file, the rest comes from the file
    assert config["model"]["num_bins"] == 10 and config["model"]["tail_bound"] == 6.0
    from mflows.models import load

    model = load(trained_run / "model.pt")
    assert model.kind == "mflow" and model.latent_dim == 2 and model.context_dim == 1


def test_evaluate_writes_metrics_plots_and_report(trained_run: Path, capsys):
    code, out, _ = _run(capsys, "evaluate", str(trained_run), "--quiet", "--threads", "1")
    assert code == 0
    assert "report.html" in out and "manifold_distance" in out
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for key in EXPECTED_METRICS:
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert 0.0 <= metrics["ood_auc"] <= 1.0
    assert metrics["ood_auc"] == max(
        metrics["ood_auc_reconstruction"], metrics["ood_auc_log_likelihood"]
    )
    assert metrics["posterior_mmd"] >= 0.0 and metrics["manifold_distance"] >= 0.0
    plots = sorted((trained_run / "plots").glob("*.png"))
    stems = {p.stem for p in plots}
    assert {"samples_vs_truth", "learned_manifold", "reconstruction_errors", "posterior"} <= stems
    assert "training_curves" in stems
    report = (trained_run / "report.html").read_text()
    for plot in plots:  # every plot is embedded, byte for byte
        assert base64.b64encode(plot.read_bytes()).decode("ascii") in report, plot.name
    assert "posterior_mmd" in report


def test_sample_writes_npy_of_the_right_shape(trained_run: Path, tmp_path: Path, capsys):
    out_file = tmp_path / "samples.npy"
    code, out, _ = _run(capsys, "sample", str(trained_run), "-n", "37", "--out", str(out_file))
    assert code == 0 and "37 samples" in out
    samples = np.load(out_file)
    assert samples.shape == (37, 3) and samples.dtype == np.float32
    assert np.isfinite(samples).all()
    # conditional model: --theta picks the parameter point, wrong length is an actionable error
    code, _, _ = _run(capsys, "sample", str(trained_run), "-n", "5", "--theta", "0.5",
                      "--out", str(tmp_path / "s2.npy"))  # fmt: skip
    assert code == 0 and np.load(tmp_path / "s2.npy").shape == (5, 3)
    code, _, err = _run(capsys, "sample", str(trained_run), "-n", "5", "--theta", "0", "1",
                        "--out", str(tmp_path / "s3.npy"))  # fmt: skip
    assert code == 2 and "--theta needs 1 value" in err
    assert not (tmp_path / "s3.npy").exists()


def test_train_refuses_to_overwrite_a_run(trained_run: Path, capsys):
    code, _, err = _run(capsys, "train", "--dataset", "power", "--algorithm", "mf",
                        "--alternate", "--out", str(trained_run))  # fmt: skip
    assert code == 2 and "--overwrite" in err


# --------------------------------------------------------------------------------------------
# Actionable errors
# --------------------------------------------------------------------------------------------


def _assert_one_line(err: str) -> None:
    assert err.startswith("mflows ") and err.count("\n") == 1 and "Traceback" not in err


def test_unknown_dataset_lists_valid_names(tmp_path: Path, capsys):
    from mflows import data

    code, _, err = _run(capsys, "train", "--dataset", "mnist", "--algorithm", "flow",
                        "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 2 and "unknown data set 'mnist'" in err
    for name in data.names():
        assert name in err
    _assert_one_line(err)
    assert not (tmp_path / "r").exists()
    code, _, err = _run(capsys, "data", "describe", "mnist")
    assert code == 2 and "power" in err


def test_data_list_and_describe(tmp_path: Path, capsys):
    from mflows import data

    code, out, _ = _run(capsys, "data", "list")
    assert code == 0 and out.split() == list(data.names())
    code, out, _ = _run(capsys, "data", "describe", "power")
    assert code == 0 and "power" in out and "3" in out
    code, out, _ = _run(capsys, "data", "describe", "lhc40d", "--data-dir", str(tmp_path))
    assert code == 0 and "lhc40d" in out
    code, _, err = _run(capsys, "data")
    assert code == 2 and "mflows data list" in err


def test_missing_checkpoint(tmp_path: Path, capsys):
    code, _, err = _run(capsys, "evaluate", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err
    _assert_one_line(err)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    from mflows.experiments.config import RunConfig, save_config

    save_config(RunConfig(), run_dir / "config.json")
    for command in (["evaluate", str(run_dir)], ["sample", str(run_dir), "--out", "x.npy"]):
        code, _, err = _run(capsys, *command)
        assert code == 2 and "no trained model" in err
        _assert_one_line(err)


def test_interrupted_run_with_other_settings_is_not_resumed(tmp_path: Path, capsys):
    from mflows.experiments.config import RunConfig, save_config

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    save_config(RunConfig(), run_dir / "config.json")
    code, _, err = _run(capsys, "train", "--dataset", "power", "--algorithm", "flow",
                        "--out", str(run_dir), *TINY)  # fmt: skip
    assert code == 2 and "interrupted run with a different configuration" in err
    _assert_one_line(err)


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path: Path, monkeypatch, capsys):
    import mflows.training

    real_fit = mflows.training.fit

    def interrupted_fit(*args, callback=None, **kwargs):
        def stop(epoch, record):
            if callback is not None:
                callback(epoch, record)
            if epoch == 1:
                raise KeyboardInterrupt

        return real_fit(*args, callback=stop, **kwargs)

    run_dir = tmp_path / "run"
    argv = ["train", "--dataset", "power", "--algorithm", "mf", "--sequential", "--quiet",
            "--out", str(run_dir), *TINY, "--set", "training.epochs=3"]  # fmt: skip
    monkeypatch.setattr(mflows.training, "fit", interrupted_fit)
    code, _, err = _run(capsys, *argv)
    assert code == 130 and "interrupted" in err
    assert not (run_dir / "model.pt").exists()
    assert (run_dir / "checkpoints" / "checkpoint.pt").is_file()
    first_epoch = (run_dir / "checkpoints" / "history.csv").read_text().split()[1]
    monkeypatch.setattr(mflows.training, "fit", real_fit)
    code, _, _ = _run(capsys, *argv)  # the same command again: resumes at epoch 2
    assert code == 0 and (run_dir / "model.pt").is_file()
    assert not (run_dir / "checkpoints").exists()
    rows = (run_dir / "history.csv").read_text().split()[1:]
    assert [row.split(",")[0] for row in rows] == ["1", "2", "3"]
    assert rows[0].rstrip(",") == first_epoch.rstrip(
        ","
    )  # epoch 1 (with its timing) was kept, not trained again


def test_scandal_needs_joint_scores(tmp_path: Path, capsys):
    code, _, err = _run(capsys, "train", "--dataset", "power", "--algorithm", "mf", "--alternate",
                        "--scandal", "--out", str(tmp_path / "r"), *TINY)  # fmt: skip
    assert code == 2 and "needs joint scores" in err and "power" in err
    assert not (tmp_path / "r" / "model.pt").exists()


def test_failed_training_leaves_no_model_file(tmp_path: Path, monkeypatch, capsys):
    import mflows.training

    def broken_fit(*args, **kwargs):
        raise FloatingPointError("loss became NaN")

    monkeypatch.setattr(mflows.training, "fit", broken_fit)
    run_dir = tmp_path / "run"
    with pytest.raises(FloatingPointError):
        main(["train", "--dataset", "power", "--algorithm", "mf", "--alternate", "--quiet",
              "--out", str(run_dir), *TINY])  # fmt: skip
    assert not (run_dir / "model.pt").exists()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]
    code, _, err = _run(capsys, "evaluate", str(run_dir))
    assert code == 2 and "no trained model" in err


def test_image_metric_without_inception_weights(tmp_path: Path, monkeypatch, capsys):
    from mflows.experiments.config import (
        DataConfig,
        ModelConfig,
        RunConfig,
        TrainingConfig,
        save_config,
    )

    monkeypatch.delenv("MFLOWS_INCEPTION_WEIGHTS", raising=False)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = RunConfig(
        data=DataConfig(name="gan2d"),
        model=ModelConfig(kind="af"),
        training=TrainingConfig(algorithm="likelihood"),
    )
    save_config(config, run_dir / "config.json")
    (run_dir / "model.pt").write_bytes(b"")  # never read: the weights are checked first
    code, _, err = _run(capsys, "evaluate", str(run_dir))
    assert code == 2 and "Inception weights" in err and "--inception-weights" in err
    _assert_one_line(err)
    code, _, err = _run(capsys, "evaluate", str(run_dir), "--inception-weights",
                        str(tmp_path / "missing.pth"))  # fmt: skip
    assert code == 2 and "missing.pth" in err


# --------------------------------------------------------------------------------------------
# Demo
# --------------------------------------------------------------------------------------------


def test_demo_quick(tmp_path: Path, capsys):
    import torch

    threads = torch.get_num_threads()
    code, out, _ = _run(capsys, "demo", "--quick", "--quiet", "--out", str(tmp_path / "demo"))
    assert code == 0
    assert torch.get_num_threads() == threads  # the demo's --threads 1 is undone on return
    report = tmp_path / "demo" / "report.html"
    assert report.is_file() and str(report) in out
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    for key in ("manifold_distance", "reconstruction_error", "ood_auc", "posterior_mmd"):
        assert math.isfinite(metrics[key]) and key in out


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2 (1 for a diverged run), never a traceback
# --------------------------------------------------------------------------------------------

MICRO = [
    "--set", "data.n_train=200", "--set", "model.outer_layers=1", "--set", "model.inner_layers=1",
    "--set", "model.hidden_features=8", "--set", "model.num_blocks=1",
    "--set", "training.epochs=1", "--set", "training.batch_size=50", "--threads", "1", "--quiet",
]  # fmt: skip


def _train(capsys, out: Path | str, *extra: str) -> tuple[int, str, str]:
    return _run(capsys, "train", "--dataset", "power", "--algorithm", "mf", "--out", str(out),
                *MICRO, *extra)  # fmt: skip


def _one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mflows {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("micro") / "run"
    assert main(["train", "--dataset", "power", "--algorithm", "mf", "--out", str(out),
                 *MICRO]) == 0  # fmt: skip
    return out


def test_non_utf8_config_is_one_line(tmp_path: Path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_bytes(b"[training]\nepochs = 1 # \xff\xfe\n")
    code, _, err = _run(capsys, "train", "--config", str(cfg), "--out", str(tmp_path / "r"))
    assert code == 2
    assert "not UTF-8" in _one_error_line(err, "train") and str(cfg) in err


def test_out_through_a_regular_file_is_one_line(tmp_path: Path, capsys):
    blocker = tmp_path / "somefile"
    blocker.write_text("x")
    code, _, err = _train(capsys, blocker / "x")
    assert code == 2
    line = _one_error_line(err, "train")
    assert "Not a directory" in line and "somefile" in line
    code, _, err = _train(capsys, blocker)
    assert code == 2 and "is not a directory" in _one_error_line(err, "train")
    assert blocker.read_text() == "x"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.seed=-1", "data.seed must be >= 0"),
        ("data.n_train=1e20", "data.n_train expects int"),
        ("data.n_train=100000000000000000000", "is too large"),
        ("training.lr=nan", "training.lr must be a finite number"),
        ("model.tail_bound=inf", "model.tail_bound must be a finite number"),
    ],
)
def test_bad_set_values_are_one_line(tmp_path: Path, capsys, override, message):
    code, _, err = _train(capsys, tmp_path / "r", "--set", override)
    assert code == 2
    assert message in _one_error_line(err, "train")
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_config_errors_name_the_paper_flag(tmp_path: Path, capsys):
    code, _, err = _train(capsys, tmp_path / "r", "--modellatentdim", "5")
    assert code == 2
    assert "--modellatentdim" in _one_error_line(err, "train")


@pytest.mark.parametrize(
    "schedule",
    [
        pytest.param((), id="likelihood"),
        pytest.param(("--alternate",), id="alternating"),
    ],
)
def test_huge_learning_rate_is_a_divergence_error(tmp_path: Path, capsys, schedule):
    code, _, err = _train(capsys, tmp_path / "r", "--set", "training.lr=1e30", *schedule)
    line = _one_error_line(err, "train")
    assert code == 1, line
    assert "non-finite" in line and "last good checkpoint" in line


def test_training_diverged_error_exits_1(tmp_path: Path, capsys, monkeypatch):
    import mflows.training
    from mflows.errors import TrainingDivergedError

    def diverging_fit(*args, **kwargs):
        raise TrainingDivergedError("loss is nan at epoch 1, batch 3; last good checkpoint: x")

    monkeypatch.setattr(mflows.training, "fit", diverging_fit)
    code, _, err = _train(capsys, tmp_path / "r")
    assert code == 1
    assert "last good checkpoint" in _one_error_line(err, "train")


def test_keyboard_interrupt_during_start_up_is_one_line(tmp_path: Path, capsys, monkeypatch):
    from mflows.experiments import build

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "dataset_names", interrupted)
    code, _, err = _train(capsys, tmp_path / "r")
    assert code == 130
    assert err.strip() == "mflows train: interrupted"


def test_sample_refuses_nan_theta_and_negative_seed(micro_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "s.npy"
    code, _, err = _run(capsys, "sample", str(micro_run), "-n", "5", "--theta", "nan",
                        "--out", str(out))  # fmt: skip
    assert code == 2 and "--theta must be finite" in _one_error_line(err, "sample")
    code, _, err = _run(capsys, "sample", str(micro_run), "-n", "5", "--seed", "-1",
                        "--out", str(out))  # fmt: skip
    assert code == 2 and "--seed" in _one_error_line(err, "sample")
    assert not out.exists()


def test_sample_refuses_to_write_non_finite_samples(micro_run: Path, tmp_path: Path, capsys):
    import torch

    from mflows.models import load
    from mflows.models.base import Model

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "history.csv"):
        (broken / name).write_bytes((micro_run / name).read_bytes())
    model = load(micro_run / "model.pt")
    with torch.no_grad():
        next(iter(model.parameters())).fill_(float("nan"))
    Model.save(model, broken / "model.pt")
    out = tmp_path / "s.npy"
    code, _, err = _run(capsys, "sample", str(broken), "-n", "5", "--out", str(out))
    assert code == 2
    assert "not finite" in _one_error_line(err, "sample")
    assert not out.exists()


def test_corrupt_model_file_says_what_to_do(micro_run: Path, tmp_path: Path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_bytes((micro_run / "config.json").read_bytes())
    (bad / "model.pt").write_bytes(b"\x00garbage" * 10)
    for command in (["evaluate", str(bad)], ["sample", str(bad), "--out", str(tmp_path / "s")]):
        code, _, err = _run(capsys, *command)
        line = _one_error_line(err, command[0])
        assert code == 2 and "model.pt" in line and "--overwrite" in line and "delete" in line


def test_corrupt_checkpoint_says_what_to_do(micro_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "interrupted"
    (out / "checkpoints").mkdir(parents=True)
    (out / "config.json").write_bytes((micro_run / "config.json").read_bytes())
    (out / "checkpoints" / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a zip")
    code, _, err = _train(capsys, out)
    line = _one_error_line(err, "train")
    assert code == 2 and "--overwrite" in line and "checkpoints" in line
    assert _train(capsys, out, "--overwrite")[0] == 0  # the advice works
    assert (out / "model.pt").is_file()


def test_train_refuses_a_directory_that_is_not_a_run(tmp_path: Path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    (out / "metrics.json").write_text("{}")
    code, _, err = _train(capsys, out)
    assert code == 2
    line = _one_error_line(err, "train")
    assert "holds no mflows run" in line and "--overwrite" in line
    assert (out / "metrics.json").read_text() == "{}"
    assert _train(capsys, out, "--overwrite")[0] == 0
    assert (out / "notes.txt").read_text() == "precious"  # only the run's own files replaced
    assert (out / "model.pt").is_file()


def test_train_refuses_a_finished_run_with_another_config(micro_run: Path, capsys):
    before = (micro_run / "config.json").read_text()
    code, _, err = _train(capsys, micro_run, "--set", "training.lr=0.01")
    assert code == 2 and "--overwrite" in _one_error_line(err, "train")
    assert (micro_run / "config.json").read_text() == before


def test_a_live_lock_refuses_a_second_run_and_a_stale_one_is_taken_over(
    tmp_path, capsys, held_by_another_process
):
    out = tmp_path / "locked"
    out.mkdir()
    with held_by_another_process(out) as pid:
        code, _, err = _train(capsys, out)
        line = _one_error_line(err, "train")
        assert code == 2 and "in use by another mflows process" in line
        assert f"pid {pid}" in line
        assert not (out / "config.json").exists()
    # the process is gone: its lock is stale and taken over
    assert _train(capsys, out)[0] == 0
    assert (out / "model.pt").is_file() and not (out / ".lock").exists()


def test_paper_schemes_are_compatible_in_the_registry():
    from mflows import registry

    for kind, training in SCHEMES.values():
        registry.check_algorithm(training, kind)  # raises if the table disagrees


def test_compile_flag_sets_the_training_option():
    assert _config("--dataset", "power", "--compile").training.compile is True
    assert _config("--dataset", "power").training.compile is False
    assert _config("--dataset", "power").training.data_init is True
