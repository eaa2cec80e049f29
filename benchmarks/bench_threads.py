"""CPU threads: how to spend a few cores on the paper profiles, one run with every thread or
one run per core.

The paper profiles train small MLPs (widths of a few hundred, batches of about a thousand), so
each operator is little work and torch's intra-op thread pool pays a hand-over per operator. A
reader who runs the paper profiles on a CPU has a choice: give one experiment every core, or
run several experiments side by side with one thread each (``OMP_NUM_THREADS=1``). Cases, each
training BYOL as ``collapse_ablations`` trains it in its paper profile (its MLP encoder and
heads, Adam, batch 1,024 drawn by its DGP, through ``sithlib.train``), timed over ``steps``
steps after a warm-up of 5:

- ``1 process, T threads`` for T = 1, 2, 4, ... and the number of cores;
- ``P processes, 1 thread each`` for P = the number of cores: separate interpreters, timed
  from the moment all have warmed up; their steps/s are summed, the throughput of P
  experiments at once.

Reported: steps/s and its ratio to ``1 process, <cores> threads`` (the default of torch). The
case is about CPUs: on a GPU the step does not run on these threads.

Usage::

    python benchmarks/bench_threads.py [--quick]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd
import torch

from sithlib.experiments import collapse_ablations as exp
from sithlib.results import benchmark_main
from sithlib.train import TrainConfig, train

WARMUP = 5
DEVICES = ("cpu",)  # python -m sithlib bench (all) skips it on a GPU


def _train(steps: int, cfg) -> None:
    dgp = exp.make_dgp(cfg)

    def sample(generator, n):
        pairs = dgp.sample_pairs(n, generator)
        return pairs.x, pairs.x_pos

    def loss_fn(model, batch):
        loss, _ = model(*batch)
        return loss, model.embed(batch[0]), {}

    tcfg = TrainConfig(steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, seeds=1,
                       eval_every=steps)
    train(exp.model_factory("byol", {}, cfg), sample, loss_fn, tcfg)


def steps_per_second(steps: int, threads: int, ready=None) -> float:
    """Steps/s of one BYOL run of the paper profile with ``threads`` intra-op threads; the
    timing starts after the warm-up and, with ``ready``, once that call returns."""
    torch.set_num_threads(threads)
    cfg = exp.PROFILES["paper"]
    _train(WARMUP, cfg)
    if ready is not None:
        ready()
    start = time.perf_counter()
    _train(steps, cfg)
    return steps / (time.perf_counter() - start)


def _worker(steps: int) -> None:
    """One of the side-by-side runs (``--worker STEPS``): warm up, say "ready", time the run
    once the parent says "go", print its steps/s."""

    def ready():
        print("ready", flush=True)
        sys.stdin.readline()

    print(steps_per_second(steps, 1, ready), flush=True)


def side_by_side(processes: int, steps: int) -> list[float]:
    """Steps/s of each of ``processes`` runs with one thread, all timed from the moment every
    one has warmed up (separate interpreters, as separate experiments would be)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SITH_PROGRESS": "0"}
    workers = [subprocess.Popen([sys.executable, __file__, "--worker", str(steps)], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for _ in range(processes)]
    for w in workers:
        if w.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a side-by-side worker failed (exit code {w.wait()})")
    for w in workers:
        w.stdin.write("go\n")
        w.stdin.flush()
    rates = [float(w.stdout.readline()) for w in workers]
    for w in workers:
        w.wait()
    return rates


def table(quick: bool = False, device: str = "cpu") -> pd.DataFrame:
    """The table of ``python -m sithlib bench threads``: columns case, metric, value (steps_s,
    ratio_to_default)."""
    if device != "cpu":
        raise ValueError(f"device must be 'cpu' for the threads benchmark, got {device!r}")
    cores = os.cpu_count() or 1
    steps = 10 if quick else 300
    threads = sorted({*(2**k for k in range(cores.bit_length()) if 2**k <= cores), cores})
    rates = {f"1 process, {t} thread{'s' if t > 1 else ''}": steps_per_second(steps, t)
             for t in threads}
    together = side_by_side(cores, steps)
    rates[f"{cores} processes, 1 thread each"] = sum(together)
    default = rates[f"1 process, {cores} thread{'s' if cores > 1 else ''}"]
    rows = [{"case": case, "metric": metric, "value": value}
            for case, rate in rates.items()
            for metric, value in (("steps_s", rate), ("ratio_to_default", rate / default))]
    df = pd.DataFrame(rows, columns=["case", "metric", "value"])
    df.attrs.update(steps=steps, warmup=WARMUP, cores=cores, method="byol",
                    profile="collapse_ablations paper", slowest_process_steps_s=min(together))
    return df


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker(int(sys.argv[2]))
    else:
        benchmark_main(table, __doc__.splitlines()[0])
