"""The time box (``deadline``): no run starts after it, a run in flight stops at its next loss
sync and is stored 'incomplete' with its curve, unstarted runs stay pending, the analysis leaves
incomplete runs out but counts them, and the next call finishes everything with no duplicate."""

import time

from conftest import MICRO

from airlab.analysis.compare import analyze
from airlab.executors.base import Job
from airlab.executors.inprocess import InProcessExecutor
from airlab.executors.local import LocalExecutor
from airlab.experiment import run_experiment
from airlab.plan import plan_runs, resolve
from airlab.run.trainer import train
from airlab.spec import Arm, ExperimentSpec
from airlab.store import Store


def _spec(tokens: float) -> ExperimentSpec:
    return ExperimentSpec(name="boxed", budget={"tokens": tokens}, options=MICRO, seeds=[1],
                          baseline=Arm(name="base"),
                          arms=[Arm(name="hot", options={"lr": 2e-3})])


def test_a_run_past_stop_at_stops_at_its_next_sync_and_evaluates_once() -> None:
    cfg = resolve(budget={"tokens": 50_000}, seed=3, options=MICRO)
    r = train(cfg, stop_at=time.time())  # already past: stops at the first loss sync
    assert r.state == "incomplete", r.reason
    steps_per_sync = 16
    tokens = steps_per_sync * cfg.batch_size * 32  # MICRO's block_size
    assert r.reason == f"time box: stopped at {tokens:,} of 50,000 tokens"
    assert [p["step"] for p in r.curve] == [0, steps_per_sync]  # step 0, then one evaluation
    assert r.metrics["tokens"] == tokens and r.metrics["val_loss"] == r.curve[-1]["val_loss"]
    assert "sample" not in r.info  # no finishing work on a cut run
    again = train(cfg, stop_at=time.time() + 3600)  # a box that does not bind changes nothing
    assert again.state == "finished" and again.metrics["tokens"] >= 50_000


def test_deadline_cuts_the_run_in_flight_and_the_next_call_finishes_all(db_url: str) -> None:
    # ~3,900 micro steps: on any host far past the deadline (a fast CPU trained 3e5 tokens in
    # about 1 s; the box must also leave time to start the first run, 0.2-1 s measured here).
    spec = _spec(1_000_000)
    store = Store(db_url)
    plan_runs(spec)  # imports done before the clock starts
    deadline = time.time() + 1.5
    out = run_experiment(spec, store, InProcessExecutor(), deadline=deadline)
    assert time.time() < deadline + 30  # it stopped at the box, not at the end of the budget
    rows = {r["arm"]: r for r in store.runs(out.experiment_id)}
    assert [r["state"] for r in rows.values()] == ["incomplete", "pending"]
    cut, untouched = rows["base"], rows["hot"]
    assert cut["reason"].startswith("time box: stopped at ") and "of 1,000,000 tokens" in cut[
        "reason"]
    curve = store.curve(cut["id"])
    assert len(curve) >= 2 and curve[-1]["step"] > 0  # the curve up to the cut is kept
    assert store.metrics([cut["id"]])[cut["id"]]["val_loss"] is not None
    assert untouched["attempts"] == 0 and untouched["reason"] is None
    assert out.runs.incomplete == 1 and out.runs.ran == 1 and out.runs.failed == 0
    # The analysis leaves the cut run out of the statistics but counts and lists it.
    a = analyze(store, "boxed")
    base = a.rows[0]
    assert base.incomplete == 1 and base.finished == 0 and base.failed == 0
    assert base.incomplete_runs[0].startswith("seed 1: time box: stopped at")

    again = run_experiment(spec, store, InProcessExecutor())
    assert again.runs.ran == 2 and again.runs.incomplete == 0 and again.runs.reused == 0
    after = store.runs(again.experiment_id)
    assert [r["state"] for r in after] == ["finished", "finished"]
    assert len({(r["arm"], r["run_key"]) for r in after}) == len(after) == 2  # no duplicate
    assert {r["id"] for r in after} == {cut["id"], untouched["id"]}  # the same rows, replaced
    assert store.metrics([cut["id"]])[cut["id"]]["tokens"] >= 1_000_000
    assert a.rows[0].incomplete == 1 and analyze(store, "boxed").rows[0].finished == 1


def test_no_run_starts_after_the_deadline(db_url: str) -> None:
    store = Store(db_url)
    out = run_experiment(_spec(4096), store, InProcessExecutor(), deadline=time.time() - 1,
                         rate=False)
    assert out.runs.ran == 0
    assert [r["state"] for r in store.runs(out.experiment_id)] == ["pending", "pending"]


def test_local_pool_passes_the_deadline_and_kills_a_run_that_overruns_it() -> None:
    # A budget no host trains through in the box's 2 s (CI's CPU finished 3e5 tokens in time).
    cfg = resolve(budget={"tokens": 30_000_000}, seed=5, options=MICRO).to_dict()
    pool = LocalExecutor(workers=2, threads=1)
    # The second job's box ended long ago and allows no grace: killed before it can stop.
    strict = LocalExecutor(workers=1, threads=1, deadline_grace_s=0.0)
    [(_, killed)] = list(strict.run([Job("late", cfg, stop_at=time.time() - 1)]))
    assert killed.state == "failed" and killed.infra
    assert killed.reason.startswith("time box: killed")
    [(_, r)] = list(pool.run([Job("boxed", cfg, stop_at=time.time() + 2)]))
    assert r.state == "incomplete", r.reason
    assert r.reason.startswith("time box: stopped at") and len(r.curve) >= 2


def test_local_pool_takes_the_next_job_only_when_a_slot_is_free() -> None:
    cfg = resolve(budget={"tokens": 2048}, seed=1, options=MICRO).to_dict()
    done: list[str] = []
    pulled: list[tuple[str, int]] = []

    def jobs():  # a lazy source, as the claim loop gives: note how many results were out
        for i in range(3):
            pulled.append((f"j{i}", len(done)))
            yield Job(f"j{i}", cfg)

    for job, r in LocalExecutor(workers=1, threads=1).run(jobs()):
        assert r.state == "finished", r.reason
        done.append(job.id)
    assert done == ["j0", "j1", "j2"]
    assert pulled == [("j0", 0), ("j1", 1), ("j2", 2)]
