"""Scored predictions: one row per experiment that tested a knowledge-base idea.

When the Validator has rated an experiment whose spec names an ``idea``, the idea's
falsifiable prediction is scored against what was observed (``airlab.agents.status``) and
kept here, so the team's record of forecasts (hits, misses and by how far) can be read back
over time. A later scoring of the same experiment (more seeds, a re-analysis) replaces the
earlier row.

The table is defined on the shared ``tables.metadata`` like ``state.py``'s, so a ``Store``
opened writable after this module was imported creates it with the others; a store opened
before that gets it on the first save. Like ``verdicts.py``, this module imports no ``Store``
at run time.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Column, Float, Integer, String, Table, delete, insert, select

from airlab.store.tables import metadata

if TYPE_CHECKING:
    from airlab.store.store import Store

predictions = Table(
    "predictions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("experiment", String(200), nullable=False, unique=True),
    Column("idea", String(64), nullable=False, index=True),
    Column("prediction", JSON, nullable=False),  # Prediction.model_dump()
    Column("observed", Float),  # None: nothing usable observed
    Column("score", JSON),  # PredictionScore.to_dict() (+ context), None without observation
    Column("decided", String(20), nullable=False),  # the idea's status from this experiment
    Column("created_at", Float, nullable=False),
)


def _ensure_table(store: Store) -> None:
    """Create the table in a store opened before this module was imported."""
    if store.has_table("predictions"):
        return
    with store.writing() as c:
        predictions.create(c, checkfirst=True)
    # The store caches which tables exist (has_table): refresh it for later reads.
    store._columns = store._present_columns()


def _json_safe(v: Any) -> Any:
    """NaN and infinities are not JSON: store them as None."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    return v


def save_prediction(store: Store, *, experiment: str, idea: str, prediction: dict[str, Any],
                    observed: float | None, score: dict[str, Any] | None, decided: str,
                    created_at: float) -> None:
    """Store (replace, by experiment) the scored prediction of one experiment."""
    _ensure_table(store)
    obs = None if observed is None or not math.isfinite(float(observed)) else float(observed)
    with store.writing() as c:
        c.execute(delete(predictions).where(predictions.c.experiment == experiment))
        c.execute(insert(predictions).values(
            experiment=experiment, idea=idea, prediction=_json_safe(dict(prediction)),
            observed=obs, score=None if score is None else _json_safe(dict(score)),
            decided=decided, created_at=float(created_at)))


def load_predictions(store: Store, idea: str | None = None) -> list[dict[str, Any]]:
    """Stored scored predictions (all, or one idea's), oldest first."""
    if not store.has_table("predictions"):  # nothing scored yet, or an older database
        return []
    q = select(predictions).order_by(predictions.c.created_at, predictions.c.id)
    if idea is not None:
        q = q.where(predictions.c.idea == idea)
    with store.reading() as c:
        return [dict(r._mapping) for r in c.execute(q)]
