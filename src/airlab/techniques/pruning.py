"""Techniques: pruning (to be filled)."""
