"""Run one resolved config to a RunResult, whatever happens: the one place failures become data.

Every executor calls :func:`execute` (the in-process one directly, the local pool inside its
worker processes, Ray inside its tasks), so a bad config, a user error, running out of memory
and a crash are reported the same way everywhere. No torch at module level: the executors that
import this module stay light; the trainer is imported on the first call.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airlab.run.result import RunResult

if TYPE_CHECKING:
    from airlab.settings import Settings


def execute(config: dict[str, Any], *, settings: Settings | None = None,
            on_event: Callable[[dict[str, Any]], None] | None = None,
            stop_at: float | None = None) -> RunResult:
    """Validate ``config`` (a TrainConfig as plain data), train it and return the result.

    Never raises (for an Exception): a config that does not validate, an AirlabError, a
    MemoryError and any other exception each come back as a failed RunResult with a one-line
    reason; a crash also writes its traceback to stderr (a worker's stderr tail is kept).
    ``settings`` is passed down as given: execute() never reads the environment itself.
    ``stop_at``: a time box's deadline (epoch seconds; see :func:`airlab.run.trainer.train`),
    outside the config so that it never enters the run key.
    """
    try:
        from pydantic import ValidationError

        from airlab.config import TrainConfig
        from airlab.errors import AirlabError

        try:
            cfg = TrainConfig(**config)
        except ValidationError as e:
            first = e.errors()[0] if e.errors() else {"loc": (), "msg": str(e)}
            where = ".".join(str(p) for p in first.get("loc", ())) or "config"
            return RunResult.failed(f"invalid config: {where}: {first.get('msg')}")
        except TypeError as e:
            return RunResult.failed(f"invalid config: {e}")
        from airlab.run.trainer import train

        try:
            return train(cfg, on_event, settings=settings, stop_at=stop_at)
        except AirlabError as e:
            return RunResult.failed(str(e))
    except MemoryError:
        return RunResult.failed("out of memory (MemoryError)")
    except Exception as e:  # noqa: BLE001 - a crash is a result, with its traceback on stderr
        if _is_oom(e):
            return RunResult.failed(f"out of memory ({type(e).__name__}: {str(e)[:200]})")
        traceback.print_exc(file=sys.stderr)
        return RunResult.failed(f"crashed: {type(e).__name__}: {e}")


def _is_oom(e: BaseException) -> bool:
    """torch's allocators raise RuntimeError subclasses, not MemoryError, when memory runs out."""
    if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA), by name: no torch
        return True
    return isinstance(e, RuntimeError) and "can't allocate memory" in str(e)


__all__ = ["execute"]
