"""What each experiment's paper profile trains, counted: runs, steps, samples and FLOPs.

The GPU time of a chapter comes from two things the engine cannot hide: the arithmetic of the
training steps, and the number of steps run one after another (a small network's step is
bound by kernel launches, not by arithmetic). Both belong to the configuration, not to the
hardware, so they are counted here, on any machine, before GPU time is spent:

- ``runs``: calls of ``sithlib.train.train``;
- ``steps``: optimiser steps summed over runs (a vmapped ensemble of S seeds takes one);
- ``sequential_model_steps``: steps x seeds where seeds are trained one after the other
  (stateful methods, BatchNorm), steps where they are vmapped: what a launch-bound GPU pays;
- ``model_steps``: steps x seeds; ``samples``: model-steps x batch size;
- ``train_tflop``: steps x the FLOPs of one step (DGP sampling, forward, backward), counted by
  ``torch.utils.flop_counter`` on a real step of the paper configuration. Evaluation (probes,
  kNN, metrics) is not counted.

Every experiment runs its paper configuration with small evaluation sets; each call of
``train`` runs one real step (counted) and one evaluated step, and hands the experiment curves
on the paper's evaluation schedule, so everything after training runs as well. Usage::

    python benchmarks/bench_cost.py [EXPERIMENT ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import pandas as pd
from torch.utils.flop_counter import FlopCounterMode

import sithlib.train
from sithlib.results import config_hash
from sithlib.train import TrainResult

QUICK = ("infonce_sphere", "platonic")


def _schedule(cfg) -> list[int]:
    """The steps at which the engine records a curve row for ``cfg``."""
    steps = list(range(cfg.eval_every, cfg.steps + 1, cfg.eval_every))
    if cfg.steps % cfg.eval_every:
        steps.append(cfg.steps)
    return ([0] if cfg.eval_at_start else []) + steps


class CountingTrain:
    """Stands in for ``sithlib.train.train``: counts a run, trains it for one step."""

    def __init__(self):
        self.runs: list[dict] = []
        self.experiment = ""

    def __call__(self, make_model, sample, loss_fn, cfg, *, device="cpu", evaluate=None,
                 checkpoint=None, name="run", data_seed_offset=10_000):
        kw = {"device": device, "name": name, "data_seed_offset": data_seed_offset}
        one = dataclasses.replace(cfg, steps=1, eval_every=1, eval_at_start=False,
                                  checkpoint_every=0, prefetch=None)
        probe = make_model(cfg.first_seed)
        stateful = hasattr(probe, "after_step") or any(True for _ in probe.buffers())
        vmapped = cfg.ensemble and cfg.seeds > 1 and not stateful  # as the engine decides
        with FlopCounterMode(display=False) as counter:
            sithlib.train.train(make_model, sample, loss_fn, one, **kw)
        self.runs.append({"experiment": self.experiment, "name": name, "steps": cfg.steps,
                          "seeds": cfg.seeds, "batch": cfg.batch_size, "vmapped": vmapped,
                          "step_flop": counter.get_total_flops()})
        short = sithlib.train.train(make_model, sample, loss_fn, one, evaluate=evaluate, **kw)
        last = {row["seed"]: row for row in short.curves}
        curves = [{**last[seed], "step": step} for step in _schedule(cfg) for seed in last]
        return TrainResult(short.models, curves, short.failures, cfg.steps)


def count(names) -> pd.DataFrame:
    """One row per training run of the named experiments' paper profiles."""
    os.environ.setdefault("SITH_PROGRESS", "0")
    os.environ["SITH_CACHE_DIR"] = os.path.join(tempfile.mkdtemp(prefix="bench-cost-"), "results")
    from sithlib.experiments import EXPERIMENTS, get_experiment, shrink

    counting = CountingTrain()
    for module in EXPERIMENTS.values():  # every experiment imports the engine's `train`
        if getattr(module, "train", None) is sithlib.train.train:
            module.train = counting
    try:
        for name in names:
            counting.experiment = name
            start = time.perf_counter()
            module = get_experiment(name)
            module.run(shrink(module.PROFILES["paper"], training=False), "cpu")
            print(f"counted {name} in {time.perf_counter() - start:.0f} s", flush=True)
    finally:
        for module in EXPERIMENTS.values():
            if module.__dict__.get("train") is counting:
                module.train = sithlib.train.train
    return pd.DataFrame(counting.runs, columns=["experiment", "name", "steps", "seeds", "batch",
                                                "vmapped", "step_flop"])


def summarize(runs: pd.DataFrame, names) -> pd.DataFrame:
    """Per experiment (and in all): runs, steps, sequential model-steps, samples, TFLOP."""
    r = runs.assign(model_steps=runs.steps * runs.seeds,
                    sequential_model_steps=runs.steps * runs.seeds.where(~runs.vmapped, 1),
                    samples=runs.steps * runs.seeds * runs.batch,
                    train_tflop=runs.steps * runs.step_flop / 1e12)
    columns = ["steps", "sequential_model_steps", "model_steps", "samples", "train_tflop"]
    per = (r.groupby("experiment")[columns].sum()
           .join(r.groupby("experiment").size().rename("runs"))
           .reindex(list(names), fill_value=0))
    per.loc["all"] = per.sum()
    return per[["runs", *columns]]


def table(quick: bool = False, device: str = "cpu") -> pd.DataFrame:
    """Tidy rows (case = experiment, metric, value) for ``python -m sithlib bench cost``.

    Counts do not depend on the device, so they are always taken on the CPU."""
    from sithlib.experiments import EXPERIMENTS

    names = QUICK if quick else list(EXPERIMENTS)
    per = summarize(count(names), names)
    out = per.reset_index(names="case").melt(id_vars="case", var_name="metric",
                                            value_name="value")
    # The counts hold for these paper configs; the appendix flags experiments changed since.
    out.attrs["config"] = {"paper_config_hash": {
        name: config_hash(name, EXPERIMENTS[name].VERSION, EXPERIMENTS[name].PROFILES["paper"])
        for name in names}}
    return out


def main(argv=None):
    from sithlib.experiments import EXPERIMENTS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", default=list(EXPERIMENTS))
    args = p.parse_args(argv)
    per = summarize(count(args.names), args.names)
    print(per.to_string(float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
