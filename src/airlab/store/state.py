"""Decision state kept in the store: measured noise floors and sequential-decision state.

Two small tables beside the others (``Store`` creates them, or adds them to an older database,
when it opens one writable, because they share ``tables.metadata``):

* ``noise_floors``: one row per (workload, preset, dataset, budget, metric), the
  :class:`~airlab.analysis.decisions.NoiseFloor` of that metric as a JSON dict, written by
  ``airlab calibrate``; a newer measurement replaces the older one.
* ``sequential_state``: one JSON dict per experiment (``decisions.new_sequential_state``), so
  that a second ``airlab decide`` continues spending alpha instead of restarting it.

Like ``verdicts.py``, this module imports no ``Store`` at run time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Column, Float, Integer, String, Table, delete, insert, select

from airlab.store.tables import metadata

if TYPE_CHECKING:
    from airlab.store.store import Store

noise_floors = Table(
    "noise_floors", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workload", String(50), nullable=False),
    Column("preset", String(64), nullable=False),
    Column("dataset", String(4096), nullable=False),
    Column("budget", String(64), nullable=False),  # "tokens=150000"
    Column("metric", String(100), nullable=False),
    Column("floor", JSON, nullable=False),  # NoiseFloor.to_dict()
    Column("source", String(200), nullable=False),  # the calibration experiment's name
    Column("created_at", Float, nullable=False),
)

sequential_state = Table(
    "sequential_state", metadata,
    Column("experiment", String(200), primary_key=True),
    Column("state", JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
)


def floor_key(config: Mapping[str, Any], budget: Mapping[str, float]) -> dict[str, str]:
    """The noise floor's key from a resolved run config (workload, preset, dataset) and the
    experiment's budget ({unit: amount})."""
    (unit, amount), = budget.items()
    return {"workload": str(config.get("workload") or ""),
            "preset": str(config.get("preset") or ""),
            "dataset": str(config.get("dataset") or ""),
            "budget": f"{unit}={float(amount):g}"}


def save_noise_floor(store: Store, key: Mapping[str, str], metric: str, floor: dict[str, Any],
                     source: str) -> None:
    """Store (replace) the noise floor of one metric for a key from :func:`floor_key`."""
    with store.writing() as c:
        c.execute(delete(noise_floors).where(*_match(key), noise_floors.c.metric == metric))
        c.execute(insert(noise_floors).values(**key, metric=metric, floor=dict(floor),
                                              source=source, created_at=time.time()))


def load_noise_floor(store: Store, key: Mapping[str, str], metric: str
                     ) -> dict[str, Any] | None:
    """The stored floor of one metric (a NoiseFloor dict plus ``source``), or None."""
    if not store.has_table("noise_floors"):  # an older database opened read-only
        return None
    q = (select(noise_floors).where(*_match(key), noise_floors.c.metric == metric)
         .order_by(noise_floors.c.id.desc()).limit(1))
    with store.reading() as c:
        row = c.execute(q).first()
    if row is None:
        return None
    return {**row._mapping["floor"], "source": row._mapping["source"]}


def list_noise_floors(store: Store) -> list[dict[str, Any]]:
    """Every stored floor (oldest first)."""
    if not store.has_table("noise_floors"):
        return []
    with store.reading() as c:
        return [dict(r._mapping) for r in c.execute(select(noise_floors)
                                                    .order_by(noise_floors.c.id))]


def load_sequential_state(store: Store, experiment: str) -> dict[str, Any] | None:
    """The sequential-decision state of an experiment, or None before its first look."""
    if not store.has_table("sequential_state"):
        return None
    with store.reading() as c:
        row = c.execute(select(sequential_state.c.state)
                        .where(sequential_state.c.experiment == experiment)).first()
    return None if row is None else dict(row[0])


def save_sequential_state(store: Store, experiment: str, state: Mapping[str, Any]) -> None:
    """Store (replace) the sequential-decision state of an experiment."""
    with store.writing() as c:
        c.execute(delete(sequential_state).where(sequential_state.c.experiment == experiment))
        c.execute(insert(sequential_state).values(experiment=experiment, state=dict(state),
                                                  updated_at=time.time()))


def _match(key: Mapping[str, str]) -> list[Any]:
    return [noise_floors.c[k] == str(key[k]) for k in ("workload", "preset", "dataset", "budget")]
