r"""Identifiability metrics: how well a representation :math:`h = f(g(z))` recovers the latents z.

Identifiability results say that every minimiser of a loss satisfies :math:`h \in H` for a class
H of maps (orthogonal, affine, permutation-and-scale, block-wise invertible). Each metric here
tests one class:

* ``r2_linear``: affine maps (Zimmermann et al. 2021; Reizinger et al. 2024),
* ``procrustes_r2`` and ``orthogonality_score``: orthogonal maps up to scale,
* ``mcc``: permutation, sign and scale of each coordinate (Pearson) or monotone maps (Spearman),
* ``r2_nonlinear`` and ``block_r2``: any invertible map of a block (von Kügelgen et al. 2021).

Regression scores are computed on held-out samples by default: the reference code scores
in-sample, which overstates identifiability when the regressor can overfit. In-sample scoring
exists behind ``in_sample=True`` for comparison with published numbers. Arithmetic is float64
on the inputs' device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from . import _checks

_MULTIOUTPUT = ("uniform_average", "raw_values", "variance_weighted")

#: Ridge strengths (relative to the mean eigenvalue of the features' covariance) that
#: ``r2_linear(..., ridge=RIDGE_GRID)`` chooses from; 0 keeps plain least squares where it wins.
RIDGE_GRID = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


# --------------------------------------------------------------------------- shared helpers
def _pair(h, z, min_rows: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    h = _checks.features("h", h, shape="(n, d_h)", min_rows=min_rows)
    z = _checks.features("z", z, shape="(n, d_z)", min_rows=min_rows)
    _checks.same_rows(h=h, z=z)
    dtype = _checks.work_dtype(h.device)
    return h.to(dtype), z.to(dtype)


def _split(n: int, test_fraction, in_sample: bool, generator, device, min_train: int = 2):
    """Row indices (train, test). Without a generator the split is the first / last rows."""
    if in_sample:
        if n < max(min_train, 2):
            raise ValueError(f"too few samples: n = {n}, in-sample scoring needs >= {min_train}")
        idx = torch.arange(n, device=device)
        return idx, idx
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)):
        kind = type(test_fraction).__name__
        raise TypeError(f"test_fraction must be a float in (0, 1), got {kind}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = int(round(n * test_fraction))
    n_train = n - n_test
    if n_train < min_train or n_test < 2:
        raise ValueError(
            f"too few samples for the split: n = {n} with test_fraction = {test_fraction} gives "
            f"{n_train} train and {n_test} test samples; need >= {min_train} train and >= 2 test"
        )
    _checks.generator_or_none("generator", generator)
    if generator is None:
        perm = torch.arange(n, device=device)
    else:
        perm = torch.randperm(n, generator=generator, device=generator.device).to(device)
    return perm[:n_train], perm[n_train:]


def _r2_per_dim(y: torch.Tensor, y_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension :math:`R^2 = 1 - SS_{res}/SS_{tot}` with scikit-learn's finite conventions."""
    ss_res = (y - y_pred).pow(2).sum(0)
    ss_tot = (y - y.mean(0)).pow(2).sum(0)
    r2 = 1.0 - ss_res / torch.where(ss_tot > 0, ss_tot, torch.ones_like(ss_tot))
    # A constant target is predicted perfectly (1) or not at all (0), as r2_score(force_finite).
    r2 = torch.where(ss_tot > 0, r2, (ss_res == 0).to(r2.dtype))
    return r2, ss_tot


def _reduce_r2(r2: torch.Tensor, ss_tot: torch.Tensor, multioutput: str):
    if multioutput == "raw_values":
        return r2
    if multioutput == "variance_weighted" and ss_tot.sum() > 0:
        return float((r2 * ss_tot).sum() / ss_tot.sum())
    return float(r2.mean())


def _standardize(x_train: torch.Tensor, *others: torch.Tensor):
    """Standardise with the training rows' mean and (population) std, like StandardScaler."""
    mean = x_train.mean(0)
    std = x_train.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return [(t - mean) / std for t in (x_train, *others)], mean, std


def _fit_affine(x: torch.Tensor, y: torch.Tensor, fit_intercept: bool, ridge: float = 0.0):
    r"""Least-squares ``y ~ x W + b`` with the minimum-norm W (exact for rank-deficient x); with
    ``ridge`` = c > 0, ridge regression with penalty :math:`\alpha = c\, n\, \mathrm{tr}(C)/d`
    on W (not b), C the covariance (second-moment matrix without an intercept) of x: c is the
    penalty relative to the mean eigenvalue of C, whatever the scale of x."""
    if fit_intercept:
        x_mean, y_mean = x.mean(0), y.mean(0)
    else:
        x_mean = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
        y_mean = torch.zeros(y.shape[1], dtype=y.dtype, device=y.device)
    xc, yc = x - x_mean, y - y_mean
    if ridge == 0:
        w = torch.linalg.pinv(xc) @ yc
    else:
        n, d = xc.shape
        alpha = ridge * xc.pow(2).sum() / d  # n tr(C) / d, C = xc^T xc / n
        if d <= n:  # primal: (X^T X + a I) W = X^T Y
            eye = torch.eye(d, dtype=xc.dtype, device=xc.device)
            w = torch.linalg.solve(xc.T @ xc + alpha * eye, xc.T @ yc)
        else:  # dual, the same W from an n x n system: W = X^T (X X^T + a I)^-1 Y
            eye = torch.eye(n, dtype=xc.dtype, device=xc.device)
            w = xc.T @ torch.linalg.solve(xc @ xc.T + alpha * eye, yc)
    return w, y_mean - x_mean @ w


def _choose_ridge(h, z, ridges, fit_intercept: bool) -> float:
    """The ridge strength among ``ridges`` whose fit on the first 80% of (h, z) scores the best
    mean R^2 on the last 20% (the caller's training rows: the held-out rows are never seen)."""
    n_fit = int(round(0.8 * h.shape[0]))
    if n_fit < 2 or h.shape[0] - n_fit < 2:
        raise ValueError(f"too few training rows ({h.shape[0]}) to choose the ridge strength; "
                         "need >= 10")
    scores = []
    for c in ridges:
        w, b = _fit_affine(h[:n_fit], z[:n_fit], fit_intercept, c)
        r2, _ = _r2_per_dim(z[n_fit:], h[n_fit:] @ w + b)
        scores.append(float(r2.mean()))
    return ridges[int(np.argmax(scores))]


# --------------------------------------------------------------------------- linear R^2
def r2_linear(
    h,
    z,
    *,
    test_fraction: float = 0.5,
    in_sample: bool = False,
    fit_intercept: bool = True,
    multioutput: str = "uniform_average",
    generator: torch.Generator | None = None,
    ridge: float | Sequence[float] = 0.0,
):
    r"""Held-out :math:`R^2` of the best affine map from the representation h to the latents z.

    Fits :math:`\hat z = W^\top h + b` by least squares on a train split and scores
    :math:`R^2_j = 1 - \sum_i (z_{ij} - \hat z_{ij})^2 / \sum_i (z_{ij} - \bar z_j)^2` on the
    held-out split, per latent dimension j. :math:`R^2 = 1` means h identifies z up to an
    affine map (Zimmermann et al. 2021, "Contrastive Learning Inverts the Data Generating
    Process"). It can be negative on held-out data.

    Parameters
    ----------
    h : Tensor, shape (n, d_h)
        Representation (predictors).
    z : Tensor, shape (n, d_z)
        Ground-truth latents (targets), same samples in the same order.
    test_fraction : float
        Fraction of the samples held out for scoring, in (0, 1).
    in_sample : bool
        Fit and score on all samples (the reference code's protocol; overstates the score when
        the fit can overfit). Off by default.
    fit_intercept : bool
        Fit the offset b (affine map); False fits a linear map through the origin.
    multioutput : {"uniform_average", "raw_values", "variance_weighted"}
        How to combine the per-dimension scores, as in ``sklearn.metrics.r2_score``.
    generator : torch.Generator, optional
        Shuffles the rows before splitting; without one the last rows are held out.
    ridge : float or sequence of floats
        Ridge penalty on W relative to the mean eigenvalue of the features' covariance (0: plain
        least squares). A sequence is a grid: the strength whose fit on the first 80% of the
        training rows scores best on the other 20% is refitted on all training rows. Plain
        least squares overfits when h has about as many dimensions as there are training rows
        (raw pixels): a grid that includes 0 keeps it wherever it is best.

    Returns
    -------
    r2 : float or Tensor
        The held-out :math:`R^2`; a float64 Tensor of shape (d_z,) on z's device for
        ``multioutput="raw_values"``.
    """
    h, z = _pair(h, z)
    _checks.choice("multioutput", multioutput, _MULTIOUTPUT)
    ridges = tuple(ridge) if isinstance(ridge, Sequence) else (ridge,)
    if not ridges or any(isinstance(c, bool) or not isinstance(c, (int, float)) or not c >= 0
                         or not math.isfinite(c) for c in ridges):
        raise ValueError(f"ridge must be a finite number >= 0 or a non-empty sequence of them, "
                         f"got {ridge!r}")
    tr, te = _split(h.shape[0], test_fraction, in_sample, generator, h.device)
    strength = (ridges[0] if len(ridges) == 1
                else _choose_ridge(h[tr], z[tr], ridges, fit_intercept))
    w, b = _fit_affine(h[tr], z[tr], fit_intercept, strength)
    r2, ss_tot = _r2_per_dim(z[te], h[te] @ w + b)
    return _reduce_r2(r2, ss_tot, multioutput)


def fit_linear_map(h, z, *, fit_intercept: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The least-squares affine map :math:`z \approx h W + b`, fitted on all samples.

    Parameters
    ----------
    h : Tensor, shape (n, d_h)
        Representation.
    z : Tensor, shape (n, d_z)
        Latents.
    fit_intercept : bool
        Fit the offset b; otherwise b = 0.

    Returns
    -------
    W : Tensor, shape (d_h, d_z)
        The weights (float64); the minimum-norm solution when h is rank deficient.
    b : Tensor, shape (d_z,)
        The offset (float64); zero when ``fit_intercept=False``.
    """
    h, z = _pair(h, z)
    return _fit_affine(h, z, fit_intercept)


def orthogonality_score(h, z, *, fit_intercept: bool = True, normalize_scale: bool = True) -> float:
    r"""How far the fitted linear map from h to z is from orthogonal: the mean absolute
    deviation of its singular values from their mean (or from 1).

    With :math:`\sigma_1, \dots, \sigma_r` the singular values of W in
    :math:`z \approx h W + b` (fitted on all samples), the score is
    :math:`\frac{1}{r} \sum_k |\sigma_k / c - 1|` with :math:`c = \bar\sigma` when
    ``normalize_scale`` (orthogonal up to a global scale, the InfoNCE-on-the-sphere class of
    Zimmermann et al. 2021) and c = 1 otherwise (orthogonal with unit scale; Reizinger et al.
    2024 compare the singular values of the latent map with :math:`1/\kappa` instead, as
    ``diet_clusters`` does). 0 means orthogonal; the singular values themselves come from
    ``torch.linalg.svdvals(fit_linear_map(h, z)[0])``.

    Parameters
    ----------
    h : Tensor, shape (n, d_h)
        Representation.
    z : Tensor, shape (n, d_z)
        Latents.
    fit_intercept : bool
        Fit an offset together with the map.
    normalize_scale : bool
        Divide the singular values by their mean first, so that a scaled orthogonal map scores 0.

    Returns
    -------
    float
        The score, >= 0.
    """
    w, _ = fit_linear_map(h, z, fit_intercept=fit_intercept)
    s = torch.linalg.svdvals(w)
    scale = s.mean() if normalize_scale else torch.ones((), dtype=s.dtype, device=s.device)
    if scale <= 0:
        raise ValueError("the fitted map from h to z is zero (h carries no linear information)")
    return float((s / scale - 1.0).abs().mean())


def procrustes_r2(
    h,
    z,
    *,
    test_fraction: float = 0.5,
    in_sample: bool = False,
    scale: bool = True,
    multioutput: str = "uniform_average",
    generator: torch.Generator | None = None,
):
    r"""Held-out :math:`R^2` of the best orthogonal (Procrustes) map from h to z.

    On the train split, with centred :math:`H_c, Z_c` and the SVD
    :math:`H_c^\top Z_c = U S V^\top`, the map is :math:`Q = U V^\top` (orthonormal columns or
    rows when :math:`d_h \ne d_z`) and the least-squares scale
    :math:`s = \mathrm{tr}\, S / \|H_c Q\|_F^2`; the prediction
    :math:`\hat z = s (h - \bar h) Q + \bar z` is scored on held-out data.
    It equals ``r2_linear`` when h is an orthogonal map of z up to scale and offset, and is lower
    for a general linear map, which separates the two identifiability classes.

    Parameters
    ----------
    h : Tensor, shape (n, d_h)
        Representation.
    z : Tensor, shape (n, d_z)
        Latents.
    test_fraction : float
        Fraction held out for scoring, in (0, 1).
    in_sample : bool
        Fit and score on all samples.
    scale : bool
        Fit the global scale s; otherwise s = 1 (a pure rotation or reflection).
    multioutput : {"uniform_average", "raw_values", "variance_weighted"}
        How to combine the per-dimension scores.
    generator : torch.Generator, optional
        Shuffles the rows before splitting.

    Returns
    -------
    r2 : float or Tensor
        The held-out :math:`R^2`; a float64 Tensor of shape (d_z,) for
        ``multioutput="raw_values"``.
    """
    h, z = _pair(h, z)
    _checks.choice("multioutput", multioutput, _MULTIOUTPUT)
    tr, te = _split(h.shape[0], test_fraction, in_sample, generator, h.device)
    h_mean, z_mean = h[tr].mean(0), z[tr].mean(0)
    hc, zc = h[tr] - h_mean, z[tr] - z_mean
    u, s, vh = torch.linalg.svd(hc.T @ zc, full_matrices=False)
    q = u @ vh
    # The least-squares scale for this Q; ||H_c Q|| < ||H_c|| when d_h > d_z (the directions
    # Q drops would otherwise shrink the prediction).
    c = s.sum() / (hc @ q).pow(2).sum() if scale else 1.0
    r2, ss_tot = _r2_per_dim(z[te], c * (h[te] - h_mean) @ q + z_mean)
    return _reduce_r2(r2, ss_tot, multioutput)


# --------------------------------------------------------------------------- nonlinear R^2
def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d2 = a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2.0 * a @ b.T
    return d2.clamp_min_(0.0)


def _kfold(n: int, folds: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Contiguous folds, the first ``n % folds`` one sample larger (sklearn's KFold)."""
    sizes = [n // folds + (1 if i < n % folds else 0) for i in range(folds)]
    idx = torch.arange(n, device=device)
    out, start = [], 0
    for size in sizes:
        val = idx[start : start + size]
        out.append((torch.cat([idx[:start], idx[start + size :]]), val))
        start += size
    return out


def _kernel_ridge_predict(h_tr, z_tr, h_te, alphas, gammas, cv_folds, batch_size=4096):
    """RBF kernel ridge with (alpha, gamma) chosen by k-fold CV on mean R^2; predict h_te."""
    sq = _sq_dists(h_tr, h_tr)
    scores = torch.zeros(len(alphas), len(gammas), dtype=h_tr.dtype, device=h_tr.device)
    for tr, va in _kfold(h_tr.shape[0], cv_folds, h_tr.device):
        for gi, gamma in enumerate(gammas):
            evals, evecs = torch.linalg.eigh(torch.exp(-gamma * sq[tr][:, tr]))
            k_va = torch.exp(-gamma * sq[va][:, tr]) @ evecs
            proj = evecs.T @ z_tr[tr]
            for ai, alpha in enumerate(alphas):
                # One eigendecomposition serves every alpha: (K + aI)^-1 = V diag(1/(l+a)) V^T.
                pred = k_va @ (proj / (evals + alpha)[:, None])
                scores[ai, gi] += _r2_per_dim(z_tr[va], pred)[0].mean()
    # argmax returns the first maximum: alpha-major order, like sklearn's ParameterGrid.
    best = int(torch.argmax(scores.flatten()))
    alpha, gamma = alphas[best // len(gammas)], gammas[best % len(gammas)]
    eye = torch.eye(h_tr.shape[0], dtype=h_tr.dtype, device=h_tr.device)
    coef = torch.linalg.solve(torch.exp(-gamma * sq) + alpha * eye, z_tr)
    pred = [
        torch.exp(-gamma * _sq_dists(h_te[i : i + batch_size], h_tr)) @ coef
        for i in range(0, h_te.shape[0], batch_size)
    ]
    return torch.cat(pred), (alpha, gamma)


def _uniform(shape, bound: float, generator: torch.Generator, device, dtype) -> torch.Tensor:
    draw = torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)
    return ((2.0 * draw - 1.0) * bound).to(device)


def _mlp_predict(h_tr, z_tr, h_te, hidden, steps, lr, batch_size, generator):
    """A ReLU MLP regressor trained with Adam (cosine learning rate) on minibatches."""
    device, dtype = h_tr.device, torch.float32
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    sizes = [h_tr.shape[1], *hidden, z_tr.shape[1]]
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        bound = 1.0 / math.sqrt(fan_in)  # PyTorch's nn.Linear default, drawn from our generator
        params.append(_uniform((fan_in, fan_out), bound, generator, device, dtype))
        params.append(_uniform((fan_out,), bound, generator, device, dtype))
    for p in params:
        p.requires_grad_(True)

    def forward(x):
        for i in range(0, len(params), 2):
            x = x @ params[i] + params[i + 1]
            if i + 2 < len(params):
                x = torch.relu(x)
        return x

    n = h_tr.shape[0]
    batch = min(batch_size, n)
    idx = torch.randint(0, n, (steps, batch), generator=generator, device=generator.device)
    idx = idx.to(device)
    x, y = h_tr.to(dtype), z_tr.to(dtype)
    opt = torch.optim.Adam(params, lr=lr)
    with torch.enable_grad():
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
            loss = (forward(x[idx[step]]) - y[idx[step]]).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return forward(h_te.to(dtype)).to(h_te.dtype)


def r2_nonlinear(
    h,
    z,
    *,
    method: str = "auto",
    test_fraction: float = 0.5,
    in_sample: bool = False,
    alphas: Sequence[float] = (1.0, 0.1, 0.01, 0.001),
    gammas: Sequence[float] = tuple(np.logspace(-2, 2, 4).tolist()),
    cv_folds: int = 3,
    kernel_max_train: int = 4096,
    mlp_hidden: Sequence[int] = (256, 256),
    mlp_steps: int = 2000,
    mlp_lr: float = 1e-3,
    mlp_batch_size: int = 512,
    multioutput: str = "uniform_average",
    generator: torch.Generator | None = None,
):
    r"""Held-out :math:`R^2` of a nonlinear regression from h to z.

    Tests identifiability up to an arbitrary invertible map (block identifiability, von
    Kügelgen et al. 2021, "Self-Supervised Learning with Data Augmentations Provably Isolates
    Content from Style"). h is standardised and z centred with the train split's statistics.
    ``method="kernel_ridge"`` fits RBF kernel ridge :math:`k(a, b) = \exp(-\gamma\|a - b\|^2)`
    with (alpha, gamma) chosen by ``cv_folds``-fold cross-validation on the mean :math:`R^2`
    (the paper's grid: alpha in {1, 0.1, 0.01, 0.001}, gamma = logspace(-2, 2, 4), 3 folds);
    ``method="mlp"`` trains a ReLU MLP probe with Adam, for n too large for an n x n kernel;
    ``"auto"`` uses kernel ridge up to ``kernel_max_train`` training samples and the MLP above.

    Parameters
    ----------
    h : Tensor, shape (n, d_h)
        Representation (predictors).
    z : Tensor, shape (n, d_z)
        Latents (targets).
    method : {"auto", "kernel_ridge", "mlp"}
        The regressor.
    test_fraction : float
        Fraction held out for scoring, in (0, 1).
    in_sample : bool
        Fit and score on all samples (overstates the score; off by default).
    alphas : sequence of float
        Ridge strengths of the kernel-ridge grid, all > 0.
    gammas : sequence of float
        RBF inverse widths :math:`\gamma` of the kernel-ridge grid, all > 0.
    cv_folds : int
        Folds of the contiguous cross-validation, >= 2.
    kernel_max_train : int
        Largest training split fitted by kernel ridge (memory n^2, time n^3).
    mlp_hidden : sequence of int
        Hidden widths of the MLP probe.
    mlp_steps : int
        Adam steps of the MLP probe (with a cosine-decayed learning rate).
    mlp_lr : float
        Peak learning rate of the MLP probe.
    mlp_batch_size : int
        Minibatch size of the MLP probe.
    multioutput : {"uniform_average", "raw_values", "variance_weighted"}
        How to combine the per-dimension scores.
    generator : torch.Generator, optional
        Shuffles the rows before splitting and drives the MLP's initialisation and minibatches
        (seed 0 when None, so repeated calls agree).

    Returns
    -------
    r2 : float or Tensor
        The held-out :math:`R^2`; a float64 Tensor of shape (d_z,) for
        ``multioutput="raw_values"``.
    """
    h, z = _pair(h, z)
    _checks.choice("method", method, ("auto", "kernel_ridge", "mlp"))
    _checks.choice("multioutput", multioutput, _MULTIOUTPUT)
    cv_folds = _checks.integer("cv_folds", cv_folds, low=2)
    kernel_max_train = _checks.integer("kernel_max_train", kernel_max_train, low=1)
    alphas = [_checks.positive("alphas", a) for a in alphas]
    gammas = [_checks.positive("gammas", g) for g in gammas]
    if not alphas or not gammas:
        raise ValueError("alphas and gammas must each hold at least one value")
    mlp_hidden = [_checks.integer("mlp_hidden", w, low=1) for w in mlp_hidden]
    mlp_steps = _checks.integer("mlp_steps", mlp_steps, low=1)
    mlp_batch_size = _checks.integer("mlp_batch_size", mlp_batch_size, low=1)
    mlp_lr = _checks.positive("mlp_lr", mlp_lr)

    min_train = 2 * cv_folds if method != "mlp" else 2
    tr, te = _split(h.shape[0], test_fraction, in_sample, generator, h.device, min_train)
    if method == "auto":
        method = "kernel_ridge" if len(tr) <= kernel_max_train else "mlp"
    if method == "kernel_ridge" and len(tr) > kernel_max_train:
        raise ValueError(
            f"kernel ridge on {len(tr)} training samples exceeds kernel_max_train = "
            f"{kernel_max_train}; raise kernel_max_train or use method='mlp'"
        )
    (h_tr, h_te), _, _ = _standardize(h[tr], h[te])
    z_mean = z[tr].mean(0)
    if method == "kernel_ridge":
        pred, _ = _kernel_ridge_predict(h_tr, z[tr] - z_mean, h_te, alphas, gammas, cv_folds)
        pred = pred + z_mean
    else:
        (z_tr,), _, z_std = _standardize(z[tr])
        pred = _mlp_predict(
            h_tr, z_tr, h_te, mlp_hidden, mlp_steps, mlp_lr, mlp_batch_size, generator
        )
        pred = pred * z_std + z_mean
    r2, ss_tot = _r2_per_dim(z[te], pred)
    return _reduce_r2(r2, ss_tot, multioutput)


def block_r2(
    h,
    z,
    blocks: Mapping[str, slice | Sequence[int]],
    *,
    nonlinear: bool = True,
    **kwargs,
) -> dict[str, float]:
    r"""Held-out :math:`R^2` of each block of latents (e.g. content and style) from h.

    Block identifiability (von Kügelgen et al. 2021): the content block c is recovered up to an
    invertible map, so its nonlinear :math:`R^2` is close to 1, while a style block s is only as
    predictable as its dependence on c allows.

    Parameters
    ----------
    h : Tensor, shape (n, d_h)
        Representation.
    z : Tensor, shape (n, d_z)
        Latents holding every block.
    blocks : mapping from str to slice or sequence of int
        Named column sets of z, e.g. ``{"content": slice(0, 5), "style": slice(5, 10)}``.
    nonlinear : bool
        Score with ``r2_nonlinear`` (default) or ``r2_linear``.
    **kwargs
        Passed to the scoring function (test_fraction, generator, method, ...); the multioutput
        argument is fixed to its uniform average. With a generator every block is scored on the
        same split (the generator's state is replayed for each block).

    Returns
    -------
    dict
        From block name to its :math:`R^2` (a float).
    """
    h, z = _pair(h, z)
    if not isinstance(blocks, Mapping) or not blocks:
        raise TypeError("blocks must be a non-empty mapping from a name to a slice or indices")
    if "multioutput" in kwargs:
        raise ValueError("block_r2 reports one score per block; do not pass multioutput")
    score = r2_nonlinear if nonlinear else r2_linear
    gen = _checks.generator_or_none("generator", kwargs.get("generator"))
    state = gen.get_state() if gen is not None else None
    out = {}
    for name, cols in blocks.items():
        if isinstance(cols, slice) and not all(
                b is None or (isinstance(b, int) and -z.shape[1] <= b <= z.shape[1])
                for b in (cols.start, cols.stop)):
            # Python would clip an out-of-range slice silently to a smaller block.
            raise ValueError(f"blocks[{name!r}] = {cols!r} reaches outside z's {z.shape[1]} "
                             "columns")
        idx = torch.arange(z.shape[1])[cols] if isinstance(cols, slice) else torch.as_tensor(cols)
        if idx.ndim != 1 or idx.numel() == 0 or idx.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"blocks[{name!r}] must be a slice or a non-empty sequence of int column indices "
                f"of z, got {cols!r}"
            )
        if idx.min() < 0 or idx.max() >= z.shape[1]:
            raise ValueError(f"blocks[{name!r}] indexes outside z's {z.shape[1]} columns")
        if gen is not None:
            # Every block must see the same split: replay the generator's state for each.
            kwargs = {**kwargs, "generator": torch.Generator(gen.device).set_state(state)}
        out[name] = score(h, z[:, idx.to(z.device)], **kwargs)
    return out


# --------------------------------------------------------------------------- MCC
def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Column-wise ranks 1..n, ties given their average rank (scipy.stats.rankdata)."""
    ranks = torch.empty_like(x)
    for j in range(x.shape[1]):
        values, order = torch.sort(x[:, j], stable=True)
        _, inverse, counts = torch.unique_consecutive(
            values, return_inverse=True, return_counts=True
        )
        ends = counts.cumsum(0).to(x.dtype)
        ranks[order, j] = (ends - (counts.to(x.dtype) - 1.0) / 2.0)[inverse]
    return ranks


def _correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlations between the columns of a and b; a constant column correlates 0."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    na, nb = a.norm(dim=0), b.norm(dim=0)
    a = a / torch.where(na > 0, na, torch.ones_like(na))
    b = b / torch.where(nb > 0, nb, torch.ones_like(nb))
    return a.T @ b


def mcc(h, z, *, method: str = "pearson", multioutput: str = "uniform_average"):
    r"""Mean correlation coefficient between latents and representation after optimal matching.

    With :math:`C_{jk}` the correlation between latent :math:`z_j` and coordinate :math:`h_k`,
    MCC is :math:`\max_\pi \frac{1}{m} \sum_j |C_{j \pi(j)}|` over one-to-one matchings
    :math:`\pi` of :math:`m = \min(d_z, d_h)` pairs, solved exactly by the Hungarian algorithm
    (``scipy.optimize.linear_sum_assignment``). MCC = 1 when h is z up to permutation, sign and
    scale of the coordinates (Pearson) or up to strictly monotone maps of each coordinate
    (Spearman). Correlations are in-sample; a constant coordinate correlates 0 with everything.

    Parameters
    ----------
    h : Tensor, shape (n, d_h)
        Representation.
    z : Tensor, shape (n, d_z)
        Latents.
    method : {"pearson", "spearman"}
        Linear correlation, or the Pearson correlation of average ranks.
    multioutput : {"uniform_average", "raw_values"}
        The mean, or the matched absolute correlations per latent.

    Returns
    -------
    float or Tensor
        The MCC; with ``multioutput="raw_values"``, a float64 Tensor of shape (m,): the matched
        absolute correlation of each matched latent, in increasing latent index (all latents when
        d_h >= d_z).
    """
    h, z = _pair(h, z)
    _checks.choice("method", method, ("pearson", "spearman"))
    _checks.choice("multioutput", multioutput, ("uniform_average", "raw_values"))
    if method == "spearman":
        h, z = _average_ranks(h), _average_ranks(z)
    c = _correlation(z, h).abs()
    rows, cols = linear_sum_assignment(c.cpu().numpy(), maximize=True)
    matched = c[torch.as_tensor(rows, device=c.device), torch.as_tensor(cols, device=c.device)]
    return matched if multioutput == "raw_values" else float(matched.mean())
