"""Training and scoring image models on ``blobs``: configs, offline FID / KID, CLI smoke run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mflows import data
from mflows.cli import main
from mflows.errors import ConfigError
from mflows.evaluation import plot_latent_traversal, plot_reconstructions
from mflows.evaluation.fid import RandomConvFeatures, compute_features, kid, offline_scores
from mflows.experiments.build import build_model, get_dataset, model_architecture, model_dims
from mflows.experiments.config import (
    DataConfig,
    RunConfig,
    apply_overrides,
    config_names,
    load_config,
    save_config,
)
from mflows.models import make_model

BLOBS_CONFIGS = [
    "blobs_af",
    "blobs_pie",
    "blobs_mf_alternating",
    "blobs_mf_sequential",
    "blobs_emf_alternating",
    "blobs_pae",
]


@pytest.fixture(scope="module")
def blobs16():
    return data.get("blobs", n=2, size=16)


def test_every_blobs_config_is_shipped():
    assert [c for c in config_names() if c.startswith("blobs_")] == sorted(BLOBS_CONFIGS)


@pytest.mark.parametrize("name", BLOBS_CONFIGS)
def test_blobs_config_builds_the_model_make_model_builds(name):
    config = load_config(name).validate()
    assert config.data.options() == {"n": 2, "size": 16}
    dataset = get_dataset(config.data)
    assert dataset.data_dim == (3, 16, 16)
    model = build_model(config, dataset)
    data_dim, latent_dim, context_dim = model_dims(config.model, dataset)
    arch = model_architecture(config.model, dataset, seed=config.training.seed)
    reference = make_model(config.model.kind, data_dim, latent_dim, context_dim, **arch)
    assert type(model) is type(reference)
    assert model.latent_dim == (2 if config.model.kind != "af" else 768)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in reference.state_dict().items()}
    # the seeded build is reproducible: same weights
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_data_options_size_and_conditional_round_trip(tmp_path):
    config = RunConfig(data=DataConfig(name="blobs", latent_dim=2, size=32, conditional=1))
    save_config(config, tmp_path / "config.json")
    loaded = load_config(tmp_path / "config.json")
    assert loaded == config
    assert loaded.data.options() == {"n": 2, "size": 32, "conditional": 1}
    dataset = get_dataset(loaded.data)
    assert dataset.data_dim == (3, 32, 32) and dataset.parameter_dim == 1
    changed = apply_overrides(config, ["data.size=16", "data.conditional=none"])
    assert changed.data.size == 16 and changed.data.conditional is None
    assert "conditional" not in changed.data.options()
    with pytest.raises(ConfigError, match=r"data\.size"):
        apply_overrides(config, ["data.size=0"]).validate()
    with pytest.raises(ConfigError, match=r"data\.conditional"):
        apply_overrides(config, ["data.conditional=-1"]).validate()
    with pytest.raises(ConfigError, match=r"data\.size"):
        apply_overrides(config, ["data.size=big"])


def test_feature_network_is_deterministic(blobs16):
    images = blobs16.load("test", n=64, seed=0).x
    a = compute_features(images, RandomConvFeatures(seed=0), 32, "cpu")
    b = compute_features(images, RandomConvFeatures(seed=0), 64, "cpu")
    assert a.shape == (64, 512)
    np.testing.assert_array_equal(a, b)
    other = compute_features(images, RandomConvFeatures(seed=1), 64, "cpu")
    assert not np.allclose(a, other)
    # the features see where the blob is (a global average pool would not)
    shifted = compute_features(np.roll(images, 4, axis=3), RandomConvFeatures(seed=0), 64, "cpu")
    assert np.abs(shifted - a).mean() > 0.1 * np.abs(a).mean()


def test_offline_fid_kid_of_a_set_with_itself_is_zero_and_separates_sets(blobs16):
    test = blobs16.load("test", n=300, seed=0).x
    same = offline_scores(test, test)
    assert abs(same["fid_offline"]) < 1e-6
    assert abs(same["kid_offline"]) < 1e-3
    true = offline_scores(blobs16.sample(300, seed=3), test)
    noise = np.random.default_rng(0).uniform(0, 255, test.shape).astype(np.float32)
    far = offline_scores(noise, test)
    assert far["fid_offline"] > 100 * true["fid_offline"]
    assert far["kid_offline"] > 100 * abs(true["kid_offline"])


def test_kid_matches_a_direct_double_sum():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 3)), rng.normal(loc=0.5, size=(5, 3))

    def k(x, y):
        return (x @ y / 3 + 1.0) ** 3

    aa = sum(k(a[i], a[j]) for i in range(7) for j in range(7) if i != j) / 42
    bb = sum(k(b[i], b[j]) for i in range(5) for j in range(5) if i != j) / 20
    ab = sum(k(a[i], b[j]) for i in range(7) for j in range(5)) / 35
    assert kid(a, b) == pytest.approx(aa + bb - 2 * ab, rel=1e-10)
    with pytest.raises(ValueError):
        kid(a, b[:, :2])


def test_image_plots(tmp_path, blobs16):
    model = make_model("mflow", (3, 16, 16), 2, levels=1, steps_per_level=1, inner_layers=1)
    test = blobs16.load("test", n=4, seed=0).x
    with torch.no_grad():
        u = model.encode(torch.as_tensor(test)).numpy()
        projected = model.project(torch.as_tensor(test)).numpy()
    assert plot_reconstructions(test, projected, tmp_path / "r.png").stat().st_size > 0
    assert plot_latent_traversal(model, tmp_path / "t.png", u, steps=3).stat().st_size > 0
    with pytest.raises(ValueError, match="shape"):
        plot_reconstructions(test, projected[:2], tmp_path / "bad.png")


def test_train_and_evaluate_blobs_without_inception_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("MFLOWS_INCEPTION_WEIGHTS", str(tmp_path / "no-such-file.pth"))
    run = tmp_path / "run"
    tiny = ["training.epochs=1", "data.n_train=20", "training.batch_size=20"]
    tiny += ["model.levels=1", "model.steps_per_level=1", "model.inner_layers=1"]
    code = main(
        ["train", "--config", "blobs_mf_alternating", "--out", str(run), "--quiet"]
        + [arg for item in tiny for arg in ("--set", item)]
    )
    assert code == 0
    sizes = ["evaluation.n_test=20", "evaluation.n_generate=20"]
    code = main(["evaluate", str(run), "--quiet"] + [a for s in sizes for a in ("--set", s)])
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "blobs"
    for key in (
        "manifold_distance",
        "reconstruction_error",
        "log_likelihood_mae",
        "latent_mmd",
        "fid_offline",
        "kid_offline",
        "fid_offline_reference",
        "ood_auc",
    ):
        assert isinstance(metrics[key], float), key
    assert "fid" not in metrics  # no Inception weights: no Inception FID, and no error
    assert metrics["fid_offline"] > metrics["fid_offline_reference"] >= 0.0  # untrained model
    for name in ("samples.png", "reconstructions.png", "latent_traversal.png"):
        assert (run / "plots" / name).stat().st_size > 0


def test_blobs64_config_builds_the_gan2d_shaped_model():
    config = load_config("blobs64_mf_alternating").validate()
    assert config.data.options() == {"n": 2, "size": 64}
    dataset = get_dataset(config.data)
    assert dataset.data_dim == (3, 64, 64)
    model = build_model(config, dataset)
    assert model.latent_dim == 2 and model.kind == "mflow"
    x = torch.as_tensor(dataset.load("test", n=2, seed=0).x, dtype=torch.float32)
    with torch.no_grad():
        assert model.project(x).shape == x.shape
