r"""Downstream probes of a frozen representation: weighted kNN and linear classification.

Both run in torch on the features' device. The kNN classifier is the monitor of instance
discrimination (Wu et al. 2018) and DINO (Caron et al. 2021): cosine neighbours voting with
weights :math:`\exp(s/\tau)`, k = 20 or 200. The linear probe is multinomial logistic
regression with an L2 penalty, fitted to convergence with full-batch L-BFGS from zero, so its
result is deterministic and equals scikit-learn's ``LogisticRegression`` at the same penalty.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from . import _checks


def _labels(name: str, y, n: int, device) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer class labels")
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(
            f"{name} must have shape ({n},) to match the features, got {tuple(y.shape)}"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if (y < 0).any():
        raise ValueError(f"{name} must hold labels >= 0")
    return y.detach().to(device=device, dtype=torch.long)


def _probe_inputs(train_features, train_labels, test_features, test_labels, num_classes):
    tr = _checks.features("train_features", train_features, shape="(n_train, d)")
    te = _checks.features("test_features", test_features, shape="(n_test, d)")
    if tr.shape[1] != te.shape[1]:
        raise ValueError(
            f"train_features and test_features must have the same dimension, got "
            f"{tr.shape[1]} and {te.shape[1]}"
        )
    if tr.device != te.device:
        raise ValueError("train_features and test_features must be on the same device")
    y_tr = _labels("train_labels", train_labels, tr.shape[0], tr.device)
    y_te = _labels("test_labels", test_labels, te.shape[0], tr.device)
    largest = int(max(y_tr.max(), y_te.max())) + 1
    if num_classes is None:
        num_classes = largest
    num_classes = _checks.integer("num_classes", num_classes, low=1)
    if largest > num_classes:
        raise ValueError(f"labels go up to {largest - 1} but num_classes = {num_classes}")
    dtype = torch.promote_types(tr.dtype, torch.float32)
    return tr.to(dtype), y_tr, te.to(dtype), y_te, num_classes


def knn_accuracies(
    train_features,
    train_labels,
    test_features,
    test_labels,
    *,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
    num_classes: int | None = None,
    batch_size: int = 1024,
) -> dict[int, float]:
    r"""Weighted kNN top-1 accuracy for several k from one neighbour search.

    Features are L2-normalised; a test sample's k most cosine-similar training samples vote for
    their labels with weights :math:`\exp(s_j / \tau)` and the class with the largest total
    wins (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance
    Discrimination"; the DINO evaluation uses k = 20, tau = 0.07).

    Parameters
    ----------
    train_features : Tensor, shape (n_train, d)
        Features of the labelled bank.
    train_labels : Tensor, shape (n_train,)
        Integer labels of the bank.
    test_features : Tensor, shape (n_test, d)
        Features to classify.
    test_labels : Tensor, shape (n_test,)
        Their true labels.
    ks : sequence of int
        Neighbourhood sizes, each 1 <= k <= n_train.
    temperature : float
        :math:`\tau` > 0 of the vote weights.
    num_classes : int, optional
        Number of classes; the largest label + 1 when None.
    batch_size : int
        Test samples per block of the similarity matrix.

    Returns
    -------
    dict
        From k to the accuracy in [0, 1].
    """
    tr, y_tr, te, y_te, c = _probe_inputs(
        train_features, train_labels, test_features, test_labels, num_classes
    )
    ks = [_checks.integer("k", k, low=1, high=tr.shape[0]) for k in ks]
    if not ks:
        raise ValueError("ks must hold at least one neighbourhood size")
    temperature = _checks.positive("temperature", temperature)
    batch_size = _checks.integer("batch_size", batch_size, low=1)
    tr, te = F.normalize(tr, dim=1), F.normalize(te, dim=1)
    correct = dict.fromkeys(ks, 0)
    for s in range(0, te.shape[0], batch_size):
        sim, idx = (te[s : s + batch_size] @ tr.T).topk(max(ks), dim=1)
        weight = torch.exp(sim / temperature)
        votes_for = y_tr[idx]
        for k in ks:
            votes = torch.zeros(sim.shape[0], c, dtype=sim.dtype, device=sim.device)
            votes.scatter_add_(1, votes_for[:, :k], weight[:, :k])
            correct[k] += int((votes.argmax(1) == y_te[s : s + batch_size]).sum())
    return {k: correct[k] / te.shape[0] for k in ks}


def knn_accuracy(
    train_features,
    train_labels,
    test_features,
    test_labels,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    batch_size: int = 1024,
) -> float:
    r"""Weighted kNN top-1 accuracy (cosine neighbours, votes :math:`\exp(s/\tau)`).

    The InstDisc / DINO monitor; see ``knn_accuracies`` for the definition and for several k
    at once (k = 20 and 200 are the usual pair).

    Parameters
    ----------
    train_features : Tensor, shape (n_train, d)
        Features of the labelled bank.
    train_labels : Tensor, shape (n_train,)
        Integer labels of the bank.
    test_features : Tensor, shape (n_test, d)
        Features to classify.
    test_labels : Tensor, shape (n_test,)
        Their true labels.
    k : int
        Number of neighbours, 1 <= k <= n_train.
    temperature : float
        :math:`\tau` > 0 of the vote weights.
    num_classes : int, optional
        Number of classes; the largest label + 1 when None.
    batch_size : int
        Test samples per block.

    Returns
    -------
    float
        The accuracy in [0, 1].
    """
    return knn_accuracies(
        train_features,
        train_labels,
        test_features,
        test_labels,
        ks=(k,),
        temperature=temperature,
        num_classes=num_classes,
        batch_size=batch_size,
    )[k]


def linear_probe(
    train_features,
    train_labels,
    test_features,
    test_labels,
    *,
    weight_decay: float = 1e-4,
    standardize: bool = True,
    max_iter: int = 500,
    num_classes: int | None = None,
) -> float:
    r"""Test accuracy of a linear classifier trained on frozen features.

    Minimises :math:`\frac{1}{n}\sum_i \mathrm{CE}(W^\top h_i + b, y_i) + \frac{\lambda}{2}
    \|W\|_F^2` (bias not penalised) with full-batch L-BFGS and a strong-Wolfe line search, from
    W = 0, b = 0. The problem is strictly convex, so the result does not depend on a seed; it
    matches ``sklearn.linear_model.LogisticRegression(C=1 / (lambda n))``.

    Parameters
    ----------
    train_features : Tensor, shape (n_train, d)
        Training features.
    train_labels : Tensor, shape (n_train,)
        Integer training labels.
    test_features : Tensor, shape (n_test, d)
        Test features.
    test_labels : Tensor, shape (n_test,)
        Integer test labels.
    weight_decay : float
        :math:`\lambda` >= 0 of the L2 penalty on W.
    standardize : bool
        Standardise each feature with the training mean and std first.
    max_iter : int
        L-BFGS iterations.
    num_classes : int, optional
        Number of classes; the largest label + 1 when None.

    Returns
    -------
    float
        The test accuracy in [0, 1].
    """
    tr, y_tr, te, y_te, c = _probe_inputs(
        train_features, train_labels, test_features, test_labels, num_classes
    )
    weight_decay = _checks.positive("weight_decay", weight_decay, allow_zero=True)
    max_iter = _checks.integer("max_iter", max_iter, low=1)
    if standardize:
        mean, std = tr.mean(0), tr.std(0, correction=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        tr, te = (tr - mean) / std, (te - mean) / std
    w, b = _fit_logistic(tr, y_tr, c, weight_decay, max_iter)
    with torch.no_grad():
        return int(((te @ w + b).argmax(1) == y_te).sum()) / te.shape[0]


def _fit_logistic(x, y, num_classes, weight_decay, max_iter):
    """Multinomial logistic regression by full-batch L-BFGS from zero; returns (W, b)."""
    w = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, device=x.device, requires_grad=True)
    b = torch.zeros(num_classes, dtype=x.dtype, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(x @ w + b, y) + 0.5 * weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()
