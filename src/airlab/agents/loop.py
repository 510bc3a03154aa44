"""The autonomous loop: sprint after sprint within a budget of sprints or hours.

Its state is a function of the stored sprints (:func:`replay`): each sprint's kind updates it
(``agents.kinds``), so a session killed at any moment and started again continues where it
stopped and takes no decision twice. The next sprint is the first kind in
:data:`~airlab.agents.kinds.POLICY` that wants one: confirm a candidate recipe on fresh seeds,
stack the winners, else explore an idea on the current recipe.

Recipes are written to the store by an explicit step (:func:`write_recipes`, after every
sprint); :func:`leaderboard` only reads (it replays the stored sprints).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airlab.agents.kinds import KINDS, POLICY, LoopPlan, LoopState, kind_of
from airlab.errors import AirlabError
from airlab.store import team as team_store
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
        kind_of(row.kind).update(state, row)
    return state


def write_recipes(store: Store, session: str, state: LoopState) -> None:
    """The recipes table as the stored sprints make it (the loop's explicit write)."""
    for name, e in state.recipes.items():
        team_store.save_recipe(store, session, name, recipe=e.recipe, selection=e.selection,
                               status=e.status, confirmation=e.confirmation)


def next_sprint(state: LoopState, plan: LoopPlan, policy: Sequence[str] = POLICY
                ) -> SprintRequest:
    """The first kind in ``policy`` that wants a sprint (explore always does)."""
    for name in policy:
        req = KINDS[name].wants(state, plan)
        if req is not None:
            return req
    raise AirlabError("no sprint kind wants a sprint", "the policy must end with explore")


def run_auto(team: Team, *, session: str, sprints: int | None = None,
             hours: float | None = None, tokens: float = 400_000, minutes: float = 15.0,
             seeds: Sequence[int] = SELECTION_SEEDS, topic: str | None = None,
             policy: Sequence[str] = POLICY) -> AutoOutcome:
    """Sprint after sprint until ``sprints`` are done or ``hours`` of sprint time are spent.
    Restarted with the same ``session``, it continues: the open sprint resumes, the state
    (current recipe, winners, candidates) comes from the store. ``policy``: the sprint kinds
    asked, in order, for the next sprint."""
    if sprints is None and hours is None:
        raise AirlabError("auto needs a budget", "give --sprints N or --hours H")
    lab, store = team.lab, team.lab.store
    row = team_store.open_session(store, session, seed=lab.seed, setup={
        "sprints": sprints, "hours": hours, "tokens": tokens, "minutes": minutes,
        "seeds": list(seeds), "topic": topic, "options": {**LOOP_OPTIONS, **lab.options}})
    setup = row["setup"]
    # Every sprint of a session shares its options (they are in every run key): a restarted
    # session keeps the ones it started with, its seed, and its setup (the same budget and
    # seeds) unless the budget is raised on the command line.
    lab.options = dict(setup.get("options", lab.options))
    lab.seed = int(row["seed"])
    sprints = sprints if sprints is not None else setup.get("sprints")
    hours = hours if hours is not None else setup.get("hours")
    tokens = float(setup.get("tokens") or tokens)
    seeds = tuple(setup.get("seeds") or seeds)
    done: list[SprintOutcome] = []
    stopped = ""
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
        if sprints is not None and len(finished) >= sprints and not open_rows:
            stopped = f"{len(finished)} sprints done"
            break
        if hours is not None and spent >= hours * 3600 and not open_rows:
            stopped = f"{spent / 3600:.2f} h of sprint time spent"
            break
        session_end = time.time() + (hours * 3600 - spent) if hours is not None else None
        if open_rows:
            r = open_rows[0]
            out = team.run(r.record.request, session=session, number=r.number,
                           session_end=session_end)
        else:
            left = (sprints - len(finished)) if sprints is not None else None
            took = [r.finished_at - r.started_at for r in finished if r.finished_at]
            if hours is not None and took:  # sprints that still fit, at the mean sprint's time
                fit = int((hours * 3600 - spent) // (sum(took) / len(took)))
                left = fit if left is None else min(left, fit)
            req = next_sprint(state, LoopPlan(lab, seeds, left), policy)
            box = minutes if session_end is None \
                else max(1.0, min(minutes, (session_end - time.time()) / 60))
            out = team.run(dataclasses.replace(req, minutes=box, tokens=tokens, topic=topic),
                           session=session, number=len(rows) + 1, session_end=session_end)
        done.append(out)
        if out.status == "failed" and out.kind == "explore" and not out.idea:
            stopped = f"sprint failed before choosing an idea: {out.reason}"
            break
    write_recipes(store, session, replay(store, session))
    return AutoOutcome(session, done, team_store.list_recipes(store, session), stopped)


def leaderboard(store: Store, session: str | None = None) -> list[RecipeRow]:
    """Recipes, best confirmed first: time-to-target against the default configuration on
    the selection seeds and on the fresh confirmation seeds, side by side. Reads only: the
    recipes are replayed from the stored sprints."""
    sessions = [session] if session is not None else \
        list(dict.fromkeys(r.session for r in team_store.list_sprints(store)))
    rows = [RecipeRow(s, name, e.status, e.recipe, dict(e.selection),
                      dict(e.confirmation or {}), 0.0)
            for s in sessions for name, e in replay(store, s).recipes.items()]
    order = {"confirmed": 0, "candidate": 1, "rejected": 2}

    def key(x: RecipeRow) -> tuple[int, float]:
        g = x.confirmation.get("ratio") or x.selection.get("ratio") or 0
        return order.get(x.status, 3), -float(g if math.isfinite(g) else 0)

    return sorted(rows, key=key)
