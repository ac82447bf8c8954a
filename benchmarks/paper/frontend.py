"""Shared code of the thin front-ends ``benchmarks/paper_power.py`` and ``paper_sphere.py``."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["QUICK", "front_end"]

#: ``--quick``: a smoke test of every model at a tiny budget, in a throw-away store.
QUICK = [
    *("--epochs", "2", "--n-train", "2000", "--mcmc-steps", "200"),
    *("--set", "evaluation.n_test=200", "--set", "evaluation.n_generate=1000"),
]


def front_end(experiment: str, argv: Sequence[str] | None = None) -> int:
    """Runs ``python -m benchmarks.paper.run --experiment EXPERIMENT *argv``, then prints the table.

    ``--quick`` runs a smoke test in a temporary store instead of the results store.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.paper import render, run
    from benchmarks.paper.experiments import get_experiment
    from benchmarks.paper.store import Store

    args = list(sys.argv[1:] if argv is None else argv)
    if "--quick" in args:
        args.remove("--quick")
        args = [*QUICK, "--root", tempfile.mkdtemp(prefix=f"paper_{experiment}_"), *args]
    code = run.main(["--experiment", experiment, *args])
    root = args[args.index("--root") + 1] if "--root" in args else None
    store = Store(Path(root)) if root else Store()
    print(render.render_experiment(get_experiment(experiment), store.results(experiment)))
    return code
