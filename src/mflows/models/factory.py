"""Building models by name (:func:`make_model`) and loading saved ones (:func:`load`).

Architecture options (keyword arguments of :func:`make_model`; each kind accepts the subset
listed in ``ARCHITECTURE_KEYS``):

=========================  ==========  ==================================================
key                        default     meaning
=========================  ==========  ==================================================
outer_layers               5 (af: 10)  coupling layers of the outer flow f (tabular data)
inner_layers               5           coupling layers of the inner flow h (0: identity)
hidden_features            100         units of the conditioner residual MLPs
num_blocks                 2           residual blocks of the conditioners
num_bins                   8           bins of the rational-quadratic splines
tail_bound                 3.0         splines are linear outside [-B, B]; 1e-6 <= B <= 1e4
linear                     permutation ``"permutation"``, ``"lu"`` or ``"none"`` between couplings
                           (pie, mflow, (f and h)
                           emflow: lu)
coupling                   spline      ``"spline"`` or ``"affine"``
conditional_outer          pie: True   context also enters f (and e for emflow); af always
                           else False
pie_epsilon                0.01        width of PIE's off-manifold base N(0, eps^2 I)
encoder_hidden_features    100         emflow / pae encoder (residual MLP) units; images:
                                       channels of the conv encoder's lowest resolution
encoder_num_blocks         5           emflow / pae encoder residual blocks
decoder_hidden_features    100         pae decoder units (images: as for the encoder)
decoder_num_blocks         5           pae decoder residual blocks
levels                     2           image outer flow: multi-scale levels
steps_per_level            3           image outer flow: coupling steps per level
image_options              {}          further keyword arguments of ``make_image_flow``
preprocessing              "scale"     images (not fom): fixed first layer of f (and of the
                                       conv nets) on pixel values in [0, 256): ``"scale"``
                                       (x / 256 - 1/2), ``"logit"`` (logit of alpha +
                                       (1 - 2 alpha) x / 256, alpha = 0.05) or ``"none"``
image_linear_layers        2           pie / mflow / emflow images: LU layers mixing a subset
                                       of the coordinates of every scale before the
                                       projection to u (0: none)
image_linear_channels      2           that subset: the first 2^l times this many channels
                                       of level l (raised until it holds >= n coordinates)
image_encoder              "conv"      emflow / pae images: ``"conv"`` (convolutional
                                       encoder, and decoder for pae) or ``"mlp"`` (residual
                                       MLPs on the flattened raw pixels)
chart                      see right   fom: ``"sphere-probit"`` (the default: probit angles,
                                       normalised density, positive at the poles and the
                                       azimuth's wrap), ``"sphere"`` (logit angles),
                                       ``"sphere-angles"`` (raw angles, as the paper),
                                       ``"sphere-stereographic"`` (no seam; centre set by
                                       ``mflows.fit`` from the data) or a chart
seed                       None        seed for initialisation and random permutations
identity_init              True        tabular coupling flows start as the identity map
                                       (zeroed output layers of their conditioners); False:
                                       PyTorch's default initialisation of those layers, a
                                       random start as in the paper's code (needed where the
                                       identity start is a saddle, e.g. the spheres)
standardize                True        (not fom) standardise x: a first layer (x - shift) /
                                       scale of f (pae: around e and g) whose statistics
                                       ``mflows.fit`` sets from the training data
=========================  ==========  ==================================================

Image data (``data_dim=(C, H, W)``) use the pixel preprocessing layer, then ``make_image_flow``
(then, for pie / mflow / emflow, the ``image_linear_layers``) as the outer flow f; the M_e-flow
encoder and the PAE encoder and decoder are the convolutional nets of :mod:`mflows.conv_nets`
(docs/guide.md, "Image models"). Densities stay those of the original pixel values (the
preprocessing log-determinant is part of f). Image models are not standardised (per-pixel
statistics are not wanted; ``standardize`` is recorded as False for them), nor is FOM (its chart
is prescribed in data space).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mflows.errors import CheckpointError, InvalidArgumentError
from mflows.models.ambient import AmbientFlow
from mflows.models.base import FORMAT_NAME, FORMAT_VERSION, Model
from mflows.models.emflow import EMFlow
from mflows.models.mflow import FOM, MFlow
from mflows.models.pae import PAE
from mflows.models.pie import PIE
from mflows.transforms.base import IdentityTransform, Transform

__all__ = ["ARCHITECTURE_KEYS", "KINDS", "default_architecture", "load", "make_model"]

KINDS = ("af", "fom", "pie", "mflow", "emflow", "pae")

_FLOW = {
    "hidden_features": 100,
    "num_blocks": 2,
    "num_bins": 8,
    "tail_bound": 3.0,
    "linear": "permutation",
    "coupling": "spline",
    "seed": None,
    "standardize": True,
    "identity_init": True,
}
_OUTER = {"outer_layers": 5, "levels": 2, "steps_per_level": 3, "image_options": {}}
_INNER = {"inner_layers": 5}
_ENCODER = {"encoder_hidden_features": 100, "encoder_num_blocks": 5}
_DECODER = {"decoder_hidden_features": 100, "decoder_num_blocks": 5}
# image-only options (ignored for vector data); load() maps files without them to the old
# architecture (no preprocessing, no linear layers, MLP nets): _LEGACY_IMAGE.
_PIXELS = {"preprocessing": "scale"}
_PROJECTION = {"image_linear_layers": 2, "image_linear_channels": 2}
_IMAGE_NETS = {"image_encoder": "conv"}
_LEGACY_IMAGE = {"preprocessing": "none", "image_linear_layers": 0, "image_encoder": "mlp"}

_DEFAULTS: dict[str, dict[str, Any]] = {
    "af": {**_FLOW, **_OUTER, **_PIXELS, "outer_layers": 10},
    "fom": {
        **{k: v for k, v in _FLOW.items() if k != "standardize"},
        **_INNER,
        "chart": "sphere-probit",
    },
    # the outer flow of the manifold models needs LU layers to rotate its manifold (and fit's
    # data-aware initialisation starts it at the PCA plane through the first of them).
    "pie": {
        **_FLOW,
        **_OUTER,
        **_INNER,
        **_PIXELS,
        **_PROJECTION,
        "conditional_outer": True,
        "pie_epsilon": 0.01,
        "linear": "lu",
    },
    "mflow": {
        **_FLOW,
        **_OUTER,
        **_INNER,
        **_PIXELS,
        **_PROJECTION,
        "conditional_outer": False,
        "linear": "lu",
    },
    "emflow": {
        **_FLOW,
        **_OUTER,
        **_INNER,
        **_ENCODER,
        **_PIXELS,
        **_PROJECTION,
        **_IMAGE_NETS,
        "conditional_outer": False,
        "linear": "lu",
    },
    "pae": {**_FLOW, **_INNER, **_ENCODER, **_DECODER, **_PIXELS, **_IMAGE_NETS},
}

#: the architecture keys each kind accepts.
ARCHITECTURE_KEYS: dict[str, tuple[str, ...]] = {k: tuple(sorted(v)) for k, v in _DEFAULTS.items()}


def default_architecture(kind: str) -> dict[str, Any]:
    """The default architecture options of a kind (a fresh dict)."""
    _check_kind(kind)
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in _DEFAULTS[kind].items()}


def _check_kind(kind: str) -> None:
    if not isinstance(kind, str) or kind not in KINDS:
        raise InvalidArgumentError(
            f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}"
        )


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def _offset_seed(seed: int | None, offset: int) -> int | None:
    return None if seed is None else int(seed) + offset


def _tabular_flow(
    features: int, num_layers: int, context_features: int, arch: dict[str, Any], offset: int
) -> Transform:
    from mflows.transforms import make_tabular_flow

    return make_tabular_flow(
        features,
        num_layers,
        context_features=context_features,
        hidden_features=arch["hidden_features"],
        num_blocks=arch["num_blocks"],
        num_bins=arch["num_bins"],
        tail_bound=arch["tail_bound"],
        linear=arch["linear"],
        coupling=arch["coupling"],
        seed=_offset_seed(arch["seed"], offset),
        identity_init=arch.get("identity_init", True),
    )


def _inner_flow(latent_dim: int, context_dim: int, arch: dict[str, Any]) -> Transform:
    if arch["inner_layers"] == 0:
        return IdentityTransform()
    return _tabular_flow(latent_dim, arch["inner_layers"], context_dim, arch, 1)


def _standardized(flow: Transform, features: int) -> Transform:
    """``flow`` with a :class:`Standardize` layer in front (data side), flat if composite."""
    from mflows.transforms.base import CompositeTransform
    from mflows.transforms.standardize import Standardize

    layers = list(flow.transforms) if isinstance(flow, CompositeTransform) else [flow]
    return CompositeTransform([Standardize(features), *layers])


def _outer_flow(
    data_shape: tuple[int, ...], context_dim: int, arch: dict[str, Any], latent_dim: int = 0
) -> Transform:
    """f: tabular coupling flow, or for images [preprocessing,] multiscale flow[, linear layers].

    ``latent_dim`` > 0 asks for the image linear layers before the projection to u.
    """
    if len(data_shape) == 1:
        flow = _tabular_flow(data_shape[0], arch["outer_layers"], context_dim, arch, 0)
        return _standardized(flow, data_shape[0]) if arch.get("standardize") else flow
    from mflows.transforms.base import CompositeTransform
    from mflows.transforms.images import (
        PartialLinear,
        make_image_flow,
        make_preprocessing,
        multiscale_subset,
    )

    options = {
        "context_features": context_dim,
        "num_bins": arch["num_bins"],
        "tail_bound": arch["tail_bound"],
        "num_blocks": arch["num_blocks"],
        "seed": arch["seed"],
        **arch["image_options"],
    }
    flow = make_image_flow(data_shape, arch["levels"], arch["steps_per_level"], **options)
    layers: list[Transform] = [flow]
    preprocessing = make_preprocessing(arch.get("preprocessing", "none"))
    if preprocessing is not None:
        layers.insert(0, preprocessing)
    if latent_dim > 0 and arch.get("image_linear_layers", 0) > 0:
        index = multiscale_subset(flow, arch["image_linear_channels"], latent_dim)
        layers.append(PartialLinear(flow.features, index, arch["image_linear_layers"]))
    return flow if len(layers) == 1 else CompositeTransform(layers)


def _image_encoder(
    data_shape: tuple[int, ...], latent_dim: int, context_dim: int, arch: dict[str, Any]
) -> nn.Module:
    from mflows.conv_nets import ConvEncoder
    from mflows.transforms.images import make_preprocessing

    return ConvEncoder(
        data_shape,
        latent_dim,
        arch["encoder_hidden_features"],
        arch["encoder_num_blocks"],
        context_dim,
        make_preprocessing(arch["preprocessing"]),
    )


def _image_decoder(data_shape: tuple[int, ...], latent_dim: int, arch: dict[str, Any]) -> nn.Module:
    from mflows.conv_nets import ConvDecoder
    from mflows.transforms.images import make_preprocessing

    return ConvDecoder(
        latent_dim,
        data_shape,
        arch["decoder_hidden_features"],
        arch["decoder_num_blocks"],
        make_preprocessing(arch["preprocessing"]),
    )


def _mlp(
    in_features: int,
    out_features: int,
    hidden_features: int,
    num_blocks: int,
    context_features: int = 0,
) -> nn.Module:
    from mflows.nets import ResidualMLP

    return ResidualMLP(
        in_features,
        out_features,
        hidden_features=hidden_features,
        num_blocks=num_blocks,
        context_features=context_features,
        zero_init_last=False,  # an encoder / decoder that starts constant would be degenerate
    )


#: integer options and their smallest allowed value.
_INT_MINIMUM = {
    "outer_layers": 1,
    "inner_layers": 0,
    "hidden_features": 1,
    "num_blocks": 1,
    "num_bins": 1,
    "encoder_hidden_features": 1,
    "encoder_num_blocks": 1,
    "decoder_hidden_features": 1,
    "decoder_num_blocks": 1,
    "levels": 1,
    "steps_per_level": 1,
    "image_linear_layers": 0,
    "image_linear_channels": 1,
}

#: string options and their allowed values.
_CHOICES = {
    "linear": ("permutation", "lu", "none"),
    "coupling": ("spline", "affine"),
    "preprocessing": ("scale", "logit", "none"),
    "image_encoder": ("conv", "mlp"),
}

#: positive real options.
_POSITIVE_FLOATS = ("tail_bound", "pie_epsilon")

#: tail bounds the splines evaluate reliably in float32.
_TAIL_BOUND_RANGE = (1e-6, 1e4)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; bools and floats (even 3.0) are refused."""
    if not _is_int(value) or value < minimum:
        raise InvalidArgumentError(f"expected {name} an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_positive_float(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise InvalidArgumentError(f"expected {name} a number > 0 and finite, got {value!r}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise InvalidArgumentError(f"expected {name} > 0 and finite, got {float(value)}")
    return float(value)


def _resolve(kind: str, architecture: dict[str, Any]) -> dict[str, Any]:
    arch = default_architecture(kind)
    unknown = sorted(set(architecture) - set(arch))
    if unknown:
        raise InvalidArgumentError(
            f"unknown architecture option(s) {', '.join(map(repr, unknown))} for kind {kind!r}; "
            f"valid options: {', '.join(ARCHITECTURE_KEYS[kind])}"
        )
    arch.update(architecture)
    for name, minimum in _INT_MINIMUM.items():
        if name in arch:
            arch[name] = _check_int(name, arch[name], minimum)
    for name in _POSITIVE_FLOATS:
        if name in arch:
            arch[name] = _check_positive_float(name, arch[name])
    low, high = _TAIL_BOUND_RANGE
    if not low <= arch["tail_bound"] <= high:
        raise InvalidArgumentError(
            f"expected {low:g} <= tail_bound <= {high:g} (the splines act on [-tail_bound, "
            f"tail_bound] of standardised data; beyond this range they overflow in float32), "
            f"got {arch['tail_bound']:g}"
        )
    if arch["seed"] is not None:
        arch["seed"] = _check_int("seed", arch["seed"], 0)
    if "conditional_outer" in arch and not isinstance(arch["conditional_outer"], (bool, np.bool_)):
        raise InvalidArgumentError(
            f"expected conditional_outer True or False, got {arch['conditional_outer']!r}"
        )
    if "standardize" in arch and not isinstance(arch["standardize"], (bool, np.bool_)):
        raise InvalidArgumentError(
            f"expected standardize True or False, got {arch['standardize']!r}"
        )
    if "standardize" in arch:
        arch["standardize"] = bool(arch["standardize"])
    if "identity_init" in arch:
        if not isinstance(arch["identity_init"], (bool, np.bool_)):
            raise InvalidArgumentError(
                f"expected identity_init True or False, got {arch['identity_init']!r}"
            )
        arch["identity_init"] = bool(arch["identity_init"])
    if "image_options" in arch and not isinstance(arch["image_options"], dict):
        raise InvalidArgumentError(
            f"expected image_options a dict, got {type(arch['image_options']).__name__}"
        )
    for name, choices in _CHOICES.items():
        if name in arch and (not isinstance(arch[name], str) or arch[name] not in choices):
            raise InvalidArgumentError(
                f"{name} must be {' or '.join(map(repr, choices))}, got {arch[name]!r}"
            )
    return arch


def make_model(
    kind: str,
    data_dim: int | tuple[int, ...],
    latent_dim: int | None = None,
    context_dim: int = 0,
    **architecture: Any,
) -> Model:
    """Builds a model by name.

    Args:
        kind: ``"af"``, ``"fom"``, ``"pie"``, ``"mflow"``, ``"emflow"`` or ``"pae"``.
        data_dim: d, or an image shape ``(C, H, W)`` (af, pie, mflow, emflow, pae).
        latent_dim: manifold dimension n; for ``af`` ``None`` or d (its latent space is R^d).
        context_dim: dimension of the conditioning variable theta (0: unconditional).
        **architecture: options listed in the module docstring; unknown keys raise.

    Returns:
        The model, with ``config`` set so that :meth:`Model.save` / :func:`load` round-trip.

    Raises:
        InvalidArgumentError: (a ``ValueError``) unknown kind or option, an option out of its
            range (non-integer sizes, ``tail_bound`` or ``pie_epsilon`` not positive and
            finite, ...), or inconsistent dimensions (``latent_dim != data_dim`` for ``af``).
    """
    _check_kind(kind)
    arch = _resolve(kind, architecture)
    sizes = data_dim if isinstance(data_dim, (list, tuple)) else (data_dim,)
    if len(sizes) not in (1, 3) or not all(_is_int(v) and v >= 1 for v in sizes):
        raise InvalidArgumentError(
            f"expected data_dim a positive integer d or a shape (C, H, W), got {data_dim!r}"
        )
    data_shape = tuple(int(v) for v in sizes)
    data_size = math.prod(data_shape)
    image = len(data_shape) == 3
    model_data_dim: int | tuple[int, ...] = data_shape if image else data_shape[0]
    context_dim = _check_int("context_dim", context_dim, 0)
    if kind == "af":
        if latent_dim is not None and (not _is_int(latent_dim) or latent_dim != data_size):
            raise InvalidArgumentError(
                f"an ambient flow has latent_dim == data_dim == {data_size}; got "
                f"latent_dim={latent_dim!r} (pass None or {data_size})"
            )
        latent_dim = data_size
    elif latent_dim is None or not _is_int(latent_dim) or not 0 < latent_dim <= data_size:
        raise InvalidArgumentError(
            f"expected an integer 0 < latent_dim <= {data_size} for {kind!r}, got {latent_dim!r}"
        )
    latent_dim = int(latent_dim)

    if image and arch.get("standardize"):
        arch["standardize"] = False  # images are not standardised per pixel (module docstring)
    chart = arch.get("chart")
    config_arch = dict(arch)
    if kind == "fom":
        if image:
            raise InvalidArgumentError("fom needs vector data (data_dim an int)")
        if chart in ("sphere", "sphere-probit", "sphere-angles", "sphere-stereographic"):
            from mflows.embeddings import SphereChart, StereographicChart

            if data_size < latent_dim + 1:
                raise InvalidArgumentError(
                    f"the sphere chart needs data_dim >= latent_dim + 1, got d={data_size}, "
                    f"n={latent_dim}"
                )
            if chart == "sphere-stereographic":
                chart = StereographicChart(latent_dim, data_size)
            else:
                squash = "normal" if chart == "sphere-probit" else "logistic"
                chart = SphereChart(
                    latent_dim, data_size, unbounded=chart != "sphere-angles", squash=squash
                )
        elif isinstance(chart, str):
            raise InvalidArgumentError(
                f"unknown chart {chart!r}; use 'sphere', 'sphere-probit', 'sphere-angles', "
                "'sphere-stereographic' or pass a chart object"
            )
        else:
            config_arch["chart"] = f"custom:{type(chart).__module__}.{type(chart).__qualname__}"

    config = {
        "kind": kind,
        "data_dim": list(data_shape) if image else data_shape[0],
        "latent_dim": latent_dim,
        "context_dim": int(context_dim),
        "architecture": config_arch,
    }
    c = int(context_dim)
    with _seeded(arch["seed"]):
        if kind == "af":
            return AmbientFlow(_outer_flow(data_shape, c, arch), model_data_dim, c, config)
        if kind == "fom":
            return FOM(chart, _inner_flow(latent_dim, c, arch), data_size, latent_dim, c, config)
        conv_nets = image and arch.get("image_encoder") == "conv"
        if kind == "pae":
            if conv_nets:
                encoder = _image_encoder(data_shape, latent_dim, 0, arch)
                decoder = _image_decoder(data_shape, latent_dim, arch)
            else:
                encoder = _mlp(
                    data_size,
                    latent_dim,
                    arch["encoder_hidden_features"],
                    arch["encoder_num_blocks"],
                )
                decoder = _mlp(
                    latent_dim,
                    data_size,
                    arch["decoder_hidden_features"],
                    arch["decoder_num_blocks"],
                )
            inner = _inner_flow(latent_dim, c, arch)
            standardizer = None
            if arch["standardize"]:
                from mflows.transforms.standardize import Standardize

                standardizer = Standardize(data_size)
            return PAE(encoder, decoder, inner, model_data_dim, latent_dim, c, config, standardizer)
        outer_context = c if arch["conditional_outer"] else 0
        outer = _outer_flow(data_shape, outer_context, arch, latent_dim)
        inner = _inner_flow(latent_dim, c, arch)
        if kind == "pie":
            return PIE(
                outer,
                inner,
                model_data_dim,
                latent_dim,
                c,
                epsilon=arch["pie_epsilon"],
                conditional_outer=arch["conditional_outer"],
                config=config,
            )
        if kind == "mflow":
            return MFlow(
                outer, inner, model_data_dim, latent_dim, c, arch["conditional_outer"], config
            )
        if conv_nets:
            encoder = _image_encoder(data_shape, latent_dim, outer_context, arch)
        else:
            encoder = _mlp(
                data_size,
                latent_dim,
                arch["encoder_hidden_features"],
                arch["encoder_num_blocks"],
                outer_context,
            )
        return EMFlow(
            outer, encoder, inner, model_data_dim, latent_dim, c, arch["conditional_outer"], config
        )


def _read_model_file(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """The checked payload of a model file, or :class:`CheckpointError` saying what to do."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many kinds for damaged files
        raise CheckpointError(
            f"{path} is not a readable mflows model file (truncated, corrupt or not written by "
            f"Model.save: {type(error).__name__}: {str(error).splitlines()[0][:200]}); "
            "delete it and save or train the model again"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path} is a torch file but not an mflows model file (no format {FORMAT_NAME!r}); "
            "load it with torch.load, or save the model with Model.save"
        )
    version = payload.get("version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has model file format version {version!r}; this mflows reads version "
            f"{FORMAT_VERSION}: load it with the mflows release that wrote it, or retrain"
        )
    missing = [k for k in ("config", "state_dict") if not isinstance(payload.get(k), dict)]
    if missing:
        raise CheckpointError(f"{path} is damaged: missing {', '.join(missing)}; retrain")
    return payload


def load(path: str | Path, map_location: str | torch.device = "cpu", chart: Any = None) -> Model:
    """Loads a model written by :meth:`Model.save`.

    Only plain data are unpickled (``torch.load(weights_only=True)``). A FOM built with a custom
    chart object needs that object again: pass it as ``chart``.

    Args:
        path: the file.
        map_location: device to load the tensors to.
        chart: the chart object of a FOM saved with a custom chart.

    Returns:
        The model in eval mode, with the saved dtype and parameters.

    Raises:
        CheckpointError: the file is missing, not a torch file, truncated or corrupt, not an
            mflows model, or of another format version.
    """
    payload = _read_model_file(Path(path), map_location)
    config = payload["config"]
    architecture = dict(config.get("architecture") or {})
    if config.get("kind") != "fom":
        # files written before standardisation existed hold unstandardised models
        architecture.setdefault("standardize", False)
        # files written before the image options existed hold the old image architecture
        keys = ARCHITECTURE_KEYS.get(config.get("kind"), ())
        for key, value in _LEGACY_IMAGE.items():
            if key in keys:
                architecture.setdefault(key, value)
    if isinstance(architecture.get("chart"), str) and architecture["chart"].startswith("custom:"):
        if chart is None:
            raise InvalidArgumentError(
                f"{path} holds a FOM with a custom chart ({architecture['chart'][7:]}); "
                "pass the chart object: load(path, chart=...)"
            )
        architecture["chart"] = chart
    try:
        model = make_model(
            config["kind"],
            config["data_dim"],
            config["latent_dim"],
            config["context_dim"],
            **architecture,
        )
        dtype = getattr(torch, str(payload.get("dtype", "float32")))
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"unknown dtype {payload.get('dtype')!r}")
        model = model.to(dtype=dtype, device=map_location)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, AttributeError, RuntimeError, ValueError) as error:
        raise CheckpointError(
            f"{path} is damaged: its configuration or weights do not rebuild a model "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); retrain or re-save"
        ) from error
    return model.eval()
