"""Efficiency accounting from stored curves: time-to-target and cost ratios against the baseline.

Time-to-target is paired by seed. For seed s the target is the baseline's final value of the
primary metric at seed s. The baseline's cost is where its own curve first reaches that value;
an arm's cost is where its curve first reaches it, linearly interpolated between evaluations.
The efficiency ratio is baseline cost / arm cost (> 1: the arm gets there cheaper); over seeds
we report the geometric mean with a 95% t interval on the log ratios. An arm that never reaches
the target at some seed is "not reached" there, and no ratio is claimed for that seed.

Costs: train_seconds, flops, and energy_kwh_est (an estimate, proportional to training time).
Compression: size, latency and memory ratios (baseline / arm) beside the quality change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from airlab.analysis import stats

COSTS = ("train_seconds", "flops", "energy_kwh_est")


@dataclass
class ArmEfficiency:
    arm: str
    n: int  # seeds with both runs finished
    reached: int  # of those, seeds where the arm reached the target
    cost: dict[str, list[float]]  # per seed, NaN where not reached
    ratio: dict[str, tuple[float, float, float]]  # cost -> (geo mean, ci_low, ci_high)
    size_ratio: float | None = None  # baseline model_bytes / arm model_bytes
    latency_ratio: float | None = None  # baseline latency_ms_b1 / arm
    memory_ratio: float | None = None  # baseline peak_mem_mb / arm
    quality_drop: float = math.nan  # arm - baseline in the bad direction (> 0 is worse)
    notes: list[str] = field(default_factory=list)


def cost_to_target(curve: Sequence[dict[str, Any]], metric: str, target: float,
                   direction: str, cost: str) -> float:
    """Interpolated cost at which the curve first reaches the target (NaN if never)."""
    sign = 1.0 if direction == "minimize" else -1.0
    prev: dict[str, Any] | None = None
    for p in curve:
        v = p.get(metric)
        if v is None or not math.isfinite(v):
            prev = None
            continue
        if sign * (v - target) <= 0:
            if prev is None:
                return float(p[cost])
            v0, c0, c1 = prev[metric], float(prev[cost]), float(p[cost])
            frac = (v0 - target) / (v0 - v) if v0 != v else 1.0
            return c0 + frac * (c1 - c0)
        prev = p
    return math.nan


def _with_energy(curve: list[dict[str, Any]], energy_total: float | None) -> list[dict[str, Any]]:
    """Energy at each point, pro rata to training time (the estimate is power x time)."""
    total_s = max((p.get("train_seconds", 0.0) for p in curve), default=0.0)
    for p in curve:
        if energy_total is not None and total_s > 0:
            p["energy_kwh_est"] = energy_total * p.get("train_seconds", 0.0) / total_s
        else:
            p["energy_kwh_est"] = math.nan
    return curve


def geo_ratio(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Geometric mean of ratios with a 95% t interval computed on the log scale."""
    logs = [math.log(r) for r in ratios if r > 0 and math.isfinite(r)]
    if not logs:
        return (math.nan, math.nan, math.nan)
    mean = float(np.mean(logs))
    if len(logs) < 2:
        return (math.exp(mean), math.nan, math.nan)
    lo, hi = stats.t_interval(logs)
    return (math.exp(mean), math.exp(lo), math.exp(hi))


def _ratio(base: float | None, arm: float | None) -> float | None:
    if base is None or arm is None or not arm or not math.isfinite(base) or not math.isfinite(arm):
        return None
    return base / arm


def arm_efficiency(arm: str, metric: str, direction: str,
                   base_runs: dict[int, dict[str, Any]], arm_runs: dict[int, dict[str, Any]],
                   base_means: dict[str, float], arm_means: dict[str, float]) -> ArmEfficiency:
    """``*_runs``: seed -> {"curve": [...], "metrics": {...}} for finished runs only."""
    seeds = sorted(set(base_runs) & set(arm_runs))
    cost: dict[str, list[float]] = {c: [] for c in COSTS}
    ratios: dict[str, list[float]] = {c: [] for c in COSTS}
    reached = 0
    for s in seeds:
        b, a = base_runs[s], arm_runs[s]
        bcurve = _with_energy([dict(p) for p in b["curve"]], b["metrics"].get("energy_kwh_est"))
        acurve = _with_energy([dict(p) for p in a["curve"]], a["metrics"].get("energy_kwh_est"))
        finals = [float(v) for p in bcurve if (v := p.get(metric)) is not None]
        if not finals:
            continue
        target = finals[-1]
        hit = False
        for c in COSTS:
            bc = cost_to_target(bcurve, metric, target, direction, c)
            ac = cost_to_target(acurve, metric, target, direction, c)
            cost[c].append(ac)
            if math.isfinite(ac) and ac > 0 and math.isfinite(bc):
                ratios[c].append(bc / ac)
                hit = True
        reached += hit
    sign = 1.0 if direction == "minimize" else -1.0
    eff = ArmEfficiency(
        arm=arm, n=len(seeds), reached=reached, cost=cost,
        ratio={c: geo_ratio(ratios[c]) for c in COSTS},
        size_ratio=_ratio(base_means.get("model_bytes"), arm_means.get("model_bytes")),
        latency_ratio=_ratio(base_means.get("latency_ms_b1"), arm_means.get("latency_ms_b1")),
        memory_ratio=_ratio(base_means.get("peak_mem_mb"), arm_means.get("peak_mem_mb")),
        quality_drop=sign * (arm_means.get(metric, math.nan) - base_means.get(metric, math.nan)),
    )
    if reached < len(seeds):
        eff.notes.append(f"target not reached at {len(seeds) - reached} of {len(seeds)} seeds")
    return eff
