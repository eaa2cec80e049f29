"""tools/gpu_order.py: what a lent GPU runs first."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

import sithlib.results
from sithlib.experiments import EXPERIMENTS

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_order", ROOT / "tools" / "gpu_order.py")
gpu_order = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_order)


def test_missing_cheapest_first_then_cpu_made_results(monkeypatch):
    names = list(EXPERIMENTS)
    expensive, cheap, uncounted, on_cpu, on_gpu = names[:5]
    made = {on_cpu: "cpu", on_gpu: "cuda:0"}

    def status(name):
        if name in made:
            return "fresh", SimpleNamespace(env={"device": made[name]}), ""
        return ("stale" if name == expensive else "missing"), None, "why"

    # Launch and FLOP counts: `expensive` costs a second, `cheap` a millisecond.
    table = pd.DataFrame([
        {"case": expensive, "metric": "launches", "value": 0.0},
        {"case": expensive, "metric": "train_tflop", "value": gpu_order.FLOPS / 1e12},
        {"case": cheap, "metric": "launches", "value": 1e-3 / gpu_order.LAUNCH_S},
        {"case": cheap, "metric": "train_tflop", "value": 0.0},
    ])
    monkeypatch.setattr(sithlib.results, "paper_status", status)
    monkeypatch.setattr(sithlib.results, "read_benchmarks",
                        lambda: [{"name": "cost", "table": table}])
    queue = gpu_order.order()
    todo = [n for n in names if n not in made]
    assert queue[-1] == on_cpu and on_gpu not in queue  # a GPU-made result is never redone
    assert sorted(queue[:-1]) == sorted(todo)
    # Uncounted (no training) first in the book's order, then by the guessed cost.
    assert queue.index(uncounted) < queue.index(cheap) < queue.index(expensive)
    assert queue[-2] == expensive


def test_an_experiment_can_add_its_measurement_seconds(monkeypatch):
    names = list(EXPERIMENTS)
    light, heavy = names[:2]
    table = pd.DataFrame([{"case": n, "metric": m, "value": v} for n in (light, heavy)
                          for m, v in (("launches", 0.0), ("train_tflop", 0.0))])
    table.loc[table.case == light, "value"] = [10.0 / gpu_order.LAUNCH_S, 0.0]
    monkeypatch.setattr(sithlib.results, "paper_status", lambda n: ("missing", None, "why"))
    monkeypatch.setattr(sithlib.results, "read_benchmarks",
                        lambda: [{"name": "cost", "table": table}])
    monkeypatch.setattr(EXPERIMENTS[heavy], "MEASURE_GPU_S", 20.0, raising=False)
    queue = gpu_order.order()
    assert queue.index(light) < queue.index(heavy)  # 10 s of training before 20 s of measuring
