"""Techniques: checkpointing (to be filled)."""
