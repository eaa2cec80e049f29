"""Direction 2 (finite samples, batch size, diversity): grid, datasets, tables and figures."""

from __future__ import annotations

import dataclasses

import matplotlib
import pytest
import torch

from sithlib.experiments import finite_samples as fs

matplotlib.use("Agg")

TINY = {"finite_samples": dataclasses.replace(
    fs.PROFILES["quick"], n_samples=(50, 0), batch_sizes=(16, 32), kappas=(10.0,),
    n_clusters=(2, 0), base_batch=32, hidden=(16,), steps=30, eval_every=15, n_eval=200,
    seeds=2)}


def test_cells_are_the_union_of_one_factor_sweeps():
    cells = fs.cells(TINY["finite_samples"])
    points = [(c["n"], c["batch_size"], c["kappa"], c["clusters"]) for c in cells]
    # base (0, 32, 10, 0) appears once; N = 50, B = 16 and |C| = 2 are the other points
    assert points == [(50, 32, 10.0, 0), (0, 32, 10.0, 0), (0, 16, 10.0, 0), (0, 32, 10.0, 2)]
    assert all("seeds" in c and "n_samples" not in c for c in cells)


def test_each_seed_draws_its_own_fixed_dataset():
    cell = {**fs.cells(TINY["finite_samples"])[0], "dataset": "pairs"}
    source = fs._Source(cell, "cpu")
    g0 = torch.Generator().manual_seed(fs._DATA_SEED_OFFSET)
    g1 = torch.Generator().manual_seed(fs._DATA_SEED_OFFSET + 1)
    z0, zp0 = source.pairs(400, g0)
    z1, _ = source.pairs(400, g1)
    data0 = source._dataset(fs._DATA_SEED_OFFSET)[0]
    # every training anchor (and its fixed positive) comes from the 50 rows of seed 0's set
    assert (z0[:, None, :] == data0[None]).all(-1).any(1).all()
    assert torch.unique(z0, dim=0).shape[0] <= 50
    assert not torch.allclose(source._dataset(fs._DATA_SEED_OFFSET + 1)[0], data0)
    assert not (z1[:, None, :] == data0[None]).all(-1).any(1).any()
    again, _ = source.pairs(400, torch.Generator().manual_seed(fs._DATA_SEED_OFFSET))
    assert torch.equal(again, z0) and (zp0.norm(dim=1) - 1).abs().max() < 1e-5


def test_clustered_anchors_are_less_diverse_than_uniform():
    base = fs.cells(TINY["finite_samples"])[-1]
    one = fs._Source({**base, "clusters": 1, "cluster_kappa": 50.0}, "cpu")
    uniform = fs._Source({**base, "clusters": 0}, "cpu")
    g = torch.Generator().manual_seed(0)
    # the mean resultant length is near 0 for uniform latents and large for one tight cluster
    assert one.anchors(2000, g).mean(0).norm() > 0.5 > 0.1 > uniform.anchors(2000, g).mean(0).norm()


def test_run_table_and_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("SITH_CACHE_DIR", str(tmp_path / "results"))
    cfg = TINY["finite_samples"]
    m = fs.run(cfg)["metrics"]
    assert set(m.metric) >= {"r2_linear", "r2_uniform", "r2_train"}
    assert (m[m.metric == "r2_train"].n == 50).all()
    config = dataclasses.asdict(cfg)
    table = fs.breakdown_table(m, config)
    assert len(table) == 7 and (table.seeds == 2).all()
    assert list(table.loc["dataset size N"].index) == ["50", "∞ (fresh)"]
    assert list(table.loc["clusters |C|"].index) == ["2", "uniform"]
    # both held-out scores, so that the cluster rows can be compared on uniform latents
    assert list(table.columns[:2]) == list(fs.SCORES.values())
    assert table.index.names == [None, None]
    axes = fs.plot_sweeps(m, config)
    assert sum(ax.get_visible() for ax in axes) == 4
    fs.plot_generalization(m, config)
    matplotlib.pyplot.close("all")


def test_bad_config_values_are_rejected():
    with pytest.raises(ValueError, match="dataset must be one of"):
        dataclasses.replace(TINY["finite_samples"], dataset="images")
    with pytest.raises(ValueError, match="batch sizes"):
        dataclasses.replace(TINY["finite_samples"], batch_sizes=(1,))
    with pytest.raises(ValueError, match="factor must be one of"):
        fs.sweep(None, "width", {})
