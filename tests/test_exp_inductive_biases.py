"""Direction 3 (inductive biases): MLP sweeps, projector scores, image pairs, tables, figures."""

from __future__ import annotations

import dataclasses

import matplotlib
import pytest
import torch

from sithlib.dgp.images import LATENTS
from sithlib.experiments import inductive_biases as ib
from sithlib.train import train

matplotlib.use("Agg")

TINY = {"inductive_biases": dataclasses.replace(
    ib.PROFILES["quick"], widths=(16,), depths=(1,), init_scales=(1.0,), optimizers=("adam",),
    projectors=("none", "mlp"), base_width=16, base_depth=1, rep_dim=8, steps=20,
    batch_size=32, seeds=2, n_eval=200, pairs=("latent_content_style", "augment"),
    image_size=8, image_width=2, image_steps=2, image_batch=8, image_seeds=1, image_eval=120)}


def test_cells_cover_each_sweep_once():
    cfg = dataclasses.replace(TINY["inductive_biases"], widths=(16, 32), optimizers=("adam", "sgd"))
    cells = ib.mlp_cells(cfg)
    assert [(c["width"], c["optimizer"], c["projector"]) for c in cells] == [
        (16, "adam", "none"), (32, "adam", "none"), (16, "sgd", "none"), (16, "adam", "mlp")]
    kinds = [c["pairs"] for c in ib.image_cells(cfg)]
    assert kinds == ["untrained", "latent_content_style", "augment"]


@pytest.mark.parametrize("optimizer", ["lars", "sgd", "adam"])
def test_optimizer_cell_trains_with_its_own_learning_rate(optimizer, monkeypatch):
    seen = []

    def spy(make_model, sample, loss_fn, cfg, **kwargs):
        seen.append(cfg)
        return train(make_model, sample, loss_fn, cfg, **kwargs)

    monkeypatch.setattr(ib, "train", spy)
    cfg = dataclasses.replace(TINY["inductive_biases"], optimizers=(optimizer,), steps=40,
                              lr=1e-3, sgd_lr=0.05, lars_lr=0.2, lars_eta=0.02)
    cell = next(c for c in ib.mlp_cells(cfg) if c["optimizer"] == optimizer)
    out = ib.run_mlp_cell(cell)
    m, curves = out["metrics"], out["curves"]
    assert set(m.metric) == {"r2_before", "r2_after"} and m.value.notna().all()
    assert (curves.optimizer == optimizer).all() and curves.loss.notna().all()
    (used,) = seen
    assert used.optimizer == optimizer and used.eta == 0.02
    assert used.lr == {"adam": 1e-3, "sgd": 0.05, "lars": 0.2}[optimizer]


def test_projected_encoder_shapes_and_init_scale():
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    small = ib.ProjectedEncoder(4, 8, 2, "mlp", rep_dim=6, init_scale=0.5, generator=gen())
    plain = ib.ProjectedEncoder(4, 8, 2, "mlp", rep_dim=6, init_scale=1.0, generator=gen())
    x = torch.randn(5, 4, generator=gen())
    assert small.f(x).shape == (5, 6) and small(x).shape == (5, 4)
    assert torch.allclose(small(x).norm(dim=1), torch.ones(5))
    for a, b in zip(small.f.parameters(), plain.f.parameters(), strict=True):
        assert torch.allclose(a, 0.5 * b)
    assert isinstance(ib.ProjectedEncoder(4, 8, 1, "none").p, torch.nn.Identity)
    with pytest.raises(ValueError, match="projector must be one of"):
        ib.ProjectedEncoder(4, 8, 1, "deep")


def test_content_style_pairs_share_exactly_the_content():
    cell = ib.image_cells(TINY["inductive_biases"])[1]
    assert cell["pairs"] == "latent_content_style"
    from sithlib.dgp import sample_image_pairs

    pairs = sample_image_pairs(300, 8, change=ib.STYLE, conditional="uniform",
                               generator=torch.Generator().manual_seed(0))
    same = (pairs.z1 == pairs.z2).all(0)
    assert [LATENTS[i] for i in range(7) if same[i]] == list(ib.CONTENT)
    x_a, x_b = ib.image_sampler(cell)(torch.Generator().manual_seed(1), 4)
    assert x_a.shape == x_b.shape == (4, 3, 8, 8)


def test_a_diverged_image_run_is_a_failure_row_not_a_failed_sweep(monkeypatch):
    """One seed per image cell: when its loss goes non-finite the engine raises, and the cell
    records the failure (the non-finite one, not an earlier collapse) instead of ending the
    whole grid."""
    from sithlib.train import TrainingFailure

    failures = [{"step": 2, "seed": 0, "kind": "collapse"},
                {"step": 4, "seed": 0, "kind": "non-finite loss"}]

    def diverges(*args, **kwargs):
        raise TrainingFailure("run: every seed failed", failures)

    monkeypatch.setattr(ib, "train", diverges)
    cell = ib.image_cells(TINY["inductive_biases"])[1]
    out = ib.run_image_cell(cell)
    row = out["metrics"].iloc[0]
    assert len(out["metrics"]) == 1 and out["curves"] is None
    assert (row.metric, row.value, row.failure) == ("failure_step", 4.0, "non-finite loss")


def test_sweep_values_are_sorted_and_labelled_as_in_the_figures():
    assert ib._order([2.0, 1.0, 4.0], "depth") == [1.0, 2.0, 4.0]
    assert ib._order(["lars", "adam", "sgd"], "optimizer") == ["adam", "sgd", "lars"]
    assert [ib._value_label(v) for v in (32.0, 0.3, "lars", "mlp")] == ["32", "0.3", "LARS", "MLP"]


def test_image_scores_recover_latents_from_themselves():
    gen = torch.Generator().manual_seed(0)
    from sithlib.dgp import sample_latents

    z = sample_latents(600, generator=gen)
    shape = torch.nn.functional.one_hot(z[:, 6].long(), 6).float()
    s = ib.image_scores(torch.cat([z[:, :6], shape], dim=1), z)
    assert min(s[f"r2_{n}"] for n in ("x", "y", "scale", "rotation", "hue", "bg_hue")) > 0.999
    assert s["shape_accuracy"] == 1.0 and s["block_content"] > 0.999


def test_run_tables_and_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("SITH_CACHE_DIR", str(tmp_path / "results"))
    m = ib.run(TINY["inductive_biases"])["metrics"]
    mlp = m[m.part == "mlp"]
    assert set(mlp.metric) == {"r2_before", "r2_after"}
    assert set(m[m.part == "image"].pairs) == {"untrained", "latent_content_style", "augment"}
    table = ib.mlp_table(m)
    assert {"projector", "hidden width of f"} <= set(table.index.get_level_values(0))
    assert list(table.loc["projector"].index) == ["none", "MLP"] and table.index.names == [None] * 2
    latents = ib.latent_table(m)
    assert list(latents.columns) == ["untrained", "latent_content_style", "augment"]
    assert list(latents.index)[-2:] == ["content block: mean linear R²",
                                        "style block: mean linear R²"]
    assert "R² background hue" in latents.index and not latents.index.str.contains("_").any()
    ib.plot_mlp_sweeps(m, dataclasses.asdict(TINY["inductive_biases"]))
    ib.plot_projector(m)
    ib.plot_latents(m)
    matplotlib.pyplot.close("all")


def test_the_untrained_baseline_has_batch_statistics_of_renders(monkeypatch):
    """The untrained cell's batch norms hold the statistics of training-size batches of renders
    (what torch's own recomputation gives), not their defaults of mean 0 and variance 1, with
    which the network computes a function that no step of training computes."""
    from sithlib.dgp import render, sample_latents

    cell = ib.image_cells(TINY["inductive_biases"])[0]
    assert cell["pairs"] == "untrained"
    scored = []
    monkeypatch.setattr(ib, "image_scores", lambda features, z: scored.append(features) or {})
    ib.run_image_cell(cell)
    model = ib.build_method("simclr", ib.ResNet18(width=cell["image_width"],
                                                  generator=torch.Generator().manual_seed(0)),
                            {"temperature": cell["image_tau"], "proj_dim": 64},
                            generator=torch.Generator().manual_seed(0)).eval()
    gen = torch.Generator().manual_seed(2**31 - 2)
    batches = [render(sample_latents(2 * cell["image_batch"], generator=gen), cell["image_size"])
               for _ in range(4)]
    assert ib.calibrate_untrained(model, cell) > 0 and not model.training
    reference = ib.ResNet18(width=cell["image_width"], generator=torch.Generator().manual_seed(0))
    torch.optim.swa_utils.update_bn(batches, reference)
    norms = [(a, b) for a, b in zip(model.encoder.modules(), reference.modules(), strict=True)
             if isinstance(a, torch.nn.BatchNorm2d)]
    assert norms and not torch.allclose(norms[0][0].running_var, torch.ones(1))
    for a, b in norms:
        torch.testing.assert_close(a.running_mean, b.running_mean)
        torch.testing.assert_close(a.running_var, b.running_var)
    # The cell scored exactly these features: the calibrated network's, in eval mode.
    x_eval = render(sample_latents(cell["image_eval"],
                                   generator=torch.Generator().manual_seed(2**31 - 1)),
                    cell["image_size"])
    (features,) = scored
    torch.testing.assert_close(features, model.embed(x_eval))
