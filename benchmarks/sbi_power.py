"""sbi NLE on the power simulator: sbi's own NSF likelihood vs the mflows M-flow likelihood.

Both estimators get the same simulations (theta from the uniform prior on [-1, 1], x from the
power simulator), are trained by sbi's own trainer with the same settings, and sample the
posterior with sbi's default MCMC (``build_posterior().sample``). The posterior at 20 observations
(theta* = 0, observation seed 101, as :func:`mflows.evaluation.score`) is compared with the true
posterior (Metropolis chain on the true likelihood, step 0.15, 100 burn-in) by the squared MMD
with the median-distance bandwidth of the true samples (the paper's protocol).

Usage::

    .venv/bin/python benchmarks/sbi_power.py --simulations 5000 --max-epochs 50 \
        --posterior-samples 1000 --only nsf --out benchmarks/results/sbi/power_nsf.json
    (and ``--only mflow --out benchmarks/results/sbi/power_mflow.json``; without ``--only``
    both run, one after the other)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mflows
import mflows.sbi
from mflows.evaluation import inference
from mflows.evaluation.metrics import mean_reconstruction_error
from mflows.files import atomic_write


def _run(
    name: str, estimator: Any, prior: Any, theta: Any, x: Any, x_o: Any, args: Any
) -> dict[str, Any]:
    from sbi.inference import NLE
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    writer = SummaryWriter(tempfile.mkdtemp(prefix="sbi-logs-"))  # not ./sbi-logs
    nle = NLE(prior, density_estimator=estimator, summary_writer=writer, show_progress_bars=False)
    net = nle.append_simulations(theta, x).train(
        training_batch_size=args.batch_size,
        learning_rate=args.lr,
        max_num_epochs=args.max_epochs,
    )
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    posterior = nle.build_posterior()
    samples = posterior.sample(
        (args.posterior_samples,),
        x=x_o,
        show_progress_bars=False,
        num_chains=20,
        warmup_steps=100,
        thin=1,
        init_strategy="proposal",  # chains start at prior draws (the default resampling
        # evaluates the likelihood at 10^4 candidates per chain)
    )
    sample_s = time.perf_counter() - start
    result = {
        "estimator": name,
        "epochs": int(nle._summary["epochs_trained"][-1]),
        "best_validation_loss": float(nle._summary["best_validation_loss"][-1]),
        "train_s": train_s,
        "posterior_sampling_s": sample_s,
        "posterior_samples": samples.numpy().astype(float),
    }
    model = getattr(net, "model", None)
    if model is not None:
        with torch.no_grad():
            proj = model.project(x_o, torch.zeros(len(x_o), 1))
        result["reconstruction_error_observed"] = mean_reconstruction_error(x_o, proj)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--posterior-samples", type=int, default=2000)
    parser.add_argument("--true-samples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=("nsf", "mflow"), default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sbi/power.json"))
    parser.add_argument("--latent-dim", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from sbi.utils import BoxUniform

    data = mflows.data.get("power")
    theta_np = data.sample_prior(args.simulations, seed=args.seed)
    x_np = data.sample(args.simulations, theta=theta_np, seed=args.seed + 1)
    theta = torch.as_tensor(theta_np, dtype=torch.float32)
    x = torch.as_tensor(x_np, dtype=torch.float32)
    theta_true = np.asarray(data.default_theta, dtype=np.float64).reshape(-1)
    observed = data.sample(20, theta=theta_true, seed=args.seed + 100)
    x_o = torch.as_tensor(observed, dtype=torch.float32)
    prior = BoxUniform(torch.tensor([-1.0]), torch.tensor([1.0]))

    true_chain = inference.true_posterior_samples(
        data, observed, num_samples=args.true_samples, theta0=theta_true, seed=args.seed + 1
    )
    estimators = {
        "sbi nsf": "nsf",
        "mflows mflow": mflows.sbi.likelihood_estimator("mflow", latent_dim=2),
    }
    results = []
    for name, estimator in estimators.items():
        if args.only is not None and args.only not in name:
            continue
        r = _run(name, estimator, prior, theta, x, x_o, args)
        samples = r.pop("posterior_samples")
        r["posterior_mmd"] = inference.posterior_mmd(samples, true_chain)
        r["posterior_mean"] = float(samples.mean())
        r["posterior_std"] = float(samples.std())
        print(json.dumps(r), flush=True)
        results.append(r)
    payload = {
        "simulations": args.simulations,
        "observations": 20,
        "theta_true": theta_true.tolist(),
        "true_posterior_mean": float(true_chain.mean()),
        "true_posterior_std": float(true_chain.std()),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "versions": {"torch": torch.__version__, "sbi": __import__("sbi").__version__},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
