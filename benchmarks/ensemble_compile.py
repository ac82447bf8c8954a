"""Whether ``torch.compile`` speeds up the vectorised losses of ``mflows.fit_ensemble``.

Builds K paper power M-flows (``make_power`` of ``benchmarks/ensemble.py``, weights perturbed
away from the identity initialisation), stacks them as ``fit_ensemble`` does, and times the
losses and gradients of one alternating step (manifold phase, then density phase) of all K
members, eager or compiled (``torch.compile`` of the vmapped loss function, inductor). CPU time
per step, 1 thread.

Usage (from the repository root)::

    python benchmarks/ensemble_compile.py --members 5 --mode eager
    python benchmarks/ensemble_compile.py --members 5 --mode compile   # minutes to compile
"""

from __future__ import annotations

import argparse
import time

import torch
from ensemble import make_power

from mflows.training.ensemble import _ordered, _Stack
from mflows.training.phases import schedule_for


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--mode", choices=("eager", "compile"), default="eager")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    models = [make_power(seed) for seed in range(args.members)]
    for model in models:
        for p in model.parameters():
            p.data.add_(0.01 * torch.randn_like(p))
    schedule = schedule_for("alternating", models[0], epochs=1)
    stack = _Stack(models, schedule)
    terms = stack.terms if args.mode == "eager" else torch.compile(stack.terms, dynamic=False)
    k = args.members
    x, context = torch.randn(k, 100, 3), torch.randn(k, 100, 1)
    plan = [
        (_ordered(phase.losses), stack.groups_of(0, i))
        for i, phase in enumerate(schedule.stages[0].phases)
    ]

    def step() -> None:
        for names, groups in plan:
            leaves = [stack.flats[g] for g in groups]
            for leaf in leaves:
                leaf.requires_grad_(True)
            loss = terms(names, x, context).sum()
            torch.autograd.grad(loss, leaves, allow_unused=True)
            for leaf in leaves:
                leaf.requires_grad_(False)

    tic = time.time()
    for _ in range(3):
        step()
    warm = time.time() - tic
    tic = time.process_time()
    for _ in range(args.steps):
        step()
    per_step = (time.process_time() - tic) / args.steps * 1000
    print(f"{args.mode}, K = {k}: warm-up {warm:.1f} s, {per_step:.1f} ms of CPU a step")


if __name__ == "__main__":
    main()
