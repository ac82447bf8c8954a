"""Command-line interface: ``mflows train | evaluate | sample | data | demo``.

A thin layer over :mod:`mflows.experiments`: :mod:`mflows.cli.parser` builds the parser,
:mod:`mflows.cli.paper` maps the flag names of the original research code (``--algorithm mf
--alternate``, ``--modellatentdim``, ``--splinebins``, ...) to configuration fields, and
:mod:`mflows.cli.commands` runs each command. :func:`main` reports every error a user can act on
as one line ``mflows COMMAND: error: ...`` naming the file or option, with exit status 2 (1 for a
diverged training run, 130 for Ctrl-C).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from mflows.cli.commands import COMMANDS, train_config_from_args
from mflows.cli.paper import (
    FIELD_FLAGS,
    PAPER_FLAGS,
    SCHEMES,
    UNSUPPORTED_FLAGS,
    CLIError,
    resolve_scheme,
)
from mflows.cli.parser import build_parser
from mflows.errors import MflowsError, TrainingDivergedError

__all__ = [
    "FIELD_FLAGS",
    "PAPER_FLAGS",
    "SCHEMES",
    "UNSUPPORTED_FLAGS",
    "CLIError",
    "build_parser",
    "error_message",
    "main",
    "resolve_scheme",
    "train_config_from_args",
]

_FIELD = re.compile(r"\b((?:data|model|training|evaluation)\.[a-z_]+|device)\b")

#: Python-API wording in application messages -> the command-line wording.
_WORDING = {
    "overwrite=True": "--overwrite",
    "theta must be finite": "--theta must be finite",
    "theta needs": "--theta needs",
    "theta must not be given": "--theta must not be given",
    "to extend it ask for more than": "to extend it pass --epochs greater than",
}


def error_message(error: BaseException) -> str:
    """One line for ``error``, with configuration fields named by their command-line flags."""
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename is not None else ""
        text = f"{error.strerror}{where}"
    else:
        text = str(error) or type(error).__name__
    for api, cli in _WORDING.items():
        text = text.replace(api, cli)
    fields = [m for m in dict.fromkeys(_FIELD.findall(text)) if m in FIELD_FLAGS]
    if fields:
        hints = "; ".join(f"{' / '.join(FIELD_FLAGS[f])} or --set {f}=VALUE" for f in fields)
        text = f"{text} (command line: {hints})"
    return " ".join(text.split())


def _fail(command: str, error: BaseException, status: int) -> int:
    print(f"mflows {command}: error: {error_message(error)}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mflows`` console script; returns the exit status."""
    command = "mflows"
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit_:  # --help (0) or usage errors (2)
            return int(exit_.code or 0)
        if args.command is None:
            parser.print_help()
            return 2
        command = args.command
        threads = getattr(args, "threads", None)
        if threads is not None and threads < 1:
            raise CLIError(f"--threads must be >= 1, got {threads}")
        previous_threads = None
        if threads is not None:
            import torch

            previous_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
        try:
            return COMMANDS[command](args)
        finally:
            if previous_threads is not None:
                import torch

                torch.set_num_threads(previous_threads)
    except TrainingDivergedError as error:
        return _fail(command, error, 1)
    except (CLIError, MflowsError, OSError) as error:
        return _fail(command, error, 2)
    except KeyboardInterrupt:
        print(f"mflows {command}: interrupted", file=sys.stderr)
        return 130
