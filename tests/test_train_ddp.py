"""Two gloo processes on the CPU train exactly like one process on the global batch."""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from sithlib.train import train
from tests.test_train import CFG, make_model, regression, sample

DDP_CFG = dataclasses.replace(CFG, seeds=2, ensemble=False, steps=12, eval_every=6)


def _worker(rank: int, world: int, store: str, out: str):
    _join(rank, world, store)
    try:
        result = train(make_model, sample, regression, DDP_CFG)
        if rank == 0:
            torch.save({"params": [[p.detach() for p in m.parameters()] for m in result.models],
                        "curves": result.curves}, out)
    finally:
        torch_dist.destroy_process_group()


def _join(rank: int, world: int, store: str):
    # A file store, not a TCP port picked in advance: under pytest-xdist another worker could
    # take that port between the pick and the bind.
    torch_dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                  world_size=world)


def test_two_process_ddp_matches_single_process_global_batch(tmp_path):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), out), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    single = train(make_model, sample, regression, DDP_CFG)
    for ps, ms in zip(ddp["params"], single.models, strict=True):
        for p, q in zip(ps, ms.parameters(), strict=True):
            torch.testing.assert_close(p, q.detach(), rtol=1e-6, atol=1e-6)
    for a, b in zip(ddp["curves"], single.curves, strict=True):
        assert a["step"] == b["step"] and abs(a["loss"] - b["loss"]) < 1e-5


def test_torchrun_two_processes_match_one_process(tmp_path):
    """`torchrun -m sithlib run` with 2 gloo processes gives the single-process numbers."""
    import shutil
    import subprocess
    import sys

    from sithlib.results import read_result

    sets = ["--set", "steps=40", "--set", "eval_every=20", "--set", "n_eval=400",
            "--set", "hidden=32", "--set", "batch_size=128", "--device", "cpu"]
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    env = {**os.environ, "SITH_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    # --standalone: torchrun picks and holds its own free port.
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2",
                          "-m", "sithlib", "run", "infonce_sphere", "--out", str(tmp_path / "two"),
                          *sets], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([sys.executable, "-m", "sithlib", "run", "infonce_sphere", "--out",
                          str(tmp_path / "one"), *sets], capture_output=True, text=True, env=env,
                         timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    a, b = read_result(tmp_path / "two").metrics, read_result(tmp_path / "one").metrics
    assert list(a.metric) == list(b.metric)
    assert (a.value - b.value).abs().max() < 1e-4


# -- methods under the engine: state, frozen layers, a loss that calls submodules -------------

D_IN, D_FEAT = 6, 4
METHOD_CFG = dataclasses.replace(CFG, seeds=1, steps=8, eval_every=4, batch_size=32, lr=1e-2)
METHODS = {
    # DINO: EMA teacher, the center buffer (all-reduced), the last layer frozen for 3 steps.
    "dino": {"out_dim": 20, "hidden_dim": 32, "bottleneck_dim": 8, "tau0": 0.9,
             "freeze_last_layer_steps": 3},
    # SwAV: Sinkhorn over the gathered batch, prototypes without a gradient for 3 steps.
    "swav": {"proj_hidden_dim": 32, "proj_dim": 8, "num_prototypes": 10,
             "freeze_prototypes_steps": 3, "epsilon": 0.5},
    # InfoNCE through a loss_fn that calls the encoder directly, not the method's forward.
    "infonce": {"negatives": "anchors", "normalize": True},
}


def _method(name: str):
    from sithlib.methods import build_method
    from sithlib.models import MLP

    def make(seed: int):
        g = torch.Generator().manual_seed(seed)
        return build_method(name, MLP([D_IN, 32, D_FEAT], generator=g), METHODS[name],
                            generator=g)
    return make


def _pairs(generator: torch.Generator, n: int):
    z = torch.randn(n, D_IN, generator=generator)
    return (z + 0.1 * torch.randn(n, D_IN, generator=generator),
            z + 0.1 * torch.randn(n, D_IN, generator=generator))


def _method_loss(method, batch):
    from sithlib.losses import info_nce

    x_a, x_b = batch
    if method.name == "infonce":
        h = method.encoder(x_a)
        return info_nce(h, method.encoder(x_b), temperature=0.5, distributed=True), h
    loss, logs = method(x_a, x_b)
    return loss, method.embed(x_a), {"center_norm": logs["center_norm"]}


def _method_worker(rank: int, world: int, store: str, out: str):
    torch.set_num_threads(1)
    _join(rank, world, store)
    try:
        states = {name: train(_method(name), _pairs, _method_loss, METHOD_CFG).models[0]
                  .state_dict() for name in METHODS}
        torch.save(states, out.format(rank=rank))
    finally:
        torch_dist.destroy_process_group()


def _has_batch_norm(model) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_two_process_methods_match_single_process_global_batch(tmp_path):
    """Replicas stay equal; without BatchNorm (per process on gloo) they equal one process."""
    out = str(tmp_path / "rank{rank}.pt")
    mp.spawn(_method_worker, args=(2, str(tmp_path / "store"), out), nprocs=2, join=True)
    ranks = [torch.load(out.format(rank=r), weights_only=False) for r in range(2)]
    for name in METHODS:
        single = train(_method(name), _pairs, _method_loss, METHOD_CFG).models[0]
        init = _method(name)(METHOD_CFG.first_seed).state_dict()
        ref = single.state_dict()
        floats = [k for k, v in ref.items() if torch.is_tensor(v) and v.is_floating_point()]
        params = dict(single.named_parameters())
        for key in floats:
            if key in params or not _has_batch_norm(single):  # running statistics are local
                torch.testing.assert_close(ranks[1][name][key], ranks[0][name][key], rtol=0,
                                           atol=0, msg=f"{name}: replicas differ in {key}")
            if not _has_batch_norm(single):
                torch.testing.assert_close(ranks[0][name][key], ref[key], rtol=1e-5, atol=1e-5,
                                           msg=f"{name}: {key} differs from one process")
        # Everything trained, the layers frozen for the first 3 steps included.
        still = [k for k in floats if k in params and params[k].requires_grad
                 and torch.equal(ranks[0][name][k], init[k])]
        assert not still, f"{name}: {still} never moved"
    assert {n for n in METHODS if not _has_batch_norm(_method(n)(0))} == {"dino", "infonce"}
