"""Command-line interface: ``mflows train | evaluate | sample | data | demo``.

A thin layer over :mod:`mflows.config` and :mod:`mflows.runs`: it parses arguments, turns the
flag names of the original research code (``--algorithm mf --alternate``, ``--modellatentdim``,
``--splinebins``, ...) into typed configuration fields, and reports errors a user can act on as
one line with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mflows.config import ConfigError, RunConfig, apply_overrides, load_config

__all__ = [
    "PAPER_FLAGS",
    "SCHEMES",
    "UNSUPPORTED_FLAGS",
    "build_parser",
    "main",
    "resolve_scheme",
    "train_config_from_args",
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
    "--resume": "interrupted runs resume from their checkpoints",
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

_EPILOG_TRAIN = """\
examples:
  mflows train --dataset power --algorithm mf --alternate --out runs/power-mf
  mflows train --config configs/power_mf_alternating.toml --out runs/p --set training.epochs=5
  mflows train --dataset spherical_gaussian --truelatentdim 2 --datadim 3 --epsilon 0.01 \\
      --algorithm flow --epochs 10 --out runs/sg-af

algorithms (--algorithm [+ schedule flag] -> model kind / training scheme):
{table}

precedence: built-in defaults < --config FILE < flags < --set key=value.
"""


def _scheme_table() -> str:
    lines = []
    for (algorithm, schedule), (kind, training) in SCHEMES.items():
        flag = "" if schedule == "default" else f" --{schedule}"
        lines.append(f"  {'--algorithm ' + algorithm + flag:<30} -> {kind:<7} {training}")
    return "\n".join(lines)


class CLIError(Exception):
    """A command-line error the user can fix; printed as one line, exit status 2."""


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


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def _add_common(parser: argparse.ArgumentParser, *, threads: int | None = None) -> None:
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="torch device (default: cpu)"
    )
    default = "torch's default" if threads is None else str(threads)
    parser.add_argument(
        "--threads",
        type=int,
        default=threads,
        metavar="N",
        help=f"CPU threads of torch (default: {default}; 1 is fastest for small networks on a "
        "busy machine)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The ``mflows`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="mflows",
        formatter_class=_Formatter,
        description=(
            "Manifold-learning flows (Brehmer & Cranmer 2020, arXiv:2003.13913): learn a data\n"
            "manifold and a tractable density on it; train, evaluate and sample models."
        ),
        epilog=textwrap.dedent(
            """\
            examples:
              mflows train --dataset power --algorithm mf --alternate --out runs/power-mf
              mflows evaluate runs/power-mf
              mflows sample runs/power-mf -n 1000 --out samples.npy
              mflows data list
              mflows demo --quick

            run `mflows COMMAND --help` for the options of each command.
            """
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # train ---------------------------------------------------------------------------------
    train = sub.add_parser(
        "train",
        help="train a model and save it in a run directory",
        description=(
            "Build a data set and a model, train it and write model.pt, history.csv and the\n"
            "resolved config.json into the run directory --out. Nothing is left under the\n"
            "final model name if training fails."
        ),
        epilog=_EPILOG_TRAIN.format(table=_scheme_table()),
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    train.add_argument("--out", required=True, type=Path, help="run directory to create")
    train.add_argument("--config", type=Path, help="TOML or JSON config file (see configs/)")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. training.epochs=5 (repeatable)",
    )
    train.add_argument("--dataset", help="data set name (see `mflows data list`)")
    train.add_argument(
        "--algorithm",
        help=f"paper algorithm: {', '.join(PAPER_ALGORITHMS)} (see the table below)",
    )
    train.add_argument("--specified", action="store_true", help="mf only: prescribed chart (FOM)")
    train.add_argument("--alternate", action="store_true", help="alternating M/D (or OT/D)")
    train.add_argument("--sequential", action="store_true", help="sequential M/D training")
    train.add_argument(
        "--scandal",
        nargs="?",
        type=float,
        const=-1.0,
        default=None,
        metavar="WEIGHT",
        help="add the SCANDAL score loss (weight: WEIGHT, else the config's or 1.0)",
    )
    train.add_argument("--data-dir", help="directory of file-backed data sets")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run")
    _add_common(train)
    paper = train.add_argument_group("flags of the original research code")
    for flag, key, kind, help_ in PAPER_FLAGS:
        dest = "paper_" + flag.lstrip("-")
        if kind == "flag":
            paper.add_argument(flag, dest=dest, action="store_true", default=None, help=help_)
        else:
            metavar = {int: "N", float: "X"}.get(kind, "NAME")
            paper.add_argument(
                flag, dest=dest, type=kind, default=None, metavar=metavar, help=f"{help_} ({key})"
            )
    rejected = train.add_argument_group(
        "flags of the original research code that mflows rejects",
        textwrap.fill(" ".join(sorted(UNSUPPORTED_FLAGS)), width=96),
    )
    for flag in UNSUPPORTED_FLAGS:
        rejected.add_argument(
            flag, dest="unsupported_" + flag.lstrip("-"), nargs="?", const=True, default=None,
            help=argparse.SUPPRESS,
        )  # fmt: skip

    # evaluate ------------------------------------------------------------------------------
    evaluate = sub.add_parser(
        "evaluate",
        help="compute metrics, plots and an HTML report for a run",
        description=(
            "Evaluate a trained run (SPEC §7): manifold distance of generated samples,\n"
            "reconstruction error, test log-likelihood (vs the true density), OOD AUC, the\n"
            "posterior over theta by MCMC (MMD vs the true posterior), FID for images.\n"
            "Writes metrics.json, plots/ and report.html into the run directory."
        ),
        epilog=textwrap.dedent(
            """\
            examples:
              mflows evaluate runs/power-mf
              mflows evaluate runs/power-mf --set evaluation.mcmc_steps=500
              mflows evaluate runs/gan2d-mf --inception-weights pt_inception.pth
            """
        ),
        formatter_class=_Formatter,
    )
    evaluate.add_argument("run_dir", type=Path, help="run directory written by `mflows train`")
    evaluate.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an evaluation field, e.g. evaluation.n_generate=1000",
    )
    evaluate.add_argument("--inception-weights", help="local Inception weights file (FID)")
    evaluate.add_argument("--data-dir", help="directory of file-backed data sets")
    _add_common(evaluate)

    # sample --------------------------------------------------------------------------------
    sample = sub.add_parser(
        "sample",
        help="draw samples from a trained run into a .npy file",
        description="Sample from the model of a run and save the array with numpy.save.",
        epilog=textwrap.dedent(
            """\
            examples:
              mflows sample runs/power-mf -n 1000 --out samples.npy
              mflows sample runs/power-mf -n 500 --theta 0.5 --out s.npy
            """
        ),
        formatter_class=_Formatter,
    )
    sample.add_argument("run_dir", type=Path, help="run directory written by `mflows train`")
    sample.add_argument("-n", "--num", type=int, default=1000, help="number of samples")
    sample.add_argument("--out", type=Path, required=True, help="output .npy file")
    sample.add_argument(
        "--theta",
        type=float,
        nargs="+",
        default=None,
        help="parameter point for conditional models (default: the data set's default theta)",
    )
    sample.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sample.add_argument("--data-dir", help="directory of file-backed data sets")
    _add_common(sample)

    # data ----------------------------------------------------------------------------------
    data = sub.add_parser(
        "data",
        help="list and describe data sets",
        description="List the registered data sets or describe one of them.",
        epilog="examples:\n  mflows data list\n  mflows data describe power",
        formatter_class=_Formatter,
    )
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.add_parser(
        "list",
        help="list data set names",
        description="Print one registered data set name per line.",
        formatter_class=_Formatter,
    )
    describe = data_sub.add_parser(
        "describe",
        help="describe one data set",
        description="Print the dimensions, parameters and known truths of a data set.",
        epilog="example:\n  mflows data describe lhc40d --data-dir ~/data/lhc40d",
        formatter_class=_Formatter,
    )
    describe.add_argument("name", help="data set name")
    describe.add_argument("--data-dir", help="directory of file-backed data sets")

    # demo ----------------------------------------------------------------------------------
    demo = sub.add_parser(
        "demo",
        help="train and evaluate an M-flow on the polynomial-surface mixture",
        description=(
            "End-to-end demo: trains an M-flow with alternating M/D training on the\n"
            "polynomial-surface mixture (power), evaluates it (manifold distance,\n"
            "reconstruction error, log-likelihood vs the true density, OOD AUC, posterior\n"
            "MMD) and writes an HTML report. About 4-5 minutes on 2 CPU cores; --quick: seconds."
        ),
        epilog="examples:\n  mflows demo\n  mflows demo --quick --out /tmp/demo",
        formatter_class=_Formatter,
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory")
    demo.add_argument(
        "--quick", action="store_true", help="tiny settings for a smoke test (seconds)"
    )
    _add_common(demo, threads=1)
    return parser


# --------------------------------------------------------------------------------------------
# Arguments -> config
# --------------------------------------------------------------------------------------------


def train_config_from_args(args: argparse.Namespace) -> RunConfig:
    """Resolve the configuration of ``mflows train``: defaults < --config < flags < --set.

    Raises:
        CLIError: for rejected flags or incompatible flag combinations.
        ConfigError: for invalid config files, values or ``--set`` keys.
    """
    for flag in UNSUPPORTED_FLAGS:
        if getattr(args, "unsupported_" + flag.lstrip("-"), None) is not None:
            raise CLIError(
                f"flag {flag} of the original code is not supported: {UNSUPPORTED_FLAGS[flag]}"
            )
    config = load_config(args.config) if args.config is not None else RunConfig()

    sets: list[str] = []
    if args.dataset is not None:
        sets.append(f"data.name={args.dataset}")
    if args.algorithm is not None:
        kind, training = resolve_scheme(
            args.algorithm,
            specified=args.specified,
            alternate=args.alternate,
            sequential=args.sequential,
            scandal=args.scandal is not None,
        )
        sets += [f"model.kind={kind}", f"training.algorithm={training}"]
    elif args.specified or args.alternate or args.sequential:
        flag = next(f for f in _SCHEDULE_FLAGS if getattr(args, f))
        raise CLIError(f"incompatible flags: --{flag} needs --algorithm (e.g. --algorithm mf)")
    if args.scandal is not None:
        weight = args.scandal
        if weight < 0:  # bare --scandal
            weight = config.training.scandal if config.training.scandal is not None else 1.0
        sets.append(f"training.scandal={weight!r}")
    if args.data_dir is not None:
        sets.append(f"data.data_dir={args.data_dir}")
    if args.device is not None:
        sets.append(f"device={args.device}")
    couplings = set()
    for flag, key, _kind, _ in PAPER_FLAGS:
        value = getattr(args, "paper_" + flag.lstrip("-"))
        if value is None:
            continue
        if key == "model.coupling":
            couplings.add(value)
        sets.append(f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}")
    if len(couplings) > 1:
        raise CLIError(
            "incompatible flags: --outertransform and --innertransform must name the same "
            "coupling type in mflows"
        )
    config = apply_overrides(config, sets)
    config = apply_overrides(config, args.overrides)
    return config.validate()


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _cmd_train(args: argparse.Namespace) -> int:
    from mflows import runs

    config = train_config_from_args(args)
    run_dir = runs.train_run(config, args.out, progress=not args.quiet, overwrite=args.overwrite)
    print(f"trained {config.model.kind} ({config.training.algorithm}) on {config.data.name}")
    print(f"run directory: {run_dir}")
    print(f"next: mflows evaluate {run_dir}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mflows import runs

    overrides = list(args.overrides)
    for item in overrides:
        if not item.split("=", 1)[0].strip().startswith("evaluation."):
            raise CLIError(f"evaluate only takes evaluation.* overrides, got {item!r}")
    if args.inception_weights is not None:
        overrides.append(f"evaluation.inception_weights={args.inception_weights}")
    extra = []
    if args.data_dir is not None:
        extra.append(f"data.data_dir={args.data_dir}")
    if args.device is not None:
        extra.append(f"device={args.device}")
    metrics = runs.evaluate_run(args.run_dir, overrides=overrides + extra, progress=not args.quiet)
    print(runs.format_metrics(metrics))
    print(f"report: {Path(args.run_dir) / 'report.html'}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from mflows import runs

    if args.num <= 0:
        raise CLIError(f"-n must be a positive number of samples, got {args.num}")
    overrides = [] if args.data_dir is None else [f"data.data_dir={args.data_dir}"]
    samples = runs.sample_run(
        args.run_dir,
        args.num,
        theta=args.theta,
        seed=args.seed,
        device=args.device,
        overrides=overrides,
    )
    runs.save_array(samples, args.out)
    print(f"wrote {samples.shape[0]} samples of shape {tuple(samples.shape[1:])} to {args.out}")
    return 0


def _cmd_data(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from mflows import runs

    if args.data_command == "list":
        for name in runs.dataset_names():
            print(name)
        return 0
    if args.data_command == "describe":
        print(runs.describe_dataset(args.name, data_dir=args.data_dir))
        return 0
    raise CLIError("missing action: use `mflows data list` or `mflows data describe NAME`")


def _cmd_demo(args: argparse.Namespace) -> int:
    from mflows import runs

    result = runs.run_demo(args.out, quick=args.quick, progress=not args.quiet, device=args.device)
    print(runs.format_metrics(result.metrics))
    print(f"report: {result.report}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mflows`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or usage errors (2)
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    from mflows.runs import RunError

    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        print(
            f"mflows {args.command}: error: --threads must be >= 1, got {threads}", file=sys.stderr
        )
        return 2
    previous_threads = None
    if threads is not None:
        import torch

        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    try:
        if args.command == "train":
            return _cmd_train(args)
        if args.command == "evaluate":
            return _cmd_evaluate(args)
        if args.command == "sample":
            return _cmd_sample(args)
        if args.command == "data":
            return _cmd_data(args, parser)
        if args.command == "demo":
            return _cmd_demo(args)
    except (CLIError, ConfigError, RunError) as error:
        print(f"mflows {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mflows: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous_threads is not None:
            import torch

            torch.set_num_threads(previous_threads)
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover
