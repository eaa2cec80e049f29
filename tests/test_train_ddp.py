"""Two gloo processes on the CPU train exactly like one process on the global batch."""

from __future__ import annotations

import dataclasses
import os
import socket

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from sithlib.train import train
from tests.test_train import CFG, make_model, regression, sample

DDP_CFG = dataclasses.replace(CFG, seeds=2, ensemble=False, steps=12, eval_every=6)


def _worker(rank: int, world: int, port: int, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch_dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = train(make_model, sample, regression, DDP_CFG)
        if rank == 0:
            torch.save({"params": [[p.detach() for p in m.parameters()] for m in result.models],
                        "curves": result.curves}, out)
    finally:
        torch_dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_single_process_global_batch(tmp_path):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
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
    two = subprocess.run([torchrun, "--nproc_per_node=2", "--master_port", str(_free_port()),
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
