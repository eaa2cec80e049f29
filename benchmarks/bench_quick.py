"""What each chapter's quick profile costs, end to end, from the command line.

Every experiment (or the ones named) runs as a reader's first ``make book`` runs it, before the
cache has it: ``python -m sithlib run NAME --profile quick`` in a fresh process, writing its
result to a temporary folder. Reported per experiment:

- ``command_s``: the wall time of the command, Python start-up, imports and result files
  included;
- ``experiment_s``: the experiment's own time (``wall_time_s`` of its env.json);
- for ``infonce_sphere``, ``r2_linear``: the held-out linear R² of the trained encoder (mean
  over seeds), the training engine's target for a two-core CPU (R² >= 0.95 within 2 minutes).

The experiments run one after the other; the machine should be otherwise idle. Usage::

    python -m sithlib bench quick                 # every experiment, stored
    python benchmarks/bench_quick.py [EXPERIMENT ...] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from sithlib.experiments import EXPERIMENTS
from sithlib.results import read_result

TARGET = "infonce_sphere"
# --quick: a smoke run of the command path only, a few steps of the target experiment.
SMOKE = ("--set", "steps=20", "--set", "eval_every=10", "--set", "n_eval=200")


def run_quick(name: str, device: str, extra: tuple[str, ...] = ()) -> list[dict]:
    """Rows (case, metric, value) of one timed ``python -m sithlib run NAME --profile quick``."""
    with tempfile.TemporaryDirectory() as out:
        # An empty cache of its own: finished grid cells (.cache/cells) of an earlier run would
        # otherwise be read back, and the sweep experiments would time as a few milliseconds.
        env = {**os.environ, "SITH_PROGRESS": "0",
               "SITH_CACHE_DIR": os.path.join(out, "cache", "results")}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "sithlib", "run", name, "--profile", "quick",
                               "--device", device, "--out", out, *extra],
                              capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{name}: quick run failed (exit {done.returncode}):\n"
                               f"{done.stderr[-2000:]}")
        result = read_result(Path(out))
    rows = [{"case": name, "metric": "command_s", "value": seconds},
            {"case": name, "metric": "experiment_s", "value": float(result.env["wall_time_s"])}]
    if name == TARGET:
        m = result.metrics
        r2 = m[(m.model == "infonce") & (m.metric == "r2_linear")].value.mean()
        rows.append({"case": name, "metric": "r2_linear", "value": float(r2)})
    return rows


def table(quick: bool = False, device: str = "cpu", names: list[str] | None = None
          ) -> pd.DataFrame:
    """One row per (experiment, metric), in the book's order, and the total over experiments."""
    if quick:
        return pd.DataFrame(run_quick(TARGET, device, SMOKE))
    rows = [row for name in (names or list(EXPERIMENTS)) for row in run_quick(name, device)]
    frame = pd.DataFrame(rows)
    total = frame[frame.metric != "r2_linear"].groupby("metric", sort=False).value.sum()
    return pd.concat([frame, pd.DataFrame({"case": "all", "metric": total.index,
                                           "value": total.values})], ignore_index=True)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="experiments (default: all)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of the command path")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    frame = table(args.quick, args.device, args.names or None)
    print(frame.pivot_table(index="case", columns="metric", values="value", sort=False))
    return frame


if __name__ == "__main__":
    main()
