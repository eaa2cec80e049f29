"""Identifiable data-generating processes: latent spaces, marginals, positive-pair
conditionals, invertible mixings ``x = g(z)`` and the :class:`DGP` object that composes them."""

# The submodule name `augment` stays the module (sithlib.dgp.augment.augment is the function).
from sithlib.dgp.augment import RECIPES, AugmentConfig, apply_params, recipe, sample_params
from sithlib.dgp.clusters import ClusterInstance, logit_scale
from sithlib.dgp.conditionals import sample_conditional
from sithlib.dgp.content_style import ContentStyle
from sithlib.dgp.datasets import (
    DATASETS,
    ImageTensors,
    RenderedDataset,
    load_dataset,
    load_digits,
    to_tensors,
)
from sithlib.dgp.dgp import DGP, PRESETS, DGPConfig, Negatives, Pairs
from sithlib.dgp.images import (
    LATENTS,
    SHAPES,
    ImagePairs,
    augmented_latents,
    plot_pairs,
    positive_latents,
    render,
    sample_latents,
)
from sithlib.dgp.images import sample_pairs as sample_image_pairs
from sithlib.dgp.marginals import sample_marginal, sample_noise
from sithlib.dgp.mixing import (
    IdentityMixing,
    InvertibleMLP,
    LinearMixing,
    jacobian_condition_number,
    make_mixing,
    mixing_from_state_dict,
    pool_condition,
    random_matrix,
)
from sithlib.dgp.negatives import negative_indices
from sithlib.dgp.spaces import Box, Euclidean, Sphere, make_space
from sithlib.dgp.vmf import mean_resultant_length, sample_vmf

__all__ = [
    "DGP",
    "DGPConfig",
    "PRESETS",
    "Pairs",
    "Negatives",
    "sample_vmf",
    "mean_resultant_length",
    "Sphere",
    "Box",
    "Euclidean",
    "make_space",
    "sample_marginal",
    "sample_noise",
    "sample_conditional",
    "ContentStyle",
    "ClusterInstance",
    "logit_scale",
    "InvertibleMLP",
    "LinearMixing",
    "IdentityMixing",
    "make_mixing",
    "pool_condition",
    "mixing_from_state_dict",
    "random_matrix",
    "jacobian_condition_number",
    "negative_indices",
    "AugmentConfig",
    "RECIPES",
    "recipe",
    "sample_params",
    "apply_params",
    "RenderedDataset",
    "ImageTensors",
    "DATASETS",
    "load_dataset",
    "load_digits",
    "to_tensors",
    "LATENTS",
    "SHAPES",
    "ImagePairs",
    "render",
    "sample_latents",
    "positive_latents",
    "sample_image_pairs",
    "augmented_latents",
    "plot_pairs",
]
