"""``python -m sithlib {list, run, bench, verify}``: the command line of the results store."""

from __future__ import annotations

import argparse
import sys

from sithlib import results
from sithlib.experiments import EXPERIMENTS, get_experiment


def _list(args) -> int:
    for row in results.status_rows():
        print(f"{row['experiment']:<28} {row['paper_result']:<8} {row['chapter']}"
              f"  ({row['title']})")
    return 0


def _init_distributed(device: str | None) -> tuple[str | None, int]:
    """Under torchrun (WORLD_SIZE > 1): join the process group; returns (device, rank)."""
    import os

    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device, 0
    cuda = torch.cuda.is_available() and device != "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return device or "cpu", dist.get_rank()


def _run(args) -> int:
    args.device, rank = _init_distributed(args.device)
    if rank != 0:  # every process trains; only the first one keeps the result files
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            args.out = scratch
            return _run_all(args)
    return _run_all(args)


def import_plugins(items) -> None:
    """Import each module name or ``.py`` file (``--import``), for the methods it registers."""
    import importlib
    import importlib.util
    from pathlib import Path

    for item in items or ():
        path = Path(item)
        if item.endswith(".py"):
            if not path.is_file():
                raise ValueError(f"--import {item}: no such file")
            name = f"sithlib_plugin_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # inspect.getsource finds a class through its module
            spec.loader.exec_module(module)
        else:
            try:
                importlib.import_module(item)
            except ModuleNotFoundError as err:
                if err.name != item and not item.startswith(f"{err.name}."):
                    # The module exists but imports one that is missing: name that one.
                    raise ValueError(f"--import {item}: it imports {err.name!r}, which is not "
                                     "installed") from None
                raise ValueError(f"--import {item}: no module or .py file of that name "
                                 f"({err})") from None


def _run_all(args) -> int:
    if args.all == bool(args.experiment):
        raise ValueError("name one EXPERIMENT or pass --all")
    import_plugins(args.imports)
    overrides = results.parse_overrides(args.set)
    if args.all:
        names = [n for n in EXPERIMENTS
                 if args.profile != "paper" or results.paper_status(n)[0] != "fresh"]
        if overrides:
            raise ValueError("--set applies to one experiment, not to --all")
        if not names:
            print("every paper result is present and fresh; nothing to run")
    else:
        names = [args.experiment]
    for name in names:  # every input error is reported before any work starts
        results.resolve_config(get_experiment(name), args.profile, overrides or None)
        if args.out is not None:
            results.check_out(args.out, name)
    for name in names:
        print(f"running {name} (profile {args.profile}) ...", flush=True)
        result = results.run_experiment(name, args.profile, overrides or None, args.device,
                                        args.out)
        env = result.env
        # The wall time is what the result cost, cached cells and resumed training included;
        # say how much of it this call reused, or a rerun of a finished sweep looks like work.
        reused = (f", {env['reused_s']} s of it reused from earlier runs"
                  if env.get("reused_s") else "")
        print(f"wrote {result.path}  [{env['wall_time_s']} s on {env['device_name']}{reused}]")
    return 0


def _verify(args) -> int:
    if args.fix:
        print(f"rewrote {results.update_manifest()}")
    problems, notes = results.verify()
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print(f"verify: {len(problems)} problem(s), {len(notes)} note(s)")
    return 1 if problems else 0


def _bench(args) -> int:
    import importlib.util
    import time

    folder = results.repo_root() / "benchmarks"
    found = {p.stem.removeprefix("bench_"): p for p in sorted(folder.glob("bench_*.py"))}
    names = args.names or list(found)
    unknown = [n for n in names if n not in found]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; allowed: {', '.join(found)}")
    device = args.device or results.default_device()
    for name in names:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", found[name])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        # A benchmark about one kind of device (DEVICES) is skipped, not failed, in a run of all.
        kinds = getattr(module, "DEVICES", None)
        if not args.names and kinds and device.split(":")[0] not in kinds:
            print(f"bench {name}: measures {' or '.join(kinds)} only, skipped on {device}")
            continue
        print(f"bench {name} on {device} ...", flush=True)
        start = time.perf_counter()
        table = module.table(quick=args.quick, device=device)
        env = results.environment(device, time.perf_counter() - start)
        print(table.pivot_table(index="case", columns="metric", values="value", sort=False)
              .to_string(float_format=lambda v: f"{v:.4g}"))
        if not args.quick:
            command = f"python -m sithlib bench {name}" + (f" --device {args.device}"
                                                           if args.device else "")
            # A benchmark may attach more provenance (e.g. the configs it counted) to its table.
            config = {"command": command, **table.attrs.get("config", {})}
            results.write_benchmark(name, table, env, config)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sithlib",
        description="The command line of the results store: list the experiments, run them, "
                    "measure the benchmarks, verify the committed results.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="experiments and the state of their paper results").set_defaults(
        func=_list)
    run = sub.add_parser("run", help="run an experiment and write its result files")
    run.add_argument("experiment", nargs="?", help=f"one of: {', '.join(sorted(EXPERIMENTS))}")
    run.add_argument("--all", action="store_true",
                     help="every experiment (with --profile paper: those missing or stale)")
    run.add_argument("--profile", default="quick", help="quick or paper (default quick)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    run.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    run.add_argument("--out", default=None, help="write here instead of the default folder")
    run.add_argument("--import", dest="imports", action="append", metavar="MODULE_OR_FILE",
                     help="import a module or .py file first, e.g. one that registers a method "
                          "with sithlib.methods.register_method")
    run.set_defaults(func=_run)
    bench = sub.add_parser("bench", help="run benchmarks/bench_*.py and store their tables")
    bench.add_argument("names", nargs="*", help="benchmark names (default: all)")
    bench.add_argument("--quick", action="store_true", help="smoke run, nothing is stored")
    bench.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    bench.set_defaults(func=_bench)
    verify = sub.add_parser("verify", help="check committed results: hashes, staleness, budget")
    verify.add_argument("--fix", action="store_true", help="rewrite results/MANIFEST.json first")
    verify.set_defaults(func=_verify)
    return parser


def _check_cuda(device: str | None) -> None:
    """A CUDA device that this machine lacks is an input error, not a CUDA traceback."""
    if device is None or not device.startswith("cuda"):
        return
    import torch

    count = torch.cuda.device_count()
    index = device.partition(":")[2]
    if index and not index.isdigit():
        raise ValueError(f"unknown device {device!r}; allowed: cpu, cuda, cuda:N")
    if count == 0:
        raise ValueError(f"device {device!r}: no CUDA GPU is available here; allowed: cpu")
    if index and int(index) >= count:
        raise ValueError(f"device {device!r}: this machine has {count} CUDA GPU(s); "
                         f"allowed: cuda:0 to cuda:{count - 1}, cpu")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "profile", None) is not None:
            results.check_profile(args.profile, results.RUN_PROFILES)
        if getattr(args, "device", None) not in (None, "cpu") and not str(args.device).startswith(
                "cuda"):
            raise ValueError(f"unknown device {args.device!r}; allowed: cpu, cuda, cuda:N")
        _check_cuda(getattr(args, "device", None))
        return args.func(args)
    except (ValueError, results.ResultsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a folder that vanished: said plainly, not traced
        print(f"error: {err}", file=sys.stderr)
        return 1
