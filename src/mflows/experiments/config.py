"""Typed run configuration: one frozen dataclass per concern.

A run is described by a :class:`RunConfig` made of

- :class:`DataConfig`: which data set, its options and how many samples,
- :class:`ModelConfig`: the model kind (``af``, ``fom``, ``pie``, ``mflow``, ``emflow``, ``pae``)
  and its architecture,
- :class:`TrainingConfig`: the training scheme (``likelihood``, ``alternating``, ``sequential``,
  ``ot``, ``ot-alternating``, plus SCANDAL) and the optimiser settings,
- :class:`EvaluationConfig`: sample sizes and chain lengths of ``mflows evaluate``.

Configurations load from TOML (sections ``[data]``, ``[model]``, ``[training]``,
``[evaluation]`` plus a top-level ``device``) or JSON with the same layout, take
``section.field=value`` overrides that are type-checked against the dataclass fields, and
serialise back to JSON for the run directory::

    config = load_config("power_mf_alternating")  # a shipped config, by name (or a file path)
    config = apply_overrides(config, ["training.epochs=2", "data.n_train=500"])
    config.validate()

Values in files and overrides are converted with the same rules: ``int`` fields take integers,
``float`` fields take integers or floats, ``bool`` fields take ``true``/``false``, optional
fields take ``none``; anything else raises :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mflows import registry
from mflows.errors import ConfigError
from mflows.files import atomic_write

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "ALGORITHMS",
    "COMPATIBLE",
    "KINDS",
    "ConfigError",
    "DataConfig",
    "EvaluationConfig",
    "ModelConfig",
    "RunConfig",
    "TrainingConfig",
    "apply_overrides",
    "config_from_dict",
    "config_names",
    "config_to_dict",
    "load_config",
    "resolve_config_path",
    "save_config",
]

#: Model kinds understood by :func:`mflows.models.make_model` (from :mod:`mflows.registry`).
KINDS = registry.KINDS

#: Training algorithms understood by :func:`mflows.training.fit` (from :mod:`mflows.registry`).
ALGORITHMS = registry.ALGORITHMS

#: Which training algorithms fit which model kind, seen from the model side (derived from
#: :data:`mflows.registry.COMPATIBLE`).
COMPATIBLE: dict[str, tuple[str, ...]] = {k: registry.algorithms_for(k) for k in KINDS}


def _fit_defaults() -> dict[str, Any]:
    """The keyword defaults of :func:`mflows.training.fit`: the source of the training defaults."""
    import inspect

    from mflows.training import fit

    return {
        name: p.default
        for name, p in inspect.signature(fit).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


_FIT = _fit_defaults()

LINEAR_CHOICES = ("permutation", "lu", "none")
COUPLING_CHOICES = ("spline", "affine")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")

#: the data set name of your own data (files in ``data.x_file`` and friends).
ARRAYS_NAME = "arrays"
#: the DataConfig fields that name data files of your own data.
ARRAY_FILE_FIELDS = ("x_file", "theta_file", "x_test_file", "theta_test_file", "x_ood_file")

#: largest sample size a config accepts (data.n_train, evaluation.n_test / n_generate).
MAX_SAMPLES = 10**9
#: seeds must be valid NumPy seeds.
MAX_SEED = 2**32 - 1
#: largest integer any field accepts.
MAX_INT = 2**62


@dataclass(frozen=True)
class DataConfig:
    """Which data set to train on.

    Attributes:
        name: registered data set name (see ``mflows data list``).
        latent_dim: true manifold dimension n for data sets that take it
            (``spherical_gaussian``, ``conditional_spherical_gaussian``; paper flag
            ``--truelatentdim``).
        data_dim: ambient dimension d for data sets that take it (``--datadim``).
        epsilon: off-manifold noise width for the spherical data sets (``--epsilon``).
        n_train: number of training samples (``--samplesize``); None: the data set's full
            training split (10^5 for the simulators).
        data_dir: directory of file-backed data sets (``--data-dir``).
        seed: seed of the simulated training sample.
        x_file: your own data (``name = "arrays"``): a ``.npy``, ``.npz`` or ``.csv`` file of
            ``(N, d)`` points (``--data``); the other splits are carved off it unless given.
        theta_file: parameters of each point, ``(N, p)`` (``--theta``).
        x_test_file: explicit test points (``--test-data``).
        theta_test_file: their parameters (``--test-theta``).
        x_ood_file: out-of-distribution points for the OOD AUC (``--ood-data``).
        size: image side of image data sets that take it (``blobs``: 16, 32 or 64).
        conditional: number of parameters theta of data sets that take it (``blobs``: 0, 1, 2).
        checksums: SHA-256 digests of the files above, ``key:digest`` pairs separated by commas;
            written by ``mflows train`` so that a run refuses data files that changed since.
    """

    name: str = "power"
    latent_dim: int | None = None
    data_dim: int | None = None
    epsilon: float | None = None
    n_train: int | None = None
    data_dir: str | None = None
    seed: int = 0
    x_file: str | None = None
    theta_file: str | None = None
    x_test_file: str | None = None
    theta_test_file: str | None = None
    x_ood_file: str | None = None
    size: int | None = None
    conditional: int | None = None
    checksums: str | None = None

    def files(self) -> dict[str, str]:
        """The data files of your own data, ``{"x_file": path, ...}`` (only those set)."""
        return {
            key: getattr(self, key) for key in ARRAY_FILE_FIELDS if getattr(self, key) is not None
        }

    def options(self) -> dict[str, Any]:
        """Keyword options for :func:`mflows.data.get` (only the ones that are set)."""
        opts = {"n": self.latent_dim, "d": self.data_dim}
        opts["epsilon"] = self.epsilon
        opts["data_dir"] = self.data_dir
        opts["size"] = self.size
        opts["conditional"] = self.conditional
        return {k: v for k, v in opts.items() if v is not None}


@dataclass(frozen=True)
class ModelConfig:
    """Model kind and architecture (docs/theory.md, "Models"); see :mod:`mflows.models.factory`.

    Fields that a kind does not use (e.g. ``encoder_*`` for an M-flow) are ignored for it.
    Architecture fields left at ``None`` take the default of :func:`mflows.models.make_model` for
    the kind (:func:`mflows.models.default_architecture`), so a configured model is exactly the
    model ``make_model`` builds from the same arguments.

    Attributes:
        kind: one of :data:`KINDS`.
        latent_dim: model manifold dimension n (``--modellatentdim``); None takes the data
            set's true manifold dimension.
        outer_layers: coupling layers in the outer flow f (``--outerlayers``).
        inner_layers: coupling layers in the inner flow h (``--innerlayers``; 0: identity).
        hidden_features: hidden units of the conditioner residual MLPs
            (``--outercouplinghidden``).
        num_blocks: residual blocks of the conditioner MLPs (``--outercouplinglayers``).
        num_bins: rational-quadratic spline bins (``--splinebins``).
        tail_bound: spline interval [-B, B], linear tails outside (``--splinerange``).
        linear: linear layers between couplings, ``permutation``, ``lu`` or ``none``
            (``--lineartransform``).
        coupling: ``spline`` or ``affine`` coupling layers (``--outertransform``).
        conditional_outer: whether f sees the context theta (``--conditionalouter``); False
            gives the manifold-independent ("unconditional manifold") variant.
        pie_epsilon: width of the off-manifold base density of PIE (``--pieepsilon``).
        encoder_num_blocks: residual blocks of the M_e-flow / PAE encoder (``--encoderblocks``).
        encoder_hidden_features: hidden units of that encoder (``--encoderhidden``).
        decoder_num_blocks: residual blocks of the PAE decoder (``--decoderblocks``).
        decoder_hidden_features: hidden units of the PAE decoder (``--decoderhidden``).
        levels: levels of the multi-scale image flow (``--levels``).
        steps_per_level: coupling steps per level of the image flow.
        chart: prescribed chart of a FOM (``sphere-probit``: probit angles; ``sphere``: logit
            angles; ``sphere-stereographic``; ``sphere-angles``: raw angles as in the paper);
            None picks the default of ``make_model`` (``sphere-probit``) for the spherical data
            sets.
        preprocessing: images: pixel preprocessing layer, ``scale``, ``logit`` or ``none``.
        image_linear_layers: images (pie, mflow, emflow): invertible linear layers across
            scales before the projection to u (0: none).
        image_linear_channels: images: channels per level those layers mix (times 2^level).
        image_encoder: images (emflow, pae): ``conv`` or ``mlp`` encoder (and PAE decoder).
        identity_init: tabular flows start as the identity (True, the default) or with
            PyTorch's default initialisation of the conditioners' output layers (False, as the
            paper's code).
    """

    kind: str = "mflow"
    latent_dim: int | None = None
    outer_layers: int | None = None
    inner_layers: int | None = None
    hidden_features: int | None = None
    num_blocks: int | None = None
    num_bins: int | None = None
    tail_bound: float | None = None
    linear: str | None = None
    coupling: str | None = None
    conditional_outer: bool | None = None
    pie_epsilon: float | None = None
    encoder_num_blocks: int | None = None
    encoder_hidden_features: int | None = None
    decoder_num_blocks: int | None = None
    decoder_hidden_features: int | None = None
    levels: int | None = None
    steps_per_level: int | None = None
    chart: str | None = None
    standardize: bool | None = None
    identity_init: bool | None = None
    preprocessing: str | None = None
    image_linear_layers: int | None = None
    image_linear_channels: int | None = None
    image_encoder: str | None = None

    def architecture(self) -> dict[str, Any]:
        """The architecture options that are set and that the kind takes (the rest: the
        factory's defaults, :func:`mflows.models.default_architecture`)."""
        from mflows.models import ARCHITECTURE_KEYS

        keys = ARCHITECTURE_KEYS[self.kind]
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name in keys and getattr(self, f.name) is not None
        }


@dataclass(frozen=True)
class TrainingConfig:
    """Training scheme and optimiser; see :func:`mflows.training.fit`.

    Every default except ``algorithm`` is read from the signature of :func:`mflows.training.fit`,
    so an unset field trains exactly as ``fit`` does by default.

    Attributes:
        algorithm: one of :data:`ALGORITHMS`.
        scandal: weight of the SCANDAL score loss; None disables it (``--scandal``).
        epochs: total epochs (split in halves, manifold first, by ``sequential``)
            (``--epochs``).
        batch_size: batch size (``--batchsize``).
        lr: initial learning rate, cosine-annealed per phase (``--lr``).
        weight_decay: AdamW weight decay (``--weightdecay``).
        optimizer: ``adamw`` or ``adam``.
        clip: gradient-norm clipping (``--clip``); None disables it.
        validation_split: fraction held out for validation (``--validationsplit``).
        early_stopping: keep the weights with the best validation loss of each stage.
        patience: stop a stage after this many epochs without improvement; None: never.
        reconstruction_weight: weight of the reconstruction error in simultaneous M-flow
            likelihood training (``--msefactor``).
        alternate: alternating schemes switch phases every ``batch`` or every ``epoch``.
        seed: seed of initialisation, validation split and batching.
        data_init: start the manifold at the PCA plane of the training data (models with LU
            layers in the outer flow; see :func:`mflows.initialization.initialize_from_data`).
        compile: compile the training losses with ``torch.compile`` (``--compile``).
    """

    algorithm: str = "alternating"  # the paper's recommended scheme (fit itself: "likelihood")
    scandal: float | None = None
    epochs: int = _FIT["epochs"]
    batch_size: int = _FIT["batch_size"]
    lr: float = _FIT["lr"]
    weight_decay: float = _FIT["weight_decay"]
    optimizer: str = _FIT["optimizer"]
    clip: float | None = _FIT["clip"]
    validation_split: float = _FIT["validation_split"]
    early_stopping: bool = _FIT["early_stopping"]
    patience: int | None = _FIT["patience"]
    reconstruction_weight: float = _FIT["reconstruction_weight"]
    alternate: str = _FIT["alternate"]
    seed: int = _FIT["seed"]
    data_init: bool = _FIT["data_init"]
    compile: bool = _FIT["compile"]


@dataclass(frozen=True)
class EvaluationConfig:
    """Sample sizes of ``mflows evaluate`` (docs/theory.md, "Evaluation").

    Attributes:
        n_test: test points for reconstruction error, log-likelihood and OOD AUC.
        n_generate: generated samples for the manifold distance (and FID).
        n_observed: i.i.d. observations at theta* for the posterior.
        mcmc_steps: MCMC samples kept per chain.
        mcmc_burn_in: MCMC burn-in steps.
        mcmc_step_size: Gaussian Metropolis step size.
        inception_weights: local file with Inception weights for FID (image data only).
        plot_resolution: grid points per axis of the learned-manifold plot.
        seed: seed of all evaluation randomness.
    """

    n_test: int = 1000
    n_generate: int = 10000
    n_observed: int = 20
    mcmc_steps: int = 5000
    mcmc_burn_in: int = 100
    mcmc_step_size: float = 0.15
    inception_weights: str | None = None
    plot_resolution: int = 60
    seed: int = 1

    def score_options(self) -> Any:
        """The :class:`mflows.evaluation.ScoreOptions` of these settings."""
        from mflows.evaluation.scoring import ScoreOptions

        return ScoreOptions(
            n_test=self.n_test,
            n_generate=self.n_generate,
            n_observed=self.n_observed,
            mcmc_steps=self.mcmc_steps,
            mcmc_burn_in=self.mcmc_burn_in,
            mcmc_step_size=self.mcmc_step_size,
            seed=self.seed,
            inception_weights=self.inception_weights,
        )


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; saved as ``config.json`` in the run directory."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    device: str = "auto"

    def validate(self) -> RunConfig:
        """Check choices and ranges that do not need the data set; return ``self``.

        Refuses unknown choices, algorithms that do not fit the model kind
        (:func:`mflows.registry.check_algorithm`), non-finite floats, negative seeds and sizes
        out of range.

        Raises:
            ConfigError: naming the first invalid field.
        """
        m, t, d, e = self.model, self.training, self.data, self.evaluation
        _choice("model.kind", m.kind, KINDS)
        _choice("training.algorithm", t.algorithm, ALGORITHMS)
        _choice("model.linear", m.linear, LINEAR_CHOICES, optional=True)
        _choice("model.coupling", m.coupling, COUPLING_CHOICES, optional=True)
        check_device_name(self.device)
        if (d.name == ARRAYS_NAME) != (d.x_file is not None):
            raise ConfigError(
                f"data.x_file (your own data) goes with data.name = {ARRAYS_NAME!r}; got "
                f"data.name = {d.name!r} and data.x_file = {d.x_file!r}"
            )
        for key in ARRAY_FILE_FIELDS[1:]:
            if getattr(d, key) is not None and d.x_file is None:
                raise ConfigError(f"data.{key} needs data.x_file (your own data)")
        _choice("training.optimizer", t.optimizer, ("adamw", "adam"))
        _choice("training.alternate", t.alternate, ("batch", "epoch"))
        if t.algorithm not in COMPATIBLE[m.kind]:
            raise ConfigError(
                f"training.algorithm = {t.algorithm!r} does not apply to model.kind = "
                f"{m.kind!r}; valid: {', '.join(COMPATIBLE[m.kind])}"
            )
        for section in SECTIONS:
            for f in dataclasses.fields(getattr(self, section)):
                value = getattr(getattr(self, section), f.name)
                if isinstance(value, float) and not math.isfinite(value):
                    raise ConfigError(f"{section}.{f.name} must be a finite number, got {value}")
                if isinstance(value, int) and not isinstance(value, bool) and value > MAX_INT:
                    raise ConfigError(f"{section}.{f.name} = {value} is too large (max {MAX_INT})")
        positive = {
            "model.outer_layers": m.outer_layers,
            "model.num_bins": m.num_bins,
            "model.hidden_features": m.hidden_features,
            "model.num_blocks": m.num_blocks,
            "model.levels": m.levels,
            "model.steps_per_level": m.steps_per_level,
            "model.tail_bound": m.tail_bound,
            "model.pie_epsilon": m.pie_epsilon,
            "model.encoder_num_blocks": m.encoder_num_blocks,
            "model.encoder_hidden_features": m.encoder_hidden_features,
            "model.decoder_num_blocks": m.decoder_num_blocks,
            "model.decoder_hidden_features": m.decoder_hidden_features,
            "model.latent_dim": m.latent_dim,
            "data.latent_dim": d.latent_dim,
            "data.data_dim": d.data_dim,
            "data.n_train": d.n_train,
            "data.size": d.size,
            "training.epochs": t.epochs,
            "training.batch_size": t.batch_size,
            "training.lr": t.lr,
            "training.patience": t.patience,
            "training.clip": t.clip,
            "evaluation.n_test": e.n_test,
            "evaluation.n_generate": e.n_generate,
            "evaluation.n_observed": e.n_observed,
            "evaluation.mcmc_steps": e.mcmc_steps,
            "evaluation.mcmc_step_size": e.mcmc_step_size,
            "evaluation.plot_resolution": e.plot_resolution,
        }
        for key, value in positive.items():
            if value is not None and not value > 0:
                raise ConfigError(f"{key} must be > 0, got {value!r}")
        non_negative = {
            "training.weight_decay": t.weight_decay,
            "training.reconstruction_weight": t.reconstruction_weight,
            "training.scandal": t.scandal,
            "evaluation.mcmc_burn_in": e.mcmc_burn_in,
            "model.inner_layers": m.inner_layers,
            "data.epsilon": d.epsilon,
            "data.conditional": d.conditional,
            "data.seed": d.seed,
            "training.seed": t.seed,
            "evaluation.seed": e.seed,
        }
        for key, value in non_negative.items():
            if value is not None and value < 0:
                raise ConfigError(f"{key} must be >= 0, got {value!r}")
        for key, value in {"data.n_train": d.n_train, "evaluation.n_test": e.n_test}.items():
            if value is not None and value > MAX_SAMPLES:
                raise ConfigError(f"{key} = {value} is too large (max {MAX_SAMPLES})")
        if e.n_generate > MAX_SAMPLES:
            raise ConfigError(f"evaluation.n_generate = {e.n_generate} is too large")
        for key, value in {"data.seed": d.seed, "training.seed": t.seed}.items():
            if value > MAX_SEED:
                raise ConfigError(f"{key} must be < 2**32, got {value}")
        if e.seed + 100 > MAX_SEED:
            raise ConfigError(f"evaluation.seed must be < 2**32 - 100, got {e.seed}")
        if not 0.0 <= t.validation_split < 1.0:
            raise ConfigError(
                f"training.validation_split must be in [0, 1), got {t.validation_split}"
            )
        if t.scandal is not None and t.algorithm == "ot":
            raise ConfigError(
                "training.scandal needs a likelihood term, which training.algorithm = 'ot' has "
                "not; use 'ot-alternating' or a likelihood scheme"
            )
        return self


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "training": TrainingConfig,
    "evaluation": EvaluationConfig,
}
TOP_LEVEL = ("device",)


def check_device_name(name: str) -> str:
    """Checks the spelling of a device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``).

    Whether the device exists is checked when it is used
    (:func:`mflows.experiments.build.torch_device`).

    Raises:
        ConfigError: for any other name.
    """
    if name in ("auto", "cpu", "cuda", "mps"):
        return name
    if name.startswith("cuda:") and name[5:].isdigit():
        return name
    raise ConfigError(f"device = {name!r} is not valid; choose one of: {', '.join(DEVICE_CHOICES)}")


def _choice(key: str, value: str | None, choices: Iterable[str], optional: bool = False) -> None:
    choices = tuple(choices)
    if optional and value is None:
        return
    if value not in choices:
        raise ConfigError(f"{key} = {value!r} is not valid; choose one of: {', '.join(choices)}")


def _get(config: RunConfig, key: str) -> Any:
    obj: Any = config
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe_type(tp: Any) -> str:
    args = typing.get_args(tp)
    if args:
        return " or ".join("none" if a is type(None) else a.__name__ for a in args)
    return tp.__name__


def _convert(key: str, value: Any, tp: Any, *, from_string: bool) -> Any:
    """Convert ``value`` to the field type ``tp``, raising :class:`ConfigError` on mismatch."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        options = typing.get_args(tp)
        if type(None) in options and (
            value is None or (from_string and str(value).strip().lower() in ("none", "null"))
        ):
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(key, value, option, from_string=from_string)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{key} expects {_describe_type(tp)}, got {value!r}")
    if from_string:
        text = str(value).strip()
        try:
            if tp is bool:
                lowered = text.lower()
                if lowered in ("true", "1", "yes", "on"):
                    return True
                if lowered in ("false", "0", "no", "off"):
                    return False
                raise ValueError(text)
            if tp is int:
                return int(text)
            if tp is float:
                return float(text)
            if tp is str:
                return text
        except ValueError:
            raise ConfigError(f"{key} expects {tp.__name__}, got {value!r}") from None
    else:
        if tp is bool and isinstance(value, bool):
            return value
        if tp is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if tp is str and isinstance(value, str):
            return value
        raise ConfigError(f"{key} expects {tp.__name__}, got {value!r} ({type(value).__name__})")
    raise ConfigError(f"{key}: unsupported field type {tp!r}")  # pragma: no cover


def _section_keys(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _unknown_key(section: str | None, name: str) -> ConfigError:
    if section is None:
        valid = [*SECTIONS, *TOP_LEVEL]
        return ConfigError(f"unknown config key {name!r}; valid top-level keys: {', '.join(valid)}")
    valid = _section_keys(SECTIONS[section])
    return ConfigError(
        f"unknown config key '{section}.{name}'; valid keys in [{section}]: {', '.join(valid)}"
    )


def config_from_dict(
    raw: Mapping[str, Any], base: RunConfig | None = None, *, from_string: bool = False
) -> RunConfig:
    """Build a :class:`RunConfig` from a nested mapping, type-checking every value.

    Args:
        raw: ``{"data": {...}, "model": {...}, "training": {...}, "evaluation": {...},
            "device": ...}``; missing keys keep the values of ``base``.
        base: configuration to start from (defaults: :class:`RunConfig`).
        from_string: parse values from strings (used for command-line overrides).

    Raises:
        ConfigError: for unknown keys or values of the wrong type.
    """
    config = base if base is not None else RunConfig()
    updates: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"[{key}] must be a table of key = value pairs, got {value!r}")
            cls = SECTIONS[key]
            types_ = _field_types(cls)
            section_updates = {}
            for name, item in value.items():
                if name not in types_:
                    raise _unknown_key(key, name)
                section_updates[name] = _convert(
                    f"{key}.{name}", item, types_[name], from_string=from_string
                )
            updates[key] = dataclasses.replace(getattr(config, key), **section_updates)
        elif key in TOP_LEVEL:
            updates[key] = _convert(key, value, str, from_string=from_string)
        else:
            raise _unknown_key(None, key)
    return dataclasses.replace(config, **updates)


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """Nested plain-Python representation (JSON-serialisable) of ``config``."""
    return dataclasses.asdict(config)


def _shipped_configs():
    from importlib import resources

    return resources.files("mflows") / "configs"


def config_names() -> list[str]:
    """Names of the configurations shipped with mflows (``power_mf_alternating``, ...)."""
    return sorted(
        p.name[: -len(".toml")] for p in _shipped_configs().iterdir() if p.name.endswith(".toml")
    )


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config file from a path, or from the name of a shipped config (``power_pae``).

    An existing file wins; otherwise a bare name (no directory part, optionally ending in
    ``.toml``) is looked up among the configurations shipped in the package.

    Raises:
        ConfigError: if neither exists (the message lists close shipped names).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    text = str(name_or_path)
    if path.parent == Path(".") and path.suffix in ("", ".toml"):
        candidate = _shipped_configs() / f"{path.stem}.toml"
        if candidate.is_file():
            return Path(str(candidate))
        import difflib

        close = difflib.get_close_matches(path.stem, config_names(), n=3, cutoff=0.5)
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        raise ConfigError(
            f"config {text!r} is neither a file nor a shipped config name (`mflows config list` "
            f"shows them){hint}"
        )
    raise ConfigError(f"config file {text!r} does not exist")


def load_config(path: str | Path, base: RunConfig | None = None) -> RunConfig:
    """Load a TOML (``.toml``) or JSON (``.json``) run configuration.

    Args:
        path: a file, or the name of a configuration shipped with mflows
            (:func:`config_names`, e.g. ``"power_mf_alternating"``).
        base: configuration to start from.

    Raises:
        ConfigError: if the file is missing, cannot be parsed, or holds invalid keys/values.
    """
    path = resolve_config_path(path)
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(path.read_text())
        else:
            with path.open("rb") as fh:
                raw = tomllib.load(fh)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot parse config file {str(path)!r}: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {str(path)!r}: {error.strerror}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config file {str(path)!r} must hold a table at the top level")
    try:
        return config_from_dict(raw, base)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write ``config`` as JSON, atomically (temporary file, then rename)."""
    atomic_write(path, json.dumps(config_to_dict(config), indent=2, sort_keys=False) + "\n")


def apply_overrides(config: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """Apply ``section.field=value`` overrides (``--set``), type-checked against the fields.

    Example: ``apply_overrides(config, ["training.epochs=2", "model.linear=lu"])``; ``device=cuda``
    sets a top-level key.

    Raises:
        ConfigError: for a malformed override, an unknown key or a value of the wrong type.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if len(parts) == 1 and parts[0] in TOP_LEVEL:
            nested[parts[0]] = value
        elif len(parts) == 2 and parts[0] in SECTIONS:
            if parts[1] not in _section_keys(SECTIONS[parts[0]]):
                raise _unknown_key(parts[0], parts[1])
            nested.setdefault(parts[0], {})[parts[1]] = value
        else:
            valid = ", ".join([*(f"{s}.<key>" for s in SECTIONS), *TOP_LEVEL])
            raise ConfigError(f"unknown override key {key!r}; use one of: {valid}")
    return config_from_dict(nested, config, from_string=True)
