"""Stored verdicts: every rating the validator gave, with its breakdown and critique.

The table is defined in ``tables.py`` with the others (``Store`` creates it, or adds it to an
older database, when it opens one writable). This module imports no ``Store`` at run time, so
``store.py`` and ``verdicts.py`` do not import each other.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from airlab.store.tables import experiments, verdicts

if TYPE_CHECKING:
    from airlab.store.store import Store


def save_verdict(store: Store, experiment_id: int, *, rating: int, band: str,
                 breakdown: dict[str, Any], critique: list[str], rubric_version: str,
                 best_arm: str | None = None) -> int:
    """Append one verdict (older ones are kept: the history shows how an experiment improved)."""
    with store.writing() as c:
        res = c.execute(insert(verdicts).values(
            experiment_id=experiment_id, created_at=time.time(), rating=int(rating), band=band,
            best_arm=best_arm, breakdown=breakdown, critique=list(critique),
            rubric_version=rubric_version))
        key = res.inserted_primary_key
        assert key is not None
        return int(key[0])


def list_verdicts(store: Store, experiment_id: int | None = None) -> list[dict[str, Any]]:
    """All verdicts (oldest first), each with its experiment's name."""
    if not store.has_table("verdicts"):  # an older database opened read-only
        return []
    q = (select(verdicts, experiments.c.name.label("experiment"))
         .join(experiments, experiments.c.id == verdicts.c.experiment_id)
         .order_by(verdicts.c.created_at, verdicts.c.id))
    if experiment_id is not None:
        q = q.where(verdicts.c.experiment_id == experiment_id)
    with store.reading() as c:
        return [dict(r._mapping) for r in c.execute(q)]


def latest_verdicts(store: Store) -> dict[int, dict[str, Any]]:
    """The most recent verdict of each rated experiment, by experiment id."""
    out: dict[int, dict[str, Any]] = {}
    for v in list_verdicts(store):
        out[v["experiment_id"]] = v  # ordered oldest first, so the last one wins
    return out
