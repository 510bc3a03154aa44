"""Plots for posts and the publication report, rendered to PNG bytes with matplotlib's Agg.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot): no global state,
no display needed, safe from any thread.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from airlab.analysis.compare import Analysis
from airlab.store import Store

CURVE_X = {"units": "tokens or samples seen", "train_seconds": "training seconds",
           "flops": "training FLOPs"}


def _figure(width: float = 6.4, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _empty(ax: Any, msg: str) -> None:
    ax.text(0.5, 0.5, msg, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------- loss curves


def seed_band(runs: Sequence[Sequence[tuple[float, float]]], points: int = 50
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Mean and sd across seeds of (x, y) curves, on a common grid over their shared x range.

    Seeds of one arm are evaluated at the same budget marks, but a time-based x differs per
    run, so each curve is interpolated onto the grid before averaging.
    """
    curves = [np.asarray(sorted(c), dtype=float) for c in runs if len(c) >= 2]
    if not curves:
        return None
    lo = max(c[0, 0] for c in curves)
    hi = min(c[-1, 0] for c in curves)
    if not hi > lo:
        return None
    grid = np.linspace(lo, hi, points)
    ys = np.stack([np.interp(grid, c[:, 0], c[:, 1]) for c in curves])
    sd = ys.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros_like(grid)
    return grid, ys.mean(axis=0), sd


def arm_curves(store: Store, name: str, x: str = "units", y: str = "val_loss"
               ) -> dict[str, list[list[tuple[float, float]]]]:
    """Finished runs' (x, y) eval curves per arm, in spec arm order."""
    exp = store.experiment(name)
    if exp is None:
        return {}
    spec = exp["spec"]
    arms = [spec["baseline"]["name"], *[a["name"] for a in spec.get("arms", [])]]
    seeds = set(spec.get("seeds", []))
    out: dict[str, list[list[tuple[float, float]]]] = {a: [] for a in arms}
    for r in store.runs(exp["id"]):
        if r["state"] != "finished" or r["arm"] not in out or r["seed"] not in seeds:
            continue
        pts = [(float(p[x]), float(p[y])) for p in store.curve(r["id"])
               if p.get(y) is not None and p.get(x) is not None]
        if pts:
            out[r["arm"]].append(pts)
    return out


def loss_curves_png(curves: dict[str, list[list[tuple[float, float]]]], title: str,
                    x_label: str = CURVE_X["units"], y_label: str = "val_loss") -> bytes:
    """One line per arm (mean over seeds) with a shaded band of +-1 sd across seeds."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    drawn = 0
    for arm, runs in curves.items():
        band = seed_band(runs)
        if band is None:
            continue
        gx, mean, sd = band
        (line,) = ax.plot(gx, mean, label=f"{arm} (n={len(runs)})")
        ax.fill_between(gx, mean - sd, mean + sd, alpha=0.2, color=line.get_color())
        drawn += 1
    if drawn:
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    else:
        _empty(ax, "no finished curves")
    ax.set_title(f"{title}: mean ± sd over seeds", fontsize=10)
    return to_png(fig)


# --------------------------------------------------------------------------- efficiency


@dataclass(frozen=True)
class RatioBar:
    arm: str
    what: str
    ratio: float
    ci_low: float | None = None
    ci_high: float | None = None


def efficiency_bars(a: Analysis) -> list[RatioBar]:
    """Cost ratios baseline/arm: time-to-target with CI when known, else ratios of means."""
    out: list[RatioBar] = []
    base = a.baseline
    for row in a.rows[1:]:
        eff = getattr(row, "efficiency", None)
        ratios = getattr(eff, "ratio", None) or {}
        got = False
        for key in ("train_seconds", "flops", "energy_kwh_est"):
            r = ratios.get(key)
            if r is not None and r[0] is not None and math.isfinite(r[0]):
                out.append(RatioBar(row.arm, f"{key} to target", float(r[0]),
                                    None if r[1] is None else float(r[1]),
                                    None if r[2] is None else float(r[2])))
                got = True
        if not got:
            for key in ("train_seconds", "flops"):
                b, v = base.means.get(key), row.means.get(key)
                if b and v:
                    out.append(RatioBar(row.arm, f"{key} per budget", b / v))
        b, v = base.means.get("model_bytes"), row.means.get("model_bytes")
        size = getattr(eff, "size_ratio", None) if eff is not None else None
        if size is not None:
            out.append(RatioBar(row.arm, "model size", float(size)))
        elif b and v:
            out.append(RatioBar(row.arm, "model size", b / v))
    return out


def efficiency_png(bars: Sequence[RatioBar], title: str) -> bytes:
    """Grouped bars of cost ratios (> 1: the arm is cheaper), CI whiskers where known."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    if not bars:
        _empty(ax, "no arm to compare")
        ax.set_title(title, fontsize=10)
        return to_png(fig)
    kinds = list(dict.fromkeys(b.what for b in bars))
    arms = list(dict.fromkeys(b.arm for b in bars))
    width = 0.8 / len(kinds)
    for k, kind in enumerate(kinds):
        xs, hs, lo, hi = [], [], [], []
        for i, arm in enumerate(arms):
            for b in bars:
                if b.arm == arm and b.what == kind:
                    xs.append(i + k * width)
                    hs.append(b.ratio)
                    lo.append(b.ratio - b.ci_low if b.ci_low is not None else 0.0)
                    hi.append(b.ci_high - b.ratio if b.ci_high is not None else 0.0)
        ax.bar(xs, hs, width, yerr=[lo, hi], capsize=3, label=kind)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.axhline(2.0, color="green", lw=0.8, ls="--", label="2x goal")
    # Ratios live on a log scale (0.5x and 2x are equally far from 1); clip whiskers of
    # two-seed intervals that would otherwise flatten every bar.
    ax.set_yscale("log")
    top = max([b.ratio for b in bars] + [2.0])
    bottom = min([b.ratio for b in bars if b.ratio > 0] + [0.5])
    ax.set_ylim(bottom / 2, top * 2)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(arms))], arms, fontsize=8)
    ax.set_ylabel("baseline cost / arm cost")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    return to_png(fig)


# --------------------------------------------------------------------------- pareto


def pareto_front(points: Sequence[tuple[float, float]], minimize_quality: bool = True
                 ) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and quality."""
    front = []
    for i, (c, q) in enumerate(points):
        dominated = False
        for j, (c2, q2) in enumerate(points):
            if j == i:
                continue
            better_q = q2 <= q if minimize_quality else q2 >= q
            strictly = c2 < c or (q2 < q if minimize_quality else q2 > q)
            if c2 <= c and better_q and strictly:
                dominated = True
                break
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda k: points[k][0])


def pareto_png(points: Sequence[tuple[str, float, float]], cost_label: str,
               quality_label: str, title: str, minimize_quality: bool = True) -> bytes:
    """Quality versus cost, one point per (experiment, arm); the Pareto front is joined."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    pts = [(c, q) for _, c, q in points]
    if not pts:
        _empty(ax, "no finished arms")
        ax.set_title(title, fontsize=10)
        return to_png(fig)
    front = set(pareto_front(pts, minimize_quality))
    for i, (label, c, q) in enumerate(points):
        on = i in front
        ax.scatter([c], [q], s=40 if on else 20, color="tab:red" if on else "tab:blue",
                   zorder=3)
        ax.annotate(label, (c, q), fontsize=7, xytext=(3, 3), textcoords="offset points")
    order = pareto_front(pts, minimize_quality)
    ax.plot([pts[i][0] for i in order], [pts[i][1] for i in order], color="tab:red", lw=1,
            label="Pareto front")
    ax.set_xlabel(cost_label)
    ax.set_ylabel(quality_label)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    return to_png(fig)


# --------------------------------------------------------------------------- sessions


def session_plot(series: Sequence[dict[str, Any]],
                 title: str = "best confirmed recipe against sprint hours") -> bytes:
    """Step curves of the best confirmed time-to-target ratio (log scale) over sprint hours,
    one per session (``series``: label, x, y, and bars: (hours, ratio, ci_low, ci_high) of
    every confirmation, drawn as 95 % intervals); ``report.sessions`` builds them."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    if not series:
        _empty(ax, "no research session")
        ax.set_title(title, fontsize=10)
        return to_png(fig)
    top = 2.0
    for k, s in enumerate(series):
        color = f"C{k % 10}"
        ax.step(s["x"], s["y"], where="post", color=color, lw=1.5, label=s["label"])
        for h, g, lo, hi in s.get("bars", []):
            err = [[g - lo if lo is not None else 0.0], [hi - g if hi is not None else 0.0]]
            ax.errorbar([h], [g], yerr=err, fmt="o", color=color, ms=4, capsize=3)
            top = max(top, hi if hi is not None else g)
        top = max(top, *s["y"])
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylim(0.8, top * 1.5)
    ticks = [t for t in (1, 1.5, 2, 3, 4, 6, 8, 10, 15, 20, 30, 50, 100) if t <= top * 1.5]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("sprint hours")
    ax.set_ylabel("time to the default's quality: default / recipe")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return to_png(fig)
