"""The registry of kinds, algorithms and capabilities, and the models that expose them."""

from __future__ import annotations

import pytest
import torch

from mflows import make_model, registry
from mflows.errors import InvalidArgumentError


def _model(kind: str, context_dim: int = 1, **arch):
    torch.manual_seed(0)
    latent_dim = None if kind == "af" else 2
    model = make_model(kind, 3, latent_dim, context_dim=context_dim, seed=0, **arch).double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move away from the identity initialisation
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model.eval()


def test_tables_cover_the_same_kinds_and_algorithms():
    from mflows.models import ARCHITECTURE_KEYS
    from mflows.training.phases import ALGORITHMS as TRAINER_ALGORITHMS

    assert set(registry.KINDS) == set(ARCHITECTURE_KEYS)
    assert set(registry.ALGORITHMS) == set(TRAINER_ALGORITHMS)
    for algorithm, kinds in registry.COMPATIBLE.items():
        assert set(kinds) == set(TRAINER_ALGORITHMS[algorithm]), algorithm


@pytest.mark.parametrize("kind", registry.KINDS)
def test_models_expose_the_capabilities_of_their_kind(kind):
    model = _model(kind)
    caps = registry.capabilities(kind)
    assert model.capabilities == caps
    for name, value in caps.as_dict().items():
        if hasattr(type(model), name):
            assert getattr(model, name) == value, name
    x = model.sample(5, context=torch.zeros(1, dtype=torch.float64)).detach()
    ctx = torch.zeros(5, 1, dtype=torch.float64)
    if caps.exact_density:
        assert torch.isfinite(model.log_prob(x, context=ctx)).all()
    else:
        with pytest.raises(NotImplementedError):
            model.log_prob(x, context=ctx)
    assert hasattr(model, "encoder") == caps.has_encoder
    if caps.has_manifold and not caps.has_encoder:
        # encode inverts the decoder exactly, so the projection is idempotent
        p = model.project(x, context=ctx)
        torch.testing.assert_close(model.project(p, context=ctx), p, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("kind", "arch", "expected"),
    [
        ("pie", {}, True),  # the factory's PIE: f sees theta
        ("pie", {"conditional_outer": False}, False),
        ("mflow", {}, False),
        ("mflow", {"conditional_outer": True}, True),
        ("emflow", {"conditional_outer": True}, True),
        ("fom", {}, False),
        ("pae", {}, False),
        ("af", {}, False),
    ],
)
def test_theta_enters_manifold_matches_what_decode_does(kind, arch, expected):
    model = _model(kind, **arch)
    assert model.theta_enters_manifold is expected
    if not model.has_manifold:
        return
    u = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = model.decode(u, context=torch.full((6, 1), -0.5, dtype=torch.float64))
        b = model.decode(u, context=torch.full((6, 1), 0.5, dtype=torch.float64))
    assert (not torch.allclose(a, b, atol=1e-6)) is expected


def test_unconditional_models_have_no_theta_in_the_manifold():
    assert _model("pie", context_dim=0).theta_enters_manifold is False


def test_check_algorithm_and_lookups():
    registry.check_algorithm("alternating", "mflow")
    with pytest.raises(InvalidArgumentError, match="algorithms for 'af': likelihood, ot"):
        registry.check_algorithm("alternating", "af")
    with pytest.raises(InvalidArgumentError, match="unknown training algorithm"):
        registry.check_algorithm("nope", "af")
    with pytest.raises(InvalidArgumentError, match="unknown model kind"):
        registry.capabilities("nope")
    assert registry.kinds_with(has_encoder=True) == ("emflow", "pae")
    assert registry.kinds_with(has_manifold=False) == ("af",)
    assert set(registry.kinds_with(density_on_manifold=True)) == {"fom", "mflow", "emflow"}
    with pytest.raises(InvalidArgumentError):
        registry.kinds_with(flies=True)
