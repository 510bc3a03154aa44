"""Sequential decisions: add seeds to an experiment until every arm is decided ("run until
decisive"), with the type-I error held over all looks and arms, across calls.

A pipeline step above :mod:`airlab.experiment`: each look executes the missing runs through
:func:`airlab.experiment.execute_runs`, analyses once and decides the undecided arms with
:func:`airlab.analysis.decisions.sequential_look`: alpha is spent as ``alpha (n / n_max)^2``
by the look at n pairs, Holm across the undecided arms inside a look, for better/worse and
for equivalence (the margin of :func:`airlab.analysis.compare.analyze`). The state (looks
done, alpha spent per arm, decisions) is kept in the store, so running ``decide`` again
continues the spending instead of restarting it. The analysis handed on (and any later
:func:`~airlab.analysis.compare.analyze` of the experiment) carries the sequential labels, so
the verdict the rubric (:mod:`airlab.validate`) stores is the sequential decision, never a
fixed-n test at the data-dependent stopping point (that one gave A/A false better/worse of
~7 % instead of <= 5 %).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airlab.analysis import decisions
from airlab.analysis.compare import Analysis, analyze, apply_decisions
from airlab.errors import AirlabError
from airlab.experiment import Reporter, execute_runs
from airlab.store import load_sequential_state, save_sequential_state
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
    decisions: dict[str, str]  # arm -> better | worse | equivalent | undecided

    @property
    def decided(self) -> bool:
        return bool(self.decisions) and all(d != "undecided" for d in self.decisions.values())


@dataclass
class Decision:
    experiment: str
    alpha: float
    alpha_per_look: float  # the alpha the first look of this call could spend
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


def planned_spending(store: Store, name: str, start: int, max_seeds: int, step: int,
                     alpha: float) -> tuple[list[int], list[float], float]:
    """The looks (seeds per arm), the alpha each will spend and the overall alpha, as
    :func:`run_until_decisive` will run them: a stored state keeps its n_max and alpha and
    what its looks spent. What `airlab decide` prints before it starts is what is spent."""
    state = load_sequential_state(store, name)
    if state is None:
        state = decisions.new_sequential_state([], max_seeds, alpha)
    schedule = look_schedule(start, int(state["n_max"]), step)
    return schedule, decisions.planned_alphas(state, schedule), float(state["alpha"])


def run_until_decisive(
    spec: ExperimentSpec, store: Store, executor: Executor, *, settings: Settings | None = None,
    max_seeds: int = 10, step: int = 2, alpha: float = ALPHA, reporter: Reporter | None = None,
    retry_failed: bool = False,
    on_result: Callable[[dict[str, Any], RunResult], None] | None = None,
    on_look: Callable[[Look], None] | None = None,
) -> Decision:
    """Add seeds until every arm is decided or ``max_seeds`` per arm is reached.

    Looks happen at the seed counts of :func:`look_schedule`. Each look spends the alpha the
    spending function allows since the previous look (``decisions.look_alpha``), on the arms
    still undecided, Holm across them; decided arms keep their label. Over all looks and arms,
    the chance of any false "better"/"worse"/"equivalent" stays at most ``alpha``, and the
    state lives in the store: a second call continues from the looks already done (a look with
    no new pairs spends nothing), with the stored ``n_max`` and ``alpha``. New seeds continue
    SEED_SEQUENCE; finished runs are reused. The experiment is not rated here: give
    ``Decision.analysis`` to :func:`airlab.experiment.finish_experiment`.
    """
    if not spec.arms:
        raise AirlabError(f"experiment '{spec.name}' has no arm to decide on",
                          "add at least one arm besides the baseline")
    state = load_sequential_state(store, spec.name)
    arm_names = [arm.name for arm in spec.arms]
    if state is None:
        state = decisions.new_sequential_state(arm_names, max_seeds, alpha)
    else:  # continue: the stored plan (n_max, alpha) holds, whatever this call asks
        max_seeds, alpha = int(state["n_max"]), float(state["alpha"])
    schedule = look_schedule(len(spec.seeds), max_seeds, step)
    done_n = state["looks"][-1]["n"] if state["looks"] else 0
    seeds = list(spec.seeds) + next_seeds(spec.seeds, max(0, schedule[-1] - len(spec.seeds)))
    looks: list[Look] = []
    a: Analysis | None = None
    first_alpha = decisions.look_alpha(state, schedule[0]) if schedule else 0.0
    for n in schedule:
        if n < done_n and n != schedule[-1]:
            continue  # an earlier call looked past this point already
        current = spec.model_copy(update={"seeds": seeds[:n]})
        counts = execute_runs(current, store, executor, settings=settings, reporter=reporter,
                              retry_failed=retry_failed, on_result=on_result)
        a = analyze(store, spec.name, runs=counts.rows)
        step_alpha = decisions.look_alpha(state, n)
        labels, state = decisions.sequential_look(
            state, a.baseline.values, {r.arm: r.values for r in a.rows[1:]}, a.direction,
            a.margin.value, margin_upper=a.margin.beyond)
        save_sequential_state(store, spec.name, state)
        a.sequential = state  # the verdict is this decision, not a fixed-n test at this n
        apply_decisions(a)
        spent = step_alpha if state["looks"] and state["looks"][-1]["n"] == n else 0.0
        look = Look(n, spent, {arm: labels.get(arm, "undecided") for arm in arm_names})
        looks.append(look)
        if on_look:
            on_look(look)
        if look.decided:
            break
    return Decision(spec.name, alpha, first_alpha, schedule, looks, seeds[:looks[-1].n], a)
