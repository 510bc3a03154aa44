"""Result tables for the terminal (Rich)."""

from __future__ import annotations

import math

from rich.console import Group
from rich.table import Table
from rich.text import Text

from airlab.analysis.compare import Analysis, ArmRow

VERDICT_STYLE = {"better": "bold green", "worse": "bold red", "equivalent": "yellow",
                 "undecided": "dim", "no difference": "yellow", "inconclusive": "dim",
                 "baseline": "cyan"}


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
    # No interval below 3 reached pairs (efficiency.MIN_PAIRS): the ratio and the count only.
    ci = f" [{lo:.2f}, {hi:.2f}]" if not math.isnan(lo) else ""
    return f"{mean:.2f}{ci} ({e.reached}/{e.n} pairs)"


def size(r: ArmRow) -> str:
    e = r.efficiency
    return "" if e is None or e.size_ratio is None else f"{e.size_ratio:.2f}"


def _flags(r: ArmRow) -> str:
    """Pathology flags of an arm's runs (text workloads): collapsed, overfit."""
    return "".join(f" ⚠ {k} {n}" for k, n in sorted(r.pathologies.items()))


def analysis_table(a: Analysis) -> Group:
    arrow = "↓" if a.direction == "minimize" else "↑"
    t = Table(title=f"{a.name}: {a.metric} ({arrow} better), {len(a.baseline.seeds)} seeds",
              title_justify="left")
    for col, just in [("arm", "left"), ("n", "right"), (f"{a.metric} mean ± sd", "right"),
                      ("95% CI", "right"), ("Δ vs base", "right"), ("p (Holm)", "right"),
                      ("d_z", "right"), ("train s", "right"), ("throughput", "right"),
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
            delta, "" if c is None else fmt_p(r.p_holm),
            "" if r.decision is None else fmt(r.decision.dz, 3),
            fmt(r.means.get("train_seconds"), 3), f"{fmt(speed, 4)} {unit}" if speed else "—",
            speedup(r), "" if r.is_baseline else size(r),
            Text(r.verdict + _flags(r), style=VERDICT_STYLE.get(r.verdict, "")),
        )
    notes: list[Text] = []
    for r in a.rows:
        for f in r.failures:
            notes.append(Text(f"failed: {r.arm} {f}", style="red"))
    notes.append(Text(f"decisions: equivalent = TOST within {a.margin.describe()} (first: a "
                      "difference inside it is negligible); else paired t + Holm (better/worse)",
                      style="dim"))
    for fm, floor in a.floors.items():
        notes.append(Text(f"noise floor of {fm} (airlab calibrate): sd {fmt(floor.sd, 3)} per "
                          f"run, {floor.n} A/A runs", style="dim"))
    for r in a.rows[1:]:
        d = r.decision
        if d is None:
            continue
        mde = (f"minimum detectable effect at n={d.n} is {fmt(r.mde, 3)} (sd of "
               f"{r.mde_source}); " if not math.isnan(r.mde) else "")
        notes.append(Text(f"{r.arm}: {mde}seeds' rule (Δ > 2σ_base and d ≥ 0.5), reported "
                          f"beside: {'met' if d.seeds_rule else 'not met'}", style="dim"))
        q = r.quality
        if not a.quality_is_primary and q is not None:
            notes.append(Text(f"{r.arm}: quality on {a.quality_metric}: {q.label} (Δ "
                              f"{fmt(q.mean_diff, 3)}, margin "
                              f"{a.quality_margin.describe()})", style="dim"))
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
            target = a.metric if a.metric in ("val_loss", "val_acc") else "val_loss"
            qd = (f"; quality change {e.quality_drop:+.4g}"
                  if not math.isnan(e.quality_drop) else "")
            notes.append(Text(f"{r.arm}: to reach the common {target} target: "
                              + ", ".join(parts) + qd, style="dim"))
    notes.append(Text("ratios are baseline / arm (> 1: the arm is cheaper); time-to-target is "
                      "paired by seed; energy is an estimate", style="dim"))
    return Group(t, *notes)
