"""The results store: profiles, staleness, atomic writes, corruption, manifest, budget."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import typing

import pandas as pd
import pytest
import torch

from sithlib import results
from sithlib.experiments import vmf_concentration
from tests.conftest import TINY


def test_config_hash_is_stable_and_sensitive():
    h = results.config_hash("e", 1, TINY)
    assert h == results.config_hash("e", 1, dataclasses.replace(TINY))
    assert h != results.config_hash("e", 2, TINY)
    assert h != results.config_hash("e", 1, dataclasses.replace(TINY, n=401))
    assert h != results.config_hash("other", 1, TINY)


def test_paper_run_writes_provenance_and_manifest(store):
    result = results.run_experiment("vmf_concentration", "paper", device="cpu")
    assert result.path == store / "vmf_concentration"
    assert {p.name for p in result.path.iterdir()} == {"metrics.csv", "config.json", "env.json"}
    for key in ("sithlib_version", "git_commit", "torch", "cuda", "device", "device_name",
                "wall_time_s", "date"):
        assert key in result.env
    import numpy
    import sklearn

    assert result.env["packages"]["numpy"] == numpy.__version__
    assert result.env["packages"]["scikit-learn"] == sklearn.__version__
    assert set(result.metrics.columns) >= {"metric", "value", "seed", "d", "kappa"}
    manifest = json.loads((store / "MANIFEST.json").read_text())
    entry = manifest["experiments"]["vmf_concentration"]
    assert entry["config_hash"] == result.config["config_hash"]
    assert entry["files"]["metrics.csv"] == results.sha256_file(result.path / "metrics.csv")
    assert results.verify(store)[0] == []


def test_auto_uses_fresh_paper_result_without_banner(store):
    results.run_experiment("vmf_concentration", "paper", device="cpu")
    shown = results.load_or_run("vmf_concentration", profile="auto")
    assert shown.profile == "paper" and shown.banner is None and shown.paper_grade
    assert "Provenance" in shown._repr_html_()


def test_provenance_gives_wall_time_in_seconds_and_long_ones_in_minutes():
    assert [results._duration(s) for s in (0.53, 8.44, 254.097, 3690.798, None)] == [
        "0.5 s", "8.4 s", "254 s", "3691 s (61.5 min)", "? s"]


def test_changed_config_makes_result_stale(store, monkeypatch):
    results.run_experiment("vmf_concentration", "paper", device="cpu")
    monkeypatch.setitem(vmf_concentration.PROFILES, "paper", dataclasses.replace(TINY, n=900))
    assert results.paper_status("vmf_concentration")[0] == "stale"
    with pytest.raises(results.StaleResultError, match="sithlib run vmf_concentration"):
        results.load_or_run("vmf_concentration", profile="cached")
    shown = results.load_or_run("vmf_concentration", profile="auto")
    assert shown.profile == "quick" and not shown.paper_grade
    assert "stale" in shown.banner and "--profile paper" in shown.banner
    assert "Not paper-grade" in shown._repr_html_()
    problems, _ = results.verify(store)
    assert any(p.startswith("stale:") for p in problems)


def test_version_bump_makes_result_stale(store, monkeypatch):
    results.run_experiment("vmf_concentration", "paper", device="cpu")
    monkeypatch.setattr(vmf_concentration, "VERSION", vmf_concentration.VERSION + 1)
    assert results.paper_status("vmf_concentration")[0] == "stale"


def test_missing_result_cached_errors_and_auto_falls_back(store):
    with pytest.raises(results.MissingResultError, match="--profile paper"):
        results.load_or_run("vmf_concentration", profile="cached")
    shown = results.load_or_run("vmf_concentration", profile="auto")
    assert shown.profile == "quick" and "no paper-profile result" in shown.banner


def test_quick_results_are_cached_by_config_hash(store, tmp_path):
    first = results.load_or_run("vmf_concentration", profile="quick")
    mtime = (first.path / "metrics.csv").stat().st_mtime_ns
    again = results.load_or_run("vmf_concentration", profile="quick")
    assert again.path == first.path
    assert (again.path / "metrics.csv").stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(first.metrics, again.metrics)
    other = results.load_or_run("vmf_concentration", {"n": 500}, profile="quick")
    assert other.path != first.path and other.config["config"]["n"] == 500


def test_same_seed_same_numbers(store, tmp_path):
    a = results.run_experiment("vmf_concentration", "quick", device="cpu", out=tmp_path / "a")
    b = results.run_experiment("vmf_concentration", "quick", device="cpu", out=tmp_path / "b")
    pd.testing.assert_frame_equal(a.metrics, b.metrics)


def test_corrupt_cache_entry_is_recomputed(store):
    first = results.load_or_run("vmf_concentration", profile="quick")
    (first.path / "metrics.csv").write_text("garbage\n")
    again = results.load_or_run("vmf_concentration", profile="quick")
    pd.testing.assert_frame_equal(first.metrics, again.metrics)


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("config.json", "{not json", "not valid JSON"),
        ("config.json", "[1, 2]", "expected a JSON object"),
        ("config.json", '{"experiment": "x"}', "missing field"),
        ("metrics.csv", "a,b\n1,2\n", "missing column"),
        ("metrics.csv", "metric,value,seed\nm,abc,0\n", "non-numeric"),
        ("env.json", "", "not valid JSON"),
        ("env.json", None, r"missing \(every result needs it\)"),
        ("metrics.csv", None, r"missing \(every result needs it\)"),
        ("metrics.csv", b"\xff\xfe\x00binary\x00", "not a readable CSV"),
        ("metrics.csv", 'metric,value,seed\n"unterminated\n', "not a readable CSV"),
    ],
)
def test_corrupt_file_gives_clear_error(store, filename, content, message):
    result = results.run_experiment("vmf_concentration", "paper", device="cpu")
    path = result.path / filename
    if content is None:
        path.unlink()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(results.CorruptResultError, match=message) as err:
        results.load_or_run("vmf_concentration", profile="cached")
    assert filename in str(err.value)


def test_read_result_of_a_missing_folder(tmp_path):
    with pytest.raises(results.MissingResultError, match="no result folder") as err:
        results.read_result(tmp_path / "nowhere")
    assert "nowhere" in str(err.value)


def test_verify_detects_edits_unlisted_files_and_pickles(store):
    result = results.run_experiment("vmf_concentration", "paper", device="cpu")
    metrics = result.path / "metrics.csv"
    metrics.write_text(metrics.read_text() + "\n")  # any edit changes the sha256
    (result.path / "extra.csv").write_text("x\n1\n")
    (result.path / "model.pt").write_bytes(b"\x80\x04")
    problems, _ = results.verify(store)
    text = "\n".join(problems)
    assert "sha256 differs" in text and "extra.csv" in text and "never committed" in text


def test_verify_reports_a_manifest_of_the_wrong_shape_and_a_missing_folder(store, tmp_path):
    results.run_experiment("vmf_concentration", "paper", device="cpu")
    manifest = store / "MANIFEST.json"
    good = json.loads(manifest.read_text())
    for broken, message in (({**good, "experiments": []}, "'experiments' must be a JSON object"),
                            ({**good, "experiments": {"vmf_concentration": {"files": None}}},
                             "the entry of 'vmf_concentration' must be an object")):
        manifest.write_text(json.dumps(broken))
        assert any(message in p for p in results.verify(store)[0])
    problems, notes = results.verify(tmp_path / "nowhere")
    assert problems == [f"{tmp_path / 'nowhere'}: the results folder does not exist or is not a "
                        "folder"] and notes == []


def test_out_never_replaces_published_or_other_results(store, tmp_path):
    published = results.run_experiment("vmf_concentration", "paper", device="cpu").path
    before = (published / "metrics.csv").read_bytes()
    (tmp_path / "afile").write_text("x")
    for out, message in ((published, "inside the published results"),
                         (store / "elsewhere", "inside the published results"),
                         (tmp_path / "afile", "exists and is not a folder"),
                         (tmp_path / "afile" / "below", "cannot create or write in")):
        with pytest.raises(ValueError, match=message):
            results.run_experiment("vmf_concentration", "quick", device="cpu", out=out)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"experiment": "entropy_estimators"}))
    with pytest.raises(ValueError, match="holds a result of experiment 'entropy_estimators'"):
        results.check_out(other, "vmf_concentration")
    assert (published / "metrics.csv").read_bytes() == before
    mine = tmp_path / "mine"  # a folder of the same experiment is rewritten
    results.run_experiment("vmf_concentration", "quick", device="cpu", out=mine)
    results.run_experiment("vmf_concentration", "quick", device="cpu", out=mine)


@pytest.mark.parametrize(("override", "message"), [
    ({"n": 1.5}, "override n=1.5: expected a value of type int"),
    ({"seeds": True}, "override seeds=True: expected a value of type int"),
    ({"dims": 3}, "override dims=3: expected a tuple of int"),
    ({"dims": ()}, "override dims=(): give at least one value"),
    ({"dims": "()"}, "--set dims=(): give at least one value"),
    ({"dims": "3,x"}, "--set dims=3,x: expected a value of type int, got 'x'"),
])
def test_overrides_are_checked_against_the_field_types(override, message):
    from sithlib.experiments import vmf_concentration

    with pytest.raises(ValueError, match=re.escape(message)):
        results.resolve_config(vmf_concentration, "quick", override)


def test_fixed_length_fields_take_that_many_values():
    from sithlib.experiments import identifiability_classes as ic

    field = next(f for f, h in typing.get_type_hints(ic.Config).items()
                 if h == tuple[float, float])
    for raw in ("2", "1,2,3"):
        with pytest.raises(ValueError, match=f"--set {field}={raw}: expected 2 values"):
            results.resolve_config(ic, "quick", {field: raw})
    assert len(getattr(results.resolve_config(ic, "quick", {field: "0.5,2"}), field)) == 2


def test_verify_reports_leftovers_of_an_interrupted_write(store):
    result = results.run_experiment("vmf_concentration", "paper", device="cpu")
    (result.path / ".metrics.csv.x1y2.tmp").write_text("half")
    orphan = store / "entropy_estimators"
    orphan.mkdir()
    (orphan / "metrics.csv").write_text("metric,value,seed\n")
    problems = "\n".join(results.verify(store)[0])
    assert ".metrics.csv.x1y2.tmp: left by an interrupted write" in problems
    assert f"{orphan}: files but no config.json" in problems
    results.update_manifest()  # --fix cannot make the orphan disappear
    assert any("files but no config.json" in p for p in results.verify(store)[0])


def test_checkpoints_are_cleared_only_after_the_result_is_written(store, monkeypatch):
    seen = {"fail": True}

    def run(cfg, device="cpu"):
        checkpoint = results.checkpoint_for("vmf_concentration", cfg, part="a")
        checkpoint.save({"step": 1})
        checkpoint.clear()  # a part is done; the result is not written yet
        seen["path"] = checkpoint.path
        assert checkpoint.path.exists()
        if seen["fail"]:
            raise RuntimeError("killed before the result was written")
        return {"metrics": pd.DataFrame({"metric": ["m"], "value": [1.0], "seed": [0]}),
                "curves": None}

    monkeypatch.setattr(vmf_concentration, "run", run)
    with pytest.raises(RuntimeError, match="killed"):
        results.run_experiment("vmf_concentration", "quick", device="cpu")
    assert seen["path"].exists()  # the rerun resumes from it
    seen["fail"] = False
    results.run_experiment("vmf_concentration", "quick", device="cpu")
    assert not seen["path"].exists()
    outside = results.checkpoint_for("vmf_concentration", TINY, part="b")
    outside.save({"step": 1})
    outside.clear()  # not inside run_experiment: at once
    assert not outside.path.exists()


def test_verify_size_budget(store, monkeypatch):
    results.run_experiment("vmf_concentration", "paper", device="cpu")
    monkeypatch.setattr(results, "SIZE_BUDGET_BYTES", 10)
    assert any("50 MB budget" in p for p in results.verify(store)[0])


def test_atomic_write_failure_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.csv"
    target.write_text("old\n")

    def crash(fd):
        raise KeyboardInterrupt("killed between write and rename")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        results.atomic_write_text(target, "new\n" * 1000)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_killed_writer_process_leaves_previous_file_intact(tmp_path):
    """SIGKILL a process in the middle of an atomic write: the old file survives whole."""
    target = tmp_path / "metrics.csv"
    target.write_text("old\n")
    script = textwrap.dedent(f"""
        import os, time
        from sithlib import results
        def slow_fsync(fd):
            print("writing", flush=True)
            time.sleep(60)
        os.fsync = slow_fsync
        results.atomic_write_text({str(target)!r}, "new\\n" * 100000)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_text() == "old\n"


def test_resolve_config_overrides_and_errors():
    cfg = results.resolve_config(vmf_concentration, "quick", {"n": "123", "dims": "3,10"})
    assert cfg.n == 123 and cfg.dims == (3, 10)
    with pytest.raises(ValueError, match="unknown config field 'nope'.*allowed: dims"):
        results.resolve_config(vmf_concentration, "quick", {"nope": "1"})
    with pytest.raises(ValueError, match="n=abc: expected a value of type int"):
        results.resolve_config(vmf_concentration, "quick", {"n": "abc"})
    with pytest.raises(ValueError, match="unknown profile 'fast'; allowed: quick, paper"):
        results.resolve_config(vmf_concentration, "fast")
    from sithlib.experiments import stability_monitor

    for raw, value in (("yes", True), ("0", False), ("False", False)):
        assert results.resolve_config(stability_monitor, "quick", {"checksums": raw}).checksums \
            is value
    with pytest.raises(ValueError, match="checksums=maybe: expected true or false"):
        results.resolve_config(stability_monitor, "quick", {"checksums": "maybe"})


def test_overrides_stay_in_each_fields_domain():
    """A count, size, step or rate that every profile sets positive must stay positive; one
    some profile sets to 0 may be 0; a Config's DOMAINS narrows or widens that. Tuple fields
    are checked value by value, and NaN lies in no interval."""
    from sithlib.experiments import dynamics, finite_samples, platonic

    for key, raw in (("seeds", "0"), ("n", "-5")):
        with pytest.raises(ValueError, match=f"--set {key}: .* must be > 0 for experiment "
                                             "vmf_concentration, got"):
            results.resolve_config(vmf_concentration, "quick", {key: raw})
    with pytest.raises(ValueError, match=re.escape("--set dims: each value must be in [2, inf) "
                                                   "for experiment vmf_concentration, got 1")):
        results.resolve_config(vmf_concentration, "quick", {"dims": "3,1"})
    with pytest.raises(ValueError, match="kappas: each value must be >= 0.*got nan"):
        results.resolve_config(vmf_concentration, "quick", {"kappas": "1,nan"})
    assert results.resolve_config(vmf_concentration, "quick", {"kappas": "0,5"}).kappas == (0, 5)
    # 0 is a fresh sample per step in finite_samples' grid of dataset sizes.
    assert results.field_domain(finite_samples, "n_samples") == "[0, inf)"
    assert results.resolve_config(finite_samples, "quick", {"n_samples": "0,1000"}).n_samples \
        == (0, 1000)
    # Declared: an EMA momentum of 0 (teacher = student) is allowed, one above 1 is not.
    assert results.resolve_config(platonic, "quick", {"ema_tau0": "0"}).ema_tau0 == 0
    with pytest.raises(ValueError, match=r"ema_tau0: the value must be in \[0, 1\]"):
        results.resolve_config(platonic, "quick", {"ema_tau0": "1.5"})
    with pytest.raises(ValueError, match=r"r2_targets: each value must be in \(0, 1\]"):
        results.resolve_config(dynamics, "quick", {"r2_targets": "0.5,1.2"})
    # Values given as numbers (load_or_run's dict) are checked too.
    with pytest.raises(ValueError, match="steps: the value must be > 0"):
        results.resolve_config(dynamics, "quick", {"steps": -1})
    assert results.field_domain(dynamics, "methods") is None  # not a number
    import numpy as np

    with pytest.raises(ValueError, match="seeds: the value must be > 0"):
        results.resolve_config(dynamics, "quick", {"seeds": np.int64(0)})


def test_a_malformed_declared_domain_is_named(monkeypatch):
    monkeypatch.setattr(vmf_concentration.Config, "DOMAINS", {"n": "[0, 1] "}, raising=False)
    with pytest.raises(ValueError, match=r"vmf_concentration.Config.DOMAINS\['n'\]"):
        results.resolve_config(vmf_concentration, "quick", {"n": "5"})


def test_every_experiments_domains_hold_its_profiles_and_name_fields():
    """Each declared interval names a real field and admits every profile's own values, and
    every numeric field of every experiment rejects -1 unless its domain admits it."""
    from sithlib.experiments import EXPERIMENTS

    for name, module in EXPERIMENTS.items():
        fields = {f.name for f in dataclasses.fields(module.PROFILES["quick"])}
        declared = getattr(type(module.PROFILES["quick"]), "DOMAINS", {})
        assert set(declared) <= fields, name
        for key in fields:
            domain = results.field_domain(module, key)
            if domain is None:
                continue
            for profile, cfg in module.PROFILES.items():
                values = results._numbers(getattr(cfg, key))
                assert all(results.in_domain(v, domain) for v in values), (name, key, profile)
            value = getattr(module.PROFILES["quick"], key)
            bad = (-1,) * len(value) if isinstance(value, tuple) else -1
            if not results.in_domain(-1, domain):
                with pytest.raises(ValueError, match=f"--set {key}:"):
                    results.resolve_config(module, "quick", {key: bad})


def test_parse_overrides_rejects_malformed():
    assert results.parse_overrides(["a=1", " b = x "]) == {"a": "1", "b": "x"}
    for bad in ("a", "=1", "a="):
        with pytest.raises(ValueError, match="malformed --set"):
            results.parse_overrides([bad])


def test_unknown_profile_and_experiment():
    with pytest.raises(ValueError, match="unknown profile 'fast'; allowed: auto, cached"):
        results.load_or_run("vmf_concentration", profile="fast")
    with pytest.raises(ValueError, match="unknown experiment 'nope'; allowed: .*vmf_concentration"):
        results.load_or_run("nope")


def test_write_result_rejects_untidy_metrics(tmp_path):
    with pytest.raises(ValueError, match="tidy"):
        results.write_result(tmp_path, "e", 1, "quick", TINY,
                             {"metrics": pd.DataFrame({"x": [1]})}, {})


def test_interrupted_rewrite_reads_as_incomplete_and_is_recomputed(store, monkeypatch):
    """A rewrite that dies after metrics.csv leaves no config.json (the completion mark), so the
    folder never reads back as new metrics with the old curves and env.json."""
    first = results.load_or_run("vmf_concentration", profile="quick", device="cpu")
    old_metrics = (first.path / "metrics.csv").read_text()
    real = results.atomic_write_text

    def dies_on_env(path, text):
        if path.name == "env.json":
            raise KeyboardInterrupt("killed")
        real(path, text)

    monkeypatch.setattr(results, "atomic_write_text", dies_on_env)
    with pytest.raises(KeyboardInterrupt):
        results.run_experiment("vmf_concentration", "quick", {"n": 500}, "cpu", out=first.path)
    assert (first.path / "metrics.csv").read_text() != old_metrics  # the new one is written
    with pytest.raises(results.CorruptResultError, match="config.json: missing.*incomplete"):
        results.read_result(first.path)
    monkeypatch.setattr(results, "atomic_write_text", real)
    again = results.load_or_run("vmf_concentration", profile="quick", device="cpu")
    assert again.path == first.path
    pd.testing.assert_frame_equal(first.metrics, again.metrics)


@pytest.mark.parametrize(
    ("saved", "message"),
    [
        ([1, 2, 3], "not a sithlib checkpoint .*found a list"),
        ({"weights": torch.zeros(2)}, "not a sithlib checkpoint .*found keys weights"),
        ({"key": "k", "state": {}, "spent_s": "soon"}, "spent_s is 'soon'"),
    ],
)
def test_checkpoint_of_another_shape_is_corrupt(tmp_path, saved, message):
    torch.save(saved, tmp_path / "c.pt")
    with pytest.raises(results.CorruptResultError, match=message) as err:
        results.Checkpoint(tmp_path / "c.pt", key="k").load()
    assert "c.pt" in str(err.value) and "delete it" in str(err.value)


def test_device_key_names_the_device_type_and_keeps_cpu_keys():
    assert results.device_key("abc", "cpu") == "abc"  # caches made before stay found
    assert results.device_key("abc", "cuda") == results.device_key("abc", "cuda:1") == "abc-cuda"
    with pytest.raises(ValueError, match="unknown device 'gpu'; allowed: cpu, cuda"):
        results.device_key("abc", "gpu")


def test_work_done_on_cpu_is_not_reused_on_gpu(store, monkeypatch):
    """Grid cells, checkpoints and quick results are keyed by device type: a GPU run (faked
    here, no CUDA needed) reruns what a CPU run left, and reuses what another GPU made."""
    ran, checkpoints = [], []

    def run(cfg, device="cpu"):
        checkpoints.append(results.checkpoint_for("vmf_concentration", cfg).path.name)

        def run_cell(cell):
            ran.append(device)
            return {"metrics": pd.DataFrame({"metric": ["m"], "value": [1.0], "seed": [0]})}

        return results.run_grid("vmf_concentration", _grid_cells([1]), run_cell)

    monkeypatch.setattr(vmf_concentration, "run", run)
    cpu = results.load_or_run("vmf_concentration", profile="quick", device="cpu")
    gpu = results.load_or_run("vmf_concentration", profile="quick", device="cuda")
    assert ran == ["cpu", "cuda"] and gpu.env["device"] == "cuda" and gpu.path != cpu.path
    h = results.config_hash("vmf_concentration", vmf_concentration.VERSION, TINY)
    assert cpu.path == store.parent / "cache" / "vmf_concentration" / h  # as before device keys
    assert checkpoints == [f"{h}-run.pt", f"{h}-cuda-run.pt"]
    cells = store.parent / "cells" / "vmf_concentration"
    assert len(list(cells.glob("*/done.json"))) == 2
    # The cells alone: the second GPU and a later CPU run reuse them and run nothing.
    for device in ("cuda:1", "cpu"):
        with results.running_on(device):
            run(TINY, device)
    assert ran == ["cpu", "cuda"]
    assert results.load_or_run("vmf_concentration", profile="quick", device="cpu").path == cpu.path
    assert results._run_device[0] is None  # run_experiment leaves no device behind


def test_status_rows(store):
    rows = {r["experiment"]: r for r in results.status_rows()}
    assert rows["vmf_concentration"]["grade"] == "quick"
    results.run_experiment("vmf_concentration", "paper", device="cpu")
    rows = {r["experiment"]: r for r in results.status_rows()}
    assert rows["vmf_concentration"]["grade"] == "paper"
    assert rows["vmf_concentration"]["paper_result"] == "fresh"


def test_interrupted_run_keeps_published_result(store, monkeypatch):
    """A run that dies half-way never replaces a published result with a partial one."""
    good = results.run_experiment("vmf_concentration", "paper", device="cpu")
    before = (good.path / "metrics.csv").read_bytes()

    def dies(cfg, device):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(vmf_concentration, "run", dies)
    with pytest.raises(RuntimeError):
        results.run_experiment("vmf_concentration", "paper", device="cpu")
    assert (good.path / "metrics.csv").read_bytes() == before
    assert results.verify(store)[0] == []


def test_benchmarks_are_stored_listed_and_verified(store):
    table = pd.DataFrame({"case": ["a", "a"], "metric": ["rate", "ratio"], "value": [2.0, 1.5]})
    env = results.environment("cpu", 1.0)
    folder = results.write_benchmark("toy", table, env, {"command": "python -m sithlib bench toy"})
    assert folder == store / "benchmarks" / "toy" / "cpu"
    (run,) = results.read_benchmarks()
    assert run["name"] == "toy" and run["hardware"] == "cpu"
    pd.testing.assert_frame_equal(run["table"], table)
    assert results.verify(store)[0] == []
    (folder / "table.csv").write_text("case,metric,value\na,rate,3.0\n")
    assert any("table.csv: sha256 differs" in p for p in results.verify(store)[0])
    with pytest.raises(ValueError, match="lacks column 'case'"):
        results.write_benchmark("toy", table.drop(columns="case"), env, {})


def test_an_interrupted_benchmark_never_replaces_a_complete_table(store, capsys):
    env = results.environment("cpu", 1.0)
    full = pd.DataFrame({"case": ["a", "b"], "metric": ["rate"] * 2, "value": [2.0, 3.0]})
    part = full.iloc[:1]
    cut = {"command": "c", "interrupted": True, "cases_finished": 1, "cases": 2}
    folder = results.write_benchmark("toy", part, env, cut)  # nothing stored yet: kept
    assert len(results.read_benchmarks()[0]["table"]) == 1
    results.write_benchmark("toy", full, env, {"command": "c"})  # complete replaces partial
    capsys.readouterr()
    assert results.write_benchmark("toy", part, env, cut) == folder
    said = capsys.readouterr().out
    assert said == f"kept the complete table in {folder}: this run was interrupted\n"
    (run,) = results.read_benchmarks()
    assert len(run["table"]) == 2 and "interrupted" not in run["config"]


def test_hardware_slug():
    assert results.hardware_slug({"cuda": None, "device_name": "x86_64"}) == "cpu"
    assert results.hardware_slug({"cuda": "12.8", "device_name": "NVIDIA H100 80GB HBM3"}) == (
        "gpu-nvidia-h100-80gb-hbm3")


def test_auto_with_custom_config_is_never_paper_grade(store):
    results.run_experiment("vmf_concentration", "paper", device="cpu")
    shown = results.load_or_run("vmf_concentration", {"n": 500}, profile="auto")
    assert shown.profile == "quick" and "custom configuration" in shown.banner
    with pytest.raises(ValueError, match="takes no config"):
        results.load_or_run("vmf_concentration", {"n": 500}, profile="cached")


def _grid_cells(ns):
    return [{"n": n, "seed": 0} for n in ns]


def test_run_grid_runs_each_cell_once_and_resumes(store):
    calls = []

    def run_cell(cell):
        calls.append(cell["n"])
        metrics = pd.DataFrame({"n": [cell["n"]], "metric": ["double"], "value": [2.0 * cell["n"]],
                                "seed": [cell["seed"]]})
        curves = pd.DataFrame({"n": [cell["n"]] * 2, "step": [1, 2]}) if cell["n"] > 1 else None
        return {"metrics": metrics, "curves": curves}

    first = results.run_grid("vmf_concentration", _grid_cells([1, 2]), run_cell)
    assert calls == [1, 2] and list(first["metrics"].value) == [2.0, 4.0]
    assert list(first["curves"].n) == [2, 2]  # the cell without curves contributes none
    # Extending the grid runs only the new cell; the old ones are read back identically.
    again = results.run_grid("vmf_concentration", _grid_cells([1, 2, 3]), run_cell)
    assert calls == [1, 2, 3]
    assert again["metrics"].iloc[:2].equals(first["metrics"])
    # A version bump reruns everything.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vmf_concentration, "VERSION", vmf_concentration.VERSION + 1)
        results.run_grid("vmf_concentration", _grid_cells([1]), run_cell)
    assert calls == [1, 2, 3, 1]


def test_run_grid_interrupted_cell_is_rerun_and_corrupt_cell_is_named(store):
    def boom(cell):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        results.run_grid("vmf_concentration", _grid_cells([5]), boom)
    ok = results.run_grid("vmf_concentration", _grid_cells([5]), lambda c: {
        "metrics": pd.DataFrame({"metric": ["m"], "value": [1.0], "seed": [0]}), "curves": None})
    assert ok["curves"] is None and len(ok["metrics"]) == 1
    done = next((store.parent / "cells" / "vmf_concentration").glob("*/done.json"))
    done.write_text("{not json")
    with pytest.raises(results.CorruptResultError, match="done.json"):
        results.run_grid("vmf_concentration", _grid_cells([5]), boom)


def test_wall_time_counts_the_work_of_earlier_calls(store, tmp_path, monkeypatch):
    """Cells finished by an earlier call and training resumed from a checkpoint count towards
    the wall time of the run that reuses them, so a result says what it cost."""
    def slow(cell):
        time.sleep(0.2)
        return {"metrics": pd.DataFrame({"metric": ["m"], "value": [1.0], "seed": [0]})}

    # The direct run_grid calls below run on default_device(); the run_experiment call on cpu.
    monkeypatch.setattr(results, "default_device", lambda: "cpu")
    results._earlier_s[0] = 0.0
    results.run_grid("vmf_concentration", _grid_cells([1, 2]), slow)
    assert results._earlier_s[0] == 0.0  # computed now, not reused
    done = sorted((store.parent / "cells" / "vmf_concentration").glob("*/done.json"))
    assert all(json.loads(d.read_text())["wall_time_s"] >= 0.2 for d in done)
    results.run_grid("vmf_concentration", _grid_cells([1, 2]), slow)
    assert results._earlier_s[0] >= 0.4  # both cells reused with what they cost

    first = results.Checkpoint(tmp_path / "c.pt", key="k")
    time.sleep(0.2)
    first.save({"step": 1})
    results._earlier_s[0] = 0.0
    again = results.Checkpoint(tmp_path / "c.pt", key="k")
    assert again.load() == {"step": 1} and results._earlier_s[0] >= 0.2
    again.save({"step": 2})  # its own time adds to what the loaded checkpoint had spent
    assert torch.load(tmp_path / "c.pt", weights_only=True)["spent_s"] >= 0.2

    # run_experiment adds the reused seconds to its own and reports them.
    def run(cfg, device="cpu"):
        return results.run_grid("vmf_concentration", _grid_cells([1, 2]), slow)

    monkeypatch.setattr(vmf_concentration, "run", run)
    result = results.run_experiment("vmf_concentration", "quick", device="cpu")
    assert result.env["reused_s"] >= 0.4 and result.env["wall_time_s"] >= 0.4
    assert "untimed_cells" not in result.env
    # A cell cached by an older sithlib has no time: the provenance says the cost is unknown.
    for done in (store.parent / "cells" / "vmf_concentration").glob("*/done.json"):
        record = json.loads(done.read_text())
        del record["wall_time_s"]
        done.write_text(json.dumps(record))
    result = results.run_experiment("vmf_concentration", "quick", device="cpu")
    assert result.env["untimed_cells"] == 2
    assert "and 2 cached grid cells of unrecorded cost" in result.provenance()


def test_git_commit_is_dirty_for_changed_code_but_not_for_changed_results(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                       check=True, capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "MANIFEST.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    monkeypatch.setattr(results, "repo_root", lambda: tmp_path)
    head = results._git_commit()
    assert len(head) == 40
    # Another run's result files do not change what this run computes.
    (tmp_path / "results" / "MANIFEST.json").write_text('{"a": 1}\n')
    assert results._git_commit() == head
    (tmp_path / "notes.txt").write_text("untracked notes\n")
    assert results._git_commit() == head
    # An experiment or method of a fork, not yet committed, is code the run used.
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "my_study.py").write_text("NAME = 'mine'\n")
    assert results._git_commit() == head + "-dirty"
    (tmp_path / "pkg" / "my_study.py").unlink()
    (tmp_path / "code.py").write_text("x = 2\n")
    assert results._git_commit() == head + "-dirty"


def test_git_commit_outside_a_repository_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "repo_root", lambda: tmp_path)  # a copy without .git
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv("SITH_GIT_COMMIT", raising=False)
    assert results._git_commit() == "unknown"
    monkeypatch.setenv("SITH_GIT_COMMIT", "ab" * 20)
    assert results._git_commit() == "ab" * 20


def test_short_commit_keeps_the_dirty_mark():
    from sithlib.results import short_commit

    full = "dcf69287f79abfd24706b3b37890e66b46cb65a6"
    assert short_commit(full) == "dcf69287f79a"
    assert short_commit(full + "-dirty") == "dcf69287f79a-dirty"
    assert short_commit("") == ""
