"""The executor interface: run jobs somewhere, stream events, yield results as they finish.

Every executor (in-process, local process pool, Ray) turns a job into a result through the same
``airlab.run.execute.execute``, which never raises; an executor only adds isolation and
parallelism. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from airlab.run.result import RunResult


@dataclass(frozen=True)
class Job:
    """One run to execute: an id the caller knows it by and the resolved config as plain data.

    ``stop_at``: a time box's deadline (epoch seconds, ``time.time()``), not part of the config
    (nor of the run key): the run stops at its next loss sync past it and comes back
    "incomplete"; an executor that can kills a run still going :data:`DEADLINE_GRACE_S` later.
    """

    id: Any
    config: dict[str, Any]
    timeout_s: float | None = None
    stop_at: float | None = None


# How long a run may overrun its time box (Job.stop_at) before it is killed; a run should stop
# within one loss sync (seconds), so this is for a run stuck in an evaluation or a hang.
DEADLINE_GRACE_S = 60.0


EventSink = Callable[[Job, dict[str, Any]], None]


class Executor(Protocol):
    """Anything that can run jobs: in-process, the local process pool, Ray."""

    def run(self, jobs: Iterable[Job], on_event: EventSink | None = None
            ) -> Iterator[tuple[Job, RunResult]]:
        """Yield (job, result) as each finishes; never raise for a failing run. An executor
        with ``streams = True`` takes each job from ``jobs`` only when it has a free slot (so
        ``jobs`` may claim runs lazily); others may read them all up front."""
        ...

    def shutdown(self) -> None:
        """Stop whatever is still running and release workers; safe to call twice."""
        ...
