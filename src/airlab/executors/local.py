"""Local executor: N runs at a time, each in its own process forked from a warm zygote.

The zygote is a multiprocessing forkserver that has imported torch and the trainer once
(:data:`airlab.run.worker.PRELOAD`); each run is a fresh fork of it, so a run starts in
milliseconds and still lives in its own process: a crash, an out-of-memory kill or a hang
(timeout) fails that run alone, and ``peak_mem_mb`` is that process's own RSS high-water mark.
Events and results come back to the calling thread through a queue, so the caller alone writes
to the store. No torch is imported here.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from multiprocessing import context, forkserver, popen_forkserver, reduction, spawn, util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airlab.executors.base import DEADLINE_GRACE_S, EventSink, Job
from airlab.run.result import RunResult
from airlab.run.worker import PRELOAD, serve  # torch-free: the child imports torch, not us

if TYPE_CHECKING:
    from airlab.settings import Settings

_TAIL_LINES = 20


def _zygote() -> Any:
    """The forkserver context, with airlab's preload list (applies when it first starts)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


class _NoMainPopen(popen_forkserver.Popen):  # type: ignore[misc]
    """CPython's forkserver launch (3.10-3.13, unchanged), minus re-running ``__main__``.

    multiprocessing makes a child re-import the caller's main script (as spawn must): that
    needs an ``if __name__ == "__main__"`` guard, breaks for ``python - < script``, and costs a
    CLI import per run. A run needs airlab, not the caller's script: the zygote already has it.
    """

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_name", None)
        prep_data.pop("init_main_from_path", None)
        buf = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            context.set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)  # type: ignore[attr-defined]
        parent_w = os.dup(w)  # the child's sentinel of this parent, as CPython keeps it
        self.finalizer = util.Finalize(self, util.close_fds,  # type: ignore[attr-defined]
                                       (parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _RunProcess(context.ForkServerProcess):  # type: ignore[misc,name-defined]
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        if (3, 10) <= sys.version_info[:2] <= (3, 13):  # where _launch above is CPython's own
            return _NoMainPopen(process_obj)
        return popen_forkserver.Popen(process_obj)


def _start_zygote() -> None:
    _zygote()
    try:
        forkserver.ensure_running()
    except Exception:  # noqa: BLE001 - the first run starts it again and reports any error
        pass


def warm_up() -> None:
    """Start the zygote now, in the background, if it is not running (idempotent, returns at
    once). Its imports (~3 s of one core) then overlap with what the caller still does before
    its first run: a command calls this as soon as its input is known to be good (not earlier:
    a rejected spec must not leave a process importing torch behind)."""
    threading.Thread(target=_start_zygote, daemon=True, name="airlab-zygote").start()


def _tail(path: str) -> list[str]:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [s for s in lines if s.strip()][-_TAIL_LINES:]


class LocalExecutor:
    """Runs jobs in ``workers`` concurrent processes with ``threads`` intra-op threads each.

    ``run`` takes the next job from its (possibly lazy) iterable only when a slot is free
    (``streams``), so a caller that claims runs one at a time keeps every slot busy.
    ``deadline_grace_s``: how long a run may overrun its job's ``stop_at`` before it is killed
    (a failed, retryable result).
    """

    streams = True  # run() pulls jobs lazily, one per free slot

    def __init__(self, workers: int = 1, *, threads: int | None = None,
                 timeout_s: float | None = None, mem_limit_mb: int | None = None,
                 settings: Settings | None = None,
                 deadline_grace_s: float = DEADLINE_GRACE_S) -> None:
        if settings is None:  # a library user gave none: this constructor is the edge
            from airlab.settings import get_settings

            settings = get_settings()
        self.settings = settings
        self.workers = max(1, workers)
        # The cores this process may run on (`taskset` narrows them), else all of them.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
        # Divide the cores among concurrent workers so they do not oversubscribe the CPU.
        self.threads = threads or max(1, cores // self.workers)
        self.timeout_s = timeout_s
        self.mem_limit_mb = mem_limit_mb
        self.deadline_grace_s = deadline_grace_s
        self._procs: dict[Any, Any] = {}  # job id -> multiprocessing.Process while it runs
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        warm_up()  # if the command has not yet: overlaps with planning and preparing data

    def _payload(self, job: Job) -> dict[str, Any]:
        """What the worker process gets for ``job`` (see airlab.run.worker.serve)."""
        return {"config": job.config, "settings": self.settings.to_dict(),
                "threads": self.threads, "mem_limit_mb": self.mem_limit_mb,
                "stop_at": job.stop_at}

    def _run_one(self, job: Job, out: queue.Queue[tuple[str, Job, Any]]) -> None:
        try:
            result = self._supervise(job, out)
        except Exception as e:  # noqa: BLE001 - the pool itself failed: still a result
            result = RunResult.failed(f"executor error: {type(e).__name__}: {e}", infra=True)
        out.put(("result", job, result))

    def _supervise(self, job: Job, out: queue.Queue[tuple[str, Job, Any]]) -> RunResult:
        ctx = _zygote()
        fd, log = tempfile.mkstemp(prefix="airlab-run-", suffix=".log")
        os.close(fd)
        reader, writer = ctx.Pipe(duplex=False)
        payload = {**self._payload(job), "log": log}
        proc = _RunProcess(target=serve, args=(writer, payload), daemon=True,
                           name=f"airlab-run-{job.id}")
        started = time.perf_counter()
        timeout = job.timeout_s or self.timeout_s
        # The time box: past stop_at the run stops itself at its next loss sync; one still
        # going deadline_grace_s later (stuck in an evaluation, hung) is killed.
        kill_at = None if job.stop_at is None else job.stop_at + self.deadline_grace_s
        result: RunResult | None = None
        timed_out = overran = False
        try:
            with self._lock:
                if self._stopping.is_set():
                    return RunResult.failed("cancelled before it started", infra=True)
                proc.start()
                self._procs[job.id] = proc
            writer.close()  # the child holds the write end now: EOF means it is gone
            while True:
                left = None if timeout is None else timeout - (time.perf_counter() - started)
                if left is not None and left <= 0:
                    timed_out = True
                    proc.kill()
                    break
                if kill_at is not None and time.time() >= kill_at:
                    overran = True
                    proc.kill()
                    break
                if not reader.poll(1.0 if left is None else min(left, 1.0)):
                    continue
                try:
                    msg = reader.recv()
                except (EOFError, OSError):
                    break
                if msg.get("type") == "result":
                    result = RunResult.from_dict(msg)
                else:
                    out.put(("event", job, msg))
            proc.join()
        finally:
            reader.close()
            with self._lock:
                self._procs.pop(job.id, None)
            tail = _tail(log)
            os.unlink(log)
        wall = time.perf_counter() - started
        rc = proc.exitcode
        if result is None:
            if timed_out:
                result = RunResult.failed(f"timeout after {timeout:g} s")
            elif overran:
                result = RunResult.failed(
                    f"time box: killed {self.deadline_grace_s:g} s past the deadline "
                    "(the run did not stop at a loss sync)", infra=True)
            elif rc is not None and rc < 0:
                name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else rc
                hint = " (out of memory?)" if rc == -signal.SIGKILL else ""
                last = f": {tail[-1].strip()[-300:]}" if tail else ""
                result = RunResult.failed(f"worker killed by {name}{hint}{last}", infra=True)
            else:
                last = tail[-1].strip()[-300:] if tail else "no output"
                result = RunResult.failed(f"worker exited with code {rc}: {last}", infra=True)
        if result.state == "failed" and tail:
            result.info.setdefault("stderr_tail", tail)
        result.info.setdefault("worker_wall_seconds", wall)
        return result

    def run(self, jobs: Iterable[Job], on_event: EventSink | None = None
            ) -> Iterator[tuple[Job, RunResult]]:
        """Yield (job, result) as each run ends. The next job is taken from ``jobs`` only when
        a slot is free (after the caller has had the previous result), so ``jobs`` may be a
        generator that claims runs as it goes."""
        self._stopping.clear()
        q: queue.Queue[tuple[str, Job, Any]] = queue.Queue()
        source = iter(jobs)
        more, running = True, 0
        try:
            while True:
                while more and running < self.workers:
                    job = next(source, None)
                    if job is None:
                        more = False
                        break
                    threading.Thread(target=self._run_one, args=(job, q), daemon=True).start()
                    running += 1
                if not running:
                    break
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
        """Kill every run still going (Ctrl-C, or the caller stopped early); safe to call twice.

        The zygote holds no run and is shared by the executors of this process: it is left
        to serve the next experiment and exits with this process (or with ``stop_zygote``).
        """
        with self._lock:
            self._stopping.set()
            for p in list(self._procs.values()):
                if p.is_alive():
                    p.kill()


def stop_zygote() -> None:
    """Stop the warm zygote (frees its memory); the next run starts a new one."""
    stop = getattr(forkserver._forkserver, "_stop", None)  # CPython 3.8+; private but stable
    if stop is not None:
        stop()


__all__ = ["LocalExecutor", "stop_zygote", "warm_up"]
