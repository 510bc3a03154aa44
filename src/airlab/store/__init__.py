"""Persistent store of experiments, runs, curves, metrics and verdicts (any SQLAlchemy URL)."""

from airlab.store import calls as _calls  # noqa: F401  (tables join the metadata)
from airlab.store import live as _live  # noqa: F401  (tables join the metadata)
from airlab.store import predictions as _predictions  # noqa: F401  (tables join the metadata)
from airlab.store import team as _team  # noqa: F401  (its tables join the metadata)
from airlab.store.calls import load_calls, save_call, token_totals
from airlab.store.live import LiveWriter, load_live_points, load_live_progress
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
           "save_sequential_state", "save_call", "load_calls", "token_totals", "LiveWriter",
           "load_live_points", "load_live_progress"]
