"""Execute every chapter against paper-shaped results, on the CPU, before any GPU run.

``tools/paper_smoke.py`` proves that each paper configuration runs. This goes one step further:
each missing paper result is made by the paper configuration shrunk to a few steps
(:func:`sithlib.experiments.shrink`: the paper's grids, methods, rows and networks, tiny
training and evaluation sets), stored in a scratch copy of ``results/`` *as if* it were the
paper result, and then every chapter runs with the profile ``cached``, the way ``make book``
will run once the real paper results are committed. A chapter whose code only works on the
quick profile's shapes (fewer rows, settings, methods or evaluation points) fails here, on a
laptop, instead of after scarce GPU time:

    python tools/paper_book_smoke.py [--keep] [EXPERIMENT ...]

The numbers are meaningless (four training steps); a failing *assertion about the science* in
a chapter is expected there and is reported separately from code errors. Nothing in the
repository changes: results, caches and executed notebooks go to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
from book import ROOT, execute, resolve, toc_files  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", help="only these (default: every one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="paper-book-smoke-"))
    results = scratch / "results"
    shutil.copytree(ROOT / "results", results)  # committed paper results and benchmarks stay
    os.environ["SITH_RESULTS_DIR"] = str(results)
    os.environ["SITH_CACHE_DIR"] = str(scratch / "cache")
    os.environ["SITH_PROGRESS"] = "0"
    from sithlib.experiments import EXPERIMENTS, get_experiment, shrink
    from sithlib.results import environment, paper_status, running_on, write_result

    names = args.experiments or list(EXPERIMENTS)
    for name in names:
        module = get_experiment(name)
        status = paper_status(name)[0]
        if status == "fresh":
            print(f"paper  {name:24s} committed result", flush=True)
            continue
        start = time.perf_counter()
        with running_on("cpu"):  # cells and checkpoints keyed by the device they ran on
            tables = module.run(shrink(module.PROFILES["paper"]), "cpu")
        took = time.perf_counter() - start
        # Filed under the paper configuration, so the chapter takes it for the paper result.
        write_result(results / name, name, module.VERSION, "paper", module.PROFILES["paper"],
                     tables, environment("cpu", took))
        print(f"smoke  {name:24s} {took:7.1f} s (was {status})", flush=True)

    chapters = {module.CHAPTER for name, module in EXPERIMENTS.items() if name in names}
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    failures = {}
    for entry in toc_files(toc):
        source = resolve(entry)
        # Every notebook (the appendix reads every result) unless experiments were named.
        if source.suffix != ".ipynb" or (args.experiments and entry not in chapters):
            continue
        start = time.perf_counter()
        error = execute(source, scratch / "executed" / source.relative_to(ROOT), "cached")
        print(f"{'FAILED' if error else 'ok':>6}  {entry}  ({time.perf_counter() - start:.1f} s)",
              flush=True)
        if error:
            failures[entry] = error
    for entry, error in failures.items():
        kind = "assertion (expected from 4-step numbers?)" if "AssertionError" in error \
            else "code error"
        print(f"\n===== {entry}: {kind} =====\n{error}", file=sys.stderr)
    if args.keep:
        print(f"scratch folder: {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{len(failures)} chapter(s) failed" if failures else "every chapter ran on "
          "paper-shaped results")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
