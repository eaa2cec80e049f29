"""Identifiability, representational similarity, stability and information metrics."""
