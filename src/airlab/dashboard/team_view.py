"""The research team as the dashboard shows it: every read of the team's state in one place.

Only existing public read functions are called here (the store's team tables, the ideas
tracker, the leaderboard), plus Optuna's own API for the Researcher's studies, so that a change
in ``airlab.agents`` is followed by changing this module alone. Nothing here writes.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airlab.store import Store

log = logging.getLogger(__name__)

STUDY_PREFIX = "airlab.idea."  # the Researcher's study names (agents.tuning.study_name)


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def sprints_view(store: Store) -> dict[str, Any]:
    """The sessions, the current sprint (the newest open one, else the newest) and the last
    sprints with their phase, status, idea, experiment and rating."""
    from airlab.store import team as team_store

    sessions = team_store.list_sessions(store)
    sprints = team_store.list_sprints(store)
    rows: list[dict[str, Any]] = []
    for r in sprints:
        rating = r.record.validation.rating if r.record.validation is not None else None
        rows.append({"session": r.session, "number": r.number, "kind": r.kind,
                     "idea": r.idea, "experiment": r.experiment, "phase": r.phase,
                     "status": r.status, "rating": rating, "started_at": r.started_at,
                     "finished_at": r.finished_at})
    open_ = [r for r in rows if r["status"] == "open"]
    current = max(open_ or rows, key=lambda r: r["started_at"]) if rows else None
    return {"sessions": [{"name": s["name"], "seed": s["seed"], "updated_at": s["updated_at"],
                          "sprints": sum(r["session"] == s["name"] for r in rows)}
                         for s in sessions],
            "current": current, "sprints": rows[-20:][::-1]}


def leaderboard_view(store: Store) -> list[dict[str, Any]]:
    from airlab.agents.loop import leaderboard

    return [_finite({"session": r.session, "recipe": r.name, "status": r.status,
                     "parts": r.recipe.to_json(), "selection": r.selection,
                     "confirmation": r.confirmation}) for r in leaderboard(store)]


def ideas_view(store: Store) -> dict[str, Any]:
    """Every idea of the knowledge base with its status and last scored prediction, and the
    team's prediction record (the same reads as `airlab ideas`)."""
    from airlab.agents.knowledge import load_ideas
    from airlab.agents.status import idea_statuses, prediction_record, record_summary

    known = load_ideas()
    statuses = idea_statuses(store, known)
    record = prediction_record(store, statuses=statuses)
    ideas = []
    for name, st in statuses.items():
        idea = known[name]
        last = st.scores[-1] if st.scores else None
        ideas.append({"name": name, "title": idea.title, "area": st.area, "tier": st.tier,
                      "status": st.status, "needs_code": st.needs_code,
                      "prediction": idea.prediction.text(), "experiments": st.experiments,
                      "rating": st.rating, "ratio": st.ratio, "effect": st.effect,
                      "hit": None if last is None else bool(last.get("hit")),
                      "miss_by": None if last is None else last.get("miss_by")})
    return _finite({"ideas": ideas, "record": record_summary(record),
                    "history": [{"experiment": s["experiment"], "idea": s["idea"],
                                 "hit": bool(s.get("hit")), "hits": s["hits"],
                                 "scored": s["scored"], "hit_rate": s["hit_rate"]}
                                for s in record]})


def studies_view(store: Store) -> dict[str, Any]:
    """The Optuna studies kept in the lab's database (the Researcher's tuning), read with
    Optuna's API over a read-only connection."""
    if not store.has_table("studies"):
        return {"studies": [], "note": "no Optuna study in this store yet"}
    try:
        import optuna
        from optuna.trial import TrialState
    except ImportError:
        return {"studies": [], "note": "optuna is not installed"}
    try:
        storage = _optuna_storage(store)
        out = []
        for s in optuna.study.get_all_study_summaries(storage, include_best_trial=True):
            trials = storage.get_all_trials(s._study_id, deepcopy=False)
            states = {st.name.lower(): sum(t.state == st for t in trials)
                      for st in TrialState if any(t.state == st for t in trials)}
            best = s.best_trial
            out.append({"name": s.study_name,
                        "idea": s.study_name[len(STUDY_PREFIX):]
                        if s.study_name.startswith(STUDY_PREFIX) else None,
                        "direction": s.direction.name.lower() if s.direction else None,
                        "trials": s.n_trials, "states": states,
                        "best_value": None if best is None else best.value,
                        "best_params": None if best is None else best.params,
                        "started": None if s.datetime_start is None
                        else s.datetime_start.timestamp()})
        return _finite({"studies": out})
    except Exception as e:  # noqa: BLE001 - a study the dashboard cannot read is one note
        log.debug("optuna studies not read", exc_info=True)
        return {"studies": [], "note": f"Optuna studies not readable: {type(e).__name__}: "
                                       f"{str(e).splitlines()[0][:200] if str(e) else ''}"}


_storages: dict[str, Any] = {}


def _optuna_storage(store: Store) -> Any:
    """An Optuna RDBStorage that neither creates tables nor writes (read-only connection)."""
    key = store.url
    if key not in _storages:
        import optuna

        url, kwargs = store.url, {}
        if store.path is not None:  # SQLite: open the file read-only
            from urllib.parse import quote

            url = f"sqlite:///file:{quote(str(store.path))}?mode=ro&uri=true"
        elif store.url.startswith("postgresql"):
            kwargs = {"execution_options": {"postgresql_readonly": True}}
        _storages[key] = optuna.storages.RDBStorage(url, engine_kwargs=kwargs,
                                                    skip_compatibility_check=True,
                                                    skip_table_creation=True)
    return _storages[key]


def team_view(store: Store) -> dict[str, Any]:
    """Everything the dashboard's team panel shows; each part fails alone (as a note)."""
    out: dict[str, Any] = {"at": time.time()}
    for key, fn in (("sprints", sprints_view), ("leaderboard", leaderboard_view),
                    ("ideas", ideas_view), ("optuna", studies_view)):
        try:
            out[key] = fn(store)
        except Exception as e:  # noqa: BLE001 - one broken part must not blank the page
            log.warning("team view: %s not read: %s", key, e)
            out[key] = None
            out.setdefault("errors", []).append(f"{key}: {type(e).__name__}: {e}"[:300])
    return out


__all__ = ["team_view", "sprints_view", "leaderboard_view", "ideas_view", "studies_view"]
