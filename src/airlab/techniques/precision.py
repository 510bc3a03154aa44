"""Techniques: precision (to be filled)."""
