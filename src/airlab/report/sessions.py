"""Research sessions side by side: the best confirmed ratio against sprint hours.

A session's curve is read from its recipes (``store.team``: written by the loop after every
sprint, or replayed by ``agents.loop.leaderboard`` and passed in) and its sprints: each
recipe confirmed on fresh seeds is a point at the sprint hours spent when its confirmation
ended; the curve is the best confirmed ratio so far (the default configuration, 1x, before
the first). ``airlab leaderboard --compare A B`` prints two of them and writes the plot;
``airlab export`` adds every session of its store to the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airlab.store import team as team_store
from airlab.store.records import Task

if TYPE_CHECKING:
    from airlab.store import Store
    from airlab.store.team import RecipeRow


@dataclass(frozen=True)
class Point:
    """A confirmed recipe: when (sprint hours), its confirmed ratio and interval."""

    hours: float
    ratio: float
    ci_low: float | None
    ci_high: float | None
    recipe: str
    pairs: str  # "3/3": seed pairs that reached the target / pairs
    holds: str = ""  # where it holds (its transfer), when measured


@dataclass
class SessionCurve:
    label: str
    researcher: str
    task: str
    hours: float  # sprint hours spent
    sprints: int
    points: list[Point] = field(default_factory=list)  # confirmed recipes, by hours

    def best_at(self, hours: float) -> Point | None:
        """The best confirmed recipe by ``hours`` of sprint time (None: none yet)."""
        got = [p for p in self.points if p.hours <= hours + 1e-9]
        return max(got, key=lambda p: p.ratio) if got else None

    def steps(self) -> list[Point]:
        """The points where the best confirmed ratio went up."""
        out: list[Point] = []
        for p in self.points:
            if not out or p.ratio > out[-1].ratio:
                out.append(p)
        return out


def session_curve(store: Store, session: str, *, label: str | None = None,
                  rows: Sequence[RecipeRow] | None = None) -> SessionCurve:
    """The curve of ``session`` (``rows``: its recipes, else the stored recipes table)."""
    sprints = team_store.list_sprints(store, session)
    spent = sum(r.finished_at - r.started_at for r in sprints if r.finished_at)
    got = team_store.get_session(store, session)
    setup = dict(got["setup"]) if got is not None else {}
    task = Task.from_json(setup.get("task"))
    amount = setup.get("tokens")
    rows = list(rows) if rows is not None else team_store.list_recipes(store, session)
    points = []
    for r in rows:
        c = r.confirmation
        g, h = c.get("ratio"), c.get("hours")
        if r.status != "confirmed" or g is None or h is None or not math.isfinite(g):
            continue
        points.append(Point(float(h), float(g), c.get("ci_low"), c.get("ci_high"), r.name,
                            f"{c.get('reached', 0)}/{c.get('n', 0)}", str(c.get("holds") or "")))
    points.sort(key=lambda p: p.hours)
    return SessionCurve(label or session, str(setup.get("researcher") or "team"),
                        task.label(float(amount) if amount else None), spent / 3600,
                        len(sprints), points)


def ratio_text(p: Point | None) -> str:
    if p is None:
        return "1x (the default: nothing confirmed)"
    ci = f" [{p.ci_low:.2f}, {p.ci_high:.2f}]" if p.ci_low is not None and \
        p.ci_high is not None else ""
    return f"{p.ratio:.2f}x{ci} ({p.pairs} pairs)"


def _mark(hours: float) -> float:
    """Hours as the table prints them (3 decimals), rounded up: a confirmation at 0.3224 h is
    read at 0.323, where it has happened (rounded to 0.322 it was read as not yet)."""
    return math.ceil(hours * 1000 - 1e-6) / 1000


def grid(curves: Sequence[SessionCurve], step: float | None = None) -> list[float]:
    """Sprint hours at which to read every curve: each confirmation and the end."""
    marks = {_mark(c.hours) for c in curves} | {_mark(p.hours) for c in curves
                                                for p in c.points}
    if step:
        end = max((c.hours for c in curves), default=0.0)
        marks |= {round(step * k, 3) for k in range(1, int(end / step) + 1)}
    return sorted(m for m in marks if m > 0)


def compare_md(curves: Sequence[SessionCurve]) -> str:
    """The sessions and their best confirmed ratio over sprint hours, as Markdown tables."""
    lines = ["| session | researcher | task | sprints | sprint hours | best confirmed | recipe "
             "| holds |", "|---|---|---|---|---|---|---|---|"]
    for c in curves:
        b = c.best_at(c.hours)
        lines.append(f"| {c.label} | {c.researcher} | {c.task} | {c.sprints} | "
                     f"{c.hours:.2f} | {ratio_text(b)} | {b.recipe if b else '-'} | "
                     f"{(b.holds if b else '') or '-'} |")
    lines += ["", "| sprint hours | " + " | ".join(c.label for c in curves) + " |",
              "|---|" + "---|" * len(curves)]
    for h in grid(curves):
        cells = []
        for c in curves:
            b = c.best_at(h)
            cells.append("-" if h > _mark(c.hours) else
                         "1x" if b is None else f"{b.ratio:.2f}x")
        lines.append(f"| {h:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare_png(curves: Sequence[SessionCurve]) -> bytes:
    """Best confirmed ratio (log scale) against sprint hours, one step curve per session,
    each confirmation's 95 % interval as an error bar (``report.plots``)."""
    from airlab.report.plots import session_plot

    series: list[dict[str, Any]] = []
    for c in curves:
        xs, ys = [0.0], [1.0]
        for p in c.steps():
            xs.append(p.hours)
            ys.append(p.ratio)
        xs.append(max(c.hours, xs[-1]))
        ys.append(ys[-1])
        bars = [(p.hours, p.ratio, p.ci_low, p.ci_high) for p in c.points]
        series.append({"label": f"{c.label} ({c.researcher})", "x": xs, "y": ys,
                       "bars": bars})
    return session_plot(series)
