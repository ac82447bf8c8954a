"""Flat parameter groups (mflows.training.flat) against torch's per-tensor optimisers."""

from __future__ import annotations

import pytest
import torch
from test_training import COMMON, tiny
from torch import nn

import mflows.data
from mflows.registry import COMPATIBLE
from mflows.training import fit, flat, schedule_for
from mflows.training import trainer as trainer_module
from mflows.training.flat import ALIGN, FlatParameters
from mflows.training.trainer import _phase_parameters, compute_losses


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 7), nn.Tanh(), nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 1))


def _loss(net: nn.Module, seed: int) -> torch.Tensor:
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(seed))
    return net(x).square().mean()


def test_parameters_become_aligned_views_of_one_buffer():
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    group = FlatParameters(list(net.parameters()))
    buffer = group.parameter
    for p, s, old in zip(net.parameters(), group.slices, before):
        assert torch.equal(p, old)
        assert p.data_ptr() == buffer.data_ptr() + s.start * buffer.element_size()
        assert s.start % ALIGN == 0
    # the gaps between parameters hold zeros
    used = torch.zeros(buffer.numel(), dtype=torch.bool)
    for s in group.slices:
        used[s] = True
    assert (~used).any()
    assert torch.equal(buffer.detach()[~used], torch.zeros(int((~used).sum())))
    with torch.no_grad():
        buffer.add_(1.0)
    assert all(torch.equal(p, old + 1) for p, old in zip(net.parameters(), before))


def test_backward_writes_the_flat_gradient_and_dropped_gradients_are_repaired():
    net, reference = _net(), _net()
    group = FlatParameters(list(net.parameters()))
    for attempt in range(3):
        group.zero_grad()
        if attempt == 1:
            net.zero_grad(set_to_none=True)  # what a user's code may do between steps
        if attempt == 2:
            next(net.parameters()).grad = torch.ones_like(next(net.parameters()))
        _loss(net, attempt).backward()
        group.gather_gradients()
        expected = torch.autograd.grad(_loss(reference, attempt), list(reference.parameters()))
        if attempt == 2:  # the replaced gradient accumulated onto its ones
            expected = (expected[0] + 1, *expected[1:])
        flat_grad = group.parameter.grad
        for p, s, g in zip(net.parameters(), group.slices, expected):
            torch.testing.assert_close(flat_grad[s].view_as(g), g, rtol=0, atol=0)
            assert p.grad.data_ptr() == flat_grad.data_ptr() + s.start * 4
        gaps = torch.ones(flat_grad.numel(), dtype=torch.bool)
        for s in group.slices:
            gaps[s] = False
        assert not flat_grad[gaps].any()


@pytest.mark.parametrize("fused", [True, False])
def test_flat_adamw_with_clipping_matches_torch_per_tensor(fused):
    net, reference = _net(), _net()
    group = FlatParameters(list(net.parameters()))
    opt = torch.optim.AdamW([group.parameter], lr=1e-2, weight_decay=0.1, fused=fused)
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.1, fused=fused)
    for step in range(20):
        group.zero_grad()
        ref_opt.zero_grad()
        _loss(net, step).backward()
        _loss(reference, step).backward()
        group.gather_gradients()
        norm = torch.nn.utils.clip_grad_norm_([group.parameter], 0.05)
        ref_norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.05)
        torch.testing.assert_close(norm, ref_norm, rtol=1e-5, atol=0)
        opt.step()
        ref_opt.step()
    for p, q in zip(net.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_optimiser_state_round_trips_through_torch_layout():
    net, reference = _net(), _net()
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2)
    for step in range(3):
        ref_opt.zero_grad()
        _loss(reference, step).backward()
        ref_opt.step()
    net.load_state_dict(reference.state_dict())
    group = FlatParameters(list(net.parameters()))
    opt = torch.optim.AdamW([group.parameter], lr=1e-2)
    group.load_state_dict(opt, ref_opt.state_dict())
    saved = group.state_dict(opt)
    ref_saved = ref_opt.state_dict()
    assert saved["param_groups"] == ref_saved["param_groups"]
    for i, state in ref_saved["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(saved["state"][i][key], value, rtol=0, atol=0)
    # and the next steps agree
    for step in range(3, 6):
        group.zero_grad()
        ref_opt.zero_grad()
        _loss(net, step).backward()
        _loss(reference, step).backward()
        group.gather_gradients()
        opt.step()
        ref_opt.step()
    for p, q in zip(net.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def test_release_gives_each_parameter_its_own_storage():
    net = _net()
    group = FlatParameters(list(net.parameters()))
    with torch.no_grad():
        group.parameter.mul_(2)
    values = [p.detach().clone() for p in net.parameters()]
    group.release()
    storages = {p.untyped_storage().data_ptr() for p in net.parameters()}
    assert len(storages) == len(values)
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(p, v) for p, v in zip(net.parameters(), values))


def test_mixed_dtypes_are_refused():
    with pytest.raises(ValueError, match="one dtype"):
        FlatParameters([nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2).double())])


@pytest.mark.parametrize(
    ("kind", "algorithm"),
    [(k, a) for a, kinds in COMPATIBLE.items() if a not in ("ot", "ot-alternating") for k in kinds],
)
def test_every_phase_parameter_gets_a_gradient(kind, algorithm):
    """A flat group updates a parameter without gradient as with a zero one (torch skips it):
    no mflows model has such a parameter in a phase that trains it."""
    model = tiny(kind, context_dim=1)
    x = torch.randn(16, 3)
    context = torch.randn(16, 1)
    for stage in schedule_for(algorithm, model, epochs=2).stages:
        for phase in stage.phases:
            params = _phase_parameters(model, phase)
            model.zero_grad(set_to_none=True)
            compute_losses(model, x, context, None, phase.losses)["loss"].backward()
            missing = [i for i, p in enumerate(params) if p.grad is None]
            assert not missing, (kind, algorithm, phase.name, missing)


@pytest.mark.parametrize("algorithm", ["alternating", "sequential", "likelihood"])
def test_training_with_flat_groups_matches_per_tensor_training(monkeypatch, algorithm):
    """The first steps of fit agree with and without flat groups (to float rounding: Adam
    amplifies rounding differences in near-zero gradients, so only a few steps compare)."""
    data = mflows.data.get("power").load("train", n=60, seed=3)
    kwargs = dict(COMMON, algorithm=algorithm, epochs=2, batch_size=30, early_stopping=False)
    kwargs["validation_split"] = 0.0
    flat_model = tiny("mflow")
    flat_history = fit(flat_model, data.x, **kwargs)
    assert all(p.untyped_storage().size() == p.numel() * 4 for p in flat_model.parameters())
    monkeypatch.setattr(trainer_module, "flattenable", lambda params: False)
    plain_model = tiny("mflow")
    plain_history = fit(plain_model, data.x, **kwargs)
    for a, b in zip(flat_history.records, plain_history.records):
        for key in a:
            if key.startswith("train_"):
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    for p, q in zip(flat_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)


def test_module_exports():
    assert flat.__all__ == ["ALIGN", "FlatParameters", "flattenable"]
