"""The Validator: a deterministic rubric that rates an analysed experiment 1-10 and says why.

Three components add up to the rating (docs/rubric.md has the table):

* evidence (3): the best arm beats the baseline on the primary metric after Holm, with a
  Cohen's d of at least 0.5, and by more than 2 sd of the baseline (the seeds rule);
* impact (3): a cost ratio baseline/arm against the lab's 2x goal, with the quality change
  inside the spec's ``tolerance``;
* rigor (4): >= 3 finished seeds per arm, no failed runs, every run on the same hardware (the
  baseline is measured in the same experiment by construction), real data and one budget.

Two caps keep the bands honest: an experiment where no arm shows an improvement is rated at
most 4 (an A/A check is never "progress"), and 7+ needs every rigor check. Every missing
point becomes a critique line that names the next action in numbers.

Only the rubric lives here: :func:`rate` is a pure function of an Analysis and the runs'
facts; it runs, reads and stores nothing (the pipeline, airlab.experiment, does that).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from airlab.analysis import stats
from airlab.analysis.compare import Analysis, ArmRow, RunFacts
from airlab.config import BUDGET_UNITS

RUBRIC_VERSION = "1.0"
ALPHA = 0.05
GOAL_RATIO = 2.0  # the lab's efficiency goal: 2x cheaper at the same quality
MIN_GAIN = 1.2  # smallest cost ratio counted as a gain at all
MEASURED_GAIN = 1.5  # a ratio of two noisy measurements without a CI must clear this margin
MIN_SEEDS = 3

BANDS = (("publishable", 7, 10), ("good progress", 5, 6), ("needs work", 1, 4))
COMPONENT_MAX = {"evidence": 3, "impact": 3, "rigor": 4}

# Later seeds for an experiment that needs more: a fixed list so reruns draw the same ones.
SEED_SEQUENCE = (42, 137, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
_UNITS = {"val_loss": "nats", "best_val_loss": "nats", "val_bpc": "bits/char"}

# Cost ratios by how far they can be trusted. CI-backed: time-to-target ratios over seeds.
# Exact: analytic or counted quantities with no noise. Measured: noisy, no interval.
_CI_RATIOS = ("train_seconds", "flops", "energy_kwh_est")
_EXACT_MEANS = ("flops", "model_bytes", "params")
_MEASURED_MEANS = ("peak_mem_mb",)


@dataclass(frozen=True)
class Gain:
    """One cost ratio baseline/arm (> 1 means the arm is cheaper)."""

    what: str  # "time-to-target train_seconds", "model_bytes", ...
    ratio: float
    ci_low: float | None = None
    ci_high: float | None = None
    kind: str = "exact"  # "ci" | "exact" | "measured" | "uncredited"

    @property
    def credited(self) -> bool:
        """Whether the ratio is trustworthy enough to count (see the module docstring)."""
        if not math.isfinite(self.ratio) or self.ratio < MIN_GAIN:
            return False
        if self.kind == "ci":
            return self.ci_low is not None and self.ci_low > 1.0
        if self.kind == "measured":
            return self.ratio >= MEASURED_GAIN
        return self.kind == "exact"

    def label(self) -> str:
        ci = (f" [95% CI {self.ci_low:.2f}-{self.ci_high:.2f}]"
              if self.ci_low is not None and self.ci_high is not None else "")
        return f"{self.what} {self.ratio:.2f}x{ci}"


@dataclass
class ArmScore:
    """The rubric applied to one arm (rigor is shared by the experiment)."""

    arm: str
    verdict: str
    evidence: dict[str, bool]
    gains: list[Gain]
    best_gain: Gain | None
    quality_ok: bool
    quality_drop: float  # worsening of the primary metric's mean (negative: it improved)
    improved: bool
    points: dict[str, int]


@dataclass
class Verdict:
    """A rating 1-10, its band, the points per component and the critique lines."""

    experiment: str
    rating: int
    band: str
    breakdown: dict[str, dict[str, Any]]  # component -> {"points", "max", "checks"}
    critique: list[str]
    best_arm: str | None = None
    rubric_version: str = RUBRIC_VERSION
    caps: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- helpers


def band_of(rating: int) -> str:
    for name, lo, hi in BANDS:
        if lo <= rating <= hi:
            return name
    raise ValueError(f"rating must be 1-10, got {rating}")


def next_seeds(existing: Sequence[int], k: int) -> list[int]:
    """The next ``k`` seeds after ``existing``: SEED_SEQUENCE first, then doubling on."""
    have = set(existing)
    out: list[int] = []
    candidates: Iterable[int] = SEED_SEQUENCE
    last = SEED_SEQUENCE[-1]
    while len(out) < k:
        for s in candidates:
            if s not in have and s not in out:
                out.append(s)
                if len(out) == k:
                    break
        last *= 2
        candidates = (last,)
    return out


def _unit(metric: str) -> str:
    u = _UNITS.get(metric, "")
    return f" {u}" if u else ""


def _fmt(x: float) -> str:
    return "nan" if x is None or math.isnan(x) else f"{x:.3g}"


def real_datasets() -> set[str]:
    """Names of the registered datasets (all real data); ``file:PATH`` is real too."""
    from airlab.data import TEXT_CORPORA, VISION_DATASETS

    return set(TEXT_CORPORA) | set(VISION_DATASETS)


def _is_real(dataset: str) -> bool:
    return dataset.startswith("file:") or dataset in real_datasets()


def _sign(direction: str) -> float:
    """+1 when larger is better, -1 when smaller is better."""
    return -1.0 if direction == "minimize" else 1.0


# --------------------------------------------------------------------------- arm scoring


def _gains(row: ArmRow, base: ArmRow) -> list[Gain]:
    """Every cost ratio known for the arm: time-to-target (with CI) first, then means."""
    out: list[Gain] = []
    eff = getattr(row, "efficiency", None)
    if eff is not None:
        reached, n = getattr(eff, "reached", None), getattr(eff, "n", None)
        # A ratio over only the seeds that reached the target flatters the arm: not counted.
        partial = reached is not None and n is not None and reached < n
        for key in _CI_RATIOS:
            r = (getattr(eff, "ratio", None) or {}).get(key)
            if r is not None and r[0] is not None and math.isfinite(r[0]):
                what = f"time-to-target {key}" + (f" (reached {reached}/{n})" if partial
                                                  else "")
                out.append(Gain(what, float(r[0]), None if r[1] is None else float(r[1]),
                                None if r[2] is None else float(r[2]),
                                "uncredited" if partial else "ci"))
        for attr, kind in (("size_ratio", "exact"), ("memory_ratio", "measured"),
                           ("latency_ratio", "measured")):
            v = getattr(eff, attr, None)
            if v is not None and math.isfinite(v):
                out.append(Gain(attr.removesuffix("_ratio"), float(v), kind=kind))
    have = {g.what for g in out}
    for key, kind in ([(m, "exact") for m in _EXACT_MEANS]
                      + [(m, "measured") for m in _MEASURED_MEANS]
                      + [("train_seconds", "uncredited")]):
        b, a = base.means.get(key), row.means.get(key)
        if key == "model_bytes" and "size" in have:
            continue
        if b and a and b > 0 and a > 0:
            out.append(Gain(f"{key} per budget" if key in ("flops", "train_seconds") else key,
                            b / a, kind=kind))
    return out


def score_arm(row: ArmRow, base: ArmRow, direction: str, tolerance: float,
              identical: bool = False) -> ArmScore:
    """Evidence and impact points of one arm against the baseline.

    ``identical``: the arm's runs have the baseline's configs (an A/A check), so any gain is
    noise by construction and none is credited.
    """
    c = row.comparison
    sign = _sign(direction)  # +1 when larger is better
    evidence = {"significant": False, "effect_size": False, "seeds_rule": False}
    drop = math.nan
    if c is not None:
        toward = sign * c.delta  # > 0: the arm moved toward better
        p = row.p_holm if row.p_holm is not None else c.p_value
        evidence["significant"] = bool(toward > 0 and not math.isnan(p) and p < ALPHA)
        d_toward = sign * c.d
        evidence["effect_size"] = bool(not math.isnan(d_toward) and d_toward >= 0.5)
        evidence["seeds_rule"] = bool(c.seeds_rule)
        drop = -toward
    # With a tolerance the mean drop must stay inside it; without one the arm must merely not
    # be significantly worse (a compression arm rarely matches the baseline to the last digit).
    quality_ok = row.verdict != "worse" and c is not None and not math.isnan(drop)
    if quality_ok and tolerance > 0:
        quality_ok = drop <= tolerance
    gains = _gains(row, base)
    credited = [] if identical else [g for g in gains if g.credited]
    best = max(credited, key=lambda g: g.ratio) if credited else (
        max(gains, key=lambda g: g.ratio) if gains else None)
    eff_points = 0
    if quality_ok and credited:
        assert best is not None
        eff_points = 2 if best.ratio >= GOAL_RATIO else 1
    points = {"evidence": sum(evidence.values()),
              "impact": eff_points + int(quality_ok)}
    improved = not identical and (row.verdict == "better" or (quality_ok and bool(credited)))
    return ArmScore(row.arm, row.verdict, evidence, gains, best, quality_ok, drop, improved,
                    points)


# --------------------------------------------------------------------------- rigor


def _rigor(a: Analysis, facts: RunFacts | None) -> tuple[dict[str, bool], list[str]]:
    spec = a.spec
    checks: dict[str, bool] = {}
    notes: list[str] = []
    min_fin = min(r.finished for r in a.rows)
    checks["three_seeds"] = min_fin >= MIN_SEEDS
    if not checks["three_seeds"]:
        more = MIN_SEEDS - min_fin
        have = list(a.baseline.seeds)
        add = next_seeds(have, max(0, MIN_SEEDS - len(have)))
        seeds_hint = f" (e.g. seeds {', '.join(map(str, add))})" if add else ""
        notes.append(f"too few seeds: {min_fin} finished per arm at worst; run {more} more "
                     f"to reach {MIN_SEEDS}{seeds_hint}")
    failures = [(r.arm, f) for r in a.rows for f in r.failures]
    missing = sum(r.planned - r.finished - r.failed for r in a.rows)
    checks["no_failures"] = not failures and missing == 0
    if failures:
        shown = "; ".join(f"{arm} {f}" for arm, f in failures[:3])
        notes.append(f"{len(failures)} failed run(s): {shown}; fix the cause and rerun with "
                     "`airlab run --retry-failed`")
    if missing:
        notes.append(f"{missing} run(s) not finished yet: finish them with `airlab run "
                     f"{a.name}`")
    if facts is None:
        checks["same_hardware"] = False
        notes.append("no run provenance given: rate from the store so host and CPU can be "
                     "checked")
    else:
        checks["same_hardware"] = len(facts.hardware) == 1 and facts.missing_provenance == 0
        if len(facts.hardware) > 1:
            hosts = ", ".join(sorted(f"{h} ({c}, {d})" for h, c, d in facts.hardware))
            notes.append(f"runs span {len(facts.hardware)} machines ({hosts}): rerun every "
                         "arm, baseline included, on one machine")
        elif facts.missing_provenance or not facts.hardware:
            notes.append(f"{facts.missing_provenance} finished run(s) lack provenance: the "
                         "baseline's hardware cannot be confirmed; rerun them")
    # Real data and one compute budget for every arm.
    datasets = set(facts.datasets) if facts and facts.datasets else (
        {spec["dataset"]} if spec.get("dataset") else set())
    fake = sorted(d for d in datasets if not _is_real(d))
    budgets = set(facts.budgets) if facts and facts.budgets else set()
    if not budgets:
        (unit, amount), = (spec.get("budget") or {"?": 0.0}).items()
        budgets = {(unit, float(amount))}
        for arm in spec.get("arms", []) + [spec.get("baseline", {})]:
            for u in BUDGET_UNITS:
                if u in (arm.get("options") or {}):
                    budgets.add((u, float(arm["options"][u])))
    checks["real_data_matched_budget"] = not fake and len(budgets) == 1
    if fake:
        notes.append(f"dataset {', '.join(fake)} is not real data: use one of "
                     f"{', '.join(sorted(real_datasets()))} or file:PATH")
    if len(budgets) > 1:
        shown = ", ".join(f"{u}={v:g}" for u, v in sorted(budgets))
        notes.append(f"arms have different budgets ({shown}): give every arm the same budget "
                     "so the comparison is compute-matched")
    return checks, notes


# --------------------------------------------------------------------------- critique


def _evidence_notes(s: ArmScore, row: ArmRow, a: Analysis) -> list[str]:
    c = row.comparison
    if c is None:
        return [f"{row.arm}: no comparison (the baseline or the arm has no finished seeds)"]
    unit = _unit(a.metric)
    notes: list[str] = []
    p = row.p_holm if row.p_holm is not None else c.p_value
    toward = _sign(a.direction) * c.delta
    sd, n = c.baseline.sd, c.baseline.n
    if not s.evidence["significant"]:
        if toward <= 0 or math.isnan(toward):
            notes.append(f"{row.arm}: no improvement on {a.metric}: Δ = {_fmt(c.delta)}{unit} "
                         f"(p Holm = {_fmt(p)}, d = {_fmt(c.d)})")
        else:
            notes.append(f"{row.arm}: not significant after Holm: p = {_fmt(p)} for "
                         f"Δ = {_fmt(c.delta)}{unit}")
        if not math.isnan(sd) and n >= 2 and not math.isnan(c.mde):
            line = (f"underpowered: the minimum detectable effect is {_fmt(c.mde)}{unit} at "
                    f"n = {n}")
            effect = abs(c.delta)
            if effect > 0 and math.isfinite(effect):
                need = stats.seeds_needed(sd, effect, paired=True)
                if n < need < 1000:
                    line += (f"; {need - n} more seeds (n = {need}) would detect the observed "
                             f"{_fmt(effect)}{unit}")
                elif need >= 1000:
                    line += (f"; the observed {_fmt(effect)}{unit} is too small to detect even "
                             "with 1000 seeds: treat it as no effect")
            notes.append(line)
    if not s.evidence["effect_size"]:
        d_toward = _sign(a.direction) * c.d
        notes.append(f"{row.arm}: effect size d = {_fmt(d_toward)} toward better is below 0.5: "
                     "reduce seed noise or strengthen the change")
    if not s.evidence["seeds_rule"]:
        notes.append(f"{row.arm}: inside seed noise: the mean must improve by more than "
                     f"2σ of the baseline = {_fmt(2 * sd)}{unit} (it moved {_fmt(toward)}"
                     f"{unit} toward better)")
    return notes


def _impact_notes(s: ArmScore, row: ArmRow, a: Analysis, tolerance: float) -> list[str]:
    unit = _unit(a.metric)
    notes: list[str] = []
    if not s.quality_ok:
        if row.verdict == "worse":
            notes.append(f"{row.arm}: quality is significantly worse (Δ = "
                         f"{_fmt(row.comparison.delta if row.comparison else math.nan)}{unit})")
        elif tolerance > 0 and not math.isnan(s.quality_drop):
            notes.append(f"{row.arm}: quality drop {_fmt(s.quality_drop)}{unit} exceeds the "
                         f"tolerance {_fmt(tolerance)}{unit}: recover "
                         f"{_fmt(s.quality_drop - tolerance)}{unit}")
        else:
            notes.append(f"{row.arm}: quality change unknown (no comparison)")
    g = s.best_gain
    if g is None:
        notes.append(f"{row.arm}: no cost ratio measured: the lab's goal is a {GOAL_RATIO:g}x "
                     "cheaper run at the same quality")
    elif not g.credited:
        why = ("its CI reaches 1" if g.kind == "ci" and g.ratio >= MIN_GAIN else
               "it has no confidence interval (time-to-target not computed)"
               if g.kind == "uncredited" and g.ratio >= MIN_GAIN else
               f"a measured ratio without CI must reach {MEASURED_GAIN:g}x"
               if g.kind == "measured" and g.ratio >= MIN_GAIN else
               f"below the {MIN_GAIN:g}x that counts as a gain")
        notes.append(f"{row.arm}: best cost ratio {g.label()} is not counted: {why}; the goal "
                     f"is {GOAL_RATIO:g}x")
    elif g.ratio < GOAL_RATIO:
        cut = 1 - g.ratio / GOAL_RATIO
        notes.append(f"{row.arm}: {g.label()} is short of the {GOAL_RATIO:g}x goal: cut the "
                     f"arm's cost by a further {100 * cut:.0f}%")
    return notes


# --------------------------------------------------------------------------- rating


def rate(a: Analysis, facts: RunFacts | None = None) -> Verdict:
    """Apply the rubric to an analysis; ``facts`` (from :func:`run_facts`) enables the
    hardware check. Deterministic: the same analysis and facts always give the same verdict."""
    tolerance = float(a.spec.get("tolerance", 0.0) or 0.0)
    rigor_checks, rigor_notes = _rigor(a, facts)
    rigor_points = sum(rigor_checks.values())
    base = a.baseline
    same = facts.identical_arms if facts else frozenset()
    scores = [(score_arm(r, base, a.direction, tolerance, r.arm in same), r)
              for r in a.rows[1:]]
    critique: list[str] = []
    caps: list[str] = []
    if not scores:
        breakdown = {"evidence": {"points": 0, "max": 3, "checks": {}},
                     "impact": {"points": 0, "max": 3, "checks": {}},
                     "rigor": {"points": rigor_points, "max": 4, "checks": rigor_checks}}
        critique = ["no arm to compare: add at least one arm against the baseline",
                    *rigor_notes]
        return Verdict(a.name, 1, band_of(1), breakdown, critique, None, RUBRIC_VERSION,
                       ["no arm"])

    # The best arm: improved first, then most points, then the earlier arm (deterministic).
    def key(item: tuple[ArmScore, ArmRow]) -> tuple[int, int]:
        s = item[0]
        return (int(s.improved), s.points["evidence"] + s.points["impact"])

    best, best_row = max(scores, key=key)
    total = best.points["evidence"] + best.points["impact"] + rigor_points
    rating = max(1, min(10, total))
    if not best.improved:
        cap = 4
        if rating > cap:
            caps.append(f"capped at {cap}: no arm improved on the baseline (best arm "
                        f"'{best.arm}': verdict '{best.verdict}', no credited cost ratio)")
            rating = cap
    if rating > 6 and not all(rigor_checks.values()):
        caps.append("capped at 6: a publishable rating needs every rigor check")
        rating = 6
    if not best.improved:
        critique.append("no arm shows an improvement: this counts as a negative (or A/A) "
                        "result, not progress")
    for s, _ in scores:
        if s.arm in same:
            critique.append(f"{s.arm}: runs the baseline's exact configuration (an A/A "
                            "check): its differences are noise by construction")
    critique += _evidence_notes(best, best_row, a)
    critique += _impact_notes(best, best_row, a, tolerance)
    critique += rigor_notes
    critique += caps
    gain = best.best_gain
    breakdown = {
        "evidence": {"points": best.points["evidence"], "max": 3, "checks": best.evidence},
        "impact": {"points": best.points["impact"], "max": 3,
                   "checks": {"efficiency": gain.label() if gain else None,
                              "efficiency_credited": bool(gain and gain.credited),
                              "quality_within_tolerance": best.quality_ok}},
        "rigor": {"points": rigor_points, "max": 4, "checks": rigor_checks},
    }
    return Verdict(a.name, rating, band_of(rating), breakdown, critique, best.arm,
                   RUBRIC_VERSION, caps)
