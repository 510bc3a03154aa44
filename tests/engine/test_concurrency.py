"""Several airlab processes on one store split the work: each run is executed exactly once, a
claim whose owner stopped heartbeating is taken over, and a stale owner's result is refused."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airlab.check import load_checked
from airlab.executors.inprocess import InProcessExecutor
from airlab.experiment import execute_claimed
from airlab.plan import plan_runs
from airlab.settings import get_settings
from airlab.store import Store, owner_id

_SCRIPT = shutil.which("airlab", path=str(Path(sys.executable).parent))

SPEC = """\
name: concurrent
hypothesis: two processes, each run once
dataset: pycode
budget: {{tokens: 2000}}
options: {{n_layer: 1, n_head: 2, n_embd: 32, block_size: 32, batch_size: 8, warmup_steps: 5,
          eval_points: 2, eval_tokens: 512}}
arms:
  - name: rope
    use: [rope]
seeds: {seeds}
"""


@pytest.mark.slow  # ~20 s; CI keeps tests/store/test_claims.py's processes sharing a store
@pytest.mark.skipif(_SCRIPT is None, reason="the airlab console script is not installed")
def test_two_concurrent_runs_of_one_spec_execute_each_run_once(tmp_path: Path) -> None:
    spec = tmp_path / "c.yaml"
    spec.write_text(SPEC.format(seeds=[1, 2, 3]))
    db = tmp_path / "lab.db"
    cmd = [str(_SCRIPT), "--home", str(tmp_path / "lab"), "--db", f"sqlite:///{db}", "run",
           str(spec)]
    env = {**os.environ, "COLUMNS": "200"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-2000:] + err[-2000:]
    ran = []
    for out, _ in outs:
        m = re.search(r"6 runs planned, (\d+) reused, (\d+) run \((\d+) failed\)", out)
        assert m, out[-2000:]
        ran.append(int(m[2]))
    assert sum(ran) == 6, ran  # the work was split, not done twice
    con = sqlite3.connect(db)
    got = con.execute("select state, attempts, owner from runs").fetchall()
    assert len(got) == 6 and all(s == "finished" and a == 1 for s, a, _ in got), got
    assert len({o for *_, o in got}) == 2 or 0 in ran  # both took part unless one was late


def _planned(tmp_path: Path, seeds: list[int]) -> tuple[Store, int, object]:
    spec_file = tmp_path / "c.yaml"
    spec_file.write_text(SPEC.format(seeds=seeds).replace("arms:\n  - name: rope\n"
                                                          "    use: [rope]\n", ""))
    settings = get_settings()
    spec = load_checked(str(spec_file), settings)
    store = Store(f"sqlite:///{tmp_path / 'lab.db'}")
    eid = store.upsert_experiment(spec.name, spec.to_dict())
    store.ensure_runs(eid, [(p.arm, p.seed, p.run_key, p.config.to_dict())
                            for p in plan_runs(spec, settings)])
    return store, eid, settings


def test_an_expired_claim_is_taken_over_and_the_stale_result_refused(tmp_path: Path) -> None:
    store, eid, settings = _planned(tmp_path, [1, 2])
    stale = "elsewhere:1"  # another host: only its lease tells whether it still works
    taken = store.claim_next(eid, stale, lease_s=1.0)
    assert taken is not None
    me = owner_id()
    t0 = time.time()
    done = execute_claimed(store, InProcessExecutor(settings=settings), owner=me,
                           experiment_ids=[eid], settings=settings)
    assert sorted(done.run_ids) == sorted(r["id"] for r in store.runs(eid))
    assert time.time() - t0 >= 1.0  # it waited for the lease, then took the run over
    row = store.run(taken["id"])
    assert row is not None and row["state"] == "finished" and row["attempts"] == 2
    assert row["owner"] == me
    # The stale owner comes back with a result: refused, the stored one is kept.
    assert not store.finish(taken["id"], "failed", "late", {}, [], {}, owner=stale)
    assert store.run(taken["id"])["state"] == "finished"  # type: ignore[index]


def test_max_runs_and_other_experiments_untouched(tmp_path: Path) -> None:
    store, eid, settings = _planned(tmp_path, [1, 2])
    other = store.upsert_experiment("other", {"x": 1})
    store.ensure_runs(other, [("a", 1, "k", {"workload": "charlm", "dataset": "pycode"})])
    done = execute_claimed(store, InProcessExecutor(settings=settings), owner=owner_id(),
                           experiment_ids=[eid], max_runs=1, settings=settings)
    assert len(done.run_ids) == 1 and done.executions == 1
    states = sorted(r["state"] for r in store.runs(eid))
    assert states == ["finished", "pending"]  # one executed, none left claimed
    assert [r["state"] for r in store.runs(other)] == ["pending"]


_CLAIMER = """
import sys, time
from airlab.executors.inprocess import InProcessExecutor
from airlab.experiment import execute_claimed
from airlab.settings import get_settings
from airlab.store import Store, owner_id

url, eid, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
settings = get_settings()
store = Store(url)
done = execute_claimed(store, InProcessExecutor(settings=settings), owner=owner_id(),
                       experiment_ids=[eid], settings=settings, lease_s=3.0, heartbeat_s=0.1,
                       deadline=time.time() + seconds)
print("executed", done.executions, "stored", done.stored, "refused", done.refused, flush=True)
"""


@pytest.mark.slow  # two processes claiming for a minute
def test_two_processes_claiming_for_a_minute_never_find_the_store_locked(tmp_path: Path
                                                                         ) -> None:
    """Two processes claim, heartbeat (every 0.1 s) and store results on one SQLite store for
    a minute: no write waits out the busy timeout, every run is executed exactly once."""
    store, eid, settings = _planned(tmp_path, list(range(1, 101)))
    spec = load_checked(str(tmp_path / "c.yaml"), settings)
    for extra in range(4):  # 500 runs: more than two processes finish in a minute
        seeds = list(range(100 * extra + 101, 100 * extra + 201))
        store.ensure_runs(eid, [(f"copy{extra}", p.seed, f"{p.run_key}-{extra}",
                                 p.config.to_dict())
                                for p in plan_runs(spec.model_copy(update={"seeds": seeds}),
                                                   settings)])
    store.close()
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    env = {**os.environ, "AIRLAB_SLOW_WRITE_S": "2"}
    procs = [subprocess.Popen([sys.executable, "-c", _CLAIMER, url, str(eid), "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-2000:] + err[-2000:]
        assert "locked" not in err and "held the database" not in err, err[-2000:]
    executed = [int(out.split()[1]) for out, _ in outs]
    assert all(n > 0 for n in executed), executed  # both took part
    con = sqlite3.connect(tmp_path / "lab.db")
    got = con.execute("select state, attempts from runs").fetchall()
    # Each run executed once: finished, or cut by the one-minute deadline (incomplete).
    done = [a for s, a in got if s in ("finished", "incomplete")]
    assert len(done) == sum(executed) and all(a == 1 for a in done), got[:20]
    assert all(s in ("finished", "incomplete", "pending") for s, _ in got)  # none left held
