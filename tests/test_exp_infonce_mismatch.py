"""The InfoNCE mismatch table: row settings, one mixing for every row, the supervised ceiling
above the raw floor, and the table / figure helpers."""

from __future__ import annotations

import dataclasses
import math

import matplotlib
import pytest
import torch

from sithlib.dgp import DGP
from sithlib.experiments import infonce_mismatch as exp

matplotlib.use("Agg")

TINY = {"infonce_mismatch": dataclasses.replace(
    exp.PROFILES["quick"], rows=("vmf_matched", "box_laplace_l1", "supervised"), steps=30,
    eval_every=15, n_eval=300, n_nonlinear=150, hidden=(16,), seeds=2, batch_size=64)}


@pytest.fixture(scope="module")
def result():
    cfg = dataclasses.replace(TINY["infonce_mismatch"], rows=tuple(exp.ROWS), steps=20,
                              eval_every=10)
    return exp.run(cfg)


def test_row_settings_follow_the_theory():
    cfg = exp.PROFILES["quick"]
    k = cfg.kappa
    s = {r: exp.row_settings(r, cfg) for r in exp.ROWS}
    assert s["vmf_matched"]["tau"] == pytest.approx(1 / k)
    assert s["vmf_tau_high"]["tau"] == pytest.approx(cfg.tau_high / k)
    assert s["vmf_tau_low"]["tau"] == pytest.approx(cfg.tau_low / k)
    # The sphere noise conditionals have the vMF's per-coordinate variance 1 / kappa.
    assert 2 * s["laplace_sphere"]["dgp"].conditional_scale ** 2 == pytest.approx(1 / k)
    assert s["normal_sphere"]["dgp"].conditional_scale ** 2 == pytest.approx(1 / k)
    # Box: L1 model at tau = lambda; L2 model at tau = 2 Var of the conditional.
    lam = cfg.box_scale
    assert s["box_laplace_l1"]["similarity"] == ("lp", 1.0)
    assert s["box_laplace_l1"]["tau"] == pytest.approx(lam)
    assert s["box_laplace_l2"]["tau"] == pytest.approx(2 * 2 * lam**2)
    assert s["box_normal_l2"]["tau"] == pytest.approx(2 * lam**2)
    assert s["supervised"]["similarity"] is None
    # A row matches when its model density is the data's conditional: the right family (vMF
    # with the dot product, Laplace with L1, Normal with L2) at the right temperature.
    family = {("vmf", "dot"), ("laplace", "l1"), ("normal", "l2")}
    for r, spec in exp.ROWS.items():
        if spec.model != "supervised":
            right_tau = r not in ("vmf_tau_high", "vmf_tau_low")
            assert spec.matches == ((spec.conditional, spec.model) in family and right_tau), r
    for r, spec in exp.ROWS.items():
        assert s[r]["dgp"].space == spec.space and s[r]["dgp"].conditional == spec.conditional


def test_every_row_shares_one_mixing():
    cfg = exp.PROFILES["quick"]
    ref = DGP(exp.row_settings("vmf_matched", cfg)["dgp"]).mixing.tensors()
    for r in exp.ROWS:
        other = DGP(exp.row_settings(r, cfg)["dgp"]).mixing.tensors()
        assert all(torch.equal(ref[k], other[k]) for k in ref)


def test_bad_rows_are_named():
    with pytest.raises(ValueError, match="rows must be drawn from"):
        exp.run(dataclasses.replace(TINY["infonce_mismatch"], rows=("vmf", "box")))
    with pytest.raises(ValueError, match="row must be one of"):
        exp.row_settings("nope", exp.PROFILES["quick"])


def test_supervised_reference_beats_the_raw_observations():
    cfg = dataclasses.replace(TINY["infonce_mismatch"], rows=("supervised",), steps=300,
                              eval_every=300, hidden=(64, 64), seeds=1, batch_size=128)
    m = exp.run(cfg)["metrics"]
    sup = m[(m.row == "supervised") & (m.metric == "r2_linear")].value.item()
    raw = m[(m.row == "raw_sphere") & (m.metric == "r2_linear")].value.item()
    assert sup > raw + 0.05
    assert set(m.row) == {"supervised", "raw_sphere"}


def test_table_and_figures(result):
    m, c = result["metrics"], result["curves"]
    assert m.value.map(math.isfinite).all()
    assert set(m.row) == set(exp.ROWS) | {"raw_sphere", "raw_box"}
    assert (m[m.row.isin(exp.ROWS)].groupby("row").seed.nunique() == 2).all()
    table = exp.mismatch_table(m)
    assert list(table.index) == [exp.ROWS[r].label for r in exp.ROWS] + list(exp.RAW.values())
    assert {"linear R²", "nonlinear R²", "MCC", "matches theory", "seeds"} <= set(table)
    assert table.loc[exp.ROWS["vmf_matched"].label, "matches theory"] == "✓"
    assert table.loc[exp.ROWS["laplace_sphere"].label, "matches theory"] == "✗"
    assert "published" not in table  # no column of placeholders
    assert table.loc[exp.ROWS["vmf_matched"].label, "p(z̃|z)"] == "vMF"
    assert table.loc[exp.ROWS["box_laplace_l1"].label, "p(z̃|z)"] == "Laplace, box"
    assert list(c[c.row == "vmf_matched"].step.unique()) == [10, 20]
    axes = exp.plot_mismatch(m)
    assert len(axes) == 2 and len(axes[0].get_yticklabels()) == len(exp.ROWS)
    assert exp.plot_mismatch_curves(c).get_xlabel() == "training step"
