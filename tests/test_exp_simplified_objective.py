"""The simplified objective: labels, the lambda sweep at a small size, table and figures."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from sithlib.experiments import simplified_objective as exp

TINY = {
    "simplified_objective": dataclasses.replace(
        exp.PROFILES["quick"], lambdas=(0.0, 1.0), methods=("simclr",), steps=40, eval_every=20,
        n_eval=200, views=2, hidden=(16,), feature_dim=6, head_hidden=16, head_dim=8,
        batch_size=64, knn_k=5,
    ),
}


def test_axis_labels_are_the_nearest_signed_axis():
    z = torch.tensor([[0.9, 0.1, -0.2], [0.1, -0.8, 0.3], [-0.2, 0.1, -0.95], [-0.7, 0.5, 0.1]])
    assert exp.axis_labels(z).tolist() == [0, 3, 5, 1]
    # Brute force: the label is the index of the most similar of the 2n signed axes.
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(3000, 5, generator=g), dim=1)
    axes = torch.cat([torch.eye(5), -torch.eye(5)])  # rows e_0..e_4, -e_0..-e_4
    nearest = (z @ axes.T).argmax(1)
    ref = torch.where(nearest < 5, 2 * nearest, 2 * (nearest - 5) + 1)
    assert torch.equal(exp.axis_labels(z), ref)
    counts = torch.bincount(ref, minlength=10).double() / 3000
    assert (counts - 0.1).abs().max() < 0.03  # balanced under the uniform marginal


def test_bad_configs():
    base = TINY["simplified_objective"]
    with pytest.raises(ValueError, match="lambdas"):
        dataclasses.replace(base, lambdas=(-1.0,))
    with pytest.raises(ValueError, match="methods"):
        dataclasses.replace(base, methods=("mocov3",))


@pytest.fixture(scope="module")
def small_run():
    cfg = dataclasses.replace(
        TINY["simplified_objective"], lambdas=(0.0, 1.0, 10.0), methods=("simclr",), steps=200,
        eval_every=50, n_eval=600, views=4, hidden=(32,), feature_dim=8, head_hidden=32,
        head_dim=16, batch_size=128, knn_k=10,
    )
    return cfg, exp.run(cfg)


def _final(m, model, metric):
    return m[(m.model == model) & (m.metric == metric)].value


def test_invariance_alone_collapses_and_the_center_penalty_prevents_it(small_run):
    _, tables = small_run
    m = tables["metrics"]
    assert (_final(m, "stability λ=0", "center_norm") > 0.95).all()
    assert (_final(m, "stability λ=0", "spread") < 0.01).all()
    for lambd in ("1", "10"):
        assert (_final(m, f"stability λ={lambd}", "center_norm") < 0.2).all()
        assert (_final(m, f"stability λ={lambd}", "spread") > 0.5).all()
    # The penalty keeps the embedding spread out, so the encoder keeps information.
    assert (_final(m, "stability λ=1", "r2_linear").min()
            > _final(m, "stability λ=0", "r2_linear").max())


def test_table_and_baselines(small_run):
    cfg, tables = small_run
    m = tables["metrics"]
    table = exp.comparison_table(m)
    expected = [f"stability λ={v:g}" for v in cfg.lambdas] + list(cfg.methods)
    shown = [exp.model_label(k) for k in expected]
    assert shown[0] == f"simplified, λ = {cfg.lambdas[0]:g}" and "SimCLR" in shown
    assert list(table.index) == shown + ["raw x", "untrained encoder"]
    assert table.loc["raw x", "‖s‖"] == "–"
    assert 0 < _final(m, "raw x", "knn_accuracy").item() <= 1
    chance = 1 / (2 * cfg.dim)
    assert _final(m, "raw x", "knn_accuracy").item() > chance + 0.1
    assert all(math.isfinite(v) for v in m.value)
    assert set(tables["curves"].model) == set(expected)
    claims = exp.claims_table(m)
    assert claims.claim.iloc[0].startswith("Invariance alone")
    assert claims.verdict.iloc[0] == "supported"  # asserted above: ||s|| > 0.95 at lambda 0


def test_plots_return_axes(small_run):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, tables = small_run
    axes = exp.plot_lambda_sweep(tables["metrics"])
    assert len(axes) == 4 and axes[1].get_title() == "kNN accuracy"
    assert len(axes[0].get_lines()) >= 3
    ax = exp.plot_center_norm_curves(tables["curves"])
    assert ax.get_ylabel() == "‖s‖ (held-out)"
    plt.close("all")
