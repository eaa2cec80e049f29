"""Direction 1 (training dynamics): tidy tables, resumable grid, onset and time-to-R^2 logic."""

from __future__ import annotations

import dataclasses

import matplotlib
import pandas as pd
import pytest
import torch

from sithlib.experiments import dynamics

matplotlib.use("Agg")

TINY = {"dynamics": dataclasses.replace(dynamics.PROFILES["quick"], methods=("infonce", "vicreg"),
                                        hidden=(32,), head_dims=(16, 16), steps=60,
                                        eval_every=20, batch_size=64, n_eval=300, seeds=1)}


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SITH_CACHE_DIR", str(tmp_path_factory.mktemp("dyn") / "results"))
    yield dynamics.run(TINY["dynamics"])
    mp.undo()


def test_curves_hold_every_measurement(tiny_result):
    curves = tiny_result["curves"]
    cfg = TINY["dynamics"]
    assert set(curves.method) == set(cfg.methods)
    assert sorted(curves.step.unique()) == [0, 20, 40, 60]  # step 0: the initial network
    for col in ("loss", "r2_linear", "mcc", "effective_rank"):
        assert curves[col].notna().all()
    eig = curves[[f"eig_{k}" for k in range(cfg.dim)]].to_numpy()
    assert (eig[:, :-1] >= eig[:, 1:] - 1e-12).all(), "eigenvalues are sorted, largest first"
    per_latent = curves[[f"r2_z{j}" for j in range(cfg.dim)]].mean(axis=1)
    assert (per_latent - curves.r2_linear).abs().max() < 1e-9


def test_infonce_beats_the_raw_baseline(tmp_path, monkeypatch):
    monkeypatch.setenv("SITH_CACHE_DIR", str(tmp_path / "results"))
    cfg = dataclasses.replace(TINY["dynamics"], methods=("infonce",), hidden=(64, 64),
                              steps=400, eval_every=100, batch_size=256)
    m = dynamics.run(cfg)["metrics"]
    learned = m[(m.method == "infonce") & (m.metric == "r2_linear")].value.item()
    raw = m[(m.method == dynamics.RAW) & (m.metric == "r2_linear")].value.item()
    assert learned > raw + 0.01


def test_grid_resumes_and_extends(tmp_path, monkeypatch):
    monkeypatch.setenv("SITH_CACHE_DIR", str(tmp_path / "results"))
    calls = []
    real = dynamics.run_cell
    monkeypatch.setattr(dynamics, "run_cell", lambda cell, device="cpu": (
        calls.append((cell["method"], cell["seed"])) or real(cell, device)))
    cfg = dataclasses.replace(TINY["dynamics"], methods=("infonce",), steps=20, eval_every=10)
    first = dynamics.run(cfg)["metrics"]
    again = dynamics.run(cfg)["metrics"]
    assert calls == [("infonce", 0)]
    pd.testing.assert_frame_equal(first, again)
    dynamics.run(dataclasses.replace(cfg, seeds=2))
    assert calls == [("infonce", 0), ("infonce", 1)], "only the new seed runs"


def test_time_to_target_on_a_known_curve():
    curves = pd.DataFrame({"method": "m", "init_scale": 1.0, "seed": 0, "step": [10, 20, 30, 40],
                           "r2_linear": [0.2, 0.75, 0.85, 0.88],
                           "eig_0": [0.1, 1.0, 2.0, 2.0], "eig_1": [0.0, 0.1, 0.2, 1.0]})
    hits = dynamics.time_to_target(curves, (0.7, 0.8, 0.9)).set_index("target").step
    assert hits[0.7] == 20 and hits[0.8] == 30 and pd.isna(hits[0.9])


def test_rise_onsets_measure_half_the_change_from_the_initial_value():
    curves = pd.DataFrame({"method": "m", "init_scale": 1.0, "seed": 0, "step": [0, 10, 20, 30],
                           # starts high: "half of the final value" would fire at step 0
                           "r2_z0": [0.4, 0.5, 0.7, 0.8],
                           "r2_z1": [0.9, 0.8, 0.6, 0.5],   # falls: crosses 0.7 downwards
                           "r2_z2": [0.3, 0.32, 0.3, 0.31]})  # barely moves: no onset
    rise = dynamics.rise_onsets(curves, "r2_z").set_index("direction")
    assert list(rise.index) == [1, 2, 3]  # numbered from 1, as in the figures
    assert rise.onset[1] == 20 and rise.onset[2] == 20
    assert not rise.moves[3] and pd.isna(rise.onset[3]) and rise.moves[1]


def test_scores_of_an_orthogonal_map_are_perfect():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(500, 4, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=torch.float64))
    s = dynamics.scores(z @ q, z)
    assert s["r2_linear"] > 1 - 1e-9 and min(s[f"r2_z{j}"] for j in range(4)) > 1 - 1e-9
    eig = [s[f"eig_{k}"] for k in range(4)]
    cov = torch.linalg.eigvalsh(torch.cov(z.T)).flip(0)  # rotation keeps the spectrum
    assert torch.allclose(torch.tensor(eig, dtype=torch.float64), cov, atol=1e-9)


def test_bad_method_is_rejected():
    with pytest.raises(ValueError, match="methods must be among"):
        dynamics.cells(dataclasses.replace(TINY["dynamics"], methods=("dino",)))


def test_tables_and_figures(tiny_result):
    m, c = tiny_result["metrics"], tiny_result["curves"]
    table = dynamics.time_to_r2_table(m)
    assert set(table.index) == {"InfoNCE", "VICReg"} and table.shape[1] == 3
    onset = dynamics.onset_table(m, c)
    assert set(onset.index) == {"InfoNCE", "VICReg"} and onset.index.name is None
    assert onset["latents that move"].str.endswith(f"of {TINY['dynamics'].dim}").all()
    assert set(dynamics.lowest_latent(m)) <= set(range(1, TINY["dynamics"].dim + 1))
    # The stored onsets are the chapter's (half-way from initial to final), numbered from 1.
    stored = m[m.metric == "latent_onset"]
    assert set(stored["index"]) <= set(range(1, TINY["dynamics"].dim + 1))
    rise = dynamics.rise_onsets(c, "r2_z")
    assert sorted(stored.value) == sorted(rise.onset.dropna())  # directions that move
    assert len(dynamics.plot_scores(c, m)) == 3
    for grid in (dynamics.plot_loss(c), dynamics.plot_spectrum(c), dynamics.plot_latent_r2(c)):
        assert len(grid.axes.flat) == 2
    matplotlib.pyplot.close("all")


def test_chapter_names_every_method_of_both_profiles():
    """The chapter's method list is generated from the profiles: check the code that builds it
    reads them (a hand-written list went stale once)."""
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).parents[1] / f"{dynamics.CHAPTER}.ipynb").read_text())
    source = "".join("".join(c["source"]) for c in nb["cells"])
    assert "{glue:md}`dynamics_methods_sentence:myst`" in source
    assert 'exp.PROFILES["paper"].methods' in source and 'exp.PROFILES["quick"].methods' in source
