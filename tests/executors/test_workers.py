"""Many `airlab worker` processes sharing one PostgreSQL store (real processes, real server).

`airlab run SPEC --enqueue` stores the plan; workers claim and execute every run exactly once;
a worker killed mid-run (SIGKILL, on "another host": its own UTS namespace, so only its lease
tells it is gone) loses nothing: its run is taken over when the lease expires. The reading
commands (status, show, export) work on the PostgreSQL store.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MICRO

_SCRIPT = shutil.which("airlab", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(_SCRIPT is None, reason="the airlab console script is not "
                                "installed (pip install -e .)")
AIRLAB = [str(_SCRIPT)]

OPTIONS = "{" + ", ".join(f"{k}: {v}" for k, v in {**MICRO, "eval_points": 1,
                                                   "eval_tokens": 256}.items()) + "}"


def micro_spec(folder: Path, *, seeds: int, arms: int = 1, budget: str = "{tokens: 1024}",
               name: str = "micro") -> Path:
    """A spec of (1 + arms) x seeds runs, each a second or two on one core."""
    arm_lines = "".join(f"  - name: lr{i}\n    options: {{lr: {0.002 + 0.001 * i}}}\n"
                        for i in range(arms))
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nhypothesis: a higher lr changes the loss\n"
                    f"workload: charlm\ndataset: shakespeare\nbudget: {budget}\n"
                    f"seeds: {list(range(1, seeds + 1))}\noptions: {OPTIONS}\n"
                    + (f"arms:\n{arm_lines}" if arms else ""))
    return path


def airlab(*args: str, db: str, timeout: float = 300, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(AIRLAB + ["--db", db, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})})


def _rows(db: str) -> list[dict]:
    from airlab.store import Store

    s = Store(db, readonly=True)
    try:
        exp = s.experiment("micro")
        return s.runs(exp["id"]) if exp else []
    finally:
        s.close()


def _executed(out: str) -> int:
    m = re.search(r"executed (\d+) run\(s\)", out)
    assert m, out
    return int(m.group(1))


def _three_workers_run_every_run_once(tmp_path: Path, db: str, seeds: int, arms: int) -> None:
    spec = micro_spec(tmp_path, seeds=seeds, arms=arms)
    total = seeds * (1 + arms)
    p = airlab("run", str(spec), "--enqueue", "--device", "auto", db=db)
    assert p.returncode == 0, p.stderr
    assert f"{total} runs stored ({total} pending)" in p.stdout, p.stdout
    assert all(r["state"] == "pending" and r["attempts"] == 0 for r in _rows(db))
    procs = [subprocess.Popen(AIRLAB + ["--db", db, "worker", "--threads", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    executed = []
    for w in procs:
        out, err = w.communicate(timeout=900)
        assert w.returncode == 0, err[-2000:]
        executed.append(_executed(out))
    rows = _rows(db)
    assert len(rows) == total
    assert all(r["state"] == "finished" and r["attempts"] == 1 for r in rows), \
        [(r["id"], r["state"], r["attempts"], r["reason"]) for r in rows]
    assert sum(executed) == total, executed  # every run executed exactly once, by someone
    assert len({r["owner"] for r in rows}) >= 1
    # `airlab run` afterwards executes nothing: it picks up what the workers finished.
    again = airlab("run", str(spec), "--device", "cpu", db=db)
    assert again.returncode == 0, again.stderr
    assert f"{total} runs planned, {total} reused, 0 run" in again.stdout, again.stdout
    # The reading commands on the PostgreSQL store.
    st = airlab("status", db=db)
    assert st.returncode == 0 and re.search(rf"runs: {total} finished", st.stdout), st.stdout
    sh = airlab("show", "micro", "--runs", db=db)
    assert sh.returncode == 0 and "lr0" in sh.stdout, sh.stderr
    out = tmp_path / "export"
    ex = airlab("export", "--out", str(out), db=db)
    assert ex.returncode == 0, ex.stderr
    assert (out / "runs.csv").read_text().count("\n") >= total + 1


@pytest.mark.slow  # ~20-40 s on 2 cores; `make test-all` runs it
def test_three_workers_on_postgresql_execute_every_run_once(tmp_path: Path, pg_url: str,
                                                             shared_data: Path) -> None:
    _three_workers_run_every_run_once(tmp_path, pg_url, seeds=3, arms=1)


@pytest.mark.slow
def test_three_workers_on_postgresql_execute_a_30_run_spec_once(tmp_path: Path, pg_url: str,
                                                                shared_data: Path) -> None:
    _three_workers_run_every_run_once(tmp_path, pg_url, seeds=10, arms=2)


def _other_host() -> list[str]:
    """A command prefix that runs in its own UTS namespace named 'otherhost' (or skip)."""
    prefix = ["unshare", "-u"] if os.geteuid() == 0 else ["unshare", "-r", "-u"]
    probe = subprocess.run([*prefix, "sh", "-c", "hostname otherhost && hostname"],
                           capture_output=True, text=True)
    if shutil.which("unshare") is None or probe.stdout.strip() != "otherhost":
        pytest.skip(f"cannot start a process under another host name: {probe.stderr.strip()}")
    return [*prefix, "sh", "-c", 'hostname otherhost && exec "$@"', "sh"]


def test_a_worker_killed_mid_run_loses_nothing(tmp_path: Path, pg_url: str,
                                               shared_data: Path) -> None:
    db = pg_url
    spec = micro_spec(tmp_path, seeds=2, arms=0, budget="{seconds: 3}")
    assert airlab("run", str(spec), "--enqueue", db=db).returncode == 0
    env = {**os.environ, "AIRLAB_LEASE_S": "5"}
    victim = subprocess.Popen([*_other_host(), *AIRLAB, "--db", db, "worker", "--threads", "1",
                               "--max-runs", "1"], env=env, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            running = [r for r in _rows(db) if r["state"] == "running"]
            if running and (running[0]["heartbeat_at"] or 0) > 0:
                break  # claimed, and its heartbeat has beaten at least once: mid-run
            assert victim.poll() is None, victim.communicate()
            time.sleep(0.2)
        else:
            pytest.fail("the first worker never started its run")
    finally:
        os.killpg(victim.pid, signal.SIGKILL)  # the worker and its run's process: no cleanup
        victim.wait()
    [taken] = [r for r in _rows(db) if r["state"] == "running"]
    assert taken["owner"].startswith("otherhost:")
    t0 = time.time()
    p = airlab("worker", "--threads", "1", db=db, env={"AIRLAB_LEASE_S": "5"})
    assert p.returncode == 0, p.stderr
    assert _executed(p.stdout) == 2  # the pending run, then the dead worker's run
    rows = {r["id"]: r for r in _rows(db)}
    assert all(r["state"] == "finished" for r in rows.values())
    again = rows[taken["id"]]
    assert again["attempts"] == 2 and not again["owner"].startswith("otherhost:")
    assert again["reason"] is None  # a finished run keeps no failure reason
    assert time.time() - t0 < 240


def test_worker_and_device_errors_are_one_line(tmp_path: Path, db_url: str) -> None:
    p = airlab("worker", "--device", "tpu", db=db_url)
    assert p.returncode == 2 and "--device 'tpu' is not a device" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    p = airlab("worker", db=db_url, env={"AIRLAB_LEASE_S": "soon"})
    assert p.returncode == 2 and "AIRLAB_LEASE_S='soon'" in p.stderr, p.stderr
    p = airlab("run", "demo", "--executor", "spark", db=db_url)
    assert p.returncode == 2 and "--executor 'spark'" in p.stderr, p.stderr
    p = airlab("worker", db=db_url)  # an empty store: nothing to do, and it says how to fill it
    assert p.returncode == 0 and "--enqueue" in p.stdout, p.stdout + p.stderr


def test_enqueue_stores_teachers_first_and_refuses_an_unrun_sweep(tmp_path: Path,
                                                                   db_url: str) -> None:
    """Planning only (nothing trains): a distillation spec enqueues its teacher runs as a
    prerequisite experiment, which a worker serves before the students."""
    from airlab.check import load_checked
    from airlab.cli.worker import _serving
    from airlab.errors import AirlabError
    from airlab.experiment import enqueue
    from airlab.settings import get_settings
    from airlab.store import Store

    store = Store(db_url)
    spec = load_checked("distillation", get_settings())
    eid, counts = enqueue(spec, store)
    assert counts == {"pending": 9}
    teacher = store.experiment("distillation.teacher")
    assert teacher is not None and teacher["kind"] == "prerequisite"
    assert store.counts(teacher["id"]) == {"pending": 3}  # one teacher per seed
    assert _serving(store, None, None) == [teacher["id"], eid]  # teachers first
    assert _serving(store, "cpu", None) == [teacher["id"], eid]
    assert enqueue(spec, store)[1] == {"pending": 9}  # enqueuing again adds nothing
    swept = type(spec).model_validate({**spec.model_dump(), "sweep_chosen": {},
                                       "sweep": {"option": "lr", "values": [1e-3, 2e-3]}})
    with pytest.raises(AirlabError, match="sweep"):
        enqueue(swept, store)
