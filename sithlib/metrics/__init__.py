"""Identifiability, representational similarity, stability and information metrics.

One module per family: ``identifiability`` (R^2, MCC, orthogonality), ``similarity`` (CKA,
mutual kNN), ``stability`` (center vector, collapse indicators), ``information`` (entropy
estimators and their assumptions) and ``probes`` (kNN and linear classification). Every metric
takes torch tensors on any device, validates its inputs and returns a float or a documented
tensor, without gradients.
"""

from .identifiability import (
    RIDGE_GRID,
    block_r2,
    fit_linear_map,
    mcc,
    orthogonality_score,
    procrustes_r2,
    r2_linear,
    r2_nonlinear,
)
from .information import (
    activation_pattern,
    gaussian_entropy,
    logdet_entropy,
    mardia_test,
    mixture_entropy_mc,
    mixture_entropy_pairwise,
    same_region_fraction,
)
from .probes import knn_accuracies, knn_accuracy, linear_probe
from .similarity import cka_linear, cka_rbf, cknna, cycle_knn, mutual_knn
from .stability import (
    center_vector,
    center_vector_norm,
    effective_rank,
    embedding_std,
    mean_norm_decomposition,
    sample_mean_norm,
)

__all__ = [
    "activation_pattern",
    "block_r2",
    "center_vector",
    "center_vector_norm",
    "cka_linear",
    "cka_rbf",
    "cknna",
    "cycle_knn",
    "effective_rank",
    "embedding_std",
    "fit_linear_map",
    "gaussian_entropy",
    "knn_accuracies",
    "knn_accuracy",
    "linear_probe",
    "logdet_entropy",
    "mardia_test",
    "mcc",
    "mean_norm_decomposition",
    "mixture_entropy_mc",
    "mixture_entropy_pairwise",
    "mutual_knn",
    "orthogonality_score",
    "procrustes_r2",
    "r2_linear",
    "RIDGE_GRID",
    "r2_nonlinear",
    "same_region_fraction",
    "sample_mean_norm",
]
