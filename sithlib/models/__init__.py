"""Encoders, projector / predictor heads, the EMA teacher and batch-norm calibration."""

from sithlib.models.batchnorm import calibrate_batchnorm, calibration_batches
from sithlib.models.ema import EMATeacher, cosine_schedule, ema_momentum
from sithlib.models.heads import (
    BatchNormScale,
    DINOHead,
    Prototypes,
    WeightNormLinear,
    barlow_twins_projector,
    byol_mlp,
    linear_head,
    mlp_head,
    simclr_projector,
    simsiam_predictor,
    simsiam_projector,
    swav_projector,
    vicreg_expander,
)
from sithlib.models.mlp import MLP, SphereNorm, cl_ica_encoder, cl_ica_widths, normalize_rows
from sithlib.models.resnet import BasicBlock, ResNet18
from sithlib.models.views import both_views, mixes_rows, one_batch

__all__ = [
    "MLP",
    "SphereNorm",
    "normalize_rows",
    "cl_ica_encoder",
    "cl_ica_widths",
    "BasicBlock",
    "ResNet18",
    "BatchNormScale",
    "DINOHead",
    "Prototypes",
    "WeightNormLinear",
    "barlow_twins_projector",
    "byol_mlp",
    "linear_head",
    "mlp_head",
    "simclr_projector",
    "simsiam_predictor",
    "simsiam_projector",
    "swav_projector",
    "vicreg_expander",
    "EMATeacher",
    "cosine_schedule",
    "ema_momentum",
    "both_views",
    "mixes_rows",
    "one_batch",
    "calibrate_batchnorm",
    "calibration_batches",
]
