"""Stored verdicts: every rating the validator gave, with its breakdown and critique.

The table lives on the shared ``metadata`` so ``Store`` creates it with the others once
``airlab.store.store`` imports this module; until then the functions here create it on first
use (``checkfirst``), so they work against any store.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    insert,
    select,
)

from airlab.store.tables import experiments, metadata

if TYPE_CHECKING:
    from airlab.store.store import Store

verdicts = Table(
    "verdicts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("experiment_id", Integer, ForeignKey("experiments.id", ondelete="CASCADE"),
           nullable=False),
    Column("created_at", Float, nullable=False),
    Column("rating", Integer, nullable=False),
    Column("band", String(30), nullable=False),
    Column("best_arm", String(100)),
    Column("breakdown", JSON, nullable=False),  # component -> {"points": p, "max": m, ...}
    Column("critique", JSON, nullable=False),  # list of lines
    Column("rubric_version", String(20), nullable=False),
)
Index("ix_verdicts_experiment", verdicts.c.experiment_id)


def _ensure(store: Store) -> None:
    verdicts.create(store.engine, checkfirst=True)


def save_verdict(store: Store, experiment_id: int, *, rating: int, band: str,
                 breakdown: dict[str, Any], critique: list[str], rubric_version: str,
                 best_arm: str | None = None) -> int:
    """Append one verdict (older ones are kept: the history shows how an experiment improved)."""
    _ensure(store)
    with store.engine.begin() as c:
        res = c.execute(insert(verdicts).values(
            experiment_id=experiment_id, created_at=time.time(), rating=int(rating), band=band,
            best_arm=best_arm, breakdown=breakdown, critique=list(critique),
            rubric_version=rubric_version))
        key = res.inserted_primary_key
        assert key is not None
        return int(key[0])


def list_verdicts(store: Store, experiment_id: int | None = None) -> list[dict[str, Any]]:
    """All verdicts (oldest first), each with its experiment's name."""
    _ensure(store)
    q = (select(verdicts, experiments.c.name.label("experiment"))
         .join(experiments, experiments.c.id == verdicts.c.experiment_id)
         .order_by(verdicts.c.created_at, verdicts.c.id))
    if experiment_id is not None:
        q = q.where(verdicts.c.experiment_id == experiment_id)
    with store.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(q)]


def latest_verdicts(store: Store) -> dict[int, dict[str, Any]]:
    """The most recent verdict of each rated experiment, by experiment id."""
    out: dict[int, dict[str, Any]] = {}
    for v in list_verdicts(store):
        out[v["experiment_id"]] = v  # ordered oldest first, so the last one wins
    return out
