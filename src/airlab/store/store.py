"""The store API: every experiment, run, curve and metric. Each write is one transaction.

Concurrency: any number of processes (or hosts, on a shared PostgreSQL) may work on one store.
A run is taken with ``claim_next`` (an atomic compare-and-set that records an owner and a lease),
kept with ``heartbeat``, and ended with ``finish`` (stored only while the owner still holds it)
or ``release``. A claim whose owner stopped heartbeating expires and anyone may take it over.

Faults: a damaged database file is one ``AirlabError`` naming it and a remedy; a result the
database refuses (disk full, read-only, locked too long) is appended to a journal beside the
database and stored on the next writable open; ``readonly=True`` writes nothing to the database.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    and_,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateColumn

from airlab.errors import AirlabError
from airlab.store.journal import Journal
from airlab.store.tables import curves, experiments, metadata, metrics, runs

log = logging.getLogger(__name__)

CURVE_COLUMNS = {"step", "train_seconds", "flops", "val_loss", "val_acc", "train_loss"}
CLAIMABLE_STATES = ("pending", "failed")
# Run states. 'incomplete': cut by a time box before its budget was spent (curve and metrics
# kept); like a failed run with infra set, the next claim loop runs it again from scratch and
# its result replaces this one.
RUN_STATES = ("pending", "running", "finished", "failed", "incomplete")
DEFAULT_RETRY_INFRA_LIMIT = 3  # attempts in all, for runs that failed for infrastructure reasons
SLOW_WRITE_S = float(os.environ.get("AIRLAB_SLOW_WRITE_S", "5"))  # logged when held longer
BUSY_TIMEOUT_MS = 30_000  # how long a write waits for another writer before it is a write error


class StoreError(AirlabError):
    """The database refused an operation for a reason outside airlab (damaged file, disk full,
    read-only, locked too long, server gone). ``finish`` journals the result on this."""


class StoreCorruptError(StoreError):
    """The database file is damaged or not a SQLite database."""


def _clean(v: Any) -> float | None:
    """NaN and inf are stored as NULL (portable across backends); the run's state says why."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def owner_id(tag: str = "") -> str:
    """This process as a claim owner: ``host:pid`` (``host:pid/tag`` to tell claimers of one
    process apart). ``recover_interrupted`` reads the pid back to see whether the owner lives."""
    base = f"{socket.gethostname()}:{os.getpid()}"
    return f"{base}/{tag}" if tag else base


_owner = owner_id  # the name the pipeline used before claims had leases


class Store:
    """Experiments, runs, curves, metrics and verdicts on any SQLAlchemy URL.

    ``readonly=True`` (reading commands: show, status, export, verdicts) creates no table, sets
    no journal mode and writes nothing to the database, so it works on a read-only lab folder
    (opened with ``mode=ro``, or ``immutable=1`` where SQLite cannot keep its -shm file); a SQLite
    file that does not exist yet reads as an empty lab. ``journal`` is where results go that the
    database refused (default: ``<database>.journal.jsonl`` beside a SQLite file, then the temp
    folder).
    """

    def __init__(self, url: str, *, readonly: bool = False,
                 journal: str | os.PathLike[str] | None = None) -> None:
        self.url = url
        self.readonly = readonly
        self.path: Path | None = None  # the SQLite file, if the store is one
        self.missing = False  # a read-only open of a SQLite file that does not exist yet
        self._ident: dict[int, dict[str, Any]] = {}  # run id -> what a journal entry needs
        try:
            self.engine: Engine = self._make_engine(url)
            event.listen(self.engine, "handle_error", self._on_error)
            if not readonly:
                self._create_and_migrate()
            self._columns = self._present_columns()
        except AirlabError:
            raise
        except (ArgumentError, NoSuchModuleError) as e:
            raise AirlabError(f"bad database URL '{_safe(url)}': {_line(e)}",
                              "use a SQLAlchemy URL such as sqlite:///lab.db or "
                              "postgresql+psycopg://user@host/db") from None
        except ModuleNotFoundError as e:
            raise AirlabError(f"database driver missing for '{_safe(url)}': {e.name}",
                              "install it, e.g. pip install 'airlab[postgres]'") from None
        except (SQLAlchemyError, sqlite3.Error, OSError) as e:
            err = self._translate(getattr(e, "orig", None) or e)
            if err is not None:
                raise err from None
            raise AirlabError(f"cannot open database '{_safe(url)}': {_line(e)}",
                              "check --db / AIRLAB_DB and that the server is reachable") from None
        self.journal = Journal(self._journal_paths(journal))
        if not readonly:
            self.replay_journal()

    # -- connections --------------------------------------------------------------------------

    def _make_engine(self, url: str) -> Engine:
        u = make_url(url)
        if u.get_backend_name() != "sqlite":
            opts = {"postgresql_readonly": True} if self.readonly and \
                u.get_backend_name() == "postgresql" else {}
            return create_engine(url, future=True, execution_options=opts)
        db = u.database or ""
        if db and db != ":memory:" and not db.startswith("file:"):
            self.path = Path(db).expanduser().absolute()
        if self.readonly and self.path is not None:
            if not self.path.exists():
                # Nothing stored yet: an empty in-memory lab reads the same and writes nothing.
                self.missing = True
                engine = create_engine("sqlite://", future=True)
                metadata.create_all(engine)
                return engine
            return self._readonly_sqlite(self.path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, future=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine

    def _readonly_sqlite(self, path: Path) -> Engine:
        """``mode=ro`` when the folder lets SQLite keep its shared-memory file; otherwise
        ``immutable=1`` (a read-only folder where no writer can be running anyway)."""
        for extra in ("", "&immutable=1"):
            uri = f"file:{quote(str(path))}?mode=ro{extra}"

            def connect(uri: str = uri) -> sqlite3.Connection:
                c = sqlite3.connect(uri, uri=True, check_same_thread=False,
                                    isolation_level=None)
                c.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                return c

            try:
                probe = connect()
                try:
                    probe.execute("SELECT count(*) FROM sqlite_master").fetchall()
                finally:
                    probe.close()
            except sqlite3.OperationalError:
                if extra:
                    raise
                continue  # e.g. a WAL database whose -shm file cannot be created here
            engine = create_engine("sqlite://", creator=connect, poolclass=NullPool,
                                   future=True)
            event.listen(engine, "begin", _sqlite_begin)
            return engine
        raise AssertionError("unreachable")

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite: reads inside it are not stale)."""
        if self.readonly:
            raise AirlabError(f"the store '{_safe(self.url)}' was opened read-only",
                              "open it writable (Store(url)) to change it")
        with self.engine.connect() as c:
            c.execution_options(airlab_write=True)
            with c.begin():  # BEGIN IMMEDIATE: from here on, the write lock is ours
                t0 = time.monotonic()
                yield c
            held = time.monotonic() - t0
            if held > SLOW_WRITE_S:  # other processes wait this long for the write lock
                caller = sys._getframe(2).f_code.co_name
                log.warning("a write transaction (%s) held the database for %.1f s", caller,
                            held)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """One read transaction (a consistent snapshot)."""
        with self.engine.connect() as c, c.begin():
            yield c

    def has_table(self, name: str) -> bool:
        return name in self._columns

    def _present_columns(self) -> dict[str, set[str]]:
        with self.engine.connect() as c:
            insp = inspect(c)
            return {t: {col["name"] for col in insp.get_columns(t)}
                    for t in insp.get_table_names()}

    def _create_and_migrate(self) -> None:
        """Create missing tables and add columns that newer versions need (older lab databases
        stay readable by this version and keep every row)."""
        have = self._present_columns()
        if all(t.name in have and {c.name for c in t.columns} <= have[t.name]
               for t in metadata.sorted_tables) and not self._narrow_seed():
            return
        with self.writing() as c:
            metadata.create_all(c)
            have = {t: {col["name"] for col in inspect(c).get_columns(t)}
                    for t in inspect(c).get_table_names()}
            for t in metadata.sorted_tables:
                for col in t.columns:
                    if col.name in have.get(t.name, set()):
                        continue
                    ddl = CreateColumn(col).compile(dialect=self.engine.dialect)
                    guard = "IF NOT EXISTS " if self.engine.dialect.name == "postgresql" else ""
                    c.execute(text(f"ALTER TABLE {t.name} ADD COLUMN {guard}{ddl}"))
            if self._narrow_seed(c):  # written by a version whose seed was 32-bit
                c.execute(text("ALTER TABLE runs ALTER COLUMN seed TYPE BIGINT"))

    def _narrow_seed(self, conn: Any = None) -> bool:
        """Whether runs.seed is a 32-bit column (PostgreSQL only: SQLite integers are 64-bit)."""
        if self.engine.dialect.name != "postgresql":
            return False
        insp = inspect(conn if conn is not None else self.engine)
        if "runs" not in insp.get_table_names():
            return False
        col = next((c for c in insp.get_columns("runs") if c["name"] == "seed"), None)
        return col is not None and str(col["type"]).upper() == "INTEGER"

    # -- errors -------------------------------------------------------------------------------

    def _on_error(self, ctx: Any) -> None:
        """Turn a driver error the user must act on into one line (raised in its place)."""
        err = self._translate(ctx.original_exception)
        if err is not None:
            raise err

    def _translate(self, orig: BaseException) -> StoreError | None:
        where = f"'{self.path}'" if self.path else f"'{_safe(self.url)}'"
        msg = _line(orig)
        if isinstance(orig, sqlite3.Error):
            name = getattr(orig, "sqlite_errorname", "") or ""
            if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or \
                    "malformed" in msg or "not a database" in msg:
                mv = f"mv '{self.path}' '{self.path}.corrupt'" if self.path else "move it aside"
                return StoreCorruptError(
                    f"database file {where} is damaged ({msg})",
                    f"move it aside ({mv}) and run again: a new database is made, results that "
                    f"could not be stored wait in the journal and are re-imported")
            if name.startswith("SQLITE_FULL") or "disk is full" in msg:
                return StoreError(f"database {where} cannot grow: {msg}",
                                  "free disk space (or raise the file size limit) and run again")
            if name.startswith("SQLITE_READONLY") or "readonly" in msg:
                return StoreError(f"database {where} is read-only: {msg}",
                                  "reading commands work on a read-only lab; to run, use a "
                                  "writable --home or --db")
            if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in msg:
                return StoreError(f"database {where} stayed locked over "
                                  f"{BUSY_TIMEOUT_MS // 1000} s: {msg}",
                                  "another process holds it; try again when it is done")
            if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")) or "I/O" in msg:
                return StoreError(f"database {where}: {msg}",
                                  "check free disk space, the file size limit and the "
                                  "folder's permissions")
            return None
        if isinstance(orig, OSError):
            return StoreError(f"database {where}: {msg}", "check the disk and permissions")
        # Other drivers (PostgreSQL): a lost or refusing server is an OperationalError.
        kinds = {k.__name__ for k in type(orig).__mro__}
        if not kinds & {"OperationalError", "ReadOnlySqlTransaction"}:
            return None
        if not self._opening_done():
            return None  # at open: the generic 'cannot open database' message says it best
        if "DiskFull" in kinds:
            return StoreError(f"database {where} is full: {msg}",
                              "free space on the database server and run again")
        if "ReadOnlySqlTransaction" in kinds:
            return StoreError(f"database {where} is read-only: {msg}",
                              "reading commands work on it; to run, use a writable server")
        return StoreError(f"database {where}: {msg}", "check that the server is reachable")

    def _opening_done(self) -> bool:
        return hasattr(self, "_columns")

    # -- experiments --------------------------------------------------------------------------

    def upsert_experiment(self, name: str, spec: dict[str, Any], *, kind: str = "experiment",
                          area: str = "general", workload: str = "charlm",
                          hypothesis: str = "") -> int:
        now = time.time()
        for attempt in range(2):  # PostgreSQL: a concurrent insert of the same name wins once
            try:
                with self.writing() as c:
                    row = c.execute(select(experiments.c.id)
                                    .where(experiments.c.name == name)).first()
                    if row:
                        c.execute(update(experiments).where(experiments.c.id == row.id).values(
                            spec=spec, area=area, workload=workload, hypothesis=hypothesis,
                            updated_at=now))
                        return int(row.id)
                    res = c.execute(insert(experiments).values(
                        name=name, kind=kind, area=area, workload=workload,
                        hypothesis=hypothesis, spec=spec, created_at=now, updated_at=now))
                    return int(res.inserted_primary_key[0])  # type: ignore[index]
            except IntegrityError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def archive_experiment(self, name: str) -> str | None:
        """Rename an experiment out of the way (kind 'archive'), keeping all its runs."""
        with self.writing() as c:
            row = c.execute(select(experiments.c.id).where(experiments.c.name == name)).first()
            if row is None:
                return None
            new = f"{name}.archived-{time.strftime('%Y%m%d-%H%M%S')}"
            c.execute(update(experiments).where(experiments.c.id == row.id).values(
                name=new, kind="archive", updated_at=time.time()))
            return new

    def experiment(self, name: str) -> dict[str, Any] | None:
        with self.reading() as c:
            row = c.execute(select(experiments).where(experiments.c.name == name)).first()
        return dict(row._mapping) if row else None

    def experiments(self, kind: str | None = None) -> list[dict[str, Any]]:
        q = select(experiments).order_by(experiments.c.created_at)
        if kind:
            q = q.where(experiments.c.kind == kind)
        with self.reading() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    # -- runs ---------------------------------------------------------------------------------

    def ensure_runs(
        self, experiment_id: int, planned: Iterable[tuple[str, int, str, dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """Insert the planned (arm, seed, run_key, config) rows that are missing; return all."""
        planned = list(planned)
        for attempt in range(2):  # PostgreSQL: another process may insert the same rows first
            try:
                with self.writing() as c:
                    have = {(r.arm, r.run_key) for r in c.execute(
                        select(runs.c.arm, runs.c.run_key)
                        .where(runs.c.experiment_id == experiment_id))}
                    new = [dict(experiment_id=experiment_id, arm=a, seed=s, run_key=k,
                                config=cfg, state="pending", attempts=0)
                           for a, s, k, cfg in planned if (a, k) not in have]
                    if new:
                        c.execute(insert(runs), new)
                break
            except IntegrityError:
                if attempt:
                    raise
        if self.journal.pending():
            self.replay_journal()  # results kept while this experiment's rows were missing
        wanted = {(a, k) for a, _, k, _ in planned}
        return [r for r in self.runs(experiment_id) if (r["arm"], r["run_key"]) in wanted]

    def recover_interrupted(self, experiment_id: int) -> int:
        """Runs left 'running' by an airlab process that is gone go back to 'pending'.

        A claim of a live process keeps its run (with a lease, it is one of several processes
        sharing the work; a claim on another host is left to its lease). A claim without a lease
        (the single-process pipeline) by a live process on this host raises: two airlabs would
        run the same runs.
        """
        host = socket.gethostname()
        with self.writing() as c:
            rows = c.execute(select(runs.c.id, runs.c.owner, runs.c.lease_until).where(
                runs.c.experiment_id == experiment_id, runs.c.state == "running")).all()
            stale = []
            for r in rows:
                h, pid = _owner_host_pid(r.owner)
                mine = h == host and pid == os.getpid()
                live_here = h == host and pid is not None and not mine and _alive(pid)
                if r.lease_until is not None and (live_here or (h != host and h)):
                    continue  # a live claimer, here or elsewhere: its lease decides
                if live_here:
                    raise AirlabError(f"experiment is being run by process {pid} on this host",
                                      "wait for it to finish or stop it first")
                stale.append(r.id)
            if stale:
                c.execute(update(runs).where(runs.c.id.in_(stale)).values(
                    state="pending", owner=None, lease_until=None,
                    reason="interrupted: the airlab process running it stopped"))
        return len(stale)

    def claim(self, run_id: int) -> None:
        """Mark one run running for this process, without a lease (the single-process path)."""
        with self.writing() as c:
            c.execute(update(runs).where(runs.c.id == run_id).values(
                state="running", owner=owner_id(), started_at=time.time(),
                attempts=runs.c.attempts + 1))

    def claim_next(self, experiment_id: int, owner: str, lease_s: float, *,
                   states: Sequence[str] = ("pending",),
                   retry_infra_limit: int = DEFAULT_RETRY_INFRA_LIMIT) -> dict[str, Any] | None:
        """Atomically take one claimable run of an experiment and return its row (running, owned
        by ``owner`` until ``lease_until``, attempts + 1), or None when there is none.

        Claimable, in this order: a run in ``states`` (pending; 'failed' makes every failed run
        claimable, so prefer ``reset_failed`` once); an incomplete run (cut by a time box); a
        running run whose lease expired (its owner stopped heartbeating); a failed run with
        ``infra`` set and fewer than ``retry_infra_limit`` attempts. An expired run that
        already used ``retry_infra_limit`` attempts is marked failed (infra) instead of being
        taken again.
        """
        bad = set(states) - set(CLAIMABLE_STATES)
        if bad:
            raise ValueError(f"claim_next: states {sorted(bad)} cannot be claimed; "
                             f"choose from {CLAIMABLE_STATES}")
        if lease_s <= 0 or not math.isfinite(lease_s):
            raise ValueError(f"claim_next: lease_s must be a positive number, not {lease_s}")
        for _ in range(20):  # PostgreSQL: a row changed between our SELECT and UPDATE
            now = time.time()
            expired = and_(runs.c.state == "running", runs.c.lease_until.is_not(None),
                           runs.c.lease_until < now)
            infra_retry = and_(runs.c.state == "failed", runs.c.infra.is_(True),
                               runs.c.attempts < retry_infra_limit)
            options = [runs.c.state.in_([*states, "incomplete"]), expired]
            if retry_infra_limit > 0:
                options.append(infra_retry)
            claimable = and_(runs.c.experiment_id == experiment_id, or_(*options))
            priority = case((runs.c.state == "pending", 0), (runs.c.state == "incomplete", 1),
                            (runs.c.state == "running", 1), else_=2)
            with self.writing() as c:
                if retry_infra_limit > 0:
                    c.execute(update(runs).where(
                        runs.c.experiment_id == experiment_id, expired,
                        runs.c.attempts >= retry_infra_limit).values(
                        state="failed", infra=True, lease_until=None, finished_at=now,
                        reason=f"lost: its claimer stopped heartbeating, "
                               f"{retry_infra_limit} attempts used"))
                row = c.execute(select(runs.c.id, runs.c.state, runs.c.owner)
                                .where(claimable).order_by(priority, runs.c.id).limit(1)
                                .with_for_update(skip_locked=True)).first()
                if row is None:
                    return None
                values: dict[str, Any] = dict(
                    state="running", owner=owner, lease_until=now + lease_s, heartbeat_at=now,
                    started_at=now, finished_at=None, attempts=runs.c.attempts + 1)
                if row.state == "running":
                    values["reason"] = f"taken over: the lease of {row.owner} expired"
                res = c.execute(update(runs).where(runs.c.id == row.id, runs.c.state == row.state,
                                                   claimable).values(**values))
                if res.rowcount != 1:
                    continue  # someone else took it first: look again
                got = self._run_rows(c, runs.c.id == row.id)[0]
            return got
        # Not "nothing left": the caller would stop early. Every try lost a race (not seen).
        raise StoreError(f"could not claim a run of experiment {experiment_id}: other "
                         "claimers kept taking the same rows", "try again")

    def heartbeat(self, run_id: int, owner: str, lease_s: float) -> bool:
        """Extend ``owner``'s lease on a run. False if the run is no longer its (taken over,
        released or finished): stop working on it. A transient database error (locked for a
        long time) is logged and counts as still held: the next beat tries again."""
        now = time.time()
        try:
            with self.writing() as c:
                res = c.execute(update(runs).where(
                    runs.c.id == run_id, runs.c.owner == owner, runs.c.state == "running"
                ).values(lease_until=now + lease_s, heartbeat_at=now))
                return res.rowcount == 1
        except StoreError as e:
            if isinstance(e, StoreCorruptError):
                raise
            log.warning("heartbeat of run %s not written: %s", run_id, e)
            return True

    def release(self, run_id: int, owner: str) -> bool:
        """Give back an unfinished claimed run (Ctrl-C): pending again, for anyone to take."""
        with self.writing() as c:
            res = c.execute(update(runs).where(
                runs.c.id == run_id, runs.c.owner == owner, runs.c.state == "running"
            ).values(state="pending", owner=None, lease_until=None,
                     reason=f"released unfinished by {owner}"))
            return res.rowcount == 1

    def release_owned(self, experiment_id: int, owner: str) -> int:
        """``release`` every run of an experiment that ``owner`` still holds; return how many."""
        with self.writing() as c:
            res = c.execute(update(runs).where(
                runs.c.experiment_id == experiment_id, runs.c.owner == owner,
                runs.c.state == "running"
            ).values(state="pending", owner=None, lease_until=None,
                     reason=f"released unfinished by {owner}"))
            return int(res.rowcount)

    def reset_failed(self, experiment_id: int) -> int:
        """``--retry-failed``: make every failed run of an experiment pending again (attempts
        are kept, as history). Return how many."""
        with self.writing() as c:
            res = c.execute(update(runs).where(
                runs.c.experiment_id == experiment_id, runs.c.state == "failed"
            ).values(state="pending", owner=None, lease_until=None, infra=None,
                     reason="retry requested (--retry-failed)"))
            return int(res.rowcount)

    def finish(self, run_id: int, state: str, reason: str | None, metric_values: dict[str, Any],
               curve: Sequence[dict[str, Any]], info: dict[str, Any],
               wall_seconds: float | None = None, *, owner: str | None = None,
               infra: bool = False) -> bool:
        """Write a run's outcome, curve and metrics atomically (all or nothing).

        With ``owner``, only while that owner still holds the claim (running, not taken over);
        without, unless the run already finished. A finished result is never overwritten.
        Returns whether it was stored. If the database refuses the write, the result goes to
        the journal and a one-line AirlabError names it (the next writable open stores it).
        """
        curve_rows = [_curve_row(run_id, i, p) for i, p in enumerate(curve)]
        metric_rows = [{"run_id": run_id, "name": k, "value": _clean(v)}
                       for k, v in metric_values.items()]
        values = dict(state=state, reason=reason, finished_at=time.time(), lease_until=None,
                      wall_seconds=wall_seconds, info=info,
                      infra=bool(infra) and state != "finished")
        try:
            with self.writing() as c:
                return self._store_result(c, run_id, values, curve_rows, metric_rows, owner)
        except StoreError as e:
            entry = {"v": 1, "db": self._where_key(), "run_id": run_id, "owner": owner,
                     **self._identity(run_id), "state": state, "reason": reason,
                     "metrics": metric_values, "curve": list(curve), "info": info,
                     "wall_seconds": wall_seconds, "infra": bool(infra),
                     "finished_at": values["finished_at"]}
            try:
                path = self.journal.append(entry)
            except OSError as je:
                raise StoreError(f"result of run {run_id} could not be stored ({e.message}) nor "
                                 f"journaled ({_line(je)})", e.hint) from None
            raise StoreError(f"result of run {run_id} kept in {path}: {e.message}",
                             f"{e.hint}; it is stored on the next start") from None

    def _store_result(self, c: Connection, run_id: int, values: dict[str, Any],
                      curve_rows: list[dict[str, Any]], metric_rows: list[dict[str, Any]],
                      owner: str | None) -> bool:
        cond = [runs.c.id == run_id, runs.c.state != "finished"]
        if owner is not None:
            cond += [runs.c.owner == owner, runs.c.state == "running"]
        if c.execute(update(runs).where(*cond).values(**values)).rowcount != 1:
            return False
        c.execute(delete(curves).where(curves.c.run_id == run_id))
        c.execute(delete(metrics).where(metrics.c.run_id == run_id))
        if curve_rows:
            c.execute(insert(curves), curve_rows)
        if metric_rows:
            c.execute(insert(metrics), metric_rows)
        return True

    def _identity(self, run_id: int) -> dict[str, Any]:
        """What a journal entry needs to find its run again, even in a new database."""
        if run_id not in self._ident:
            try:
                with self.reading() as c:
                    self._run_rows(c, runs.c.id == run_id)
            except (StoreError, SQLAlchemyError):
                pass  # the journal entry falls back to the run id
        return dict(self._ident.get(run_id, {}))

    # -- the journal --------------------------------------------------------------------------

    def _journal_paths(self, journal: str | os.PathLike[str] | None) -> list[Path]:
        paths = [Path(journal).expanduser()] if journal else []
        if self.path is not None:
            paths.append(self.path.with_name(self.path.name + ".journal.jsonl"))
        digest = hashlib.sha1(self._where_key().encode()).hexdigest()[:12]
        paths.append(Path(tempfile.gettempdir()) / f"airlab-journal-{digest}.jsonl")
        return paths

    def _where_key(self) -> str:
        """The database's identity in journal entries (a SQLite file by its absolute path)."""
        return str(self.path) if self.path is not None else _safe(self.url)

    def journal_pending(self) -> int:
        """Results waiting in the journal to be stored."""
        return self.journal.pending()

    def replay_journal(self) -> int:
        """Store journaled results (by experiment name, arm and run key; a run that already
        finished is left alone). Entries whose experiment is not in this database yet are kept.
        Returns how many were taken; a database still refusing writes is logged, not raised."""
        if self.readonly or not self.journal.pending():
            return 0
        try:
            n = self.journal.replay(self._apply_entry)
        except StoreError as e:
            if isinstance(e, StoreCorruptError):
                raise
            log.warning("journal not replayed yet: %s", e)
            return 0
        if n:
            log.info("stored %d result(s) from the journal", n)
        return n

    def _apply_entry(self, e: dict[str, Any]) -> bool:
        with self.writing() as c:
            run_id = None
            if e.get("experiment") and e.get("run_key") is not None:
                exp = c.execute(select(experiments.c.id)
                                .where(experiments.c.name == e["experiment"])).first()
                if exp is None:
                    return False  # keep it until the experiment is planned here again
                where = and_(runs.c.experiment_id == exp.id, runs.c.arm == e.get("arm"),
                             runs.c.run_key == e["run_key"])
                row = c.execute(select(runs.c.id).where(where)).first()
                if row is None:
                    if e.get("config") is None:
                        return False
                    res = c.execute(insert(runs).values(
                        experiment_id=exp.id, arm=e["arm"], seed=int(e.get("seed") or 0),
                        run_key=e["run_key"], config=e["config"], state="pending",
                        attempts=int(e.get("attempts") or 1)))
                    run_id = int(res.inserted_primary_key[0])  # type: ignore[index]
                else:
                    run_id = int(row.id)
            elif isinstance(e.get("run_id"), int) and e.get("db") == self._where_key():
                run_id = e["run_id"]
                if c.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is None:
                    return True  # its run is gone from this database: nothing to attach it to
            else:
                return False
            infra = bool(e.get("infra")) and e.get("state") != "finished"
            values = dict(state=e.get("state", "failed"), reason=e.get("reason"),
                          finished_at=e.get("finished_at") or time.time(), lease_until=None,
                          wall_seconds=e.get("wall_seconds"), info=e.get("info") or {},
                          infra=infra)
            curve_rows = [_curve_row(run_id, i, p) for i, p in enumerate(e.get("curve") or [])]
            metric_rows = [{"run_id": run_id, "name": k, "value": _clean(v)}
                           for k, v in (e.get("metrics") or {}).items()]
            self._store_result(c, run_id, values, curve_rows, metric_rows, owner=None)
            return True  # stored, or the run already had a finished result

    # -- reads --------------------------------------------------------------------------------

    def _run_rows(self, c: Connection, *where: Any) -> list[dict[str, Any]]:
        """Run rows as dicts; columns an older database lacks (read-only open) read as None."""
        have = self._columns.get("runs", set()) if hasattr(self, "_columns") else None
        cols = [col for col in runs.c if have is None or col.name in have]
        q = (select(*cols, experiments.c.name.label("_experiment"))
             .join(experiments, experiments.c.id == runs.c.experiment_id)
             .where(*where).order_by(runs.c.id))
        out = []
        for r in c.execute(q):
            d: dict[str, Any] = {col.name: None for col in runs.c}
            d.update(r._mapping)
            name = d.pop("_experiment")
            self._ident[d["id"]] = {"experiment": name, "arm": d["arm"], "seed": d["seed"],
                                    "run_key": d["run_key"], "config": d["config"],
                                    "attempts": d["attempts"]}
            out.append(d)
        return out

    def run(self, run_id: int) -> dict[str, Any] | None:
        with self.reading() as c:
            rows = self._run_rows(c, runs.c.id == run_id)
        return rows[0] if rows else None

    def runs(self, experiment_id: int) -> list[dict[str, Any]]:
        with self.reading() as c:
            return self._run_rows(c, runs.c.experiment_id == experiment_id)

    def metrics(self, run_ids: Sequence[int]) -> dict[int, dict[str, float | None]]:
        out: dict[int, dict[str, float | None]] = {i: {} for i in run_ids}
        if not run_ids:
            return out
        with self.reading() as c:
            for r in c.execute(select(metrics).where(metrics.c.run_id.in_(list(run_ids)))):
                out[r.run_id][r.name] = r.value
        return out

    def curve(self, run_id: int) -> list[dict[str, Any]]:
        with self.reading() as c:
            rows = c.execute(select(curves).where(curves.c.run_id == run_id)
                             .order_by(curves.c.idx)).all()
        out = []
        for r in rows:
            d = {k: v for k, v in r._mapping.items() if k not in ("run_id", "idx", "extra")}
            d.update(r.extra or {})
            out.append(d)
        return out

    def counts(self, experiment_id: int | None = None) -> dict[str, int]:
        """Runs by state, over the whole store or one experiment."""
        q = select(runs.c.state, func.count().label("n")).group_by(runs.c.state)
        if experiment_id is not None:
            q = q.where(runs.c.experiment_id == experiment_id)
        with self.reading() as c:
            return {r.state: int(r.n) for r in c.execute(q)}

    def close(self) -> None:
        """Close pooled connections (a SQLite file can then be moved or checkpointed)."""
        self.engine.dispose()


def _curve_row(run_id: int, i: int, p: dict[str, Any]) -> dict[str, Any]:
    units = p.get("tokens", p.get("samples", 0))
    extra = {k: v for k, v in p.items() if k not in CURVE_COLUMNS | {"tokens", "samples"}}
    return {"run_id": run_id, "idx": i, "step": int(p.get("step", 0)), "units": float(units),
            "train_seconds": float(p.get("train_seconds", 0.0)), "flops": float(p.get("flops", 0)),
            "val_loss": _clean(p.get("val_loss")), "val_acc": _clean(p.get("val_acc")),
            "train_loss": _clean(p.get("train_loss")), "extra": extra or None}


def _owner_host_pid(owner: str | None) -> tuple[str, int | None]:
    """'host:pid' or 'host:pid/tag' -> (host, pid); anything else -> (owner, None)."""
    base = (owner or "").split("/", 1)[0]
    host, _, pid = base.rpartition(":")
    return (host, int(pid)) if pid.isdigit() else (owner or "", None)


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


def _line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    # Transactions are ours (BEGIN in _sqlite_begin): the driver's implicit ones start only at
    # the first INSERT/UPDATE, so a SELECT-then-UPDATE would not be atomic.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode=WAL")  # readers (airlab status) never block the writer
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock up front (waiting up to busy_timeout), so the reads of a
    # claim's compare-and-set see the latest commit and the upgrade to writing cannot deadlock.
    immediate = conn.get_execution_options().get("airlab_write")
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


__all__ = ["Store", "StoreError", "StoreCorruptError", "owner_id", "SQLAlchemyError",
           "DatabaseError", "OperationalError"]
