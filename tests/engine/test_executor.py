"""The local executor runs each job in its own process; a crash, kill or hang fails one run."""

import os
import signal
import threading
import time

from conftest import MICRO

from airlab.executors.base import Job
from airlab.executors.local import LocalExecutor
from airlab.plan import resolve


def cfg(**kw):
    budget = kw.pop("budget", {"tokens": 4000})
    return resolve(budget=budget, options={**MICRO, **kw}).to_dict()


def test_jobs_run_in_parallel_workers_and_failures_stay_local() -> None:
    ex = LocalExecutor(workers=2)
    assert ex.threads == max(1, (os.cpu_count() or 1) // 2)
    events: list[tuple[str, str]] = []
    jobs = [
        Job("ok", cfg()),
        Job("missing-data", {**cfg(), "dataset": "file:/nonexistent/corpus.txt"}),
        Job("hang", cfg(budget={"seconds": 120}), timeout_s=6),
    ]
    results = {j.id: r for j, r in ex.run(jobs, lambda j, e: events.append((j.id, e["type"])))}
    assert results["ok"].state == "finished"
    assert results["ok"].metrics["val_loss"] > 0
    assert ("ok", "eval") in events
    assert results["missing-data"].state == "failed"
    assert "/nonexistent/corpus.txt" in results["missing-data"].reason
    assert results["hang"].state == "failed"
    assert results["hang"].reason == "timeout after 6 s"


def test_a_killed_worker_is_a_failed_run() -> None:
    ex = LocalExecutor(workers=1)
    job = Job("victim", cfg(budget={"seconds": 60}))

    def killer() -> None:
        # Kill the worker once it is training (its process is the executor's only child).
        for _ in range(200):
            procs = list(ex._procs)
            if procs:
                time.sleep(3)
                procs[0].send_signal(signal.SIGKILL)
                return
            time.sleep(0.05)

    threading.Thread(target=killer, daemon=True).start()
    [(j, r)] = list(ex.run([job]))
    assert r.state == "failed"
    assert r.reason == "worker killed by SIGKILL (out of memory?)"


def test_memory_limit_turns_into_a_failed_run() -> None:
    ex = LocalExecutor(workers=1, mem_limit_mb=300)  # too little to even import torch fully
    [(j, r)] = list(ex.run([Job("small-mem", cfg())]))
    assert r.state == "failed"
    assert r.reason
