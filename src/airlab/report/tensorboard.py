"""TensorBoard event files written while runs train (`--tensorboard DIR` on run, sprint, auto).

:class:`TensorBoardReporter` wraps the progress reporter of a command and writes every event
the runs report (the same events the store's live tables get, see
``airlab.executors.base.EventSink``) as TensorBoard scalars, one log folder per run:
``DIR/<experiment>/<arm>-seed<seed>`` (the layout of ``airlab export --tensorboard``), the x axis
in tokens (or samples). Evaluation points (``eval/val_loss``, ``eval/val_bpc``, ...) are
flushed as they come; heartbeats (``train/loss``, ``train/lr``, ``train/tokens_per_s``) within
two seconds. Watch them with ``tensorboard --logdir DIR``.

The ``tensorboard`` package (``pip install 'airlab[tensorboard]'``) and torch's writer are
imported when the reporter is created, never by importing this module.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airlab.errors import AirlabError
from airlab.spec import EXPERIMENT_NAME_MAX, slug

if TYPE_CHECKING:
    from airlab.store import Store

UNITS = ("tokens", "samples")


def summary_writer_class() -> Any:
    """torch's SummaryWriter, or one AirlabError line when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise AirlabError("--tensorboard needs the tensorboard package, which is not installed",
                          "pip install 'airlab[tensorboard]'") from None
    return SummaryWriter


class TensorBoardReporter:
    """A Reporter (see ``airlab.experiment.Reporter``) that writes TensorBoard scalars and
    passes every call on to ``inner``."""

    def __init__(self, inner: Any, root: Path | str, store: Store) -> None:
        self.inner = inner
        self.root = Path(root)
        self.store = store
        self._writer_class = summary_writer_class()
        self.root.mkdir(parents=True, exist_ok=True)
        self._writers: dict[int, Any] = {}
        self._names: dict[int, str] = {}

    def _experiment(self, experiment_id: int) -> str:
        if experiment_id not in self._names:
            self._names = {e["id"]: e["name"] for e in self.store.experiments()}
        return self._names.get(experiment_id, f"experiment-{experiment_id}")

    def folder(self, run: dict[str, Any]) -> Path:
        exp = slug(self._experiment(run["experiment_id"]), EXPERIMENT_NAME_MAX)
        return self.root / exp / f"{slug(str(run['arm']))}-seed{run['seed']}"

    def _writer(self, run: dict[str, Any]) -> Any:
        w = self._writers.get(run["id"])
        if w is None:
            w = self._writers[run["id"]] = self._writer_class(str(self.folder(run)),
                                                              flush_secs=2)
        return w

    # -- the Reporter protocol ------------------------------------------------------------------

    def start(self, total: int, done: int) -> None:
        self.inner.start(total, done)

    def event(self, run: dict[str, Any], ev: dict[str, Any]) -> None:
        self.inner.event(run, ev)
        kind = ev.get("type")
        if kind not in ("eval", "step"):
            return
        unit = next((u for u in UNITS if u in ev), None)
        x = int(ev[unit]) if unit is not None else int(ev.get("step") or 0)
        w = self._writer(run)
        if kind == "eval":
            for k, v in ev.items():
                if (k.startswith("val_") or k == "train_loss") and _finite(v):
                    w.add_scalar(f"eval/{k}", float(v), x)
            w.flush()  # an evaluation point is what a watcher waits for
            return
        for k in ("loss", "lr"):
            if _finite(ev.get(k)):
                w.add_scalar(f"train/{k}", float(ev[k]), x)
        ts: Any = ev.get("train_seconds")
        if unit is not None and _finite(ts) and ts > 0:
            w.add_scalar(f"train/{unit}_per_s", ev[unit] / ts, x)

    def finished(self, run: dict[str, Any], result: Any) -> None:
        w = self._writers.pop(run["id"], None)
        if w is not None:
            w.close()
        self.inner.finished(run, result)

    def note(self, text: str) -> None:
        note = getattr(self.inner, "note", None)
        if note is not None:
            note(text)

    def stop(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()
        self.inner.stop()


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


__all__ = ["TensorBoardReporter", "summary_writer_class"]
