"""vicreg_assumptions: scaled recipes, the covariance match, the measures and the figures."""

from __future__ import annotations

import dataclasses
import math

import matplotlib
import pytest
import torch
from torch import nn

from sithlib.dgp import recipe
from sithlib.experiments import vicreg_assumptions as exp
from sithlib.models import MLP

matplotlib.use("Agg")

TINY = {
    "vicreg_assumptions": dataclasses.replace(
        exp.PROFILES["quick"], seeds=1, n_anchors=2, n_views=16, n_components=2,
        strengths_vector=(1e-4, 1.0), hidden=(16,), feature_dim=8, vec_proj_dims=(16, 16, 16),
        vec_steps=5, vec_batch_size=32, image_size=8, width=4, strengths_image=(1e-3,),
        img_proj_dims=(16, 16, 16), img_steps=1, img_batch_size=8),
}


def test_scaled_recipe_interpolates_from_identity_to_the_recipe():
    assert exp.scaled_recipe(1.0) == recipe("simclr_cifar")
    assert exp.scaled_recipe(3.0) == recipe("simclr_cifar")
    small = exp.scaled_recipe(1e-3)
    assert small.crop_scale[0] > 0.999 and small.flip_p == pytest.approx(5e-4)
    assert small.crop_ratio[1] == pytest.approx((4 / 3) ** 1e-3)
    with pytest.raises(ValueError, match="strength"):
        exp.scaled_recipe(0.0)


def test_covariance_error_is_zero_for_an_affine_network_and_large_views():
    g = torch.Generator().manual_seed(0)
    net = nn.Linear(5, 3).double()
    x_star = torch.randn(5, generator=g, dtype=torch.float64)
    views = x_star + 3.0 * torch.randn(200, 5, generator=g, dtype=torch.float64)
    assert exp.covariance_error(net, x_star, views) < 1e-10


def test_covariance_error_grows_when_views_leave_the_region():
    g = torch.Generator().manual_seed(0)
    net = MLP([4, 64, 64, 3], activation="relu", generator=g).double()
    x_star = torch.randn(4, generator=g, dtype=torch.float64)
    noise = torch.randn(300, 4, generator=g, dtype=torch.float64)
    assert exp.covariance_error(net, x_star, x_star + 1e-9 * noise) < 1e-6
    assert exp.covariance_error(net, x_star, x_star + 1.0 * noise) > 0.05


def test_measure_tiny_gaussian_noise_keeps_the_region_and_matches_sizes():
    cfg = dataclasses.replace(TINY["vicreg_assumptions"], n_anchors=3, n_views=64)
    setting = exp._Setting("vector", cfg, "cpu")
    net = setting.encoder(torch.Generator().manual_seed(0)).eval()
    tiny = exp.measure(net, setting, "gaussian", 1e-9, seed=0)
    assert tiny["same_region"] == 1.0 and tiny["flipped_units"] == 0.0
    assert tiny["cov_error"] < 1e-3
    big_aug = exp.measure(net, setting, "augmentation", 1.0, seed=0)
    big_gauss = exp.measure(net, setting, "gaussian", 1.0, seed=0)
    assert big_aug["rms_distance"] == big_gauss["rms_distance"]  # matched by construction
    assert big_gauss["same_region"] < 1.0 and big_gauss["flipped_units"] > 0.0


def test_measure_with_jacobians_computed_once_equals_measure_computing_them():
    cfg = dataclasses.replace(TINY["vicreg_assumptions"], n_anchors=3, n_views=32)
    setting = exp._Setting("vector", cfg, "cpu")
    net = setting.encoder(torch.Generator().manual_seed(0)).eval()
    jacobians = [exp.anchor_jacobian(net, x) for x in setting.x_anchor]
    assert jacobians[0].shape == (cfg.feature_dim, cfg.dim)
    for family, strength in (("augmentation", 0.1), ("gaussian", 1.0)):
        assert (exp.measure(net, setting, family, strength, 0, jacobians)
                == exp.measure(net, setting, family, strength, 0))


def test_config_checks():
    with pytest.raises(ValueError, match="settings"):
        exp.Config(settings=("audio",))
    with pytest.raises(ValueError, match="n_views"):
        exp.Config(n_views=3, n_components=4)
    with pytest.raises(ValueError, match="strengths_image"):
        exp.Config(strengths_image=(0.0,))


@pytest.fixture(scope="module")
def tiny_metrics():
    return exp.run(TINY["vicreg_assumptions"])["metrics"]


def test_rows_cover_every_setting_state_family_and_strength(tiny_metrics):
    m = tiny_metrics
    assert m.value.map(math.isfinite).all()
    per = m.groupby(["setting", "state", "family", "strength"]).metric.nunique()
    assert (per == len(exp.MEASURES)).all()
    # The training strength is always measured: 1 / kappa for vectors, s = 1 for images.
    assert set(m[m.setting == "vector"].strength) == {1e-4, 0.1, 1.0}
    assert set(m[m.setting == "image"].strength) == {1e-3, 1.0}
    assert set(m[m.training].strength) == {0.1, 1.0}


def test_table_and_figures(tiny_metrics):
    table = exp.summary_table(tiny_metrics)
    assert len(table.columns) == 4 and exp.LABELS["same_region"] in table.index
    assert table.index[-1] == "seeds"
    axes = exp.plot_measures(tiny_metrics, "image", ("same_region", "cov_error"))
    assert len(axes) == 2 and axes[0].get_xscale() == "log"
    with pytest.raises(ValueError, match="setting"):
        exp.plot_measures(tiny_metrics, "audio")


def test_paper_cells_are_cached_per_setting_and_change_no_number(store, tiny_metrics,
                                                                 monkeypatch):
    """The paper profile caches one cell per setting, so a run cut short by a GPU's time
    limit keeps its finished setting; the numbers equal an uncached run's."""
    import pandas as pd

    assert exp.PROFILES["paper"].cache_cells
    cfg = dataclasses.replace(TINY["vicreg_assumptions"], cache_cells=True)
    first = exp.run(cfg)["metrics"]
    monkeypatch.setattr(exp, "run_cell", lambda *a, **k: pytest.fail("a cached cell ran again"))
    again = exp.run(cfg)["metrics"]
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(first, tiny_metrics)


def test_the_init_network_is_measured_with_batch_statistics_of_training_pairs(monkeypatch):
    """The init ResNet's batch norms hold the statistics of training pairs (each view its own
    batch, as in training), not their defaults of mean 0 and variance 1: with those, the init
    network is a function that no step of training computes."""
    cfg = dataclasses.replace(TINY["vicreg_assumptions"], settings=("image",))
    seen = {}

    def spy(net, setting, family, strength, seed, jacobians=None):
        seen.setdefault(id(net), net)
        return dict.fromkeys(exp.MEASURES, 0.0)

    class Untrained:  # the engine's result, without the training (not under test here)
        def __init__(self, method):
            self.method, self.failures = method, []

        def finished(self):
            return [(0, self.method)]

    monkeypatch.setattr(exp, "train", lambda make_model, *a, **k: Untrained(make_model(0)))
    monkeypatch.setattr(exp, "measure", spy)
    monkeypatch.setattr(exp, "anchor_jacobian", lambda net, x: None)
    exp.run(cfg)
    init, trained = seen.values()
    assert not init.training and not trained.training
    # Only the init network is calibrated: the engine's network keeps its own statistics.
    assert all(torch.equal(m.running_var, torch.ones_like(m.running_var))
               for m in trained.modules() if isinstance(m, nn.BatchNorm2d))
    setting = exp._Setting("image", cfg, "cpu")
    reference = setting.encoder(torch.Generator().manual_seed(0))
    views = [x for pair in setting.calibration_batches() for x in pair]
    assert len(views) == 8 and views[0].shape[0] == cfg.img_batch_size
    torch.optim.swa_utils.update_bn(views, reference)  # torch's own recomputation
    norms = [(a, b) for a, b in zip(init.modules(), reference.modules(), strict=True)
             if isinstance(a, nn.BatchNorm2d)]
    assert norms and not torch.allclose(norms[0][0].running_var, torch.ones(1))
    for a, b in norms:
        torch.testing.assert_close(a.running_mean, b.running_mean)
        torch.testing.assert_close(a.running_var, b.running_var)
