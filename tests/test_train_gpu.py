"""The engine on a CUDA GPU: placement, bf16 numerics, determinism and a throughput floor.

Run with ``pytest -m gpu``; every test is skipped cleanly on a machine without CUDA.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from sithlib.dgp import DGP, DGPConfig
from sithlib.losses import info_nce
from sithlib.models.mlp import MLP
from sithlib.train import TrainConfig, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CFG = TrainConfig(steps=200, batch_size=1024, lr=1e-3, seeds=2, eval_every=100)


def _setup():
    dgp = DGP(DGPConfig(dim=10, kappa=10.0), device="cuda")

    def make_model(seed):
        return MLP([10, 256, 256, 10], output_norm="sphere",
                   generator=torch.Generator().manual_seed(seed))

    def sample(generator, n):
        p = dgp.sample_pairs(n, generator)
        return p.x, p.x_pos

    def loss_fn(f, batch):
        h = f(batch[0])
        return info_nce(h, f(batch[1]), temperature=0.1), h

    return make_model, sample, loss_fn


def _final_losses(result):
    return torch.tensor([r["loss"] for r in result.curves if r["step"] == CFG.steps])


def test_models_data_and_optimizer_live_on_the_gpu():
    make_model, sample, loss_fn = _setup()
    result = train(make_model, sample, loss_fn, dataclasses.replace(CFG, ensemble=False),
                   device="cuda")
    assert all(p.is_cuda for m in result.models for p in m.parameters())


def test_bf16_and_tf32_track_fp32():
    make_model, sample, loss_fn = _setup()
    exact = _final_losses(train(make_model, sample, loss_fn, CFG, device="cuda"))
    for precision in ("tf32", "bf16"):
        low = _final_losses(train(make_model, sample, loss_fn,
                                  dataclasses.replace(CFG, precision=precision), device="cuda"))
        torch.testing.assert_close(low, exact, rtol=0.05, atol=0.05)


def test_same_seed_is_reproducible_within_float_tolerance():
    make_model, sample, loss_fn = _setup()
    a = _final_losses(train(make_model, sample, loss_fn, CFG, device="cuda"))
    b = _final_losses(train(make_model, sample, loss_fn, CFG, device="cuda"))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_throughput_floor_and_vmap_ensemble_is_cheap():
    make_model, sample, loss_fn = _setup()
    timings = {}
    for seeds in (1, 8):
        cfg = dataclasses.replace(CFG, steps=300, eval_every=300, seeds=seeds)
        train(make_model, sample, loss_fn, dataclasses.replace(cfg, steps=20), device="cuda")
        torch.cuda.synchronize()
        start = time.perf_counter()
        train(make_model, sample, loss_fn, cfg, device="cuda")
        torch.cuda.synchronize()
        timings[seeds] = cfg.steps * seeds / (time.perf_counter() - start)
    # A small MLP at batch 1024 runs hundreds of steps per second on any recent GPU, and eight
    # vmapped seeds give more model-steps per second than one. A floor, not a benchmark: this
    # step is bound by the host, where vmap adds work to every operator and eight data streams
    # mean eight samplers (a CPU run with negligible arithmetic measured 4-5x one seed's host
    # time), so the ensemble's gain is bench_train's to measure against the 8x target.
    assert timings[1] > 200, timings
    assert timings[8] > timings[1], timings


def test_prefetch_and_cuda_graphs_track_the_plain_step():
    make_model, sample, loss_fn = _setup()
    plain = dataclasses.replace(CFG, prefetch=1)
    exact = _final_losses(train(make_model, sample, loss_fn, plain, device="cuda"))
    # Prefetching draws other (equally distributed) batches, so the losses agree only
    # statistically; a CUDA-graph replay of the prefetched step agrees with its eager run.
    fetched = _final_losses(train(make_model, sample, loss_fn,
                                  dataclasses.replace(CFG, prefetch=8), device="cuda"))
    torch.testing.assert_close(fetched, exact, rtol=0.05, atol=0.05)
    graphed = _final_losses(train(make_model, sample, loss_fn,
                                  dataclasses.replace(CFG, prefetch=8, compile="reduce-overhead"),
                                  device="cuda"))
    torch.testing.assert_close(graphed, fetched, rtol=1e-3, atol=1e-3)
