"""The store API: every experiment, run, curve and metric. Each write is one transaction."""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

from airlab.errors import AirlabError
from airlab.store import verdicts as _verdicts  # noqa: F401  (registers the verdicts table)
from airlab.store.tables import curves, experiments, metadata, metrics, runs

CURVE_COLUMNS = {"step", "train_seconds", "flops", "val_loss", "val_acc", "train_loss"}


def _clean(v: Any) -> float | None:
    """NaN and inf are stored as NULL (portable across backends); the run's state says why."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        try:
            if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
                Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(
                    parents=True, exist_ok=True)
            self.engine: Engine = create_engine(url, future=True)
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            metadata.create_all(self.engine)
        except (ArgumentError, NoSuchModuleError) as e:
            raise AirlabError(f"bad database URL '{_safe(url)}': {e}",
                              "use a SQLAlchemy URL such as sqlite:///lab.db or "
                              "postgresql+psycopg://user@host/db") from None
        except (OperationalError, OSError) as e:
            msg = str(getattr(e, "orig", e)).splitlines()[0]
            raise AirlabError(f"cannot open database '{_safe(url)}': {msg}",
                              "check --db / AIRLAB_DB and that the server is reachable") from None
        except ModuleNotFoundError as e:
            raise AirlabError(f"database driver missing for '{_safe(url)}': {e.name}",
                              "install it, e.g. pip install 'airlab[postgres]'") from None

    # -- experiments --------------------------------------------------------------------------

    def upsert_experiment(self, name: str, spec: dict[str, Any], *, kind: str = "experiment",
                          area: str = "general", workload: str = "charlm",
                          hypothesis: str = "") -> int:
        now = time.time()
        with self.engine.begin() as c:
            row = c.execute(select(experiments.c.id).where(experiments.c.name == name)).first()
            if row:
                c.execute(update(experiments).where(experiments.c.id == row.id).values(
                    spec=spec, area=area, workload=workload, hypothesis=hypothesis,
                    updated_at=now))
                return int(row.id)
            res = c.execute(insert(experiments).values(
                name=name, kind=kind, area=area, workload=workload, hypothesis=hypothesis,
                spec=spec, created_at=now, updated_at=now))
            return int(res.inserted_primary_key[0])  # type: ignore[index]

    def archive_experiment(self, name: str) -> str | None:
        """Rename an experiment out of the way (kind 'archive'), keeping all its runs."""
        with self.engine.begin() as c:
            row = c.execute(select(experiments.c.id).where(experiments.c.name == name)).first()
            if row is None:
                return None
            new = f"{name}.archived-{time.strftime('%Y%m%d-%H%M%S')}"
            c.execute(update(experiments).where(experiments.c.id == row.id).values(
                name=new, kind="archive", updated_at=time.time()))
            return new

    def experiment(self, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(experiments).where(experiments.c.name == name)).first()
        return dict(row._mapping) if row else None

    def experiments(self, kind: str | None = None) -> list[dict[str, Any]]:
        q = select(experiments).order_by(experiments.c.created_at)
        if kind:
            q = q.where(experiments.c.kind == kind)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    # -- runs ---------------------------------------------------------------------------------

    def ensure_runs(
        self, experiment_id: int, planned: Iterable[tuple[str, int, str, dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """Insert the planned (arm, seed, run_key, config) rows that are missing; return all."""
        planned = list(planned)
        with self.engine.begin() as c:
            have = {(r.arm, r.run_key) for r in c.execute(
                select(runs.c.arm, runs.c.run_key).where(runs.c.experiment_id == experiment_id))}
            new = [dict(experiment_id=experiment_id, arm=a, seed=s, run_key=k, config=cfg,
                        state="pending", attempts=0)
                   for a, s, k, cfg in planned if (a, k) not in have]
            if new:
                c.execute(insert(runs), new)
            wanted = {(a, k) for a, _, k, _ in planned}
            rows = [dict(r._mapping) for r in c.execute(
                select(runs).where(runs.c.experiment_id == experiment_id).order_by(runs.c.id))]
        return [r for r in rows if (r["arm"], r["run_key"]) in wanted]

    def recover_interrupted(self, experiment_id: int) -> int:
        """Runs left 'running' by an airlab process that is gone go back to 'pending'.

        Raises if a live process on this host still owns one (two airlabs on one experiment).
        """
        host = socket.gethostname()
        with self.engine.begin() as c:
            rows = c.execute(select(runs.c.id, runs.c.owner).where(
                runs.c.experiment_id == experiment_id, runs.c.state == "running")).all()
            stale = []
            for r in rows:
                h, _, pid = (r.owner or "").rpartition(":")
                if h == host and pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                    raise AirlabError(f"experiment is being run by process {pid} on this host",
                                      "wait for it to finish or stop it first")
                stale.append(r.id)
            if stale:
                c.execute(update(runs).where(runs.c.id.in_(stale)).values(
                    state="pending", owner=None,
                    reason="interrupted: the airlab process running it stopped"))
        return len(stale)

    def claim(self, run_id: int) -> None:
        with self.engine.begin() as c:
            c.execute(update(runs).where(runs.c.id == run_id).values(
                state="running", owner=_owner(), started_at=time.time(),
                attempts=runs.c.attempts + 1))

    def finish(self, run_id: int, state: str, reason: str | None, metric_values: dict[str, Any],
               curve: Sequence[dict[str, Any]], info: dict[str, Any],
               wall_seconds: float | None = None) -> None:
        """Write a run's outcome, curve and metrics atomically (all or nothing)."""
        with self.engine.begin() as c:
            c.execute(delete(curves).where(curves.c.run_id == run_id))
            c.execute(delete(metrics).where(metrics.c.run_id == run_id))
            if curve:
                c.execute(insert(curves), [_curve_row(run_id, i, p) for i, p in enumerate(curve)])
            if metric_values:
                c.execute(insert(metrics), [{"run_id": run_id, "name": k, "value": _clean(v)}
                                            for k, v in metric_values.items()])
            c.execute(update(runs).where(runs.c.id == run_id).values(
                state=state, reason=reason, finished_at=time.time(), owner=None,
                wall_seconds=wall_seconds, info=info))

    def runs(self, experiment_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(
                select(runs).where(runs.c.experiment_id == experiment_id).order_by(runs.c.id))]

    def metrics(self, run_ids: Sequence[int]) -> dict[int, dict[str, float | None]]:
        out: dict[int, dict[str, float | None]] = {i: {} for i in run_ids}
        if not run_ids:
            return out
        with self.engine.connect() as c:
            for r in c.execute(select(metrics).where(metrics.c.run_id.in_(list(run_ids)))):
                out[r.run_id][r.name] = r.value
        return out

    def curve(self, run_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            rows = c.execute(select(curves).where(curves.c.run_id == run_id)
                             .order_by(curves.c.idx)).all()
        out = []
        for r in rows:
            d = {k: v for k, v in r._mapping.items() if k not in ("run_id", "idx", "extra")}
            d.update(r.extra or {})
            out.append(d)
        return out

    def counts(self) -> dict[str, int]:
        """Runs by state, over the whole store."""
        with self.engine.connect() as c:
            return {r.state: int(r.n) for r in c.execute(
                select(runs.c.state, func.count().label("n")).group_by(runs.c.state))}


def _curve_row(run_id: int, i: int, p: dict[str, Any]) -> dict[str, Any]:
    units = p.get("tokens", p.get("samples", 0))
    extra = {k: v for k, v in p.items() if k not in CURVE_COLUMNS | {"tokens", "samples"}}
    return {"run_id": run_id, "idx": i, "step": int(p.get("step", 0)), "units": float(units),
            "train_seconds": float(p.get("train_seconds", 0.0)), "flops": float(p.get("flops", 0)),
            "val_loss": _clean(p.get("val_loss")), "val_acc": _clean(p.get("val_acc")),
            "train_loss": _clean(p.get("train_loss")), "extra": extra or None}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited; treat it as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def _safe(url: str) -> str:
    """Hide a password in a URL before printing it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")  # readers (airlab status) never block the writer
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


__all__ = ["Store", "SQLAlchemyError"]
