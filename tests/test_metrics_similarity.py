"""Similarity metrics: CKA against numpy closed forms and the HSIC U-statistic, kNN metrics
against naive loops, invariances, the k/(N-1) chance level, bad inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sithlib.metrics import cka_linear, cka_rbf, cknna, cycle_knn, mutual_knn

TOL = 1e-6


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def orthogonal(d, seed):
    return torch.linalg.qr(randn(d, d, seed=seed))[0]


def related(n=60, d_x=5, d_y=4, seed=0):
    """Two partly related representations of the same n inputs."""
    x = randn(n, d_x, seed=seed)
    y = torch.tanh(x @ randn(d_x, d_y, seed=seed + 1)) + 0.5 * randn(n, d_y, seed=seed + 2)
    return x, y


# --------------------------------------------------------------------------- references
def hsic_u_statistic(k, l):
    """HSIC_1 of Song et al. (2012) straight from its definition as a U-statistic over ordered
    4-tuples of distinct indices; O(n^4), for tiny n."""
    n = k.shape[0]
    total = 0.0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
    return total / (n * (n - 1) * (n - 2) * (n - 3))


def hsic_unbiased_closed(k, l):
    """Song et al. (2012) eq. 5 in numpy (also used by platonic-rep's cknna)."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    value = (k * l.T).sum() + k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2 * (k @ l).sum() / (n - 2)
    return value / (n * (n - 3))


def hsic_biased(k, l):
    n = k.shape[0]
    h = np.eye(n) - 1.0 / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def cka_from(hsic, k, l):
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def rbf_gram(x):
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    width2 = np.median(d2[np.triu_indices(len(x), 1)])
    return np.exp(-d2 / (2 * width2))


def prepare(x, normalize=True, q=None):
    x = x.numpy().copy()
    if q is not None:
        t = np.sort(np.abs(x).ravel())[int(q * x.size)]
        x = np.clip(x, -t, t)
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x


def neighbours(x, k, exclude_self=True):
    out = []
    for i in range(len(x)):
        sims = x @ x[i]
        if exclude_self:
            sims[i] = -np.inf
        out.append(list(np.argsort(-sims, kind="stable")[:k]))
    return out


# --------------------------------------------------------------------------- CKA
def test_unbiased_closed_form_equals_u_statistic():
    x, y = related(n=7, seed=3)
    k, l = (x @ x.T).numpy(), (y @ y.T).numpy()
    assert hsic_unbiased_closed(k, l) == pytest.approx(hsic_u_statistic(k, l), abs=1e-10)


@pytest.mark.parametrize("n", [8, 200])  # Gram path (n < d_x + d_y) and feature path
def test_cka_linear_matches_numpy(n):
    x, y = related(n=n, d_x=6, d_y=5, seed=4)
    xc, yc = (x - x.mean(0)).numpy(), (y - y.mean(0)).numpy()
    closed = np.linalg.norm(yc.T @ xc) ** 2 / (
        np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    )
    assert cka_linear(x, y) == pytest.approx(closed, abs=TOL)
    k, l = x.numpy() @ x.numpy().T, y.numpy() @ y.numpy().T
    want = cka_from(hsic_unbiased_closed, k, l)
    assert cka_linear(x, y, unbiased=True) == pytest.approx(want, abs=TOL)
    if n == 8:
        assert cka_linear(x, y, unbiased=True) == pytest.approx(
            cka_from(hsic_u_statistic, k, l), abs=TOL
        )


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_rbf_matches_numpy(unbiased):
    x, y = related(n=40, seed=5)
    k, l = rbf_gram(x.numpy()), rbf_gram(y.numpy())
    hsic = hsic_unbiased_closed if unbiased else hsic_biased
    assert cka_rbf(x, y, unbiased=unbiased) == pytest.approx(cka_from(hsic, k, l), abs=TOL)
    # A fixed width: exp(-d^2 / (2 sigma^2)).
    d2x = ((x[:, None] - x[None]) ** 2).sum(-1).numpy()
    d2y = ((y[:, None] - y[None]) ** 2).sum(-1).numpy()
    want = cka_from(hsic, np.exp(-d2x / 8.0), np.exp(-d2y / 8.0))
    assert cka_rbf(x, y, sigma=2.0, unbiased=unbiased) == pytest.approx(want, abs=TOL)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-3, 1e3), unbiased=st.booleans())
def test_cka_invariant_to_orthogonal_maps_and_isotropic_scaling(seed, scale, unbiased):
    x, y = related(n=50, seed=seed)
    x2 = scale * x @ orthogonal(5, seed + 10) + 3.0
    y2 = y @ orthogonal(4, seed + 11) / scale
    assert cka_linear(x2, y2, unbiased=unbiased) == pytest.approx(
        cka_linear(x, y, unbiased=unbiased), abs=1e-9
    )
    # The median heuristic scales with the data, so RBF CKA is scale invariant too.
    assert cka_rbf(x2, y2, unbiased=unbiased) == pytest.approx(
        cka_rbf(x, y, unbiased=unbiased), abs=1e-9
    )


def test_cka_known_values():
    x, y = related(n=50, seed=6)
    assert cka_linear(x, x) == pytest.approx(1.0, abs=1e-12)
    assert cka_rbf(y, y, unbiased=True) == pytest.approx(1.0, abs=1e-12)
    # Not invariant to general invertible maps.
    stretched = x * torch.tensor([10.0, 1.0, 1.0, 1.0, 0.1], dtype=torch.float64)
    assert cka_linear(x, stretched) < 0.9
    # Independent features: biased CKA is well above 0 for n ~ d, unbiased is near 0.
    a, b = randn(30, 20, seed=7), randn(30, 20, seed=8)
    assert cka_linear(a, b) > 0.3
    assert abs(cka_linear(a, b, unbiased=True)) < 0.1


# --------------------------------------------------------------------------- kNN metrics
@pytest.mark.parametrize(("normalize", "q"), [(True, None), (False, None), (True, 0.95)])
@pytest.mark.parametrize("k", [1, 5, 29])
def test_mutual_knn_matches_naive_loop(normalize, q, k):
    a, b = related(n=30, seed=9)
    na, nb = neighbours(prepare(a, normalize, q), k), neighbours(prepare(b, normalize, q), k)
    want = np.mean([len(set(na[i]) & set(nb[i])) / k for i in range(30)])
    got = mutual_knn(a, b, k=k, normalize=normalize, clamp_quantile=q, batch_size=7)
    assert got == pytest.approx(want, abs=1e-12)
    assert mutual_knn(b, a, k=k, normalize=normalize, clamp_quantile=q) == got


def test_mutual_knn_breaks_ties_towards_the_lower_index():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    # a: sample 0's neighbours tie between 1 and 2 -> 1; b: 0's nearest is 2 (or 3) -> 2.
    assert neighbours(prepare(a), 1)[0] == [1]
    want = np.mean(
        [
            len(set(x) & set(y))
            for x, y in zip(neighbours(prepare(a), 1), neighbours(prepare(b), 1), strict=True)
        ]
    )
    assert mutual_knn(a, b, k=1) == pytest.approx(want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_repeated_rows_tie_exactly_at_any_memory_offset(dtype):
    # A collapsed representation repeats rows; a BLAS kernel may round their dot products
    # differently at different places of its output (here: memory offsets), which would turn
    # exact ties into rounding noise and the tie rule into chance.
    base = randn(40, 6, seed=3).to(dtype)
    tied = torch.cat([base] * 5)
    for offset in range(4):
        shifted = torch.empty(tied.numel() + offset, dtype=dtype)[offset:].view(tied.shape)
        shifted.copy_(tied)
        for batch in (7, 200):
            assert mutual_knn(shifted, tied, k=2, batch_size=batch) == 1.0
            assert cycle_knn(shifted, tied, k=2, batch_size=batch) == cycle_knn(tied, tied, k=2)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(3, 50),
    levels=st.integers(1, 3),
    batch=st.integers(1, 20),
)
def test_knn_metrics_with_many_exact_ties_match_the_stable_sort_loop(seed, n, levels, batch):
    # Small integer features without normalising: inner products are exact integers, so most
    # rows tie across their k-th neighbour and the tie rule decides the neighbour sets.
    gen = np.random.default_rng(seed)
    a, b = (torch.from_numpy(gen.integers(-levels, levels + 1, (n, 3)).astype(np.float64))
            for _ in range(2))
    k = 1 + seed % (n - 1)
    na, nb = neighbours(a.numpy(), k), neighbours(b.numpy(), k)
    want = np.mean([len(set(na[i]) & set(nb[i])) / k for i in range(n)])
    got = mutual_knn(a, b, k=k, normalize=False, batch_size=batch)
    assert got == pytest.approx(want, abs=1e-12)
    cycle = np.mean([any(i in na[j] for j in nb[i]) for i in range(n)])
    assert cycle_knn(a, b, k=k, normalize=False, batch_size=batch) == pytest.approx(cycle)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(3, 60),
    d=st.integers(1, 6),
    clamp=st.sampled_from([None, 0.9]),
)
def test_mutual_knn_of_a_representation_with_itself_is_one(seed, n, d, clamp):
    a = randn(n, d, seed=seed)
    k = 1 + seed % (n - 1)
    assert mutual_knn(a, a, k=k, clamp_quantile=clamp) == 1.0


@settings(max_examples=15, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 20), normalize=st.booleans())
def test_mutual_knn_invariant_to_orthogonal_maps(seed, k, normalize):
    a, b = related(n=80, d_x=6, d_y=6, seed=seed)
    base = mutual_knn(a, b, k=k, normalize=normalize)
    assert mutual_knn(a @ orthogonal(6, seed + 1), b, k=k, normalize=normalize) == base
    assert mutual_knn(a, b @ orthogonal(6, seed + 2), k=k, normalize=normalize) == base
    assert mutual_knn(a @ orthogonal(6, seed + 3), a, k=k, normalize=normalize) == 1.0


def test_mutual_knn_of_independent_features_is_at_chance():
    n, k = 1024, 10
    score = mutual_knn(randn(n, 16, seed=20), randn(n, 16, seed=21), k=k)
    p = k / (n - 1)
    # Overlap of two independent k-subsets of n - 1 items is hypergeometric.
    var = k * p * (1 - p) * (n - 1 - k) / (n - 2)
    se = math.sqrt(var / n) / k
    assert abs(score - p) < 4 * se


def test_cycle_knn_matches_naive_loop():
    a, b = related(n=40, seed=22)
    for k in (1, 4):
        na, nb = neighbours(prepare(a), k), neighbours(prepare(b), k)
        want = np.mean([any(i in na[j] for j in nb[i]) for i in range(40)])
        assert cycle_knn(a, b, k=k, batch_size=9) == pytest.approx(want, abs=1e-12)
    # With itself it is 1 exactly when neighbourhoods are reciprocal, e.g. with k = n - 1.
    assert cycle_knn(a, a, k=39) == 1.0


def reference_cknna(a, b, k, unbiased):
    """platonic-rep's cknna in numpy, with topk=None meaning every other sample."""
    a, b = prepare(a), prepare(b)
    n = len(a)
    kern_a, kern_b = a @ a.T, b @ b.T
    hsic = hsic_unbiased_closed if unbiased else hsic_biased

    def mask(kern):
        m = np.zeros((n, n))
        for i, row in enumerate(neighbours_from(kern, k, unbiased)):
            m[i, row] = 1
        return m

    m_a, m_b = mask(kern_a), mask(kern_b)
    m = m_a * m_b
    num = hsic(m * kern_a, m * kern_b)
    return num / math.sqrt(hsic(m_a * kern_a, m_a * kern_a) * hsic(m_b * kern_b, m_b * kern_b))


def neighbours_from(kern, k, exclude_self):
    kern = kern.copy()
    if exclude_self:
        np.fill_diagonal(kern, -np.inf)
    return [np.argsort(-row, kind="stable")[:k] for row in kern]


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("k", [5, 15])
def test_cknna_matches_reference(unbiased, k):
    a, b = related(n=30, seed=23)
    assert cknna(a, b, k=k, unbiased=unbiased) == pytest.approx(
        reference_cknna(a, b, k, unbiased), abs=TOL
    )


def test_cknna_with_all_neighbours_is_cka_and_self_is_one():
    a, b = related(n=40, seed=24)
    na, nb = F.normalize(a, dim=1), F.normalize(b, dim=1)
    assert cknna(a, b) == pytest.approx(cka_linear(na, nb, unbiased=True), abs=1e-9)
    assert cknna(a, b, unbiased=False) == pytest.approx(cka_linear(na, nb), abs=1e-9)
    assert cknna(a, a, k=10) == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------- bad inputs
def test_bad_inputs_give_clear_errors():
    a, b = related(n=20, seed=25)
    with pytest.raises(ValueError, match="same n"):
        mutual_knn(a, b[:10])
    with pytest.raises(ValueError, match="k must be between 1 and 19"):
        mutual_knn(a, b, k=20)
    with pytest.raises(ValueError, match="k must be between"):
        cycle_knn(a, b, k=0)
    with pytest.raises(ValueError, match="k must be between 2 and 19"):
        cknna(a, b, k=1)
    with pytest.raises(TypeError, match="k must be an int"):
        mutual_knn(a, b, k=2.5)
    with pytest.raises(ValueError, match="b contains NaN"):
        mutual_knn(a, torch.full_like(b, torch.nan))
    with pytest.raises(ValueError, match="x contains NaN"):
        cka_linear(torch.where(a > 1, torch.nan, a), b)
    with pytest.raises(ValueError, match="clamp_quantile"):
        mutual_knn(a, b, clamp_quantile=95)
    with pytest.raises(ValueError, match="y is constant"):
        cka_linear(a, torch.ones_like(b))
    with pytest.raises(ValueError, match="sigma"):
        cka_rbf(a, b, sigma=-1.0)
    with pytest.raises(ValueError, match="at least 4 rows"):
        cka_linear(a[:3], b[:3], unbiased=True)
    with pytest.raises(ValueError, match="a must have shape"):
        mutual_knn(a[0], b)
    with pytest.raises(TypeError, match="normalize must be a bool"):
        mutual_knn(a, b, normalize="yes")
    with pytest.raises(TypeError, match=r"clamp_quantile must be None or a float in \(0, 1\]"):
        mutual_knn(a, b, clamp_quantile="0.9")
    with pytest.raises(TypeError, match="unbiased must be a bool"):
        cknna(a, b, unbiased=1)
    with pytest.raises(ValueError, match="y must have at least one feature"):
        cka_linear(a, b[:, :0])
