"""Tests of the pure loss functions in mflows.losses against closed forms and autograd."""

from __future__ import annotations

import math

import pytest
import torch

from mflows import losses as L


def test_reconstruction_error_is_mean_of_summed_squares():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, 2, generator=g, dtype=torch.float64)
    y = torch.randn(7, 3, 2, generator=g, dtype=torch.float64)
    expected = sum(float(((x[i] - y[i]) ** 2).sum()) for i in range(7)) / 7
    assert L.reconstruction_error(x, y).item() == pytest.approx(expected, rel=1e-12)
    assert L.reconstruction_error(x, x).item() == 0.0


def test_negative_log_likelihood():
    lp = torch.tensor([-1.0, -2.0, -4.5], dtype=torch.float64)
    assert L.negative_log_likelihood(lp).item() == pytest.approx(2.5)


def test_score_matches_gaussian_closed_form():
    # log N(x; A theta, 1) has score A^T (x - A theta) per sample.
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 2, generator=g, dtype=torch.float64)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    theta = torch.randn(5, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    mean = theta @ a.T
    log_prob = -0.5 * ((x - mean) ** 2).sum(-1) - 1.5 * math.log(2 * math.pi)
    t = L.score(log_prob, theta)
    expected = (x - theta.detach() @ a.T) @ a
    torch.testing.assert_close(t, expected)
    # create_graph: the score loss can be differentiated w.r.t. what built log_prob.
    joint = torch.zeros_like(expected)
    loss = L.score_matching_error(t, joint)
    assert loss.item() == pytest.approx(float((expected**2).sum(-1).mean()))
    assert loss.requires_grad


def test_sinkhorn_large_blur_tends_to_half_squared_mean_difference():
    # For eps -> inf the debiased Sinkhorn divergence with cost |x-y|^2/2 tends to
    # E C(x,y) - E C(x,x')/2 - E C(y,y')/2 = |mean(x) - mean(y)|^2 / 2 (empirical measures).
    g = torch.Generator().manual_seed(2)
    x = torch.randn(60, 2, generator=g, dtype=torch.float64)
    y = 0.5 * torch.randn(40, 2, generator=g, dtype=torch.float64) + torch.tensor([1.0, -0.5])
    s = L.sinkhorn_divergence(x, y, blur=1e3)
    expected = 0.5 * float(((x.mean(0) - y.mean(0)) ** 2).sum())
    assert s.item() == pytest.approx(expected, rel=1e-3)


def test_sinkhorn_small_blur_tends_to_one_dimensional_w2():
    # In 1-d, optimal transport between equal-size empirical measures matches sorted samples:
    # OT = mean((sort x - sort y)^2) / 2.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(50, 1, generator=g, dtype=torch.float64)
    y = 2.0 * torch.rand(50, 1, generator=g, dtype=torch.float64) + 1.0
    s = L.sinkhorn_divergence(x, y, blur=1e-3, scaling=0.95)
    w2 = 0.5 * float(((x.sort(0).values - y.sort(0).values) ** 2).mean())
    assert s.item() == pytest.approx(w2, rel=2e-2)
    assert L.sinkhorn_divergence(x, x, blur=0.05).abs().item() < 1e-6


def test_sinkhorn_gradient_flows_to_samples():
    x = torch.zeros(20, 2, dtype=torch.float64, requires_grad=True)
    y = torch.ones(20, 2, dtype=torch.float64)
    L.sinkhorn_divergence(x, y).backward()
    # Moving every sample towards y reduces the divergence: gradient points away from y.
    assert torch.isfinite(x.grad).all()
    assert (x.grad < 0).all()


# ---------------------------------------------------------------- SCANDAL in a density phase
def _conditional_mflow(conditional_outer: bool):
    from mflows.models import make_model

    model = make_model(
        "mflow",
        3,
        2,
        1,
        outer_layers=2,
        inner_layers=2,
        hidden_features=16,
        num_blocks=1,
        conditional_outer=conditional_outer,
        seed=0,
    ).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_latent_score_is_the_full_score_when_theta_stays_off_the_manifold():
    """The density phase's score (at fixed u) is exact for conditional_outer=False ..."""
    torch.manual_seed(2)
    model = _conditional_mflow(False)
    x = torch.randn(5, 3, dtype=torch.float64)
    theta = torch.randn(5, 1, dtype=torch.float64, requires_grad=True)
    full = L.score(model.log_prob(x, theta), theta)
    u = model.encode(x, theta).detach()
    latent = L.score(model.latent_log_prob(u, theta), theta)
    torch.testing.assert_close(latent, full)
    # ... but not when theta enters the manifold: then the density phase's score is wrong
    model = _conditional_mflow(True)
    full = L.score(model.log_prob(x, theta), theta)
    u = model.encode(x, theta).detach()
    latent = L.score(model.latent_log_prob(u, theta), theta)
    assert (latent - full).abs().max() > 1e-3


@pytest.mark.parametrize("algorithm", ["sequential", "alternating", "ot-alternating"])
def test_scandal_density_phase_with_conditional_manifold_is_refused(algorithm):
    """Regression: this combination trained a wrong score silently."""
    from mflows.errors import InvalidArgumentError
    from mflows.training.phases import schedule_for

    with pytest.raises(InvalidArgumentError, match="conditional_outer=True"):
        schedule_for(algorithm, _conditional_mflow(True), scandal=True)
    schedule_for(algorithm, _conditional_mflow(False), scandal=True)  # exact score: allowed
    schedule_for(algorithm, _conditional_mflow(True), scandal=False)
    schedule_for("likelihood", _conditional_mflow(True), scandal=True)  # full log_prob: allowed
