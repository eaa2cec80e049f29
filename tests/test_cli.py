"""`python -m sithlib`: clear errors, never a bare traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from sithlib import cli, results
from sithlib.experiments import EXPERIMENTS


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sithlib", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nope"], "unknown experiment 'nope'; allowed: " + ", ".join(sorted(EXPERIMENTS))),
        (["run", "vmf_concentration", "--profile", "fast"], "unknown profile 'fast'"),
        (["run", "vmf_concentration", "--set", "n"], "malformed --set 'n'"),
        (["run", "vmf_concentration", "--set", "bogus=1"], "unknown config field 'bogus'"),
        (["run", "vmf_concentration", "--set", "n=ten"], "expected a value of type int"),
        (["run", "vmf_concentration", "--device", "tpu"], "unknown device 'tpu'"),
        (["run", "vmf_concentration", "--device", "cuda:x"], "unknown device 'cuda:x'"),
        (["bench", "dgp", "--device", "cuda:99"], "device 'cuda:99'"),
        (["run"], "name one EXPERIMENT or pass --all"),
        (["run", "vmf_concentration", "--all"], "name one EXPERIMENT or pass --all"),
        (["run", "--all", "--set", "n=3"], "--set applies to one experiment, not to --all"),
        (["run", "stability_monitor", "--set", "checksums=maybe"],
         "--set checksums=maybe: expected true or false"),
        (["bench", "nope"], "unknown benchmark(s) nope; allowed: "),
        (["run", "vmf_concentration", "--set", "seeds=0"],
         "--set seeds: the value must be > 0 for experiment vmf_concentration, got 0"),
        (["run", "platonic", "--set", "ema_tau0=1.5"], "ema_tau0: the value must be in [0, 1]"),
        (["run", "vmf_concentration", "--out", "results/vmf_concentration"],
         "inside the published results"),
        (["run", "vmf_concentration", "--set", "dims=()"], "--set dims=(): give at least one"),
        (["run", "infonce_sphere", "--set", "precision=fp8"],
         "--set precision: must be one of fp32, tf32, bf16, got 'fp8'"),
        (["run", "dynamics", "--set", "methods=infonce,foo"], "methods must be among"),
        (["run", "infonce_sphere", "--set", "batch_size=1"], "batch_size: the value must be in"),
        (["run", "infonce_sphere", "--set", "kappa=50"], "tau must be 1 / kappa = 0.02"),
    ],
)
def test_bad_input_gives_clear_error(args, message, capsys):
    assert cli.main(args) == 2
    out, err = capsys.readouterr()
    assert message in err and "Traceback" not in err
    assert "running" not in out  # rejected before any work starts


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_an_input_error(capsys):
    assert cli.main(["run", "vmf_concentration", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is available here; allowed: cpu" in err and "Traceback" not in err


def test_run_list_verify_end_to_end(store, tmp_path):
    env = {"SITH_RESULTS_DIR": str(store), "SITH_CACHE_DIR": str(tmp_path / "cache")}
    out = run_cli("run", "vmf_concentration", "--profile", "quick", "--set", "n=300",
                  "--set", "dims=3", "--set", "kappas=1,10", "--set", "seeds=1", env=env)
    assert out.returncode == 0, out.stderr
    assert "wrote" in out.stdout
    listed = run_cli("list", env=env)
    assert listed.returncode == 0 and "vmf_concentration" in listed.stdout
    assert "missing" in listed.stdout
    verified = run_cli("verify", env=env)
    assert verified.returncode == 0 and "0 problem(s)" in verified.stdout


def test_rerun_says_how_much_it_reused(store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SITH_CACHE_DIR", str(tmp_path / "cache" / "results"))
    args = ["run", "dynamics", "--device", "cpu"] + [
        a for kv in ("methods=infonce", "hidden=16", "head_dims=8,8", "steps=4", "eval_every=2",
                     "batch_size=32", "n_eval=100", "seeds=1", "init_scales=1")
        for a in ("--set", kv)]
    assert cli.main(args) == 0
    assert "reused" not in capsys.readouterr().out
    assert cli.main(args) == 0  # every grid cell is read back
    assert " s of it reused from earlier runs]" in capsys.readouterr().out


def test_verify_reports_corrupt_file_without_traceback(store, tmp_path, capsys):
    from sithlib import results

    result = results.run_experiment("vmf_concentration", "paper", device="cpu")
    (result.path / "config.json").write_text("{truncated")
    assert cli.main(["verify"]) == 1
    out = capsys.readouterr().out
    assert "config.json: not valid JSON" in out and "Traceback" not in out


def test_run_all_paper_skips_fresh(store, capsys, monkeypatch):
    from sithlib.experiments import vmf_concentration

    monkeypatch.setattr(cli, "EXPERIMENTS", {"vmf_concentration": vmf_concentration})
    assert cli.main(["run", "--all", "--profile", "paper", "--device", "cpu"]) == 0
    assert cli.main(["run", "--all", "--profile", "paper", "--device", "cpu"]) == 0
    assert "nothing to run" in capsys.readouterr().out
    manifest = json.loads((store / "MANIFEST.json").read_text())
    assert "vmf_concentration" in manifest["experiments"]


def test_bench_of_all_skips_a_benchmark_about_another_device(tmp_path, monkeypatch, capsys):
    """``python -m sithlib bench`` on a GPU runs every benchmark but the CPU-threads one."""
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    (folder / "bench_cpuonly.py").write_text(
        'DEVICES = ("cpu",)\n\ndef table(quick, device):\n    raise AssertionError\n')
    (folder / "bench_any.py").write_text(
        "import pandas as pd\n\ndef table(quick, device):\n"
        "    return pd.DataFrame({'case': [device], 'metric': ['x'], 'value': [1.0]})\n")
    monkeypatch.setattr(results, "repo_root", lambda: tmp_path)
    monkeypatch.setattr(results, "default_device", lambda: "cuda")
    assert cli.main(["bench", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "bench cpuonly: measures cpu only, skipped on cuda" in out
    assert "bench any on cuda" in out
    # Named on its own, it runs (and says why it cannot, on the wrong device).
    monkeypatch.setattr(results, "default_device", lambda: "cpu")
    with pytest.raises(AssertionError):
        cli.main(["bench", "cpuonly", "--quick"])
