"""What every command shares: consoles, the settings resolved once, the store, the executor,
the progress reporter and the verdict printout. Light at import: no torch, no SQLAlchemy."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from airlab.executors.base import Executor
    from airlab.settings import Settings
    from airlab.store import Store

# Outside a terminal (CI logs, pipes) Rich would wrap tables at 80 columns; give it room.
console = Console() if sys.stdout.isatty() else Console(width=160)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)

BAND_STYLE = {"publishable": "bold green", "good progress": "yellow", "needs work": "red"}

_settings: list[Settings] = []  # set once by the global options callback


def set_settings(s: Settings) -> None:
    _settings[:] = [s]


def current_settings() -> Settings | None:
    """The resolved Settings, or None before the global options ran (never reads them)."""
    return _settings[0] if _settings else None


def settings() -> Settings:
    """The Settings the global options resolved (once, at the edge)."""
    if not _settings:  # a command called without the app's callback (e.g. from a test)
        from airlab.settings import get_settings

        set_settings(get_settings())
    return _settings[0]


def open_store(readonly: bool = False) -> Store:
    """The lab's store. Reading commands pass ``readonly``: nothing is created or written, so
    they work on a read-only lab folder. Results the database refuses wait in the journal."""
    from airlab.store import Store

    s = settings()
    return Store(s.db_url, readonly=readonly, journal=s.home / "results-journal.jsonl")


@contextmanager
def executor(workers: int, timeout: float | None, threads: int | None) -> Iterator[Executor]:
    """A local process pool that gets the settings, shut down however the command ends."""
    from airlab.executors.local import LocalExecutor

    ex = LocalExecutor(workers, threads=threads, timeout_s=timeout, settings=settings())
    try:
        yield ex
    finally:
        ex.shutdown()


class RichReporter:
    """Progress bars: one for the experiment's runs, one per active run's budget."""

    def __init__(self, title: str) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 console=console, transient=False)
        self.title = title
        self.runs_task: TaskID | None = None
        self.active: dict[int, TaskID] = {}

    def start(self, total: int, done: int) -> None:
        self.progress.start()
        self.runs_task = self.progress.add_task(f"[bold]{self.title}[/] runs", total=total,
                                                completed=done,
                                                info=f"{done} reused" if done else "")

    def _label(self, run: dict[str, Any]) -> str:
        return f"  {run['arm']} seed {run['seed']}"

    def event(self, run: dict[str, Any], ev: dict[str, Any]) -> None:
        tid = self.active.get(run["id"])
        if tid is None:
            tid = self.progress.add_task(self._label(run), total=100, info="")
            self.active[run["id"]] = tid
        if ev.get("type") == "step":
            self.progress.update(tid, completed=100 * ev["progress"],
                                 info=f"step {ev['step']} loss {ev['loss']:.3f}")
        elif ev.get("type") == "eval":
            self.progress.update(tid, info=f"val_loss {ev['val_loss']:.4f}")

    def finished(self, run: dict[str, Any], result: Any) -> None:
        tid = self.active.pop(run["id"], None)
        if tid is not None:
            self.progress.remove_task(tid)
        from rich.markup import escape

        msg = (f"val_loss {result.metrics.get('val_loss', math.nan):.4f}"
               if result.state == "finished" else f"[red]failed: {escape(str(result.reason))}[/]")
        self.progress.console.print(f"{self._label(run).strip()}: {msg}")
        if self.runs_task is not None:
            self.progress.advance(self.runs_task)

    def note(self, text: str) -> None:
        """A line between the bars (e.g. runs that other airlab processes are running)."""
        self.progress.console.print(text, highlight=False, markup=False)

    def stop(self) -> None:
        self.progress.stop()


def run_reporter(title: str, tensorboard: str | None, store: Store) -> Any:
    """The progress bars of a command that runs an experiment; with ``--tensorboard DIR``,
    every run's events are also written as TensorBoard scalars while it trains."""
    bars = RichReporter(title)
    if not tensorboard:
        return bars
    from airlab.report.tensorboard import TensorBoardReporter

    return TensorBoardReporter(bars, tensorboard, store)


TENSORBOARD_HELP = ("Also write every run's curves and progress as TensorBoard events into "
                    "DIR while it trains (tensorboard --logdir DIR; pip install "
                    "'airlab[tensorboard]').")


def print_error(e: Any) -> None:
    """One line on stderr; the message's own brackets are text, not Rich markup."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)


def print_verdict(v: Any) -> None:
    """A verdict: rating and band, points per component with their checks, the critique."""
    console.print(Text.assemble((f"{v.experiment}: ", "bold"),
                                (f"{v.rating}/10 {v.band}" if v.rating >= 1 else v.band,
                                 BAND_STYLE.get(v.band, "")),
                                f"  (best arm: {v.best_arm or '—'}, rubric {v.rubric_version})"))
    t = Table(title_justify="left")
    for c in ("component", "points", "checks"):
        t.add_column(c)
    for comp, b in v.breakdown.items():
        checks = ", ".join(f"{k}: {'yes' if x is True else 'no' if x is False else x}"
                           for k, x in (b.get("checks") or {}).items())
        t.add_row(comp, f"{b['points']}/{b['max']}", checks)
    console.print(t)
    for line in v.critique:
        console.print(f"  - {line}", highlight=False)


def print_finished(verdict: Any, folder: Any) -> None:
    """After `run`, `decide` and `verdict`: the verdict and where the folder was written."""
    print_verdict(verdict)
    if folder is not None:
        console.print(f"experiment folder: {folder}", highlight=False)
