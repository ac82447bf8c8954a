"""The flags of the original research code: paper algorithms, schedule flags, field flags.

Maps ``--algorithm mf --alternate`` and friends to (model kind, training algorithm), the paper's
option flags (``--modellatentdim``, ``--splinebins``, ...) to configuration fields, and lists the
flags mflows rejects with the reason. :data:`FIELD_FLAGS` is the reverse map used to name the
flag of a configuration field in error messages.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = [
    "FIELD_FLAGS",
    "PAPER_ALGORITHMS",
    "PAPER_FLAGS",
    "SCHEMES",
    "UNSUPPORTED_FLAGS",
    "CLIError",
    "resolve_scheme",
]


#: (paper ``--algorithm``, schedule flag) -> (model kind, training algorithm). The schedule flag
#: is ``default`` (none given), ``specified``, ``alternate`` or ``sequential``.
SCHEMES: dict[tuple[str, str], tuple[str, str]] = {
    ("flow", "default"): ("af", "likelihood"),
    ("pie", "default"): ("pie", "likelihood"),
    ("mf", "default"): ("mflow", "likelihood"),
    ("mf", "specified"): ("fom", "likelihood"),
    ("mf", "alternate"): ("mflow", "alternating"),
    ("mf", "sequential"): ("mflow", "sequential"),
    ("emf", "default"): ("emflow", "likelihood"),
    ("emf", "alternate"): ("emflow", "alternating"),
    ("emf", "sequential"): ("emflow", "sequential"),
    ("gamf", "default"): ("mflow", "ot"),
    ("gamf", "alternate"): ("mflow", "ot-alternating"),
    ("pae", "default"): ("pae", "sequential"),
    ("pae", "sequential"): ("pae", "sequential"),
}

PAPER_ALGORITHMS = tuple(dict.fromkeys(a for a, _ in SCHEMES))
_SCHEDULE_FLAGS = ("specified", "alternate", "sequential")


def _linear(value: str) -> str:
    aliases = {"permutation": "permutation", "lu": "lu", "linear": "lu", "none": "none"}
    if value.lower() not in aliases:
        raise argparse.ArgumentTypeError(
            f"invalid choice {value!r} (choose from permutation, lu, linear, none)"
        )
    return aliases[value.lower()]


def _coupling(value: str) -> str:
    aliases = {"rq-coupling": "spline", "spline": "spline", "affine-coupling": "affine"}
    aliases["affine"] = "affine"
    if value.lower() not in aliases:
        raise argparse.ArgumentTypeError(
            f"invalid choice {value!r}: mflows builds rq-coupling (spline) or affine-coupling "
            "layers; autoregressive and quadratic transforms are not supported"
        )
    return aliases[value.lower()]


#: Flags of the original ``experiments/train.py`` and the config field each one sets:
#: (flag, config key, type or "flag" for store_true, help).
PAPER_FLAGS: tuple[tuple[str, str, Any, str], ...] = (
    ("--truelatentdim", "data.latent_dim", int, "true manifold dimension n of spherical data"),
    ("--datadim", "data.data_dim", int, "ambient dimension d of spherical data"),
    ("--epsilon", "data.epsilon", float, "off-manifold noise of spherical data"),
    ("--samplesize", "data.n_train", int, "number of training samples"),
    ("--modellatentdim", "model.latent_dim", int, "model manifold dimension n"),
    ("--outerlayers", "model.outer_layers", int, "coupling layers in the outer flow f"),
    ("--innerlayers", "model.inner_layers", int, "coupling layers in the inner flow h"),
    ("--lineartransform", "model.linear", _linear, "permutation | lu (alias linear) | none"),
    ("--outertransform", "model.coupling", _coupling, "rq-coupling | affine-coupling"),
    ("--innertransform", "model.coupling", _coupling, "rq-coupling | affine-coupling"),
    ("--outercouplinghidden", "model.hidden_features", int, "hidden units of conditioners"),
    ("--outercouplinglayers", "model.num_blocks", int, "residual blocks of conditioners"),
    ("--splinebins", "model.num_bins", int, "spline bins"),
    ("--splinerange", "model.tail_bound", float, "spline tail bound B (linear outside [-B, B])"),
    ("--conditionalouter", "model.conditional_outer", "flag", "let f see theta (original PIE)"),
    ("--pieepsilon", "model.pie_epsilon", float, "PIE off-manifold base width"),
    ("--encoderblocks", "model.encoder_num_blocks", int, "M_e-flow / PAE encoder blocks"),
    ("--encoderhidden", "model.encoder_hidden_features", int, "encoder hidden units"),
    ("--decoderblocks", "model.decoder_num_blocks", int, "PAE decoder blocks"),
    ("--decoderhidden", "model.decoder_hidden_features", int, "PAE decoder hidden units"),
    ("--levels", "model.levels", int, "levels of the multi-scale image flow"),
    ("--epochs", "training.epochs", int, "training epochs"),
    ("--batchsize", "training.batch_size", int, "batch size (likelihood / MSE phases)"),
    ("--lr", "training.lr", float, "initial learning rate (cosine decay)"),
    ("--msefactor", "training.reconstruction_weight", float, "MSE weight (simultaneous mf)"),
    ("--weightdecay", "training.weight_decay", float, "AdamW weight decay"),
    ("--clip", "training.clip", float, "gradient norm clipping"),
    ("--validationsplit", "training.validation_split", float, "validation fraction"),
    ("--evaluate", "evaluation.n_test", int, "test samples used by `mflows evaluate`"),
    ("--generate", "evaluation.n_generate", int, "generated samples used by `mflows evaluate`"),
    ("--observedsamples", "evaluation.n_observed", int, "observed samples for the posterior"),
)

#: Flags of the original code that mflows does not implement, with the reason / alternative.
UNSUPPORTED_FLAGS: dict[str, str] = {
    "--modelname": "name the run with --out DIR",
    "--dir": "choose the run directory with --out DIR",
    "-i": "set the seed with --set training.seed=N",
    "-c": "pass a config file with --config FILE",
    "--load": "start a new run; interrupted runs resume from their checkpoints",
    "--startepoch": "interrupted runs resume from their checkpoints",
    "--subsets": "alternating training switches phases every batch",
    "--addnllfactor": "simultaneous M-flow training uses --nllfactor and --msefactor",
    "--nopretraining": "pre-/post-training phases of simultaneous training are not implemented",
    "--noposttraining": "pre-/post-training phases of simultaneous training are not implemented",
    "--prepie": "pre-/post-training phases of simultaneous training are not implemented",
    "--prepostfraction": "pre-/post-training phases of simultaneous training are not implemented",
    "--l1": "the reconstruction loss is the squared error",
    "--uvl2reg": "no latent L2 regulariser",
    "--doughl1reg": "no latent L1 regulariser",
    "--pieclip": "the PIE off-manifold density is not clipped",
    "--batchnorm": "conditioners do not use batch normalisation",
    "--intermediatensf": "image M-flows use linear layers before the projection",
    "--linchannelfactor": "not configurable",
    "--dropout": "conditioners have no dropout",
    "--genbatchsize": "Sinkhorn phases use --batchsize",
    "--nllfactor": "the likelihood terms have weight 1 (--msefactor is relative to them)",
    "--sinkhornfactor": "the Sinkhorn divergence has weight 1",
    "--actnorm": "the image flow is set by model.levels and model.steps_per_level only",
    "--linlayers": "the image flow is set by model.levels and model.steps_per_level only",
    "--outercouplingmlp": "conditioners are residual MLPs",
    "--encodermlp": "encoders are residual MLPs",
    "--debug": "use --set or the Python API to inspect training",
}


class CLIError(Exception):
    """A command-line error the user can fix; printed as one line, exit status 2."""


def _field_flags() -> dict[str, tuple[str, ...]]:
    flags: dict[str, list[str]] = {
        "data.name": ["--dataset"],
        "data.data_dir": ["--data-dir"],
        "model.kind": ["--algorithm"],
        "training.algorithm": ["--algorithm"],
        "training.scandal": ["--scandal"],
        "evaluation.inception_weights": ["--inception-weights"],
        "device": ["--device"],
        "model.latent_dim": ["--latent-dim"],
        "training.seed": ["--seed"],
        "data.x_file": ["--data"],
        "data.theta_file": ["--theta"],
        "data.x_test_file": ["--test-data"],
        "data.theta_test_file": ["--test-theta"],
        "data.x_ood_file": ["--ood-data"],
    }
    for flag, key, _type, _help in PAPER_FLAGS:
        flags.setdefault(key, []).append(flag)
    return {k: tuple(v) for k, v in flags.items()}


#: configuration field -> the command-line flags that set it (besides ``--set field=value``).
FIELD_FLAGS: dict[str, tuple[str, ...]] = _field_flags()


def resolve_scheme(
    algorithm: str,
    *,
    specified: bool = False,
    alternate: bool = False,
    sequential: bool = False,
    scandal: bool = False,
) -> tuple[str, str]:
    """Map the paper's ``--algorithm`` and schedule flags to (model kind, training algorithm).

    Raises:
        CLIError: for an unknown algorithm or an incompatible flag combination.
    """
    if algorithm not in PAPER_ALGORITHMS:
        raise CLIError(
            f"unknown algorithm {algorithm!r}; valid algorithms: {', '.join(PAPER_ALGORITHMS)}"
        )
    given = [name for name, on in zip(_SCHEDULE_FLAGS, (specified, alternate, sequential)) if on]
    if len(given) > 1:
        raise CLIError(f"incompatible flags: --{given[0]} and --{given[1]} exclude each other")
    schedule = given[0] if given else "default"
    if (algorithm, schedule) not in SCHEMES:
        valid = [f"--{s}" for a, s in SCHEMES if a == algorithm and s != "default"]
        hint = f"; with {algorithm} use {' or '.join(valid)} or none" if valid else ""
        raise CLIError(f"incompatible flags: --algorithm {algorithm} with --{schedule}{hint}")
    kind, training = SCHEMES[(algorithm, schedule)]
    if scandal and training == "ot":
        raise CLIError(
            "incompatible flags: --scandal needs a likelihood phase; use --algorithm gamf "
            "--alternate"
        )
    return kind, training
