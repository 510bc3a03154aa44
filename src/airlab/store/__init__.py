"""Persistent store of experiments, runs, curves, metrics and verdicts (any SQLAlchemy URL)."""

from airlab.store.store import Store, StoreCorruptError, StoreError, owner_id
from airlab.store.verdicts import latest_verdicts, list_verdicts, save_verdict

__all__ = ["Store", "StoreError", "StoreCorruptError", "owner_id", "save_verdict",
           "list_verdicts", "latest_verdicts"]
