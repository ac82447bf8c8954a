"""Exact log_prob of image manifold models with the decoder Jacobian computed in blocks.

The reference everywhere is a dense Jacobian from ``torch.autograd.functional.jacobian`` (plain
reverse-mode autograd, one sample at a time) and log det(J^T J) from ``slogdet`` in float64.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mflows import jacobians
from mflows.errors import InvalidArgumentError
from mflows.jacobians import block_ranges, decoder_jacobian, jacobian_plan
from mflows.models import make_model

SHAPE = (3, 8, 8)
D = 3 * 8 * 8
SMALL = {"levels": 1, "steps_per_level": 2, "image_options": {"hidden_channels": 8}}


def _perturbed(kind: str, n: int, seed: int = 0, **options):
    """A float64 image model whose parameters are moved away from the identity initialisation."""
    model = make_model(kind, SHAPE, n, seed=seed, **{**SMALL, **options}).double()
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def _images(count: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(count, *SHAPE, generator=gen, dtype=torch.float64)


def _dense_jacobian(model, u: torch.Tensor) -> torch.Tensor:
    rows = []
    for ub in u:
        jac = torch.autograd.functional.jacobian(
            lambda v: model._decode(v.unsqueeze(0), None).reshape(-1), ub
        )
        rows.append(jac)
    return torch.stack(rows)  # (B, d, n)


def _reference_log_prob(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        u = model.encode(x)
    jac = _dense_jacobian(model, u)
    sign, logdet = torch.linalg.slogdet(jac.mT @ jac)
    assert bool((sign > 0).all())
    with torch.no_grad():
        return model.latent_log_prob(u) - 0.5 * logdet


def test_block_ranges_cover_and_balance():
    assert block_ranges(0, 3) == []
    for total in (1, 2, 7, 10, 64, 100):
        for size in (1, 3, 4, 7, 64, 1000):
            blocks = block_ranges(total, size)
            assert [i for b in blocks for i in b] == list(range(total))
            lengths = [len(b) for b in blocks]
            assert max(lengths) <= size
            assert max(lengths) - min(lengths) <= 1
            assert len(blocks) == math.ceil(total / size)


def test_default_plan_is_memory_bounded():
    # (3, 64, 64) images: d = 12288; n = 512 is split into blocks that fit the bound.
    samples, block = jacobian_plan(10, 512, 12288, "forward")
    assert samples * block * 12288 <= jacobians.MAX_TANGENT_ENTRIES
    assert block >= 64 and samples == 1
    # n = 64 fits in one block; tabular sizes take all columns and many samples.
    assert jacobian_plan(10, 64, 12288, "forward") == (1, 64)
    samples, block = jacobian_plan(5000, 14, 40, "forward")
    assert block == 14 and samples == jacobians.MAX_TANGENT_ENTRIES // (14 * 40)
    assert jacobian_plan(100, 14, 40, "forward") == (100, 14)
    # explicit values win; reverse mode blocks rows.
    assert jacobian_plan(10, 64, 12288, "forward", chunk_size=3, jacobian_chunk=5) == (3, 5)
    assert jacobian_plan(10, 30, 40, "reverse", jacobian_chunk=7)[1] == 7
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InvalidArgumentError):
            jacobian_plan(10, 4, 8, "forward", jacobian_chunk=bad)
        with pytest.raises(InvalidArgumentError):
            jacobian_plan(10, 4, 8, "forward", chunk_size=bad)


@pytest.mark.parametrize("n", [2, 5, 8])
def test_mflow_log_prob_matches_dense_autograd_for_every_chunking(n):
    model = _perturbed("mflow", n, seed=n)
    x = _images(3, seed=n)
    reference = _reference_log_prob(model, x)
    assert torch.isfinite(reference).all()
    values = []
    with torch.no_grad():
        for chunk in (None, 1, 3, n, n + 5):
            for samples in (None, 1, 2):
                model.jacobian_options["chunk_size"] = samples
                values.append(model.log_prob(x, jacobian_chunk=chunk))
        model.jacobian_options["chunk_size"] = None
        model.batch_chunk_size = 1  # chunking over samples at the public level as well
        values.append(model.log_prob(x, jacobian_chunk=3))
    for value in values:
        torch.testing.assert_close(value, reference, rtol=1e-10, atol=1e-9)
    assert model.jacobian_options["jacobian_chunk"] is None  # the override is per call


def test_channels_last_weights_give_the_same_log_prob():
    # the evaluation tip in docs/guide.md: channels-last convolution weights, same densities
    model = _perturbed("mflow", 3, seed=12)
    x = _images(2, seed=12)
    with torch.no_grad():
        plain = model.log_prob(x)
        last = model.to(memory_format=torch.channels_last).log_prob(x)
    assert any(
        p.dim() == 4
        and p.is_contiguous(memory_format=torch.channels_last)
        and not p.is_contiguous()
        for p in model.parameters()
    )
    torch.testing.assert_close(last, plain, rtol=1e-10, atol=1e-9)


def test_conditional_outer_flow_log_prob_matches_dense_autograd():
    # theta enters the image couplings' conditioners (and so their spline heads)
    n = 3
    model = _perturbed("mflow", n, seed=11, context_dim=2, conditional_outer=True)
    x = _images(2, seed=11)
    theta = torch.tensor([[0.3, -1.2], [1.5, 0.4]], dtype=torch.float64)
    with torch.no_grad():
        u = model.encode(x, theta)
    rows = []
    for ub, tb in zip(u, theta, strict=True):
        rows.append(
            torch.autograd.functional.jacobian(
                lambda v, t=tb: model._decode(v.unsqueeze(0), t.unsqueeze(0)).reshape(-1), ub
            )
        )
    jac = torch.stack(rows)
    with torch.no_grad():
        reference = model.latent_log_prob(u, theta) - 0.5 * torch.logdet(jac.mT @ jac)
        ours = model.log_prob(x, theta)
        other = model.log_prob(x, theta.flip(0))
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-9)
    assert not torch.allclose(ours, other)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_decoder_jacobian_blocks_match_dense(mode, chunk):
    n = 4
    model = _perturbed("mflow", n, seed=7)
    with torch.no_grad():
        u = model.encode(_images(3, seed=7))
    reference = _dense_jacobian(model, u)
    with torch.no_grad():
        jac = decoder_jacobian(model._decode, u, mode=mode, chunk_size=2, jacobian_chunk=chunk)
    assert jac.shape == (3, D, n)
    torch.testing.assert_close(jac, reference, rtol=1e-10, atol=1e-12)


def test_emflow_and_pie_manifold_use_the_blocked_path():
    n = 3
    x = _images(2, seed=3)
    for kind in ("emflow", "pie"):
        model = _perturbed(kind, n, seed=3)
        with torch.no_grad():
            u = model.encode(x)
            jac = _dense_jacobian(model, u)
            reference = model.latent_log_prob(u) - 0.5 * torch.logdet(jac.mT @ jac)
            if kind == "pie":
                ours = [model.log_prob_manifold(x, jacobian_chunk=c) for c in (1, 2, None)]
            else:
                ours = [model.log_prob(x, jacobian_chunk=c) for c in (1, 2, None)]
        for value in ours:
            torch.testing.assert_close(value, reference, rtol=1e-10, atol=1e-9)


def test_log_prob_gradient_does_not_depend_on_chunking():
    n = 4
    model = _perturbed("mflow", n, seed=11)
    x = _images(2, seed=11)
    # reference: dense Jacobian with create_graph, differentiated w.r.t. the parameters
    u = model.encode(x)
    jac = torch.stack(
        [
            torch.autograd.functional.jacobian(
                lambda v: model._decode(v.unsqueeze(0), None).reshape(-1), ub, create_graph=True
            )
            for ub in u
        ]
    )
    ref = (model.latent_log_prob(u) - 0.5 * torch.logdet(jac.mT @ jac)).sum()
    params = list(model.outer.parameters())
    expected = torch.autograd.grad(ref, params, allow_unused=True)
    for chunk in (1, 3, None):
        got = torch.autograd.grad(
            model.log_prob(x, jacobian_chunk=chunk).sum(), params, allow_unused=True
        )
        for g, e in zip(got, expected, strict=True):
            if e is None:
                assert g is None or bool((g == 0).all())
            else:
                torch.testing.assert_close(g, e, rtol=1e-7, atol=1e-8)


def test_blocks_bound_the_directions_pushed_at_once(monkeypatch):
    n, batch = 7, 5
    model = _perturbed("mflow", n, seed=5)
    x = _images(batch, seed=5)
    sizes: list[tuple[int, ...]] = []
    real_vmap = jacobians.vmap

    def recording_vmap(fn, *args, **kwargs):
        batched = real_vmap(fn, *args, **kwargs)

        def call(basis):
            sizes.append(tuple(basis.shape))
            return batched(basis)

        return call

    calls = []
    decode = model._decode

    def counting_decode(v, context):
        calls.append(v.shape[0])
        return decode(v, context)

    monkeypatch.setattr(jacobians, "vmap", recording_vmap)
    monkeypatch.setattr(model, "_decode", counting_decode)
    model.jacobian_options["chunk_size"] = 2
    with torch.no_grad():
        model.log_prob(x, jacobian_chunk=3)
    # 3 sample chunks (2, 2, 1) x 3 column blocks (3, 2, 2): one decoder pass per block
    assert sorted(sizes) == sorted((k, s, n) for s in (2, 2, 1) for k in (3, 2, 2))
    assert len(calls) == 9 and max(calls) <= 2


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    from mflows.models import make_model
    chunk = int(sys.argv[1])
    model = make_model("mflow", (3, 32, 32), 128, seed=0, levels=1, steps_per_level=2)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logp = model.log_prob(x, jacobian_chunk=chunk)
    # VmHWM: peak RSS of this process image (ru_maxrss would include the parent's at exec)
    with open("/proc/self/status") as f:
        hwm = [line for line in f if line.startswith("VmHWM:")][0]
    print(json.dumps({"peak_mb": int(hwm.split()[1]) / 1024, "logp": float(logp[0])}))
    """
)


def _peak(chunk: int) -> dict[str, float]:
    src = Path(__file__).resolve().parent.parent / "src"
    env = {"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(chunk)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_peak_memory_grows_with_the_block_size():
    # (3, 32, 32) image, n = 128, 64 hidden channels: each column pushed at once costs ~0.5 MB
    # of intermediates (measured: 44-68 MB more for all 128 at once than for blocks of 8, ~1 MB
    # a column before the spline head's folded tangents); the rest of the process (torch, the
    # model, first-call setup) is the same in both runs.
    small, full = _peak(8), _peak(128)
    assert abs(small["logp"] - full["logp"]) < 1e-3 * max(1.0, abs(full["logp"]))
    assert full["peak_mb"] - small["peak_mb"] > 25
