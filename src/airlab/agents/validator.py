"""The Validator: the rubric's verdict on a sprint's experiment, each arm's result in the
terms the loop decides on, and the idea's prediction scored against what was measured.

An arm *wins* (the autonomous loop stacks winners) by :func:`arm_wins`: the rubric counts it
as an improvement (``validate.score_arm``) and its time-to-target ratio is above 1, or its
time-to-target interval lies above 1 while its final quality is not shown worse (with a
declared target: the interval lies above 1 and every pair reached the target).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airlab.store.records import ArmResult, ValidationRecord

if TYPE_CHECKING:
    from airlab.agents.knowledge import Idea
    from airlab.analysis.compare import Analysis
    from airlab.store import Store
    from airlab.validate import Verdict


def _num(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def arm_wins(improved: bool, ratio: float | None, ci_low: float | None, quality: str,
             declared: bool = False, reached: int = 0, n: int = 0) -> bool:
    """The loop's rule for a winner: the rubric counts the arm as an improvement and it gets
    to the baseline's quality sooner (ratio above 1); or its time-to-target interval lies
    above 1 (3 or more reached seed pairs) while its final quality is not shown worse. The
    second case is an arm that reaches the baseline's final quality sooner though its own
    final value is not shown better or equivalent (e.g. smaller batches: more updates).

    ``declared``: the experiment declares its target (the loop on a recipe, whose objective is
    the default configuration's quality): the quality asked for is that target, so the arm wins
    when every seed pair reached it and the interval lies above 1, whatever its own final
    value against the baseline's (a shorter schedule ends worse than the recipe but gets to
    the target sooner)."""
    if declared:
        return ci_low is not None and ci_low > 1.0 and n > 0 and reached == n
    if improved and ratio is not None and ratio > 1.0:
        return True
    return ci_low is not None and ci_low > 1.0 and quality != "worse"


def arm_results(a: Analysis) -> dict[str, ArmResult]:
    """Every arm's result against the baseline, from one analysis."""
    from airlab.validate import score_arm

    base = a.rows[0]
    out: dict[str, ArmResult] = {}
    for row in a.rows[1:]:
        s = score_arm(row, base, a)
        eff = row.efficiency
        g = lo = hi = None
        reached = n = 0
        if eff is not None:
            g, lo, hi = (_num(x) for x in eff.ratio.get("train_seconds", (None,) * 3))
            reached, n = eff.reached, eff.n
        quality = row.quality.label if row.quality is not None else "undecided"
        wins = arm_wins(bool(s.improved), g, lo, quality, a.spec.get("target") is not None,
                        reached, n)
        out[row.arm] = ArmResult(row.arm, row.verdict or "undecided", quality, bool(s.improved),
                                 g, lo, hi, reached, n, _num(row.summary.mean), wins)
    return out


def versus_result(store: Store, a: Analysis, arm: str, reference: str) -> ArmResult:
    """``arm`` against ``reference`` of the same experiment, paired by seed: the time to the
    baseline's quality (its mean final value on these seeds, a declared target), reference
    cost / arm cost; it wins by the declared-target rule of :func:`arm_wins` (every pair
    reached it, the interval above 1)."""
    from airlab.analysis.compare import versus

    eff = versus(store, a, arm, reference)
    g, lo, hi = (_num(x) for x in eff.ratio.get("train_seconds", (None,) * 3))
    wins = arm_wins(False, g, lo, "undecided", True, eff.reached, eff.n)
    return ArmResult(f"{arm}/{reference}", "paired", "n/a", False, g, lo, hi, eff.reached,
                     eff.n, None, wins)


class Validator:
    def __init__(self, store: Store) -> None:
        self.store = store

    def validate(self, name: str, analysis: Analysis | None = None,
                 verdict: Verdict | None = None, ideas: Mapping[str, Idea] | None = None,
                 versus: Sequence[tuple[str, str]] = ()) -> ValidationRecord:
        """Rate, read each arm's result, and score the idea's prediction when the experiment
        tests an idea (``ideas``: where to find it; default the knowledge base). ``analysis``
        and ``verdict``: what the pipeline already computed (passed on, not recomputed).
        ``versus``: (arm, reference) pairs compared head to head (:func:`versus_result`)."""
        from airlab.agents.status import score_experiment
        from airlab.analysis.compare import analyze
        from airlab.experiment import rate_experiment

        a = analysis if analysis is not None else analyze(self.store, name)
        v = verdict if verdict is not None else rate_experiment(self.store, name, analysis=a)
        notes: list[str] = []
        try:
            scored = score_experiment(self.store, name, a, ideas=ideas)
        except Exception as e:  # noqa: BLE001 - a scoring problem must not lose the verdict
            scored = None
            notes.append(f"prediction not scored: {type(e).__name__}: {e}")
        rec = ValidationRecord(name, v.rating, v.band, list(v.critique), arm_results(a),
                               scored, notes)
        names = {r.arm for r in a.rows}
        for arm, ref in versus:
            if arm in names and ref in names:
                rec.versus[f"{arm}/{ref}"] = versus_result(self.store, a, arm, ref)
        return rec
