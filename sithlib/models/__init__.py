"""Encoders, projector / predictor heads and the EMA teacher."""
