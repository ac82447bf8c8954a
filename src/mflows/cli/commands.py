"""What each ``mflows`` command does: arguments -> configuration -> :mod:`mflows.experiments`."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from mflows.cli.dimension import run_dimension
from mflows.cli.paper import (
    _SCHEDULE_FLAGS,
    PAPER_FLAGS,
    UNSUPPORTED_FLAGS,
    CLIError,
    resolve_scheme,
)
from mflows.experiments.config import RunConfig, apply_overrides, load_config

__all__ = ["COMMANDS", "train_config_from_args"]


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
    from mflows import experiments as runs

    config = train_config_from_args(args)
    run_dir = runs.train_run(config, args.out, progress=not args.quiet, overwrite=args.overwrite)
    print(f"trained {config.model.kind} ({config.training.algorithm}) on {config.data.name}")
    print(f"run directory: {run_dir}")
    print(f"next: mflows evaluate {run_dir}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mflows import experiments as runs

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
    from mflows import experiments as runs

    if args.num <= 0:
        raise CLIError(f"-n must be a positive number of samples, got {args.num}")
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    if args.theta is not None and not all(math.isfinite(t) for t in args.theta):
        raise CLIError(f"--theta must be finite numbers, got {' '.join(map(str, args.theta))}")
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


def _cmd_data(args: argparse.Namespace) -> int:
    from mflows import experiments as runs

    if args.data_command == "list":
        for name in runs.dataset_names():
            print(name)
        return 0
    if args.data_command == "describe":
        print(runs.describe_dataset(args.name, data_dir=args.data_dir))
        return 0
    raise CLIError("missing action: use `mflows data list` or `mflows data describe NAME`")


def _cmd_demo(args: argparse.Namespace) -> int:
    from mflows import experiments as runs

    result = runs.run_demo(args.out, quick=args.quick, progress=not args.quiet, device=args.device)
    print(runs.format_metrics(result.metrics))
    print(f"report: {result.report}")
    return 0


#: command name -> function(args) -> exit status.
COMMANDS = {
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "sample": _cmd_sample,
    "data": _cmd_data,
    "demo": _cmd_demo,
    "dimension": run_dimension,
}
