"""The Validator: a deterministic rubric that rates an analysed experiment 1-10 and says why.

Three components add up to the rating (docs/rubric.md has the table):

* evidence (3), only from calibrated tests: the best arm is "better" on the primary metric by
  the paired t test with Holm across arms (1), at a tenth of that alpha too (1: "strong", p
  Holm < 0.005 at alpha 0.05), and its gain is shown to exceed the margin, the smallest effect
  that matters (1: a one-sided paired t test against the margin's upper bound, Holm). The
  seeds' own rule and d_z are reported beside, as the seeds asked, and score nothing: neither
  is a test with a known error rate. A sequential decision (`airlab decide`) scores with the
  tests and alpha of the look that decided it;
* impact (3): quality kept (1): "better", or equivalent by two one-sided tests against the
  margin without a significant worsening (never "not shown worse", never a loss the paired
  test finds, however small); and the ONE credited cost ratio (the spec's ``credit``:
  time-to-target seconds by default, or FLOPs, energy, size, memory; when the primary metric is
  itself a saving such as ``peak_mem_mb``, that saving) against the lab's 2x goal (1 or 2);
* rigor (4): >= 3 finished seeds per arm, no failed runs, every run on the same hardware, real
  data and one budget.

Caps keep the bands honest: no arm improved -> at most 4 (an A/A check is never "progress");
7+ needs every rigor check and a margin that is declared or measured (a provisional margin
from the experiment's own baseline caps at 6); a collapsed run (text degenerated while the
loss looked fine) -> at most 4, an overfit run -> at most 6; a run the trusted measuring side
flagged implausible (its arm is never better nor kept: compare.demote_implausible) -> at
most 4. A ``--quick`` smoke test gets no rating at all ("smoke test, not rated", rating 0).
Every missing point becomes a critique line that says what happened and names the next action
in numbers.

Only the rubric lives here: :func:`rate` is a pure function of an Analysis and the runs'
facts; it runs, reads and stores nothing (the pipeline, airlab.experiment, does that).
:data:`RUBRIC_VERSION` is a hash of the rubric's constants and the source of its rating
functions, so a changed rule gives a new version, stored with every verdict.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from airlab.analysis.compare import CREDIT_COSTS, Analysis, ArmRow, RunFacts
from airlab.config import BUDGET_UNITS

ALPHA = 0.05
GOAL_RATIO = 2.0  # the lab's efficiency goal: 2x cheaper at the same quality
MIN_GAIN = 1.2  # smallest cost ratio counted as a gain at all
MEASURED_GAIN = 1.5  # a ratio of two noisy measurements without a CI must clear this margin
MIN_SEEDS = 3
# "Strong" evidence: the same paired test at alpha / 10 (0.005 at 0.05, the threshold Benjamin
# et al. 2018 proposed for claims of new discoveries). Calibrated like the test itself.
STRONG_FACTOR = 10.0
CAP_NO_IMPROVEMENT = 4
CAP_RIGOR = 6
CAP_PROVISIONAL = 6
CAP_COLLAPSED = 4
CAP_OVERFIT = 6
CAP_IMPLAUSIBLE = 4
SMOKE_BAND = "smoke test, not rated"

BANDS = (("publishable", 7, 10), ("good progress", 5, 6), ("needs work", 1, 4))
COMPONENT_MAX = {"evidence": 3, "impact": 3, "rigor": 4}

# Later seeds for an experiment that needs more: a fixed list so reruns draw the same ones.
SEED_SEQUENCE = (42, 137, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
_UNITS = {"val_loss": "nats", "best_val_loss": "nats", "val_bpc": "bits/char",
          "peak_mem_mb": "MB", "train_seconds": "s"}

@dataclass(frozen=True)
class Gain:
    """One cost ratio baseline/arm (> 1 means the arm is cheaper)."""

    what: str  # "time-to-target train_seconds", "size", "peak_mem_mb saving", ...
    ratio: float
    ci_low: float | None = None
    ci_high: float | None = None
    kind: str = "exact"  # "ci" | "exact" | "measured" | "decided" | "uncredited"
    reached: str = ""  # "3/3 pairs reached" for time-to-target

    @property
    def credited(self) -> bool:
        """Whether the ratio is trustworthy enough to count (see the module docstring)."""
        if not math.isfinite(self.ratio) or self.ratio < MIN_GAIN:
            return False
        if self.kind == "ci":
            return self.ci_low is not None and math.isfinite(self.ci_low) and self.ci_low > 1.0
        if self.kind == "measured":
            return self.ratio >= MEASURED_GAIN
        return self.kind in ("exact", "decided")

    def label(self) -> str:
        ci = (f" [95% CI {self.ci_low:.2f}-{self.ci_high:.2f}]"
              if self.ci_low is not None and self.ci_high is not None
              and math.isfinite(self.ci_low) and math.isfinite(self.ci_high) else "")
        reached = f" ({self.reached})" if self.reached else ""
        return f"{self.what} {self.ratio:.2f}x{ci}{reached}"


@dataclass
class ArmScore:
    """The rubric applied to one arm (rigor is shared by the experiment)."""

    arm: str
    verdict: str  # the primary metric's label: better | worse | equivalent | undecided
    evidence: dict[str, bool]  # the scoring checks (calibrated tests only)
    gains: list[Gain]  # every ratio known (reported)
    best_gain: Gain | None  # the credited one (the spec's ``credit``), whether or not it counts
    quality_ok: bool  # quality kept: better or equivalent (TOST) on the quality metric
    quality_label: str  # the quality metric's label
    quality_drop: float  # worsening of the quality metric's mean (negative: it improved)
    improved: bool
    points: dict[str, int]
    effect: float = math.nan  # d_z toward better on the primary metric (ties between arms)
    pathologies: dict[str, int] = field(default_factory=dict)
    # Reported beside the evidence, scoring nothing: the seeds' rule and d_z.
    reported: dict[str, Any] = field(default_factory=dict)

    @property
    def credited_ratio(self) -> float:
        g = self.best_gain
        return g.ratio if g is not None and g.credited and self.quality_ok else 0.0


@dataclass
class Verdict:
    """A rating 1-10 (0: a smoke test, not rated), its band, points and critique lines."""

    experiment: str
    rating: int
    band: str
    breakdown: dict[str, dict[str, Any]]  # component -> {"points", "max", "checks"}
    critique: list[str]
    best_arm: str | None = None
    rubric_version: str = ""
    caps: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.rubric_version:
            self.rubric_version = RUBRIC_VERSION

    @property
    def rated(self) -> bool:
        return self.rating >= 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- helpers


def band_of(rating: int) -> str:
    if rating == 0:
        return SMOKE_BAND
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


def _gains(row: ArmRow, base: ArmRow, a: Analysis) -> tuple[list[Gain], Gain | None]:
    """Every cost ratio known for the arm (reported) and the one the spec credits.

    A primary metric that is not a quality metric (``peak_mem_mb``) is itself the saving: its
    ratio baseline/arm is the credited one and counts when the paired test calls it "better".
    """
    out: list[Gain] = []
    eff = row.efficiency
    if eff is not None:
        partial = eff.reached < eff.n
        for key in CREDIT_COSTS.values():
            r = eff.ratio.get(key)
            if r is not None and math.isfinite(r[0]):
                out.append(Gain(f"time-to-target {key}", float(r[0]), float(r[1]), float(r[2]),
                                "uncredited" if partial else "ci",
                                f"{eff.reached}/{eff.n} pairs reached"))
        for attr, kind in (("size_ratio", "exact"), ("memory_ratio", "measured"),
                           ("latency_ratio", "measured")):
            v = getattr(eff, attr, None)
            if v is not None and math.isfinite(v):
                out.append(Gain(attr.removesuffix("_ratio"), float(v), kind=kind))
    if not any(g.what == "size" for g in out):
        b, x = base.means.get("model_bytes"), row.means.get("model_bytes")
        if b and x and b > 0 and x > 0:
            out.append(Gain("size", b / x, kind="exact"))
    b, x = base.means.get("flops"), row.means.get("flops")
    if b and x and b > 0 and x > 0:
        out.append(Gain("flops per budget", b / x, kind="exact"))
    if not a.quality_is_primary:
        b, x = base.means.get(a.metric), row.means.get(a.metric)
        if b and x and b > 0 and x > 0:
            ratio = b / x if a.direction == "minimize" else x / b
            kind = "decided" if row.verdict == "better" else "uncredited"
            saving = Gain(f"{a.metric} saving", ratio, kind=kind)
            return [saving, *out], saving
        return out, None
    want = {"time": "time-to-target train_seconds", "flops": "time-to-target flops",
            "energy": "time-to-target energy_kwh_est", "size": "size",
            "memory": "memory"}.get(a.credit, "time-to-target train_seconds")
    credited = next((g for g in out if g.what == want), None)
    return out, credited


def score_arm(row: ArmRow, base: ArmRow, a: Analysis, identical: bool = False) -> ArmScore:
    """Evidence and impact points of one arm against the baseline.

    ``identical``: the arm's runs have the baseline's configs (an A/A check), so any gain is
    noise by construction and none is credited.
    """
    d, q = row.decision, row.quality
    evidence = {"significant": False, "strong": False, "beyond_margin": False}
    reported: dict[str, Any] = {"seeds_rule": False, "d_z": None}
    effect = math.nan
    if d is not None:
        effect = d.dz
        reported = {"seeds_rule": bool(d.seeds_rule),
                    "d_z": float(d.dz) if math.isfinite(d.dz) else None}
        if d.label == "better":
            # Each point is a test with a known error rate, at the alpha the label was decided
            # at (a sequential look spends less than 0.05); nan p-values never score.
            evidence["significant"] = True
            evidence["strong"] = bool(d.p_holm < d.alpha / STRONG_FACTOR)
            evidence["beyond_margin"] = bool(d.p_beyond_holm < d.alpha)
    quality_ok = bool(q is not None and q.quality_kept)
    sign = 1.0 if a.quality_direction == "minimize" else -1.0
    drop = sign * q.mean_diff if q is not None else math.nan
    gains, credited = _gains(row, base, a)
    if identical:
        credited = None if credited is None else Gain(credited.what, credited.ratio,
                                                      credited.ci_low, credited.ci_high,
                                                      "uncredited", credited.reached)
    eff_points = 0
    if quality_ok and credited is not None and credited.credited:
        eff_points = 2 if credited.ratio >= GOAL_RATIO else 1
    points = {"evidence": sum(evidence.values()), "impact": eff_points + int(quality_ok)}
    better = a.quality_is_primary and row.verdict == "better"
    improved = not identical and (better or eff_points > 0)
    return ArmScore(row.arm, row.verdict, evidence, gains, credited, quality_ok,
                    q.label if q is not None else "undecided", drop, improved, points, effect,
                    dict(row.pathologies), reported)


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


def _ci(lo: float, hi: float, unit: str) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    return f", 95% CI [{lo:+.3g}, {hi:+.3g}]{unit}"


def _decision_notes(s: ArmScore, row: ArmRow, a: Analysis) -> list[str]:
    """What happened to the arm on the primary metric, and what to do next."""
    d = row.decision
    if d is None or d.n < 2:
        n = 0 if d is None else d.n
        return [f"{row.arm}: {n} finished seed pair(s) with the baseline: run at least "
                f"{MIN_SEEDS} seeds per arm to decide anything"]
    unit = _unit(a.metric)
    delta = f"Δ = {d.mean_diff:+.3g}{unit}{_ci(d.ci_low, d.ci_high, unit)}"
    p = f"p Holm = {_fmt(d.p_holm)}"
    if d.look:
        p += f" at the look of {d.look} seeds, alpha {d.alpha:.2g} (sequential)"
    rule = "meets" if d.seeds_rule else "does not meet"
    beside = (f"reported beside, scoring nothing: d_z = {_fmt(d.dz)}, the seeds' rule (Δ > 2σ "
              f"of the baseline, d ≥ 0.5) {rule} it")
    m = a.margin.describe(unit)
    notes: list[str] = []
    if d.label == "better":
        how = []
        if s.evidence["strong"]:
            how.append(f"strong (p Holm < {d.alpha / STRONG_FACTOR:.2g})")
        if math.isfinite(a.margin.beyond):
            how.append(f"the gain is {'' if s.evidence['beyond_margin'] else 'not '}shown "
                       f"beyond the margin ±{_fmt(a.margin.beyond)}{unit}")
        else:
            how.append("no margin to show the gain beyond (declare one or calibrate)")
        notes.append(f"{row.arm}: better on {a.metric}: {delta} ({p}); {', '.join(how)}; "
                     f"{beside}; confirm on fresh seeds before building on it")
    elif d.label == "worse":
        notes.append(f"{row.arm}: worse on {a.metric}: {delta} ({p}); the change hurts at this "
                     "budget: drop the arm or change what it changes (more seeds will not "
                     "turn it around)")
    elif d.label == "equivalent" and d.shown == "worse":
        notes.append(f"{row.arm}: equivalent (negligible) on {a.metric} within {m}, but the "
                     f"paired test finds a loss: {delta} ({p}; TOST p Holm = "
                     f"{_fmt(d.p_tost_holm)}); a real loss is never quality kept, so no cost "
                     "ratio is credited")
    elif d.label == "equivalent":
        gain = (f"; a real but negligible gain ({p}): smaller than the margin, so not better"
                if d.shown == "better" else "")
        notes.append(f"{row.arm}: equivalent to the baseline on {a.metric} within the margin "
                     f"{m}: {delta} (TOST p Holm = {_fmt(d.p_tost_holm)}){gain}")
    else:
        what = d.note or (f"neither a difference (p Holm = {_fmt(d.p_holm)}) nor equivalence "
                          f"within {m} (TOST p Holm = {_fmt(d.p_tost_holm)}) is shown")
        if d.look:
            what += f" by the look of {d.look} seeds (sequential)"
        line = f"{row.arm}: undecided on {a.metric}: {delta}; {what}"
        if math.isfinite(row.mde):
            line += (f"; the smallest effect {d.n} seeds detect is {_fmt(row.mde)}{unit} "
                     f"(from the sd of {row.mde_source})")
        need = row.seeds_needed
        effect = f"{_fmt(row.seeds_effect)}{unit}"
        if need is not None and need < 1000:
            line += (f"; about {need} seeds find an effect the size of the margin ({effect}, "
                     "the smallest that matters) with 80% power: run "
                     f"`airlab decide {a.name}`")
        elif need is not None:
            line += (f"; over 1000 seeds would be needed to find an effect the size of the "
                     f"margin ({effect}) at this noise: declare the smallest effect that "
                     "matters as `margin:`, or reduce the noise")
        notes.append(line)
    return notes


def _quality_notes(s: ArmScore, row: ArmRow, a: Analysis) -> list[str]:
    """Quality kept or not, when quality is judged on another metric than the primary one."""
    q = row.quality
    if a.quality_is_primary or q is None:
        return []
    unit = _unit(a.quality_metric)
    delta = f"Δ {a.quality_metric} = {q.mean_diff:+.3g}{unit}"
    if s.quality_ok:
        how = "better" if q.label == "better" else \
            f"equivalent within {a.quality_margin.describe(unit)}"
        return [f"{row.arm}: quality kept on {a.quality_metric} ({how}; {delta})"]
    if q.label == "worse" or q.shown == "worse":
        return [f"{row.arm}: quality is worse on {a.quality_metric} ({delta}, p Holm = "
                f"{_fmt(q.p_holm)}): the saving costs quality"]
    return [f"{row.arm}: quality not shown kept on {a.quality_metric} ({delta}; equivalence "
            f"within {a.quality_margin.describe(unit)} not shown): add seeds or declare a "
            "margin"]


def _impact_notes(s: ArmScore, row: ArmRow, a: Analysis) -> list[str]:
    notes: list[str] = []
    d = row.decision
    shown_worse = d is not None and d.shown == "worse"
    if a.quality_is_primary and not s.quality_ok and s.verdict != "worse" and not shown_worse:
        notes.append(f"{row.arm}: quality not shown kept: 'quality kept' needs better or "
                     f"equivalent within {a.margin.describe(_unit(a.metric))}")
    g = s.best_gain
    others = [x.label() for x in s.gains if x is not g]
    if g is None:
        notes.append(f"{row.arm}: no {a.credit} ratio measured (the credited cost, spec "
                     f"`credit: {a.credit}`): the lab's goal is a {GOAL_RATIO:g}x cheaper run "
                     "at the same quality")
    elif not g.credited:
        why = ("not all seed pairs reached the target" if g.kind == "uncredited" and g.reached
               else "the saving is not significant" if g.kind == "uncredited"
               else "its 95% CI reaches 1 (or fewer than 3 pairs reached: no interval)"
               if g.kind == "ci" and g.ratio >= MIN_GAIN
               else f"a measured ratio without CI must reach {MEASURED_GAIN:g}x"
               if g.kind == "measured" and g.ratio >= MIN_GAIN
               else f"below the {MIN_GAIN:g}x that counts as a gain")
        notes.append(f"{row.arm}: credited ratio {g.label()} does not count: {why}")
    elif s.quality_ok and g.ratio < GOAL_RATIO:
        notes.append(f"{row.arm}: credited ratio {g.label()} is a gain, short of the "
                     f"{GOAL_RATIO:g}x goal")
    elif not s.quality_ok:
        notes.append(f"{row.arm}: credited ratio {g.label()} does not count while quality is "
                     "not shown kept")
    if others:
        notes.append(f"{row.arm}: reported, not credited: {'; '.join(others[:5])}")
    return notes


def _pathology_notes(a: Analysis) -> list[str]:
    notes: list[str] = []
    for r in a.rows:
        if r.pathologies.get("collapsed"):
            notes.append(f"{r.arm}: {r.pathologies['collapsed']} run(s) collapsed (the "
                         "generated sample lost the data's diversity while the loss looked "
                         "fine): inspect the samples; lower the learning rate or fix the "
                         "change before trusting the loss")
        if r.pathologies.get("overfit"):
            notes.append(f"{r.arm}: {r.pathologies['overfit']} run(s) overfit (validation "
                         "loss rose while training loss fell): use more data or a smaller "
                         "budget, or add regularization")
        if r.implausible_runs:
            notes.append(f"{r.arm}: {r.implausible_runs} run(s) flagged implausible by the "
                         f"trusted measuring side ({'; '.join(r.implausible[:3])}): its "
                         "results are not believed (never better, kept or credited); find "
                         "the cause and rerun")
    return notes


# --------------------------------------------------------------------------- rating


def _smoke(a: Analysis, rigor_checks: dict[str, bool]) -> Verdict:
    breakdown = {k: {"points": 0, "max": m, "checks": {}} for k, m in COMPONENT_MAX.items()}
    breakdown["rigor"]["checks"] = rigor_checks
    return Verdict(a.name, 0, SMOKE_BAND, breakdown,
                   ["smoke test (--quick): it checks that the experiment runs, not whether the "
                    "idea works; run it without --quick for a rating"], None, RUBRIC_VERSION,
                   ["smoke test, not rated"])


def rate(a: Analysis, facts: RunFacts | None = None) -> Verdict:
    """Apply the rubric to an analysis; ``facts`` (from :func:`run_facts`) enables the
    hardware check. Deterministic: the same analysis and facts always give the same verdict."""
    rigor_checks, rigor_notes = _rigor(a, facts)
    if a.quick:
        return _smoke(a, rigor_checks)
    rigor_points = sum(rigor_checks.values())
    base = a.baseline
    same = facts.identical_arms if facts else frozenset()
    scores = [(score_arm(r, base, a, r.arm in same), r) for r in a.rows[1:]]
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

    # The best arm: improved first, then the largest credited ratio with quality kept, then
    # points, then the larger effect toward better; the earlier arm on a full tie.
    def key(item: tuple[ArmScore, ArmRow]) -> tuple[int, float, int, float]:
        s = item[0]
        eff = s.effect if math.isfinite(s.effect) else -math.inf
        return (int(s.improved), s.credited_ratio, s.points["evidence"] + s.points["impact"],
                eff)

    best, best_row = max(scores, key=key)
    total = best.points["evidence"] + best.points["impact"] + rigor_points
    rating = max(1, min(10, total))

    def cap(limit: int, why: str) -> None:
        nonlocal rating
        if rating > limit:
            caps.append(f"capped at {limit}: {why}")
            rating = limit

    if not best.improved:
        cap(CAP_NO_IMPROVEMENT, f"no arm improved on the baseline (best arm '{best.arm}': "
                                f"{best.verdict}, no credited cost ratio with quality kept)")
    if not all(rigor_checks.values()):
        cap(CAP_RIGOR, "a publishable rating needs every rigor check")
    if best.quality_ok and best.quality_label != "better":  # kept by equivalence
        m = a.margin if a.quality_is_primary else a.quality_margin
        if m.provisional:
            cap(CAP_PROVISIONAL, "quality kept rests on a provisional margin (2 sd of this "
                                 "experiment's baseline): run `airlab calibrate` or declare "
                                 "`margin:` in the spec")
    sick = [base, best_row]
    if any(r.pathologies.get("collapsed") for r in sick):
        cap(CAP_COLLAPSED, "a run collapsed (degenerate generated text)")
    if any(r.pathologies.get("overfit") for r in sick):
        cap(CAP_OVERFIT, "a run overfit (validation loss rose while training loss fell)")
    if any(r.implausible_runs for r in sick):
        cap(CAP_IMPLAUSIBLE, "a run was flagged implausible by the trusted measuring side")
    if not best.improved:
        critique.append("no arm shows an improvement: this counts as a negative (or A/A) "
                        "result, not progress")
    else:
        critique.append(f"best arm: {best.arm} (the largest credited ratio with quality kept)")
    for s, _ in scores:
        if s.arm in same:
            critique.append(f"{s.arm}: runs the baseline's exact configuration (an A/A "
                            "check): its differences are noise by construction")
    for s, row in sorted(scores, key=lambda x: x[0] is not best):
        critique += _decision_notes(s, row, a)
        critique += _quality_notes(s, row, a)
        if s is best:
            critique += _impact_notes(s, row, a)
    critique += _pathology_notes(a)
    if a.sequential is not None:
        looks = a.sequential.get("looks", [])
        critique.append(f"labels are the sequential decision of `airlab decide` ({len(looks)} "
                        f"look(s) at {', '.join(str(x['n']) for x in looks) or 'none'} seeds, "
                        f"alpha {a.sequential.get('alpha', ALPHA):g} over all looks and arms); "
                        "the p-values shown are those of the deciding look")
    critique += rigor_notes
    critique += caps
    gain = best.best_gain
    breakdown = {
        "evidence": {"points": best.points["evidence"], "max": 3, "checks": best.evidence,
                     "reported": best.reported},
        "impact": {"points": best.points["impact"], "max": 3,
                   "checks": {"efficiency": gain.label() if gain else None,
                              "efficiency_credited": bool(gain and gain.credited),
                              "credit": a.credit,
                              "quality_kept": best.quality_ok,
                              "quality_label": best.quality_label},
                   # Stored with the verdict: what the decisions rested on.
                   "decisions": {r.arm: r.verdict for r in a.rows[1:]},
                   "margin": {"value": a.margin.value if math.isfinite(a.margin.value)
                              else None, "source": a.margin.source},
                   "noise_floor": {m: f.to_dict() for m, f in a.floors.items()}},
        "rigor": {"points": rigor_points, "max": 4, "checks": rigor_checks},
    }
    return Verdict(a.name, rating, band_of(rating), breakdown, critique, best.arm,
                   RUBRIC_VERSION, caps)


def rubric_version() -> str:
    """A hash of the rubric's constants and the source of its rating functions."""
    parts = [repr((ALPHA, GOAL_RATIO, MIN_GAIN, MEASURED_GAIN, MIN_SEEDS, STRONG_FACTOR,
                   CAP_NO_IMPROVEMENT, CAP_RIGOR, CAP_PROVISIONAL, CAP_COLLAPSED, CAP_OVERFIT,
                   CAP_IMPLAUSIBLE, BANDS, COMPONENT_MAX))]
    for fn in (Gain, _gains, score_arm, _rigor, rate):
        try:
            parts.append(inspect.getsource(fn))
        except (OSError, TypeError):  # no source (a frozen build): the constants still count
            parts.append(fn.__qualname__)
    return "r" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


RUBRIC_VERSION = rubric_version()
