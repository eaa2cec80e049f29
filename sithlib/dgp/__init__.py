"""Identifiable data-generating processes: latent spaces, marginals, positive-pair
conditionals and invertible mixings ``x = g(z)``."""

from sithlib.dgp.vmf import mean_resultant_length, sample_vmf

__all__ = ["sample_vmf", "mean_resultant_length"]
