"""Benchmark: throughput of the exact M-flow log-likelihood.

Compares ``model.log_prob`` (forward-mode ``vmap(jacfwd)`` decoder Jacobian + float64 Cholesky
log-det, see ``mflows.jacobians``) with the approach of the original research code: fill the
d x n Jacobian with one backward pass per output element of x = g(u), then the same log-det.
Two forms of that loop are timed: "batched" (d backward passes, each summing output i over the
batch, the cheapest form: the samples are independent) and "per element" (one backward pass per
element x[b, i] of the batch output, each sample decoded on its own; timed on 5 samples and
scaled linearly to the batch).

Usage::

    python benchmarks/likelihood.py            # full table
    python benchmarks/likelihood.py --quick    # fewer shapes and repetitions
    python benchmarks/likelihood.py --logdet   # also QR vs float64 Cholesky and jacfwd vs jacrev

Prints markdown tables (samples per second, higher is better).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from mflows import jacobians
from mflows.models import make_model


def per_output_autograd_log_prob(model, x: torch.Tensor) -> torch.Tensor:
    """Reference implementation with one backward pass per output element of g."""
    u = model.encode(x).detach().requires_grad_(True)
    x_rec = model.decode(u).reshape(u.shape[0], -1)
    rows = []
    for i in range(x_rec.shape[1]):
        (row,) = torch.autograd.grad(x_rec[:, i].sum(), u, retain_graph=True)
        rows.append(row)
    jac = torch.stack(rows, 1)  # (B, d, n)
    return model.latent_log_prob(u.detach()) - 0.5 * jacobians.logdet_jtj(jac)


def per_element_autograd_log_prob(model, x: torch.Tensor) -> torch.Tensor:
    """One backward pass per output element x[b, i], each sample decoded on its own."""
    u = model.encode(x).detach()
    logdets = []
    for b in range(u.shape[0]):
        ub = u[b : b + 1].clone().requires_grad_(True)
        xb = model.decode(ub).reshape(-1)
        rows = [torch.autograd.grad(xb[i], ub, retain_graph=True)[0][0] for i in range(xb.shape[0])]
        logdets.append(jacobians.logdet_jtj(torch.stack(rows, 0).unsqueeze(0)))
    return model.latent_log_prob(u) - 0.5 * torch.cat(logdets)


def timeit(fn: Callable[[], object], repeats: int, min_time: float = 0.0) -> float:
    """Median wall time of ``fn`` in seconds (after one warm-up call)."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_time and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def likelihood_table(shapes, batch: int, repeats: int, layers: tuple[int, int]) -> None:
    print(f"\n### Exact log_prob throughput (batch {batch}, {torch.get_num_threads()} threads)\n")
    print(
        f"mflow, outer {layers[0]} + inner {layers[1]} rational-quadratic spline coupling "
        "layers, 100 hidden units, 2 blocks, float32.\n"
    )
    print(
        "| d | n | mflows (samples/s) | batched per-output loop (samples/s) | speed-up "
        "| per-element loop (samples/s) | speed-up | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for d, n in shapes:
        torch.manual_seed(0)
        model = make_model("mflow", d, n, outer_layers=layers[0], inner_layers=layers[1], seed=0)
        model.eval()
        x = torch.randn(batch, d)
        with torch.no_grad():
            ours = model.log_prob(x)
        ref = per_output_autograd_log_prob(model, x).detach()
        diff = (ours - ref).abs().max().item()

        def run_ours(model=model, x=x):
            with torch.no_grad():
                model.log_prob(x)

        t_ours = timeit(run_ours, repeats)
        t_ref = timeit(lambda model=model, x=x: per_output_autograd_log_prob(model, x), repeats)
        # the per-element loop is linear in the batch: time it on a few samples and scale
        few = x[: min(batch, 5)]
        diff = max(diff, (per_element_autograd_log_prob(model, few) - ours[:5]).abs().max().item())
        t_elem = timeit(lambda model=model, x=few: per_element_autograd_log_prob(model, x), 1)
        t_elem *= batch / few.shape[0]
        print(
            f"| {d} | {n} | {batch / t_ours:,.0f} | {batch / t_ref:,.0f} | "
            f"{t_ref / t_ours:.1f}x | {batch / t_elem:,.0f} | {t_elem / t_ours:.0f}x | {diff:.1e} |"
        )


def logdet_table(batch: int, repeats: int) -> None:
    print(f"\n### log det(J^T J) of a (B={batch}, d, n) batch: QR vs float64 Cholesky\n")
    print(
        "| d | n | cond(J) | QR float32 error | Cholesky float64 error | QR (us) | Cholesky (us) |"
    )
    print("|---|---|---|---|---|---|---|")
    for d, n in [(40, 14), (200, 8), (12288, 64)]:
        b = batch if d < 1000 else 4
        torch.manual_seed(0)
        for cond in (1e1, 1e5):
            q1, _ = torch.linalg.qr(torch.randn(b, d, n, dtype=torch.float64))
            q2, _ = torch.linalg.qr(torch.randn(b, n, n, dtype=torch.float64))
            s = torch.logspace(0, -torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64)
            jac64 = (q1 * s) @ q2.mT
            exact = 2 * torch.log(s).sum()
            jac = jac64.float()
            e_qr = (jacobians.logdet_jtj(jac, "qr").double() - exact).abs().max().item()
            e_ch = (jacobians.logdet_jtj(jac, "cholesky").double() - exact).abs().max().item()
            t_qr = timeit(lambda jac=jac: jacobians.logdet_jtj(jac, "qr"), repeats)
            t_ch = timeit(lambda jac=jac: jacobians.logdet_jtj(jac, "cholesky"), repeats)
            print(
                f"| {d} | {n} | {cond:.0e} | {e_qr:.1e} | {e_ch:.1e} | "
                f"{1e6 * t_qr:,.0f} | {1e6 * t_ch:,.0f} |"
            )


def mode_table(batch: int, repeats: int) -> None:
    print(f"\n### Decoder Jacobian: forward (jacfwd) vs reverse (jacrev) mode, batch {batch}\n")
    print("| d | n | n/d | forward (ms) | reverse (ms) |")
    print("|---|---|---|---|---|")
    d = 40
    for n in (8, 14, 20, 24, 32, 40):
        torch.manual_seed(0)
        model = make_model("mflow", d, n, outer_layers=5, inner_layers=1, seed=0).eval()
        u = torch.randn(batch, n)
        times = []
        for mode in ("forward", "reverse"):

            def run(mode=mode, model=model, u=u):
                with torch.no_grad():
                    jacobians.decoder_jacobian(model._decode, u, mode=mode, out_features=d)

            times.append(timeit(run, repeats))
        print(f"| {d} | {n} | {n / d:.2f} | {1e3 * times[0]:.1f} | {1e3 * times[1]:.1f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repetitions")
    parser.add_argument("--logdet", action="store_true", help="also log-det and mode tables")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        shapes, repeats, layers = [(10, 8), (40, 14)], 2, (5, 5)
    else:
        shapes = [(10, 8), (20, 8), (40, 8), (100, 8), (200, 8), (40, 14)]
        repeats, layers = 5, (5, 5)
    likelihood_table(shapes, args.batch, repeats, layers)
    if args.logdet:
        logdet_table(args.batch, repeats)
        mode_table(args.batch, repeats)


if __name__ == "__main__":
    main()
