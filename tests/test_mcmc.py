"""The MCMC samplers recover known posteriors and respect the prior support."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mflows.evaluation import metropolis, sample_posterior, slice_sample
from mflows.evaluation.inference import torch_threads


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small tensors: one torch thread avoids thread hand-offs on a shared machine."""
    with torch_threads(1):
        yield


MEAN = np.array([1.0, -0.5])
COV = np.array([[0.25, 0.15], [0.15, 1.0]])  # stds 0.5 and 1, correlation 0.3
PRECISION = np.linalg.inv(COV)


def gaussian_log_prob(x: np.ndarray) -> float:
    d = x - MEAN
    return -0.5 * float(d @ PRECISION @ d)


def _check_moments(samples: np.ndarray, mean_tol: float, std_rtol: float) -> None:
    np.testing.assert_allclose(samples.mean(0), MEAN, atol=mean_tol)
    np.testing.assert_allclose(samples.std(0), np.sqrt(np.diag(COV)), rtol=std_rtol)
    corr = np.corrcoef(samples.T)[0, 1]
    assert corr == pytest.approx(0.3, abs=0.1)


def test_slice_sampler_recovers_gaussian():
    samples = slice_sample(gaussian_log_prob, np.zeros(2), 4000, burn_in=100, width=1.0, seed=0)
    assert samples.shape == (4000, 2)
    _check_moments(samples, mean_tol=0.08, std_rtol=0.1)


def test_slice_sampler_tiny_and_huge_widths_still_correct():
    # stepping out fixes a too small width, shrinkage a too large one
    for width in (0.05, 50.0):
        samples = slice_sample(gaussian_log_prob, MEAN, 3000, burn_in=50, width=width, seed=1)
        _check_moments(samples, mean_tol=0.1, std_rtol=0.12)


def test_metropolis_recovers_gaussian():
    samples = metropolis(gaussian_log_prob, np.zeros(2), 20000, burn_in=200, step=0.8, seed=0)
    assert samples.shape == (20000, 2)
    _check_moments(samples, mean_tol=0.1, std_rtol=0.12)


def half_normal_log_prob(x: np.ndarray) -> float:
    # N(0, 1) restricted to x >= 0: mean sqrt(2 / pi), variance 1 - 2 / pi
    return -0.5 * float(x[0] ** 2) if x[0] >= 0 else -np.inf


@pytest.mark.parametrize("sampler", ["slice", "metropolis"])
def test_prior_support_is_respected(sampler):
    samples = sample_posterior(
        half_normal_log_prob, np.array([0.5]), 5000, burn_in=100, sampler=sampler, step=1.0, seed=2
    )
    assert (samples >= 0).all()
    assert samples.mean() == pytest.approx(np.sqrt(2 / np.pi), abs=0.06)
    assert samples.std() == pytest.approx(np.sqrt(1 - 2 / np.pi), rel=0.1)


def test_tensor_returning_log_prob_and_nan_handling():
    def log_prob(x):
        t = torch.as_tensor(x)
        return torch.where(t.abs().sum() > 3, torch.tensor(float("nan")), -0.5 * (t**2).sum())

    samples = slice_sample(log_prob, np.zeros(1), 2000, seed=3)
    assert np.abs(samples).max() <= 3  # NaN is treated as outside the support


def test_seed_makes_chains_repeatable_and_bad_start_raises():
    a = metropolis(gaussian_log_prob, np.zeros(2), 50, seed=7)
    b = metropolis(gaussian_log_prob, np.zeros(2), 50, seed=7)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="finite"):
        slice_sample(half_normal_log_prob, np.array([-1.0]), 10)
    with pytest.raises(ValueError, match="sampler"):
        sample_posterior(gaussian_log_prob, np.zeros(2), 10, sampler="hmc")
