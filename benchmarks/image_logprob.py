"""Exact ``log_prob`` of an image M-flow at (3, 64, 64): this tree against an earlier revision.

The baseline revision's ``src/`` is exported with ``git archive`` into a temporary directory.
Every measurement runs in a fresh process (``PYTHONPATH`` pointing at the ``src`` of the
version under test, 1 intra-op thread by default), so that its peak memory is its own: it builds
the default image M-flow ``make_model("mflow", (3, 64, 64), n, seed=0)``, perturbs every
parameter by 0.02 N(0, 1) from a fixed generator (at initialisation the flow is the identity
and its Jacobian trivial), warms up with one ``log_prob`` of an n = 8 model, then times one
``log_prob`` call on a batch of images (uniform pixels in [0, 1), fixed seed) under
``torch.no_grad()``. The driver interleaves the versions (alternating which goes first) and
repeats. Reported: median and spread (min-max) of CPU time and wall time per image, peak
resident memory of the process (``VmHWM``; on a GPU, peak allocated device memory), and the
largest difference between the two versions' log densities (the same model: a check that both
compute the same thing).

Usage::

    python benchmarks/image_logprob.py                       # writes docs/benchmarks.md
    python benchmarks/image_logprob.py --rounds 1 --no-write # quicker look
    python benchmarks/image_logprob.py --device cuda --threads 4 --no-write
    python benchmarks/image_logprob.py --jacobian-chunk 32   # smaller blocks (this tree only)
    python benchmarks/image_logprob.py --baseline d989b36 --marker image_logprob_lu
    python benchmarks/image_logprob.py --legacy-architecture --marker image_logprob_same

About 10 minutes with the defaults (3 rounds, 2 images at n = 64, 1 at n = 512) on a loaded
2-core machine, less on an idle one.
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
MARKER = "image_logprob"
SHAPE = (3, 64, 64)
BASELINE = "f485bc2"


# --------------------------------------------------------------------------------------------
# worker side (runs inside the version under test)
# --------------------------------------------------------------------------------------------


#: the image architecture before the paper's pieces were added (no pixel preprocessing, no LU
#: layers before the projection), which is the default image M-flow of f485bc2
LEGACY = {"preprocessing": "none", "image_linear_layers": 0}


def _model(n: int, device: str, legacy: bool = False) -> Any:
    import torch

    from mflows.models import make_model

    model = make_model("mflow", SHAPE, n, seed=0, **(LEGACY if legacy else {}))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return model.to(device).eval()


def _status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process image, in MB.

    Not ``ru_maxrss``: Linux carries the parent's peak over an ``exec`` into it.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def worker(
    n: int, images: int, device: str, threads: int, chunk: int | None, legacy: bool = False
) -> None:
    """Prints one JSON line: the timing of one ``log_prob`` call."""
    import torch

    torch.set_num_threads(threads)
    cuda = device.startswith("cuda")
    x = torch.rand(images, *SHAPE, generator=torch.Generator().manual_seed(2)).to(device)
    kwargs = {} if chunk is None else {"jacobian_chunk": chunk}
    with torch.no_grad():
        _model(8, device, legacy).log_prob(x[:1])  # warm-up (library code paths, conv primitives)
        model = _model(n, device, legacy)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        before = _status_mb("VmRSS")
        cpu, wall = time.process_time(), time.perf_counter()
        logp = model.log_prob(x, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    result = {
        "cpu": cpu / images,
        "wall": wall / images,
        "rss_before_mb": before,
        "peak_rss_mb": _status_mb("VmHWM"),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "logp": logp.cpu().tolist(),
    }
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------
# driver side
# --------------------------------------------------------------------------------------------


def _measure(
    src: Path,
    n: int,
    images: int,
    device: str,
    threads: int,
    chunk: int | None,
    legacy: bool = False,
) -> dict[str, Any]:
    env = dict(
        os.environ,
        PYTHONPATH=str(src),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
    )
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--n", str(n)]
    command += ["--images", str(images), "--device", device, "--threads", str(threads)]
    if chunk is not None:
        command += ["--jacobian-chunk", str(chunk)]
    if legacy:
        command += ["--legacy-architecture"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker failed ({src}, n={n}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fmt(values: list[float], digits: int = 2) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def run(args: argparse.Namespace) -> str:
    versions: dict[str, Path] = {"current": ROOT / "src"}
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    cases = [(64, args.images64), (512, args.images512)]
    with tempfile.TemporaryDirectory(prefix="mflows-baseline-") as tmp:
        versions = {args.baseline: export_src(args.baseline, Path(tmp)), **versions}
        names = list(versions)
        for r in range(args.rounds):
            for n, images in cases:
                order = names if r % 2 == 0 else names[::-1]
                for name in order:
                    current = name == "current"
                    chunk = args.jacobian_chunk if current else None
                    legacy = args.legacy_architecture and current
                    out = _measure(
                        versions[name], n, images, args.device, args.threads, chunk, legacy
                    )
                    results.setdefault((name, n), []).append(out)
                    print(
                        f"round {r + 1} n={n} {name}: {out['cpu']:.2f} s CPU/image, "
                        f"{out['wall']:.2f} s wall/image, peak RSS {out['peak_rss_mb']:.0f} MB",
                        file=sys.stderr,
                        flush=True,
                    )
    gpu = args.device.startswith("cuda")
    memory = "peak GPU memory (MB)" if gpu else "peak RSS (MB)"
    lines = [
        f"| n | images | version | CPU s/image | wall s/image | {memory} | speed-up (CPU) | "
        "max abs diff log p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, images in cases:
        old, new = results[(names[0], n)], results[(names[1], n)]
        ratio = statistics.median(o["cpu"] for o in old) / statistics.median(c["cpu"] for c in new)
        diff = max(
            abs(a - b)
            for o, c in zip(old, new, strict=True)
            for a, b in zip(o["logp"], c["logp"], strict=True)
        )
        for name, rows in ((names[0], old), (names[1], new)):
            key = "peak_gpu_mb" if gpu else "peak_rss_mb"
            mem = _fmt([row[key] for row in rows], 0)
            label = name if name != "current" else "this tree"
            cells = [str(n), str(images), label, _fmt([row["cpu"] for row in rows])]
            cells += [_fmt([row["wall"] for row in rows]), mem]
            cells += [f"{ratio:.2f}x" if name == "current" else "", f"{diff:.1e}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_doc(table: str, args: argparse.Namespace) -> None:
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    import torch

    note = (
        f"Measured {stamp}, torch {torch.__version__.split('+')[0]}, device {args.device}, "
        f"{args.threads} thread(s), {args.rounds} rounds, baseline {args.baseline}:"
    )
    try:
        text = replace_marked_block(DOC.read_text(), args.marker, f"{note}\n\n{table}")
    except ValueError as error:
        raise SystemExit(f"{DOC}: {error}") from None
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=BASELINE, help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images64", type=int, default=2, help="images per call at n = 64")
    parser.add_argument("--images512", type=int, default=1, help="images per call at n = 512")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (when a GPU exists)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op CPU threads")
    parser.add_argument(
        "--jacobian-chunk", type=int, default=None, help="columns per block (this tree only)"
    )
    parser.add_argument(
        "--legacy-architecture",
        action="store_true",
        help="this tree builds the baseline f485bc2's default model (same maths, same weights)",
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not edit the docs")
    parser.add_argument(
        "--marker", default=MARKER, help="the docs block to write (<!-- MARKER:begin -->)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(
            args.n,
            args.images,
            args.device,
            args.threads,
            args.jacobian_chunk,
            args.legacy_architecture,
        )
        return
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available here")
    table = run(args)
    print(table)
    if not args.no_write:
        _write_doc(table, args)


if __name__ == "__main__":
    main()
