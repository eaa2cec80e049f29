"""Run every experiment's *paper* configuration for a few steps on the CPU.

Paper profiles run only on a lent GPU, where a crash costs scarce device time. This smoke run
keeps the paper's network sizes, batch sizes and grids but shrinks the training length and the
evaluation sets, so shape errors, bad settings and missing code paths show up on a laptop:

    python tools/paper_smoke.py [EXPERIMENT ...]

Nothing is written to results/: grid cells and checkpoints go to a temporary folder, removed
at the end.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback


def main(names: list[str]) -> int:
    os.environ.setdefault("SITH_PROGRESS", "0")
    with tempfile.TemporaryDirectory(prefix="paper-smoke-") as scratch:
        os.environ["SITH_CACHE_DIR"] = os.path.join(scratch, "results")
        return _run(names)


def _run(names: list[str]) -> int:
    from sithlib.experiments import EXPERIMENTS, get_experiment, shrink
    from sithlib.results import running_on

    failed = []
    for name in names or list(EXPERIMENTS):
        module = get_experiment(name)
        start = time.perf_counter()
        try:
            with running_on("cpu"):  # cells and checkpoints keyed by the device they ran on
                out = module.run(shrink(module.PROFILES["paper"]), "cpu")
            rows = {k: len(v) for k, v in out.items() if v is not None}
            print(f"ok    {name:24s} {time.perf_counter() - start:7.1f} s  rows {rows}", flush=True)
        except Exception:  # report every experiment, then fail
            failed.append(name)
            print(f"FAIL  {name:24s} {time.perf_counter() - start:7.1f} s", flush=True)
            traceback.print_exc()
    print(f"{len(failed)} failed: {', '.join(failed)}" if failed else "every paper config ran")
    return 1 if failed else 0


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
