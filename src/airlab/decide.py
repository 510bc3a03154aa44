"""Sequential decisions: add seeds to an experiment until every arm is decided ("run until
decisive"), with the type-I error held over all looks and arms.

A pipeline step above :mod:`airlab.experiment`: each look executes the missing runs through
:func:`airlab.experiment.execute_runs`, analyses once and decides per arm. The rubric itself
(:mod:`airlab.validate`) is not involved until the caller finishes the experiment.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as st

from airlab.analysis import stats
from airlab.analysis.compare import Analysis, ArmRow, analyze
from airlab.errors import AirlabError
from airlab.experiment import Reporter, execute_runs
from airlab.validate import ALPHA, next_seeds

if TYPE_CHECKING:
    from airlab.executors.base import Executor
    from airlab.run.result import RunResult
    from airlab.settings import Settings
    from airlab.spec import ExperimentSpec
    from airlab.store import Store


@dataclass
class Look:
    """One interim analysis of the sequential procedure."""

    n: int  # seeds per arm at this look
    alpha: float  # the alpha spent at this look
    decisions: dict[str, str]  # arm -> better | worse | equivalent | within noise | undecided

    @property
    def decided(self) -> bool:
        return bool(self.decisions) and all(d != "undecided" for d in self.decisions.values())


@dataclass
class Decision:
    experiment: str
    alpha: float
    alpha_per_look: float
    schedule: list[int]  # planned seeds per arm at each look
    looks: list[Look]
    seeds: list[int]  # the seeds the experiment ended with
    analysis: Analysis | None = None  # the last look's: pass it on instead of analysing again

    @property
    def decided(self) -> bool:
        return bool(self.looks) and self.looks[-1].decided


def look_schedule(start: int, max_seeds: int, step: int) -> list[int]:
    """Seeds per arm at each planned look: start, start+step, ..., max_seeds (always last)."""
    if step < 1:
        raise AirlabError(f"--step must be at least 1, got {step}")
    if max_seeds <= start:
        return [start]
    out = list(range(start, max_seeds, step))
    return out + [max_seeds]


def arm_decision(row: ArmRow, base: ArmRow, direction: str, alpha: float,
                 tolerance: float = 0.0) -> str:
    """Whether one arm is decided at this look's alpha (Holm across arms already applied)."""
    c = row.comparison
    if c is None or row.p_holm is None or math.isnan(row.p_holm):
        return "undecided"
    v = stats.verdict(c, alpha=alpha, adjusted_p=row.p_holm)
    if v in ("better", "worse"):
        return v
    if row.p_holm < alpha:
        return "within noise"  # significant, yet too small for the seeds rule
    if tolerance > 0:
        # Equivalence by two one-sided tests: the (1 - 2 alpha) interval of the paired
        # difference inside +-tolerance decides "no difference" at the same alpha.
        b = np.asarray(base.values, dtype=float)
        x = np.asarray(row.values, dtype=float)
        if b.size == x.size:
            d = (x - b)[~(np.isnan(x) | np.isnan(b))]
            if d.size >= 2:
                se = float(np.std(d, ddof=1)) / math.sqrt(d.size)
                half = float(st.t.ppf(1 - alpha, d.size - 1)) * se
                m = float(np.mean(d))
                if -tolerance < m - half and m + half < tolerance:
                    return "equivalent"
    return "undecided"


def run_until_decisive(
    spec: ExperimentSpec, store: Store, executor: Executor, *, settings: Settings | None = None,
    max_seeds: int = 10, step: int = 2, alpha: float = ALPHA, reporter: Reporter | None = None,
    retry_failed: bool = False,
    on_result: Callable[[dict[str, Any], RunResult], None] | None = None,
    on_look: Callable[[Look], None] | None = None,
) -> Decision:
    """Add seeds until every arm is decided or ``max_seeds`` per arm is reached.

    Looks happen at the seed counts of :func:`look_schedule`. The overall alpha is split
    evenly over the K planned looks (Bonferroni, alpha/K each; Holm across arms inside a look),
    so the chance of any false "better"/"worse"/"equivalent" over all arms and all looks stays
    at most ``alpha`` whatever the correlation between looks. New seeds continue SEED_SEQUENCE;
    finished runs are reused, so stopping and calling again resumes. The experiment is not
    rated here: give ``Decision.analysis`` to :func:`airlab.experiment.finish_experiment`.
    """
    if not spec.arms:
        raise AirlabError(f"experiment '{spec.name}' has no arm to decide on",
                          "add at least one arm besides the baseline")
    schedule = look_schedule(len(spec.seeds), max_seeds, step)
    per_look = alpha / len(schedule)
    seeds = list(spec.seeds) + next_seeds(spec.seeds, max(0, schedule[-1] - len(spec.seeds)))
    looks: list[Look] = []
    a: Analysis | None = None
    for n in schedule:
        current = spec.model_copy(update={"seeds": seeds[:n]})
        counts = execute_runs(current, store, executor, settings=settings, reporter=reporter,
                              retry_failed=retry_failed, on_result=on_result)
        a = analyze(store, spec.name, runs=counts.rows)
        look = Look(n, per_look, {r.arm: arm_decision(r, a.baseline, a.direction, per_look,
                                                      spec.tolerance)
                                  for r in a.rows[1:]})
        looks.append(look)
        if on_look:
            on_look(look)
        if look.decided:
            break
    return Decision(spec.name, alpha, per_look, schedule, looks, seeds[:looks[-1].n], a)
