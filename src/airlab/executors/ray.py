"""Ray executor: each run is a Ray task, on this machine or on a Ray cluster.

A task calls the same ``airlab.run.execute.execute`` as every executor (so the same plans give
the same run keys and, on CPU, the same losses) and returns ``RunResult.to_dict()``. What Ray
adds: placement by resources (``num_cpus_per_run``, ``num_gpus_per_run``) and its own retries of
infrastructure failures. A task whose worker process dies (killed, out of memory, node lost) is
retried by Ray up to ``max_retries`` times; after that it is a failed run with Ray's reason and
``infra=True``. A run that fails on its own (divergence, a bad config, a crash inside training)
is a result, never retried. ``shutdown()`` (and Ctrl-C) cancels the outstanding tasks.

Ray is an optional extra (``pip install 'airlab[ray]'``) imported on first use; importing this
module imports neither Ray nor torch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from airlab.errors import AirlabError
from airlab.executors.base import DEADLINE_GRACE_S, EventSink, Job
from airlab.run.result import RunResult

if TYPE_CHECKING:
    from airlab.settings import Settings

POLL_S = 0.5  # how often a waiting run() checks timeouts and events (and lets Ctrl-C in)
SEND_EVERY_S = 0.5  # how often a task sends its buffered events to the driver


def _ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError:
        raise AirlabError("--executor ray needs Ray, which is not installed",
                          "pip install 'airlab[ray]' (or use the local executor)") from None
    return ray


class _EventSender:
    """Sends a task's events to the driver's queue in batches, from a thread of its own, so
    the training loop only appends to a list (a put is a round trip to the queue's actor)."""

    def __init__(self, queue: Any, tag: int, every_s: float = SEND_EVERY_S) -> None:
        self.queue, self.tag, self.every_s = queue, tag, every_s
        self.buffer: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="airlab-events")
        self.thread.start()

    def __call__(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.buffer.append((self.tag, event))

    def _loop(self) -> None:
        while not self.stop.wait(self.every_s):
            self.send()

    def send(self) -> None:
        with self.lock:
            items, self.buffer = self.buffer, []
        if items:
            try:
                self.queue.put_nowait_batch(items)
            except Exception:  # noqa: BLE001 - the driver is gone or its queue full: drop them
                pass

    def close(self) -> None:
        """Send what is left before the task returns: its events reach the queue before its
        result is ready."""
        self.stop.set()
        self.thread.join(timeout=30)
        self.send()


def run_task(config: dict[str, Any], settings: dict[str, Any], threads: int,
             stop_at: float | None = None, events: Any = None, tag: int = 0) -> dict[str, Any]:
    """The body of one Ray task: execute one run in the Ray worker process (never raises).
    ``events``: a ``ray.util.queue.Queue`` the run's events go to, as ``(tag, event)``."""
    from airlab.run.execute import execute
    from airlab.settings import Settings

    try:
        import torch

        torch.set_num_threads(max(1, threads))  # the CPUs Ray reserved for this task
    except ImportError:  # pragma: no cover - execute() reports the missing torch itself
        pass
    sender = _EventSender(events, tag) if events is not None else None
    t0 = time.perf_counter()
    try:
        result = execute(config, settings=Settings.from_dict(settings), on_event=sender,
                         stop_at=stop_at)
    finally:
        if sender is not None:
            sender.close()
    result.info.setdefault("worker_wall_seconds", time.perf_counter() - t0)
    return result.to_dict()


def _forward_events(queue: Any, tags: dict[int, Job], on_event: EventSink) -> None:
    """Hand every event waiting in the queue to ``on_event`` (a lost queue: none). Events of
    an earlier call's task (cancelled before its last batch was read) are dropped."""
    try:
        n = queue.qsize()
        items = queue.get_nowait_batch(n) if n else []
    except Exception:  # noqa: BLE001 - the queue's actor died: the results still come
        return
    for tag, ev in items:
        job = tags.get(tag)
        if job is not None:
            on_event(job, ev)


def _describe(e: BaseException) -> str:
    """Ray's exception as one line: its class and the first line that says what happened."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "Error" not in ln[:40] or ":" in ln]
    return f"{type(e).__name__}: {(useful or lines or [''])[0][:300]}"


class RayExecutor:
    """Runs jobs as Ray tasks. ``address``: None starts a local Ray (or uses one this process
    already started), "auto" joins the cluster this machine belongs to, or a cluster address
    ("ray://host:10001", "host:6379")."""

    def __init__(self, address: str | None = None, *, settings: Settings | None = None,
                 num_cpus_per_run: float = 1, num_gpus_per_run: float = 0, max_retries: int = 2,
                 timeout_s: float | None = None, workers: int | None = None,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        if settings is None:  # a library user gave none: this constructor is the edge
            from airlab.settings import get_settings

            settings = get_settings()
        if num_cpus_per_run <= 0 or num_gpus_per_run < 0 or max_retries < 0:
            raise AirlabError(f"bad Ray resources: num_cpus_per_run={num_cpus_per_run}, "
                              f"num_gpus_per_run={num_gpus_per_run}, max_retries={max_retries}",
                              "CPUs must be > 0, GPUs and retries >= 0")
        self.settings = settings
        self.address = address
        self.num_cpus_per_run = num_cpus_per_run
        self.num_gpus_per_run = num_gpus_per_run
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.init_kwargs = dict(init_kwargs or {})
        self._workers = workers
        self._started_ray = False  # ray.shutdown() only a Ray this executor started
        self._remote: Any = None
        self._outstanding: dict[Any, Job] = {}  # ObjectRef -> job, while it runs
        self._queue: Any = None  # the tasks' events come back through it (run with on_event)
        self._next_tag = 0

    @property
    def workers(self) -> int:
        """How many runs a caller should keep submitted at once: given, or as many as the
        cluster's CPUs (or GPUs, for GPU runs) hold side by side."""
        if self._workers is None:
            res = self._connect().cluster_resources()
            per = [(res.get("CPU", 1.0), self.num_cpus_per_run)]
            if self.num_gpus_per_run:
                per.append((res.get("GPU", 0.0), self.num_gpus_per_run))
            self._workers = max(1, int(min(have // need for have, need in per)))
        return self._workers

    def _connect(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      **self.init_kwargs}
            try:
                ray.init(address=self.address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise AirlabError(f"cannot connect to Ray at '{self.address or 'local'}': "
                                  f"{_describe(e)}",
                                  "start a cluster (ray start --head) or drop --ray-address "
                                  "to start a local Ray") from None
            self._started_ray = True
        if self._remote is None:
            self._remote = ray.remote(run_task)
        return ray

    def run(self, jobs: Iterable[Job], on_event: EventSink | None = None
            ) -> Iterator[tuple[Job, RunResult]]:
        """Submit every job, then yield (job, result) as each task finishes. With ``on_event``,
        each task's events come back through a Ray queue (batched every 0.5 s) and reach
        ``on_event`` on this thread, a job's events before its result. A job's ``stop_at``
        (time box) reaches the task; a task still going DEADLINE_GRACE_S past it is
        cancelled."""
        jobs = list(jobs)
        if not jobs:
            return
        ray = self._connect()
        from ray.exceptions import GetTimeoutError, RayError, TaskCancelledError

        task = self._remote.options(num_cpus=self.num_cpus_per_run,
                                    num_gpus=self.num_gpus_per_run,
                                    max_retries=self.max_retries, retry_exceptions=False)
        threads = max(1, int(self.num_cpus_per_run))
        settings = self.settings.to_dict()
        started: dict[Any, float] = {}
        timed_out: set[Any] = set()
        overran: set[Any] = set()  # cancelled for overrunning the time box
        queue = self._event_queue() if on_event is not None else None
        tags: dict[int, Job] = {}  # a task's events carry its tag, unique in this executor
        try:
            for job in jobs:
                tag = self._next_tag
                self._next_tag += 1
                tags[tag] = job
                ref = task.remote(job.config, settings, threads, job.stop_at, queue, tag)
                self._outstanding[ref] = job
                started[ref] = time.monotonic()
            while self._outstanding:
                ready, _ = ray.wait(list(self._outstanding), num_returns=1, timeout=POLL_S)
                if queue is not None and on_event is not None:
                    _forward_events(queue, tags, on_event)
                for ref in ready:
                    job = self._outstanding.pop(ref)
                    try:
                        result = RunResult.from_dict(ray.get(ref))
                    except TaskCancelledError:
                        if ref in overran:
                            result = RunResult.failed(
                                f"time box: cancelled {DEADLINE_GRACE_S:g} s past the deadline",
                                infra=True)
                        elif ref in timed_out:
                            limit = job.timeout_s or self.timeout_s
                            result = RunResult.failed(f"timeout after {limit:g} s")
                        else:
                            result = RunResult.failed("cancelled (Ray task cancelled)",
                                                      infra=True)
                    except (RayError, GetTimeoutError) as e:
                        # The worker process or its node died on every attempt Ray made.
                        tries = self.max_retries + 1
                        result = RunResult.failed(
                            f"Ray worker died ({tries} attempt{'s' * (tries > 1)}): "
                            f"{_describe(e)}", infra=True)
                    result.info.setdefault("executor", "ray")
                    yield job, result
                self._cancel_overdue(ray, started, timed_out, overran)
        finally:  # done, or the caller stopped early (Ctrl-C, an error): stop what is left
            self._cancel_outstanding()
            self._outstanding.clear()

    def _event_queue(self) -> Any:
        """The queue the tasks send their events to: one actor for the executor's life,
        holding no CPU that a run could use."""
        if self._queue is None:
            from ray.util.queue import Queue

            self._queue = Queue(actor_options={"num_cpus": 0})
        return self._queue

    def _cancel_overdue(self, ray: Any, started: dict[Any, float], timed_out: set[Any],
                        overran: set[Any]) -> None:
        now, wall = time.monotonic(), time.time()
        for ref, job in self._outstanding.items():
            if job.stop_at is not None and ref not in overran | timed_out \
                    and wall > job.stop_at + DEADLINE_GRACE_S:
                overran.add(ref)
                ray.cancel(ref, force=True)
                continue
            limit = job.timeout_s or self.timeout_s
            if limit is not None and ref not in timed_out and now - started[ref] > limit:
                timed_out.add(ref)
                ray.cancel(ref, force=True)

    def _cancel_outstanding(self) -> None:
        """Force-cancel every task still outstanding (Ray does not retry a cancelled task).
        A run() in progress then yields each as a failed, retryable result."""
        refs = list(self._outstanding)  # a copy: run() may pop from it in another thread
        if not refs:
            return
        ray = _ray()
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or Ray already gone
                pass

    def shutdown(self) -> None:
        """Cancel what is still running; stop Ray if this executor started it. Safe twice."""
        self._cancel_outstanding()
        if self._queue is not None:
            queue, self._queue = self._queue, None
            try:
                queue.shutdown(force=True)
            except Exception:  # noqa: BLE001 - Ray already gone
                pass
        if self._started_ray:
            self._started_ray = False
            self._remote = None
            _ray().shutdown()


__all__ = ["RayExecutor", "run_task"]
