"""Persistent store of experiments, runs, curves, metrics and verdicts (any SQLAlchemy URL)."""

from airlab.store.state import (
    floor_key,
    list_noise_floors,
    load_noise_floor,
    load_sequential_state,
    save_noise_floor,
    save_sequential_state,
)
from airlab.store.store import Store, StoreCorruptError, StoreError, owner_id
from airlab.store.verdicts import latest_verdicts, list_verdicts, save_verdict

__all__ = ["Store", "StoreError", "StoreCorruptError", "owner_id", "save_verdict",
           "list_verdicts", "latest_verdicts", "floor_key", "save_noise_floor",
           "load_noise_floor", "list_noise_floors", "load_sequential_state",
           "save_sequential_state"]
