"""Techniques: distillation (to be filled)."""
