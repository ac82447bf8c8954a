"""Tests of mflows.jacobians against torch.autograd references (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mflows.jacobians import decoder_jacobian, decoder_logdet, logdet_jtj

F64 = {"dtype": torch.float64}


class Decoder(nn.Module):
    """A smooth nonlinear map R^n -> R^d with an optional context, acting on (B, n)."""

    def __init__(self, n: int, d: int, c: int = 0):
        super().__init__()
        self.a = nn.Linear(n + c, 16)
        self.b = nn.Linear(16, d, bias=False)  # every parameter affects J
        self.c = c

    def forward(self, u, context=None):
        h = u if context is None else torch.cat([u, context], -1)
        return self.b(torch.tanh(self.a(h))) + torch.sin(u).sum(-1, keepdim=True)


def reference_jacobian(fn, u, context=None, create_graph=False):
    rows = []
    for b in range(u.shape[0]):
        ctx = None if context is None else context[b : b + 1]
        j = torch.autograd.functional.jacobian(
            lambda ub, ctx=ctx: fn(ub.unsqueeze(0), ctx).reshape(-1),
            u[b],
            create_graph=create_graph,
        )
        rows.append(j)
    return torch.stack(rows)


@pytest.mark.parametrize("mode", ["forward", "reverse", "auto"])
@pytest.mark.parametrize("conditional", [False, True])
def test_decoder_jacobian_matches_autograd(mode, conditional):
    torch.manual_seed(0)
    n, d, c = 3, 7, 2
    dec = Decoder(n, d, c if conditional else 0).double()
    u = torch.randn(5, n, **F64)
    context = torch.randn(5, c, **F64) if conditional else None
    jac = decoder_jacobian(dec, u, context, chunk_size=2, mode=mode)
    assert jac.shape == (5, d, n)
    torch.testing.assert_close(jac, reference_jacobian(dec, u, context))


def test_image_shaped_output_is_flattened():
    torch.manual_seed(1)
    dec = Decoder(2, 12).double()

    def image_decoder(u, context=None):
        return dec(u).reshape(-1, 3, 2, 2)

    u = torch.randn(4, 2, **F64)
    jac = decoder_jacobian(image_decoder, u)
    assert jac.shape == (4, 12, 2)
    torch.testing.assert_close(jac, reference_jacobian(dec, u))


def test_empty_batch():
    dec = Decoder(2, 5).double()
    assert decoder_jacobian(dec, torch.zeros(0, 2, **F64), out_features=5).shape == (0, 5, 2)
    assert decoder_jacobian(dec, torch.zeros(0, 2, **F64)).shape == (0, 5, 2)


@pytest.mark.parametrize("method", ["qr", "cholesky"])
def test_logdet_jtj_matches_slogdet(method):
    torch.manual_seed(2)
    jac = torch.randn(6, 9, 4, **F64)
    expected = torch.linalg.slogdet(jac.mT @ jac).logabsdet
    torch.testing.assert_close(logdet_jtj(jac, method=method), expected)
    square = torch.randn(3, 4, 4, **F64)
    expected = 2 * torch.linalg.slogdet(square).logabsdet
    torch.testing.assert_close(logdet_jtj(square, method=method), expected)


def test_logdet_qr_is_accurate_for_ill_conditioned_float32():
    # cond(J) = 1e5: J^T J has cond 1e10, beyond float32; QR in float32 stays accurate.
    torch.manual_seed(3)
    q1, _ = torch.linalg.qr(torch.randn(12, 4, **F64))
    q2, _ = torch.linalg.qr(torch.randn(4, 4, **F64))
    s = torch.tensor([1.0, 1e-1, 1e-3, 1e-5], **F64)
    jac = (q1 * s) @ q2.T
    exact = 2 * torch.log(s).sum()
    approx = logdet_jtj(jac.float().unsqueeze(0))
    assert approx.dtype == torch.float32
    assert abs(approx.item() - exact.item()) < 1e-2
    # the float64 Cholesky also handles it (and casts back)
    assert abs(logdet_jtj(jac.float().unsqueeze(0), "cholesky").item() - exact.item()) < 1e-2


def test_logdet_rejects_wide_matrices():
    with pytest.raises(ValueError, match="d >= n"):
        logdet_jtj(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="method"):
        logdet_jtj(torch.zeros(2, 4, 3), method="svd")
    with pytest.raises(ValueError, match="mode"):
        decoder_jacobian(Decoder(2, 4), torch.zeros(2, 2), mode="sideways")


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_gradients_reach_parameters(mode):
    torch.manual_seed(4)
    dec = Decoder(3, 6).double()
    u = torch.randn(4, 3, **F64)
    ours = decoder_logdet(dec, u, chunk_size=3, mode=mode).sum()
    grads = torch.autograd.grad(ours, list(dec.parameters()))
    ref_jac = reference_jacobian(dec, u, create_graph=True)
    ref = torch.linalg.slogdet(ref_jac.mT @ ref_jac).logabsdet.sum()
    ref_grads = torch.autograd.grad(ref, list(dec.parameters()))
    torch.testing.assert_close(ours, ref)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("method", ["qr", "cholesky"])
def test_logdet_of_rank_deficient_jacobian_is_minus_inf(method):
    jac = torch.zeros(2, 4, 2, **F64)
    jac[:, 0, 0] = 1.0  # second column zero
    assert torch.isneginf(logdet_jtj(jac, method)).all()
