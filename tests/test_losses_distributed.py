"""Two-process DDP on the CPU (gloo): every loss that gathers gives, averaged over processes, the
single-process value on the global batch, and the gradients that DDP would apply.

DDP averages gradients over processes, so the gradient the model follows is that of
``mean_r L_r``. For inputs held by process r this is ``x_r.grad / world_size`` (the gathers'
backward sums the contributions of every process's loss), which must equal the gradient of the
single-process loss on the global batch at those rows. One spawn runs every case; each case's
errors are reported to its own test.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import sithlib.losses as L

WORLD = 2
N, D, K, M = 8, 5, 6, 6  # global batch, width, prototypes, external negatives / queue rows
TOL = 1e-6


def rand(*shape, seed):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _scores(seed, rows=N):
    z = F.normalize(rand(rows, D, seed=seed), dim=1)
    return z @ F.normalize(rand(K, D, seed=99), dim=1).T


# name -> (function, global inputs, the batch axis of each input (None: not split), kwargs)
def ddp_cases():
    za, zb = rand(N, D, seed=1), rand(N, D, seed=2) + 0.5 * rand(N, D, seed=1)
    ua, ub = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    neg = rand(M, D, seed=3)
    sa, sb = _scores(4), _scores(5)
    qa, qb = _scores(6, M), _scores(7, M)
    teacher = rand(2, N, K, seed=8)
    center = rand(1, K, seed=9)
    pair = [0, 0]
    return {
        "nt_xent": (L.nt_xent, [za, zb], pair, {"temperature": 0.2}),
        "info_nce_positives": (L.info_nce, [ua, ub], pair, {"temperature": 0.5}),
        "info_nce_cl_ica": (
            L.info_nce,
            [ua, ub],
            pair,
            {"negatives": "anchors", "include_anchor": True},
        ),
        "info_nce_lp_anchors": (
            L.info_nce,
            [za, zb],
            pair,
            {"similarity": "lp", "p": 1.0, "negatives": "anchors"},
        ),
        "info_nce_external": (
            L.info_nce,
            [za, zb],
            pair,
            {"negatives": neg, "similarity": "lp", "p": 2.0},
        ),
        "barlow_twins": (L.barlow_twins, [za, zb], pair, {"lambd": 0.1}),
        "vicreg": (L.vicreg, [za, zb], pair, {}),
        "stability": (L.stability, [za, zb], pair, {"lambd": 2.0}),
        "sinkhorn": (L.sinkhorn, [sa], [0], {"iterations": 5}),
        "swav": (L.swav, [sa, sb], pair, {}),
        "swav_queue": (L.swav, [sa, sb], pair, {"queue_a": qa, "queue_b": qb}),
        "dino_center_update": (L.dino_center_update, [center, teacher], [None, 1], {}),
        "logdet_entropy": (L.logdet_entropy, [za], [0], {"eps": 1e-3}),
        "pairwise_entropy": (L.pairwise_entropy, [za], [0], {"sigma": 1.5}),
        "vicreg_entropy_logdet": (L.vicreg_entropy, [za, zb], pair, {"estimator": "logdet"}),
        "vicreg_entropy_pairwise": (
            L.vicreg_entropy,
            [za, zb],
            pair,
            {"estimator": "pairwise", "sigma": 2.0},
        ),
    }


def _local(x, axis, rank):
    if axis is None:
        return x
    rows = x.shape[axis] // WORLD
    return x.narrow(axis, rank * rows, rows)


def _run_case(fn, inputs, axes, kwargs, rank):
    """Max abs errors (value, gradient) of the distributed loss against the global one.

    Tensor keyword arguments (negatives, queues) are split over processes like the batch, and
    their gradients are compared too.
    """
    keys = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    tensors = list(inputs) + [kwargs[k] for k in keys]
    axes = list(axes) + [0] * len(keys)
    n_pos = len(inputs)

    def call(leaves, **extra):
        kw = {**kwargs, **dict(zip(keys, leaves[n_pos:], strict=True))}
        return fn(*leaves[:n_pos], **kw, **extra)

    leaves = [x.clone().requires_grad_() for x in tensors]
    ref = call(leaves)
    ref_grads = [None] * len(leaves)
    if ref.requires_grad:
        ref_grads = torch.autograd.grad(ref, leaves, allow_unused=True)

    pieces = zip(tensors, axes, strict=True)
    local = [_local(x, a, rank).clone().requires_grad_() for x, a in pieces]
    out = call(local, distributed=True)

    if fn is L.sinkhorn:  # codes of this process's rows
        return float((out - _local(ref, 0, rank)).abs().max()), 0.0
    if fn is L.dino_center_update:  # the same new center everywhere
        return float((out - ref).abs().max()), 0.0
    mean = out.detach().clone()
    dist.all_reduce(mean)
    value_err = abs(float(mean) / WORLD - float(ref))
    grads = torch.autograd.grad(out, local, allow_unused=True)
    grad_err = 0.0
    for g, g_ref, a in zip(grads, ref_grads, axes, strict=True):
        if g_ref is None or g is None:
            assert g is None and g_ref is None, "gradient present on one side only"
            continue
        grad_err = max(grad_err, float((g / WORLD - _local(g_ref, a, rank)).abs().max()))
    return value_err, grad_err


def _worker(rank, store, out_dir):
    torch.set_num_threads(1)
    # A file store, not a TCP port picked in advance: under pytest-xdist another worker could
    # take that port between the pick and the bind.
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    results = {}
    try:
        for name, (fn, inputs, axes, kwargs) in ddp_cases().items():
            try:
                results[name] = list(_run_case(fn, inputs, axes, kwargs, rank))
            except Exception:  # report per case; the other process will hit the same error
                results[name] = traceback.format_exc()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(out / "store"), str(out)), nprocs=WORLD, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.mark.parametrize("name", sorted(ddp_cases()))
def test_ddp_matches_single_process_global_batch(ddp_results, name):
    for rank, results in enumerate(ddp_results):
        res = results[name]
        assert not isinstance(res, str), f"rank {rank} failed:\n{res}"
        value_err, grad_err = res
        assert value_err < TOL, f"rank {rank}: value differs by {value_err}"
        assert grad_err < TOL, f"rank {rank}: gradient differs by {grad_err}"


@pytest.mark.parametrize("name", sorted(ddp_cases()))
def test_distributed_flag_is_a_no_op_without_process_group(name):
    fn, inputs, _, kwargs = ddp_cases()[name]
    assert not dist.is_initialized()
    plain, gathered = fn(*inputs, **kwargs), fn(*inputs, distributed=True, **kwargs)
    assert torch.equal(plain, gathered)
