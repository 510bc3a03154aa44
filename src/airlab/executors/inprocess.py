"""In-process executor: runs jobs one after another in this process (no isolation).

For notebooks and tests, where a worker's start-up would dominate a tiny run. A crash here is
still recorded as a failed run (through the same ``execute`` as every executor), but a hard
crash (segfault, OOM kill) takes the caller with it: use the local executor for real
experiments. Importing this module does not import torch; the first run does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from airlab.executors.base import EventSink, Job
from airlab.run.execute import execute
from airlab.run.result import RunResult

if TYPE_CHECKING:
    from airlab.settings import Settings


class InProcessExecutor:
    streams = True  # run() takes each job from its iterable only when the last one is done

    def __init__(self, *, settings: Settings | None = None) -> None:
        if settings is None:  # a library user gave none: this constructor is the edge
            from airlab.settings import get_settings

            settings = get_settings()
        self.settings = settings

    def run(self, jobs: Iterable[Job], on_event: EventSink | None = None
            ) -> Iterator[tuple[Job, RunResult]]:
        for job in jobs:
            sink = (lambda ev, j=job: on_event(j, ev)) if on_event else None
            t0 = time.perf_counter()
            result = execute(job.config, settings=self.settings, on_event=sink,
                             stop_at=job.stop_at)
            result.info.setdefault("worker_wall_seconds", time.perf_counter() - t0)
            yield job, result

    def shutdown(self) -> None:
        """Nothing runs in the background here; present for the Executor protocol."""


__all__ = ["InProcessExecutor"]
