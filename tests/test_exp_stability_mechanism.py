"""The stability mechanism: exact identities, the linearised repulsion and the devices."""

from __future__ import annotations

import dataclasses
import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F

from sithlib.experiments import stability_mechanism as exp
from sithlib.train import train

matplotlib.use("Agg")

TINY = {"stability_mechanism": dataclasses.replace(
    exp.PROFILES["quick"], seeds=2, steps=8, batch_size=64, n_probe=48, k_views=3,
    taus=(0.1, 1.0, 100.0), image_size=8, resnet_width=2, head_hidden=32, head_out=16,
    dino_out=64, prototypes=10, hidden=(32,), feature_dim=16)}


@pytest.fixture(scope="module")
def metrics():
    return exp.run(TINY["stability_mechanism"])["metrics"]


def test_every_exact_check_holds(metrics):
    table = exp.checks_table(metrics)
    assert len(table) == len(exp.CHECKS)
    assert (table.holds == "yes").all(), table
    # the identity is checked on every method, both states, both seeds, and on images
    ident = metrics[metrics.metric == "identity_residual"]
    assert set(ident.method) == {*exp.METHODS, "resnet18"}
    assert len(ident) == 2 * (2 * len(exp.METHODS) + 1)


def test_decomposition_terms_are_consistent(metrics):
    wide = metrics.pivot_table(index=["data", "method", "state", "seed"], columns="metric",
                               values="value")
    assert ((wide.center_sq_norm >= 0) & (wide.center_sq_norm <= 1 + 1e-12)).all()
    assert (wide.spread >= 0).all()
    assert (wide.mean_sq_norm <= 1 + 1e-12).all()


def test_linearised_repulsion_is_the_large_tau_limit(metrics):
    m = metrics[metrics.method == "simclr"]
    for _, part in m.groupby(["state", "seed"]):
        exact = part[part.metric == "pair_mean"].value.item()
        for metric in ("tau_repulsion", "tau_uniformity"):
            est = part[part.metric == metric].set_index("tau").value
            err = (est - exact).abs()
            # tau log E e^{s/tau} = E s + Var(s) / (2 tau) + O(tau^-2) for cosines |s| <= 1, so
            # the error at tau = 100 is at most about 1 / 200, whatever the size of E s (an
            # untrained network with calibrated batch norms has E s near 0).
            assert err.loc[100.0] < 1 / 200 + 1e-3 and err.loc[100.0] < err.loc[0.1]
        cos = part[part.metric == "repulsion_grad_cos"].set_index("tau").value
        assert cos.loc[0.1] < cos.loc[1.0] < cos.loc[100.0] and cos.loc[100.0] > 0.95


def test_sinkhorn_balances_the_codes_and_dino_centers(metrics):
    m = metrics.groupby(["metric", "state", "seed"]).value.first()
    for state in ("init", "trained"):
        for seed in (0, 1):
            uniform = m["code_center_sq_norm_uniform", state, seed]
            sink = m["code_center_sq_norm_sinkhorn", state, seed]
            soft = m["code_center_sq_norm_softmax", state, seed]
            # ||mean code||^2 >= 1/K on the simplex, with equality for balanced codes
            assert uniform - 1e-9 <= sink <= soft + 1e-9
            assert m["dino_mean_prob_entropy_centered", state, seed] <= 1 + 1e-9


def test_pair_mean_and_repulsion_against_naive_loops():
    gen = torch.Generator().manual_seed(3)
    u = F.normalize(torch.randn(7, 4, generator=gen, dtype=torch.float64), dim=1)
    n = u.shape[0]
    pairs = [float(u[i] @ u[j]) for i in range(n) for j in range(n) if i != j]
    assert exp.pair_mean(u) == pytest.approx(sum(pairs) / len(pairs), abs=1e-14)
    s = u.mean(0)
    assert exp.pair_mean(u) == pytest.approx((n * float(s @ s) - 1) / (n - 1), abs=1e-14)
    tau = 0.3
    naive = sum(math.log(sum(math.exp(float(u[i] @ u[j]) / tau) for j in range(n) if j != i)
                         / (n - 1)) for i in range(n)) / n
    assert float(exp.repulsion(u, tau)) == pytest.approx(naive, rel=1e-12)


def test_identity_rows_on_random_views():
    gen = torch.Generator().manual_seed(0)
    views = torch.randn(5, 9, 6, generator=gen) + torch.tensor([2.0, 0, 0, 0, 0, 0])
    rows = exp.identity_rows(views)
    assert abs(rows["identity_residual"]) < 1e-12 and abs(rows["finite_k_residual"]) < 1e-12
    u = F.normalize(views.double(), dim=-1)
    mu = u.mean(0)
    assert rows["mean_sq_norm"] == pytest.approx(float(mu.pow(2).sum(1).mean()), abs=1e-12)
    assert rows["center_sq_norm"] == pytest.approx(float(mu.mean(0).pow(2).sum()), abs=1e-12)


def test_standardised_losses_ignore_a_common_shift(metrics):
    shift = metrics[(metrics.metric == "grad_shift_norm") & (metrics.variant == "full loss")]
    by_method = shift.groupby("method").value.max()
    assert by_method["barlow_twins"] < 1e-4 and by_method["vicreg"] < 1e-4
    # losses that see the raw mean do push it
    assert by_method["simclr"] > 1e-2


def test_figures_and_table(metrics):
    import matplotlib.pyplot as plt

    ax = exp.plot_decomposition(metrics)
    assert ax.get_ylabel() == "squared norm"  # all three terms are squared norms
    axes = exp.plot_linearisation(metrics)
    assert len(axes) == 2
    axes = exp.plot_gradient_cosines(metrics)
    assert len(axes) == 2 and all(len(ax.patches) > 0 for ax in axes)
    plt.close("all")


def test_bad_configs():
    with pytest.raises(ValueError, match="methods"):
        exp.Config(methods=("moco",))
    with pytest.raises(ValueError, match="k_views"):
        exp.Config(k_views=1)
    with pytest.raises(ValueError, match="taus"):
        exp.Config(taus=(0.0,))


def test_checkpoint_every_gives_each_method_a_checkpoint(monkeypatch, tmp_path):
    """checkpoint_every reaches the engine with a checkpoint per method, so a killed paper run
    resumes; the image probe does not depend on any kNN bank (this experiment draws none)."""
    from sithlib.experiments import stability_monitor

    seen = []

    def spy(*args, checkpoint=None, **kwargs):
        seen.append(checkpoint)
        return train(*args, checkpoint=checkpoint, **kwargs)

    monkeypatch.setenv("SITH_CACHE_DIR", str(tmp_path / "results"))
    monkeypatch.setattr(stability_monitor, "train", spy)
    cfg = dataclasses.replace(TINY["stability_mechanism"], methods=("simclr", "byol"), seeds=1,
                              steps=4, checkpoint_every=2)
    exp.run(cfg)
    assert len(seen) == 2 and all(c is not None for c in seen)
    assert seen[0].path != seen[1].path
    assert not hasattr(exp.Config(), "n_bank")
