"""In-process executor: runs jobs one after another in this process (no isolation).

For notebooks and tests, where a worker's start-up would dominate a tiny run. A crash here is
still recorded as a failed run, but a hard crash (segfault, OOM kill) takes the caller with
it: use the local executor for real experiments.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator, Sequence

from airlab.config import TrainConfig
from airlab.errors import AirlabError
from airlab.executors.base import EventSink, Job
from airlab.run.trainer import RunResult, train


class InProcessExecutor:
    def run(self, jobs: Sequence[Job], on_event: EventSink | None = None
            ) -> Iterator[tuple[Job, RunResult]]:
        for job in jobs:
            sink = (lambda ev, j=job: on_event(j, ev)) if on_event else None
            t0 = time.perf_counter()
            try:
                result = train(TrainConfig(**job.config), on_event=sink)
            except AirlabError as e:
                result = RunResult("failed", str(e), {}, [], {})
            except Exception as e:  # noqa: BLE001 - a crash is a result
                traceback.print_exc()
                result = RunResult("failed", f"crashed: {type(e).__name__}: {e}", {}, [], {})
            result.info.setdefault("worker_wall_seconds", time.perf_counter() - t0)
            yield job, result


__all__ = ["InProcessExecutor"]
