"""The ``mflows`` argument parser and its subcommands (behaviour: :mod:`mflows.cli.commands`)."""

from __future__ import annotations

import argparse
import re
import textwrap
from pathlib import Path

from mflows.cli.paper import PAPER_ALGORITHMS, PAPER_FLAGS, SCHEMES, UNSUPPORTED_FLAGS

__all__ = ["build_parser"]

_EPILOG_TRAIN = """\
examples:
  mflows train --dataset power --algorithm mf --alternate --out runs/power-mf
  mflows train --data x.npy --latent-dim 2 --epochs 20 --out runs/mine
  mflows train --data x.csv --theta theta.csv --latent-dim 2 --ood-data odd.npy --out runs/c
  mflows train runs/power-mf --epochs 80        (extend a finished run to 80 epochs)
  mflows train --config power_mf_alternating --out runs/p --set training.epochs=5
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


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


def _device(text: str) -> str:
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(
            f"invalid device {text!r}; choose auto, cpu, cuda, cuda:N or mps"
        )
    return text


def _add_common(parser: argparse.ArgumentParser, *, threads: int | None = None) -> None:
    parser.add_argument(
        "--device",
        type=_device,
        default=None,
        metavar="DEVICE",
        help="auto (default: a GPU when present, else cpu), cpu, cuda, cuda:N or mps",
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
              mflows config list
              mflows demo --quick

            run `mflows COMMAND --help` for the options of each command.
            """
        ),
    )
    from mflows import __version__

    parser.add_argument("--version", action="version", version=f"mflows {__version__}")
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
    train.add_argument(
        "run",
        nargs="?",
        type=Path,
        default=None,
        help="a finished run to train further (with --epochs N: N epochs in all)",
    )
    train.add_argument("--out", type=Path, help="run directory to create")
    train.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="same as the positional RUN: extend a finished run (interrupted runs resume by "
        "rerunning the same command)",
    )
    train.add_argument(
        "--config",
        help="TOML or JSON config file, or the name of a shipped config (`mflows config list`)",
    )
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
    train.add_argument(
        "--seed", type=int, metavar="N", help="seed of the training sample, initialisation, "
        "validation split and batching (training.seed and data.seed)",
    )  # fmt: skip
    train.add_argument(
        "--compile",
        action="store_true",
        help="compile the training losses with torch.compile (training.compile): minutes of "
        "compilation up front, ~1.5x faster steps afterwards; pays off on long runs only",
    )
    train.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log the loss curves as TensorBoard events in RUN/tensorboard (needs "
        "`pip install mflows[tensorboard]`)",
    )
    own = train.add_argument_group(
        "your own data (.npy, .npz or .csv files, one row per point)",
        "Splits not given are carved off --data (10% test, 10% validation). Evaluation\n"
        "reports the metrics that need no truth: reconstruction error, log-likelihood and,\n"
        "with --ood-data, the OOD AUC.",
    )
    own.add_argument("--data", metavar="FILE", help="training points (N, d)")
    own.add_argument("--theta", metavar="FILE", help="parameters of each point (N, p)")
    own.add_argument("--test-data", metavar="FILE", help="test points")
    own.add_argument("--test-theta", metavar="FILE", help="parameters of the test points")
    own.add_argument("--ood-data", metavar="FILE", help="out-of-distribution points (OOD AUC)")
    own.add_argument(
        "--latent-dim", type=int, metavar="N", help="manifold dimension of the model (model."
        "latent_dim)",
    )  # fmt: skip
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
            "Evaluate a trained run (protocol: docs/theory.md, Evaluation): manifold distance\n"
            "of generated samples, reconstruction error, test log-likelihood (vs the true\n"
            "density), OOD AUC, the posterior over theta by MCMC (MMD vs the true posterior),\n"
            "FID for images. Runs on your own data (train --data) get the metrics that need\n"
            "no truth: reconstruction error, log-likelihood and OOD AUC (with --ood-data).\n"
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
        help="list and describe data sets; show or clear the simulation caches",
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
    cache = data_sub.add_parser(
        "cache",
        help="show (or --clear) the simulation caches",
        description="List the simulation caches (Lorenz trajectories) with their sizes;\n"
        "--clear deletes them (they are recomputed when needed). Downloaded data files\n"
        "are left alone.",
        formatter_class=_Formatter,
    )
    cache.add_argument("--clear", action="store_true", help="delete the caches")
    cache.add_argument("--data-dir", help="root data directory")

    # config --------------------------------------------------------------------------------
    config = sub.add_parser(
        "config",
        help="list or show the configs shipped with mflows",
        description="The shipped configs (one per experiment of the paper), usable by name:\n"
        "  mflows train --config power_mf_alternating --out runs/p",
        formatter_class=_Formatter,
    )
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION")
    config_sub.add_parser("list", help="list the names", formatter_class=_Formatter)
    show = config_sub.add_parser("show", help="print one config", formatter_class=_Formatter)
    show.add_argument("name", help="config name, e.g. power_mf_alternating")

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

    from mflows.cli.dimension import add_dimension_parser

    add_dimension_parser(sub, _Formatter, _add_common)
    return parser
