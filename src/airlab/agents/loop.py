"""The autonomous loop: sprint after sprint within a budget of sprints or hours.

Its state is a function of the stored sprints (:func:`replay`): each sprint's kind updates it
(``agents.kinds``), so a session killed at any moment and started again continues where it
stopped and takes no decision twice. The next sprint is the first kind in
:data:`~airlab.agents.kinds.POLICY` that wants one: confirm a candidate recipe on fresh seeds
(beside the current one: a paired comparison decides replacement), measure the current
recipe's transfer (4x the budget, another dataset), stack the winners, else explore an idea
on the current recipe.

A session studies one task (``agents.task``: the base experiment, the default configuration
every ratio is measured against) and keeps it, its options, seed, budget, seeds, transfer
dataset and Researcher strategy when it is started again.

Recipes are written to the store by an explicit step (:func:`write_recipes`, after every
sprint); :func:`leaderboard` only reads (it replays the stored sprints).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airlab.agents.kinds import (
    DEFAULT_AMOUNT,
    KINDS,
    POLICY,
    LoopPlan,
    LoopState,
    RecipeEntry,
    kind_of,
    transfer_label,
)
from airlab.agents.task import default_transfer
from airlab.errors import AirlabError
from airlab.store import team as team_store
from airlab.store.records import Task
from airlab.store.team import RecipeRow

if TYPE_CHECKING:
    from airlab.agents.team import SprintOutcome, Team
    from airlab.store import Store
    from airlab.store.records import SprintRequest

SELECTION_SEEDS = (0, 1, 2)
# The loop evaluates twice as often on half the held-out tokens (the same evaluation cost as
# the default 8 x 16,384): a time-to-target is interpolated between evaluations, and a recipe
# that reaches the target at a sixth of the budget would otherwise have one point before it.
LOOP_OPTIONS = {"eval_points": 16, "eval_tokens": 8192}


@dataclass
class AutoOutcome:
    session: str
    sprints: list[SprintOutcome]
    recipes: list[RecipeRow]
    stopped: str


def replay(store: Store, session: str) -> LoopState:
    """The loop's state, derived from the stored sprints (so a restart sees what a run saw):
    the current recipe, the winners against it, tested ideas, candidates, recipes. Reads only."""
    state = LoopState()
    for row in team_store.list_sprints(store, session):
        if row.finished_at:
            state.spent_s += row.finished_at - row.started_at
        kind_of(row.kind).update(state, row)
    return state


def recipe_figures(entry: RecipeEntry) -> dict[str, Any]:
    """A recipe's confirmation with its transfer figures and where it holds (what the
    recipes table and the leaderboard show beside the selection)."""
    out = dict(entry.confirmation or {})
    if entry.transfer:
        out["transfer"] = {k: dict(v) for k, v in entry.transfer.items()}
    label = transfer_label(entry)
    if label:
        out["holds"] = label
    return out


def write_recipes(store: Store, session: str, state: LoopState) -> None:
    """The recipes table as the stored sprints make it (the loop's explicit write)."""
    for name, e in state.recipes.items():
        team_store.save_recipe(store, session, name, recipe=e.recipe, selection=e.selection,
                               status=e.status, confirmation=recipe_figures(e))


def next_sprint(state: LoopState, plan: LoopPlan, policy: Sequence[str] = POLICY
                ) -> SprintRequest:
    """The first kind in ``policy`` that wants a sprint (explore always does)."""
    for name in policy:
        req = KINDS[name].wants(state, plan)
        if req is not None:
            return req
    raise AirlabError("no sprint kind wants a sprint", "the policy must end with explore")


def session_setup(store: Store, session: str) -> dict[str, Any] | None:
    """The stored setup of a session (None: not started): its task, budget, seeds, transfer
    dataset and Researcher strategy, as a restart keeps them."""
    row = team_store.get_session(store, session)
    return None if row is None else dict(row["setup"])


def run_auto(team: Team, *, session: str, sprints: int | None = None,
             hours: float | None = None, tokens: float | None = None, minutes: float = 15.0,
             seeds: Sequence[int] = SELECTION_SEEDS, topic: str | None = None,
             policy: Sequence[str] = POLICY, transfer: str | None = "auto") -> AutoOutcome:
    """Sprint after sprint until ``sprints`` are done or ``hours`` of sprint time are spent.
    Restarted with the same ``session``, it continues: the open sprint resumes, the state
    (current recipe, winners, candidates) comes from the store. ``policy``: the sprint kinds
    asked, in order, for the next sprint. The task is the team's (``team.lab.task``);
    ``tokens``: the budget per run in its unit (default: 400k tokens, 30k samples);
    ``transfer``: the dataset recipes are transferred to ("auto": ``default_transfer``,
    None: none). Transfer sprints get the whole time box even near the session's end; when
    the budget is spent and the current recipe's transfer is not measured yet, its transfer
    sprints still run (at most two), so the session's best is measured."""
    if sprints is None and hours is None:
        raise AirlabError("auto needs a budget", "give --sprints N or --hours H")
    lab, store = team.lab, team.lab.store
    task = lab.task
    row = team_store.open_session(store, session, seed=lab.seed, setup={
        "sprints": sprints, "hours": hours,
        "tokens": float(tokens or DEFAULT_AMOUNT.get(task.unit, 400_000.0)),
        "minutes": minutes, "seeds": list(seeds), "topic": topic,
        "options": {**LOOP_OPTIONS, **lab.options}, "task": task.to_json(),
        "transfer": default_transfer(task) if transfer == "auto" else transfer,
        "researcher": team.researcher})
    setup = row["setup"]
    # Every sprint of a session shares its options (they are in every run key): a restarted
    # session keeps the ones it started with, its seed, its task and its setup (the same
    # budget and seeds) unless the budget is raised on the command line.
    lab.options = dict(setup.get("options", lab.options))
    lab.seed = int(row["seed"])
    lab.task = task = Task.from_json(setup.get("task"))
    sprints = sprints if sprints is not None else setup.get("sprints")
    hours = hours if hours is not None else setup.get("hours")
    amount = float(setup.get("tokens") or tokens or DEFAULT_AMOUNT.get(task.unit, 400_000.0))
    seeds = tuple(setup.get("seeds") or seeds)
    where = setup["transfer"] if "transfer" in setup else default_transfer(task)
    done: list[SprintOutcome] = []
    stopped = ""
    overtime = 0
    began = time.time()
    while True:
        state = replay(store, session)
        write_recipes(store, session, state)
        rows = team_store.list_sprints(store, session)
        finished = [r for r in rows if r.status in ("done", "failed")]
        open_rows = [r for r in rows if r.status == "open"]
        # Sprint time spent: a killed sprint's time before this process started is not
        # counted while it is open (the loop was not running), only once it finishes.
        now = time.time()
        spent = sum((r.finished_at - r.started_at) if r.finished_at
                    else now - max(r.started_at, began) for r in rows)
        left = (sprints - len(finished)) if sprints is not None else None
        took = [r.finished_at - r.started_at for r in finished if r.finished_at]
        if hours is not None and took:  # sprints that still fit, at the mean sprint's time
            fit = int((hours * 3600 - spent) // (sum(took) / len(took)))
            left = fit if left is None else min(left, fit)
        plan = LoopPlan(lab, seeds, left, task, amount, where)
        spent_up = ((sprints is not None and len(finished) >= sprints)
                    or (hours is not None and spent >= hours * 3600))
        req = None
        if spent_up and not open_rows:
            # The budget is spent: only the current recipe's transfer, if it is missing.
            req = KINDS["transfer"].wants(state, plan) if "transfer" in policy else None
            if req is None or overtime >= 2:
                stopped = (f"{len(finished)} sprints done" if sprints is not None and
                           len(finished) >= sprints else
                           f"{spent / 3600:.2f} h of sprint time spent")
                if overtime:
                    stopped += f" (+{overtime} to measure the last recipe's transfer)"
                break
            overtime += 1
        session_end = time.time() + (hours * 3600 - spent) \
            if hours is not None and not spent_up else None
        if open_rows:
            r = open_rows[0]
            out = team.run(r.record.request, session=session, number=r.number,
                           session_end=None if r.kind == "transfer" else session_end)
        else:
            req = req or next_sprint(state, plan, policy)
            if req.kind == "transfer":  # measured whole: a transfer cut short says nothing
                session_end = None
            box = minutes if session_end is None \
                else max(1.0, min(minutes, (session_end - time.time()) / 60))
            out = team.run(dataclasses.replace(req, minutes=box, topic=topic),
                           session=session, number=len(rows) + 1, session_end=session_end)
        done.append(out)
        if out.status == "failed" and out.kind == "explore" and not out.idea:
            stopped = f"sprint failed before choosing an idea: {out.reason}"
            break
    write_recipes(store, session, replay(store, session))
    return AutoOutcome(session, done, team_store.list_recipes(store, session), stopped)


def leaderboard(store: Store, session: str | None = None) -> list[RecipeRow]:
    """Recipes, best confirmed first: time-to-target against the default configuration on
    the selection seeds, on the fresh confirmation seeds (with the paired comparison against
    the recipe it replaced), at 4x the budget and on the transfer dataset, and where the
    recipe holds. Reads only: the recipes are replayed from the stored sprints."""
    sessions = [session] if session is not None else \
        list(dict.fromkeys(r.session for r in team_store.list_sprints(store)))
    rows = [RecipeRow(s, name, e.status, e.recipe, dict(e.selection), recipe_figures(e), 0.0)
            for s in sessions for name, e in replay(store, s).recipes.items()]
    return sorted(rows, key=board_order)


def board_order(x: RecipeRow) -> tuple[int, float]:
    """Confirmed first, then candidates, then rejected; by ratio within each."""
    order = {"confirmed": 0, "candidate": 1, "rejected": 2}
    g = x.confirmation.get("ratio") or x.selection.get("ratio") or 0
    return order.get(x.status, 3), -float(g if math.isfinite(g) else 0)


def best_recipe(rows: Sequence[RecipeRow]) -> RecipeRow | None:
    """The session's best: the confirmed recipe with the highest confirmed ratio whose
    transfer has been measured (a recipe is not called best before that)."""
    ok = [r for r in rows if r.status == "confirmed" and r.confirmation.get("holds")]
    return min(ok, key=board_order) if ok else None
