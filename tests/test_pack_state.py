"""tools/pack_state.py: what a lent GPU's call returns fits its 16 MiB-a-file limit, the
results always come back, and a grid cell is never split."""

from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("pack_state", ROOT / "tools" / "pack_state.py")
pack_state = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pack_state)


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def names(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        return {m.name for m in tar.getmembers() if m.isfile()}


def test_results_always_come_back_and_the_state_keeps_whole_cells_under_the_limit(tmp_path):
    root, out = tmp_path / "repo", tmp_path / "out"
    write(root / "results" / "exp" / "metrics.csv", 500)
    cells = root / ".cache" / "cells" / "exp"
    for key, size in (("small", 100), ("mid", 300), ("big", 900)):
        write(cells / key / "metrics.csv", size)
        write(cells / key / "done.json", 10)
    write(cells / "mid" / ".metrics.csv.abc.tmp", 5)  # an unfinished atomic write
    write(cells / "unfinished" / "metrics.csv", 10)  # no done.json: rerun anyway
    ckpt = root / ".cache" / "checkpoints" / "exp"
    write(ckpt / "a-0.pt", 300)
    write(ckpt / "b-0.pt", 50)

    left = pack_state.pack(out, limit=700, root=root)
    assert sorted(p.name for p in out.iterdir()) == ["results.tgz", "state.tgz"]  # no temporaries

    assert names(out / "results.tgz") == {"results/exp/metrics.csv"}
    state = names(out / "state.tgz")
    # Cells first (110 + 310 bytes), then the checkpoints that still fit (50, then not 300).
    assert state == {".cache/cells/exp/small/metrics.csv", ".cache/cells/exp/small/done.json",
                     ".cache/cells/exp/mid/metrics.csv", ".cache/cells/exp/mid/done.json",
                     ".cache/checkpoints/exp/b-0.pt"}
    assert {p.relative_to(root).as_posix() for p in left} == {
        ".cache/cells/exp/big/metrics.csv", ".cache/cells/exp/big/done.json",
        ".cache/checkpoints/exp/a-0.pt"}


def test_cells_of_experiments_with_a_fresh_paper_result_stay_behind(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    write(root / "results" / "MANIFEST.json", 20)
    for experiment in ("done_exp", "open_exp"):
        write(root / ".cache" / "cells" / experiment / "k" / "metrics.csv", 10)
        write(root / ".cache" / "cells" / experiment / "k" / "done.json", 10)
    monkeypatch.setattr(pack_state, "_fresh_experiments", lambda: {"done_exp"})
    pack_state.pack(tmp_path / "out", limit=2**20, root=root)
    assert names(tmp_path / "out" / "state.tgz") == {".cache/cells/open_exp/k/metrics.csv",
                                                     ".cache/cells/open_exp/k/done.json"}


def test_no_cache_packs_the_results_and_an_empty_state(tmp_path):
    root = tmp_path / "repo"
    write(root / "results" / "MANIFEST.json", 20)
    assert pack_state.pack(tmp_path / "out", limit=2**20, root=root) == []
    assert names(tmp_path / "out" / "results.tgz") == {"results/MANIFEST.json"}
    assert names(tmp_path / "out" / "state.tgz") == set()
