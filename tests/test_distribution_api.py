"""Distribution-like models: sample shapes, rsample, sample_and_log_prob, batch dimensions."""

from __future__ import annotations

import pytest
import torch

import mflows

TINY = {"outer_layers": 2, "inner_layers": 2, "hidden_features": 8, "num_blocks": 1, "seed": 2}


def _model(kind, context_dim=0):
    keys = mflows.models.ARCHITECTURE_KEYS[kind]
    arch = {k: v for k, v in TINY.items() if k in keys}
    latent = None if kind == "af" else 2
    data_dim = 3
    model = mflows.make_model(kind, data_dim, latent, context_dim, **arch).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


@pytest.mark.parametrize("kind", ["af", "pie", "mflow", "emflow", "fom", "pae"])
def test_sample_shapes(kind):
    model = _model(kind)
    assert model.event_shape == torch.Size([3])
    assert model.batch_shape == torch.Size([])
    assert model.sample(5).shape == (5, 3)  # the original form
    assert model.sample((5,)).shape == (5, 3)
    assert model.sample((2, 4)).shape == (2, 4, 3)
    assert model.sample(torch.Size([3])).shape == (3, 3)
    assert model.sample().shape == (3,)
    assert model.rsample((2, 2)).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="non-negative integer"):
        model.sample((2, -1))


def test_rsample_is_differentiable_and_repeatable():
    model = _model("mflow")
    x = model.rsample((4,), generator=torch.Generator().manual_seed(1))
    x.sum().backward()
    assert any(p.grad is not None for p in model.parameters())
    y = model.sample((4,), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(x.detach(), y.detach())


# emflow: the density at the drawn u, equal to log_prob(x) only where e(g(u)) = u (trained)
@pytest.mark.parametrize("kind", ["af", "pie", "mflow", "fom"])
def test_sample_and_log_prob_matches_log_prob(kind):
    model = _model(kind)
    x, logp = model.sample_and_log_prob((2, 3), generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 3) and logp.shape == (2, 3)
    with torch.no_grad():
        torch.testing.assert_close(logp.detach(), model.log_prob(x.detach()), rtol=1e-5, atol=1e-5)


def test_pae_sample_and_log_prob_raises():
    with pytest.raises(NotImplementedError):
        _model("pae").sample_and_log_prob(2)


@pytest.mark.parametrize("kind", ["af", "mflow", "emflow"])
def test_leading_batch_dimensions(kind):
    model = _model(kind)
    x = model.sample((12,)).detach()
    with torch.no_grad():
        flat_logp, flat_u, flat_proj = model.log_prob(x), model.encode(x), model.project(x)
        x4 = x.reshape(2, 2, 3, 3)
        torch.testing.assert_close(model.log_prob(x4), flat_logp.reshape(2, 2, 3))
        torch.testing.assert_close(model.encode(x4), flat_u.reshape(2, 2, 3, -1))
        torch.testing.assert_close(model.project(x4), flat_proj.reshape(2, 2, 3, 3))
        u4 = flat_u.reshape(3, 4, -1)
        torch.testing.assert_close(model.decode(u4), model.decode(flat_u).reshape(3, 4, 3))
        if model.has_latent_density:
            torch.testing.assert_close(
                model.latent_log_prob(u4), model.latent_log_prob(flat_u).reshape(3, 4)
            )
    with pytest.raises(ValueError):
        model.log_prob(x[0])  # a single sample still needs a batch dimension


def test_conditional_sampling_forms():
    model = _model("mflow", context_dim=1)
    theta = torch.tensor([0.3], dtype=torch.float64)
    assert model.sample(4, theta).shape == (4, 3)  # shared context
    assert model.sample(4, torch.zeros(4, 1)).shape == (4, 3)  # one per sample (original form)
    assert model.sample((5,), torch.zeros(2, 1)).shape == (5, 2, 3)  # batch of contexts
    assert model.sample((2, 5), theta).shape == (2, 5, 3)
    # each context row is used for its column
    thetas = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    x, logp = model.sample_and_log_prob((6,), thetas, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ctx = thetas[None].expand(6, 2, 1)
        torch.testing.assert_close(logp, model.log_prob(x, ctx), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="match the batch"):
        model.log_prob(x, torch.zeros(6, 3, 1, dtype=torch.float64))
