"""Techniques: architecture (to be filled)."""
