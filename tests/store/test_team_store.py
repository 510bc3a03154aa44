"""The team's tables on every store backend: sessions, sprints (typed records that round-trip
through the JSON column), recipes, and the read-only views a live dashboard uses.

Each test runs on SQLite and on a real PostgreSQL (``any_db_url``, tests/pg_fixture.py).
"""

from __future__ import annotations

import pytest

from airlab.spec import ExperimentSpec
from airlab.store import Store
from airlab.store import team as team_store
from airlab.store.records import (
    ArmResult,
    DesignRecord,
    ImplementationRecord,
    ModelNotes,
    Part,
    ProposalRecord,
    RunsRecord,
    SprintRecord,
    SprintRequest,
    ValidationRecord,
)


def _spec() -> ExperimentSpec:
    return ExperimentSpec.model_validate({
        "name": "sprint.s.001.rope", "workload": "charlm", "budget": {"tokens": 4000.0},
        "baseline": {"name": "baseline"}, "seeds": [0, 1, 2],
        "arms": [{"name": "rope", "use": ["rope"], "options": {"lr": 0.002}}]})


def _full_record() -> SprintRecord:
    winner = Part("rope", ("rope",), {"lr": 0.002}, ratio=1.4)
    arm = ArmResult("rope", "better", "better", True, 1.4, 1.1, 1.8, 3, 3, 2.1, True)
    return SprintRecord(
        SprintRequest("stack", 7.5, None, "positions", "rotary", Part("r", ("rmsnorm",)),
                      4000.0, (0, 1, 2), ("lion",), (winner,)),
        1234.5,
        ProposalRecord("stack", None, "try them together", parts=(winner,)),
        DesignRecord("3 seeds given", "4,000 tokens", 5000.0, "measured", 9, 12.5, ["a note"]),
        _spec(),
        ImplementationRecord("registered techniques", [{"arm": "rope", "use": ["rope"],
                                                        "options": {}, "code": {}}], 9),
        RunsRecord("sprint.s.001.rope", 9, 0, 3, 6, 0, 0, 7),
        ValidationRecord("sprint.s.001.rope", 7, "solid", ["fine"], {"rope": arm}, None,
                         llm_critique={"by": "m", "lines": ["ok"]}),
        folder="/x", llm=ModelNotes("m", "s:1", parts={"researcher": "model"}),
        box={"ideas": 1.5, "model.researcher": 1.0})


def test_a_sprint_record_round_trips_through_the_store(any_db_url: str) -> None:
    store = Store(any_db_url)
    rec = _full_record()
    row = team_store.start_sprint(store, "s", 1, rec)
    assert (row.kind, row.phase, row.status, row.key) == ("stack", "ideas", "open", "s:1")
    team_store.update_sprint(store, row.id, phase="done", status="done", record=rec,
                             idea="rope", experiment="sprint.s.001.rope")
    got = team_store.get_sprint(store, "s", 1)
    assert got is not None and got.record == rec
    assert got.finished_at is not None and got.idea == "rope"
    assert team_store.sprint_by_id(store, row.id) == got
    # Starting the same sprint again returns the stored one, record and all.
    assert team_store.start_sprint(store, "s", 1, SprintRecord(SprintRequest(), 0.0)) == got
    with pytest.raises(ValueError, match="unknown sprint phase"):
        team_store.update_sprint(store, row.id, phase="dreaming")


def test_current_sprint_and_recipes_are_readable_for_a_live_view(any_db_url: str) -> None:
    store = Store(any_db_url)
    assert team_store.current_sprint(store) is None and team_store.list_recipes(store) == []
    a = team_store.start_sprint(store, "s", 1, SprintRecord(SprintRequest(), 1.0))
    team_store.update_sprint(store, a.id, phase="done", status="done")
    b = team_store.start_sprint(store, "s", 2, SprintRecord(SprintRequest(), 2.0))
    team_store.update_sprint(store, b.id, phase="runs")
    now = team_store.current_sprint(store, "s")
    assert now is not None and (now.number, now.phase) == (2, "runs")
    team_store.update_sprint(store, b.id, phase="done", status="done")
    last = team_store.current_sprint(store)
    assert last is not None and last.number == 2 and last.status == "done"
    part = Part("rope+x", ("rope",), {"lr": 0.003}, parts=("rope", "x"),
                selection={"ratio": 1.5})
    team_store.save_recipe(store, "s", "rope+x", recipe=part, selection={"ratio": 1.5})
    team_store.save_recipe(store, "s", "rope+x", recipe=part, selection={"ratio": 1.5},
                           status="confirmed", confirmation={"ratio": 1.3})
    (r,) = team_store.list_recipes(store, "s")
    assert (r.name, r.status, r.recipe, r.confirmation) == ("rope+x", "confirmed", part,
                                                           {"ratio": 1.3})


def test_sessions_and_run_key_queries(any_db_url: str) -> None:
    store = Store(any_db_url)
    got = team_store.open_session(store, "auto", seed=3, setup={"sprints": 2})
    again = team_store.open_session(store, "auto", seed=9, setup={"sprints": 5})
    assert again["seed"] == got["seed"] == 3 and again["setup"] == {"sprints": 2}
    assert [s["name"] for s in team_store.list_sessions(store)] == ["auto"]
    eid = store.upsert_experiment("e", {}, workload="charlm")
    store.ensure_runs(eid, [("a", 0, "k0", {}), ("a", 1, "k1", {})])
    run = store.runs(eid)[0]
    store.claim(run["id"])
    store.finish(run["id"], "finished", None, {"val_loss": 2.5}, [], {})
    assert team_store.finished_run_keys(store, ["k0", "k1", "k9"]) == {run["run_key"]}
    assert team_store.finished_values(store, ["k0", "k1"], "val_loss") == {run["run_key"]: 2.5}
    held = team_store.experiments_with_runs(store, ["k0", "k1", "k9"])
    assert list(held) == ["e"] and held["e"][1] == {"k0", "k1"}
    assert team_store.experiments_with_runs(store, []) == {}
