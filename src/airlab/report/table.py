"""Result tables for the terminal (Rich)."""

from __future__ import annotations

import math

from rich.console import Group
from rich.table import Table
from rich.text import Text

from airlab.analysis.compare import Analysis, ArmRow

VERDICT_STYLE = {"better": "bold green", "worse": "bold red", "no difference": "yellow",
                 "inconclusive": "dim", "baseline": "cyan"}


def fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "-∞"
    ax = abs(x)
    if ax != 0 and (ax >= 1e6 or ax < 1e-3):
        return f"{x:.3g}"
    return f"{x:.{digits}g}"


def fmt_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "—"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def speedup(r: ArmRow) -> str:
    """Time-to-target efficiency ratio (baseline seconds / arm seconds) with its 95% CI."""
    e = r.efficiency
    if e is None or e.n == 0:
        return ""
    mean, lo, hi = e.ratio["train_seconds"]
    if e.reached == 0:
        return "not reached"
    ci = f" [{lo:.2f}, {hi:.2f}]" if not math.isnan(lo) else ""
    partial = f" ({e.reached}/{e.n} reached)" if e.reached < e.n else ""
    return f"{mean:.2f}{ci}{partial}"


def size(r: ArmRow) -> str:
    e = r.efficiency
    return "" if e is None or e.size_ratio is None else f"{e.size_ratio:.2f}"


def analysis_table(a: Analysis) -> Group:
    arrow = "↓" if a.direction == "minimize" else "↑"
    t = Table(title=f"{a.name}: {a.metric} ({arrow} better), {len(a.baseline.seeds)} seeds",
              title_justify="left")
    for col, just in [("arm", "left"), ("n", "right"), (f"{a.metric} mean ± sd", "right"),
                      ("95% CI", "right"), ("Δ vs base", "right"), ("p (Holm)", "right"),
                      ("d", "right"), ("train s", "right"), ("throughput", "right"),
                      ("time-to-target ×", "right"), ("size ×", "right"), ("verdict", "left")]:
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in a.rows:
        s = r.summary
        c = r.comparison
        speed = r.means.get("tokens_per_s") or r.means.get("samples_per_s")
        unit = "tok/s" if "tokens_per_s" in r.means else "samp/s"
        n = f"{r.finished}/{r.planned}" + (f" ({r.failed} failed)" if r.failed else "")
        delta = "" if c is None else f"{c.delta:+.4g} ({100 * c.rel_delta:+.1f}%)"
        t.add_row(
            r.arm, n, f"{fmt(s.mean)} ± {fmt(s.sd, 2)}", f"[{fmt(s.ci_low)}, {fmt(s.ci_high)}]",
            delta, "" if c is None else fmt_p(r.p_holm), "" if c is None else fmt(c.d, 3),
            fmt(r.means.get("train_seconds"), 3), f"{fmt(speed, 4)} {unit}" if speed else "—",
            speedup(r), "" if r.is_baseline else size(r),
            Text(r.verdict, style=VERDICT_STYLE.get(r.verdict, "")),
        )
    notes: list[Text] = []
    for r in a.rows:
        for f in r.failures:
            notes.append(Text(f"failed: {r.arm} {f}", style="red"))
    for r in a.rows[1:]:
        c = r.comparison
        if c is not None and not math.isnan(c.mde):
            notes.append(Text(f"{r.arm}: minimum detectable effect at n={c.baseline.n} is "
                              f"{fmt(c.mde, 3)}; seeds rule (Δ > 2σ_base and d ≥ 0.5): "
                              f"{'met' if c.seeds_rule else 'not met'}", style="dim"))
    for r in a.rows[1:]:
        e = r.efficiency
        if e is None or e.n == 0:
            continue
        parts = []
        for cost, label in (("flops", "FLOPs"), ("energy_kwh_est", "energy (estimate)")):
            m, lo, hi = e.ratio[cost]
            if not math.isnan(m):
                ci = f" [{lo:.2f}, {hi:.2f}]" if not math.isnan(lo) else ""
                parts.append(f"{label} {m:.2f}×{ci}")
        for label, v in (("latency", e.latency_ratio), ("peak memory", e.memory_ratio)):
            if v is not None:
                parts.append(f"{label} {v:.2f}×")
        if parts:
            notes.append(Text(f"{r.arm}: to reach the baseline's final {a.metric}: "
                              + ", ".join(parts) + f"; quality change {e.quality_drop:+.4g}",
                              style="dim"))
    notes.append(Text("ratios are baseline / arm (> 1: the arm is cheaper); time-to-target is "
                      "paired by seed; energy is an estimate", style="dim"))
    return Group(t, *notes)
