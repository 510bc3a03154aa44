"""Persistent store of experiments, runs, curves and metrics (any SQLAlchemy URL)."""

from airlab.store.store import Store

__all__ = ["Store"]
