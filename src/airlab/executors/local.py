"""Local executor: each run in its own worker process, N at a time, threads split among them.

A crash, an out-of-memory kill or a hang (timeout) fails that run alone. Events and results
come back to the calling thread through a queue, so the caller alone writes to the store.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from airlab.executors.base import EventSink, Job
from airlab.run.trainer import RunResult


def _failed(reason: str) -> RunResult:
    return RunResult("failed", reason, {}, [], {})


class LocalExecutor:
    def __init__(self, workers: int = 1, *, threads: int | None = None,
                 timeout_s: float | None = None, mem_limit_mb: int | None = None) -> None:
        self.workers = max(1, workers)
        cores = os.cpu_count() or 1
        # Divide the cores among concurrent workers so they do not oversubscribe the CPU.
        self.threads = threads or max(1, cores // self.workers)
        self.timeout_s = timeout_s
        self.mem_limit_mb = mem_limit_mb
        self._procs: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()

    def _run_one(self, job: Job, out: queue.Queue[tuple[str, Job, Any]]) -> None:
        payload = json.dumps({"config": job.config, "threads": self.threads,
                              "mem_limit_mb": self.mem_limit_mb})
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads),
               "MKL_NUM_THREADS": str(self.threads)}
        proc = subprocess.Popen([sys.executable, "-m", "airlab.run.worker"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        with self._lock:
            self._procs.add(proc)
        timeout = job.timeout_s or self.timeout_s
        timed_out = threading.Event()

        def on_timeout() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, on_timeout) if timeout else None
        if timer:
            timer.daemon = True
            timer.start()
        stderr_tail: deque[str] = deque(maxlen=20)
        def drain_stderr() -> None:  # keep the last lines for the failure reason
            assert proc.stderr is not None
            for line in proc.stderr:
                stderr_tail.append(line)

        err_reader = threading.Thread(target=drain_stderr, daemon=True)
        err_reader.start()
        result: RunResult | None = None
        started = time.perf_counter()
        try:
            assert proc.stdin and proc.stdout
            proc.stdin.write(payload)
            proc.stdin.close()
            for line in proc.stdout:
                try:
                    msg = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if msg.get("type") == "result":
                    result = RunResult.from_dict(msg)
                else:
                    out.put(("event", job, msg))
            rc = proc.wait()
        except BrokenPipeError:
            rc = proc.wait()
        finally:
            if timer:
                timer.cancel()
            with self._lock:
                self._procs.discard(proc)
        err_reader.join(timeout=2)
        wall = time.perf_counter() - started
        if result is None:
            if timed_out.is_set():
                result = _failed(f"timeout after {timeout:g} s")
            elif rc < 0:
                name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else rc
                hint = " (out of memory?)" if rc == -signal.SIGKILL else ""
                result = _failed(f"worker killed by {name}{hint}")
            else:
                last = next((s.strip() for s in reversed(stderr_tail) if s.strip()), "")
                result = _failed(f"worker exited with code {rc}: {last[-300:]}")
        result.info.setdefault("worker_wall_seconds", wall)
        out.put(("result", job, result))

    def run(self, jobs: Sequence[Job], on_event: EventSink | None = None
            ) -> Iterator[tuple[Job, RunResult]]:
        q: queue.Queue[tuple[str, Job, Any]] = queue.Queue()
        pending = deque(jobs)
        running = 0
        try:
            while pending or running:
                while pending and running < self.workers:
                    job = pending.popleft()
                    threading.Thread(target=self._run_one, args=(job, q), daemon=True).start()
                    running += 1
                kind, job, payload = q.get()
                if kind == "event":
                    if on_event:
                        on_event(job, payload)
                else:
                    running -= 1
                    yield job, payload
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Kill any worker still running (on Ctrl-C or when the caller stops early)."""
        with self._lock:
            for p in list(self._procs):
                if p.poll() is None:
                    p.kill()
