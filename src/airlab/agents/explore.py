"""The explore sprint: one idea (the Researcher's, or the one asked for) on top of the current
recipe (the default configuration at first), on the sprint's task.

Ideas that do not apply to the task (another workload, a switch or model field the task's
model lacks) are left out of the Researcher's choice and listed, with the reason, in the
proposal (``sprint.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airlab.agents.coder import merge
from airlab.agents.loopstate import (
    DEFAULT_AMOUNT,
    LoopPlan,
    LoopState,
    applies,
    default_target,
    experiment_name,
    run_key,
)
from airlab.agents.roles import Draft
from airlab.errors import AirlabError
from airlab.store.records import (
    Part,
    ProposalRecord,
    SprintRecord,
    SprintRequest,
    Task,
    is_default,
    make_arm,
)

if TYPE_CHECKING:
    from airlab.agents.architect import Design
    from airlab.agents.knowledge import Idea
    from airlab.agents.roles import Lab, Roles, SprintContext
    from airlab.store.team import SprintRow


def is_base(lab: Lab, name: str, options: Mapping[str, Any], base: Part,
            task: Task | None = None) -> bool:
    """Whether idea ``name`` with ``options``, stacked on ``base`` as an explore sprint would,
    resolves to the base's own configuration (the same run key) on ``task`` (the lab's)."""
    task = task or lab.task
    idea = lab.idea(name)
    me, arm = idea.minimum_experiment, idea.arm
    mine = make_arm(name, arm.use, {**arm.options, **options})
    if is_default(base):  # as the design: the idea's arm against the idea's baseline
        ref, top = make_arm("base", me.baseline.use, me.baseline.options), mine
    else:  # stacked on the recipe
        ref = base.arm("base")
        top, _ = merge(name, [ref, mine])
    try:
        return run_key(lab, task, top, 1000.0, 0, me.options) == \
            run_key(lab, task, ref, 1000.0, 0, me.options)
    except AirlabError:
        return False


def not_applying(lab: Lab, task: Task) -> dict[str, str]:
    """The ideas that do not apply to ``task``, with the reason (``loopstate.applies``)."""
    out = {}
    for name, idea in sorted(lab.ideas.items()):
        why = applies(idea, task, lab)
        if why is not None:
            out[name] = why
    return out


def idea_amount(idea: Idea, task: Task) -> float:
    """The idea's own budget when it counts the task's unit, else the task's default."""
    me = idea.minimum_experiment
    return float(me.budget.get(task.unit) or DEFAULT_AMOUNT.get(task.unit, 1000.0))


def winner_part(rec: SprintRecord, base: Part) -> Part | None:
    """The idea's arm of an explore sprint as a recipe part (its switches and options beyond
    the base), when it won."""
    idea = rec.proposal.idea if rec.proposal is not None else None
    res = rec.validation.arms.get(idea) if rec.validation is not None and idea else None
    if res is None or not res.wins or rec.spec is None:
        return None
    arm = next((a for a in rec.spec.arms if a.name == idea), None)
    if arm is None or idea is None:
        return None
    use = [u for u in arm.use if u not in base.use]
    opts = {k: v for k, v in arm.options.items() if base.options.get(k) != v}
    return Part(idea, tuple(use), opts, ratio=res.ratio)


class Explore:
    """One idea (the Researcher's, or the one asked for) on top of the current recipe."""

    name = "explore"

    def propose(self, ctx: SprintContext, roles: Roles) -> ProposalRecord:
        q, lab = ctx.record.request, ctx.lab
        skipped = not_applying(lab, q.task)
        if q.idea:
            idea = lab.idea(q.idea)
            roles.coder.check_idea(idea)
            if q.idea in skipped:
                raise AirlabError(f"--idea: '{q.idea}' does not apply to "
                                  f"{q.task.label()}: {skipped[q.idea]}",
                                  "pick an idea that does (`airlab ideas`), or another task")
        ctx.skipped = skipped
        prop = roles.researcher.propose(
            ctx, lambda name, opts: is_base(lab, name, opts, ctx.base, q.task))
        prop.skipped = ctx.skipped
        return prop

    def design(self, ctx: SprintContext, roles: Roles, proposal: ProposalRecord) -> Design:
        lab, q, base, task = ctx.lab, ctx.record.request, ctx.base, ctx.record.request.task
        assert proposal.idea is not None
        idea = lab.idea(proposal.idea)
        roles.coder.check_idea(idea)
        me, delta = idea.minimum_experiment, idea.arm
        arm = make_arm(idea.name, delta.use, {**delta.options, **proposal.options}, idea.title)
        abl = idea.ablation
        if is_default(base):  # the idea's arm (and its ablation) against the idea's baseline
            baseline = make_arm("baseline", me.baseline.use, me.baseline.options,
                                "the idea's baseline")
            arms = [arm]
            if abl is not None:
                arms.append(make_arm(abl.name, abl.use, abl.options, "ablation"))
        else:  # stacked on the recipe, against the recipe
            baseline = make_arm("baseline", base.use, base.options,
                                f"the current recipe {base.idea}")
            top, _ = merge(idea.name, [base.arm("base"), arm], idea.title)
            arms = [top]
            if abl is not None:
                a2, _ = merge(abl.name, [base.arm("base"),
                                         make_arm(abl.name, abl.use, abl.options)], "ablation")
                if (a2.use, dict(a2.options)) != (baseline.use, dict(baseline.options)):
                    arms.append(a2)
        p = idea.prediction
        effect = p.expected if (p.kind == "delta" and p.metric == "val_loss") else None
        budget = float(q.tokens or idea_amount(idea, task))
        # On a recipe the loop's objective stays the default configuration's quality: the
        # arms' time to it is measured against the recipe's (a declared target), so an idea
        # that trades late quality for early speed (a shorter schedule) can win.
        target = None if is_default(base) or not q.seeds else \
            default_target(lab, task, budget, q.seeds)
        d = roles.architect.design(ctx, Draft(
            name=experiment_name(ctx.session, ctx.number, idea.name), baseline=baseline,
            arms=arms, workload=task.workload, preset=task.preset, dataset=task.dataset,
            unit=task.unit, tokens=budget, minutes=q.minutes, effect=effect, seeds=q.seeds,
            options={**me.options, **lab.options},
            hypothesis=f"{idea.pitch} Prediction: {p.text()}.", area=idea.area,
            idea=idea.name, fixed_budget=q.tokens is not None, target=target))
        if target is not None:
            d.notes.append(f"time to target at the default configuration's quality: "
                           f"val_loss {target:.4f}, the mean final of its runs on seeds "
                           f"{', '.join(map(str, q.seeds or ()))} at {budget:,.0f} "
                           f"{task.unit}")
        return d

    def design_notes(self, ctx: SprintContext, design: Design) -> list[str]:
        """The novelty check again on the final spec (the Architect sized seeds and budget):
        an arm whose runs are already stored elsewhere is adopted, not run again."""
        from airlab.agents.novelty import find_duplicate

        prop = ctx.record.proposal
        name = prop.idea if prop is not None else None
        idea = ctx.lab.model_ideas.get(name or "") or ctx.lab.ideas.get(name or "")
        if idea is None or idea.needs_code or name is None:  # its switch exists only later
            return []
        dup = find_duplicate(ctx.lab.store, design.spec, name, ctx.lab.settings)
        return [f"novelty: arm {name} has the runs of experiment {dup} (identical configs): "
                "they are adopted, not run again"] if dup else []

    def update(self, state: LoopState, row: SprintRow) -> None:
        base_name = row.record.request.base.idea
        if row.idea:
            state.tested.append(row.idea)
            state.on_base.setdefault(base_name, []).append(row.idea)
        if row.status != "done" or base_name != state.base.idea:
            return  # unfinished, or tested on an earlier recipe: no winner against this one
        if state.winners:
            state.since_win += 1
        part = winner_part(row.record, state.base)
        if part is None:
            return
        # One part per idea: a retuned trial that wins again replaces the idea's earlier
        # part when it is faster (two trials of one idea stacked would be one idea twice).
        same = [i for i, w in enumerate(state.winners) if w.idea == part.idea]
        if not same:
            state.winners.append(part)
        elif (part.ratio or 0.0) > (state.winners[same[0]].ratio or 0.0):
            state.winners[same[0]] = part

    def wants(self, state: LoopState, plan: LoopPlan) -> SprintRequest | None:
        open_ = plan.open_ideas(state)
        # Nothing open on this recipe: the session goes on tuning the ideas with ranges
        # rather than stopping with budget left (a cheap task tries every idea in minutes).
        retune = not open_ and bool(open_ := plan.retune_ideas(state))
        exclude = sorted(set(plan.lab.ideas) - set(open_))
        return plan.request("explore", state.base, exclude=tuple(exclude),
                            discount=tuple(sorted(state.not_transferred.items())),
                            retune=retune)
