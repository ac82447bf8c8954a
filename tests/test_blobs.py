"""The ``blobs`` image manifold: renderer, latent density, truth, storage and scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mflows
from mflows import data
from mflows.data.blobs import Blobs
from mflows.errors import InvalidArgumentError
from mflows.evaluation import metrics as M


@pytest.fixture(scope="module")
def ds2() -> Blobs:
    return data.get("blobs", n=2, size=16)


@pytest.fixture(scope="module")
def ds8() -> Blobs:
    return data.get("blobs", n=8, size=16)


def _grid(points: int) -> np.ndarray:
    g = np.linspace(-0.95, 0.95, points)
    return np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)


def _finite_difference_jacobian(ds: Blobs, z: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Central differences of the renderer, ``(B, D, n)`` (an independent reference)."""
    cols = []
    for i in range(z.shape[1]):
        e = np.zeros(z.shape[1])
        e[i] = h
        up = ds.render(z + e).reshape(len(z), -1).numpy()
        down = ds.render(z - e).reshape(len(z), -1).numpy()
        cols.append((up - down) / (2 * h))
    return np.stack(cols, -1)


# Renderer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 8, 16])
def test_renderer_shape_range_and_autograd_matches_finite_differences(n):
    ds = data.get("blobs", n=n, size=16)
    z = np.random.default_rng(n).uniform(-0.9, 0.9, (6, n))
    images = ds.render(z)
    assert images.shape == (6, 3, 16, 16) and images.dtype == torch.float64
    # no clipping by quantisation: every value strictly inside (0, 256)
    assert float(images.min()) > 20.0 and float(images.max()) < 250.0
    jac = ds.jacobian(z).numpy()
    ref = _finite_difference_jacobian(ds, z)
    assert jac.shape == (6, 3 * 16 * 16, n)
    np.testing.assert_allclose(jac, ref, rtol=1e-5, atol=1e-4 * np.abs(ref).max())
    # the area element is 1/2 log det of J^T J from the finite-difference Jacobian
    ref_area = 0.5 * np.linalg.slogdet(np.swapaxes(ref, 1, 2) @ ref)[1]
    np.testing.assert_allclose(ds.log_area_element(z), ref_area, atol=1e-5)


@pytest.mark.parametrize("n", [2, 8])
def test_renderer_injective_and_well_conditioned_on_the_box(n):
    ds = data.get("blobs", n=n, size=16)
    rng = np.random.default_rng(0)
    z = _grid(15) if n == 2 else rng.uniform(-1, 1, (300, n))
    x = ds.render(z).reshape(len(z), -1).numpy()
    dz = np.linalg.norm(z[:, None] - z[None], axis=-1)
    dx = np.linalg.norm(x[:, None] - x[None], axis=-1)
    off = ~np.eye(len(z), dtype=bool)
    # distinct latents give images at least ~ a few pixel levels per latent unit apart
    assert (dx[off] / dz[off]).min() > 10.0
    # det J^T J bounded away from 0, also on the corners of the box
    corners = np.sign(rng.standard_normal((8, n)))
    sv = torch.linalg.svdvals(ds.jacobian(np.concatenate([z[:100], corners]))).numpy()
    assert sv[:, -1].min() > 30.0 and (sv[:, 0] / sv[:, -1]).max() < 25.0


# Latent density ----------------------------------------------------------------------------------


@pytest.mark.parametrize("conditional, theta", [(0, None), (2, [0.0, 0.0]), (2, [-1.0, 1.0])])
def test_latent_density_integrates_to_one(conditional, theta):
    ds = data.get("blobs", n=2, size=16, conditional=conditional)
    nodes, weights = np.polynomial.legendre.leggauss(300)
    z = np.stack(np.meshgrid(nodes, nodes, indexing="ij"), -1).reshape(-1, 2)
    w = np.outer(weights, weights).reshape(-1)
    total = np.sum(w * np.exp(ds.log_latent_density(z, theta)))
    assert abs(total - 1.0) < 1e-4
    assert np.all(ds.log_latent_density(np.array([[1.0, 0.0], [0.0, -1.2]])) == -np.inf)


def test_latent_sampler_matches_density():
    ds = data.get("blobs", n=2, size=16, conditional=1)
    z = ds.sample_latent(40_000, theta=[0.5], seed=1)
    assert np.all(np.abs(z) < 1.0)
    edges = np.linspace(-1, 1, 9)
    counts, _, _ = np.histogram2d(z[:, 0], z[:, 1], bins=[edges, edges])
    nodes, weights = np.polynomial.legendre.leggauss(40)
    expected = np.empty((8, 8))
    for i in range(8):
        for j in range(8):
            a = edges[i] + (nodes + 1) / 2 * (edges[i + 1] - edges[i])
            b = edges[j] + (nodes + 1) / 2 * (edges[j + 1] - edges[j])
            pts = np.stack(np.meshgrid(a, b, indexing="ij"), -1).reshape(-1, 2)
            ww = np.outer(weights, weights).reshape(-1) * (edges[1] - edges[0]) ** 2 / 4
            expected[i, j] = np.sum(ww * np.exp(ds.log_latent_density(pts, [0.5])))
    expected *= len(z)
    big = expected > 50
    assert np.all(np.abs(counts[big] - expected[big]) < 5 * np.sqrt(expected[big]))


def test_manifold_density_integrates_to_one_against_the_area_element(ds2):
    # log_density of rendered images is log p(z) - 1/2 log det J^T J at the recovered z, so its
    # integral against the area element sqrt(det J^T J) dz over the box is the latent mass, 1.
    nodes, weights = np.polynomial.legendre.leggauss(32)
    z = np.stack(np.meshgrid(nodes, nodes, indexing="ij"), -1).reshape(-1, 2)
    w = np.outer(weights, weights).reshape(-1)
    x = ds2.render(z).numpy()
    log_m = ds2.log_density(x)
    area = ds2.log_area_element(z)
    np.testing.assert_allclose(log_m + area, ds2.log_latent_density(z), atol=1e-6)
    assert abs(np.sum(w * np.exp(log_m + area)) - 1.0) < 2e-3
    np.testing.assert_array_equal(ds2.log_density_on_manifold(x), log_m)


def test_conditional_density_depends_on_theta_and_prior():
    ds = data.get("blobs", n=2, size=16, conditional=2)
    assert ds.parameter_dim == 2 and np.array_equal(ds.default_theta, [0.0, 0.0])
    z = ds.sample_latent(5, seed=0)
    x = ds.render(z).numpy()
    a, b = ds.log_density(x, [0.0, 0.0]), ds.log_density(x, [0.8, -0.5])
    assert np.all(np.isfinite(a)) and not np.allclose(a, b)
    theta = ds.sample_prior(100, seed=0)
    assert theta.shape == (100, 2) and np.all(np.abs(theta) <= 1)
    assert np.allclose(ds.log_prior(theta), -2 * math.log(2))
    assert ds.log_prior(np.array([[1.5, 0.0]]))[0] == -np.inf
    train, test = ds.load("train", 50), ds.load("test", 50)
    assert train.theta.shape == (50, 2) and np.all(test.theta == 0)
    assert ds.has_truth["log_prior"] and not data.get("blobs").has_truth["log_prior"]
    with pytest.raises(NotImplementedError):
        data.get("blobs").sample_prior(3)


# Truth: projection, distance ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 8])
def test_projection_recovers_parameters(n, ds2, ds8):
    ds = ds2 if n == 2 else ds8
    num = 150 if n == 2 else 60
    _, z, _ = ds.load_uint8("val", n=num, seed=4)
    clean = ds.render(z).numpy()
    np.testing.assert_allclose(ds.latent_of(clean), z, atol=1e-6)
    assert ds.distance_to_manifold(clean).max() < 1e-6
    np.testing.assert_allclose(ds.project_to_manifold(clean), clean, atol=1e-6)
    # training images: quantised and dequantised, about 0.41 levels of noise per pixel
    noisy = ds.load("train", n=num, seed=4).x
    _, z_train, _ = ds.load_uint8("train", n=num, seed=4)
    err = np.abs(ds.latent_of(noisy) - z_train)
    assert err.max() < (0.01 if n == 2 else 0.1) and np.median(err) < 0.005
    dist = ds.distance_to_manifold(noisy)
    # never worse than the true parameters (the global minimum was found)
    at_truth = np.linalg.norm((noisy - ds.render(z_train).numpy()).reshape(num, -1), axis=1)
    assert np.all(dist <= at_truth + 1e-9)
    expected = math.sqrt(3 * 16 * 16 / 6)  # rms of floor(r) + u - r is 1/sqrt(6) per pixel
    assert abs(dist.mean() / expected - 1) < 0.05
    proj = ds.project_to_manifold(noisy)
    assert proj.shape == noisy.shape
    np.testing.assert_allclose(np.linalg.norm((noisy - proj).reshape(num, -1), axis=1), dist)
    ood = ds.sample_ood(40, seed=2)
    assert ds.distance_to_manifold(ood).min() > 5 * dist.max()


def test_projection_cache_and_flat_input(ds2):
    a = ds2.load("test", n=5, seed=1).x
    b = ds2.load("test", n=5, seed=2).x
    za, zb = ds2.latent_of(a), ds2.latent_of(b)
    assert not np.allclose(za, zb)
    np.testing.assert_array_equal(ds2.latent_of(a.reshape(5, -1)), za)
    np.testing.assert_array_equal(ds2.latent_of(a), za)
    with pytest.raises(InvalidArgumentError, match="expected images"):
        ds2.latent_of(np.zeros((3, 3, 8, 8)))


# Storage -----------------------------------------------------------------------------------------


def test_quantisation_dequantisation_seeds_and_splits(ds2):
    train = ds2.load("train", n=64, seed=3).x
    test = ds2.load("test", n=64, seed=3).x
    images, _, _ = ds2.load_uint8("train", n=64, seed=3)
    assert images.dtype == np.uint8 and images.shape == (64, 3, 16, 16)
    assert train.dtype == np.float32 and train.shape == (64, 3, 16, 16)
    # training split: uint8 value v plus U[0, 1) noise; others: the integer values
    np.testing.assert_array_equal(np.floor(train), images.astype(np.float32))
    assert 0.45 < float(np.mean(train - images)) < 0.55 and np.all(train < 256)
    assert np.array_equal(test, np.round(test)) and test.min() >= 0 and test.max() <= 255
    np.testing.assert_array_equal(ds2.load("train", n=64, seed=3).x, train)
    assert not np.array_equal(ds2.load("train", n=64, seed=4).x, train)
    assert not np.array_equal(ds2.load("val", n=64, seed=3).x, test)
    assert not np.array_equal(test, np.floor(train))
    every = data.get("blobs", n=2, size=16, dequantize="all").load("test", n=8, seed=3).x
    assert not np.array_equal(every, np.round(every))
    scaled = data.get("blobs", n=2, size=16, rescale=True)
    x = scaled.load("train", n=64, seed=3).x
    np.testing.assert_allclose(x, train / 128 - 1, atol=1e-6)
    assert x.min() >= -1 and x.max() < 1
    np.testing.assert_allclose(
        scaled.distance_to_manifold(x), ds2.distance_to_manifold(train) / 128, rtol=1e-5
    )
    sample = ds2.sample(10, seed=0)
    assert sample.dtype == np.float32 and sample.shape == (10, 3, 16, 16)


@pytest.mark.parametrize(
    "options",
    [{"size": 17}, {"n": 0}, {"n": 65}, {"n": 2.5}, {"conditional": 3}, {"dequantize": "x"}],
)
def test_bad_options_raise(options):
    with pytest.raises(InvalidArgumentError):
        data.get("blobs", **options)


def test_registry_and_description():
    ds = data.get("blobs", n=16, size=64, conditional=1)
    assert ds.data_dim == (3, 64, 64) and ds.latent_dim == 16 and ds.num_blobs == 4
    text = data.describe("blobs", n=8, size=32)
    assert "3 x 32 x 32" in text and "log_density" in text and "none (simulated)" in text


# Metrics and end to end --------------------------------------------------------------------------


def test_latent_mmd_separates_right_and_wrong_densities():
    ds = data.get("blobs", n=2, size=16, conditional=1)
    right = ds.sample(300, theta=[0.0], seed=5)
    uniform = np.random.default_rng(5).uniform(-1, 1, (300, 2))  # a flat latent density
    wrong = ds.images_uint8(uniform).astype(np.float32)
    good = M.latent_mmd(right, ds, np.zeros(1), seed=1)
    bad = M.latent_mmd(wrong, ds, np.zeros(1), seed=1)
    assert abs(good["latent_mmd"]) < 0.01 and abs(good["latent_mmd_reference"]) < 0.01
    assert bad["latent_mmd"] > 3 * max(abs(good["latent_mmd"]), 1e-3)


def test_image_model_log_prob_and_scoring_on_blobs(ds2):
    torch.manual_seed(0)
    model = mflows.make_model("mflow", data_dim=(3, 16, 16), latent_dim=2, seed=0).eval()
    x = torch.as_tensor(ds2.load("train", n=3).x)
    with torch.no_grad():
        assert torch.isfinite(model.log_prob(x)).all()
    metrics = mflows.evaluation.score(model, ds2, n_test=8, n_generate=20, mcmc_steps=0)
    for key in ("manifold_distance", "latent_mmd", "reconstruction_error", "log_likelihood_mae"):
        assert metrics[key] is not None, key
    assert metrics["log_likelihood_reference"] == "true density on the manifold"
    assert 0 < metrics["manifold_distance"] <= ds2.distance_clip * (1 + 1e-9)
    assert "fid" not in metrics or metrics["fid"] is not None


def test_ambient_densities_are_not_compared_with_the_manifold_truth(ds2):
    from mflows.evaluation.scoring import _true_log_density

    class Ambient:
        density_on_manifold = False

    class OnManifold:
        density_on_manifold = True

    test = ds2.load("test", n=4, seed=0)
    results: dict = {}
    assert _true_log_density(Ambient(), ds2, test, results) is None and not results
    truth = _true_log_density(OnManifold(), ds2, test, results)
    np.testing.assert_allclose(truth, ds2.log_density(test.x))
    power = data.get("power")
    assert _true_log_density(Ambient(), power, power.load("test", n=4), {}) is not None
