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
"""``on_event(job, event)``: how an executor reports a run while it goes. The caller
(``airlab.experiment.execute_claimed``) shows each event and writes it to the store's live
tables (``airlab.store.live``), so an executor that forwards these dicts gets the progress bars,
the live curves and the dashboard with nothing else to do. It may call the sink from any thread,
but for one job in the order the run emitted them, and before it yields that job's result.

The events, as ``airlab.run.trainer.train`` emits them (``UNIT`` is ``tokens`` or ``samples``,
whichever the workload counts; every value a plain int, float or str):

* ``{"type": "eval", "step", UNIT, "train_seconds", "flops", "val_loss", ... , "train_loss"}``:
  one evaluation point, exactly the point that ends up in the run's stored curve (the first at
  step 0; ``train_loss`` from the second on; other ``val_*`` metrics as the workload has them).
* ``{"type": "step", "step", "progress", "loss", "lr", UNIT, "train_seconds"}``: a heartbeat,
  about every 0.5 s of training; ``progress`` is the fraction of the budget spent (0..1).
* ``{"type": "done", "step", "progress", UNIT, "train_seconds"}``: training ended (finished,
  cut by a time box, or diverged: the result says which).
* ``{"type": "started", "pid"}``: the run's process started (the local pool; optional).

Other types may be sent and are ignored by the store. Nothing a run reports this way is
believed as a result: the result comes back as the ``RunResult`` alone.
"""


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
