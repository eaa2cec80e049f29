"""Pack what a lent GPU's call made into archives small enough to come back from it.

    python tools/pack_state.py OUT [--limit-mib 15]

A lent machine returns files of at most 16 MiB each. The results always come back, in
``OUT/results.tgz`` (``results/``: a few MB, under the 50 MB budget of ``verify``). The state
that lets the next call resume (finished grid cells under ``.cache/cells/``, training
checkpoints under ``.cache/checkpoints/``) goes into ``OUT/state.tgz`` up to the limit: whole
cells first, smallest first, then the checkpoints that still fit, smallest first. A cell is
never split (its ``done.json`` without its tables would read back as a finished, empty cell).
What is left behind is listed: the next call reruns that cell or trains that run from its
start. Runs with the standard library alone (the lent machine has no project environment).
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def units(root: Path) -> list[list[Path]]:
    """The resumable state as indivisible groups of files: each cell folder, each checkpoint."""
    def done(p: Path) -> bool:  # temporaries of atomic writes are never complete
        return p.is_file() and not p.name.startswith(".") and not p.name.endswith(".tmp")

    cells = sorted(d for d in (root / ".cache" / "cells").glob("*/*") if d.is_dir())
    groups = [sorted(p for p in d.rglob("*") if done(p)) for d in cells]
    groups = sorted((g for g in groups if g), key=lambda g: sum(p.stat().st_size for p in g))
    checkpoints = sorted((p for p in (root / ".cache" / "checkpoints").rglob("*.pt") if done(p)),
                         key=lambda p: p.stat().st_size)
    return groups + [[p] for p in checkpoints]


def pack(out: Path, limit: int, root: Path = ROOT) -> list[Path]:
    """Write ``out/results.tgz`` and ``out/state.tgz``; returns the files left behind."""
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "results.tgz", "w:gz") as tar:
        tar.add(root / "results", arcname="results")
    used, left = 0, []
    with tarfile.open(out / "state.tgz", "w:gz") as tar:
        for group in units(root):
            size = sum(p.stat().st_size for p in group)
            if used + size > limit:  # sizes before compression: float tensors barely compress
                left += group
                continue
            used += size
            for p in group:
                tar.add(p, arcname=str(p.relative_to(root)))
    return left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--limit-mib", type=float, default=15.0)
    args = parser.parse_args(argv)
    left = pack(args.out, int(args.limit_mib * 2**20))
    for p in left:
        print(f"left behind (over the {args.limit_mib:g} MiB a call returns): {p}")
    for name in ("results.tgz", "state.tgz"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size / 2**20:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
