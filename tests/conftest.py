"""Shared fixtures: an isolated results store and a tiny experiment config."""

from __future__ import annotations

import dataclasses

import pytest

from sithlib.experiments import vmf_concentration

TINY = vmf_concentration.Config(dims=(3,), kappas=(0.0, 5.0), n=400, seeds=1)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Empty results/ and cache folders, and a small paper config, so tests never touch the repo."""
    results, cache = tmp_path / "results", tmp_path / "cache"
    results.mkdir()
    monkeypatch.setenv("SITH_RESULTS_DIR", str(results))
    monkeypatch.setenv("SITH_CACHE_DIR", str(cache))
    monkeypatch.setitem(vmf_concentration.PROFILES, "quick", TINY)
    monkeypatch.setitem(vmf_concentration.PROFILES, "paper", dataclasses.replace(TINY, n=800))
    return results
