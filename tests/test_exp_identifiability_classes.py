"""The identifiability-classes experiment: each metric is blind to exactly the classes it should
be, and the Platonic prediction (orthogonal => mutual kNN 1, linear => less) holds."""

from __future__ import annotations

import dataclasses

import matplotlib
import pytest
import torch

from sithlib.experiments import identifiability_classes as exp
from sithlib.experiments._tables import METRIC_LABELS

matplotlib.use("Agg")

TINY = {"identifiability_classes": dataclasses.replace(
    exp.PROFILES["quick"], n=200, n_nonlinear=120, seeds=2, conds=(1.0, 10.0))}


@pytest.fixture(scope="module")
def result():
    return exp.run(dataclasses.replace(TINY["identifiability_classes"], n=300, conds=(1.0, 3.0,
                                                                                     30.0)))


def _mean(metrics, cls, metric):
    m = metrics[(metrics["class"] == cls) & (metrics.metric == metric)]
    assert len(m) > 0, (cls, metric)
    return float(m.value.mean())


def test_orthogonal_class_is_invisible_to_kernel_metrics(result):
    m = result["metrics"]
    for metric in ("r2_linear", "procrustes_r2", "mutual_knn", "cka_linear", "pair_mutual_knn",
                   "pair_cka_linear"):
        assert _mean(m, "orthogonal", metric) == pytest.approx(1.0, abs=1e-9), metric
    assert _mean(m, "orthogonal", "orthogonality") == pytest.approx(0.0, abs=1e-9)
    # A rotation mixes coordinates: MCC cannot see through it.
    assert _mean(m, "orthogonal", "mcc") < 0.95
    # The Platonic clamping is coordinate-wise and breaks the rotation invariance.
    assert _mean(m, "orthogonal", "pair_mutual_knn_clamped") < 1.0


def test_linear_class_keeps_r2_but_not_neighbourhoods(result):
    m = result["metrics"]
    assert _mean(m, "linear", "r2_linear") == pytest.approx(1.0, abs=1e-9)
    assert _mean(m, "linear", "procrustes_r2") < 0.95
    assert _mean(m, "linear", "orthogonality") > 0.1
    assert _mean(m, "linear", "pair_mutual_knn") < _mean(m, "orthogonal", "pair_mutual_knn") - 0.3
    # A translation moves inner products but not centred kernels.
    assert _mean(m, "affine", "cka_linear") == pytest.approx(1.0, abs=1e-9)
    assert _mean(m, "affine", "mutual_knn") < 0.99


def test_coordinatewise_classes_are_seen_by_mcc(result):
    m = result["metrics"]
    assert _mean(m, "permutation", "mcc") == pytest.approx(1.0, abs=1e-9)
    assert _mean(m, "elementwise", "mcc_spearman") == pytest.approx(1.0, abs=1e-9)
    assert _mean(m, "elementwise", "mcc") < 0.999
    for cls in ("block", "mixing"):
        assert _mean(m, cls, "r2_linear") < 0.95


def test_alignment_falls_with_the_condition_number(result):
    assert result["curves"] is None
    c = exp.sweep(result["metrics"])
    knn = c[c.metric == "pair_mutual_knn"].groupby("cond").value.mean()
    assert knn[1.0] == pytest.approx(1.0)
    assert knn[1.0] > knn[3.0] > knn[30.0]
    cka = c[c.metric == "pair_cka_linear"].groupby("cond").value.mean()
    assert cka[1.0] == pytest.approx(1.0) and cka[30.0] < 0.9
    assert set(c.seed) == {0, 1}
    # Mutual kNN is the stricter metric: it falls faster than CKA once the maps are not orthogonal.
    assert knn[3.0] < cka[3.0] and knn[30.0] < cka[30.0]


def test_only_coordinatewise_classes_keep_neighbourhoods(result):
    m = result["metrics"]
    for kept in ("permutation", "elementwise"):
        for lost in ("block", "mixing"):
            assert _mean(m, kept, "pair_mutual_knn") > _mean(m, lost, "pair_mutual_knn")


def test_linear_transform_has_the_requested_condition_number():
    cfg = dataclasses.replace(exp.PROFILES["quick"], linear_cond=7.0)
    z = torch.randn(50, cfg.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    h = exp.make_transform("linear", cfg, torch.Generator().manual_seed(2))(z)
    a = torch.linalg.lstsq(z, h).solution
    s = torch.linalg.svdvals(a)
    assert float(s[0] / s[-1]) == pytest.approx(7.0, rel=1e-8)


def test_block_transform_never_mixes_across_blocks():
    cfg = exp.PROFILES["quick"]
    t = exp.make_transform("block", cfg, torch.Generator().manual_seed(0))
    z = torch.randn(20, cfg.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    z2 = z.clone()
    z2[:, cfg.block:] += 1.0  # change only the second block
    assert torch.equal(t(z)[:, :cfg.block], t(z2)[:, :cfg.block])
    assert not torch.allclose(t(z)[:, cfg.block:], t(z2)[:, cfg.block:])


def test_dgp_seed_draws_other_latents_and_maps(result):
    cfg = dataclasses.replace(TINY["identifiability_classes"], seeds=1, classes=("linear",),
                              conds=(1.0, 4.0))
    first = exp.run(cfg)["metrics"]
    assert exp.run(dataclasses.replace(cfg, dgp_seed=0))["metrics"].equals(first)
    other = exp.run(dataclasses.replace(cfg, dgp_seed=1))["metrics"]
    assert not other.value.equals(first.value)


def test_bad_inputs_are_named():
    cfg = exp.PROFILES["quick"]
    with pytest.raises(ValueError, match="class must be one of"):
        exp.make_transform("rotation", cfg, torch.Generator())
    with pytest.raises(ValueError, match="classes must be drawn from"):
        exp.run(dataclasses.replace(cfg, classes=("orthogonal", "nope")))
    with pytest.raises(ValueError, match="block must be in"):
        exp.run(dataclasses.replace(cfg, block=0))
    with pytest.raises(ValueError, match="conds"):
        exp.run(dataclasses.replace(cfg, conds=(0.5,)))


def test_tables_and_figures(result):
    m = result["metrics"]
    table = exp.summary_table(m)
    # Display names: "affine" is built as an orthogonal map plus a shift, and says so.
    assert list(table.index) == [exp.CLASS_LABELS.get(c, c) for c in exp.CLASSES]
    assert "orthogonal + shift" in table.index and "affine" not in table.index
    assert list(table.columns) == [METRIC_LABELS[k] for k in exp.IDEAL]
    pairs = exp.summary_table(m, pairs=True)
    assert "identity" not in pairs.index
    assert list(pairs.columns) == [exp.PAIR_LABELS[k] for k in exp.PAIR_METRICS]
    marks = exp.invariance_table(m)
    assert marks.loc["orthogonal", "mutual kNN"] == "✓"
    assert marks.loc["linear", "mutual kNN"] == "·"
    assert marks.loc["permutation", "MCC"] == "✓"
    assert exp.plot_condition_sweep(m, n=300).get_xscale() == "log"
    ax = exp.plot_pairs(m)
    assert len(ax.get_xticklabels()) == len(exp.CLASSES) - 1
    assert "orthogonal + shift" in [t.get_text() for t in ax.get_xticklabels()]
