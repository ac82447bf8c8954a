"""Tests of the simulated data sets and the registry (mflows.data)."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from mflows import data
from mflows.data.base import Batch
from mflows.data.lorenz import MEANS, STDS
from mflows.data.power import PolynomialSurface, load_surface_constants
from mflows.data.spherical import (
    ConditionalSphericalGaussian,
    SphericalGaussian,
    log_area_element,
    log_canonical_angle_density,
    sphere_angles,
    sphere_embedding,
)

# ------------------------------------------------------------------------------------------------
# Registry and common protocol


def test_registry_names_get_describe():
    assert set(data.names()) == {
        "spherical_gaussian",
        "conditional_spherical_gaussian",
        "power",
        "lorenz",
        "lhc40d",
        "gan2d",
        "gan64d",
        "celeba",
        "imagenet",
        "blobs",
    }
    with pytest.raises(ValueError, match="unknown data set"):
        data.get("nope")
    with pytest.raises(ValueError, match="invalid options"):
        data.get("power", bogus=1)
    ds = data.get("spherical_gaussian", n=3, d=5, epsilon=0.1)
    assert (ds.latent_dim, ds.data_dim, ds.epsilon) == (3, 5, 0.1)
    text = data.describe("lhc40d")
    assert "40" in text and "14" in text and "x_train.npy" in text and "t_xz_train.npy" in text
    text = data.describe("power")
    assert "log_density" in text and "none (simulated)" in text
    assert "3 x 64 x 64" in data.describe("gan64d")
    assert data.get("lorenz").has_truth["log_density"] is False
    assert data.get("power").has_truth["log_density"] is True


def _simulated(name, tmp_path):
    if name == "lorenz":
        return data.get(
            "lorenz", num_trajectories=3, steps=3000, t_max=30.0, warmup=5.0,
            data_dir=tmp_path, progress=False,
        )  # fmt: skip
    if "spherical" in name:
        return data.get(name, n=2, d=4)
    return data.get(name)


@pytest.mark.parametrize(
    "name", ["spherical_gaussian", "conditional_spherical_gaussian", "power", "lorenz"]
)
def test_load_protocol_seeds_and_disjoint_splits(name, tmp_path):
    ds = _simulated(name, tmp_path)
    batches = {split: ds.load(split, n=400, seed=3) for split in ("train", "val", "test")}
    for batch in batches.values():
        assert isinstance(batch, Batch)
        assert batch.x.dtype == np.float32 and batch.x.shape == (400, ds.data_dim)
        assert batch.scores is None
        if ds.parameter_dim:
            assert batch.theta.dtype == np.float32
            assert batch.theta.shape == (400, ds.parameter_dim)
        else:
            assert batch.theta is None
    if ds.parameter_dim:  # test split at the default parameter point, train from the prior
        np.testing.assert_array_equal(
            batches["test"].theta, np.broadcast_to(ds.default_theta, (400, ds.parameter_dim))
        )
        assert batches["train"].theta.std() > 0.3
    # reproducible with the seed, different with another seed
    np.testing.assert_array_equal(ds.load("train", n=400, seed=3).x, batches["train"].x)
    assert not np.array_equal(ds.load("train", n=400, seed=4).x, batches["train"].x)
    # splits share no point
    rows = {s: {r.tobytes() for r in b.x} for s, b in batches.items()}
    for a, b in itertools.combinations(rows, 2):
        assert not rows[a] & rows[b], (a, b)
    np.testing.assert_array_equal(ds.sample(50, seed=1), ds.sample(50, seed=1))
    with pytest.raises(ValueError, match="split"):
        ds.load("training", n=1)


# ------------------------------------------------------------------------------------------------
# Spherical sets


def _torch_embedding(phi: torch.Tensor) -> torch.Tensor:
    """Independent reference: x_k = sin phi_1 ... sin phi_{k-1} cos phi_k, x_{n+1} = prod sin."""
    n = phi.shape[0]
    out = []
    for k in range(n):
        out.append(torch.prod(torch.sin(phi[:k])) * torch.cos(phi[k]))
    out.append(torch.prod(torch.sin(phi)))
    return torch.stack(out)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_sphere_area_element_matches_autograd(n):
    rng = np.random.default_rng(n)
    for _ in range(3):
        c = rng.uniform(0.1, math.pi - 0.1, size=n)
        c[-1] = rng.uniform(0.1, 2 * math.pi - 0.1)
        phi = torch.tensor(c, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(_torch_embedding, phi)
        ref = 0.5 * torch.logdet(jac.T @ jac).item()
        assert log_area_element(c[None])[0] == pytest.approx(ref, abs=1e-10)
        np.testing.assert_allclose(sphere_embedding(c[None])[0], _torch_embedding(phi).numpy())
        np.testing.assert_allclose(sphere_angles(sphere_embedding(c[None]))[0], c, atol=1e-12)


@pytest.mark.parametrize("cls", [SphericalGaussian, ConditionalSphericalGaussian])
def test_spherical_density_jacobian_terms_match_autograd(cls):
    """Regression: the r and sin terms of log p(x) are minus log|det| of (c, r, eps) -> x."""
    n, d = 3, 6
    ds = cls(n=n, d=d, epsilon=0.2)
    rng = np.random.default_rng(0)
    theta = None if ds.parameter_dim == 0 else np.array([0.3, -0.4])
    x = ds.sample(4, theta=theta, seed=rng)
    for xi in x:
        c = sphere_angles(xi[None, : n + 1])[0]
        r = np.linalg.norm(xi[: n + 1])

        def full_map(v):
            return torch.cat([v[n] * _torch_embedding(v[:n]), v[n + 1 :]])

        v = torch.tensor(np.concatenate([c, [r], xi[n + 1 :]]), dtype=torch.float64)
        np.testing.assert_allclose(full_map(v).numpy(), xi, atol=1e-12)
        logdet = torch.linalg.slogdet(torch.autograd.functional.jacobian(full_map, v))[1].item()
        mu, sigma = ds._angle_parameters(ds._theta_rows(theta, 1))
        expected = (
            log_canonical_angle_density(c[None], mu, sigma)[0]
            + stats.norm(0, 0.2).logpdf(r - 1)
            + stats.norm(0, 0.2).logpdf(xi[n + 1 :]).sum()
            - logdet
        )
        assert ds.log_density(xi[None], theta)[0] == pytest.approx(expected, abs=1e-9)


def test_canonical_angle_density_equals_brute_force_sum_over_preimages():
    """Every flip pattern maps to the same point; the recursion equals the explicit sum."""
    n = 4
    rng = np.random.default_rng(1)
    mu = rng.uniform(0, 2 * math.pi, size=n)
    sigma = rng.uniform(0.3, 1.5, size=n)
    c = np.concatenate(
        [rng.uniform(0, math.pi, size=(5, n - 1)), rng.uniform(0, 2 * math.pi, size=(5, 1))], 1
    )

    def wrapped(a, m, s):
        return sum(
            stats.norm(m, s).pdf(np.mod(a, 2 * math.pi) + 2 * math.pi * k) for k in range(-6, 7)
        )

    total = np.zeros(len(c))
    for bits in itertools.product([0, 1], repeat=n - 1):
        psi = np.empty_like(c)
        parity = 0
        for i, b in enumerate(bits):
            psi[:, i] = (-1) ** (parity + b) * c[:, i] + math.pi * parity
            parity ^= b
        psi[:, -1] = c[:, -1] + math.pi * parity
        np.testing.assert_allclose(sphere_embedding(psi), sphere_embedding(c), atol=1e-12)
        total += np.prod([wrapped(psi[:, i], mu[i], sigma[i]) for i in range(n)], axis=0)
    np.testing.assert_allclose(log_canonical_angle_density(c, mu, sigma), np.log(total), rtol=1e-10)


def _sphere_grid(n, m):
    """Midpoint grid over the canonical angles of S^n (n = 1, 2) and the cell volume."""
    if n == 1:
        c = ((np.arange(2 * m) + 0.5) * math.pi / m)[:, None]
        return c, math.pi / m
    c1 = (np.arange(m) + 0.5) * math.pi / m
    c2 = (np.arange(2 * m) + 0.5) * math.pi / m
    grid = np.stack(np.meshgrid(c1, c2, indexing="ij"), -1).reshape(-1, 2)
    return grid, (math.pi / m) ** 2


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize(
    "cls,theta",
    [
        (SphericalGaussian, None),
        (ConditionalSphericalGaussian, (-1.0, -1.0)),
        (ConditionalSphericalGaussian, (1.0, 1.0)),
        (ConditionalSphericalGaussian, (0.2, -0.5)),
    ],
)
def test_density_on_sphere_integrates_to_one(n, cls, theta):
    ds = cls(n=n, d=n + 2)
    c, cell = _sphere_grid(n, 300)
    x = np.concatenate([sphere_embedding(c), np.zeros((len(c), 1))], 1)
    log_p = ds.log_density_on_manifold(x, None if theta is None else np.array(theta))
    total = np.sum(np.exp(log_p + log_area_element(c))) * cell
    assert total == pytest.approx(1.0, abs=1e-6)


def test_ambient_density_integrates_to_one_on_a_grid():
    """The full density in R^2 (circle, radial noise) integrates to 1 in Cartesian coordinates."""
    ds = SphericalGaussian(n=1, d=2, epsilon=0.05)
    h = 0.004
    g = np.arange(-1.4, 1.4, h) + h / 2
    x = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    assert np.sum(np.exp(ds.log_density(x))) * h * h == pytest.approx(1.0, abs=2e-3)


def _chi2_pvalue(counts, probs):
    expected = probs * counts.sum()
    keep = expected > 5
    stat = np.sum((counts[keep] - expected[keep]) ** 2 / expected[keep])
    return stats.chi2.sf(stat, keep.sum() - 1)


@pytest.mark.parametrize(
    "cls,n,theta",
    [
        (SphericalGaussian, 2, None),
        (ConditionalSphericalGaussian, 2, (1.0, 1.0)),  # wide angles: many samples fold
        (ConditionalSphericalGaussian, 3, (1.0, 0.2)),
    ],
)
def test_samples_match_density_chi_square(cls, n, theta):
    ds = cls(n=n, d=n + 2, epsilon=0.01)
    theta = None if theta is None else np.array(theta)
    c = sphere_angles(ds.sample(40_000, theta=theta, seed=11)[:, : n + 1])
    bins = 4
    edges = [np.linspace(0, math.pi, bins + 1)] * (n - 1) + [
        np.linspace(0, 2 * math.pi, 2 * bins + 1)
    ]
    counts, _ = np.histogramdd(c, bins=edges)
    # expected bin probabilities by midpoint quadrature of p_c on a finer grid
    sub = 8
    axes = [(np.arange(len(e[:-1]) * sub) + 0.5) * (e[1] - e[0]) / sub for e in edges]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, n)
    x = np.concatenate([sphere_embedding(grid), np.zeros((len(grid), 1))], 1)
    dens = np.exp(ds.log_density_on_manifold(x, theta) + log_area_element(grid))
    cell = np.prod([(e[1] - e[0]) / sub for e in edges])
    shape = [s for e in edges for s in (len(e) - 1, sub)]
    probs = (dens.reshape(shape) * cell).sum(axis=tuple(range(1, 2 * n, 2)))
    assert probs.sum() == pytest.approx(1.0, abs=1e-3)
    assert _chi2_pvalue(counts.ravel(), probs.ravel() / probs.sum()) > 1e-3


@pytest.mark.parametrize("cls", [SphericalGaussian, ConditionalSphericalGaussian])
def test_spherical_distance_projection_and_ood(cls):
    eps, n, d = 0.01, 3, 7
    ds = cls(n=n, d=d, epsilon=eps)
    x = ds.sample(20_000, seed=0)
    dist = ds.distance_to_manifold(x)
    k = d - n  # chi distribution with k degrees of freedom, scaled by eps
    expected_mean = eps * math.sqrt(2) * math.exp(math.lgamma((k + 1) / 2) - math.lgamma(k / 2))
    assert dist.mean() == pytest.approx(expected_mean, rel=0.02)
    proj = ds.project_to_manifold(x)
    np.testing.assert_allclose(ds.distance_to_manifold(proj), 0.0, atol=1e-12)
    np.testing.assert_allclose(ds.project_to_manifold(proj), proj, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(proj - x, axis=1), dist, atol=1e-12)
    ood = ds.sample_ood(20_000, seed=0)
    ood_off = ood[:, n + 1 :]
    assert ood_off.min() >= -3 * eps and ood_off.max() <= 0.0
    assert np.linalg.norm(ood[:, : n + 1], axis=1).max() <= 1.0
    assert ds.distance_to_manifold(ood).mean() > 1.4 * dist.mean()
    assert np.all(np.isfinite(ds.log_density(x)))


def test_conditional_spherical_changes_with_theta_and_prior():
    ds = ConditionalSphericalGaussian(n=2, d=3)
    a = ds.sample(5000, theta=np.array([-1.0, -1.0]), seed=0)
    b = ds.sample(5000, theta=np.array([1.0, 1.0]), seed=0)
    ca, cb = sphere_angles(a), sphere_angles(b)
    assert ca[:, 0].std() < 0.6 * cb[:, 0].std()  # width 0.1 pi vs 0.4 pi
    # last angle's mean pi/2 vs 3pi/2
    assert np.mean(np.sin(ca[:, 1])) > 0.7 and np.mean(np.sin(cb[:, 1])) < -0.2
    assert np.mean(ds.log_density(a, np.array([-1.0, -1.0]))) > np.mean(
        ds.log_density(a, np.array([1.0, 1.0]))
    )
    per_row = ds.log_density(a[:3], np.array([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    assert per_row[0] == pytest.approx(ds.log_density(a[:1], np.array([-1.0, -1.0]))[0])
    np.testing.assert_allclose(
        ds.log_prior(np.array([[0.0, 0.5], [1.5, 0.0]])), [-math.log(4), -np.inf]
    )
    prior = ds.sample_prior(1000, seed=0)
    assert prior.shape == (1000, 2) and np.abs(prior).max() <= 1.0
    with pytest.raises(ValueError, match=r"theta\.shape"):
        ds.sample(3, theta=np.zeros(3))


# ------------------------------------------------------------------------------------------------
# Power (polynomial surface)


_SURFACE = load_surface_constants()


def _torch_surface_embedding(z: torch.Tensor) -> torch.Tensor:
    """Independent reference built straight from the JSON constants."""
    height = sum(
        a * z[0] ** int(i) * z[1] ** int(j)
        for a, (i, j) in zip(_SURFACE["coefficients"], _SURFACE["exponents"])
    ) * torch.exp(-0.1 * (z**2).sum())
    return torch.tensor(_SURFACE["rotation"]) @ torch.stack([z[0], z[1], height])


def test_power_surface_area_element_matches_autograd():
    ds = PolynomialSurface()
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, size=(6, 2))
    for zi, log_area in zip(z, ds.log_area_element(z)):
        t = torch.tensor(zi, dtype=torch.float64)
        np.testing.assert_allclose(
            _torch_surface_embedding(t).numpy(), ds.embed(zi[None])[0], atol=1e-12
        )
        jac = torch.autograd.functional.jacobian(_torch_surface_embedding, t)
        assert log_area == pytest.approx(0.5 * torch.logdet(jac.T @ jac).item(), abs=1e-10)


def test_power_density_on_surface_integrates_to_one():
    """Density on the surface times the (autograd) area element integrates to 1 over the plane."""
    ds = PolynomialSurface()
    h = 0.1  # half the narrowest width: the midpoint rule is spectrally accurate (error ~e^-79)
    g = np.arange(-12.0, 12.0, h) + h / 2
    z = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    jac = torch.func.vmap(torch.func.jacfwd(_torch_surface_embedding))(torch.tensor(z))
    log_area = 0.5 * torch.logdet(jac.mT @ jac).numpy()
    x = ds.embed(z)
    for theta in (-1.0, 0.0, 1.0):
        log_p = ds.log_density(x, np.array([theta]))
        assert np.sum(np.exp(log_p + log_area)) * h * h == pytest.approx(1.0, abs=1e-6)


def test_power_samples_on_surface_projection_and_off_surface():
    ds = PolynomialSurface()
    x = ds.sample(5000, theta=np.array([0.5]), seed=0)
    assert ds.distance_to_manifold(x).max() < 1e-6
    log_p = ds.log_density(x, np.array([0.5]))
    assert np.all(np.isfinite(log_p))
    # regression: the area factor is included (the original returned log p(z) alone)
    z, _ = ds.chart(x)
    np.testing.assert_allclose(
        log_p,
        ds.log_latent_density(z, np.array([0.5]))
        - 0.5 * np.log1p(np.sum(ds.surface_gradient(z) ** 2, 1)),
    )
    assert np.max(np.abs(log_p - ds.log_latent_density(z, np.array([0.5])))) > 0.1
    # regression: off the surface the density is -inf, not 0
    normal = ds.rotation[:, 2]
    off = x + 1e-3 * normal
    np.testing.assert_allclose(ds.distance_to_manifold(off), 1e-3, rtol=1e-6)
    assert np.all(ds.log_density(off, np.array([0.5])) == -np.inf)
    np.testing.assert_allclose(ds.log_density_on_manifold(off, np.array([0.5])), log_p, atol=1e-9)
    proj = ds.project_to_manifold(off)
    np.testing.assert_allclose(proj, x, atol=1e-9)
    np.testing.assert_allclose(ds.project_to_manifold(proj), proj, atol=1e-12)
    # float32 data (as load returns) still count as on the surface
    assert np.all(np.isfinite(ds.log_density(x.astype(np.float32), np.array([0.5]))))


def test_power_samples_match_density_and_depend_on_theta():
    ds = PolynomialSurface()
    theta = np.array([-1.0])
    z, _ = ds.chart(ds.sample(40_000, theta=theta, seed=5))
    edges = np.linspace(-5, 5, 11)
    counts, _, _ = np.histogram2d(z[:, 0], z[:, 1], bins=[edges, edges])
    sub = 20
    h = (edges[1] - edges[0]) / sub
    g = edges[0] + (np.arange(10 * sub) + 0.5) * h
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    dens = np.exp(ds.log_density(ds.embed(grid), theta) + ds.log_area_element(grid)) * h * h
    probs = dens.reshape(10, sub, 10, sub).sum((1, 3))
    inside = (np.abs(z) < 5).all(1).mean()
    assert probs.sum() == pytest.approx(inside, abs=0.01)
    assert _chi2_pvalue(counts.ravel(), probs.ravel() / probs.sum()) > 1e-3
    # the narrow component widens with theta
    near = lambda zz: np.mean(np.sum((zz - np.array([-1.0, 1.0])) ** 2, 1) < 0.3**2)  # noqa: E731
    z_wide, _ = ds.chart(ds.sample(20_000, theta=np.array([1.0]), seed=5))
    assert near(z) > 2 * near(z_wide)


def test_power_ood_prior_and_theta_validation():
    ds = PolynomialSurface()
    x = ds.sample_ood(5000, seed=0)
    d = ds.distance_to_manifold(x)
    assert 0.05 < d.mean() < 0.15
    np.testing.assert_allclose(ds.log_prior(np.array([0.3, -1.2])), [-math.log(2), -np.inf])
    assert ds.sample_prior(100, seed=0).shape == (100, 1)
    with pytest.raises(ValueError, match=r"x\.shape"):
        ds.log_density(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"theta\.shape"):
        ds.sample(4, theta=np.zeros((3, 1)))


# ------------------------------------------------------------------------------------------------
# Lorenz


def _tiny_lorenz(tmp_path, **kw):
    options = dict(num_trajectories=2, steps=4000, t_max=20.0, warmup=2.0, progress=False)
    options.update(kw)
    return data.get("lorenz", data_dir=tmp_path, **options)


def test_lorenz_trajectories_solve_the_ode_and_are_cached(tmp_path, monkeypatch):
    ds = _tiny_lorenz(tmp_path)
    traj = np.asarray(ds.trajectories(), dtype=np.float64)
    assert traj.shape == (2, 4000, 3)
    dt = (20.0 - 2.0) / 3999
    deriv = (traj[:, 2:] - traj[:, :-2]) / (2 * dt)  # central differences
    x, y, z = traj[:, 1:-1].transpose(2, 0, 1)
    rhs = np.stack([10 * (y - x), x * (28 - z) - y, x * y - 8 / 3 * z], -1)
    assert np.median(np.abs(deriv - rhs) / (np.abs(rhs) + 1)) < 1e-2
    assert np.all(np.abs(traj[:, 0] - ds.initial_states()) > 1e-3)  # the warm-up was skipped
    files = sorted(p.name for p in (tmp_path / "lorenz").iterdir())
    assert files == [ds.cache_path.name, ds.cache_path.name + ".sha256"]
    # a second instance reads the cache instead of integrating again
    again = _tiny_lorenz(tmp_path)
    monkeypatch.setattr(type(again), "_integrate", lambda self, out: pytest.fail("not cached"))
    np.testing.assert_array_equal(
        again.load("test", n=100, seed=2).x, ds.load("test", n=100, seed=2).x
    )
    # different options, different cache key
    assert _tiny_lorenz(tmp_path, trajectory_seed=1).cache_path != ds.cache_path
    # data points are stored states, standardised with the fixed constants
    raw = ds.sample(200, seed=0) * STDS + MEANS
    gaps = np.abs(raw[:, None, :] - traj.reshape(-1, 3)[None]).max(-1).min(1)
    assert gaps.max() < 1e-4


@pytest.mark.parametrize("damage", ["flip", "truncate", "checksum"])
def test_lorenz_garbled_cache_is_detected_and_rebuilt(tmp_path, damage):
    ds = _tiny_lorenz(tmp_path)
    expected = np.array(ds.trajectories())
    path = ds.cache_path
    if damage == "flip":  # one changed byte in the data (the header still parses)
        raw = bytearray(path.read_bytes())
        raw[-100] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        path.with_name(path.name + ".sha256").unlink()
    again = _tiny_lorenz(tmp_path)
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        rebuilt = np.array(again.trajectories())
    np.testing.assert_array_equal(rebuilt, expected)
    assert path.with_name(path.name + ".sha256").is_file()
    # the rebuilt cache verifies again: no further warning, no integration
    third = _tiny_lorenz(tmp_path)
    third._integrate = lambda out: pytest.fail("not cached")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(np.array(third.trajectories()), expected)


def test_lorenz_distance_to_the_attractor(tmp_path):
    ds = _tiny_lorenz(tmp_path, reference_points=2000)
    reference = ds.standardise(np.asarray(ds.trajectories()).reshape(-1, 3)[::4])
    assert len(reference) == 2000
    # brute force against the k-d tree, on and off the attractor
    x = np.concatenate([ds.sample(50, seed=1), np.random.default_rng(0).normal(size=(50, 3))])
    brute = np.linalg.norm(x[:, None] - reference[None], axis=-1)
    np.testing.assert_allclose(ds.distance_to_manifold(x), brute.min(1), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ds.project_to_manifold(x), reference[brute.argmin(1)], atol=1e-9)
    # stored states are (nearly) on it; noisy copies of them are farther away
    on = ds.distance_to_manifold(ds.load("test", n=300, seed=0).x)
    off = ds.distance_to_manifold(ds.sample_ood(300, seed=0))
    assert np.median(on) < 0.05 and np.median(off) > 2 * np.median(on)
    assert ds.distance_to_manifold(reference[:5]).max() == 0.0
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        ds.distance_to_manifold(np.zeros((2, 2)))


def test_lorenz_truth_not_available(tmp_path):
    ds = _tiny_lorenz(tmp_path)
    with pytest.raises(NotImplementedError, match="lorenz"):
        ds.log_density(np.zeros((2, 3)))
    assert ds.sample_ood(10, seed=0).shape == (10, 3)
    with pytest.raises(NotImplementedError, match="no parameters"):
        ds.sample_prior(3)
