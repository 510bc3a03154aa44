"""The executor interface: run jobs somewhere, stream events, yield results as they finish.

Every executor (in-process, local process pool, Ray) turns a job into a result through the same
``airlab.run.execute.execute``, which never raises; an executor only adds isolation and
parallelism. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from airlab.run.result import RunResult


@dataclass(frozen=True)
class Job:
    """One run to execute: an id the caller knows it by and the resolved config as plain data."""

    id: Any
    config: dict[str, Any]
    timeout_s: float | None = None


EventSink = Callable[[Job, dict[str, Any]], None]


class Executor(Protocol):
    """Anything that can run jobs: in-process, the local process pool, Ray."""

    def run(self, jobs: Sequence[Job], on_event: EventSink | None = None
            ) -> Iterator[tuple[Job, RunResult]]:
        """Yield (job, result) as each finishes; never raise for a failing run."""
        ...

    def shutdown(self) -> None:
        """Stop whatever is still running and release workers; safe to call twice."""
        ...
