"""The arithmetic behind the performance appendix (the timings themselves live in benchmarks/)."""

from __future__ import annotations

import dataclasses
import importlib.util

import torch

from sithlib.experiments import infonce_sphere
from sithlib.results import repo_root


def _bench_train():
    path = repo_root() / "benchmarks" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_flops_counts_forward_and_backward_of_both_views_by_hand():
    bench = _bench_train()
    cfg = dataclasses.replace(infonce_sphere.PROFILES["quick"], dim=2, hidden=(3,), batch_size=4)
    # Per sample and view: 2*(2*3 + 3*2) = 24 forward FLOPs; two views; 2*4*2 for its row of the
    # 4 x 4 similarity matrix; times 3 for forward + backward; times the batch.
    assert bench.train_flops(cfg) == 3 * 4 * (2 * 24 + 2 * 4 * 2)


def test_matmul_peak_is_a_positive_rate_and_restores_precision():
    bench = _bench_train()
    before = torch.get_float32_matmul_precision()
    for precision in ("fp32", "bf16"):
        assert bench.matmul_peak("cpu", precision, n=128) > 1e6
    assert torch.get_float32_matmul_precision() == before
