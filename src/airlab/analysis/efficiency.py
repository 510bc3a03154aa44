"""Efficiency accounting from stored curves: time-to-target and cost ratios against the baseline.

Time-to-target uses one rule for both arms, paired by seed. The target for seed pair i is
common to both runs of the pair and chosen by neither: the mean of the baseline's final value
over the *other* seeds (leave-one-seed-out), loosened by a slack of 3 sd (the noise floor's
one-run sd when known, else the other seeds' sd at its upper 80 % bound; never pair i's own
final) so that a run of the baseline's own quality reaches it (with less slack, the
pairs where every baseline run barely reaches its target are the ones kept, which favours the
arm). A declared target replaces all of that.
Each run's cost is where its curve first reaches the target, linearly interpolated between
evaluations. The ratio is baseline cost / arm cost (> 1: the arm gets there cheaper), per pair
where both reached it; over pairs we report the geometric mean, and a 95% t interval on the log
ratios only from ``MIN_PAIRS`` = 3 reached pairs on (the simulated A/A coverage is in
docs/decision_rules.md).

Costs: train_seconds, flops, and energy_kwh_est (an estimate, proportional to training time).
Compression: size, latency and memory ratios (baseline / arm) beside the quality change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from airlab.analysis import decisions, stats

COSTS = ("train_seconds", "flops", "energy_kwh_est")
MIN_PAIRS = 3  # no interval on fewer reached pairs (df = 1 gives intervals like [0.01, 103])
SLACK_SIGMAS = 3.0  # the target sits this many sds above (for a loss) the others' mean final


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
    targets: list[float] = field(default_factory=list)  # per seed pair (leave-one-seed-out)


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


def geo_ratio(ratios: Sequence[float], min_pairs: int = 2) -> tuple[float, float, float]:
    """Geometric mean of ratios with a 95% t interval computed on the log scale.

    The interval is nan with fewer than ``min_pairs`` usable ratios (time-to-target passes
    ``MIN_PAIRS``).
    """
    logs = [math.log(r) for r in ratios if r > 0 and math.isfinite(r)]
    if not logs:
        return (math.nan, math.nan, math.nan)
    mean = float(np.mean(logs))
    if len(logs) < max(2, min_pairs):
        return (math.exp(mean), math.nan, math.nan)
    lo, hi = stats.t_interval(logs)
    return (math.exp(mean), math.exp(lo), math.exp(hi))


def loo_targets(finals: np.ndarray, direction: str, floor_sd: float = math.nan,
                slack_sigmas: float = SLACK_SIGMAS) -> np.ndarray:
    """Per-pair targets from the baseline's final values (last axis: seeds; leading: batch).

    target_i = mean of the finals of the *other* seeds, moved toward "worse" by
    ``slack_sigmas`` sds: the noise floor's one-run sd when given, else the sd of the other
    seeds' finals at its upper ``decisions.SD_CONFIDENCE`` bound (n - 2 df), so that a run of
    the baseline's own quality reaches its target although that sd is an estimate on 1-8 df.
    Seed i's run moves neither the centre nor the slack of its own target: a slow baseline
    run that loosened its own target made A/A intervals lie above 1 twice as often as below
    (3.2 % against 1.6 %). The other seeds' sd at face value (df n - 2) left pairs too little
    slack: an interval in only 48 % of A/A trials at n = 3 (docs/decision_rules.md). Without
    a floor, 2 seeds give no target (nan): the other seed's sd is undefined.
    """
    f = np.asarray(finals, dtype=np.float64)
    n = f.shape[-1]
    if n < 2:
        raise ValueError(f"leave-one-seed-out targets need at least 2 seeds, got {n}")
    worse = 1.0 if direction == "minimize" else -1.0
    total = f.sum(axis=-1, keepdims=True)
    others = (total - f) / (n - 1)
    if not math.isnan(floor_sd):
        sd = np.full(others.shape, floor_sd)
    elif n < 3:
        sd = np.full(others.shape, np.nan)
    else:
        # sd of the other n - 1 finals, around their own mean, for every i at once.
        c = f - total / n  # centred: no cancellation in the sums of squares
        s2 = (c * c).sum(axis=-1, keepdims=True) - c * c
        s1 = c.sum(axis=-1, keepdims=True) - c
        var = np.maximum(s2 - s1 * s1 / (n - 1), 0.0) / (n - 2)
        sd = np.sqrt(var) * decisions.sd_bound_factors(n - 2)[1]
    return others + worse * slack_sigmas * sd


def crossing_batch(values: np.ndarray, costs: np.ndarray, target: np.ndarray,
                   direction: str) -> np.ndarray:
    """Interpolated cost where each curve first reaches its target; nan where it never does.

    ``values`` and ``costs``: (..., E) evaluations in order; ``target``: (...). The same rule
    as :func:`cost_to_target` for curves without missing points.
    """
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(costs, dtype=np.float64)
    sign = 1.0 if direction == "minimize" else -1.0
    t = np.asarray(target, dtype=np.float64)[..., None]
    hit = sign * (v - t) <= 0
    any_hit = hit.any(axis=-1)
    k = np.argmax(hit, axis=-1)[..., None]
    km = np.maximum(k - 1, 0)
    v1, v0 = np.take_along_axis(v, k, -1)[..., 0], np.take_along_axis(v, km, -1)[..., 0]
    c1, c0 = np.take_along_axis(c, k, -1)[..., 0], np.take_along_axis(c, km, -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(v0 != v1, (v0 - t[..., 0]) / (v0 - v1), 1.0)
    out = np.where(k[..., 0] == 0, c1, c0 + frac * (c1 - c0))
    return np.where(any_hit, out, np.nan)


@dataclass
class TimeToTarget:
    """Paired time-to-target of one cost: targets, costs and ratios per seed pair."""

    cost: str
    targets: list[float]
    base_cost: list[float]  # nan where the baseline run did not reach its pair's target
    arm_cost: list[float]
    ratios: list[float]  # base / arm; nan unless both reached
    reached: int  # pairs where both reached
    ratio: float  # geometric mean over reached pairs
    ci_low: float  # 95% t interval on the logs; nan below MIN_PAIRS reached pairs
    ci_high: float


def _final(curve: Sequence[dict[str, Any]], metric: str) -> float:
    vals = [float(v) for p in curve if (v := p.get(metric)) is not None and math.isfinite(v)]
    return vals[-1] if vals else math.nan


def time_to_target(base_curves: Sequence[Sequence[dict[str, Any]]],
                   arm_curves: Sequence[Sequence[dict[str, Any]]], metric: str, direction: str,
                   cost: str, target: float | None = None, floor_sd: float = math.nan,
                   slack_sigmas: float = SLACK_SIGMAS) -> TimeToTarget:
    """Time-to-target of an arm against the baseline, curves paired by seed (same order).

    ``target`` declared: one target for every pair. Otherwise :func:`loo_targets` over the
    baseline's final values (a baseline run without a final value leaves its pair out).
    """
    if len(base_curves) != len(arm_curves):
        raise ValueError(f"paired curves need equal counts, got {len(base_curves)} baseline "
                         f"and {len(arm_curves)} arm curves")
    n = len(base_curves)
    if target is not None:
        targets = np.full(n, float(target))
    else:
        finals = np.array([_final(c, metric) for c in base_curves])
        ok = ~np.isnan(finals)
        targets = np.full(n, np.nan)
        if ok.sum() >= 2:
            targets[ok] = loo_targets(finals[ok], direction, floor_sd, slack_sigmas)
    bc, ac = [], []
    for i in range(n):
        if math.isnan(targets[i]):
            bc.append(math.nan)
            ac.append(math.nan)
            continue
        bc.append(cost_to_target(base_curves[i], metric, float(targets[i]), direction, cost))
        ac.append(cost_to_target(arm_curves[i], metric, float(targets[i]), direction, cost))
    ratios = [b / a if math.isfinite(b) and math.isfinite(a) and a > 0 and b > 0 else math.nan
              for b, a in zip(bc, ac, strict=True)]
    reached = sum(math.isfinite(r) for r in ratios)
    g, lo, hi = geo_ratio(ratios, min_pairs=MIN_PAIRS)
    return TimeToTarget(cost, targets.tolist(), bc, ac, ratios, reached, g, lo, hi)


def _ratio(base: float | None, arm: float | None) -> float | None:
    if base is None or arm is None or not arm or not math.isfinite(base) or not math.isfinite(arm):
        return None
    return base / arm


def arm_efficiency(arm: str, metric: str, direction: str,
                   base_runs: dict[int, dict[str, Any]], arm_runs: dict[int, dict[str, Any]],
                   base_means: dict[str, float], arm_means: dict[str, float],
                   target: float | None = None, floor_sd: float = math.nan) -> ArmEfficiency:
    """``*_runs``: seed -> {"curve": [...], "metrics": {...}} for finished runs only.

    Time-to-target by :func:`time_to_target` (leave-one-seed-out targets unless ``target`` is
    declared); ``reached`` counts seed pairs where both runs reached their target.
    """
    seeds = sorted(set(base_runs) & set(arm_runs))
    bcurves = [_with_energy([dict(p) for p in base_runs[s]["curve"]],
                            base_runs[s]["metrics"].get("energy_kwh_est")) for s in seeds]
    acurves = [_with_energy([dict(p) for p in arm_runs[s]["curve"]],
                            arm_runs[s]["metrics"].get("energy_kwh_est")) for s in seeds]
    cost: dict[str, list[float]] = {}
    ratio: dict[str, tuple[float, float, float]] = {}
    reached = 0
    targets: list[float] = []
    for c in COSTS:
        if len(seeds) < 2 and target is None:
            cost[c], ratio[c] = [math.nan] * len(seeds), (math.nan, math.nan, math.nan)
            continue
        t = time_to_target(bcurves, acurves, metric, direction, c, target, floor_sd)
        cost[c], ratio[c], targets = t.arm_cost, (t.ratio, t.ci_low, t.ci_high), t.targets
        reached = max(reached, t.reached)
    sign = 1.0 if direction == "minimize" else -1.0
    eff = ArmEfficiency(
        arm=arm, n=len(seeds), reached=reached, cost=cost, ratio=ratio,
        size_ratio=_ratio(base_means.get("model_bytes"), arm_means.get("model_bytes")),
        latency_ratio=_ratio(base_means.get("latency_ms_b1"), arm_means.get("latency_ms_b1")),
        memory_ratio=_ratio(base_means.get("peak_mem_mb"), arm_means.get("peak_mem_mb")),
        quality_drop=sign * (arm_means.get(metric, math.nan) - base_means.get(metric, math.nan)),
        targets=targets,
    )
    if len(seeds) < 2 and target is None:
        eff.notes.append("time-to-target needs at least 2 seed pairs (leave-one-seed-out target)")
    elif len(seeds) < 3 and target is None and math.isnan(floor_sd):
        eff.notes.append("time-to-target needs 3 seed pairs or a noise floor (`airlab "
                         "calibrate`): the slack of pair i's target comes from the other "
                         "seeds' spread")
    elif reached < len(seeds):
        eff.notes.append(f"target reached by both runs at {reached} of {len(seeds)} seed pairs")
    if 0 < reached < MIN_PAIRS:
        eff.notes.append(f"no interval: {reached} reached pair(s), {MIN_PAIRS} are needed")
    return eff
