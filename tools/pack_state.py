"""Pack what a lent GPU's call made into archives small enough to come back from it.

    python tools/pack_state.py OUT [--limit-mib 15]

A lent machine returns files of at most 16 MiB each. The results come back in
``OUT/results.tgz`` (``results/``: a few MB; the script fails loudly if they ever outgrow the
limit). The state that lets the next call resume goes into ``OUT/state.tgz`` up to the limit:
finished grid cells (``.cache/cells/``) first, smallest first, then the training checkpoints
(``.cache/checkpoints/``) that still fit, smallest first. A cell is never split (its
``done.json`` without its tables would read back as a finished, empty cell); unfinished cells
and the cells of experiments whose paper result is already fresh stay behind. What is left
behind is listed: the next call reruns that cell or trains that run from its start. Both
archives are written atomically (``sithlib.results.atomic_write_bytes``), so a killed call
never leaves half an archive in place of the previous state.
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path

from sithlib.experiments import EXPERIMENTS
from sithlib.results import atomic_write_bytes, paper_status

ROOT = Path(__file__).resolve().parents[1]


def units(root: Path) -> list[list[Path]]:
    """The resumable state as indivisible groups of files: each cell folder, each checkpoint."""
    def done(p: Path) -> bool:  # temporaries of atomic writes are never complete
        return p.is_file() and not p.name.startswith(".") and not p.name.endswith(".tmp")

    fresh = _fresh_experiments()
    cells = sorted(d for d in (root / ".cache" / "cells").glob("*/*")
                   if (d / "done.json").is_file() and d.parent.name not in fresh)
    groups = [sorted(p for p in d.rglob("*") if done(p)) for d in cells]
    groups = sorted((g for g in groups if g), key=lambda g: sum(p.stat().st_size for p in g))
    checkpoints = sorted((p for p in (root / ".cache" / "checkpoints").rglob("*.pt") if done(p)),
                         key=lambda p: p.stat().st_size)
    return groups + [[p] for p in checkpoints]


def _fresh_experiments() -> set[str]:
    """Experiments whose committed paper result is current: their cells are spent."""
    return {name for name in EXPERIMENTS if paper_status(name)[0] == "fresh"}


def _write_tgz(path: Path, files: list[Path], root: Path) -> None:
    """A gzipped tarball of ``files`` (paths relative to ``root``), written atomically."""
    buffer = io.BytesIO()  # at most the limit: small enough to build in memory
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for p in files:
            tar.add(p, arcname=str(p.relative_to(root)))
    atomic_write_bytes(path, buffer.getvalue())


def pack(out: Path, limit: int, root: Path = ROOT) -> list[Path]:
    """Write ``out/results.tgz`` and ``out/state.tgz``; returns the files left behind."""
    _write_tgz(out / "results.tgz", [root / "results"], root)
    used, kept, left = 0, [], []
    for group in units(root):
        size = sum(p.stat().st_size for p in group)
        if used + size > limit:  # sizes before compression: float tensors barely compress
            left += group
        else:
            used += size
            kept += group
    _write_tgz(out / "state.tgz", kept, root)
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
    if (args.out / "results.tgz").stat().st_size > 16 * 2**20:
        print("results.tgz is over the 16 MiB a lent machine returns: it will not come back")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
