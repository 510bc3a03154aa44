"""Live data: evaluation points and heartbeats stored while runs train (airlab.store.live).

The tests that take ``any_db_url`` are store contract tests: they run on SQLite and on a real
PostgreSQL server (tests/store/test_postgres.py checks they do).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import MICRO
from sqlalchemy import text

from airlab.errors import AirlabError
from airlab.store import LiveWriter, Store, load_live_points, load_live_progress
from airlab.store.live import live_totals


def _plan(s: Store, n: int = 2) -> list[int]:
    eid = s.upsert_experiment("live", {"x": 1}, workload="charlm")
    rows = s.ensure_runs(eid, [(f"arm{i}", 42, f"k{i}", {"i": i}) for i in range(n)])
    return [r["id"] for r in rows]


def _eval(step: int, tokens: int, loss: float) -> dict[str, object]:
    return {"type": "eval", "step": step, "tokens": tokens, "train_seconds": step / 10,
            "flops": tokens * 1e3, "val_loss": loss, "val_bpc": loss * 1.44,
            **({"train_loss": loss + 0.1} if step else {})}


def test_points_and_heartbeats_are_stored_while_a_run_goes(any_db_url: str) -> None:
    s = Store(any_db_url)
    a, b = _plan(s)
    before = live_totals()
    with LiveWriter(s, flush_s=0.05) as w:
        w.event(a, 1, {"type": "started", "pid": 1})
        w.event(a, 1, _eval(0, 0, 4.0))
        w.event(a, 1, {"type": "step", "step": 10, "progress": 0.25, "loss": 3.5, "lr": 1e-3,
                       "tokens": 1000, "train_seconds": 1.0})
        w.event(b, 1, _eval(0, 0, 4.1))
        deadline = time.time() + 30
        while time.time() < deadline and not load_live_points(s, [a])[a]:
            time.sleep(0.05)  # written by the writer's thread, not by event()
        mid = load_live_points(s, [a, b])
        assert [p["val_loss"] for p in mid[a]] == [4.0] and len(mid[b]) == 1
        beat = load_live_progress(s, [a])[a]
        assert beat["phase"] == "training" and beat["step"] == 10 and beat["unit"] == "tokens"
        assert beat["units_per_s"] == pytest.approx(1000.0) and beat["eta_s"] >= 0
        w.event(a, 1, _eval(20, 2000, 3.0))
        w.event(a, 1, {"type": "done", "step": 40, "progress": 1.0, "tokens": 4000,
                       "train_seconds": 4.0})
        w.event(a, 1, {"type": "no such type"})  # ignored
    pts = load_live_points(s, [a, b])
    assert [(p["step"], p["units"], p["val_loss"]) for p in pts[a]] == [(0, 0.0, 4.0),
                                                                        (20, 2000.0, 3.0)]
    assert pts[a][1]["val_bpc"] == pytest.approx(3.0 * 1.44) and pts[a][1]["train_loss"] == 3.1
    beat = load_live_progress(s, [a, b])
    assert beat[a]["phase"] == "done" and beat[a]["eta_s"] == 0 and beat[a]["progress"] == 1.0
    assert beat[b]["phase"] == "starting"  # an eval point only: no progress known yet
    after = live_totals()
    assert after.events - before.events == 7 and after.points - before.points == 3
    assert after.flushes > before.flushes and after.errors == before.errors


def test_a_new_attempt_keeps_the_old_points_and_reads_latest_first(any_db_url: str) -> None:
    s = Store(any_db_url)
    a, _ = _plan(s)
    with LiveWriter(s) as w:
        for step, loss in ((0, 4.0), (10, 3.5), (20, 3.2)):
            w.event(a, 1, _eval(step, step * 100, loss))
    with LiveWriter(s) as w:  # the run claimed again (its worker was killed)
        w.event(a, 2, _eval(0, 0, 4.0))
    assert [p["step"] for p in load_live_points(s, [a])[a]] == [0]
    every = load_live_points(s, [a], attempt="all")[a]
    assert [(p["attempt"], p["step"]) for p in every] == [(1, 0), (1, 10), (1, 20), (2, 0)]


def test_a_restart_inside_one_claim_starts_the_curve_over(any_db_url: str) -> None:
    """Ray retries a task whose worker died under the same claim: step 0 comes again."""
    s = Store(any_db_url)
    a, _ = _plan(s)
    with LiveWriter(s, flush_s=0.05) as w:
        w.event(a, 1, _eval(0, 0, 4.0))
        w.event(a, 1, _eval(10, 1000, 3.5))
        w.flush()
        w.event(a, 1, _eval(0, 0, 4.0))  # the retry
        w.event(a, 1, _eval(10, 1000, 3.4))
    assert [(p["step"], p["val_loss"]) for p in load_live_points(s, [a])[a]] == [
        (0, 4.0), (10, 3.4)]


def test_an_older_database_gains_the_live_tables_and_reads_empty_before(any_db_url: str) -> None:
    s = Store(any_db_url)
    a, b = _plan(s)
    with s.writing() as c:  # a database written before live data existed
        c.execute(text("DROP TABLE live_points"))
        c.execute(text("DROP TABLE live_progress"))
    s.close()
    ro = Store(any_db_url, readonly=True)
    assert not ro.has_table("live_points")
    assert load_live_points(ro, [a, b]) == {a: [], b: []} and load_live_progress(ro, [a]) == {}
    with pytest.raises(AirlabError, match="writable"):
        LiveWriter(ro)
    ro.close()
    s2 = Store(any_db_url)  # a writable open adds the tables; every row is kept
    assert s2.has_table("live_points") and s2.has_table("live_progress")
    assert [r["id"] for r in s2.runs(s2.experiment("live")["id"])] == [a, b]
    with LiveWriter(s2) as w:
        w.event(a, 1, _eval(0, 0, 4.0))
    assert len(load_live_points(s2, [a])[a]) == 1


def test_a_run_killed_mid_way_keeps_the_points_it_had(shared_data: Path, tmp_path: Path
                                                      ) -> None:
    """Real training in the local pool, killed by its timeout (SIGKILL): the result stores no
    curve, the live table keeps every point evaluated before the kill."""
    from airlab.executors.local import LocalExecutor
    from airlab.experiment import execute_runs
    from airlab.settings import get_settings
    from airlab.spec import Arm, ExperimentSpec

    settings = get_settings()
    s = Store(f"sqlite:///{tmp_path / 'lab.db'}")
    spec = ExperimentSpec(name="killed", workload="charlm", dataset="shakespeare",
                          budget={"tokens": 5e6}, options={**MICRO, "eval_points": 500},
                          baseline=Arm(name="base"), arms=[], seeds=[1], timeout_s=8)
    ex = LocalExecutor(1, threads=1, settings=settings)
    counts = execute_runs(spec, s, ex, settings=settings)
    ex.shutdown()
    [row] = counts.rows
    assert row["state"] == "failed" and row["reason"] == "timeout after 8 s"
    assert s.curve(row["id"]) == []  # the killed process returned no result
    pts = load_live_points(s, [row["id"]])[row["id"]]
    assert len(pts) >= 3, pts  # step 0 and the marks reached before the kill
    assert [p["step"] for p in pts] == sorted(p["step"] for p in pts) and pts[0]["step"] == 0
    assert all(p["val_loss"] is not None for p in pts)
    beat = load_live_progress(s, [row["id"]])[row["id"]]
    assert beat["phase"] == "training" and 0 < beat["progress"] < 1 and beat["units"] > 0


def test_only_numbers_from_known_events_reach_the_store(any_db_url: str) -> None:
    """Events come from runs that may execute generated code: text, nesting, flags and
    unbounded keys never reach the live tables."""
    s = Store(any_db_url)
    a, _ = _plan(s)
    hostile = {"type": "eval", "step": 0, "tokens": 0, "train_seconds": 0.0, "flops": 0,
               "val_loss": 4.0, "val_note": "<script>x</script>" * 1000,
               "val_nested": {"a": 1}, "val_flag": True, "Val_Upper": 1.0,
               **{f"val_k{i}": float(i) for i in range(100)}}
    with LiveWriter(s) as w:
        w.event(a, 1, hostile)
        w.event(a, 1, {"type": "exec", "step": 1})  # unknown type
        w.event(a, 1, ["not", "a", "dict"])  # type: ignore[arg-type]
    [p] = load_live_points(s, [a])[a]
    assert p["val_loss"] == 4.0
    assert all(isinstance(v, int | float) or v is None for v in p.values()), p
    assert not {"val_note", "val_nested", "val_flag", "Val_Upper"} & set(p)
    assert len(p) <= 40  # bounded, whatever the event carried


def test_a_heartbeat_outlives_a_flush_and_a_new_attempt_starts_clean(any_db_url: str) -> None:
    s = Store(any_db_url)
    a, _ = _plan(s)
    step = {"type": "step", "step": 10, "progress": 0.5, "loss": 3.0, "lr": 1e-3,
            "tokens": 1000, "train_seconds": 1.0}
    with LiveWriter(s, flush_s=3600) as w:
        w.event(a, 1, step)
        w.flush()
        w.event(a, 1, _eval(20, 2000, 3.1))  # after a flush: merges into the same heartbeat
        w.flush()
        beat = load_live_progress(s, [a])[a]
        assert beat["phase"] == "training" and beat["progress"] == 0.5 and beat["step"] == 20
        assert beat["lr"] == 1e-3 and beat["units"] == 2000
        w.event(a, 2, _eval(0, 0, 4.0))  # claimed again: the old attempt's figures are gone
    beat = load_live_progress(s, [a])[a]
    assert beat["attempt"] == 2 and beat["phase"] == "starting" and beat["step"] == 0
    assert beat["progress"] is None and beat["lr"] is None and beat["eta_s"] is None
