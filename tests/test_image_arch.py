"""The image architecture: pixel preprocessing, linear layers across scales before the
projection to u, convolutional encoder/decoder, data-dependent ActNorm start, random flips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian

import mflows
from mflows.conv_nets import ConvDecoder, ConvEncoder, conv_stages
from mflows.errors import InvalidArgumentError
from mflows.models import load, make_model
from mflows.training.trainer import compute_losses
from mflows.transforms.images import (
    ActNorm,
    MultiscaleFlow,
    PartialLinear,
    PixelLogit,
    PixelScaling,
    init_actnorm,
    make_image_flow,
    multiscale_subset,
)

F64 = {"dtype": torch.float64}
KINDS = ("af", "pie", "mflow", "emflow", "pae")
#: a small image architecture: fast, but every image piece present.
SMALL = {
    "levels": 2,
    "steps_per_level": 1,
    "inner_layers": 2,
    "hidden_features": 16,
    "num_blocks": 1,
    "encoder_hidden_features": 16,
    "encoder_num_blocks": 1,
    "decoder_hidden_features": 16,
    "decoder_num_blocks": 1,
    "image_options": {"hidden_channels": 8},
}
#: the training algorithm of each kind in the short training check.
WEIGHTS = {
    "af": {"nll": 1.0},
    "pie": {"nll": 1.0},
    "mflow": {"mse": 1.0},
    "emflow": {"mse": 1.0},
    "pae": {"mse": 1.0},
}


def small(kind: str, **extra) -> dict:
    from mflows.models import ARCHITECTURE_KEYS

    return {k: v for k, v in {**SMALL, **extra}.items() if k in ARCHITECTURE_KEYS[kind]}


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Blurred noise in [0, 256): random low-frequency RGB images (dequantised-like values)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=gen)
    x = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 255.0 + torch.rand(x.shape, generator=gen)).clamp(0.0, 255.999)


def perturb(module: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def autograd_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of a flat map (B, d) -> (B, d) row by row, from the full autograd Jacobian."""
    out = []
    for row in x:
        jac = jacobian(lambda r: fn(r[None])[0], row)
        out.append(torch.linalg.slogdet(jac).logabsdet)
    return torch.stack(out)


# ------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("layer", [PixelScaling(), PixelLogit()], ids=["scale", "logit"])
def test_preprocessing_inverse_and_logdet_match_autograd(layer):
    x = torch.rand(3, 48, **F64) * 256
    y, ld = layer(x)
    back, ld_inv = layer.inverse(y)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(ld_inv, -ld)
    torch.testing.assert_close(ld, autograd_logdet(lambda v: layer(v)[0], x))
    assert ld.shape == (3,)


@pytest.mark.parametrize("layer", [PixelScaling(), PixelLogit()], ids=["scale", "logit"])
def test_preprocessing_keeps_a_normalised_density_in_pixel_space(layer):
    """N(pre(x)) |pre'(x)| integrates to 1 over the layer's pixel domain (1-D quadrature)."""
    if isinstance(layer, PixelLogit):
        margin = layer.alpha * layer.levels / (1 - 2 * layer.alpha)
        lo, hi = -margin, layer.levels + margin
    else:
        lo, hi = -6000.0, 6000.0  # y = x / 256 - 1/2: +-23 standard deviations
    grid = torch.linspace(lo, hi, 400_001, **F64)[1:-1]
    y, ld = layer(grid[:, None])
    density = torch.exp(-0.5 * y[:, 0] ** 2 - 0.5 * math.log(2 * math.pi) + ld)
    integral = torch.trapezoid(density, grid)
    assert abs(integral.item() - 1.0) < 1e-4


def test_af_log_prob_is_the_pixel_space_density():
    """AF with the logit layer: log p(x) = log N(f(x)) + log|det J_f(x)|, J_f by autograd."""
    model = make_model("af", (3, 4, 4), seed=0, preprocessing="logit", **small("af")).double()
    perturb(model)
    x = smooth_images(2, 4).double()
    z = model.outer(x.reshape(2, -1))[0]
    ref = -0.5 * (z**2).sum(-1) - 24 * math.log(2 * math.pi)
    ref = ref + autograd_logdet(lambda v: model.outer(v)[0], x.reshape(2, -1))
    torch.testing.assert_close(model.log_prob(x), ref)


def test_preprocessing_options_change_the_first_layer_only():
    x = smooth_images(2, 8)
    for name, kind in (("scale", PixelScaling), ("logit", PixelLogit)):
        model = make_model("mflow", (3, 8, 8), 2, seed=0, preprocessing=name, **small("mflow"))
        assert isinstance(model.outer.transforms[0], kind)
        u = model.encode(x)
        torch.testing.assert_close(model.encode(model.decode(u)), u, rtol=1e-4, atol=1e-4)
    bare = make_model("af", (3, 8, 8), seed=0, preprocessing="none", **small("af"))
    assert isinstance(bare.outer, MultiscaleFlow)
    with pytest.raises(InvalidArgumentError, match="preprocessing"):
        make_model("af", (3, 8, 8), preprocessing="glow")


# ---------------------------------------------------------- linear layers before projection
def test_subset_takes_more_channels_on_coarser_levels():
    flow = make_image_flow((3, 16, 16), levels=2, steps_per_level=1, hidden_channels=4)
    index = multiscale_subset(flow, 2)
    # output: final block 24 x 4 x 4 (level 1), then the factored 6 x 8 x 8 (level 0)
    assert index.numel() == 4 * 16 + 2 * 64
    torch.testing.assert_close(index[:64], torch.arange(64))  # deepest block first
    torch.testing.assert_close(index[64:], torch.arange(384, 384 + 128))
    assert multiscale_subset(flow, 2, min_features=300).numel() >= 300
    assert multiscale_subset(flow, 1, min_features=10_000).numel() == flow.features


def test_partial_linear_inverse_logdet_and_vmap():
    index = torch.tensor([5, 0, 7, 2, 9])
    layer = PartialLinear(12, index, num_layers=2).double()
    x = torch.randn(4, 12, **F64)
    y, ld = layer(x)
    torch.testing.assert_close(y[:, :5], x[:, index])  # identity at init: subset to the front
    perturb(layer, 0.3)
    y, ld = layer(x)
    back, ld_inv = layer.inverse(y)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(ld_inv, -ld)
    torch.testing.assert_close(ld, autograd_logdet(lambda v: layer(v)[0], x))
    torch.testing.assert_close(
        ld_inv, autograd_logdet(lambda v: layer.inverse(v)[0], y), rtol=1e-6, atol=1e-8
    )
    per_sample = torch.func.vmap(torch.func.jacfwd(lambda r: layer.inverse(r[None])[0][0]))(y)
    torch.testing.assert_close(
        per_sample[0], jacobian(lambda r: layer.inverse(r[None])[0][0], y[0])
    )


@pytest.mark.parametrize("kind", ["pie", "mflow", "emflow"])
def test_manifold_models_mix_scales_before_the_projection(kind):
    model = make_model(kind, (3, 8, 8), 2, seed=0, **small(kind))
    last = model.outer.transforms[-1]
    assert isinstance(last, PartialLinear) and len(last.layers) == 2
    off = make_model(kind, (3, 8, 8), 2, seed=0, image_linear_layers=0, **small(kind))
    assert not any(isinstance(m, PartialLinear) for m in off.modules())
    assert last.mixed >= 2


def test_pie_log_prob_with_the_linear_layers_matches_autograd():
    model = make_model("pie", (3, 4, 4), 3, seed=0, **small("pie")).double()
    perturb(model)
    x = smooth_images(2, 4).double()
    z = model.outer(x.reshape(2, -1))[0]
    eps = model.epsilon
    ref = (
        model.latent_log_prob(z[:, :3])
        - 0.5 * (z[:, 3:] / eps).pow(2).sum(-1)
        - 45 * (0.5 * math.log(2 * math.pi) + math.log(eps))
        + autograd_logdet(lambda v: model.outer(v)[0], x.reshape(2, -1))
    )
    torch.testing.assert_close(model.log_prob(x), ref)


# ------------------------------------------------------------------ conv encoder / decoder
@pytest.mark.parametrize(("size", "stages"), [(16, 2), (32, 3), (64, 4), (4, 0), (6, 1)])
def test_conv_nets_shapes(size, stages):
    assert conv_stages(size, size) == stages
    enc = ConvEncoder((3, size, size), 5, channels=16, num_blocks=1, context_features=2)
    dec = ConvDecoder(5, (3, size, size), channels=16, num_blocks=1, preprocessing=PixelScaling())
    x = torch.rand(2, 3 * size * size) * 256
    u = enc(x, torch.zeros(2, 2))
    assert u.shape == (2, 5)
    out = dec(u)
    assert out.shape == (2, 3 * size * size)
    with pytest.raises(ValueError, match="context"):
        enc(x)
    # the decoder's preprocessing maps its raw output back to pixels
    raw = ConvDecoder(5, (3, size, size), channels=16, num_blocks=1)
    raw.load_state_dict({k: v for k, v in dec.state_dict().items()})
    torch.testing.assert_close(out, (raw(u) + 0.5) * 256)


def test_image_encoders_are_convolutional():
    emf = make_model("emflow", (3, 16, 16), 2, seed=0, **small("emflow"))
    pae = make_model("pae", (3, 16, 16), 2, seed=0, **small("pae"))
    assert isinstance(emf.encoder, ConvEncoder)
    assert isinstance(pae.encoder, ConvEncoder) and isinstance(pae.decoder, ConvDecoder)
    mlp = make_model("pae", (3, 16, 16), 2, seed=0, image_encoder="mlp", **small("pae"))
    assert not isinstance(mlp.encoder, ConvEncoder)
    tabular = make_model("pae", 5, 2, seed=0)  # vector data keep the residual MLPs
    assert not isinstance(tabular.encoder, ConvEncoder)


# -------------------------------------------------------------------- every kind, 3 sizes
@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("kind", KINDS)
def test_forward_backward_and_shapes(kind, size):
    model = make_model(kind, (3, size, size), None if kind == "af" else 2, seed=0, **small(kind))
    x = smooth_images(2, size)
    weights = {"nll": 1.0} if kind in ("af", "pie") else {"mse": 1.0, "latent_nll": 1.0}
    loss = compute_losses(model, x, None, None, weights)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        u = model.encode(x)
        assert u.shape == (2, 3 * size * size if kind == "af" else 2)
        assert model.decode(u).shape == (2, 3, size, size)
        assert model.sample(2).shape == (2, 3, size, size)


@pytest.mark.parametrize("kind", KINDS)
def test_a_few_steps_decrease_the_loss_at_16px(kind):
    torch.manual_seed(0)
    model = make_model(kind, (3, 16, 16), None if kind == "af" else 2, seed=0, **small(kind))
    x = smooth_images(32, 16, seed=1)
    init_actnorm(model, x)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = compute_losses(model, x, None, None, WEIGHTS[kind])["loss"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # steadily down: every few steps lower, and by more than 1 % overall (NLLs carry a large
    # constant, so a relative drop of the whole loss is small)
    assert losses[4] < losses[0] and losses[8] < losses[4] and losses[-1] < losses[8], losses
    assert losses[0] - losses[-1] > 0.01 * abs(losses[0]), losses


# ---------------------------------------------------------------------- ActNorm start
def _actnorm_outputs(flow, x):
    seen = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out: seen.append(out[0].detach()))
        for m in flow.modules()
        if isinstance(m, ActNorm)
    ]
    with torch.no_grad():
        flow(x)
    for h in hooks:
        h.remove()
    return seen


def test_init_actnorm_normalises_every_layer_on_the_batch():
    model = make_model("mflow", (3, 8, 8), 2, seed=0, **small("mflow", steps_per_level=2))
    perturb(model.outer, 0.05)
    for m in model.modules():  # the perturbation moved them: back to fresh layers
        if isinstance(m, ActNorm):
            torch.nn.init.zeros_(m.log_scale)
            torch.nn.init.zeros_(m.shift)
    x = smooth_images(64, 8)
    assert init_actnorm(model, x) == 4
    outputs = _actnorm_outputs(model.outer, x.reshape(64, -1))
    assert len(outputs) == 4
    for out in outputs:
        mean, std = out.mean(dim=(0, 2, 3)), out.std(dim=(0, 2, 3), correction=0)
        torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-4, rtol=0)
        torch.testing.assert_close(std, torch.ones_like(std), atol=1e-3, rtol=0)
    assert init_actnorm(model, x) == 0  # already initialised: left alone
    assert init_actnorm(make_model("pae", (3, 8, 8), 2, **small("pae")), x) == 0


def test_fit_starts_actnorm_from_data_once():
    x = smooth_images(40, 8).numpy()
    for data_init in (True, False):  # data_init is the PCA start; ActNorm always starts
        model = make_model("af", (3, 8, 8), seed=0, **small("af"))
        mflows.fit(model, x, epochs=1, lr=1e-9, batch_size=20, progress=False, data_init=data_init)
        first = next(m for m in model.modules() if isinstance(m, ActNorm))
        assert first.log_scale.detach().abs().max().item() > 0.5
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mflows.fit(model, x * 0.5, epochs=1, lr=1e-9, batch_size=20, progress=False)
    for key, value in model.state_dict().items():  # a second fit does not start it again
        torch.testing.assert_close(value, before[key], atol=1e-6, rtol=0)


# ---------------------------------------------------------------------- random flips
def _recorded_batches(monkeypatch, augment):
    from mflows.training import trainer as trainer_module

    calls = []
    original = trainer_module.compute_losses

    def spy(model, x, *args, **kwargs):
        calls.append((model.training, x.detach().clone()))
        return original(model, x, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "compute_losses", spy)
    x = torch.rand(200, 1, 4, 4) * 256  # asymmetric images: a flip is always visible
    model = make_model("af", (1, 4, 4), seed=0, **small("af", levels=1))
    kwargs = {} if augment is None else {"augment": augment}
    mflows.fit(model, x, epochs=1, batch_size=50, progress=False, validation_split=0.25, **kwargs)
    return x, calls


@pytest.mark.parametrize("augment", ["hflip", None])
def test_hflip_flips_about_half_the_training_images_and_no_validation_image(monkeypatch, augment):
    x, calls = _recorded_batches(monkeypatch, augment)
    flat, flipped_flat = x.reshape(200, -1), x.flip(-1).reshape(200, -1)
    train_rows = torch.cat([b for training, b in calls if training]).reshape(-1, 16)
    val_rows = torch.cat([b for training, b in calls if not training]).reshape(-1, 16)
    assert len(train_rows) == 150 and len(val_rows) == 50

    def matches(rows, reference):
        return (rows[:, None, :] == reference[None]).all(-1).any(-1)

    as_is, as_flipped = matches(train_rows, flat), matches(train_rows, flipped_flat)
    assert bool((as_is | as_flipped).all())  # every row is a training image, flipped or not
    fraction = as_flipped.float().mean().item()
    if augment == "hflip":
        assert 0.35 < fraction < 0.65
    else:
        assert fraction == 0.0
    assert bool(matches(val_rows, flat).all())  # validation data never flipped
    assert not bool(matches(val_rows, flipped_flat).any())


def test_hflip_is_refused_for_vectors_and_unknown_augmentations():
    model = make_model("af", 3, seed=0)
    with pytest.raises(InvalidArgumentError, match="augment"):
        mflows.fit(model, np.zeros((10, 3)), augment="hflip", progress=False)
    image = make_model("af", (1, 4, 4), seed=0, **small("af", levels=1))
    with pytest.raises(InvalidArgumentError, match="augment"):
        mflows.fit(image, np.zeros((10, 1, 4, 4)), augment="vflip", progress=False)


# ------------------------------------------------------------- config, save / load
def test_cli_config_builds_the_same_image_model_as_make_model():
    from mflows import experiments as runs
    from mflows.cli import build_parser, train_config_from_args
    from mflows.data import from_arrays

    sets = [
        "model.kind=emflow",
        "model.preprocessing=logit",
        "model.image_linear_layers=1",
        "model.image_linear_channels=3",
        "model.image_encoder=conv",
        "model.levels=1",
        "model.steps_per_level=1",
        "model.encoder_hidden_features=8",
        "training.algorithm=alternating",
        "training.seed=3",
    ]
    argv = ["train", "--out", "unused", "--dataset", "conditional_spherical_gaussian"]
    for item in sets:
        argv += ["--set", item]
    config = train_config_from_args(build_parser().parse_args(argv))
    assert config.model.image_linear_layers == 1 and config.model.preprocessing == "logit"
    dataset = from_arrays(smooth_images(20, 4).numpy(), latent_dim=2)
    built = runs.build_model(config, dataset)
    reference = make_model(
        "emflow",
        (3, 4, 4),
        2,
        seed=3,
        preprocessing="logit",
        image_linear_layers=1,
        image_linear_channels=3,
        image_encoder="conv",
        levels=1,
        steps_per_level=1,
        encoder_hidden_features=8,
    )
    assert built.config == reference.config
    a, b = built.state_dict(), reference.state_dict()
    assert list(a) == list(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize(
    "bad",
    [
        {"image_linear_layers": -1},
        {"image_linear_channels": 0},
        {"image_encoder": "dense"},
        {"preprocessing": 1},
    ],
)
def test_bad_image_options_are_refused(bad):
    with pytest.raises(InvalidArgumentError):
        make_model("emflow", (3, 8, 8), 2, **bad)


def test_save_load_round_trip_and_old_files(tmp_path):
    x = smooth_images(2, 8)
    model = make_model("emflow", (3, 8, 8), 2, seed=0, preprocessing="logit", **small("emflow"))
    perturb(model)
    model.save(tmp_path / "m.pt")
    again = load(tmp_path / "m.pt")
    torch.testing.assert_close(again.encode(x), model.encode(x))
    # a file written before the image options existed: old architecture, loads as it was
    old = make_model(
        "emflow",
        (3, 8, 8),
        2,
        seed=0,
        preprocessing="none",
        image_linear_layers=0,
        image_encoder="mlp",
        **small("emflow"),
    )
    old.save(tmp_path / "old.pt")
    payload = torch.load(tmp_path / "old.pt", weights_only=True)
    for key in ("preprocessing", "image_linear_layers", "image_linear_channels", "image_encoder"):
        payload["config"]["architecture"].pop(key)
    torch.save(payload, tmp_path / "old.pt")
    restored = load(tmp_path / "old.pt")
    torch.testing.assert_close(restored.encode(x), old.encode(x))


def test_conditional_image_models_pass_the_context_to_flow_and_encoder():
    x, ctx = smooth_images(3, 8), torch.randn(3, 1)
    for kind in ("af", "pie", "emflow"):
        extra = {} if kind == "af" else {"conditional_outer": True}
        model = make_model(
            kind, (3, 8, 8), None if kind == "af" else 2, 1, seed=0, **small(kind), **extra
        )
        assert init_actnorm(model, x, ctx) > 0
        perturb(model, 0.1)
        u = model.encode(x, ctx)
        assert not torch.allclose(u, model.encode(x, ctx + 1.0))
        assert model.sample(2, ctx[0]).shape == (2, 3, 8, 8)
