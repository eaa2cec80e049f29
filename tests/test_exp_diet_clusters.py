"""DIET on the cluster DGP (Reizinger et al. 2024): scores, head, training, tables, plots."""

from __future__ import annotations

import dataclasses
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from sithlib.dgp import random_matrix  # noqa: E402
from sithlib.dgp._random import random_orthogonal  # noqa: E402
from sithlib.experiments import diet_clusters as dc  # noqa: E402
from sithlib.losses import diet  # noqa: E402
from sithlib.train import train  # noqa: E402

TINY = {
    "diet_clusters": dataclasses.replace(
        dc.PROFILES["quick"], rows=("baseline",), hidden_layers=2, narrow=2, wide=2,
        n_instances=64, steps=20, eval_every=10, batch_size=32, seeds=2, n_eval=256),
}


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def test_scores_of_an_exact_solution_are_perfect():
    """Theorem 1's normalized solution: h = kappa O z and w_i = O v_C(i) score R^2 = 1, MAE 0."""
    gen = torch.Generator().manual_seed(0)
    kappa, d = 10.0, 5
    o = random_orthogonal(d, generator=gen)
    z = _unit(torch.randn(2000, d, generator=gen, dtype=torch.float64))
    v = _unit(torch.randn(300, d, generator=gen, dtype=torch.float64))
    s = dc.scores(kappa * z @ o.T, z, v @ o.T, v, "normalized", kappa)
    assert s["r2_z"] == pytest.approx(1.0, abs=1e-9) and s["r2_w"] == pytest.approx(1.0, abs=1e-9)
    assert s["mae_z"] == pytest.approx(0.0, abs=1e-9) and s["mae_w"] == pytest.approx(0.0, abs=1e-9)
    assert s["sv_z"] == pytest.approx(1.0 / kappa, abs=1e-9)
    # A general linear map keeps R^2 = 1 but is no longer orthogonal: the MAEs see it.
    a = random_matrix(d, cond=4.0, generator=gen)
    s = dc.scores(z @ a.T, z, v @ a.T, v, "normalized", kappa)
    assert s["r2_z"] == pytest.approx(1.0, abs=1e-9) and s["mae_w"] > 0.1
    # The unnormalized head is scored with an affine fit and has no MAE.
    s = dc.scores(z @ a.T + 3.0, z, v @ a.T - 1.0, v, "unnormalized", kappa)
    assert set(s) == {"r2_z", "r2_w"} and s["r2_z"] == pytest.approx(1.0, abs=1e-9)


def test_normalized_head_uses_unit_rows_and_their_gradient():
    """The logits see unit rows; the gradient w.r.t. W is the gradient at the unit rows divided
    by each row's norm, which is 1 where training keeps the rows at unit norm (``unit_rows``):
    then it is csi's renormalise-then-step update."""
    gen = torch.Generator().manual_seed(1)
    model = dc.DIETModel(3, 7, [4, 4], True, gen)
    with torch.no_grad():
        model.W.weight.mul_(torch.arange(1, 8, dtype=torch.float32)[:, None])
    x = torch.randn(16, 3, generator=gen)
    index = torch.randint(0, 7, (16,), generator=gen)
    rows = model.rows()
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(7))
    h, logits = model(x)
    diet(logits, index).backward()
    unit = rows.detach().clone().requires_grad_(True)
    diet(h.detach() @ unit.T, index).backward()
    norms = model.W.weight.norm(dim=1, keepdim=True).detach()
    torch.testing.assert_close(model.W.weight.grad, unit.grad / norms)
    assert not any(True for _ in model.buffers()), "no buffers, so seeds can be vmapped"


def test_normalized_rows_are_back_at_unit_norm_after_every_step_as_in_csi(monkeypatch):
    captured = {}

    def spy(*args, **kwargs):
        captured["result"] = result = train(*args, **kwargs)
        return result

    monkeypatch.setattr(dc, "train", spy)
    dc.run(dataclasses.replace(TINY["diet_clusters"], heads=("normalized", "unnormalized"),
                               seeds=1))
    normalized, unnormalized = (m.W.weight.norm(dim=1) for m in captured["result"].models)
    torch.testing.assert_close(normalized, torch.ones_like(normalized))
    assert (unnormalized - 1).abs().max() > 0.1  # PyTorch's init, then Adam: no constraint


def test_every_seed_can_draw_its_own_dgp_as_csi_does():
    """dgp_per_seed: seed s learns the DGP of dgp_seed + s; seed 0's is the shared one, so its
    numbers are those of the shared run, and seed 1's data differ."""
    cfg = dataclasses.replace(TINY["diet_clusters"], heads=("unnormalized",))
    shared, own = dc.run(cfg)["metrics"], dc.run(dataclasses.replace(cfg, dgp_per_seed=True))
    own = own["metrics"]
    first = [f[(f.seed == 0) & (f.metric != "kappa_eff")].reset_index(drop=True)
             for f in (shared, own)]
    pd.testing.assert_frame_equal(*first, rtol=1e-5, atol=1e-6)
    for frame, dgps in ((shared, 1), (own, 2)):
        assert len(frame[frame.metric == "kappa_eff"]) == dgps
    raw = own[own.metric == "r2_z_raw_x"].set_index("seed").value
    assert raw[0] != raw[1]  # another mixing g
    assert dc.PROFILES["paper"].dgp_per_seed and not dc.PROFILES["quick"].dgp_per_seed


def test_training_learns_the_clusters():
    cfg = dataclasses.replace(TINY["diet_clusters"], heads=("unnormalized",), n_instances=100,
                              hidden_layers=3, narrow=4, wide=10, steps=300, eval_every=100,
                              batch_size=128, lr=3e-3, seeds=1)
    out = dc.run(cfg)
    c = out["curves"]
    assert list(c.step) == [100, 200, 300]
    assert c.loss.iloc[-1] < math.log(100) - 0.5
    assert c.r2_w.iloc[-1] > c.r2_w.iloc[0] + 0.1
    m = out["metrics"]
    assert set(m.metric) == {"r2_z", "r2_w", "r2_z_raw_x", "kappa_eff"}
    # The baseline's DGP is vMF(kappa = 10): the linear-logit scale is kappa.
    assert m[m.metric == "kappa_eff"].value.item() == pytest.approx(10.0, rel=0.05)


def test_comparison_table_has_every_row_head_and_score():
    rows = ("baseline", "kappa50")
    records = []
    for row in rows:
        for head in dc.HEADS:
            metrics = ["r2_z", "r2_w"] + (["mae_z", "mae_w"] if head == "normalized" else [])
            records += [{"row": row, "head": head, "seed": seed, "metric": k, "value": 0.5}
                        for seed in range(3) for k in metrics]
    table = dc.comparison_table(pd.DataFrame(records))
    assert len(table) == len(rows) * 6
    base = table.loc[(dc.setting_label("baseline"), "normalized", "R² latents z")]
    assert base["published"] == "98.6±0.01" and base["ours"] == "50.0±0.0"
    assert base["|Δ|"] == pytest.approx(48.6) and not base["within 2"]
    assert (table["source"] == dc.SOURCE).all() and (table["seeds"] == 3).all()
    steps = table["paper's steps"].groupby(level="setting").first()
    assert steps[dc.setting_label("baseline")] == 50_000
    assert steps[dc.setting_label("kappa50")] == 500_000


def test_singular_value_table_sets_ours_beside_both_reference_scales():
    records = [{"row": r, "head": "normalized", "seed": s, "metric": k, "value": v}
               for r in ("baseline", "laplace") for s in range(3)
               for k, v in (("sv_z", 0.1 + 0.4 * (r == "laplace") + 0.01 * s), ("mae_z", 0.2),
                            ("mae_w", 0.03 + 0.01 * s))]
    records += [{"row": r, "head": "normalized", "seed": 0, "metric": "kappa_eff", "value": k}
                for r, k in (("baseline", 10.0), ("laplace", 2.0))]
    t = dc.singular_value_table(pd.DataFrame(records))
    lap = t.loc[dc.setting_label("laplace")]
    # csi compares Laplace(b = 1) with 1 / (10 b); the cross-entropy's scale is 1 / kappa_eff.
    assert lap["csi's 1/κ"] == "0.100" and lap["1/κ_eff"] == "0.500"
    assert lap["ours: mean singular value"] == "0.510±0.010"
    assert lap["published MAE"] == "0.01±0.00"
    check = dc.published_mae_w_check(pd.DataFrame(records))
    assert check.loc["Laplace, b = 1", "ours: MAE s.v. w"] == "0.040±0.010"
    assert check.loc["κ = 50", "ours: MAE s.v. w"] == "–"
    assert "ours: MAE s.v. w" not in dc.published_mae_w_check()
    assert t.loc[dc.setting_label("baseline"), "csi's 1/κ"] == "0.100"


@pytest.mark.parametrize("noise", (0.02, 0.1, 0.3, 0.6))
def test_r2_floor_bounds_the_fit_of_unit_rows(noise):
    """Least squares through the origin from unit rows w to unit cluster vectors v: the
    in-sample uncentered R^2 is the mean squared norm of the fitted values, at least
    sigma_min^2 >= r2_floor(MAE); the held-out, centered R^2 that the paper prints stays within
    a few points of it with 100 cluster vectors."""
    from sithlib.metrics import fit_linear_map, r2_linear

    gen = torch.Generator().manual_seed(int(100 * noise))
    d = 5
    v = _unit(torch.randn(100, d, generator=gen, dtype=torch.float64))[torch.arange(1000) % 100]
    w = _unit(v @ random_orthogonal(d, generator=gen).T
              + noise * torch.randn(1000, d, generator=gen, dtype=torch.float64))
    a = fit_linear_map(w, v, fit_intercept=False)[0]
    sv = torch.linalg.svdvals(a)
    mae = float((sv - 1).abs().mean())
    r2_unc = 1 - float(((v - w @ a) ** 2).sum() / (v**2).sum())
    assert r2_unc == pytest.approx(float(((w @ a) ** 2).sum(1).mean()), abs=1e-9)
    assert float(sv.min()) ** 2 - 1e-9 <= r2_unc <= float(sv.max()) ** 2 + 1e-9
    assert dc.r2_floor(mae, d) <= float(sv.min()) ** 2 + 1e-9
    assert abs(r2_linear(w, v, fit_intercept=False) - r2_unc) < 0.04


def test_broad_noise_rows_have_a_far_smaller_logit_scale_than_csi_reference():
    """The chapter's claim: for Laplace(b = 1) and Normal(sigma^2 = 1) the scale the
    cross-entropy pulls h towards is several times smaller than csi's 10 b."""
    cfg = dc.PROFILES["quick"]
    for name in ("laplace", "normal"):
        dgp = dc._dgp(dc.TABLE2[name], 1000, cfg, "cpu")
        k_eff = dgp.clusters.logit_scale(16_384, generator=torch.Generator().manual_seed(0))
        assert 1.0 < k_eff < dc.csi_kappa(name) / 3, (name, k_eff)


def test_published_mae_w_check_flags_rows_whose_r2_the_mae_rules_out():
    t = dc.published_mae_w_check()
    assert len(t) == len(dc.TABLE2) and (t["source"] == dc.SOURCE).all()
    # MAE_o(w) printed as 0.00 (< 0.005) leaves every singular value within 0.025 of 1 at d = 5.
    base = t.loc[dc.setting_label("baseline")]
    assert base["R² floor from the MAE"] == pytest.approx(100 * 0.975**2, abs=0.05)
    assert set(t.index[t.consistent == "no"]) == {dc.setting_label("kappa50"),
                                                  dc.setting_label("c10")}
    assert dc.r2_floor(0.5, 5) == 0.0


def test_paper_steps_follow_csi_schedule():
    # main_diet.py: 50 000 x max(1, N // 1024); 97 times longer for N = 1e5. train_selfsup.sh
    # runs the blocks other than N's at the default N = 10 240: ten times the baseline's.
    assert dc.paper_steps("baseline") == 50_000 and dc.paper_steps("n1e5") == 4_850_000
    assert all(dc.paper_steps(r) == 500_000 for r in dc.TABLE2 if r not in dc.N_BLOCK)


def test_rows_of_one_shape_train_as_one_ensemble_and_the_first_row_is_unchanged():
    assert dc.groups(dc.TABLE2) == [
        ("baseline", "c10", "c1000", "kappa5", "kappa50", "laplace", "normal"), ("n1e5",),
        ("d10",), ("d20",)]
    assert dc.groups(("d10", "kappa50", "baseline")) == [("baseline", "kappa50"), ("d10",)]
    cfg = dataclasses.replace(TINY["diet_clusters"], heads=("unnormalized",),
                              rows=("baseline", "laplace", "d10"), other_shape_steps=10)
    both = dc.run(cfg)
    m, c = both["metrics"], both["curves"]
    # Every row has its own scores, seeds and curves; d10 trained for its own number of steps.
    for row, steps in (("baseline", 20), ("laplace", 20), ("d10", 10)):
        part = m[(m.row == row) & (m.metric == "r2_z")]
        assert sorted(part.seed) == [0, 1] and (m[m.row == row].steps == steps).all()
        assert c[c.row == row].step.max() == steps and sorted(set(c[c.row == row].seed)) == [0, 1]
    assert m[m.row == "laplace"].value.tolist() != m[m.row == "baseline"].value.tolist()
    table = dc.comparison_table(m)
    assert sorted(set(table.steps)) == [10, 20]
    # The first row's members have the same networks and data streams as when it trains alone.
    alone = dc.run(dataclasses.replace(cfg, rows=("baseline",)))["metrics"]
    first = m[m.row == "baseline"].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("heads", (("normalized", "unnormalized"), ("unnormalized", "normalized")))
def test_both_heads_train_in_one_ensemble_as_they_would_alone(heads):
    """The head is data (a flag in each member's batches): in an ensemble with members of the
    other head, the first head's members get the numbers of a run with that head alone."""
    cfg = dataclasses.replace(TINY["diet_clusters"], heads=heads, seeds=1)
    both = dc.run(cfg)
    alone = dc.run(dataclasses.replace(cfg, heads=heads[:1]))
    for key in ("metrics", "curves"):
        mixed = both[key][both[key]["head"] == heads[0]].reset_index(drop=True)
        # The other head's scores (MAEs) are columns of the mixed curves, empty in these rows.
        pd.testing.assert_frame_equal(mixed.dropna(axis=1, how="all"), alone[key],
                                      rtol=1e-4, atol=1e-5, check_like=True)
    assert set(both["metrics"]["head"]) == set(heads)
    # The normalized members' MAEs exist, the unnormalized ones' do not.
    m = both["metrics"]
    assert set(m[m.metric == "mae_z"]["head"]) == {"normalized"}


def test_head_flag_as_a_tensor_equals_the_boolean_head():
    gen = torch.Generator().manual_seed(3)
    model = dc.DIETModel(3, 7, [4, 4], False, gen)
    x = torch.randn(16, 3, generator=gen)
    for flag in (True, False):
        ref_h, ref_logits = model(x, flag)
        h, logits = model(x, torch.tensor(flag))
        torch.testing.assert_close(logits, ref_logits, rtol=0, atol=0)
        torch.testing.assert_close(model.rows(torch.tensor(flag)), model.rows(flag), rtol=0,
                                   atol=0)
    assert torch.equal(model.rows(), model.W.weight)


def test_setting_labels_name_what_a_row_changes():
    labels = [dc.setting_label(r) for r in dc.TABLE2]
    assert len(set(labels)) == len(labels) and labels[0] == "baseline"
    assert dc.setting_label("kappa50") == "κ = 50" and dc.setting_label("c10") == "|C| = 10"
    assert dc.setting_label("laplace") == "Laplace, b = 1"
    assert dc.setting_label("n1e5") == "N = 100,000"


def test_summary_table_sets_ours_beside_the_paper_per_row_and_head():
    records = [{"row": row, "head": head, "seed": seed, "metric": q, "value": v + 0.01 * seed}
               for row in ("kappa50", "baseline") for head in dc.HEADS for seed in range(2)
               for q, v in (("r2_z", 0.9), ("r2_w", 0.5))]
    t = dc.summary_table(pd.DataFrame(records))
    assert list(t.index.get_level_values("setting")) == ["baseline"] * 2 + ["κ = 50"] * 2
    base = t.loc[("baseline", "normalized")]
    assert base[("R² of z", "ours")] == "90.5±0.7"
    assert base[("R² of z", "paper")] == "98.6" and base[("R² of z", "Δ")] == "\u22128.1"
    assert base[("R² of w→v", "Δ")] == "\u221249.4"
    assert t.loc[("baseline", "unnormalized"), ("R² of z", "paper")] == "99.0"  # one decimal
    assert t.loc[("κ = 50", "normalized"), ("R² of z", "Δ")] == "+45.5"
    assert list(t.columns.get_level_values(1)) == ["ours", "paper", "Δ"] * 2


def test_every_table2_row_is_complete():
    for name, row in dc.TABLE2.items():
        assert set(row.published) == {f"{q} {h}" for q in ("r2_z", "r2_w") for h in dc.HEADS} | {
            "mae_z normalized", "mae_w normalized"}, name
    assert set(dc.PROFILES["paper"].rows) == set(dc.TABLE2)
    # The paper smoke run shrinks every step count (a field's name ends in "steps").
    from sithlib.experiments import shrink

    small = shrink(dc.PROFILES["paper"])
    assert (small.steps, small.other_shape_steps) == (4, 4)


def test_cells_are_cached_and_read_back(store):
    cfg = dataclasses.replace(TINY["diet_clusters"], heads=("normalized",), seeds=1,
                              cache_cells=True)
    first = dc.run(cfg)
    again = dc.run(cfg)
    pd.testing.assert_frame_equal(first["metrics"], again["metrics"])
    assert set(first["metrics"]["head"]) == {"normalized"}


def test_plots_return_axes():
    records = [{"row": r, "head": h, "seed": s, "metric": k, "value": 0.9}
               for r in ("baseline", "c10") for h in dc.HEADS for s in range(2)
               for k in ("r2_z", "r2_w")]
    ax = dc.plot_r2(pd.DataFrame(records))
    assert len(ax) == 2 and ax[0].get_title() == "normalized head"
    curves = pd.DataFrame([{"step": t, "seed": 0, "row": "baseline", "head": "normalized",
                            "r2_z": 0.5} for t in (1, 2)])
    assert dc.plot_curves(curves).get_xlabel() == "training step"
    plt.close("all")


def test_bad_config_names_the_allowed_values():
    with pytest.raises(ValueError, match="rows"):
        dc.Config(rows=("d7",))
    with pytest.raises(ValueError, match="heads"):
        dc.Config(heads=("cosine",))
    with pytest.raises(ValueError, match="other_shape_steps"):
        dc.Config(other_shape_steps=-1)
    with pytest.raises(ValueError, match="mixing_cond"):
        dc.Config(mixing_cond=0.5)


def test_mixing_cond_follows_csi_threshold_for_the_row_dimension():
    # 0 draws csi's threshold (best of 25 000 random layers) for each d: it grows with d, and
    # every layer of the row's mixing has exactly that condition number.
    cfg = dc.Config()
    c5, c10 = dc.mixing_cond(cfg, 5), dc.mixing_cond(cfg, 10)
    assert 1.3 < c5 < 1.9 and 3.2 < c10 < 4.4
    assert dc.mixing_cond(cfg, 5) == c5  # the same draw every time
    assert dc.mixing_cond(dc.Config(mixing_cond=4.0), 5) == 4.0
    row = dc._dgp(dc.TABLE2["baseline"], 1000, cfg, "cpu")
    assert torch.allclose(row.mixing.layer_condition_numbers().double(),
                          torch.full((4,), c5, dtype=torch.float64), rtol=1e-4)
