"""Standardisation: the Standardize layer, its place in the models, fit, save/load, densities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mflows
from mflows.transforms import Standardize

TINY = {"outer_layers": 2, "inner_layers": 2, "hidden_features": 8, "num_blocks": 1, "seed": 1}
SHIFT = torch.tensor([5.0, -3.0], dtype=torch.float64)
SCALE = torch.tensor([4.0, 0.25], dtype=torch.float64)


def _arch(kind):
    keys = mflows.models.ARCHITECTURE_KEYS[kind]
    return {k: v for k, v in TINY.items() if k in keys}


def _perturb(model, scale=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def test_layer_round_trip_and_logdet():
    layer = Standardize(3).double()
    assert not layer.is_fitted
    x = torch.randn(50, 3, dtype=torch.float64) * torch.tensor([10.0, 1.0, 0.1]) + 7
    layer.set_statistics(x)
    z, ld = layer(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(3, dtype=torch.float64))
    back, ld_inv = layer.inverse(z)
    torch.testing.assert_close(back, x)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], x[0])
    torch.testing.assert_close(ld[0], torch.slogdet(jac)[1])
    torch.testing.assert_close(ld_inv, -ld)
    assert layer.is_fitted


def test_constant_feature_keeps_unit_scale():
    layer = Standardize(2)
    layer.set_statistics(torch.tensor([[1.0, 2.0], [3.0, 2.0]]))
    assert layer.scale.tolist() == [1.0, 1.0]
    assert layer.shift.tolist() == [2.0, 2.0]


@pytest.mark.parametrize("kind", ["af", "pie", "mflow", "emflow", "pae"])
def test_models_have_a_standardizer_and_fom_images_do_not(kind):
    latent = None if kind == "af" else 1
    model = mflows.make_model(kind, 2, latent, **_arch(kind))
    assert isinstance(model.standardizer, Standardize)
    assert mflows.make_model(kind, 2, latent, standardize=False, **_arch(kind)).standardizer is None
    assert mflows.make_model("fom", 3, 2).standardizer is None
    if kind != "pae":
        image = mflows.make_model(kind, (1, 4, 4), None if kind == "af" else 4, levels=1,
                                  steps_per_level=1)  # fmt: skip
        assert image.standardizer is None
        assert image.config["architecture"]["standardize"] is False
    with pytest.raises(ValueError, match="standardize True or False"):
        mflows.make_model(kind, 2, latent, standardize="yes", **_arch(kind))


def _curve_model(kind):
    model = mflows.make_model(kind, 2, 1, **TINY).double()
    _perturb(model)
    model.standardizer.set_statistics(shift=SHIFT, scale=SCALE)
    return model.eval()


def test_manifold_density_integrates_to_one_with_standardisation():
    """Quadrature along the learned curve in R^2, original units (offsets 5, -3; scales 4, 0.25)."""
    model = _curve_model("mflow")
    u = torch.linspace(-12, 12, 20001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        x = model.decode(u)
        logp = model.log_prob(x)
    speed = torch.linalg.norm(torch.diff(x, dim=0), dim=1)
    density = torch.exp(logp)
    integral = float((0.5 * (density[1:] + density[:-1]) * speed).sum())
    assert abs(integral - 1.0) < 2e-3
    # the curve lives at the data's scale: the standardisation is part of the decoder
    assert float(x[:, 0].max() - x[:, 0].min()) > 4 * float(x[:, 1].max() - x[:, 1].min())


@pytest.mark.parametrize("kind", ["mflow", "emflow", "pie"])
def test_manifold_density_matches_autograd_jacobian(kind):
    model = _curve_model(kind) if kind != "pie" else None
    if model is None:
        model = mflows.make_model("pie", 2, 1, **TINY).double()
        _perturb(model)
        model.standardizer.set_statistics(shift=SHIFT, scale=SCALE)
    u = torch.randn(4, 1, dtype=torch.float64)
    with torch.no_grad():
        x = model.decode(u)
        u_hat = model.encode(x)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: model.decode(v[None])[0], u_hat[i])
        expected = model.latent_log_prob(u_hat[i : i + 1])[0] - 0.5 * torch.logdet(jac.T @ jac)
        got = (
            model.log_prob_manifold(x[i : i + 1]) if kind == "pie" else model.log_prob(x[i : i + 1])
        )
        torch.testing.assert_close(got[0], expected, rtol=1e-6, atol=1e-6)


def test_ambient_density_of_original_x_by_quadrature_and_autograd():
    model = mflows.make_model("af", 2, **_arch("af")).double()
    _perturb(model, 0.2)
    model.standardizer.set_statistics(shift=SHIFT, scale=SCALE)
    model.eval()
    # grid in original units around the shifted, stretched density
    a = torch.linspace(5 - 40, 5 + 40, 401, dtype=torch.float64)
    b = torch.linspace(-3 - 2.5, -3 + 2.5, 401, dtype=torch.float64)
    grid = torch.cartesian_prod(a, b)
    with torch.no_grad():
        p = torch.exp(model.log_prob(grid))
    integral = float(p.sum() * (a[1] - a[0]) * (b[1] - b[0]))
    assert abs(integral - 1.0) < 1e-2
    x = grid[::40000][:3]
    z = model.encode(x)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda v: model.encode(v[None])[0], x[i])
        expected = -0.5 * (z[i] ** 2).sum() - math.log(2 * math.pi) + torch.slogdet(jac)[1]
        torch.testing.assert_close(model.log_prob(x[i : i + 1])[0], expected)


def test_fit_sets_statistics_once_from_the_training_split_and_they_are_saved(tmp_path):
    rng = np.random.default_rng(0)
    t = rng.uniform(-1, 1, size=(200, 1))
    x = np.concatenate([100 + 30 * t, -5 + 0.1 * t**2], axis=1).astype(np.float32)
    model = mflows.make_model("mflow", 2, 1, **TINY)
    mflows.fit(model, x, algorithm="alternating", epochs=1, batch_size=50, progress=False,
               validation_split=0.25, seed=3)  # fmt: skip
    layer = model.standardizer
    assert layer.is_fitted
    perm = np.random.default_rng([3, 17]).permutation(200)[:150]
    torch.testing.assert_close(layer.shift, torch.as_tensor(x[perm].mean(0)))
    torch.testing.assert_close(
        layer.scale, torch.as_tensor(x[perm].astype(np.float64).std(0)).float()
    )
    before = (layer.shift.clone(), layer.scale.clone())
    mflows.fit(model, x + 50, algorithm="alternating", epochs=1, batch_size=50, progress=False)
    torch.testing.assert_close(layer.shift, before[0])  # never refitted
    torch.testing.assert_close(layer.scale, before[1])
    model.save(tmp_path / "m.pt")
    loaded = mflows.load(tmp_path / "m.pt")
    assert loaded.standardizer.is_fitted
    torch.testing.assert_close(loaded.standardizer.shift, before[0])
    torch.testing.assert_close(loaded.log_prob(x[:5]), model.eval().log_prob(x[:5]))


def test_fit_standardize_false_keeps_raw_space():
    x = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32) * 10 + 3
    model = mflows.make_model("mflow", 2, 1, **TINY)
    mflows.fit(model, x, algorithm="alternating", epochs=1, batch_size=20, progress=False,
               standardize=False)  # fmt: skip
    assert model.standardizer.is_fitted  # decided: the identity
    assert model.standardizer.shift.tolist() == [0.0, 0.0]
    assert model.standardizer.scale.tolist() == [1.0, 1.0]


def test_resume_keeps_the_statistics(tmp_path):
    x = np.random.default_rng(0).normal(size=(60, 2)).astype(np.float32) * 10 + 3
    opts = {"algorithm": "alternating", "batch_size": 20, "progress": False,
            "checkpoint_dir": tmp_path}  # fmt: skip
    a = mflows.make_model("mflow", 2, 1, **TINY)
    mflows.fit(a, x, epochs=2, **opts)
    b = mflows.make_model("mflow", 2, 1, **TINY)
    mflows.fit(b, x, epochs=2, resume=True, **opts)
    torch.testing.assert_close(b.standardizer.shift, a.standardizer.shift)
    torch.testing.assert_close(b.standardizer.scale, a.standardizer.scale)


def test_old_model_files_load_unstandardised(tmp_path):
    model = mflows.make_model("mflow", 2, 1, standardize=False, **TINY)
    model.save(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    del payload["config"]["architecture"]["standardize"]  # as written before this option
    torch.save(payload, tmp_path / "old.pt")
    loaded = mflows.load(tmp_path / "old.pt")
    assert loaded.standardizer is None
