"""The arithmetic behind the performance appendix (the timings themselves live in benchmarks/)."""

from __future__ import annotations

import dataclasses
import importlib.util
import time

import pytest
import torch

from sithlib.experiments import infonce_sphere
from sithlib.results import best_seconds, repo_root


def _bench(name: str):
    """benchmarks/bench_NAME.py as a module, loaded the way ``python -m sithlib bench`` does."""
    path = repo_root() / "benchmarks" / f"bench_{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_flops_counts_forward_and_backward_of_both_views_by_hand():
    bench = _bench("train")
    cfg = dataclasses.replace(infonce_sphere.PROFILES["quick"], dim=2, hidden=(3,), batch_size=4)
    # Per sample and view: 2*(2*3 + 3*2) = 24 forward FLOPs; two views; 2*4*2 for its row of the
    # 4 x 4 similarity matrix; times 3 for forward + backward; times the batch.
    assert bench.train_flops(cfg) == 3 * 4 * (2 * 24 + 2 * 4 * 2)


def test_train_benchmark_keeps_the_cases_that_finished_when_interrupted(monkeypatch):
    """tools/gpu_session.sh stops a benchmark at its time cap with SIGINT: the cases timed so
    far are kept (and marked) rather than lost with the GPU time they cost."""
    bench = _bench("train")
    calls = []

    def engine(*args, **kwargs):
        calls.append(args)
        if len(calls) == 4:  # warm-up, 1 seed, vmap, then the signal
            raise KeyboardInterrupt
        return 0.5

    monkeypatch.setattr(bench, "engine", engine)
    monkeypatch.setattr(bench, "naive_loop", lambda cfg, steps, device: 2.0)
    frame = bench.table(quick=True)
    assert list(dict.fromkeys(frame.case)) == ["naive loop", "engine, 1 seed",
                                               "engine, 4 seeds, vmap"]
    ratio = frame[(frame.case == "engine, 4 seeds, vmap") & (frame.metric == "ratio_to_naive")]
    assert ratio.value.item() == pytest.approx(4 * 2.0 / 0.5)
    assert frame.attrs["config"] == {"interrupted": True, "cases_finished": 3, "cases": 7}
    calls.clear()
    monkeypatch.setattr(bench, "naive_loop", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # nothing finished: nothing to keep
        bench.table(quick=True)


def test_matmul_peak_is_a_positive_rate_and_restores_precision():
    bench = _bench("train")
    before = torch.get_float32_matmul_precision()
    for precision in ("fp32", "bf16"):
        assert bench.matmul_peak("cpu", precision, n=128) > 1e6
    assert torch.get_float32_matmul_precision() == before


def _linear_run(counting, cfg, *, buffers: bool = False):
    d, k = 3, 2

    def make_model(seed):
        torch.manual_seed(seed)
        layers = [torch.nn.Linear(d, k, bias=False)]
        return torch.nn.Sequential(*layers, torch.nn.BatchNorm1d(k)) if buffers else layers[0]

    def sample(g, n):
        return (torch.randn(n, d, generator=g),)

    def loss_fn(f, batch):
        h = f(batch[0])
        return h.pow(2).mean(), h

    def evaluate(f, seed):
        return {"w_norm": float(next(f.parameters()).norm())}

    return counting(make_model, sample, loss_fn, cfg, evaluate=evaluate)


def test_cost_counts_the_flops_of_one_step_by_hand_and_follows_the_engines_schedule():
    from sithlib.train import TrainConfig, train

    bench = _bench("cost")
    for cfg in (TrainConfig(steps=10, batch_size=8, seeds=3, eval_every=5),
                TrainConfig(steps=7, batch_size=8, seeds=2, eval_every=3, eval_at_start=True)):
        counting = bench.CountingTrain()
        result = _linear_run(counting, cfg)
        # Forward 2*B*d*k, weight gradient 2*B*d*k (the input needs no gradient), per seed.
        (run,) = counting.runs
        assert run["step_flop"] == cfg.seeds * 4 * 8 * 3 * 2
        assert run["vmapped"] and (run["steps"], run["seeds"]) == (cfg.steps, cfg.seeds)
        real = _linear_run(train, cfg)
        assert ([(r["step"], r["seed"]) for r in result.curves]
                == [(r["step"], r["seed"]) for r in real.curves])
        assert result.steps_done == cfg.steps and len(result.models) == cfg.seeds


def test_cost_summary_counts_seeds_of_stateful_models_one_after_the_other():
    from sithlib.train import TrainConfig

    bench = _bench("cost")
    counting = bench.CountingTrain()
    counting.experiment = "a"
    _linear_run(counting, TrainConfig(steps=10, batch_size=8, seeds=3), buffers=True)
    _linear_run(counting, TrainConfig(steps=4, batch_size=16, seeds=2, prefetch=4))
    assert [r["vmapped"] for r in counting.runs] == [False, True]
    assert [r["prefetch"] for r in counting.runs] == [16, 4]  # a GPU's 16, or the run's own
    per = bench.summarize(bench.pd.DataFrame(counting.runs), ["a", "b"])
    a = per.loc["a"]
    assert (a.runs, a.steps, a.model_steps, a.samples) == (2, 14, 30 + 8, 10 * 3 * 8 + 4 * 2 * 16)
    # Launches: the BatchNorm model's seeds run one after the other, the ensemble's at once.
    first, second = counting.runs
    assert first["step_ops"] > 3 * second["step_ops"] / 2 > 0
    assert a.launches == 10 * (first["step_ops"] + first["sample_ops"] / 16) + 4 * (
        second["step_ops"] + second["sample_ops"] / 4)
    assert per.loc["b"].sum() == 0 and (per.loc["all"] == per.loc["a"]).all()


def test_cost_sees_a_step_that_reads_a_value_back_or_masks():
    from sithlib.train import TrainConfig

    bench = _bench("cost")
    counting = bench.CountingTrain()

    def loss_fn(f, batch):
        h = f(batch[0])
        keep = h[h[:, 0] > 0]  # a data-dependent shape: a GPU waits for the mask
        return h.pow(2).mean() + 0 * keep.sum() + 0 * float(h.detach().mean()), h

    counting(lambda s: torch.nn.Linear(3, 2), lambda g, n: (torch.randn(n, 3, generator=g),),
             loss_fn, TrainConfig(steps=5, batch_size=8))
    assert counting.runs[0]["step_syncs"] == 2


def test_shrink_keeps_the_networks_and_cuts_training_only_when_asked():
    from sithlib.experiments import shrink

    paper = infonce_sphere.PROFILES["paper"]
    smoke, counted = shrink(paper), shrink(paper, training=False)
    for cfg in (smoke, counted):
        assert (cfg.hidden, cfg.batch_size, cfg.n_eval) == (paper.hidden, paper.batch_size, 512)
    assert (smoke.steps, smoke.seeds, smoke.eval_every) == (4, 2, 2)
    assert (counted.steps, counted.seeds, counted.eval_every) == (
        paper.steps, paper.seeds, paper.eval_every)


def test_cost_merge_replaces_recounted_experiments_and_recomputes_the_total():
    bench = _bench("cost")
    pd = bench.pd
    cols = ["runs", "steps", "model_steps", "samples", "train_tflop", "launches"]
    stored = pd.DataFrame([[1, 10, 10, 100, 1.0, 50], [2, 20, 40, 400, 2.0, 80],
                           [3, 30, 50, 500, 3.0, 130]],
                          index=["platonic", "infonce_sphere", "all"], columns=cols)
    new = pd.DataFrame([[1, 5, 5, 50, 0.5, 20], [1, 5, 5, 50, 0.5, 20]],
                       index=["infonce_sphere", "all"], columns=cols)
    merged = bench.merge(stored, new)
    assert list(merged.index) == ["infonce_sphere", "platonic", "all"]  # the book's order
    assert merged.loc["infonce_sphere"].tolist() == new.loc["infonce_sphere"].tolist()
    assert merged.loc["all"].tolist() == [2, 15, 15, 150, 1.5, 70]


def test_cost_store_keeps_earlier_counts_and_commands(store, monkeypatch):
    from sithlib.results import read_benchmarks

    bench = _bench("cost")
    row = {"name": "x", "steps": 10, "seeds": 2, "batch": 4, "vmapped": True, "step_flop": 1e12,
           "step_ops": 100, "sample_ops": 32, "prefetch": 16, "optimizer_ops": 5, "step_syncs": 0}
    monkeypatch.setattr(bench, "count", lambda names: bench.pd.DataFrame(
        [{**row, "experiment": n} for n in names], columns=bench.RUN_COLUMNS))
    bench.store(["platonic"])
    bench.store(["infonce_sphere"])
    (run,) = [r for r in read_benchmarks() if r["name"] == "cost"]
    counts = run["table"].pivot_table(index="case", columns="metric", values="value")
    assert set(counts.index) == {"infonce_sphere", "platonic", "all"}
    assert counts.loc["all", "model_steps"] == 2 * 20 and counts.loc["all", "train_tflop"] == 20
    assert run["config"]["command"].split("; ") == [
        "python benchmarks/bench_cost.py --store platonic",
        "python benchmarks/bench_cost.py --store infonce_sphere"]
    assert set(run["config"]["paper_config_hash"]) == {"platonic", "infonce_sphere"}


def test_best_seconds_warms_up_then_keeps_the_fastest_synchronised_call(monkeypatch):
    # A fake clock that only fn advances: the measurement is exact whatever the machine's load.
    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    calls, syncs = [], []
    delays = iter([0.05, 0.03, 0.001, 0.02])  # the warm-up (slowest) is not timed

    def fn():
        calls.append(1)
        now[0] += next(delays)

    seconds = best_seconds(fn, 3, sync=lambda: syncs.append(1))
    assert len(calls) == 4 and len(syncs) == 6
    assert seconds == pytest.approx(0.001, abs=1e-12)


def test_metrics_benchmark_times_every_case_and_checks_neighbour_sets():
    table = _bench("metrics").table(quick=True, device="cpu")
    assert list(table.columns) == ["case", "metric", "value"]
    seconds = table[table.metric == "seconds"]
    assert len(seconds) == 8 and (seconds.value > 0).all()
    ratio = table[table.metric == "ratio_full_sort_to_ours"].value
    assert len(ratio) == 1 and ratio.iloc[0] > 0


def test_quick_benchmark_times_the_command_and_reads_the_target_score():
    bench = _bench("quick")
    table = bench.table(quick=True, device="cpu").set_index("metric").value
    assert table["command_s"] > table["experiment_s"] > 0  # the command adds start-up
    assert -1.0 <= table["r2_linear"] <= 1.0


def test_quick_benchmark_reports_a_failed_run_with_its_error():
    failed = "(?s)infonce_sphere: quick run failed.*unknown config field .bogus."
    with pytest.raises(RuntimeError, match=failed):
        _bench("quick").run_quick("infonce_sphere", "cpu", ("--set", "bogus=1"))


def test_threads_table_ratios_and_cases(monkeypatch):
    bench = _bench("threads")
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 6)
    monkeypatch.setattr(bench, "steps_per_second", lambda steps, threads: 10.0 + threads)
    monkeypatch.setattr(bench, "side_by_side", lambda processes, steps: [3.0] * processes)
    frame = bench.table(quick=True).pivot_table(index="case", columns="metric", values="value",
                                               sort=False)
    # Powers of two up to the cores, then the cores; one process per core side by side.
    assert list(frame.index) == ["1 process, 1 thread", "1 process, 2 threads",
                                 "1 process, 4 threads", "1 process, 6 threads",
                                 "6 processes, 1 thread each"]
    assert frame.loc["1 process, 6 threads", "ratio_to_default"] == 1.0
    assert frame.loc["1 process, 1 thread", "ratio_to_default"] == pytest.approx(11 / 16)
    assert frame.loc["6 processes, 1 thread each", "steps_s"] == pytest.approx(18.0)
    with pytest.raises(ValueError, match="device must be 'cpu'"):
        bench.table(quick=True, device="cuda")


def test_threads_side_by_side_runs_real_processes():
    bench = _bench("threads")
    rates = bench.side_by_side(2, steps=2)
    assert len(rates) == 2 and all(r > 0 for r in rates)
