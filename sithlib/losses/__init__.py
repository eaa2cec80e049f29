"""SSL objectives, one pure function each, computed in fp32 with the papers' defaults.

Modules: ``contrastive`` (NT-Xent, InfoNCE, alignment, uniformity), ``noncontrastive`` (BYOL,
SimSiam, Barlow Twins, VICReg, the stability paper's objective), ``clustering`` (Sinkhorn, SwAV,
DINO), ``information`` (entropy estimators, VICReg variants), ``supervised`` (cross-entropy,
DIET) and ``distributed`` (autograd-aware gathers for multi-process training).
"""

from sithlib.losses.clustering import dino, dino_center_update, dino_teacher_temp, sinkhorn, swav
from sithlib.losses.contrastive import alignment, info_nce, nt_xent, uniformity
from sithlib.losses.information import logdet_entropy, pairwise_entropy, vicreg_entropy
from sithlib.losses.noncontrastive import barlow_twins, byol, simsiam, stability, vicreg
from sithlib.losses.supervised import cross_entropy, diet

__all__ = [
    "nt_xent",
    "info_nce",
    "alignment",
    "uniformity",
    "byol",
    "simsiam",
    "barlow_twins",
    "vicreg",
    "stability",
    "sinkhorn",
    "swav",
    "dino",
    "dino_center_update",
    "dino_teacher_temp",
    "logdet_entropy",
    "pairwise_entropy",
    "vicreg_entropy",
    "cross_entropy",
    "diet",
]
