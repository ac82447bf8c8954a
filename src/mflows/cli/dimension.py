"""``mflows dimension``: estimate the manifold dimension of a data set from one training run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_dimension_parser", "run_dimension", "write_curve_plot"]


def add_dimension_parser(sub: Any, formatter_class: Any, add_common: Any) -> None:
    """Adds the ``dimension`` subcommand to the ``mflows`` subparsers ``sub``."""
    parser = sub.add_parser(
        "dimension",
        help="estimate the manifold dimension n from one training run",
        description=(
            "Trains one M-flow with latent dimension --max-dim whose coordinates are ordered by\n"
            "importance (nested dropout), measures the held-out reconstruction error of the\n"
            "first k coordinates for every k <= --max-dim and picks n by a criterion\n"
            "(threshold, the default: smallest k whose error is below 5 % of the data\n"
            "variance; ratio: largest drop of the error). Prints the curve; --out writes\n"
            "dimension.json and dimension.png there. See docs/guide.md, 'Choosing the\n"
            "manifold dimension'."
        ),
        epilog=(
            "examples:\n"
            "  mflows dimension --dataset spherical_gaussian --option n=2 --max-dim 8\n"
            "  mflows dimension --data x.npy --max-dim 5 --out runs/dim"
        ),
        formatter_class=formatter_class,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", metavar="NAME", help="a registered data set (train split)")
    source.add_argument("--data", type=Path, metavar="X.npy", help="own data, an (N, d) array")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="data set option, e.g. n=3 or d=9 (repeatable)",
    )
    parser.add_argument("--max-dim", type=int, required=True, metavar="K", help="upper bound")
    parser.add_argument(
        "--samples", type=int, default=2000, metavar="N", help="points of --dataset (2000)"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs (default: about 3000 steps)"
    )
    parser.add_argument(
        "--criterion",
        choices=("threshold", "ratio"),
        default="threshold",
        help="(default: threshold)",
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="fraction of the variance (0.05)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR", help="report directory")
    parser.add_argument("--data-dir", help="directory of file-backed data sets")
    add_common(parser, threads=1)


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _load(args: argparse.Namespace) -> np.ndarray:
    from mflows.cli.paper import CLIError

    if args.data is not None:
        x = np.load(args.data, allow_pickle=False)
        if x.ndim != 2:
            raise CLIError(f"--data must hold an (N, d) array, got shape {x.shape}")
        return x.astype(np.float32)
    from mflows import data

    options: dict[str, Any] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise CLIError(f"--option expects KEY=VALUE, got {item!r}")
        options[key] = _value(value)
    if args.data_dir is not None:
        options["data_dir"] = args.data_dir
    return data.get(args.dataset, **options).load("train", args.samples, seed=args.seed).x


def write_curve_plot(result: dict[str, Any], path: Path) -> Path:
    """Writes the relative error curve ``E_k / E_0`` (log scale) with the chosen n as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mflows.files import atomic_path

    ks = np.arange(1, result["max_dim"] + 1)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.semilogy(ks, result["relative_errors"], "o-", color="C0")
    ax.axvline(result["dimension"], color="C3", ls="--", label=f"chosen n = {result['dimension']}")
    ax.set_xlabel("latent coordinates kept, k")
    ax.set_ylabel("held-out error / variance")
    ax.set_xticks(ks)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def run_dimension(args: argparse.Namespace) -> int:
    """The ``mflows dimension`` command."""
    from mflows.cli.paper import CLIError
    from mflows.dimension import estimate_dimension
    from mflows.files import atomic_write

    try:
        x = _load(args)
    except (ValueError, TypeError) as error:  # unknown data set or option
        raise CLIError(str(error)) from error
    options = {} if args.threshold is None else {"threshold": args.threshold}
    try:
        estimate = estimate_dimension(
            x,
            args.max_dim,
            epochs=args.epochs,
            criterion=args.criterion,
            criterion_options=options,
            seed=args.seed,
            progress=not args.quiet,
            device=args.device,
        )
    except ValueError as error:  # bad max_dim, threshold, too few or non-finite points
        raise CLIError(str(error).replace("max_dim", "--max-dim")) from error
    result = estimate.to_dict()
    print(f"{'k':>3}  {'error':>10}  {'error/variance':>14}")
    for k, (e, r) in enumerate(zip(result["errors"], result["relative_errors"]), start=1):
        mark = "  <- n" if k == estimate.dimension else ""
        print(f"{k:>3}  {e:10.4g}  {r:14.4g}{mark}")
    print(f"chosen n = {estimate.dimension} (criterion {estimate.criterion})")
    if args.out is not None:
        result["source"] = str(args.data) if args.data is not None else args.dataset
        atomic_write(args.out / "dimension.json", json.dumps(result, indent=2) + "\n")
        write_curve_plot(result, args.out / "dimension.png")
        print(f"wrote {args.out / 'dimension.json'} and {args.out / 'dimension.png'}")
    return 0
