"""vMF sampling throughput: sithlib.dgp.sample_vmf against scipy.stats.vonmises_fisher.

Two cases for a batch of B = 6144 positives (cl-ica's batch size), kappa = 10:

- per-row means (the positive-pair case): every row has its own mean; scipy needs one
  ``vonmises_fisher(mu_i, kappa).rvs(1)`` call per row;
- one shared mean: a single vectorized scipy call.

Samples per second are the best of several repeats (after a warm-up), measured in one run on
one machine; on a CUDA GPU our sampler is timed as well. Usage::

    python benchmarks/bench_dgp.py [--dims 3 10 64] [--batch 6144] [--repeats 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import pandas as pd
import scipy
import torch
from scipy import stats

from sithlib.dgp import sample_vmf
from sithlib.results import best_seconds


def bench(dims, batch: int, kappa: float, repeats: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for d in dims:
        mus = rng.standard_normal((batch, d))
        mus /= np.linalg.norm(mus, axis=1, keepdims=True)
        mu_rows = torch.from_numpy(mus).float()
        mu_one = mu_rows[0].expand(batch, d)
        gen = torch.Generator().manual_seed(0)

        def scipy_rows(mus=mus):
            for i in range(batch):
                stats.vonmises_fisher(mus[i], kappa).rvs(1, random_state=rng)

        def scipy_one(mus=mus):
            stats.vonmises_fisher(mus[0], kappa).rvs(batch, random_state=rng)

        cases = {
            "per-row means": (lambda m=mu_rows, g=gen: sample_vmf(m, kappa, generator=g),
                              scipy_rows),
            "shared mean": (lambda m=mu_one, g=gen: sample_vmf(m, kappa, generator=g), scipy_one),
        }
        for case, (ours, ref) in cases.items():
            t_ours = best_seconds(ours, repeats)
            t_ref = best_seconds(ref, 1 if case == "per-row means" else repeats)
            row = {"d": d, "case": case, "ours_cpu": batch / t_ours, "scipy": batch / t_ref}
            if torch.cuda.is_available():
                mu_gpu = (mu_rows if case == "per-row means" else mu_one).cuda()
                g_gpu = torch.Generator(device="cuda").manual_seed(0)
                t_gpu = best_seconds(lambda m=mu_gpu, g=g_gpu: sample_vmf(m, kappa, generator=g),
                              repeats, torch.cuda.synchronize)
                row["ours_gpu"] = batch / t_gpu
            rows.append(row)
    return rows


def table(quick: bool = False, device: str = "cpu") -> pd.DataFrame:
    """Tidy rows (case, metric, value) for ``python -m sithlib bench``; one thread, like scipy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = bench([3, 10] if quick else [3, 10, 64], 1024 if quick else 6144, 10.0,
                     3 if quick else 10)
    finally:
        torch.set_num_threads(threads)
    out = []
    for r in rows:
        case = f"d={r['d']}, {r['case']}"
        out += [{"case": case, "metric": "ours_cpu_samples_per_s", "value": r["ours_cpu"]},
                {"case": case, "metric": "scipy_samples_per_s", "value": r["scipy"]},
                {"case": case, "metric": "ratio_ours_to_scipy",
                 "value": r["ours_cpu"] / r["scipy"]}]
        if "ours_gpu" in r:
            out.append({"case": case, "metric": "ours_gpu_samples_per_s", "value": r["ours_gpu"]})
    return pd.DataFrame(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[3, 10, 64])
    p.add_argument("--batch", type=int, default=6144)
    p.add_argument("--kappa", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 = like-for-like with single-threaded scipy)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = bench(args.dims, args.batch, args.kappa, args.repeats)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"vMF samples/s, batch {args.batch}, kappa {args.kappa}; torch {torch.__version__} "
          f"({torch.get_num_threads()} CPU threads), scipy {scipy.__version__}, "
          f"CPU {platform.processor() or platform.machine()}, GPU {gpu}")
    head = f"{'d':>4}  {'case':<14} {'ours (CPU)':>12} {'scipy':>12} {'ratio':>8}"
    head += f" {'ours (GPU)':>12}" if gpu != "none" else ""
    print(head)
    for r in rows:
        line = (f"{r['d']:>4}  {r['case']:<14} {r['ours_cpu']:>12.3g} {r['scipy']:>12.3g} "
                f"{r['ours_cpu'] / r['scipy']:>7.1f}x")
        line += f" {r['ours_gpu']:>12.3g}" if "ours_gpu" in r else ""
        print(line)
    return rows


if __name__ == "__main__":
    main()
