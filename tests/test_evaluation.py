"""Tests of the evaluation metrics: distances, AUC, MMD, closure, FID and posterior scores."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from mflows.evaluation import (
    INCEPTION_WEIGHTS_FILE,
    InceptionV3Features,
    closure_residuals,
    closure_score,
    closure_scores,
    fid,
    find_inception_weights,
    frechet_distance,
    load_inception,
    log_likelihood_stats,
    log_posterior_at,
    manifold_distance,
    manifold_distances,
    median_distance,
    mmd,
    model_log_likelihood_fn,
    ood_auc,
    posterior_mmd,
    reconstruction_error,
    reconstruction_errors,
    roc_auc,
    score_samples,
    true_posterior_samples,
)
from mflows.evaluation.inference import torch_threads


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small tensors: one torch thread avoids thread hand-offs on a shared machine."""
    with torch_threads(1):
        yield


# ------------------------------------------------------------------------------------------
# distances and reconstruction errors


class _UnitSphere:
    """Stand-in data set: the unit circle in R^2, distance | |x| - 1 |."""

    def distance_to_manifold(self, x):
        return np.abs(np.linalg.norm(x, axis=1) - 1.0)


def test_manifold_distance_known_answer_and_clip():
    radii = np.array([1.0, 1.5, 0.25, 31.0])
    angles = np.array([0.1, 2.0, 4.0, 5.0])
    x = radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], 1)
    expected = np.array([0.0, 0.5, 0.75, 10.0])  # 30 is clipped to 10
    np.testing.assert_allclose(manifold_distances(x, _UnitSphere()), expected, atol=1e-12)
    assert manifold_distance(x, _UnitSphere()) == pytest.approx(expected.mean())
    assert manifold_distance(torch.as_tensor(x), _UnitSphere(), clip=None) == pytest.approx(
        (0.0 + 0.5 + 0.75 + 30.0) / 4
    )
    # a plain callable works too
    assert manifold_distance(x, _UnitSphere().distance_to_manifold) == pytest.approx(
        expected.mean()
    )


def test_reconstruction_error_known_answer():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4))
    norms = np.array([0.0, 0.3, 2.0, 9.0, 50.0])
    directions = rng.normal(size=(5, 4))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    x_proj = x + norms[:, None] * directions
    np.testing.assert_allclose(reconstruction_errors(x, x_proj), np.minimum(norms, 10.0))
    assert reconstruction_error(x, x_proj) == pytest.approx(np.minimum(norms, 10.0).mean())
    assert reconstruction_error(x, x_proj, clip=None) == pytest.approx(norms.mean())
    # images: the norm runs over all non-batch dimensions
    imgs = rng.normal(size=(3, 2, 4, 4))
    assert reconstruction_error(imgs, imgs + 0.5) == pytest.approx(0.5 * np.sqrt(32))
    with pytest.raises(ValueError, match=r"expected x_proj\.shape"):
        reconstruction_errors(x, x_proj[:, :3])


def test_log_likelihood_stats_known_answer():
    model = np.array([-1.0, -2.0, -3.0, -np.inf])
    truth = np.array([-1.5, -2.0, -1.0, -2.0])
    stats = log_likelihood_stats(model, truth)
    assert stats["mean"] == pytest.approx(-2.0)
    assert stats["num_nonfinite"] == 1
    assert stats["true_mean"] == pytest.approx(-1.625)  # over every finite true value
    assert stats["mean_abs_error"] == pytest.approx((0.5 + 0.0 + 2.0) / 3)
    assert stats["rmse"] == pytest.approx(np.sqrt((0.25 + 0.0 + 4.0) / 3))
    assert set(log_likelihood_stats(model)) == {"mean", "std", "num_nonfinite"}


# ------------------------------------------------------------------------------------------
# ROC AUC


def _brute_force_auc(s_in, s_out):
    total = 0.0
    for a, b in itertools.product(s_in, s_out):
        total += 1.0 if b > a else 0.5 if b == a else 0.0
    return total / (len(s_in) * len(s_out))


def test_roc_auc_separable_identical_and_ties():
    rng = np.random.default_rng(1)
    low, high = rng.uniform(0, 1, 300), rng.uniform(2, 3, 200)
    assert roc_auc(low, high) == 1.0  # higher score = more OOD
    assert roc_auc(high, low) == 0.0
    same = roc_auc(rng.normal(size=20000), rng.normal(size=20000))
    assert abs(same - 0.5) < 0.015
    assert roc_auc(np.ones(10), np.ones(7)) == 0.5  # all ties


def test_roc_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(2)
    s_in, s_out = rng.integers(0, 6, 40), rng.integers(1, 8, 30)  # many ties
    assert roc_auc(s_in, s_out) == pytest.approx(_brute_force_auc(s_in, s_out), abs=1e-12)
    # -inf log-likelihood (score +inf) is the most OOD
    assert roc_auc([0.0, 1.0], [np.inf, np.nan]) == 1.0


def test_ood_auc_takes_the_best_detector():
    rng = np.random.default_rng(3)
    logp_in, logp_out = rng.normal(size=500), rng.normal(size=500) - 0.5  # weak separation
    rec_in, rec_out = rng.uniform(0, 1, 500), rng.uniform(2, 3, 500)  # perfect separation
    both = ood_auc(logp_in, logp_out, rec_in, rec_out)
    assert both["auc_reconstruction"] == 1.0
    assert 0.55 < both["auc_log_likelihood"] < 0.75  # lower likelihood = more OOD
    assert both["auc"] == 1.0
    only_ll = ood_auc(logp_in, logp_out)
    assert set(only_ll) == {"auc_log_likelihood", "auc"}
    with pytest.raises(ValueError):
        ood_auc(logp_in, None)


# ------------------------------------------------------------------------------------------
# MMD


def _brute_force_mmd(x, y, h, unbiased):
    """float64 double loops over every pair: the reference for :func:`mmd`."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)

    def k(a, b):
        return math.exp(-float(np.sum((a - b) ** 2)) / (2.0 * h * h))

    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j or not unbiased)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j or not unbiased)
    sxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m))
    if unbiased:
        return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)
    return max(sxx / n**2 + syy / m**2 - 2.0 * sxy / (n * m), 0.0)


def _brute_force_median(y):
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    return float(np.median([np.linalg.norm(y[i] - y[j]) for i in range(len(y)) for j in range(i)]))


@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_matches_brute_force_reference(unbiased):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(37, 2)), 0.5 + 1.3 * rng.normal(size=(29, 2))
    for h in (0.3, 1.0, 2.5):
        expected = _brute_force_mmd(x, y, h, unbiased)
        assert mmd(x, y, bandwidth=h, unbiased=unbiased) == pytest.approx(expected, abs=1e-13)
    h = _brute_force_median(y)
    expected = _brute_force_mmd(x, y, h, unbiased)
    assert mmd(x, y, bandwidth="y", unbiased=unbiased) == pytest.approx(expected, abs=1e-13)
    assert posterior_mmd(x, y, unbiased=unbiased) == pytest.approx(expected, abs=1e-13)


def test_posterior_mmd_is_the_unbiased_statistic_by_default():
    """Regression: the paper's metric is the U-statistic; it used to return the V-statistic."""
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(25, 2)), rng.normal(size=(30, 2))  # same distribution
    h = _brute_force_median(y)
    unbiased = _brute_force_mmd(x, y, h, True)
    assert posterior_mmd(x, y) == pytest.approx(unbiased, abs=1e-13)
    assert mmd(x, y, bandwidth=h) == pytest.approx(unbiased, abs=1e-13)
    # the biased estimate is larger by about (1 - E k)/N + (1 - E k)/M, here ~0.05
    assert posterior_mmd(x, y, unbiased=False) > unbiased + 0.01


def test_median_distance_uses_all_pairs():
    """Regression: above 2000 points the median came from a random subset of 2000."""
    from scipy.spatial.distance import pdist

    rng = np.random.default_rng(9)
    y = rng.standard_exponential(size=(2300, 2))
    assert median_distance(y) == pytest.approx(float(np.median(pdist(y))), rel=1e-12, abs=0)
    odd = y[:101]
    assert median_distance(odd) == pytest.approx(float(np.median(pdist(odd))), rel=1e-12)
    chain = np.repeat(y[:300], 4, axis=0)  # Metropolis chains repeat points: many ties
    assert median_distance(chain) == pytest.approx(float(np.median(pdist(chain))), rel=1e-12)
    assert median_distance(np.zeros((5, 2))) == 0.0
    subset = median_distance(y, max_points=500, seed=1)
    assert subset != median_distance(y) and subset == pytest.approx(median_distance(y), rel=0.1)


def test_mmd_self_zero_shift_positive():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 2))
    assert mmd(x, x, unbiased=False) == pytest.approx(0.0, abs=1e-12)
    assert abs(mmd(x, x)) < 0.01  # the U-statistic of two equal samples is slightly negative
    y = rng.normal(size=(400, 2))
    assert abs(mmd(x, y)) < 0.01
    assert mmd(x, y + np.array([1.0, 0.0])) > 0.1
    # the estimate grows with the shift
    values = [mmd(x, y + s) for s in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values)


def test_mmd_closed_forms():
    # two single points: MMD^2 = 2 - 2 exp(-|a - b|^2 / (2 h^2)) (biased: N = M = 1)
    a, b, h = np.array([[0.0, 1.0]]), np.array([[1.0, 3.0]]), 0.7
    biased = 2 - 2 * np.exp(-5.0 / (2 * h**2))
    assert mmd(a, b, bandwidth=h, unbiased=False) == pytest.approx(biased)
    assert mmd(a, b, bandwidth=h, unbiased=False, squared=False) == pytest.approx(np.sqrt(biased))
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd(a, b, bandwidth=h)
    # N(0, s^2) vs N(m, s^2) in 1-d: E k = h / sqrt(h^2 + 2 s^2) * exp(-m^2 / (2 (h^2 + 2 s^2)))
    rng = np.random.default_rng(5)
    s, m, h = 1.0, 1.0, 1.0
    c = h / np.sqrt(h**2 + 2 * s**2)
    exact = 2 * c * (1 - np.exp(-(m**2) / (2 * (h**2 + 2 * s**2))))
    x, y = rng.normal(0, s, 3000), rng.normal(m, s, 3000)
    assert mmd(x, y, bandwidth=h) == pytest.approx(exact, abs=0.01)


def test_mmd_bandwidth_options():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(200, 3)), 3.0 * rng.normal(size=(200, 3))
    # median heuristic: against a brute-force median over distinct pairs
    dists = [np.linalg.norm(y[i] - y[j]) for i in range(200) for j in range(i + 1, 200)]
    assert median_distance(y) == pytest.approx(np.median(dists))
    assert mmd(x, y, bandwidth="y") == pytest.approx(mmd(x, y, bandwidth=np.median(dists)))
    assert posterior_mmd(x, y) == pytest.approx(mmd(x, y, bandwidth="y"))
    with pytest.raises(ValueError, match=r"expected y\.shape"):
        mmd(x, y[:, :2])
    with pytest.raises(ValueError, match="bandwidth"):
        mmd(x, y, bandwidth="z")
    with pytest.raises(ValueError, match="bandwidth"):
        mmd(x, y, bandwidth=0.0)
    with pytest.raises(ValueError, match="non-finite"):
        mmd(x, np.full((3, 3), np.nan))


# ------------------------------------------------------------------------------------------
# posterior scores


def test_log_posterior_at_matches_gaussian_kde():
    rng = np.random.default_rng(7)
    samples = rng.normal(size=(50, 2))
    theta = np.array([0.3, -0.2])
    ref = np.mean([multivariate_normal(s, 0.15**2 * np.eye(2)).pdf(theta) for s in samples])
    assert log_posterior_at(samples, theta, 0.15) == pytest.approx(np.log(ref), rel=1e-10)
    # far away from every sample: still finite (log-sum-exp)
    assert np.isfinite(log_posterior_at(samples, np.array([40.0, 40.0])))


class _GaussianMeanSimulator:
    """Stand-in data set: x ~ N(theta, I_2), prior theta ~ N(0, 3^2 I_2)."""

    default_theta = np.array([0.5, -0.5])

    def log_density(self, x, theta):
        assert theta.shape == x.shape
        return -0.5 * np.sum((x - theta) ** 2, axis=1) - np.log(2 * np.pi)

    def log_prior(self, theta):
        return -0.5 * np.sum(theta**2, axis=-1) / 9.0 - np.log(2 * np.pi * 9.0)


def test_true_posterior_samples_recover_conjugate_posterior():
    data = _GaussianMeanSimulator()
    x_obs = np.random.default_rng(8).normal(size=(20, 2)) + data.default_theta
    precision = 20 + 1 / 9
    mean, std = x_obs.sum(0) / precision, np.sqrt(1 / precision)  # std = 0.223
    for sampler in ("metropolis", "slice"):
        samples = true_posterior_samples(
            data, x_obs, num_samples=3000, sampler=sampler, step=0.3, seed=1
        )
        assert samples.shape == (3000, 2)
        np.testing.assert_allclose(samples.mean(0), mean, atol=0.05)
        np.testing.assert_allclose(samples.std(0), std, rtol=0.15)


class _FakeManifoldModel(torch.nn.Module):
    """Stand-in conditional manifold model with log p(x|t) = log p_u(u|t) + c(x), u = x[:, :1].

    log p_u(u|t) = log N(u; t, 1); c(x) = -x_1^2 (theta-independent), context_dim = 1.
    """

    kind = "mflow"
    context_dim = 1
    conditional_outer = False

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones((), dtype=torch.float64))
        self.encode_calls = 0

    def encode(self, x, context=None):
        self.encode_calls += 1
        return x[:, :1] * self.scale

    def latent_log_prob(self, u, context=None):
        return -0.5 * (u[:, 0] - context[:, 0]) ** 2 - 0.5 * np.log(2 * np.pi)

    def log_prob(self, x, context=None):
        return self.latent_log_prob(self.encode(x), context) - x[:, 1] ** 2

    def project(self, x, context=None):
        return torch.cat([x[:, :1], torch.zeros_like(x[:, 1:])], 1)


def test_model_log_likelihood_shortcut_logic():
    model = _FakeManifoldModel()
    x = torch.randn(20, 2, dtype=torch.float64)
    fast = model_log_likelihood_fn(model, x, None)
    assert model.encode_calls == 1
    full = model_log_likelihood_fn(model, x, None, shortcut=False)
    t1, t2 = np.array([0.3]), np.array([-0.7])
    assert fast(t1) - fast(t2) == pytest.approx(full(t1) - full(t2), abs=1e-10)
    assert model.encode_calls == 3  # the two full evaluations, none from the shortcut
    # the constant is what the shortcut drops
    assert full(t1) - fast(t1) == pytest.approx(-(x[:, 1] ** 2).sum().item())
    # the prior is added, and -inf outside its support skips the model
    prior = lambda t: 0.0 if abs(t[0]) <= 1 else -np.inf  # noqa: E731
    with_prior = model_log_likelihood_fn(model, x, prior)
    assert with_prior(t1) == pytest.approx(fast(t1))
    assert with_prior(np.array([1.5])) == -np.inf
    model.conditional_outer = True
    with pytest.raises(ValueError, match="shortcut"):
        model_log_likelihood_fn(model, x, None, shortcut=True)


def test_score_samples_with_stand_in_model():
    model = _FakeManifoldModel()
    x = torch.randn(25, 2, dtype=torch.float64)
    scores = score_samples(model, x, context=np.array([0.2]), batch_size=7)
    np.testing.assert_allclose(scores.reconstruction_error, np.abs(x[:, 1].numpy()))
    expected = -0.5 * (x[:, 0] - 0.2) ** 2 - 0.5 * np.log(2 * np.pi) - x[:, 1] ** 2
    np.testing.assert_allclose(scores.log_prob, expected.numpy())


# ------------------------------------------------------------------------------------------
# closure test for lhc40d

FEATURES = [
    f"{q}_{p}" for p in ("a1", "a2", "j1", "j2") for q in ("e", "px", "py", "pz", "pt", "eta")
]
FEATURES[24:24] = [f"{q}_aa" for q in ("e", "px", "py", "pz", "pt", "m", "eta", "deltaeta")]
FEATURES += [f"{q}_jj" for q in ("e", "px", "py", "pz", "pt", "m", "eta", "deltaeta")]


def _closure_tests(weights: np.ndarray) -> list[dict]:
    """The 26 lhc40d relations, built from the feature names (independent of the JSON file)."""
    i = FEATURES.index
    tests = []
    for p in ("a1", "a2", "j1", "j2", "aa", "jj"):
        tests.append(dict(kind="pt", target=i(f"pt_{p}"), px=i(f"px_{p}"), py=i(f"py_{p}")))
    for p in ("a1", "a2", "j1", "j2", "aa", "jj"):
        mom = dict(px=i(f"px_{p}"), py=i(f"py_{p}"), pz=i(f"pz_{p}"))
        tests.append(dict(kind="eta", target=i(f"eta_{p}"), **mom))
    for p in ("a1", "a2", "aa", "jj"):  # photons are massless; jets have no mass feature
        mom = dict(px=i(f"px_{p}"), py=i(f"py_{p}"), pz=i(f"pz_{p}"))
        if p in ("aa", "jj"):
            mom["mass"] = i(f"m_{p}")
        tests.append(dict(kind="on_shell", target=i(f"e_{p}"), **mom))
    for q in ("e", "px", "py", "pz"):
        for pair, (a, b) in (("aa", ("a1", "a2")), ("jj", ("j1", "j2"))):
            tests.append(
                dict(kind="sum", target=i(f"{q}_{pair}"), a=i(f"{q}_{a}"), b=i(f"{q}_{b}"))
            )
    for pair, (a, b) in (("aa", ("a1", "a2")), ("jj", ("j1", "j2"))):
        tests.append(
            dict(kind="delta", target=i(f"deltaeta_{pair}"), a=i(f"eta_{a}"), b=i(f"eta_{b}"))
        )
    assert len(tests) == 26
    for test, w in zip(tests, weights):
        test["weight"] = float(w)
    return tests


def _physical_events(n: int, seed: int) -> np.ndarray:
    """Raw (unstandardised) events whose 40 features satisfy every relation exactly."""
    rng = np.random.default_rng(seed)
    feats = {}
    four = {}
    for p, massive in (("a1", False), ("a2", False), ("j1", True), ("j2", True)):
        pt = rng.uniform(20, 300, n)
        eta = rng.uniform(-4, 4, n)
        phi = rng.uniform(-np.pi, np.pi, n)
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        mass = rng.uniform(2, 30, n) if massive else 0.0
        e = np.sqrt(px**2 + py**2 + pz**2 + mass**2)
        four[p] = (e, px, py, pz)
        feats.update({f"e_{p}": e, f"px_{p}": px, f"py_{p}": py, f"pz_{p}": pz})
        feats.update({f"pt_{p}": pt, f"eta_{p}": eta})
    for pair, (a, b) in (("aa", ("a1", "a2")), ("jj", ("j1", "j2"))):
        e, px, py, pz = (four[a][k] + four[b][k] for k in range(4))
        pt = np.hypot(px, py)
        p_abs = np.sqrt(pt**2 + pz**2)
        feats.update({f"e_{pair}": e, f"px_{pair}": px, f"py_{pair}": py, f"pz_{pair}": pz})
        feats[f"pt_{pair}"] = pt
        feats[f"m_{pair}"] = np.sqrt(np.maximum(e**2 - p_abs**2, 0.0))
        feats[f"eta_{pair}"] = 0.5 * np.log((p_abs + pz) / (p_abs - pz))
        feats[f"deltaeta_{pair}"] = feats[f"eta_{a}"] - feats[f"eta_{b}"]
    return np.stack([feats[name] for name in FEATURES], axis=1)


def test_closure_zero_for_exact_kinematics_and_positive_when_perturbed():
    rng = np.random.default_rng(9)
    raw = _physical_events(500, seed=10)
    means, stds = raw.mean(0), raw.std(0)
    x = (raw - means) / stds
    tests = _closure_tests(rng.uniform(0.001, 1.0, 26))
    assert closure_score(x, means, stds, FEATURES, tests) < 1e-9
    noisy = x + 0.05 * rng.normal(size=x.shape)
    per_event = closure_scores(noisy, means, stds, FEATURES, tests)
    assert per_event.shape == (500,)
    assert (per_event > 1e-4).all()
    assert closure_score(noisy, means, stds, FEATURES, tests) > 100 * closure_score(
        x, means, stds, FEATURES, tests
    )


def test_closure_known_answer_for_one_shifted_energy():
    raw = _physical_events(3, seed=11)
    means, stds = np.zeros(40), np.ones(40)
    weights = np.linspace(0.5, 3.0, 26)
    tests = _closure_tests(weights)
    shifted = raw.copy()
    shifted[:, FEATURES.index("e_a1")] += 0.2
    # e_a1 enters exactly two relations: its on-shell condition and e_aa = e_a1 + e_a2
    touched = [
        k for k, t in enumerate(tests) if FEATURES.index("e_a1") in (t.get("target"), t.get("a"))
    ]
    assert len(touched) == 2
    residuals = closure_residuals(shifted, means, stds, FEATURES, tests)
    np.testing.assert_allclose(
        residuals[:, touched], np.tile(0.2 * weights[touched], (3, 1)), rtol=1e-6
    )
    expected = 0.2 * weights[touched].sum() / 26
    np.testing.assert_allclose(
        closure_scores(shifted, means, stds, FEATURES, tests), np.full(3, expected), rtol=1e-6
    )
    # large violations are clipped at 10 per relation
    shifted[:, FEATURES.index("e_a1")] += 1e6
    assert closure_residuals(shifted, means, stds, FEATURES, tests).max() == 10.0
    with pytest.raises(ValueError, match=r"expected x\.shape"):
        closure_score(raw[:, :39], means, stds, FEATURES, tests)


# ------------------------------------------------------------------------------------------
# FID


def _sqrt_psd(a):
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(12)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    s1, s2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    r1 = _sqrt_psd(s1)  # Tr (S1 S2)^1/2 = Tr (S1^1/2 S2 S1^1/2)^1/2
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * _sqrt_psd(r1 @ s2 @ r1))
    for method in ("sqrtm", "eigh"):
        assert frechet_distance(mu1, s1, mu2, s2, method) == pytest.approx(expected, rel=1e-8)
        assert frechet_distance(mu1, s1, mu1, s1, method) == pytest.approx(0.0, abs=1e-8)
    # rank-deficient covariances (fewer samples than features, as with 2048-d features)
    f1, f2 = rng.normal(size=(5, 8)), rng.normal(size=(5, 8)) + 0.3
    c1, c2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    by_sqrtm = frechet_distance(f1.mean(0), c1, f2.mean(0), c2, "sqrtm")
    by_eigh = frechet_distance(f1.mean(0), c1, f2.mean(0), c2, "eigh")
    assert by_sqrtm == pytest.approx(by_eigh, abs=1e-4)
    with pytest.raises(ValueError, match="method"):
        frechet_distance(mu1, s1, mu2, s2, "svd")
    # diagonal: sum (sqrt(s1) - sqrt(s2))^2
    d1, d2 = np.array([1.0, 4.0]), np.array([9.0, 1.0])
    assert frechet_distance(np.zeros(2), np.diag(d1), np.ones(2), np.diag(d2)) == pytest.approx(
        2 + 4 + 1
    )


class _TinyExtractor(torch.nn.Module):
    """Stand-in feature network: a fixed random linear map of the flattened image to R^6."""

    def __init__(self, in_features: int):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(in_features, 6, generator=gen) / 20)

    def forward(self, x):
        return x.reshape(x.shape[0], -1) @ self.weight


def test_fid_properties_with_stand_in_network():
    rng = np.random.default_rng(13)
    images = rng.integers(0, 256, size=(300, 3, 8, 8)).astype(np.uint8)
    net = _TinyExtractor(3 * 8 * 8)
    assert fid(images, images, feature_extractor=net, batch_size=64) == pytest.approx(0.0, abs=1e-6)
    # channel-last input is accepted and gives the same features
    channel_last = images.transpose(0, 2, 3, 1)
    assert fid(images, channel_last, feature_extractor=net) == pytest.approx(0.0, abs=1e-6)
    base = images.astype(np.float64)
    scores = [fid(base, base + s, feature_extractor=net) for s in (0.0, 5.0, 20.0, 60.0)]
    assert scores[0] == pytest.approx(0.0, abs=1e-6)
    assert scores == sorted(scores) and scores[-1] > 10 * scores[1] > 0
    # a pure mean shift c changes only the mean term: FID = |W^T c 1|^2
    shift = net.weight.detach().double().sum(0).numpy() * 20.0
    assert scores[2] == pytest.approx(np.sum(shift**2), rel=1e-5)


def test_fid_matches_closed_form_for_gaussian_features():
    rng = np.random.default_rng(14)
    mu1, mu2 = np.zeros(3), np.array([1.0, -0.5, 0.2])
    s1, s2 = np.diag([1.0, 2.0, 0.5]), np.array([[1.0, 0.3, 0], [0.3, 1.0, 0], [0, 0, 2.0]])
    a = rng.multivariate_normal(mu1, s1, 40000).reshape(-1, 3, 1, 1)
    b = rng.multivariate_normal(mu2, s2, 40000).reshape(-1, 3, 1, 1)
    identity = lambda x: x.reshape(x.shape[0], -1)  # noqa: E731
    value = fid(a, b, feature_extractor=identity, batch_size=10000)
    assert value == pytest.approx(frechet_distance(mu1, s1, mu2, s2), abs=0.05)


def test_inception_missing_weights_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MFLOWS_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match=INCEPTION_WEIGHTS_FILE):
        load_inception()
    monkeypatch.setenv("MFLOWS_INCEPTION_WEIGHTS", str(tmp_path / "nothing.pth"))
    with pytest.raises(FileNotFoundError, match="MFLOWS_INCEPTION_WEIGHTS"):
        fid(np.zeros((2, 3, 8, 8)), np.zeros((2, 3, 8, 8)))


def test_inception_architecture_and_weight_loading(tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = InceptionV3Features(resize_to=None)  # skip the resize to 299 to keep the test fast
    # parameter count of torchvision's InceptionV3 without the aux head and the fc layer:
    # 23,834,568 (no aux) - 2,049,000 (fc 2048 -> 1000)
    assert sum(p.numel() for p in net.parameters()) == 21_785_568
    # a weight file laid out like pytorch-fid's: with an fc layer, without num_batches_tracked
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    for key in ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch3x3dbl_3b.bn.running_var"):
        assert key in state
    path = tmp_path / INCEPTION_WEIGHTS_FILE
    torch.save(state, path)
    monkeypatch.setenv("MFLOWS_INCEPTION_WEIGHTS", str(tmp_path))  # a folder works too
    assert find_inception_weights() == path
    loaded = load_inception()
    assert loaded.resize_to == 299
    loaded.resize_to = None
    loaded_state = loaded.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(loaded_state[key], value), key
    with torch.no_grad():
        feats = loaded(torch.rand(2, 3, 80, 80) * 255)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    assert (feats >= 0).all()  # pool3 averages ReLU outputs
    del state["Mixed_5b.branch1x1.conv.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match="missing keys"):
        load_inception(path)


# ------------------------------------------------------------------------------------------
# with the real models and data sets


def _perturbed_model(kind: str, conditional_outer: bool):
    from mflows.models import make_model

    model = make_model(
        kind,
        data_dim=3,
        latent_dim=2,
        context_dim=1,
        outer_layers=2,
        inner_layers=2,
        hidden_features=16,
        conditional_outer=conditional_outer,
        seed=0,
    ).double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move away from the identity initialisation
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


@pytest.mark.parametrize("kind", ["mflow", "pie"])
def test_latent_shortcut_matches_full_log_prob_of_conditional_models(kind):
    from mflows.evaluation import uses_latent_shortcut

    model = _perturbed_model(kind, conditional_outer=False)
    assert uses_latent_shortcut(model)
    x = model.sample(20, context=torch.zeros(1, dtype=torch.float64)).detach()
    fast = model_log_likelihood_fn(model, x, None)
    full = model_log_likelihood_fn(model, x, None, shortcut=False)
    thetas = [np.array([-0.6]), np.array([0.4])]
    fast_values = np.array([fast(t) for t in thetas])
    full_values = np.array([full(t) for t in thetas])
    # the full value is sum_i log p(x_i | theta) of the model's own log_prob
    ctx = torch.full((20, 1), 0.4, dtype=torch.float64)
    assert full_values[1] == pytest.approx(model.log_prob(x, context=ctx).sum().item())
    assert abs(full_values[1] - full_values[0]) > 1e-3  # theta matters: the check has teeth
    np.testing.assert_allclose(np.diff(fast_values), np.diff(full_values), rtol=1e-8, atol=1e-8)


def test_latent_shortcut_is_not_used_when_the_outer_flow_sees_theta():
    from mflows.evaluation import uses_latent_shortcut

    for kind in ("mflow", "pie"):
        model = _perturbed_model(kind, conditional_outer=True)
        assert not uses_latent_shortcut(model)
        x = model.sample(5, context=torch.zeros(1, dtype=torch.float64)).detach()
        fn = model_log_likelihood_fn(model, x, None)
        ctx = torch.full((5, 1), 0.3, dtype=torch.float64)
        assert fn(np.array([0.3])) == pytest.approx(model.log_prob(x, context=ctx).sum().item())


def test_power_true_posterior_matches_quadrature():
    from mflows import data

    ds = data.get("power")
    x_obs = ds.load("test", n=20).x
    grid = np.linspace(-1, 1, 801)
    log_post = np.array([ds.log_density(x_obs, np.full((20, 1), t)).sum() for t in grid])
    weights = np.exp(log_post - log_post.max())
    weights /= weights.sum()
    mean = np.sum(weights * grid)
    std = np.sqrt(np.sum(weights * (grid - mean) ** 2))
    samples = true_posterior_samples(ds, x_obs, num_samples=4000, step=0.15, seed=0)
    assert samples.shape == (4000, 1) and np.abs(samples).max() <= 1.0
    assert samples.mean() == pytest.approx(mean, abs=max(0.3 * std, 0.02))
    assert samples.std() == pytest.approx(std, rel=0.25)


def test_power_manifold_distance_and_ood():
    from mflows import data

    ds = data.get("power")
    on = ds.sample(500, seed=0)
    assert manifold_distance(on, ds) < 1e-6
    ood = ds.sample_ood(500, seed=1)
    assert manifold_distance(ood, ds) > 0.01
    auc = roc_auc(manifold_distances(on, ds), manifold_distances(ood, ds))
    assert auc > 0.99


def test_closure_with_the_lhc40d_constants():
    from mflows import data
    from mflows.evaluation import dataset_closure_score

    ds = data.get("lhc40d")
    assert list(ds.features) == FEATURES
    # the packaged relations are the 26 built from the feature names, with their weights
    built = _closure_tests(np.array([t["weight"] for t in ds.closure_tests]))
    key = lambda t: sorted((k, v) for k, v in t.items() if k != "weight")  # noqa: E731
    assert sorted(map(key, built)) == sorted(map(key, ds.closure_tests))
    raw = _physical_events(200, seed=15)
    x = (raw - ds.means) / ds.stds
    assert dataset_closure_score(x, ds) < 1e-9
    rng = np.random.default_rng(16)
    assert dataset_closure_score(x + 0.02 * rng.normal(size=x.shape), ds) > 1e-3
