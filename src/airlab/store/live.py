"""Live data: each run's evaluation points and a progress heartbeat, stored while it trains.

The finished result (``curves``, ``metrics``) is written once, at the end, by ``Store.finish``.
These two tables fill while a run is still going, so a dashboard can watch it and a run killed
half-way keeps the points it had:

* ``live_points``: one row per evaluation point, keyed by (run, attempt, index). A run that is
  claimed again (after a killed worker) writes its new points under its new attempt number;
  the old attempt's points stay, as history.
* ``live_progress``: one row per run, the latest heartbeat: step, units seen (tokens or
  samples), progress of the budget, training loss, learning rate, units per second of training
  time and the estimated wall-clock seconds left.

:class:`LiveWriter` is what the claim loop (``airlab.experiment.execute_claimed``) feeds with
every event an executor reports; it writes nothing on the caller's thread. Events are buffered
and written by one background thread in one transaction every ``flush_s`` (default 1 s), with
heartbeats coalesced to the latest per run, so a run costs about one small write a second
whatever the executor. A write the database refuses is logged and retried with the next batch
(a live view is best effort: the run's result is stored by ``finish`` either way).

The events (the contract every executor follows, see ``airlab.executors.base``) are the dicts
the trainer emits: ``{"type": "eval", ...one curve point...}``, ``{"type": "step", ...}``,
``{"type": "done", ...}``, and the local pool's ``{"type": "started", "pid": N}``.

Like ``team.py``, this module imports no ``Store`` at run time; the tables join
``tables.metadata`` so that ``Store`` creates them (or adds them to an older database).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Column,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from airlab.errors import AirlabError
from airlab.store.store import _curve_row  # one mapping of a point to columns
from airlab.store.tables import metadata

if TYPE_CHECKING:
    from airlab.store.store import Store

log = logging.getLogger(__name__)

FLUSH_S = 1.0  # how often buffered events are written (one transaction per flush)
MAX_BUFFERED_POINTS = 100_000  # a database refusing writes for long: drop the oldest beyond

UNITS = ("tokens", "samples")  # the key a point or heartbeat counts its budget units under

live_points = Table(
    "live_points", metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("step", Integer, nullable=False),
    Column("units", Float, nullable=False),  # tokens or samples seen
    Column("train_seconds", Float, nullable=False),
    Column("flops", Float, nullable=False),
    Column("val_loss", Float),
    Column("val_acc", Float),
    Column("train_loss", Float),
    Column("extra", JSON),  # the point's other values (val_bpc, ...)
    Column("at", Float, nullable=False),  # wall clock (epoch seconds) when it was received
)

live_progress = Table(
    "live_progress", metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("attempt", Integer, nullable=False),
    Column("phase", String(20), nullable=False),  # starting | training | done
    Column("step", Integer),
    Column("unit", String(20)),  # tokens | samples
    Column("units", Float),
    Column("progress", Float),  # 0..1 of the budget
    Column("loss", Float),  # training loss at the last loss sync
    Column("lr", Float),
    Column("train_seconds", Float),
    Column("units_per_s", Float),  # units / train_seconds (evaluation excluded)
    Column("eta_s", Float),  # wall seconds left, from the wall time so far and the progress
    Column("started_at", Float),  # wall clock of the attempt's first event
    Column("updated_at", Float, nullable=False),
)


EVENT_TYPES = ("eval", "step", "done", "started")
MAX_EVENT_KEYS = 32
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def clean_event(ev: Any) -> dict[str, Any] | None:
    """The event as the live tables take it, or None: a known ``type`` and at most
    ``MAX_EVENT_KEYS`` lower-case keys whose values are numbers (anything else is dropped).
    The executors forward what a run reports, and a run may execute generated code, so
    nothing else (no text, no nesting, no unbounded size) reaches the store this way."""
    if not isinstance(ev, Mapping) or ev.get("type") not in EVENT_TYPES:
        return None
    out: dict[str, Any] = {"type": ev["type"]}
    for k, v in ev.items():
        if len(out) > MAX_EVENT_KEYS:
            break
        if isinstance(k, str) and _KEY.match(k) and isinstance(v, int | float) \
                and not isinstance(v, bool):
            out[k] = v
    return out


HEARTBEAT_FIELDS = ("step", "unit", "units", "progress", "loss", "lr", "train_seconds",
                    "units_per_s", "eta_s")


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _units(ev: Mapping[str, Any]) -> tuple[str | None, float | None]:
    for u in UNITS:
        if u in ev:
            return u, _num(ev[u])
    return None, None


def point_row(run_id: int, attempt: int, idx: int, ev: Mapping[str, Any], at: float
              ) -> dict[str, Any]:
    """An "eval" event as a ``live_points`` row (the same columns as a stored curve point)."""
    p = {k: v for k, v in ev.items() if k != "type"}
    return {**_curve_row(run_id, idx, p), "attempt": attempt, "at": at}


@dataclass
class LiveTotals:
    """What the live writers of this process did (``make bench`` reports it)."""

    events: int = 0
    points: int = 0  # eval rows written
    heartbeats: int = 0  # progress rows written (after coalescing)
    flushes: int = 0  # transactions
    event_seconds: float = 0.0  # time spent in LiveWriter.event (on the executor's thread)
    flush_seconds: float = 0.0  # wall time of the writes (on the writer's thread)
    flush_cpu_seconds: float = 0.0  # CPU time of the writer's thread while writing
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_totals = LiveTotals()
_totals_lock = threading.Lock()


def live_totals() -> LiveTotals:
    """A copy of this process's counters since it started (or :func:`reset_live_totals`)."""
    with _totals_lock:
        return LiveTotals(**asdict(_totals))


def reset_live_totals() -> None:
    global _totals
    with _totals_lock:
        _totals = LiveTotals()


class LiveWriter:
    """Buffers run events and writes them to the store from one background thread.

    ``event(run_id, attempt, ev)`` may be called from any thread and only appends to a buffer.
    ``close()`` (or leaving the ``with`` block) writes what is left and stops the thread.
    """

    def __init__(self, store: Store, *, flush_s: float = FLUSH_S) -> None:
        if store.readonly:
            raise AirlabError("live data needs a writable store", "open it with Store(url)")
        self.store = store
        self.flush_s = flush_s
        self._lock = threading.Lock()
        self._points: list[dict[str, Any]] = []
        # Each run's latest heartbeat, kept across flushes (a heartbeat merges into it);
        # ``_dirty``: the runs whose heartbeat changed since the last flush.
        self._progress: dict[int, dict[str, Any]] = {}
        self._dirty: set[int] = set()
        self._next_idx: dict[tuple[int, int], int] = {}
        self._started: dict[tuple[int, int], float] = {}
        self._resets: set[tuple[int, int]] = set()  # (run, attempt) whose points start over
        self._stop = threading.Event()
        self._warned = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="airlab-live")
        self._thread.start()

    def __enter__(self) -> LiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the caller's side: cheap, never touches the database ---------------------------------

    def event(self, run_id: int, attempt: int, ev: Mapping[str, Any]) -> None:
        """Take one event of run ``run_id`` (its claim's ``attempt``), as :func:`clean_event`
        leaves it; unknown types are ignored. Never raises for a malformed event: the live
        view is best effort."""
        t0 = time.perf_counter()
        clean = clean_event(ev)
        kind = None if clean is None else clean["type"]
        ev = clean or {}
        now = time.time()
        try:
            with self._lock:
                key = (run_id, attempt)
                started = self._started.setdefault(key, now)
                if kind == "eval":
                    idx = self._next_idx.get(key, 0)
                    if idx and not ev.get("step"):
                        # Step 0 again: the executor started the run over inside one claim
                        # (Ray retries a task whose worker died). Its curve starts afresh.
                        self._resets.add(key)
                        self._points = [p for p in self._points
                                        if (p["run_id"], p["attempt"]) != key]
                        idx = 0
                    self._next_idx[key] = idx + 1
                    self._points.append(point_row(run_id, attempt, idx, ev, now))
                    if len(self._points) > MAX_BUFFERED_POINTS:
                        del self._points[: len(self._points) - MAX_BUFFERED_POINTS]
                    self._beat(run_id, attempt, ev, now, started, phase=None)
                elif kind == "step":
                    self._beat(run_id, attempt, ev, now, started, phase="training")
                elif kind == "done":
                    self._beat(run_id, attempt, ev, now, started, phase="done")
                elif kind == "started":
                    self._beat(run_id, attempt, ev, now, started, phase="starting")
        except (TypeError, ValueError, KeyError) as e:
            log.debug("live event of run %s ignored: %s", run_id, e)
        with _totals_lock:
            _totals.events += 1
            _totals.event_seconds += time.perf_counter() - t0

    def _beat(self, run_id: int, attempt: int, ev: Mapping[str, Any], now: float,
              started: float, phase: str | None) -> None:
        """Merge an event into the run's pending heartbeat (the latest values win)."""
        old = self._progress.get(run_id)
        row: dict[str, Any] = dict(old) if old is not None and old["attempt"] == attempt else {
            **{c: None for c in HEARTBEAT_FIELDS},  # a new attempt: nothing of the last one
            "attempt": attempt, "phase": "starting", "started_at": started}
        if phase is not None and row.get("phase") != "done":
            row["phase"] = phase
        unit, units = _units(ev)
        if unit is not None:
            row["unit"], row["units"] = unit, units
        for k in ("step", "lr", "train_seconds", "progress"):
            if k in ev:
                row[k] = _num(ev[k])
        if "loss" in ev:
            row["loss"] = _num(ev["loss"])
        elif ev.get("type") == "eval" and ev.get("train_loss") is not None:
            row["loss"] = _num(ev["train_loss"])
        if row.get("step") is not None:
            row["step"] = int(row["step"])
        ts, u = row.get("train_seconds"), row.get("units")
        row["units_per_s"] = u / ts if u is not None and ts else None
        p = row.get("progress")
        if row["phase"] == "done":
            row["eta_s"] = 0.0
        elif p is not None and p > 0:
            row["eta_s"] = (now - started) * (1 - min(p, 1.0)) / p
        row["updated_at"] = now
        self._progress[run_id] = row
        self._dirty.add(run_id)

    # -- the writer's side --------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def flush(self) -> None:
        """Write what is buffered now, in one transaction (called by the thread; safe to call
        from anywhere)."""
        with self._lock:
            points, self._points = self._points, []
            progress = {r: dict(self._progress[r]) for r in self._dirty}
            self._dirty = set()
            resets, self._resets = self._resets, set()
        if not points and not progress and not resets:
            return
        t0, c0 = time.perf_counter(), time.thread_time()
        ok = False
        try:
            with self.store.writing() as c:
                for run_id, attempt in resets:
                    c.execute(delete(live_points).where(live_points.c.run_id == run_id,
                                                        live_points.c.attempt == attempt))
                if points:
                    c.execute(insert(live_points), points)
                for run_id, row in progress.items():
                    res = c.execute(update(live_progress)
                                    .where(live_progress.c.run_id == run_id).values(**row))
                    if res.rowcount == 0:
                        c.execute(insert(live_progress).values(run_id=run_id, **row))
            ok = True
        except IntegrityError as e:  # a point already stored, or its run is gone: drop them
            self._warn(f"live data dropped: {str(e).splitlines()[0]}")
        except (AirlabError, SQLAlchemyError) as e:  # refused for now: keep them for next time
            self._warn(f"live data not written yet: {str(e).splitlines()[0]}")
            with self._lock:
                self._resets |= resets
                self._points[:0] = points[-MAX_BUFFERED_POINTS:]
                self._dirty |= set(progress)  # the latest heartbeat goes next time
        with _totals_lock:
            _totals.flushes += 1
            _totals.flush_seconds += time.perf_counter() - t0
            _totals.flush_cpu_seconds += time.thread_time() - c0
            if ok:
                _totals.points += len(points)
                _totals.heartbeats += len(progress)
            else:
                _totals.errors += 1

    def _warn(self, msg: str) -> None:
        if not self._warned:
            log.warning(msg)
            self._warned = True
        else:
            log.debug(msg)

    def close(self) -> None:
        """Write what is left and stop the thread; safe to call twice."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=60)
        self.flush()


# --------------------------------------------------------------------------- reads


def _point(r: Any) -> dict[str, Any]:
    d = {k: v for k, v in r._mapping.items()
         if k not in ("run_id", "attempt", "idx", "extra", "at")}
    d.update(r.extra or {})
    return d


def load_live_points(store: Store, run_ids: Sequence[int], *, attempt: str = "latest"
                     ) -> dict[int, list[dict[str, Any]]]:
    """Each run's live evaluation points, oldest first, of its latest attempt that wrote any
    (``attempt="all"``: every attempt's, each point with its ``attempt``). A point has the
    keys of a stored curve point: step, units, train_seconds, flops, val_loss, ..."""
    out: dict[int, list[dict[str, Any]]] = {int(i): [] for i in run_ids}
    if not run_ids or not store.has_table("live_points"):
        return out
    ids = list(out)
    q = select(live_points).where(live_points.c.run_id.in_(ids))
    if attempt == "latest":
        last = (select(live_points.c.run_id, func.max(live_points.c.attempt).label("a"))
                .where(live_points.c.run_id.in_(ids)).group_by(live_points.c.run_id)
                .subquery())
        q = q.join(last, (last.c.run_id == live_points.c.run_id)
                   & (last.c.a == live_points.c.attempt))
    q = q.order_by(live_points.c.run_id, live_points.c.attempt, live_points.c.idx)
    with store.reading() as c:
        for r in c.execute(q):
            p = _point(r)
            if attempt != "latest":
                p["attempt"] = r.attempt
            out[r.run_id].append(p)
    return out


def load_live_progress(store: Store, run_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Each run's latest heartbeat (runs without one are left out)."""
    if not run_ids or not store.has_table("live_progress"):
        return {}
    with store.reading() as c:
        rows = c.execute(select(live_progress)
                         .where(live_progress.c.run_id.in_([int(i) for i in run_ids])))
        return {r.run_id: dict(r._mapping) for r in rows}


__all__ = ["FLUSH_S", "LiveTotals", "clean_event", "LiveWriter", "live_points", "live_progress",
           "live_totals", "load_live_points", "load_live_progress", "point_row",
           "reset_live_totals"]
