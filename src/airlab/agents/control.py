"""The control: a Researcher that searches at random, to tell whether the team researches
better than chance at equal compute (``airlab auto --researcher random``).

It is a Researcher strategy (``agents.roles.ResearcherRole``), nothing else: the loop, the
kinds, the Architect's budgets and seeds, the stack, the confirmation on fresh seeds and the
transfer sprints are the team's own. Only the choice differs: the same ideas the offline
Researcher may choose (its ``scope``: open ideas first, not excluded, applying to the task), one
drawn uniformly, with each option of the idea's declared search ranges drawn uniformly
(log-uniformly on a log range; one of the choices); an idea without ranges runs as written.
No bandit, no Optuna history, no transfer discount: flat random search.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from airlab.errors import AirlabError, did_you_mean
from airlab.store.records import ProposalRecord

if TYPE_CHECKING:
    from airlab.agents.ideas import SearchDim
    from airlab.agents.roles import IsBase, Lab, ResearcherRole, SprintContext
    from airlab.store.records import ValidationRecord

REDRAWS = 20  # options drawn again when they make the idea the base itself (ratio 1 by
# definition: the team's tuner tells such a trial to its study and asks again too)


def draw(dim: SearchDim, rng: Any) -> Any:
    """One value of a declared search range, uniformly (log-uniformly on a log range)."""
    if dim.choices is not None:
        return dim.choices[int(rng.integers(len(dim.choices)))]
    lo, hi = float(dim.low), float(dim.high)  # type: ignore[arg-type]
    if dim.is_int:
        if dim.log:
            return int(min(hi, math.floor(math.exp(rng.uniform(math.log(lo),
                                                               math.log(hi + 1))))))
        return int(rng.integers(int(lo), int(hi) + 1))
    x = math.exp(rng.uniform(math.log(lo), math.log(hi))) if dim.log else rng.uniform(lo, hi)
    return float(f"{x:.4g}")


class RandomResearcher:
    """Flat random search over the offline Researcher's scope (see the module docstring)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def propose(self, ctx: SprintContext, is_base: IsBase) -> ProposalRecord:
        import numpy as np

        from airlab.agents.researcher import scope
        from airlab.agents.status import idea_statuses

        lab, q = self.lab, ctx.record.request
        statuses = idea_statuses(lab.store, lab.ideas)
        pool, _, notes = scope(lab.ideas, statuses, area=q.area, idea=q.idea,
                               exclude=(*q.exclude, *ctx.skipped))
        rng = np.random.default_rng([lab.seed, ctx.number, 7919])
        name = pool[int(rng.integers(len(pool)))]
        idea = lab.idea(name)
        space = sorted(idea.implementation.search.items())
        options: dict[str, Any] = {}
        for _ in range(REDRAWS if space else 1):
            options = {k: draw(dim, rng) for k, dim in space}
            if not space or not is_base(name, options):
                break
        tuned = f" with {options}" if options else ""
        why = (f"drew {name}{tuned} uniformly from the {len(pool)} ideas in scope (the "
               "control: flat random search over the team's ideas and declared ranges)")
        cand = {"idea": name, "aspect": idea.aspect, "area": idea.area,
                "expected_value": None, "source": "random", "reasons": [why, *notes]}
        return ProposalRecord("explore", name, why, options, None, {
            "candidates": [cand], "chosen": name, "reasons": why, "source": "random",
            "pool": list(pool)})

    def tell(self, ctx: SprintContext, proposal: ProposalRecord,
             validation: ValidationRecord) -> None:
        """Random search learns nothing."""


RESEARCHERS = {"random": RandomResearcher}


def researcher_role(name: str, lab: Lab) -> ResearcherRole:
    """The Researcher strategy ``name`` (``team`` is the Team's own: not built here)."""
    if name not in RESEARCHERS:
        raise AirlabError(f"--researcher: unknown strategy '{name}'",
                          did_you_mean(name, ["team", *RESEARCHERS]) or "team or random")
    return RESEARCHERS[name](lab)
