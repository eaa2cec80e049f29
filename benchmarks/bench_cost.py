"""What each experiment's paper profile trains, counted: steps, samples, FLOPs, launches.

The GPU time of a chapter comes from two things the engine cannot hide: the arithmetic of the
training steps, and the kernels launched one after another (a small network's step is bound
by launches, not by arithmetic). Both belong to the configuration, not to the hardware, so
they are counted here, on any machine, before GPU time is spent:

- ``runs``: calls of ``sithlib.train.train``;
- ``steps``: optimiser steps summed over runs (a vmapped ensemble of S seeds takes one);
- ``model_steps``: steps x seeds; ``samples``: model-steps x batch size;
- ``train_tflop``: steps x the FLOPs of one step (DGP sampling, forward, backward), counted by
  ``torch.utils.flop_counter`` on a real step of the paper configuration;
- ``launches``: steps x the operators one step dispatches (views excluded), each a kernel
  launch in eager mode on a GPU, where a small network's step is bound by launches, not by
  arithmetic. Seeds trained one after the other (stateful methods, BatchNorm) count once each,
  a vmapped ensemble once for all; the sampler's operators count once per the steps of
  data the engine draws per call on a GPU (``TrainConfig.prefetch_steps``); the optimiser is
  left out (fused on a GPU: a few launches);
- per run (printed, not stored): ``step_syncs``, operators of one step (sampler and
  optimiser aside) that would make a GPU wait for the host, such as reading a value back or a
  boolean mask. Counted on the CPU, it includes checks that only run there (label ranges);
  the GPU test ``test_cuda_loss_and_gradient_never_wait_for_the_host`` is the authority.

Evaluation (probes, kNN, metrics) and experiments that do not train (numerical checks) are
not counted. Every experiment runs its paper configuration with small evaluation sets; each
call of ``train`` is counted on a few real steps, then runs one evaluated step and hands the
experiment curves on the paper's evaluation schedule, so everything after training runs as
well. Usage::

    python -m sithlib bench cost                           # every experiment, stored
    python benchmarks/bench_cost.py [EXPERIMENT ...]       # print the counts
    python benchmarks/bench_cost.py --store EXPERIMENT ... # recount some, keep the others
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import os
import tempfile
import time

import pandas as pd
import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import sithlib.train
from sithlib.results import config_hash, running_on
from sithlib.train import TrainResult

QUICK = ("infonce_sphere", "platonic")
RUN_COLUMNS = ["experiment", "name", "steps", "seeds", "batch", "vmapped", "step_flop",
               "step_ops", "sample_ops", "prefetch", "optimizer_ops", "step_syncs"]


def _schedule(cfg) -> list[int]:
    """The steps at which the engine records a curve row for ``cfg``."""
    steps = list(range(cfg.eval_every, cfg.steps + 1, cfg.eval_every))
    if cfg.steps % cfg.eval_every:
        steps.append(cfg.steps)
    return ([0] if cfg.eval_at_start else []) + steps


# Operators that make a GPU wait for the host (a value read back, a data-dependent shape).
_SYNCS = {"_local_scalar_dense", "item", "nonzero", "masked_select", "unique", "_unique2",
          "repeat_interleave"}


class OpCounter(TorchDispatchMode):
    """Counts the operators dispatched (each a kernel launch on a GPU, views excluded) and
    those that synchronise with the host, by phase: the sampler, the optimiser, the rest."""

    def __init__(self):
        super().__init__()
        self.phase = "step"
        self.ops: collections.Counter = collections.Counter()
        self.syncs: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops[self.phase] += 1
            name = func.overloadpacket.__name__
            masked = name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                            for i in args[1] if i is not None)
            self.syncs[self.phase] += name in _SYNCS or masked
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def during(self, phase):
        previous, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = previous


@contextlib.contextmanager
def counted(sample):
    """FLOPs and operators of a training call, with ``sample`` and optimiser steps apart."""
    ops = OpCounter()

    def counting(f):
        def counted_sample(g, n):
            with ops.during("sample"):
                return f(g, n)
        return counted_sample

    counted_sample = counting(sample) if callable(sample) else [counting(f) for f in sample]

    pre = register_optimizer_step_pre_hook(lambda *a: setattr(ops, "phase", "optimizer"))
    post = register_optimizer_step_post_hook(lambda *a: setattr(ops, "phase", "step"))
    try:
        with FlopCounterMode(display=False) as flops, ops:
            yield counted_sample, flops, ops
    finally:
        pre.remove()
        post.remove()


class CountingTrain:
    """Stands in for ``sithlib.train.train``: counts a run's steps, seeds, FLOPs and operator
    launches, then trains it for one evaluated step.

    One step's counts are those of a 2-step run minus those of a 1-step run (no evaluation in
    either, one curve row at the last step in both), so set-up, the first step's optimiser
    state and the curve row cancel out."""

    def __init__(self):
        self.runs: list[dict] = []
        self.experiment = ""

    def __call__(self, make_model, sample, loss_fn, cfg, *, device="cpu", evaluate=None,
                 checkpoint=None, name="run", data_seed_offset=10_000, project=None):
        kw = {"device": device, "name": name, "data_seed_offset": data_seed_offset,
              "project": project}
        probe = make_model(cfg.first_seed)
        stateful = hasattr(probe, "after_step") or any(True for _ in probe.buffers())
        counts = []
        for steps in (1, 2):
            short = dataclasses.replace(cfg, steps=steps, eval_every=10**9, eval_at_start=False,
                                        checkpoint_every=0, prefetch=1)
            with counted(sample) as (counted_sample, flops, ops):
                sithlib.train.train(make_model, counted_sample, loss_fn, short, **kw)
            counts.append((flops.get_total_flops(), ops.ops, ops.syncs))
        (f1, ops1, syncs1), (f2, ops2, syncs2) = counts
        self.runs.append({
            "experiment": self.experiment, "name": name, "steps": cfg.steps, "seeds": cfg.seeds,
            "batch": cfg.batch_size, "vmapped": cfg.ensemble and cfg.seeds > 1 and not stateful,
            "step_flop": f2 - f1, "step_ops": ops2["step"] - ops1["step"],
            "sample_ops": ops2["sample"] - ops1["sample"], "prefetch": cfg.prefetch_steps("cuda"),
            "optimizer_ops": ops2["optimizer"] - ops1["optimizer"],
            "step_syncs": syncs2["step"] - syncs1["step"],
        })
        one = dataclasses.replace(cfg, steps=1, eval_every=1, eval_at_start=False,
                                  checkpoint_every=0, prefetch=None)
        short = sithlib.train.train(make_model, sample, loss_fn, one, evaluate=evaluate, **kw)
        last = {row["seed"]: row for row in short.curves}
        curves = [{**last[seed], "step": step} for step in _schedule(cfg) for seed in last]
        return TrainResult(short.models, curves, short.failures, cfg.steps, short.alive)


def count(names) -> pd.DataFrame:
    """One row per training run of the named experiments' paper profiles."""
    os.environ.setdefault("SITH_PROGRESS", "0")
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as scratch:
        os.environ["SITH_CACHE_DIR"] = os.path.join(scratch, "results")
        return _count(names)


def _count(names) -> pd.DataFrame:
    from sithlib.experiments import EXPERIMENTS, get_experiment, shrink, trains

    counting = CountingTrain()
    names = [n for n in names if trains(n)]  # before `train` is swapped below
    for module in EXPERIMENTS.values():
        if getattr(module, "train", None) is sithlib.train.train:
            module.train = counting
    try:
        for name in names:
            module = get_experiment(name)
            counting.experiment = name
            start = time.perf_counter()
            with running_on("cpu"):  # cells and checkpoints keyed by the device they ran on
                module.run(shrink(module.PROFILES["paper"], training=False), "cpu")
            print(f"counted {name} in {time.perf_counter() - start:.0f} s", flush=True)
    finally:
        for module in EXPERIMENTS.values():
            if module.__dict__.get("train") is counting:
                module.train = sithlib.train.train
    return pd.DataFrame(counting.runs, columns=RUN_COLUMNS)


def summarize(runs: pd.DataFrame, names) -> pd.DataFrame:
    """Per experiment (and in all): runs, steps, model-steps, samples, TFLOP, launches."""
    r = runs.assign(model_steps=runs.steps * runs.seeds,
                    samples=runs.steps * runs.seeds * runs.batch,
                    train_tflop=runs.steps * runs.step_flop / 1e12,
                    launches=runs.steps * (runs.step_ops + runs.sample_ops / runs.prefetch))
    columns = ["steps", "model_steps", "samples", "train_tflop", "launches"]
    groups = r.groupby("experiment")
    per = (groups[columns].sum().join(groups.size().rename("runs"))
           .reindex(list(names), fill_value=0))
    per.loc["all"] = per.sum()
    return per[["runs", *columns]]


def _hashes(names) -> dict[str, str]:
    from sithlib.experiments import EXPERIMENTS

    return {n: config_hash(n, EXPERIMENTS[n].VERSION, EXPERIMENTS[n].PROFILES["paper"])
            for n in names}


def _tidy(per: pd.DataFrame) -> pd.DataFrame:
    return per.reset_index(names="case").melt(id_vars="case", var_name="metric",
                                             value_name="value")


def table(quick: bool = False, device: str = "cpu") -> pd.DataFrame:
    """Tidy rows (case = experiment, metric, value) for ``python -m sithlib bench cost``.

    Counts do not depend on the device, so they are always taken on the CPU."""
    from sithlib.experiments import EXPERIMENTS

    names = QUICK if quick else list(EXPERIMENTS)
    out = _tidy(summarize(count(names), names))
    # The counts hold for these paper configs; the appendix flags experiments changed since.
    out.attrs["config"] = {"paper_config_hash": _hashes(names)}
    return out


def merge(stored: pd.DataFrame, per: pd.DataFrame) -> pd.DataFrame:
    """The stored per-experiment rows (wide, as ``summarize``) with ``per``'s in their place,
    in the book's order, and the row 'all' recomputed."""
    from sithlib.experiments import EXPERIMENTS

    rows = pd.concat([stored.drop(index=[*per.index, "all"], errors="ignore"),
                      per.drop(index="all")])
    rows = rows.loc[[n for n in EXPERIMENTS if n in rows.index], list(per.columns)]
    rows.loc["all"] = rows.sum()
    return rows


def store(names) -> None:
    """Count ``names`` and put their rows into the stored cost table (``--store``)."""
    from sithlib import results

    start = time.perf_counter()
    per = summarize(count(names), names)
    env = results.environment("cpu", time.perf_counter() - start)
    old = next((r for r in results.read_benchmarks()
                if r["name"] == "cost" and r["hardware"] == results.hardware_slug(env)), None)
    hashes, commands = {}, []
    if old is not None:
        per = merge(old["table"].pivot_table(index="case", columns="metric", values="value"),
                    per)
        hashes = old["config"].get("paper_config_hash", {})
        commands = old["config"]["command"].split("; ")
    command = "python benchmarks/bench_cost.py --store " + " ".join(names)
    config = {"command": "; ".join([c for c in commands if c != command] + [command]),
              "paper_config_hash": {**hashes, **_hashes(names)}}
    results.write_benchmark('cost', _tidy(per), env, config)


def main(argv=None):
    from sithlib.experiments import EXPERIMENTS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", default=list(EXPERIMENTS))
    p.add_argument("--store", action="store_true",
                   help="put the counts into results/benchmarks/cost/ (others are kept)")
    args = p.parse_args(argv)
    if args.store:
        store(args.names)
    else:
        runs = count(args.names)
        print(runs.drop(columns="experiment").to_string(index=False))
        print(summarize(runs, args.names).to_string(float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
