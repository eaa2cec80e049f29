"""The center-vector monitor: its quantities, the training run, the real-dataset adapter."""

from __future__ import annotations

import dataclasses
import math

import matplotlib
import pytest
import torch

from sithlib.experiments import stability_monitor as exp
from sithlib.experiments._tables import METHOD_LABELS
from tests.test_vision_datasets import write_cifar

matplotlib.use("Agg")

_SMALL = dict(seeds=2, vector_steps=6, vector_batch=32, vector_evals=2, image_steps=2,
              image_batch=8, image_evals=1, image_size=8, resnet_width=2, hidden=(32,),
              feature_dim=16, head_hidden=16, head_out=8, prototypes=8, dino_out=32,
              k_views=2, n_probe=16, n_bank=32, n_test=32, knn_k=5)
TINY = {"stability_monitor": dataclasses.replace(exp.PROFILES["quick"], **_SMALL)}


@pytest.fixture(scope="module")
def result():
    return exp.run(TINY["stability_monitor"])


def test_space_scores_at_collapse_and_spread():
    collapsed = torch.ones(3, 10, 4)
    s = exp.space_scores(collapsed)
    assert s["center_norm"] == pytest.approx(1.0) and s["mean_norm"] == pytest.approx(1.0)
    assert s["gap"] == pytest.approx(0.0, abs=1e-12) and s["std_sqrt_d"] == pytest.approx(0.0)
    # invariant but spread: every sample's views agree, samples point in +-e_j
    eye = torch.cat([torch.eye(4), -torch.eye(4)])
    s = exp.space_scores(eye.expand(3, 8, 4))
    assert s["center_norm"] == pytest.approx(0.0, abs=1e-12)
    assert s["mean_norm"] == pytest.approx(1.0) and s["gap"] == pytest.approx(1.0)
    assert s["rank"] == pytest.approx(4.0, rel=1e-5)


def _naive_scores(views: torch.Tensor) -> dict[str, float]:
    """The monitor's norms from their definitions, one sample and one view pair at a time."""
    k, n, d = views.shape
    z = [[views[a, i].double() / views[a, i].double().norm() for i in range(n)] for a in range(k)]
    center = sum(z[a][i] for a in range(k) for i in range(n)) / (k * n)
    mean = 0.0
    for i in range(n):  # each sample's squared mean norm from its distinct view pairs only
        pairs = [float(z[a][i] @ z[b][i]) for a in range(k) for b in range(k) if a != b]
        mean += max(sum(pairs) / len(pairs), 0.0) ** 0.5 / n
    first = torch.stack(z[0])
    std = sum(float(first[:, j].std(correction=1)) for j in range(d)) / d
    return {"center_norm": float(center.norm()), "mean_norm": mean,
            "gap": mean - float(center.norm()), "std_sqrt_d": std * math.sqrt(d)}


def test_space_scores_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(20, 6, generator=g) + torch.tensor([1.5, 0, 0, 0, 0, 0])
    views = base + 0.7 * torch.randn(3, 20, 6, generator=g)
    got, ref = exp.space_scores(views), _naive_scores(views)
    assert 0.1 < ref["gap"] < 0.9  # neither collapsed nor spread: the gap is informative
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_run_records_every_method_and_the_monitor(result):
    m, curves = result["metrics"], result["curves"]
    cfg = TINY["stability_monitor"]
    for data in cfg.datasets:
        sub = m[m.data == data]
        assert set(sub.method) == {*exp.METHODS, "raw input"}
        final = sub[(sub.space == "emb") & (sub.metric == "center_norm")]
        assert len(final) == len(exp.METHODS) * cfg.seeds
        assert ((final.value >= 0) & (final.value <= 1 + 1e-9)).all()
        wide = exp.final_values(m, data)
        assert ((wide.knn_acc >= 0) & (wide.knn_acc <= 1)).all()
        c = curves[curves.data == data]
        assert sorted(c.step.unique()) == ([3, 6] if data == "vector" else [2])
        assert c.train_center_norm.between(0, 1 + 1e-6).all()


def test_table_and_figures(result):
    import matplotlib.pyplot as plt

    m = result["metrics"]
    table = exp.final_table(m, "vector")
    assert list(table.index) == [METHOD_LABELS[k] for k in exp.METHODS] + ["raw input"]
    assert exp.LABELS["center_norm"] in table.columns and exp.LABELS["r2_linear"] in table.columns
    axes = exp.plot_curves(result["curves"], "image")
    assert axes[0].get_xlabel() == "training step"
    titles = [ax.get_title() for ax in axes if ax.get_visible()]
    # Every monitor quantity of the paper's argument, the embedding std included, is a panel.
    assert exp.LABELS["std_sqrt_d"] + " (loss space)" in titles
    assert len(titles) == 7
    ax = exp.plot_gap_vs_score(m, "vector")
    assert ax.get_ylabel() == exp.LABELS["knn_acc"]
    rho = exp.gap_accuracy_correlation(m, "vector")
    assert math.isnan(rho) or -1 <= rho <= 1
    plt.close("all")


def test_vector_labels_are_octants():
    z = torch.tensor([[1.0, 1, 1, 0], [-1, -1, -1, 0], [1, -1, 1, 0]])
    assert exp.VectorSource.label(z).tolist() == [7, 0, 5]


def test_missing_cifar_names_the_folder(tmp_path):
    cfg = dataclasses.replace(TINY["stability_monitor"], datasets=("cifar10",),
                              data_root=str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        exp.run(cfg)


def test_monitor_on_a_fake_cifar(tmp_path):
    write_cifar(tmp_path, per_batch=8)
    cfg = dataclasses.replace(TINY["stability_monitor"], datasets=("cifar10",),
                              methods=("simclr",), data_root=str(tmp_path), checksums=False,
                              n_probe=8, n_bank=16, n_test=8, knn_k=3)
    m = exp.run(cfg)["metrics"]
    assert set(m.data) == {"cifar10"}
    assert "knn_acc" in set(m.metric) and "r2_linear" not in set(m.metric)


def test_bad_configs():
    with pytest.raises(ValueError, match="datasets"):
        exp.Config(datasets=("mnist",))
    with pytest.raises(ValueError, match="methods"):
        exp.Config(methods="simclr")
    with pytest.raises(ValueError, match="k_views"):
        exp.Config(k_views=1)
    with pytest.raises(ValueError, match="data must be one of"):
        exp.make_source("mnist", exp.Config())
