"""Probes: weighted kNN against scikit-learn and a naive loop, the linear probe against
scikit-learn's LogisticRegression, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from sithlib.metrics import knn_accuracies, knn_accuracy, linear_probe
from sithlib.metrics.probes import _fit_logistic


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def blobs(n, d=8, classes=4, spread=1.0, seed=0):
    """Gaussian classes around fixed random centres: features and integer labels."""
    centres = 2.0 * torch.randn(classes, d, generator=gen(1234), dtype=torch.float64)
    g = gen(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = centres[y] + spread * torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, y


def naive_knn_accuracy(x_tr, y_tr, x_te, y_te, k, tau):
    x_tr = x_tr.numpy() / np.linalg.norm(x_tr.numpy(), axis=1, keepdims=True)
    x_te = x_te.numpy() / np.linalg.norm(x_te.numpy(), axis=1, keepdims=True)
    hits = 0
    for x, y in zip(x_te, y_te.tolist(), strict=True):
        sims = x_tr @ x
        votes = {}
        for j in np.argsort(-sims)[:k]:
            votes[int(y_tr[j])] = votes.get(int(y_tr[j]), 0.0) + np.exp(sims[j] / tau)
        hits += max(votes, key=votes.get) == y
    return hits / len(y_te)


@pytest.mark.parametrize("k", [1, 20, 200])
def test_knn_accuracy_matches_sklearn_and_naive_loop(k):
    x_tr, y_tr = blobs(400, spread=2.5, seed=1)
    x_te, y_te = blobs(150, spread=2.5, seed=2)
    tau = 0.07
    clf = KNeighborsClassifier(
        n_neighbors=k, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1 - d) / tau)
    ).fit(x_tr.numpy(), y_tr.numpy())
    want = float((clf.predict(x_te.numpy()) == y_te.numpy()).mean())
    got = knn_accuracy(x_tr, y_tr, x_te, y_te, k=k, temperature=tau, batch_size=64)
    assert got == pytest.approx(want, abs=1e-12)
    assert got == pytest.approx(naive_knn_accuracy(x_tr, y_tr, x_te, y_te, k, tau), abs=1e-12)


def test_knn_accuracies_share_one_search():
    x_tr, y_tr = blobs(300, spread=2.0, seed=3)
    x_te, y_te = blobs(100, spread=2.0, seed=4)
    both = knn_accuracies(x_tr, y_tr, x_te, y_te)
    assert set(both) == {20, 200}
    for k, acc in both.items():
        assert acc == knn_accuracy(x_tr, y_tr, x_te, y_te, k=k)
    # Well separated classes are classified perfectly; a large temperature is a plain vote.
    x_tr, y_tr = blobs(200, spread=0.05, seed=5)
    x_te, y_te = blobs(50, spread=0.05, seed=5)
    assert knn_accuracy(x_tr, y_tr, x_te, y_te, k=5, temperature=1e6) == 1.0


def test_linear_probe_matches_sklearn_logistic_regression():
    x_tr, y_tr = blobs(500, spread=2.5, seed=6)
    x_te, y_te = blobs(300, spread=2.5, seed=7)
    wd = 1e-2
    mean, std = x_tr.mean(0), x_tr.std(0, correction=0)
    clf = LogisticRegression(C=1.0 / (wd * len(x_tr)), tol=1e-10, max_iter=10_000)
    clf.fit(((x_tr - mean) / std).numpy(), y_tr.numpy())
    want = float((clf.predict(((x_te - mean) / std).numpy()) == y_te.numpy()).mean())
    got = linear_probe(x_tr, y_tr, x_te, y_te, weight_decay=wd)
    assert got == pytest.approx(want, abs=1.5 / len(x_te))  # at most one borderline sample
    # The fitted model itself: the same class probabilities as scikit-learn's optimum.
    w, b = _fit_logistic((x_tr - mean) / std, y_tr, 4, wd, 500)
    probs = torch.softmax((x_te - mean) / std @ w + b, dim=1)
    want_probs = clf.predict_proba(((x_te - mean) / std).numpy())
    np.testing.assert_allclose(probs.numpy(), want_probs, atol=1e-5)
    assert 0.5 < got < 1.0
    # Deterministic: no seed involved.
    assert got == linear_probe(x_tr, y_tr, x_te, y_te, weight_decay=wd)


def test_linear_probe_separable_and_chance():
    x_tr, y_tr = blobs(200, spread=0.1, seed=8)
    x_te, y_te = blobs(100, spread=0.1, seed=8)
    assert linear_probe(x_tr, y_tr, x_te, y_te, standardize=False, weight_decay=1e-2) == 1.0
    noise = torch.randn(200, 8, generator=gen(9), dtype=torch.float64)
    acc = linear_probe(noise[:100], y_tr[:100], noise[100:], y_tr[100:200])
    assert acc < 0.5  # four classes, features independent of labels


def test_bad_inputs_give_clear_errors():
    x, y = blobs(30, seed=10)
    with pytest.raises(ValueError, match="train_labels must have shape"):
        knn_accuracy(x, y[:20], x, y)
    with pytest.raises(TypeError, match="test_labels must hold integer"):
        knn_accuracy(x, y, x, y.double())
    with pytest.raises(ValueError, match="k must be between 1 and 30"):
        knn_accuracy(x, y, x, y, k=31)
    with pytest.raises(ValueError, match="same dimension"):
        linear_probe(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="num_classes"):
        linear_probe(x, y, x, y, num_classes=2)
    with pytest.raises(ValueError, match="test_features contains NaN"):
        knn_accuracy(x, y, torch.full_like(x, torch.nan), y)
    with pytest.raises(ValueError, match="temperature"):
        knn_accuracy(x, y, x, y, temperature=0.0)
    with pytest.raises(ValueError, match="labels >= 0"):
        linear_probe(x, y - 1, x, y)
    with pytest.raises(ValueError, match="ks must hold at least one"):
        knn_accuracies(x, y, x, y, ks=())
    with pytest.raises(TypeError, match="train_labels must be a torch.Tensor"):
        knn_accuracy(x, y.tolist(), x, y)
    with pytest.raises(ValueError, match="train_features must have at least one feature"):
        knn_accuracy(x[:, :0], y, x[:, :0], y)
