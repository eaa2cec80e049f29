"""Every experiment runs end to end at a tiny size and returns tidy tables."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest

from sithlib.experiments import EXPERIMENTS, infonce_sphere, vmf_concentration

TINY = {
    "vmf_concentration": dataclasses.replace(vmf_concentration.PROFILES["quick"], n=300,
                                             dims=(3, 10), kappas=(0.0, 10.0), seeds=2),
    "infonce_sphere": dataclasses.replace(infonce_sphere.PROFILES["quick"], steps=60,
                                          eval_every=30, n_eval=400, hidden=(32,), seeds=2,
                                          batch_size=64),
}
# An experiment's own test file (tests/test_exp_<name>.py) may declare TINY = {name: config}.
for _path in sorted(Path(__file__).parent.glob("test_exp_*.py")):
    TINY.update(importlib.import_module(f"tests.{_path.stem}").TINY)


def test_every_experiment_has_a_tiny_config():
    missing = sorted(set(EXPERIMENTS) - set(TINY))
    assert not missing, (f"no tiny config for {', '.join(missing)}: add tests/test_exp_<name>.py "
                         "with TINY = {NAME: Config(...)}, a config that runs in seconds")
    assert set(TINY) == set(EXPERIMENTS)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_runs_and_is_tidy(name, tmp_path, monkeypatch):
    module = EXPERIMENTS[name]
    # Each run with its own empty cache (grid cells and checkpoints live beside the cached
    # results): a sweep's cached cells would otherwise let the second run read the first's
    # numbers (or a stale checkout's) instead of recomputing them.
    monkeypatch.setenv("SITH_CACHE_DIR", str(tmp_path / "first" / "results"))
    tables = module.run(TINY[name], device="cpu")
    metrics = tables["metrics"]
    assert {"metric", "value", "seed"} <= set(metrics.columns)
    assert metrics.value.notna().all() and len(metrics) > 0
    monkeypatch.setenv("SITH_CACHE_DIR", str(tmp_path / "second" / "results"))
    again = module.run(TINY[name], device="cpu")["metrics"]
    assert metrics.equals(again), "same config and seeds must give the same numbers"


def test_infonce_learns_beyond_the_raw_baseline():
    cfg = dataclasses.replace(TINY["infonce_sphere"], steps=900, eval_every=300, hidden=(128, 128),
                              batch_size=256, seeds=1)
    tables = infonce_sphere.run(cfg, device="cpu")
    m = tables["metrics"]
    learned = m[(m.model == "infonce") & (m.metric == "r2_linear")].value.item()
    raw = m[(m.model != "infonce") & (m.metric == "r2_linear")].value.item()
    assert learned > raw + 0.05
    assert list(tables["curves"].step) == [300, 600, 900]
    assert (m[m.metric == "singular_value"].groupby("seed").size() == cfg.dim).all()
    table = infonce_sphere.summary_table(m)
    assert set(table.index) == {"InfoNCE", "raw x (no encoder)"}
    assert list(table.columns) == ["linear R²", "MCC", "orthogonality", "seeds"]


def test_trains_tells_training_experiments_from_numerical_checks():
    from sithlib.experiments import EXPERIMENTS, trains

    checks = {"vmf_concentration", "identifiability_classes", "vicreg_derivation",
              "entropy_estimators"}
    trainers = {"infonce_mismatch", "infonce_sphere", "content_style", "diet_clusters",
                "platonic", "vicreg_information", "vicreg_assumptions", "stability_mechanism",
                "stability_monitor", "collapse_ablations", "simplified_objective", "dynamics",
                "finite_samples", "inductive_biases"}
    # The book's experiments (a fork's own ones are classified as well, by their code).
    assert {n for n in EXPERIMENTS if not trains(n)} >= checks
    assert {n for n in EXPERIMENTS if trains(n)} >= trainers
    assert checks | trainers <= set(EXPERIMENTS)
    # platonic trains through another experiment's code as well as the engine's
    assert trains("platonic") and trains("infonce_sphere")


def test_table_cells_print_mean_and_sd_without_spaces():
    import pandas as pd

    from sithlib.experiments._tables import mean_sd, of_agg, of_values

    assert mean_sd(0.5, 0.01) == "0.500±0.010" and mean_sd(0.5) == "0.500"
    assert mean_sd(0.5, float("nan")) == "0.500"
    assert mean_sd(123.456, 0.0123, "{:.3g}", "{:.2g}") == "123±0.012"
    assert of_values(pd.Series([1.0, 3.0]), "{:.1f}") == "2.0±1.4"
    assert of_values(pd.Series([2.0])) == "2.000"  # one seed: no spread
    agg = pd.DataFrame({"mean": [1.0, 2.0], "std": [0.5, float("nan")]}, index=["a", "b"])
    assert of_agg(agg, "{:.1f}").to_dict() == {"a": "1.0±0.5", "b": "2.0"}
    # A format per metric (the last index level); the others keep the default.
    assert of_agg(agg, "{:.1f}", fmts={"b": "{:.3f}"}).to_dict() == {"a": "1.0±0.5", "b": "2.000"}


def test_sentence_pieces():
    from sithlib.experiments import and_join, number

    assert [and_join(x) for x in (["a"], ["a", "b"], ("a", "b", "c"))] == [
        "a", "a and b", "a, b and c"]
    with pytest.raises(ValueError, match="at least one"):
        and_join([])
    assert number(-0.0634, 2) == "\u22120.06" and number(3.5, 1) == "3.5"


def test_readable_tables_use_the_display_names():
    import pandas as pd

    from sithlib.experiments._tables import METHOD_LABELS, readable
    from sithlib.methods import METHODS

    # Every method has a display name, and no two methods or scores share one.
    assert set(METHODS) - {"stability"} <= set(METHOD_LABELS)
    assert len(set(METHOD_LABELS.values())) == len(METHOD_LABELS)
    table = pd.DataFrame({"r2_linear": [0.9], "seeds": [3]},
                         index=pd.Index(["barlow_twins"], name="method"))
    table.columns.name = "metric"
    out = readable(table)
    assert list(out.index) == ["Barlow Twins"] and list(out.columns) == ["linear R²", "seeds"]
    assert out.columns.name is None and out.index.name == "method"
