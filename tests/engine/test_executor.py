"""Executors: every run in its own process forked from a warm zygote; a crash, kill or hang
fails that run alone; results come back with the ids they were given; execute() never raises."""

import os
import signal
import subprocess
import sys
import time

from conftest import MICRO

from airlab.executors.base import Job
from airlab.executors.inprocess import InProcessExecutor
from airlab.executors.local import LocalExecutor
from airlab.plan import resolve
from airlab.run.execute import execute


def cfg(**kw):
    budget = kw.pop("budget", {"tokens": 4096})
    seed = kw.pop("seed", 42)
    return resolve(budget=budget, seed=seed, options={**MICRO, **kw}).to_dict()


def test_pool_runs_several_jobs_and_results_come_back_with_their_ids() -> None:
    ex = LocalExecutor(workers=2, threads=1)
    # Each job has its own budget, so a result handed back under the wrong id would show.
    jobs = [Job(f"j{i}", cfg(budget={"tokens": 1024 * (i + 2)}, seed=i)) for i in range(4)]
    events: list[tuple[str, str]] = []
    results = {j.id: r for j, r in ex.run(jobs, lambda j, e: events.append((j.id, e["type"])))}
    assert sorted(results) == ["j0", "j1", "j2", "j3"]
    for i in range(4):
        r = results[f"j{i}"]
        assert r.state == "finished", r.reason
        assert r.metrics["tokens"] == 1024 * (i + 2)
        assert r.metrics["peak_mem_mb"] > 10  # the run's own process's high-water mark
        assert r.info["energy_source"].startswith("estimate: ")
        assert r.info["provenance"]["threads"] == 1
        assert (f"j{i}", "eval") in events


def test_the_pool_is_as_deterministic_as_training_in_process() -> None:
    config = cfg(budget={"tokens": 6000})
    pool = LocalExecutor(workers=2, threads=1)
    a, b = (r for _, r in pool.run([Job("a", config), Job("b", config)]))
    [(_, c)] = list(InProcessExecutor().run([Job("c", config)]))  # conftest: 1 thread here too
    assert a.metrics["val_loss"] == b.metrics["val_loss"] == c.metrics["val_loss"]
    assert [p["val_loss"] for p in a.curve] == [p["val_loss"] for p in c.curve]


def test_failures_stay_local_bad_data_and_a_timeout() -> None:
    ex = LocalExecutor(workers=2, threads=1)
    jobs = [
        Job("ok", cfg()),
        Job("missing-data", {**cfg(), "dataset": "file:/nonexistent/corpus.txt"}),
        Job("hang", cfg(budget={"seconds": 120}), timeout_s=4),
    ]
    results = {j.id: r for j, r in ex.run(jobs)}
    assert results["ok"].state == "finished"
    assert results["missing-data"].state == "failed"
    assert "/nonexistent/corpus.txt" in results["missing-data"].reason
    assert not results["missing-data"].infra  # the config's fault: retrying will not help
    assert results["hang"].state == "failed"
    assert results["hang"].reason == "timeout after 4 s"
    assert results["hang"].info["worker_wall_seconds"] < 30


def test_a_worker_killed_by_sigkill_is_a_failed_infra_run() -> None:
    ex = LocalExecutor(workers=1, threads=1)
    killed: list[int] = []

    def on_event(job: Job, ev: dict) -> None:
        if ev["type"] == "started":
            killed.append(ev["pid"])
        elif ev["type"] == "eval" and ev["step"] > 0 and len(killed) == 1:
            os.kill(killed[0], signal.SIGKILL)  # mid-training, as the OOM killer would
            killed.append(-1)

    [(j, r)] = list(ex.run([Job("victim", cfg(budget={"seconds": 60}, eval_points=60))],
                           on_event))
    assert killed[1:] == [-1], "the test never got to kill the worker"
    assert r.state == "failed"
    assert r.reason.startswith("worker killed by SIGKILL (out of memory?)")
    assert r.infra is True
    assert r.info["worker_wall_seconds"] < 30


def test_shutdown_kills_what_runs() -> None:
    ex = LocalExecutor(workers=1, threads=1)
    results = []
    for _, r in ex.run([Job("long", cfg(budget={"seconds": 60}, eval_points=60)),
                        Job("never", cfg())],
                       lambda j, e: ex.shutdown() if e["type"] == "eval" and e["step"] else None):
        results.append(r)
    assert [r.state for r in results] == ["failed", "failed"]
    assert results[0].reason.startswith("worker killed by SIGKILL") and results[0].infra
    assert results[1].reason == "cancelled before it started"


def test_memory_limit_turns_into_an_out_of_memory_result() -> None:
    ex = LocalExecutor(workers=1, threads=1, mem_limit_mb=300)  # below torch's own mappings
    [(j, r)] = list(ex.run([Job("small-mem", cfg())]))
    assert r.state == "failed"
    assert "out of memory" in r.reason or "killed" in r.reason, r.reason


def test_execute_never_raises() -> None:
    bad = execute({**cfg(), "lr": -1.0})
    assert bad.state == "failed" and bad.reason.startswith("invalid config: lr")
    unknown = execute({**cfg(), "optimizer": "adamx"})
    assert unknown.state == "failed" and "unknown optimizer 'adamx'" in unknown.reason
    assert execute(cfg()).state == "finished"


def test_executors_import_no_torch() -> None:
    code = ("import sys, airlab.executors.local, airlab.executors.inprocess, airlab.run.execute;"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_runs_die_with_airlab_even_when_it_is_sigkilled(tmp_path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys\n"
        "from airlab.executors.base import Job\n"
        "from airlab.executors.local import LocalExecutor\n"
        f"job = Job('long', {cfg(budget={'seconds': 120})!r})\n"
        "def on_event(job, ev):\n"
        "    if ev['type'] == 'eval':\n"
        "        print(ev.get('step'), flush=True)\n"
        "    if ev['type'] == 'started':\n"
        "        print('pid', ev['pid'], flush=True)\n"
        "for _ in LocalExecutor(1, threads=1).run([job], on_event):\n"
        "    pass\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = None
    for line in parent.stdout:  # wait until the run is training
        if line.startswith("pid "):
            child = int(line.split()[1])
        elif child is not None:
            break
    assert child is not None and os.path.exists(f"/proc/{child}")
    parent.kill()
    parent.wait(timeout=10)
    for _ in range(100):
        if not os.path.exists(f"/proc/{child}") or _zombie(child):
            break
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{child}") or _zombie(child), "the run outlived airlab"


def _zombie(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
