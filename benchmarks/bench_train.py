"""Training-engine throughput: the engine against a naive loop, and seed ensembles.

Cases, all training the InfoNCE encoder of ``infonce_sphere`` on its DGP (n = 10, vMF):

- ``naive loop``: what the reference code does: one model, positives sampled on the host with
  SciPy (one ``vonmises_fisher`` call per row, as every row has its own mean), the loss read
  back (``.item()``) every step, float32 (on a GPU timed over 5 steps, the others over 200);
- ``engine, 1 seed``: ``sithlib.train`` with device-native sampling and no per-step sync (on a
  GPU the data of 16 steps is drawn at once; ``prefetch 1`` draws every step, paying the exact
  samplers' rejection-loop syncs each time);
- ``engine, S seeds, vmap``: S models in one vmapped step;
- ``engine, S seeds, sequential``: the same S models without vmap (one optimizer, S forwards).

- ``engine, 1 seed, <precision>``: the same with ``tf32`` / ``bf16`` matmuls and with
  ``torch.compile``, plain and as a CUDA graph (on a GPU only: on the CPU they are not what
  the engine is tuned for);
- ``ensemble 16 seeds (n=5, batch 1024)`` against ``1 seed (n=5, batch 1024)`` and against the
  same seeds one after the other (``sequential``): the DIET-sized problem, where vmapped seeds
  pay off most on a GPU (4 seeds on the CPU, where a step of this size is bound by arithmetic,
  not by launches, and the ensemble can at best tie).

Reported: model-steps per second (steps/s times the number of models), the ratio to the naive
loop, the model FLOPs per step (forward and backward of the encoder on both views plus the
similarity matrix) and the fraction of this device's dense matmul throughput that the step
reaches, with that peak measured in the same run for the same precision. On the CPU only the
ratios carry meaning.
Usage::

    python benchmarks/bench_train.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import numpy as np
import pandas as pd
import torch
from scipy import stats

from sithlib.dgp import DGP, DGPConfig
from sithlib.experiments import infonce_sphere
from sithlib.losses import info_nce
from sithlib.models.mlp import MLP
from sithlib.models.views import both_views
from sithlib.train import TrainConfig, train


def _setup(cfg, device):
    dgp = DGP(DGPConfig(dim=cfg.dim, kappa=cfg.kappa, mixing_layers=cfg.mixing_layers,
                        seed=cfg.dgp_seed), device=device)

    def make_model(seed):
        return MLP([cfg.dim, *cfg.hidden, cfg.dim], output_norm="sphere",
                   generator=torch.Generator().manual_seed(seed))

    def sample(generator, n):
        pairs = dgp.sample_pairs(n, generator)
        return pairs.x, pairs.x_pos

    def loss_fn(f, batch):  # as infonce_sphere trains
        h, h_pos = both_views(f, *batch)
        return info_nce(h, h_pos, temperature=cfg.tau), h

    return dgp, make_model, sample, loss_fn


def naive_loop(cfg, steps: int, device: str) -> float:
    """Seconds for ``steps`` steps of the reference-code style loop."""
    dgp, make_model, _, _ = _setup(cfg, device)
    f = make_model(0).to(device)
    opt = torch.optim.Adam(f.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps):
        z = rng.standard_normal((cfg.batch_size, cfg.dim))
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        z_pos = np.stack([stats.vonmises_fisher(zi, cfg.kappa).rvs(1, random_state=rng)[0]
                          for zi in z])
        z_t = torch.from_numpy(z).float().to(device)
        zp_t = torch.from_numpy(z_pos).float().to(device)
        with torch.no_grad():
            x, x_pos = dgp.mixing(z_t), dgp.mixing(zp_t)
        loss = info_nce(f(x), f(x_pos), temperature=cfg.tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()  # the per-step host sync of a logging loop
    return time.perf_counter() - start


def engine(cfg, steps: int, seeds: int, ensemble: bool, device: str, precision: str = "fp32",
           compile: bool = False, prefetch: int | None = None) -> float:
    _, make_model, sample, loss_fn = _setup(cfg, device)
    tcfg = TrainConfig(steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, seeds=seeds,
                       ensemble=ensemble, eval_every=steps, precision=precision,
                       compile=compile, prefetch=prefetch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    train(make_model, sample, loss_fn, tcfg, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def train_flops(cfg) -> float:
    """Model FLOPs of one training step: 3x the forward (backward costs two forwards)."""
    widths = [cfg.dim, *cfg.hidden, cfg.dim]
    encoder = 2 * sum(a * b for a, b in zip(widths, widths[1:], strict=False))
    similarity = 2 * cfg.batch_size * cfg.dim  # one row of h @ h_pos.T per sample
    return 3.0 * cfg.batch_size * (2 * encoder + similarity)


def matmul_peak(device: str, precision: str, n: int | None = None) -> float:
    """Measured dense matmul FLOP/s of ``device`` (square n x n, best of several runs)."""
    n = n or (8192 if device.startswith("cuda") else 1024)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=dtype, generator=gen) for _ in range(2))
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest" if precision == "fp32" else "high")
    try:
        best = float("inf")
        for _ in range(5):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(10):
                a @ b
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, (time.perf_counter() - start) / 10)
    finally:
        torch.set_float32_matmul_precision(previous)
    return 2.0 * n**3 / best


def table(quick: bool = False, device: str = "cpu", rounds: int | None = None) -> pd.DataFrame:
    """Tidy rows (case, metric, value) measured in this run.

    Every case is timed ``rounds`` times (default: 5 on the CPU, 1 on a GPU), the cases
    interleaved, and its fastest round is kept: on a shared CPU a single round of one case can
    land on a busy moment, and interleaving keeps such moments from favouring one case.
    """
    base = infonce_sphere.PROFILES["quick" if quick or device == "cpu" else "paper"]
    steps = 30 if quick else 200
    cfg = dataclasses.replace(base, batch_size=256 if quick else base.batch_size)
    small = dataclasses.replace(cfg, dim=5, batch_size=1024)  # the DIET-sized problem
    seeds, many = 4, 4 if quick or device == "cpu" else 16
    gpu = device.startswith("cuda")
    rounds = rounds or (1 if quick or gpu else 5)
    # The naive loop samples every row on the host (~0.1 ms a row): at the paper's batch of
    # 6144 a step takes most of a second, so a few steps measure its rate.
    naive_steps = 5 if gpu else steps
    engine(cfg, 5, 1, True, device)  # warm-up: allocator, thread pools
    # case: (timed call, models, config, precision)
    cases = {
        "naive loop": (lambda: naive_loop(cfg, naive_steps, device), 1, cfg, "fp32"),
        "engine, 1 seed": (lambda: engine(cfg, steps, 1, True, device), 1, cfg, "fp32"),
        f"engine, {seeds} seeds, vmap": (lambda: engine(cfg, steps, seeds, True, device), seeds,
                                         cfg, "fp32"),
        f"engine, {seeds} seeds, sequential": (lambda: engine(cfg, steps, seeds, False, device),
                                               seeds, cfg, "fp32"),
        "1 seed (n=5, batch 1024)": (lambda: engine(small, steps, 1, True, device), 1, small,
                                     "fp32"),
        f"ensemble {many} seeds (n=5, batch 1024)": (
            lambda: engine(small, steps, many, True, device), many, small, "fp32"),
        f"sequential {many} seeds (n=5, batch 1024)": (
            lambda: engine(small, steps, many, False, device), many, small, "fp32"),
    }
    if gpu:
        # The engine draws 16 steps of data per call on a GPU; one step per call shows what
        # the samplers' host synchronisations cost.
        cases["engine, 1 seed, prefetch 1"] = (
            lambda: engine(cfg, steps, 1, True, device, prefetch=1), 1, cfg, "fp32")
        for precision in ("tf32", "bf16"):
            cases[f"engine, 1 seed, {precision}"] = (
                lambda p=precision: engine(cfg, steps, 1, True, device, precision=p), 1, cfg,
                precision)
        graphs = "reduce-overhead"  # torch.compile's CUDA-graph mode
        # Compiled for 5 untimed steps right before each timed run: torch.compile's cache
        # guards on the backend, so the other mode's run in between would force a recompile.
        def compiled(mode):
            engine(cfg, 5, 1, True, device, precision="bf16", compile=mode)
            return engine(cfg, steps, 1, True, device, precision="bf16", compile=mode)

        for mode, name in ((True, "compiled"), (graphs, "CUDA graph")):
            cases[f"engine, 1 seed, bf16, {name}"] = (lambda m=mode: compiled(m), 1, cfg, "bf16")
    seconds = {case: math.inf for case in cases}
    try:
        for _ in range(rounds):
            for case, (timed, *_) in cases.items():
                seconds[case] = min(seconds[case], timed())
    except KeyboardInterrupt:
        # A lent GPU's call has a hard limit and tools/gpu_session.sh stops a benchmark that
        # runs over it with SIGINT: the cases that finished are still worth their GPU time.
        if not any(math.isfinite(t) for t in seconds.values()):
            raise
        print(f"interrupted: keeping the {sum(map(math.isfinite, seconds.values()))} of "
              f"{len(cases)} cases that finished", flush=True)
    timings = {case: (seconds[case], *rest) for case, (_, *rest) in cases.items()
               if math.isfinite(seconds[case])}
    peaks = {p: matmul_peak(device, p) for p in {t[3] for t in timings.values()}}
    naive = naive_steps / timings["naive loop"][0] if "naive loop" in timings else math.nan
    rows = []
    for case, (seconds, models, c, precision) in timings.items():
        n_steps = naive_steps if case == "naive loop" else steps
        rate = n_steps * models / seconds
        flops = train_flops(c)
        peak = peaks[precision]
        values = {"model_steps_per_s": rate, "ratio_to_naive": rate / naive,
                  "flops_per_step": flops, "fraction_of_matmul_peak": rate * flops / peak,
                  "matmul_peak_tflops": peak / 1e12}
        rows += [{"case": case, "metric": k, "value": v, "batch_size": c.batch_size,
                  "steps": n_steps, "hidden": "-".join(map(str, c.hidden)), "precision": precision}
                 for k, v in values.items()]
    frame = pd.DataFrame(rows)
    if len(timings) < len(cases):  # cut short in its first round (a later cut loses no case)
        frame.attrs["config"] = {"interrupted": True, "cases_finished": len(timings),
                                 "cases": len(cases)}
    return frame


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps only (a smoke run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    frame = table(args.quick, args.device)
    print(frame.pivot_table(index="case", columns="metric", values="value", sort=False))
    return frame


if __name__ == "__main__":
    main()
