"""Your own data: mflows.data.from_arrays and load_array."""

from __future__ import annotations

import numpy as np
import pytest

from mflows import data
from mflows.errors import InvalidArgumentError


def _x(n=200, d=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_splits_are_disjoint_and_cover_x():
    x = _x()
    ds = data.from_arrays(x, name="mine")
    parts = [ds.load(s).x for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [160, 20, 20]
    rows = np.concatenate(parts)
    assert np.allclose(np.sort(rows, axis=0), np.sort(x.astype(np.float32), axis=0))
    assert ds.data_dim == 3 and ds.parameter_dim == 0 and ds.default_theta is None
    assert ds.name == "mine" and ds.load("train").x.dtype == np.float32
    # same arrays, same splits
    assert np.array_equal(data.from_arrays(x).load("test").x, parts[2])


def test_conditional_data_keep_rows_paired_and_default_theta_is_the_mean():
    x = _x()
    theta = np.arange(200, dtype=float)  # 1-D: one parameter
    x[:, 0] = theta  # so the pairing can be checked
    ds = data.from_arrays(x, theta)
    batch = ds.load("train")
    assert batch.theta.shape == (160, 1)
    assert np.array_equal(batch.x[:, 0], batch.theta[:, 0])
    assert ds.parameter_dim == 1
    assert np.isclose(ds.default_theta[0], batch.theta.mean())
    low, high = ds.theta_range
    assert low[0] >= 0 and high[0] <= 199


def test_explicit_test_split_and_ood():
    x, x_test, ood = _x(), _x(30, seed=1), _x(40, seed=2) + 5
    ds = data.from_arrays(x, x_test=x_test, x_ood=ood)
    assert np.allclose(ds.load("test").x, x_test)
    assert len(ds.load("train").x) == 180  # only the validation split is carved off
    assert ds.has_truth["sample_ood"] and not ds.has_truth["log_density"]
    assert np.allclose(ds.sample_ood(10), ood[:10])
    assert len(ds.load("test", n=5).x) == 5 and len(ds.load("test", n=10**6).x) == 30


def test_truth_methods_raise_and_has_truth_says_so():
    ds = data.from_arrays(_x())
    assert not any(ds.has_truth.values())
    for call in (
        lambda: ds.log_density(_x(2)),
        lambda: ds.distance_to_manifold(_x(2)),
        lambda: ds.sample(3),
        lambda: ds.sample_ood(3),
    ):
        with pytest.raises(NotImplementedError):
            call()
    assert "load only" in ds.describe()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x": np.zeros(10)}, r"one row per point"),
        ({"x": np.zeros((10, 2, 2))}, r"\(N, d\) vectors"),
        ({"x": np.array([["a", "b"]] * 10)}, r"must hold numbers"),
        ({"x": _x(), "theta": np.zeros(199)}, r"x has 200 rows, theta 199"),
        ({"x": _x(), "x_test": _x(10, d=4)}, r"x_test has points of shape \(4,\)"),
        ({"x": _x(), "theta": np.zeros(200), "x_test": _x(10)}, r"theta_test is needed"),
        ({"x": _x(), "x_ood": _x(10, d=2)}, r"x_ood has points"),
        ({"x": _x(), "latent_dim": 3}, r"latent_dim must be in \[1, 2\]"),
        ({"x": _x(1)}, r"too few"),
    ],
)
def test_clear_errors(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        data.from_arrays(**kwargs)


def test_nan_rows_are_named():
    x = _x()
    x[[4, 17, 30, 41, 55, 90, 120], 1] = np.nan
    x[150, 0] = np.inf
    with pytest.raises(InvalidArgumentError, match=r"8 row\(s\).*rows 4, 17, 30, 41, 55, \.\.\."):
        data.from_arrays(x)
    theta = np.zeros(200)
    theta[7] = np.nan
    with pytest.raises(InvalidArgumentError, match=r"theta has 1 row.*rows 7\)"):
        data.from_arrays(_x(), theta)


def test_load_array_reads_npy_npz_and_csv(tmp_path):
    x = _x(20)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "one.npz", anything=x)
    np.savez(tmp_path / "many.npz", x=x, theta=x[:, :1])
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    np.savetxt(tmp_path / "h.csv", x, delimiter=",", header="a,b,c", comments="")
    for name in ("x.npy", "one.npz", "many.npz", "x.csv", "h.csv"):
        assert np.allclose(data.load_array(tmp_path / name), x), name
    assert np.allclose(data.load_array(tmp_path / "many.npz", key="theta"), x[:, :1])
    (tmp_path / "bad.csv").write_text("1,2\n3,oops\n")
    with pytest.raises(InvalidArgumentError, match=r"bad\.csv"):
        data.load_array(tmp_path / "bad.csv")
    with pytest.raises(InvalidArgumentError, match="unknown file type"):
        (tmp_path / "x.parquet").write_text("")
        data.load_array(tmp_path / "x.parquet")
    with pytest.raises(FileNotFoundError):
        data.load_array(tmp_path / "missing.npy")


def test_a_model_trains_and_scores_on_array_data():
    import torch

    from mflows import fit, make_model
    from mflows.evaluation import ScoreOptions, score

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 2))
    x = np.c_[z, 0.5 * z[:, 0]]
    ds = data.from_arrays(x, x_ood=x[:50] + rng.normal(size=(50, 3)))
    model = make_model("mflow", 3, 2, outer_layers=2, inner_layers=1, hidden_features=16)
    fit(model, ds.load("train").x, algorithm="alternating", epochs=1, progress=False)
    model.eval()
    metrics = score(model, ds, ScoreOptions(n_test=40, n_generate=50, mcmc_steps=0))
    assert {"reconstruction_error", "log_likelihood", "ood_auc"} <= set(metrics)
    assert "manifold_distance" not in metrics and "posterior_mmd" not in metrics
