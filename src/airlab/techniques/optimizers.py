"""Techniques: optimizers (to be filled)."""
