"""The GPU-session tools run where a mistake costs scarce device time, so a syntax error or a
broken smoke run must fail here, on the CPU, first."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "tools").glob("*.sh")))
def test_shell_tools_parse(script):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash on this machine")
    out = subprocess.run([bash, "-n", str(ROOT / "tools" / script)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr


def test_paper_smoke_runs_a_paper_config_and_writes_nothing(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("paper_smoke", ROOT / "tools" / "paper_smoke.py")
    paper_smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paper_smoke)
    # main() points SITH_CACHE_DIR at a scratch folder; monkeypatch restores the old value.
    monkeypatch.setenv("SITH_CACHE_DIR", "unused")
    before = sorted(p.name for p in (ROOT / "results").iterdir())
    assert paper_smoke.main(["vmf_concentration"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok    vmf_concentration") and "every paper config ran" in out
    assert sorted(p.name for p in (ROOT / "results").iterdir()) == before
