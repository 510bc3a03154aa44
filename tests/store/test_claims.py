"""Claims with owners and leases: real processes sharing one SQLite store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from airlab.errors import AirlabError
from airlab.store import Store, owner_id


def _plan(s: Store, n: int, name: str = "e") -> int:
    eid = s.upsert_experiment(name, {"x": 1}, workload="charlm")
    s.ensure_runs(eid, [(f"arm{i}", 42, f"k{i}", {"i": i}) for i in range(n)])
    return eid


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


CLAIMER = """
import json, os, sys, time
from airlab.store import Store, owner_id
url, eid, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = Store(url)
me = owner_id()
print("ready", flush=True)
while not os.path.exists(go):  # all claimers start together, so their claims interleave
    time.sleep(0.005)
got = []
while True:
    row = s.claim_next(eid, me, lease_s=30)
    if row is None:
        break
    got.append(row["id"])
    time.sleep(0.002)  # the run's work
    assert s.heartbeat(row["id"], me, 30)
    assert s.finish(row["id"], "finished", None, {"val_loss": row["config"]["i"]}, [], {},
                    owner=me)
print(json.dumps(got))
"""


def test_processes_sharing_a_store_claim_every_run_exactly_once(any_db_url: str,
                                                                tmp_path: Path) -> None:
    s = Store(any_db_url)
    eid = _plan(s, 60)
    go = tmp_path / "go"
    procs = [subprocess.Popen(_py(CLAIMER) + [any_db_url, str(eid), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for p in procs:
        assert p.stdout and p.stdout.readline().strip() == "ready"
    go.touch()
    claimed: list[int] = []
    per_proc = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        ids = json.loads(out)
        per_proc.append(len(ids))
        claimed += ids
    rows = s.runs(eid)
    assert sorted(claimed) == sorted(r["id"] for r in rows)  # every run, none twice
    assert all(r["state"] == "finished" and r["attempts"] == 1 for r in rows)
    assert s.metrics([r["id"] for r in rows]) == {
        r["id"]: {"val_loss": float(r["config"]["i"])} for r in rows}
    assert sum(n > 0 for n in per_proc) >= 2, per_proc  # the work was really shared


def test_an_expired_lease_is_taken_over_and_the_old_owner_cannot_finish(any_db_url: str) -> None:
    s = Store(any_db_url)
    eid = _plan(s, 1)
    # A real process claims the run with a short lease, then dies without finishing.
    p = subprocess.Popen(_py("""
        import sys, time
        from airlab.store import Store, owner_id
        s = Store(sys.argv[1])
        row = s.claim_next(int(sys.argv[2]), owner_id(), lease_s=1.0)
        print(owner_id(), flush=True)
        time.sleep(600)
        """) + [any_db_url, str(eid)], stdout=subprocess.PIPE, text=True)
    try:
        dead_owner = p.stdout.readline().strip() if p.stdout else ""
        assert dead_owner.endswith(f":{p.pid}")
        me = owner_id("taker")
        assert s.claim_next(eid, me, lease_s=30) is None  # its lease still holds
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    time.sleep(1.1)
    row = s.claim_next(eid, me, lease_s=30)
    assert row is not None and row["owner"] == me and row["attempts"] == 2
    assert "taken over" in row["reason"] and dead_owner in row["reason"]
    rid = row["id"]
    # The old owner lost it: its heartbeat says so, and its result is refused.
    assert not s.heartbeat(rid, dead_owner, 30)
    assert not s.finish(rid, "finished", None, {"val_loss": 9.0}, [], {}, owner=dead_owner)
    assert s.heartbeat(rid, me, 30)
    assert s.finish(rid, "finished", None, {"val_loss": 1.0}, [], {"by": "taker"}, owner=me)
    # A finished result is never overwritten, with or without an owner.
    assert not s.finish(rid, "failed", "late", {"val_loss": 5.0}, [], {}, owner=me)
    assert not s.finish(rid, "finished", None, {"val_loss": 5.0}, [], {})
    got = s.run(rid)
    assert got is not None
    assert got["state"] == "finished" and got["info"] == {"by": "taker"}
    assert got["owner"] == me and got["attempts"] == 2 and got["finished_at"] >= got["started_at"]
    assert s.metrics([rid])[rid] == {"val_loss": 1.0}
    assert s.claim_next(eid, me, lease_s=30) is None


def test_release_retry_infra_and_reset_failed(any_db_url: str) -> None:
    s = Store(any_db_url)
    eid = _plan(s, 3)
    me = owner_id()
    a = s.claim_next(eid, me, 30)
    assert a is not None
    # Ctrl-C: the unfinished run goes back for anyone; another owner cannot release it.
    assert not s.release(a["id"], "elsewhere:1")
    assert s.release(a["id"], me)
    assert s.run(a["id"])["state"] == "pending"  # type: ignore[index]
    runs = [s.claim_next(eid, me, 30) for _ in range(3)]
    assert sorted(r["id"] for r in runs if r) == sorted(r["id"] for r in s.runs(eid))
    x, y, z = (r for r in runs if r)
    assert s.finish(x["id"], "failed", "worker killed by SIGKILL", {}, [], {}, owner=me,
                    infra=True)
    assert s.finish(y["id"], "failed", "diverged: loss is nan", {}, [], {}, owner=me)
    assert s.finish(z["id"], "finished", None, {"val_loss": 1.0}, [], {}, owner=me)
    assert s.run(x["id"])["infra"] and not s.run(y["id"])["infra"]  # type: ignore[index]
    # The infrastructure failure is retried up to the limit of attempts; divergence is not.
    assert s.claim_next(eid, me, 30, retry_infra_limit=0) is None
    again = s.claim_next(eid, me, 30, retry_infra_limit=3)
    assert again is not None and again["id"] == x["id"] and again["attempts"] == 3
    assert s.finish(x["id"], "failed", "worker killed", {}, [], {}, owner=me, infra=True)
    assert s.claim_next(eid, me, 30, retry_infra_limit=3) is None  # 3 attempts used
    # --retry-failed: every failed run is pending again; the finished one is kept.
    assert s.reset_failed(eid) == 2
    assert s.counts(eid) == {"pending": 2, "finished": 1}
    assert {s.claim_next(eid, me, 30)["id"] for _ in range(2)} == {  # type: ignore[index]
        x["id"], y["id"]}
    assert s.release_owned(eid, me) == 2
    with pytest.raises(ValueError, match="states"):
        s.claim_next(eid, me, 30, states=("finished",))


def test_a_run_that_keeps_losing_its_claimer_is_failed_after_the_limit(any_db_url: str) -> None:
    s = Store(any_db_url)
    eid = _plan(s, 1)
    for i in range(2):
        row = s.claim_next(eid, f"host:{i}", lease_s=0.05, retry_infra_limit=2)
        assert row is not None and row["attempts"] == i + 1
        time.sleep(0.1)  # its claimer never heartbeats
    assert s.claim_next(eid, "host:9", lease_s=30, retry_infra_limit=2) is None
    r = s.runs(eid)[0]
    assert r["state"] == "failed" and r["infra"] and "lost" in r["reason"]


def test_recover_interrupted_keeps_live_leased_claims(any_db_url: str) -> None:
    s = Store(any_db_url)
    eid = _plan(s, 3)
    p = subprocess.Popen(["sleep", "60"])
    try:
        live = f"{owner_id().split(':')[0]}:{p.pid}"
        a = s.claim_next(eid, live, 30)
        b = s.claim_next(eid, "otherhost:1", 30)  # another host: its lease decides
        c = s.claim_next(eid, f"{live.split(':')[0]}:999999999", 30)  # no such process
        assert a and b and c
        assert s.recover_interrupted(eid) == 1
        states = {r["id"]: r["state"] for r in s.runs(eid)}
        assert states == {a["id"]: "running", b["id"]: "running", c["id"]: "pending"}
        # The single-process pipeline (claim without a lease) still refuses a second airlab.
        assert s.release(a["id"], live)
        with s.writing() as conn:
            from sqlalchemy import update

            from airlab.store.tables import runs
            conn.execute(update(runs).where(runs.c.id == a["id"]).values(
                state="running", owner=live, lease_until=None))
        with pytest.raises(AirlabError, match=f"process {p.pid}"):
            s.recover_interrupted(eid)
    finally:
        p.kill()
        p.wait()
    assert s.recover_interrupted(eid) == 1  # its owner is gone now


def test_a_heartbeat_thread_keeps_a_short_lease_while_the_main_thread_writes(
        any_db_url: str) -> None:
    """How the pipeline uses it: one thread beats while the run executes and others finish."""
    import threading

    s = Store(any_db_url)
    eid = _plan(s, 6)
    me = owner_id()
    lease = 0.3
    long_run = s.claim_next(eid, me, lease)
    assert long_run is not None
    beats: list[bool] = []
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease / 4):
            ok = s.heartbeat(long_run["id"], me, lease)
            beats.append(ok)
            if not ok:
                return

    t = threading.Thread(target=beat)
    t.start()
    try:
        other = owner_id("other")
        for _ in range(5):  # meanwhile another claimer takes and finishes everything else
            row = s.claim_next(eid, other, lease)
            assert row is not None and row["id"] != long_run["id"]
            time.sleep(lease / 3)
            assert s.finish(row["id"], "finished", None, {}, [], {}, owner=other)
        time.sleep(2 * lease)  # past the first lease: only the heartbeats keep it
        assert s.claim_next(eid, other, lease) is None
        assert s.finish(long_run["id"], "finished", None, {"val_loss": 1.0}, [], {}, owner=me)
        t.join(timeout=5)  # its next beat learns the run is no longer held, and stops
        assert not t.is_alive() and beats[-1] is False and all(beats[:-1]) and len(beats) > 5
    finally:
        stop.set()
        t.join()
    assert s.counts(eid) == {"finished": 6}
    assert s.run(long_run["id"])["attempts"] == 1  # type: ignore[index]
