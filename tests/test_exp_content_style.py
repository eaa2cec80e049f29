"""Content/style experiment (von Kügelgen et al. 2021): runs, science at a small size, plots."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from sithlib.experiments import content_style as cs  # noqa: E402

TINY = {
    "content_style": dataclasses.replace(
        cs.PROFILES["quick"], change_probs=(1.0,), dependences=("none", "causal"), hidden=(16,),
        steps=20, eval_every=10, batch_size=64, seeds=2, n_eval=200),
}


@pytest.fixture(scope="module")
def trained():
    """Two settings trained long enough for the content to separate from the style."""
    cfg = dataclasses.replace(cs.PROFILES["quick"], change_probs=(1.0,),
                              dependences=("none", "causal"), hidden=(64, 64), steps=300,
                              eval_every=150, batch_size=256, lr=3e-3, seeds=2, n_eval=600)
    return cfg, cs.run(cfg)


def _mean(m, dependence, metric, model="encoder"):
    sel = m[(m.dependence == dependence) & (m.metric == metric) & (m.model == model)]
    return float(sel.value.mean())


def test_encoder_keeps_content_and_drops_independent_style(trained):
    _, out = trained
    m = out["metrics"]
    content = _mean(m, "none", "r2_content_nonlinear")
    style = _mean(m, "none", "r2_style_nonlinear")
    assert content > style + 0.15
    # The observations hold the style (g is invertible); the encoder has discarded much of it.
    assert _mean(m, "none", "r2_style_nonlinear", "raw x") > style + 0.2


def test_style_caused_by_content_becomes_predictable(trained):
    _, out = trained
    m = out["metrics"]
    assert (_mean(m, "causal", "r2_style_linear")
            > _mean(m, "none", "r2_style_linear") + 0.2)


def test_tables_and_curves_have_every_setting(trained):
    cfg, out = trained
    m = out["metrics"]
    scores = m[m.model == "encoder"]
    # 2 blocks x 2 regressions per seed and setting.
    assert len(scores) == len(cs.settings(cfg)) * cfg.seeds * 4
    assert set(out["curves"].step) == {150, 300}
    table = cs.summary_table(m)
    assert list(table.index) == ["p=1, none", "p=1, causal"]
    assert (table[("", "seeds")] == cfg.seeds).all()
    assert table.columns[:2].tolist() == [("encoder: content", "linear R²"),
                                          ("encoder: content", "nonlinear R²")]
    assert ("raw x: style", "nonlinear R²") in table.columns


def test_plots_return_axes(trained):
    _, out = trained
    ax = cs.plot_r2(out["metrics"])
    assert len(ax) == 2 and ax[1].get_title() == "nonlinear regression"
    grid = cs.plot_curves(out["curves"])
    settings = out["curves"][["change_prob", "dependence"]].drop_duplicates()
    shown = [ax for ax in grid.ravel() if ax.get_visible()]
    assert len(shown) == len(settings) and shown[0].get_xlabel() == "training step"
    plt.close("all")


def test_bad_config_names_the_allowed_values():
    with pytest.raises(ValueError, match="dependences"):
        cs.Config(dependences=("acausal",))
    with pytest.raises(ValueError, match="change_probs"):
        cs.Config(change_probs=(0.0,))
