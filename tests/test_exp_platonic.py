"""The platonic experiment: every SSL method on one identifiable DGP, pairwise alignment."""

from __future__ import annotations

import dataclasses
import itertools

import matplotlib
import pytest
import torch

from sithlib.dgp import DGP, DGPConfig
from sithlib.experiments import platonic as exp
from sithlib.experiments._tables import METRIC_LABELS
from sithlib.metrics import mutual_knn

matplotlib.use("Agg")

TINY = {
    "platonic": dataclasses.replace(
        exp.PROFILES["quick"], steps=30, eval_every=15, n_eval=300, n_nonlinear=150,
        hidden=(16,), head_width=16, proj_dim=8, prototypes=10, dino_out_dim=32, batch_size=64,
        n_samples=100,
    )
}


@pytest.fixture(scope="module")
def tiny():
    return exp.run(TINY["platonic"])


def test_neighbour_cache_matches_mutual_knn():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=gen, dtype=torch.float64)
    b = a + 0.3 * torch.randn(400, 6, generator=gen, dtype=torch.float64)
    for k in (1, 5, 10):
        ours = exp.knn_overlap(exp.neighbours(a, k), exp.neighbours(b, k))
        assert ours == pytest.approx(mutual_knn(a, b, k=k), abs=1e-12)
    # Orthogonal maps keep every neighbourhood; a general linear map does not.
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    assert exp.knn_overlap(exp.neighbours(a, 10), exp.neighbours(a @ q, 10)) == 1.0
    stretch = torch.diag(torch.tensor([10.0, 1, 1, 1, 1, 0.1], dtype=torch.float64))
    assert exp.knn_overlap(exp.neighbours(a, 10), exp.neighbours(a @ stretch, 10)) < 0.9
    # Ties (a collapsed method's repeated rows) go to the lower index, as in mutual_knn,
    # whatever order the backend's topk returns them in.
    # A BLAS kernel rounds a dot product differently at different memory offsets, so the
    # copies are laid out at several offsets: they must tie exactly all the same.
    tied = torch.cat([a[:50]] * 4)
    want = torch.arange(200).view(4, 50).T  # row i's copies: i, 50 + i, 100 + i, 150 + i
    for offset in range(4):
        shifted = torch.empty(tied.numel() + offset, dtype=tied.dtype)[offset:].view(200, 6)
        got = exp.neighbours(shifted.copy_(tied), 3)
        for i in range(50):
            assert got[i].tolist() == [j for j in want[i].tolist() if j != i][:3]
        assert exp.knn_overlap(got, exp.neighbours(tied, 3)) == mutual_knn(shifted, tied, k=3)


def test_held_out_dgp_shares_the_mixing():
    cfg = exp.PROFILES["quick"]
    train_dgp = DGP(DGPConfig(dim=cfg.dim, kappa=cfg.kappa, n_samples=cfg.n_samples))
    fresh = DGP(DGPConfig(dim=cfg.dim, kappa=cfg.kappa))
    for key, value in fresh.mixing.tensors().items():
        assert torch.equal(value, train_dgp.mixing.tensors()[key])


def test_learning_rates_and_bad_configs():
    cfg = exp.PROFILES["quick"]
    lrs = exp.method_lrs(cfg)
    assert set(lrs) == set(exp.METHODS)
    assert lrs["diet"] == 1e-2 and lrs["infonce"] == cfg.lr
    with pytest.raises(ValueError, match="method:lr"):
        exp.method_lrs(dataclasses.replace(cfg, lrs=("supervised:1e-3",)))
    with pytest.raises(ValueError, match="> 0"):
        exp.method_lrs(dataclasses.replace(cfg, lrs=("dino:-1",)))
    for methods in (("supervised",), ("mocov3",), (), ("byol", "byol")):  # labels, unknown, ...
        with pytest.raises(ValueError, match="register_method"):
            exp.run(dataclasses.replace(cfg, methods=methods))
    assert exp.method_config(cfg, "simclr") == {}  # outside the chapter's eight: its defaults
    with pytest.raises(ValueError, match="method must be one of"):
        exp.method_config(cfg, "supervised")


def test_every_method_and_pair_is_measured(tiny):
    m = tiny["metrics"]
    cfg = TINY["platonic"]
    models = [(name, s) for name in cfg.methods for s in range(cfg.seeds)]
    models += [("latent z", 0), ("raw x", 0)]
    pairs = m[m.metric == "mutual_knn"]
    assert len(pairs) == len(list(itertools.combinations(models, 2)))
    assert pairs.value.between(0, 1).all()
    cka = m[m.metric == "cka_linear"]
    assert cka.value.between(0, 1 + 1e-9).all()
    for score in exp.SCORES:
        assert (m[m.metric == score].groupby("model").seed.nunique().reindex(cfg.methods)
                == cfg.seeds).all(), score
    assert set(tiny["curves"].model) == set(cfg.methods)


def test_tables(tiny):
    m = tiny["metrics"]
    table = exp.summary_table(m)
    assert list(table.index) == [exp.label(k) for k in exp.METHODS] + ["raw x"]
    assert list(table.columns) == [METRIC_LABELS[s] for s in exp.SCORES] + ["seeds"]
    assert "±" in table.loc["InfoNCE", "linear R²"]
    knn = exp.similarity_matrix(m)
    assert list(knn.index) == list(exp.METHODS + exp.REFERENCES)
    assert (knn.to_numpy() == knn.to_numpy().T)[~knn.isna().to_numpy()].all()
    assert knn.loc["latent z", "latent z"] != knn.loc["latent z", "latent z"]  # NaN diagonal
    # The diagonal of a method is its agreement between seeds.
    within = m[(m.metric == "mutual_knn") & (m.model == "dino") & (m.model_b == "dino")]
    assert knn.loc["dino", "dino"] == pytest.approx(within.value.mean())
    pairs = exp.pair_table(m)
    n = len(exp.METHODS)
    assert len(pairs) == 2 * n * (n + 1) // 2
    # The x spread of a pair is the seed sd of the score of its lower method.
    row = pairs[(pairs.a == "infonce") & (pairs.b == "dino")].iloc[0]
    scores = m[m.metric == "procrustes_r2"].groupby("model").value
    lower = min(("infonce", "dino"), key=lambda k: scores.mean()[k])
    assert row.min_score == pytest.approx(scores.mean()[lower])
    assert row.min_score_sd == pytest.approx(scores.std()[lower])
    assert -1 <= exp.prediction_correlation(m) <= 1
    with pytest.raises(ValueError, match="metric"):
        exp.similarity_matrix(m, "cka_rbf")


def test_plots(tiny):
    import matplotlib.pyplot as plt

    ax = exp.plot_curves(tiny["curves"], tiny["metrics"])
    assert len(ax.get_lines()) >= len(exp.METHODS)
    axes = exp.plot_similarity(tiny["metrics"])
    assert len(axes) == 2 and len(axes[0].texts) > 0
    axes = exp.plot_alignment_vs_identifiability(tiny["metrics"])
    assert axes[0].get_ylabel().startswith("mutual kNN")
    plt.close("all")


def test_infonce_learns_beyond_the_raw_mixing():
    cfg = dataclasses.replace(exp.PROFILES["quick"], methods=("infonce",), seeds=1, steps=800,
                              eval_every=400, n_eval=1000, n_nonlinear=200)
    m = exp.run(cfg)["metrics"]
    score = m[(m.model == "infonce") & (m.metric == "r2_linear")].value.item()
    raw = m[(m.model == "raw x") & (m.metric == "r2_linear")].value.item()
    assert score > raw + 0.03
