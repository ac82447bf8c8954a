"""What each ``mflows`` command does: arguments -> configuration -> :mod:`mflows.experiments`."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

from mflows.cli.dimension import run_dimension
from mflows.cli.paper import (
    _SCHEDULE_FLAGS,
    PAPER_FLAGS,
    UNSUPPORTED_FLAGS,
    CLIError,
    resolve_scheme,
)

if TYPE_CHECKING:  # pragma: no cover
    from mflows.experiments.config import RunConfig

__all__ = ["COMMANDS", "train_config_from_args"]


def train_config_from_args(args: argparse.Namespace) -> RunConfig:
    """Resolve the configuration of ``mflows train``: defaults < --config < flags < --set.

    Raises:
        CLIError: for rejected flags or incompatible flag combinations.
        ConfigError: for invalid config files, values or ``--set`` keys.
    """
    from mflows.experiments.config import RunConfig, apply_overrides, load_config

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
    sets += _own_data_sets(args)
    if args.latent_dim is not None:
        sets.append(f"model.latent_dim={args.latent_dim}")
    if getattr(args, "compile", False):
        sets.append("training.compile=true")
    if args.seed is not None:
        if args.seed < 0:
            raise CLIError(f"--seed must be >= 0, got {args.seed}")
        sets += [f"training.seed={args.seed}", f"data.seed={args.seed}"]
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


_OWN_DATA = {
    "data": "x_file",
    "theta": "theta_file",
    "test_data": "x_test_file",
    "test_theta": "theta_test_file",
    "ood_data": "x_ood_file",
}


def _own_data_sets(args: argparse.Namespace) -> list[str]:
    """``--set`` items of --data / --theta / ...: absolute paths, so a run can reload them."""
    given = {flag: getattr(args, flag) for flag in _OWN_DATA if getattr(args, flag) is not None}
    if not given:
        return []
    if "data" not in given:
        flag = next(iter(given)).replace("_", "-")
        raise CLIError(f"--{flag} needs --data (your training points)")
    if args.dataset is not None:
        raise CLIError("incompatible flags: --data (your own data) and --dataset")
    sets = ["data.name=arrays"]
    for flag, path in given.items():
        resolved = Path(path).expanduser().resolve()
        if not resolved.is_file():
            raise CLIError(f"--{flag.replace('_', '-')}: no such file: {path}")
        sets.append(f"data.{_OWN_DATA[flag]}={resolved}")
    return sets


def _tensorboard_dir(args: argparse.Namespace, run_dir: Path) -> Path | None:
    """RUN/tensorboard with --tensorboard when tensorboard is installed; one warning if not."""
    if not args.tensorboard:
        return None
    import importlib.util
    import sys

    if importlib.util.find_spec("tensorboard") is None:
        print(
            "mflows train: warning: --tensorboard needs the tensorboard package "
            "(pip install 'mflows[tensorboard]'); training without TensorBoard logs",
            file=sys.stderr,
        )
        return None
    from mflows.experiments.rundir import TENSORBOARD_DIR

    return run_dir / TENSORBOARD_DIR


def _say(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _cmd_train(args: argparse.Namespace) -> int:
    from mflows import experiments as runs

    if args.run is not None or args.resume is not None:
        return _extend(args)
    if args.out is None:
        raise CLIError(
            "--out RUN_DIR is required (or name a finished run to extend: "
            "mflows train RUN --epochs N)"
        )
    config = train_config_from_args(args)
    run_dir = runs.train_run(
        config,
        args.out,
        progress=not args.quiet,
        overwrite=args.overwrite,
        log_dir=_tensorboard_dir(args, Path(args.out)),
        messages=None if args.quiet else _say,
    )
    print(f"trained {config.model.kind} ({config.training.algorithm}) on {config.data.name}")
    print(f"run directory: {run_dir}")
    print(f"next: mflows evaluate {run_dir}")
    return 0


#: train options that may go with extending a run (the rest come from the run's config).
_EXTEND_OK = {"run", "resume", "paper_epochs", "quiet", "threads", "tensorboard", "command"}


def _extend(args: argparse.Namespace) -> int:
    from mflows import experiments as runs

    if args.run is not None and args.resume is not None and args.run != args.resume:
        raise CLIError("give the run to extend once: RUN or --resume RUN")
    run_dir = args.resume if args.resume is not None else args.run
    if args.paper_epochs is None:
        raise CLIError(f"extending {run_dir} needs --epochs N (the new total)")
    others = sorted(
        key
        for key, value in vars(args).items()
        if key not in _EXTEND_OK and value not in (None, False, [])
    )
    if others:
        names = ", ".join("--" + k.removeprefix("paper_").replace("_", "-") for k in others)
        raise CLIError(
            f"extending a run takes only --epochs (and --quiet, --threads, --tensorboard); "
            f"got {names}: the rest comes from {run_dir}/config.json"
        )
    runs.extend_run(
        run_dir,
        args.paper_epochs,
        progress=not args.quiet,
        log_dir=_tensorboard_dir(args, Path(run_dir)),
        messages=None if args.quiet else _say,
    )
    print(f"run directory: {run_dir} (now {args.paper_epochs} epochs)")
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
    if args.data_command == "cache":
        from mflows.experiments.build import cache_files

        files = cache_files(args.data_dir)
        total = sum(p.stat().st_size for p in files if p.is_file())
        for path in files:
            size = path.stat().st_size if path.is_file() else 0
            print(f"{size / 1e6:10.1f} MB  {path}")
        if args.clear:
            for path in files:
                path.unlink(missing_ok=True)
            print(f"removed {len(files)} cache file(s), {total / 1e6:.1f} MB")
        else:
            print(f"{len(files)} cache file(s), {total / 1e6:.1f} MB in all (--clear deletes them)")
        return 0
    raise CLIError(
        "missing action: use `mflows data list`, `mflows data describe NAME` or "
        "`mflows data cache [--clear]`"
    )


def _cmd_config(args: argparse.Namespace) -> int:
    from mflows.experiments.config import config_names, resolve_config_path

    if args.config_command == "list":
        for name in config_names():
            print(name)
        return 0
    if args.config_command == "show":
        print(resolve_config_path(args.name).read_text(), end="")
        return 0
    raise CLIError("missing action: use `mflows config list` or `mflows config show NAME`")


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
    "config": _cmd_config,
    "demo": _cmd_demo,
    "dimension": run_dimension,
}
