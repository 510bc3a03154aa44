"""Techniques: quantization (to be filled)."""
