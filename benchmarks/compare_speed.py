"""Side-by-side speed of this tree against an earlier git revision (same run, interleaved).

The baseline revision's ``src/`` is exported with ``git archive`` into a temporary directory.
One long-lived worker process per version (``PYTHONPATH`` pointing at its ``src``, 1 intra-op
thread) builds the same models from the same seeds; the driver asks the workers in turn for one
timed measurement of each case, alternating which version goes first, and repeats. Reported:
median and spread (min-max) of CPU time and wall time per step, and the baseline/current ratio
of the medians (> 1: the current tree is faster).

Cases (float32, batch 100, context as in the paper's shapes):

* ``alt power``: one alternating M/D training step (a manifold step on the reconstruction MSE
  over the outer-flow parameters, then a density step on the latent NLL over the inner-flow
  parameters) of ``make_model("mflow", 3, 2)`` with outer 5 + inner 5 spline couplings,
  10 bins, tail bound 6, permutations, context 1;
* ``alt 40->14``: the same on d = 40, n = 14 with outer 20 + inner 15 couplings, 11 bins, tail
  bound 10, LU layers, context 2;
* ``AF lik d=3`` / ``AF lik d=40``: one likelihood (NLL) training step of the ambient flow with
  the power / 40-d architectures (10 / 20 couplings);
* ``log_prob 40->14``: one exact ``log_prob`` call (decoder Jacobian included, no gradient) of
  the 40 -> 14 M-flow on 100 samples.

A training step is timed the way the trainer of the baseline does it (``--step trainer``):
zero_grad, losses, a host-synchronised finiteness check of the losses, backward, gradient-norm
clipping at 1 with a host-synchronised finiteness check of the norm, AdamW (torch's default
implementation choice), cosine scheduler step. ``--step lean`` times the same maths with a
foreach AdamW, foreach clipping and no host synchronisation, to show how much of the remaining
time belongs to the trainer rather than to the models. ``--step compiled`` times the current
tree's trainer step with its losses compiled by ``torch.compile`` against the baseline's eager
trainer step. ``--step fit`` times ``mflows.fit`` itself (one epoch of at least 50 batches, no
validation, no standardisation or PCA start, 1 thread) in both versions, and ``--step
fit-compiled`` the current tree's ``fit(..., compile=True)`` against the baseline's ``fit``:
what a user gets. Compilation happens in the warm-up and is reported separately (``warm-up
s``), not in the per-step times.

Usage::

    python benchmarks/compare_speed.py --baseline 67f0105            # writes docs/benchmarks.md
    python benchmarks/compare_speed.py --baseline 67f0105 --repeats 3 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import export_src, replace_marked_block

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
MARKER = "compare_speed"

POWER = {
    "outer_layers": 5,
    "inner_layers": 5,
    "num_bins": 10,
    "tail_bound": 6.0,
    "linear": "permutation",
}
LHC = {
    "outer_layers": 20,
    "inner_layers": 15,
    "num_bins": 11,
    "tail_bound": 10.0,
    "linear": "lu",
}

_AF = {"inner_layers": None}

# name -> (kind, d, n, p, architecture, what, steps per measurement)
CASES: dict[str, tuple[str, int, int, int, dict[str, Any], str, int]] = {
    "alt power": ("mflow", 3, 2, 1, POWER, "alternating", 20),
    "alt 40->14": ("mflow", 40, 14, 2, LHC, "alternating", 4),
    "AF lik d=3": ("af", 3, 3, 1, {**POWER, **_AF, "outer_layers": 10}, "likelihood", 20),
    "AF lik d=40": ("af", 40, 40, 2, {**LHC, **_AF, "outer_layers": 20}, "likelihood", 8),
    "log_prob 40->14": ("mflow", 40, 14, 2, LHC, "log_prob", 3),
}


# --------------------------------------------------------------------------------------------
# worker side (runs inside the version under test)
# --------------------------------------------------------------------------------------------


class _Case:
    def __init__(self, name: str, step: str):
        import torch

        from mflows.models import make_model

        kind, d, n, p, arch, what, steps = CASES[name]
        latent = None if kind == "af" else n
        arch = {k: v for k, v in arch.items() if v is not None}
        self.model = make_model(kind, d, latent, context_dim=p, seed=0, **arch)
        gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(100, d, generator=gen)
        self.c = torch.randn(100, p, generator=gen)
        self.what, self.steps, self.step = what, steps, step
        self.torch = torch
        if what == "alternating":
            groups = [list(self.model.manifold_parameters()), list(self.model.density_parameters())]
        else:
            groups = [list(self.model.parameters())]
        foreach = step == "lean"
        self.groups = groups
        self.optimizers = [
            torch.optim.AdamW(g, lr=1e-3, weight_decay=1e-4, foreach=foreach or None)
            for g in groups
        ]
        self.schedulers = [
            torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10**6) for o in self.optimizers
        ]
        if step == "compiled":
            self._losses = torch.compile(self._losses, dynamic=False)
            self.step = "trainer"
        if step in ("fit", "fit-compiled"):
            self._fit_setup(d, p, what, steps, step == "fit-compiled")

    def _fit_setup(self, d: int, p: int, what: str, steps: int, compiled: bool) -> None:
        """``mflows.fit`` itself, one epoch of at least 50 batches, same maths in both versions
        (no standardisation, no PCA start, 1 thread) where the version has those options."""
        import inspect

        from mflows import fit

        gen = self.torch.Generator().manual_seed(2)
        self.steps = max(5 * steps, 50)  # batches per fit call: the call's own cost amortised
        self.fit_data = (
            self.torch.randn(100 * self.steps, d, generator=gen),
            self.torch.randn(100 * self.steps, p, generator=gen),
        )
        wanted = {
            "standardize": False,
            "data_init": False,
            "threads": 1,
            **({"compile": True} if compiled else {}),
        }
        accepted = inspect.signature(fit).parameters
        if compiled and "compile" not in accepted:
            raise RuntimeError("this version's fit has no compile option")
        self.fit_options = {
            "algorithm": what,
            "epochs": 1,
            "batch_size": 100,
            "lr": 1e-3,
            "validation_split": 0.0,
            "early_stopping": False,
            "progress": False,
            **{k: v for k, v in wanted.items() if k in accepted},
        }
        self.fit = fit
        self.what = "fit"

    def _losses(self, phase: int):
        m, x, c = self.model, self.x, self.c
        if self.what == "likelihood":
            return -m.log_prob(x, c).mean()
        if phase == 0:
            return (x - m.project(x, c)).square().sum(-1).mean()
        with self.torch.no_grad():
            u = m.encode(x, c).detach()
        return -m.latent_log_prob(u, c).mean()

    def _train(self, phase: int) -> None:
        torch = self.torch
        params, opt, sched = self.groups[phase], self.optimizers[phase], self.schedulers[phase]
        self.model.zero_grad(set_to_none=True)
        loss = self._losses(phase)
        if self.step == "trainer":
            values = torch.stack([loss.detach(), loss.detach()])
            if not bool(torch.isfinite(values).all()):
                raise RuntimeError("non-finite loss")
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
            if not bool(torch.isfinite(norm)):
                raise RuntimeError("non-finite norm")
            opt.step()
            sched.step()
            values.tolist()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
            opt.step()
            sched.step()

    def once(self) -> None:
        if self.what == "fit":
            self.fit(self.model, *self.fit_data, **self.fit_options)
            return
        if self.what == "log_prob":
            with self.torch.no_grad():
                self.model.log_prob(self.x, self.c)
        else:
            for phase in range(len(self.groups)):
                self._train(phase)

    def measure(self) -> dict[str, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        calls = 1 if self.what == "fit" else self.steps  # one fit = self.steps batches
        for _ in range(calls):
            self.once()
        return {
            "cpu": (time.process_time() - cpu) / self.steps,
            "wall": (time.perf_counter() - wall) / self.steps,
        }


def worker(step: str) -> None:
    """Answers one JSON line per case name read from stdin."""
    import torch

    torch.set_num_threads(1)
    cases: dict[str, _Case] = {}
    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        warmup = {}
        if name not in cases:
            tic = time.perf_counter()
            cases[name] = _Case(name, step)
            cases[name].once()  # warm-up (lazy init, allocator, compilation)
            cases[name].once()
            warmup = {"warmup": time.perf_counter() - tic}
        print(json.dumps({**cases[name].measure(), **warmup}), flush=True)


# --------------------------------------------------------------------------------------------
# driver side
# --------------------------------------------------------------------------------------------


class _Worker:
    def __init__(self, src: Path, step: str):
        env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--step", step],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def ask(self, case: str) -> dict[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(case + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker died on {case!r}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _fmt(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{1e3 * med:.1f} ({1e3 * min(values):.1f}-{1e3 * max(values):.1f})"


def _rate(values: list[float]) -> str:
    return f"{1.0 / statistics.median(values):.2f}"


def run(
    baseline: str, repeats: int, cases: list[str], steps: list[str]
) -> tuple[list[list[str]], dict]:
    """Measures every case on both versions; returns table rows and the raw results."""
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="mflows-baseline-") as tmp:
        old_src = export_src(baseline, Path(tmp))
        versions = {"baseline": old_src, "current": ROOT / "src"}
        for step in steps:
            # "compiled": the baseline runs its eager trainer step, the current tree compiles
            baseline_step = {"compiled": "trainer", "fit-compiled": "fit"}.get(step, step)
            workers = {
                v: _Worker(src, baseline_step if v == "baseline" else step)
                for v, src in versions.items()
            }
            try:
                for r in range(repeats):
                    for i, case in enumerate(cases):
                        if step != "trainer" and CASES[case][5] == "log_prob":
                            continue
                        order = list(versions) if (r + i) % 2 == 0 else list(versions)[::-1]
                        for v in order:
                            res = workers[v].ask(case)
                            slot = results.setdefault(f"{case}|{step}", {}).setdefault(v, {})
                            for k, val in res.items():
                                slot.setdefault(k, []).append(val)
                        print(f"[{step}] repeat {r + 1}/{repeats} {case}", file=sys.stderr)
            finally:
                for w in workers.values():
                    w.close()
    rows = []
    for key, res in results.items():
        case, step = key.split("|")
        old, new = res["baseline"], res["current"]
        cpu_ratio = statistics.median(old["cpu"]) / statistics.median(new["cpu"])
        wall_ratio = statistics.median(old["wall"]) / statistics.median(new["wall"])
        rows.append(
            [
                case,
                "call" if CASES[case][5] == "log_prob" else step,
                _fmt(old["cpu"]),
                _fmt(new["cpu"]),
                f"{cpu_ratio:.2f}x",
                _fmt(old["wall"]),
                _fmt(new["wall"]),
                f"{wall_ratio:.2f}x",
                f"{_rate(old['wall'])} -> {_rate(new['wall'])}",
                f"{old['warmup'][0]:.1f} / {new['warmup'][0]:.1f}",
            ]
        )
    return rows, results


def _table(rows: list[list[str]]) -> str:
    header = [
        "case",
        "step",
        "baseline CPU ms",
        "current CPU ms",
        "CPU ratio",
        "baseline wall ms",
        "current wall ms",
        "wall ratio",
        "per s (wall)",
        "warm-up s",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _write_doc(text: str) -> None:
    DOC.write_text(replace_marked_block(DOC.read_text(), MARKER, text, append=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="67f0105", help="git revision to compare against")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per case")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    parser.add_argument(
        "--step",
        default="trainer,lean,compiled",
        help="trainer, lean, compiled, fit, fit-compiled (comma-separated)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--json", default=None, help="write raw timings (JSON) here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.step)
        return
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    steps = [s.strip() for s in args.step.split(",") if s.strip()]
    rows, results = run(args.baseline, args.repeats, cases, steps)
    table = _table(rows)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if not args.no_write:
        command = "python benchmarks/compare_speed.py " + " ".join(
            a for a in sys.argv[1:] if a != "--no-write"
        )
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        text = (
            f"`{command.strip()}` (current tree at {rev}{' + edits' if _dirty() else ''}, "
            f"{time.strftime('%Y-%m-%d', time.gmtime())}, 1 thread, {args.repeats} interleaved "
            "repeats; median (min-max) per step; ratio = baseline / current, > 1 is faster):\n\n"
            + table
        )
        _write_doc(text)


def _dirty() -> bool:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "src"], capture_output=True, text=True
    ).stdout
    return bool(out.strip())


if __name__ == "__main__":
    main()
