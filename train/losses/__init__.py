"""Losses shared by training and the optimisation ops (feature statistics for texture and style)."""
