r"""Classification losses: supervised cross-entropy and DIET's instance discrimination.

Both are the softmax cross-entropy of a linear head; they differ only in the label (the class,
or the index of the training sample). Reizinger et al. (2024) show that both identify the
latents of a cluster-centric data-generating process up to linear maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sithlib.losses import _common as C


def _classification(logits, labels, label_smoothing, labels_name):
    logits = C.tensor("logits", logits, shape="(n, C)")
    if not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"{labels_name} must be a torch.Tensor of shape (n,), got {type(labels).__name__}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(
            f"{labels_name} must be an integer tensor of class indices, got dtype {labels.dtype}"
        )
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"{labels_name} must have shape ({logits.shape[0]},) to match logits of shape "
            f"{tuple(logits.shape)}, got {tuple(labels.shape)}"
        )
    if labels.device != logits.device:
        raise ValueError(f"{labels_name} and logits must be on the same device")
    smoothing = C.in_range("label_smoothing", label_smoothing, 0.0, 1.0)
    # Range check only on plain CPU tensors: on a GPU it would synchronise every step (CUDA
    # asserts there), and under vmap a data-dependent branch is an error (cross_entropy's own
    # check still raises there).
    if (
        labels.device.type == "cpu"
        and not C.transformed(labels)
        and labels.numel()
        and (labels.min() < 0 or labels.max() >= logits.shape[1])
    ):
        raise ValueError(
            f"{labels_name} must hold indices in [0, {logits.shape[1] - 1}] "
            f"(one column of logits per class), got values in [{int(labels.min())}, "
            f"{int(labels.max())}]"
        )
    return F.cross_entropy(logits, labels.long(), label_smoothing=smoothing)


@C.fp32
def cross_entropy(logits, y, *, label_smoothing: float = 0.0) -> torch.Tensor:
    r"""Supervised softmax cross-entropy.

    .. math:: L = -\frac1n \sum_i \log \operatorname{softmax}(\ell_i)_{y_i},

    with :math:`\ell_i` the logits of sample i and :math:`y_i` its class.

    With label smoothing :math:`\alpha` the target is :math:`(1-\alpha)\,e_{y} + \alpha/C`, as in
    ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    logits : Tensor, shape (n, C)
        Unnormalised class scores :math:`W f(x)`; upcast to float32.
    y : Tensor, shape (n,)
        Integer class labels in [0, C).
    label_smoothing : float
        :math:`\alpha \in [0, 1]`.

    Returns
    -------
    loss : Tensor
        A scalar.
    """
    return _classification(logits, y, label_smoothing, "y")


@C.fp32
def diet(logits, index, *, label_smoothing: float = 0.0) -> torch.Tensor:
    r"""DIET: parametric instance discrimination (Balestriero, 2023).

    A bias-free linear head :math:`W \in \mathbb{R}^{N \times d}` has one row per training
    sample and the label of a view is its sample's index i:

    .. math::

        L = -\frac1n \sum \log \frac{\exp(\beta \langle w_i, f(x)\rangle)}
            {\sum_{j=1}^N \exp(\beta \langle w_j, f(x)\rangle)}

    (Reizinger et al. 2024, eq. 1). The head and the inverse temperature :math:`\beta` live in
    the method; this function takes the logits :math:`\beta W f(x)`. No label smoothing by
    default, as in the code behind Reizinger et al.'s identifiability results (klindtlab/csi,
    ``simulation/main_diet.py``: plain cross-entropy, :math:`\beta = 1`, bias-free head).

    Parameters
    ----------
    logits : Tensor, shape (n, N)
        Head outputs over the N training samples.
    index : Tensor, shape (n,)
        Integer index of each view's training sample, in [0, N).
    label_smoothing : float
        In [0, 1].

    Returns
    -------
    loss : Tensor
        A scalar.
    """
    return _classification(logits, index, label_smoothing, "index")
