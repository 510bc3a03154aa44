"""Techniques: batch_size (to be filled)."""
