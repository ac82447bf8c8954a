"""Speed of mflows' spline flows against zuko's; prints a Markdown table.

Usage:
    .venv/bin/python benchmarks/transforms.py [--features 40] [--layers 10] [--batch 1000]
        [--jac-batch 100] [--repeats 5] [--threads 1]

Compares a 10-layer rational-quadratic spline coupling flow built by
``mflows.transforms.make_tabular_flow`` with ``zuko.flows.NSF(passes=2)`` (zuko's coupling
NSF), at similar conditioner sizes: forward+logdet, inverse+logdet, a training step (forward,
backward), per-sample Jacobians with ``vmap(jacfwd)`` and the bare spline function; and two
vmap-safe ways to find the bin (a sum of comparisons, used by mflows, and ``searchsorted``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.func import jacfwd, vmap

from mflows.transforms import make_tabular_flow, rational_quadratic_spline


def timeit(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time in milliseconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def perturb(module: torch.nn.Module, scale: float = 0.05) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=40)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--jac-batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d, batch = args.features, args.batch
    x = torch.randn(batch, d)
    xj = x[: args.jac_batch]
    rows: list[tuple[str, str, str]] = []

    ours = make_tabular_flow(d, args.layers, hidden_features=100, num_blocks=2, num_bins=8)
    perturb(ours)

    def ours_fwd():
        with torch.no_grad():
            return ours(x)

    def ours_inv():
        with torch.no_grad():
            return ours.inverse(x)

    def ours_step():
        y, ld = ours(x)
        (y.square().sum() - ld.sum()).backward()

    def ours_one(v):
        return ours(v[None])[0][0]

    def ours_jac():
        return vmap(jacfwd(ours_one))(xj)

    results = {"ours": [timeit(f, args.repeats) for f in (ours_fwd, ours_inv, ours_step, ours_jac)]}
    params = {"ours": n_params(ours)}
    zuko_error = ""
    try:
        import zuko

        # zuko's coupling NSF; 3 hidden layers of 100 ~ our residual MLP (1 + 2x2 layers)
        flow = zuko.flows.NSF(
            d, 0, transforms=args.layers, bins=8, passes=2, hidden_features=(100, 100, 100)
        )
        perturb(flow)
        params["zuko"] = n_params(flow)

        def zuko_fwd():
            with torch.no_grad():
                return flow().transform.call_and_ladj(x)

        def zuko_inv():
            with torch.no_grad():
                return flow().transform.inv.call_and_ladj(x)

        def zuko_step():
            y, ld = flow().transform.call_and_ladj(x)
            (y.square().sum() - ld.sum()).backward()

        def zuko_one(v):
            return flow().transform(v)

        def zuko_jac():
            return vmap(jacfwd(zuko_one))(xj)

        zres = []
        for f in (zuko_fwd, zuko_inv, zuko_step, zuko_jac):
            try:
                zres.append(timeit(f, args.repeats))
            except Exception as e:  # report, don't hide
                zres.append(float("nan"))
                zuko_error += f"{f.__name__}: {type(e).__name__}: {str(e)[:120]}; "
        results["zuko"] = zres
    except ImportError:
        zuko_error = "zuko not installed"

    labels = [
        f"forward+logdet, batch {batch} (ms)",
        f"inverse+logdet, batch {batch} (ms)",
        f"forward+backward, batch {batch} (ms)",
        f"vmap(jacfwd), {args.jac_batch} samples (ms)",
    ]
    for i, label in enumerate(labels):
        z = results.get("zuko", [float("nan")] * 4)[i]
        rows.append((label, f"{results['ours'][i]:.1f}", f"{z:.1f}"))
    rows.append(("parameters", str(params["ours"]), str(params.get("zuko", "-"))))

    # bare spline on batch x d elements
    k = 8
    w, h, dd = torch.randn(batch, d, k), torch.randn(batch, d, k), torch.randn(batch, d, k - 1)
    ours_spline = timeit(lambda: rational_quadratic_spline(x, w, h, dd), args.repeats)
    try:
        from zuko.transforms import MonotonicRQSTransform

        zuko_spline = timeit(
            lambda: MonotonicRQSTransform(w, h, dd, bound=3.0).call_and_ladj(x), args.repeats
        )
    except ImportError:
        zuko_spline = float("nan")
    rows.append(
        (f"spline fn, {batch}x{d} elements (ms)", f"{ours_spline:.2f}", f"{zuko_spline:.2f}")
    )

    # bin search: sum of comparisons vs searchsorted (both vmap-safe)
    knots = torch.sort(torch.randn(batch, d, k - 1), dim=-1).values

    def by_sum():
        return (x.unsqueeze(-1) >= knots).sum(-1)

    def by_searchsorted():
        return torch.searchsorted(knots, x.unsqueeze(-1).contiguous(), right=True).squeeze(-1)

    assert torch.equal(by_sum(), by_searchsorted())
    rows.append(
        (
            f"bin search, {batch}x{d}, K={k}: sum / searchsorted (ms)",
            f"{timeit(by_sum, args.repeats):.3f}",
            f"{timeit(by_searchsorted, args.repeats):.3f}",
        )
    )

    print(f"d={d}, layers={args.layers}, threads={args.threads}, torch {torch.__version__}\n")
    print("| measurement | mflows | zuko |")
    print("| --- | ---: | ---: |")
    for label, a, b in rows:
        print(f"| {label} | {a} | {b} |")
    if zuko_error:
        print(f"\nzuko errors: {zuko_error}")


if __name__ == "__main__":
    main()
