"""The ideas tracker on a real store: statuses, scored predictions and the prediction record,
from a real tiny experiment (charlm tiny, 20k tokens, 2 seeds) built from an idea."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from airlab.agents import status as tracker
from airlab.agents.knowledge import get_idea, idea_spec, load_ideas
from airlab.analysis.compare import analyze
from airlab.executors.inprocess import InProcessExecutor
from airlab.experiment import enqueue, run_experiment
from airlab.settings import get_settings
from airlab.spec import Arm, ExperimentSpec
from airlab.store import Store
from airlab.store.predictions import load_predictions, save_prediction

# As tests/conftest.py finds it (tests/agents/conftest.py shadows that module's name here).
SHARED_DATA = (Path(__file__).resolve().parents[2].parent / "shared" / "data").resolve()
IDEA = "tuned_peak_lr"  # runnable, no ablation arm: baseline and the idea's arm
TOKENS = 20_000


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real experiment testing IDEA, shared by the tests of this module (it is the slow
    part). Each test opens its own Store on the same database."""
    if not (SHARED_DATA / "tinyshakespeare" / "input.txt").exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    import torch

    torch.set_num_threads(1)
    home = tmp_path_factory.mktemp("status_lab")
    settings = dataclasses.replace(get_settings(db=f"sqlite:///{home / 'lab.db'}", home=home),
                                   data_dir=SHARED_DATA, cache_dir=home / "cache")
    store = Store(settings.db_url)
    spec = idea_spec(IDEA, seeds=[42, 137], budget={"tokens": TOKENS})
    # A smaller held-out subset than the 16k-token default: evaluation was most of the time.
    spec = spec.model_copy(update={"options": {**spec.options, "eval_tokens": 4096}})
    out = run_experiment(spec, store, InProcessExecutor(settings=settings), settings=settings)
    assert out.verdict is not None and out.verdict.rating >= 1
    store.close()
    return {"url": settings.db_url, "name": spec.name, "settings": settings}


def _paired_delta(store: Store, name: str, arm: str, ref: str, metric: str) -> float:
    """Mean over seeds of arm - reference, read straight from the stored runs."""
    exp = store.experiment(name)
    assert exp is not None
    rows = [r for r in store.runs(exp["id"]) if r["state"] == "finished"]
    mets = store.metrics([r["id"] for r in rows])
    by = {(r["arm"], r["seed"]): mets[r["id"]][metric] for r in rows}
    seeds = sorted({s for a, s in by if a == arm} & {s for a, s in by if a == ref})
    assert len(seeds) == 2
    return sum(by[(arm, s)] - by[(ref, s)] for s in seeds) / len(seeds)


def test_idea_spec_names_the_idea() -> None:
    spec = idea_spec(IDEA)
    assert spec.idea == IDEA
    assert [a.name for a in spec.arms][0] == IDEA


def test_empty_or_missing_store_lists_every_idea_untested(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'none.db'}", readonly=True)  # no file: empty lab
    st = tracker.idea_statuses(store)
    assert set(st) == set(load_ideas()) and len(st) >= 40
    assert {s.status for s in st.values()} == {"untested"}
    assert all(s.experiments == [] and s.scores == [] and s.effect is None for s in st.values())
    assert tracker.prediction_record(store) == []
    assert tracker.record_summary([])["hit_rate"] is None
    assert not (tmp_path / "none.db").exists()  # reading wrote nothing


def test_a_real_experiment_is_scored_against_its_prediction(lab: dict[str, Any]) -> None:
    store = Store(lab["url"])
    idea = get_idea(IDEA)
    observed = _paired_delta(store, lab["name"], IDEA, "baseline", idea.prediction.metric)
    s = tracker.score_experiment(store, lab["name"])
    assert s is not None and s["experiment"] == lab["name"] and s["idea"] == IDEA
    assert s["observed"] == pytest.approx(observed, rel=1e-9)
    p = idea.prediction
    assert s["hit"] == (p.low <= observed <= p.high)
    assert s["direction_right"] == (observed < 0)  # predicted lower
    want_miss = 0.0 if s["hit"] else min(abs(observed - p.low), abs(observed - p.high))
    assert s["miss_by"] == pytest.approx(want_miss)
    assert s["error"] == pytest.approx(observed - p.expected)
    assert s["budget_match"] is False  # run at 20k tokens, predicted for 200k
    a = analyze(store, lab["name"])
    row = tracker.idea_row(a, idea)
    assert row is not None and row.arm == IDEA
    assert s["decided"] == tracker.arm_status(a, row) in tracker.STATUSES

    # Stored once per experiment: scoring again replaces the row.
    rows = load_predictions(store)
    assert len(rows) == 1 and rows[0]["idea"] == IDEA
    assert rows[0]["observed"] == pytest.approx(observed)
    assert rows[0]["score"]["hit"] == s["hit"]
    tracker.score_experiment(store, lab["name"], analysis=a)
    assert len(load_predictions(store)) == 1 and load_predictions(store, "muon") == []


def test_status_and_record_come_from_the_store(lab: dict[str, Any]) -> None:
    store = Store(lab["url"], readonly=True)
    st = tracker.idea_statuses(store)[IDEA]
    a = analyze(store, lab["name"])
    row = tracker.idea_row(a, get_idea(IDEA))
    assert row is not None
    assert st.status == tracker.arm_status(a, row)
    assert st.status not in ("untested", "running")
    assert st.experiments == [lab["name"]]
    assert len(st.scores) == 1 and st.effect == pytest.approx(st.scores[0]["observed"])
    eff = row.efficiency
    assert eff is not None
    want_ratio = eff.ratio["train_seconds"][0]
    assert st.ratio == (pytest.approx(want_ratio) if math.isfinite(want_ratio) else None)
    assert st.rating is not None and 1 <= st.rating <= 10
    rec = tracker.prediction_record(store)
    assert len(rec) == 1 and rec[0]["scored"] == 1 and rec[0]["hits"] == int(st.scores[0]["hit"])
    summary = tracker.record_summary(rec)
    assert summary["scored"] == 1 and summary["hits"] == rec[0]["hits"]
    assert st.to_dict()["name"] == IDEA  # JSON-ready


def test_ratio_predictions_use_the_named_ratio(lab: dict[str, Any]) -> None:
    """kind ratio: time_to_target is the arm's speed-up; another metric is arm / reference."""
    store = Store(lab["url"], readonly=True)
    idea = get_idea(IDEA)
    a = analyze(store, lab["name"])
    row = tracker.idea_row(a, idea)
    assert row is not None
    ttt = idea.model_copy(update={"prediction": idea.prediction.model_copy(update={
        "metric": "time_to_target", "kind": "ratio", "direction": "higher", "expected": 1.5,
        "low": 1.1, "high": 3.0})})
    got = tracker.observed_effect(store, a, ttt)
    assert got == tracker.time_to_target_ratio(a, row)
    secs = idea.model_copy(update={"prediction": idea.prediction.model_copy(update={
        "metric": "train_seconds", "kind": "ratio", "direction": "higher", "expected": 1.5,
        "low": 1.1, "high": 3.0})})
    exp = store.experiment(lab["name"])
    assert exp is not None
    runs = [r for r in store.runs(exp["id"]) if r["state"] == "finished"]
    mets = store.metrics([r["id"] for r in runs])
    mean = {arm: sum(mets[r["id"]]["train_seconds"] for r in runs if r["arm"] == arm) / 2
            for arm in ("baseline", IDEA)}
    assert tracker.observed_effect(store, a, secs) == pytest.approx(
        mean[IDEA] / mean["baseline"])
    s = tracker.score_experiment(store, lab["name"], analysis=a, ideas={IDEA: secs}, save=False)
    assert s is not None and s["kind"] == "ratio" and s["metric"] == "train_seconds"


def test_pending_runs_make_an_idea_running_and_untagged_experiments_are_ignored(
        lab: dict[str, Any]) -> None:
    store = Store(lab["url"])
    spec = idea_spec("rope", seeds=[42, 137], budget={"tokens": TOKENS})
    enqueue(spec, store, settings=lab["settings"])  # stored as pending, nothing runs
    plain = ExperimentSpec(name="plain", hypothesis="tests no idea", budget={"tokens": TOKENS},
                           baseline=Arm(name="base"), arms=[Arm(name="rope", use=["rope"])],
                           seeds=[42, 137])
    enqueue(plain, store, settings=lab["settings"])
    st = tracker.idea_statuses(store)
    assert st["rope"].status == "running" and st["rope"].scores == []
    assert st["rope"].experiments == [spec.name]
    assert tracker.score_experiment(store, "plain") is None  # tests no idea
    assert tracker.score_experiment(store, "no-such-experiment") is None
    assert st[IDEA].status not in ("untested", "running")
    assert sum(s.status != "untested" for s in st.values()) == 2


def test_save_prediction_replaces_by_experiment_and_orders_by_time(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    pred = get_idea("muon").prediction.model_dump()
    for i, (exp, at) in enumerate([("b", 2.0), ("a", 1.0), ("b", 3.0)]):
        save_prediction(store, experiment=exp, idea="muon", prediction=pred,
                        observed=-0.1 * (i + 1), score={"hit": True, "miss_by": math.nan},
                        decided="better", created_at=at)
    rows = load_predictions(store)
    assert [(r["experiment"], r["created_at"]) for r in rows] == [("a", 1.0), ("b", 3.0)]
    assert rows[1]["observed"] == pytest.approx(-0.3)
    assert rows[1]["score"] == {"hit": True, "miss_by": None}  # NaN is not JSON
