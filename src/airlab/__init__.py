"""airlab: an automated AI research lab."""

__version__ = "0.1.0"
