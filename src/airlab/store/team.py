"""What the research team keeps in the store: sessions, sprints and recipes.

* ``team_sessions``: one row per `airlab auto` session (or the implicit session of single
  sprints): its seed, its setup (budget, seeds, time box) and a JSON state that the loop
  updates after every sprint, so a killed session continues where it stopped.
* ``sprints``: one row per sprint: its number in the session, the idea, the experiment it
  ran, the phase reached (ideas, design, implementation, runs, validation, post, done) and a
  JSON record of every phase's output (proposal, spec, implementation, verdict, scores). A
  sprint killed after its design resumes from the stored spec: the same runs, never new ones.
* ``recipes``: stacks of techniques the loop built from winners, with the figures that
  selected them and those of their confirmation on fresh seeds.

Like ``state.py``, this module imports no ``Store`` at run time; the tables join
``tables.metadata`` so that ``Store`` creates them with the others.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Column,
    Float,
    Integer,
    String,
    Table,
    UniqueConstraint,
    insert,
    select,
    update,
)

from airlab.store.records import Part, SprintRecord
from airlab.store.tables import metadata

if TYPE_CHECKING:
    from airlab.store.store import Store

PHASES = ("ideas", "design", "implementation", "runs", "validation", "post", "done")

team_sessions = Table(
    "team_sessions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("seed", Integer, nullable=False),
    Column("setup", JSON, nullable=False),
    Column("state", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

sprints = Table(
    "sprints", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session", String(200), nullable=False),
    Column("number", Integer, nullable=False),
    Column("kind", String(20), nullable=False),  # explore | stack | confirm
    Column("idea", String(200)),
    Column("experiment", String(200)),
    Column("phase", String(20), nullable=False),
    Column("status", String(20), nullable=False),  # open | done | failed
    Column("record", JSON, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    UniqueConstraint("session", "number", name="uq_sprint_number"),
)

recipes = Table(
    "recipes", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("recipe", JSON, nullable=False),  # {"use": [...], "options": {...}, "parts": [...]}
    Column("selection", JSON, nullable=False),  # experiment, ratio, ci, seeds
    Column("confirmation", JSON),  # the same on fresh seeds, once confirmed or rejected
    Column("status", String(20), nullable=False),  # candidate | confirmed | rejected
    Column("created_at", Float, nullable=False),
    UniqueConstraint("session", "name", name="uq_recipe_name"),
)


def _row(r: Any) -> dict[str, Any]:
    return dict(r._mapping)


def get_session(store: Store, name: str) -> dict[str, Any] | None:
    if not store.has_table("team_sessions"):
        return None
    with store.reading() as c:
        r = c.execute(select(team_sessions).where(team_sessions.c.name == name)).first()
    return None if r is None else _row(r)


def open_session(store: Store, name: str, *, seed: int, setup: Mapping[str, Any]
                 ) -> dict[str, Any]:
    """The session ``name``: created with ``seed`` and ``setup``, or the stored one as it is
    (a restarted session keeps its first seed and setup)."""
    have = get_session(store, name)
    if have is not None:
        return have
    now = time.time()
    with store.writing() as c:
        if c.execute(select(team_sessions.c.id).where(team_sessions.c.name == name)).first() \
                is None:
            c.execute(insert(team_sessions).values(name=name, seed=int(seed), setup=dict(setup),
                                                   state={}, created_at=now, updated_at=now))
    got = get_session(store, name)
    assert got is not None
    return got


def save_session_state(store: Store, name: str, state: Mapping[str, Any]) -> None:
    with store.writing() as c:
        c.execute(update(team_sessions).where(team_sessions.c.name == name)
                  .values(state=dict(state), updated_at=time.time()))


def list_sessions(store: Store) -> list[dict[str, Any]]:
    return [_row(r) for r in _in_session(store, team_sessions, None)]


@dataclass(frozen=True)
class SprintRow:
    """One stored sprint: where it stands and its record."""

    id: int
    session: str
    number: int
    kind: str
    idea: str | None
    experiment: str | None
    phase: str
    status: str  # open | review | done | failed
    record: SprintRecord
    started_at: float
    finished_at: float | None

    @property
    def key(self) -> str:
        """SESSION:NUMBER, as `airlab sprint --list` shows it and stored model calls name it."""
        return f"{self.session}:{self.number}"


def _sprint(r: Any) -> SprintRow:
    m = r._mapping
    rec = SprintRecord.from_json(m["record"] or {}, kind=m["kind"], started=m["started_at"])
    return SprintRow(m["id"], m["session"], m["number"], m["kind"], m["idea"], m["experiment"],
                     m["phase"], m["status"], rec, m["started_at"], m["finished_at"])


def start_sprint(store: Store, session: str, number: int, record: SprintRecord) -> SprintRow:
    """Insert sprint ``number`` of ``session`` (phase 'ideas'), or return the stored one."""
    with store.writing() as c:
        have = c.execute(select(sprints).where(sprints.c.session == session,
                                               sprints.c.number == number)).first()
        if have is None:
            c.execute(insert(sprints).values(session=session, number=number,
                                             kind=record.kind, phase="ideas", status="open",
                                             record=record.to_json(), started_at=time.time()))
    got = get_sprint(store, session, number)
    assert got is not None
    return got


def update_sprint(store: Store, sprint_id: int, *, phase: str | None = None,
                  status: str | None = None, record: SprintRecord | None = None,
                  idea: str | None = None, experiment: str | None = None) -> None:
    """Move a sprint on: its phase, status, record (replaced whole), idea and experiment."""
    values: dict[str, Any] = {}
    if phase is not None:
        if phase not in PHASES:
            raise ValueError(f"unknown sprint phase {phase!r}; one of {', '.join(PHASES)}")
        values["phase"] = phase
    if status is not None:
        values["status"] = status
        if status != "open":
            values["finished_at"] = time.time()
    if record is not None:
        values["record"] = record.to_json()
    if idea is not None:
        values["idea"] = idea
    if experiment is not None:
        values["experiment"] = experiment
    if values:
        with store.writing() as c:
            c.execute(update(sprints).where(sprints.c.id == sprint_id).values(**values))


def get_sprint(store: Store, session: str, number: int) -> SprintRow | None:
    if not store.has_table("sprints"):
        return None
    with store.reading() as c:
        r = c.execute(select(sprints).where(sprints.c.session == session,
                                            sprints.c.number == number)).first()
    return None if r is None else _sprint(r)


def sprint_by_id(store: Store, sprint_id: int) -> SprintRow | None:
    if not store.has_table("sprints"):
        return None
    with store.reading() as c:
        r = c.execute(select(sprints).where(sprints.c.id == sprint_id)).first()
    return None if r is None else _sprint(r)


def _in_session(store: Store, table: Table, session: str | None) -> list[Any]:
    """The rows of ``table`` (of one session, or all), oldest first; none before it exists."""
    if not store.has_table(table.name):
        return []
    q = select(table).order_by(table.c.id)
    if session is not None:
        q = q.where(table.c.session == session)
    with store.reading() as c:
        return list(c.execute(q))


def list_sprints(store: Store, session: str | None = None) -> list[SprintRow]:
    return [_sprint(r) for r in _in_session(store, sprints, session)]


def current_sprint(store: Store, session: str | None = None) -> SprintRow | None:
    """The sprint a live view shows: the latest open one (its phase is the one in progress),
    else the latest of all (of one session, or of every session). Reads only."""
    rows = list_sprints(store, session)
    live = [r for r in rows if r.status in ("open", "review")]
    pick = live or rows
    return pick[-1] if pick else None


@dataclass(frozen=True)
class RecipeRow:
    """A recipe the loop built: its arm (a Part), the figures that selected it and those of its
    confirmation on fresh seeds."""

    session: str
    name: str
    status: str  # candidate | confirmed | rejected
    recipe: Part
    selection: dict[str, Any]
    confirmation: dict[str, Any]
    created_at: float


def save_recipe(store: Store, session: str, name: str, *, recipe: Part,
                selection: Mapping[str, Any], status: str = "candidate",
                confirmation: Mapping[str, Any] | None = None) -> None:
    """Insert or replace the recipe ``name`` of ``session``."""
    values = dict(recipe=recipe.to_json(), selection=dict(selection), status=status,
                  confirmation=None if confirmation is None else dict(confirmation))
    with store.writing() as c:
        have = c.execute(select(recipes.c.id).where(recipes.c.session == session,
                                                    recipes.c.name == name)).first()
        if have is None:
            c.execute(insert(recipes).values(session=session, name=name,
                                             created_at=time.time(), **values))
        else:
            c.execute(update(recipes).where(recipes.c.id == have.id).values(**values))


def list_recipes(store: Store, session: str | None = None) -> list[RecipeRow]:
    """The recipes as the loop last wrote them (``agents.loop.write_recipes``), oldest first."""
    out = []
    for r in _in_session(store, recipes, session):
        m = r._mapping
        out.append(RecipeRow(m["session"], m["name"], m["status"], Part.from_json(m["recipe"]),
                             dict(m["selection"] or {}), dict(m["confirmation"] or {}),
                             m["created_at"]))
    return out


def clean_source(info: dict[str, Any]) -> bool:
    """Whether a stored run may stand in for another run with its key: not one that ran in the
    sandbox beside generated code its own config does not name (before issue 21 every run of
    a spec with technique files imported them all, the baseline's too, under the clean key)."""
    return not info.get("sandbox") or "generated_code" in info


def adopt_results(store: Store, experiment_id: int, *, host: str) -> int:
    """Give the pending runs of an experiment the result of a finished run with the same run
    key in another experiment, run on ``host`` (a run key is the run's whole resolved config,
    seed and technique code, so the result is the one this run would give; timings are only
    comparable on the same host). The copy says where it came from (``info.reused_from``).
    The team's sprints share their baseline runs this way. Returns how many were adopted."""
    from sqlalchemy import and_

    from airlab.store.tables import curves, experiments, metrics, runs

    adopted = 0
    with store.writing() as c:
        pending = c.execute(select(runs.c.id, runs.c.run_key).where(
            runs.c.experiment_id == experiment_id, runs.c.state == "pending")).all()
        for row in pending:
            src = c.execute(
                select(runs, experiments.c.name.label("_exp"))
                .join(experiments, experiments.c.id == runs.c.experiment_id)
                .where(and_(runs.c.run_key == row.run_key, runs.c.state == "finished",
                            runs.c.experiment_id != experiment_id))
                .order_by(runs.c.id)).all()
            src = [s for s in src if ((s.info or {}).get("provenance") or {}).get("host") == host
                   and clean_source(s.info or {})]
            if not src:
                continue
            s = src[0]
            info = {**(s.info or {}), "reused_from": {"experiment": s._exp, "run_id": s.id}}
            c.execute(update(runs).where(runs.c.id == row.id, runs.c.state == "pending").values(
                state="finished", reason=s.reason, info=info, wall_seconds=s.wall_seconds,
                started_at=s.started_at, finished_at=s.finished_at, attempts=0, infra=False))
            cur = [{**dict(r._mapping), "run_id": row.id} for r in
                   c.execute(select(curves).where(curves.c.run_id == s.id))]
            met = [{**dict(r._mapping), "run_id": row.id} for r in
                   c.execute(select(metrics).where(metrics.c.run_id == s.id))]
            if cur:
                c.execute(insert(curves), cur)
            if met:
                c.execute(insert(metrics), met)
            adopted += 1
    return adopted


def finished_values(store: Store, run_keys: list[str], metric: str) -> dict[str, float]:
    """The metric of a finished run for each run key that has one (the earliest such run)."""
    from airlab.store.tables import metrics, runs

    out: dict[str, float] = {}
    if not run_keys:
        return out
    with store.reading() as c:
        rows = c.execute(
            select(runs.c.run_key, metrics.c.value)
            .join(metrics, metrics.c.run_id == runs.c.id)
            .where(runs.c.run_key.in_(sorted(set(run_keys))), runs.c.state == "finished",
                   metrics.c.name == metric)
            .order_by(runs.c.id)).all()
    for key, value in rows:
        if key not in out and value is not None:
            out[key] = float(value)
    return out


def finished_run_keys(store: Store, run_keys: Sequence[str]) -> set[str]:
    """Which of ``run_keys`` already have a finished run (in any experiment)."""
    from airlab.store.tables import runs

    if not run_keys:
        return set()
    with store.reading() as c:
        return {r.run_key for r in c.execute(select(runs.c.run_key).where(
            runs.c.state == "finished", runs.c.run_key.in_(sorted(set(run_keys)))))}


def experiments_with_runs(store: Store, run_keys: Sequence[str]
                          ) -> dict[str, tuple[float, set[str]]]:
    """Experiment name -> (created at, which of ``run_keys`` it holds a run of, in any state)."""
    from airlab.store.tables import experiments, runs

    if not run_keys:
        return {}
    q = (select(experiments.c.name, experiments.c.created_at, runs.c.run_key)
         .join(experiments, experiments.c.id == runs.c.experiment_id)
         .where(runs.c.run_key.in_(sorted(set(run_keys)))))
    out: dict[str, tuple[float, set[str]]] = {}
    with store.reading() as c:
        for name, created, key in c.execute(q):
            out.setdefault(name, (created, set()))[1].add(key)
    return out


def owner_gone(owner: str) -> bool | None:
    """Whether the process an owner id names (``store.owner_id``) has ended: True or False
    for a process of this host, None for another host's (it cannot be asked from here)."""
    import socket

    from airlab.store.store import _alive, _owner_host_pid

    host, pid = _owner_host_pid(owner)
    if host != socket.gethostname():
        return None
    return pid is None or not _alive(pid)
