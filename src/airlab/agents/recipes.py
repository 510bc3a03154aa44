"""The sprint kinds that build and test recipes: stack, confirm, transfer.

* **stack**: the ideas that won against the recipe, together, each ablated out, against the
  default configuration (and the current recipe as an arm);
* **confirm**: a candidate recipe against the default configuration on fresh seeds, and
  beside the current recipe on the same seeds: it replaces the current recipe only if it
  holds against the default configuration and the paired comparison with the current recipe
  (time to the default configuration's quality, seed by seed) has its interval above 1;
* **transfer**: the current recipe against the default configuration on fresh seeds at
  4x the session's budget, then on the transfer dataset: where its win holds beyond where it
  was selected (the leaderboard's transfer columns; the parts of a recipe that does not hold
  are discounted in the Researcher's later choices).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from airlab.agents.coder import merge
from airlab.agents.loopstate import (
    CONFIRM_SEED_BASE,
    MAX_STACK_PARTS,
    SINGLE_WINNER_WAIT,
    TRANSFER_SCALE,
    TRANSFER_SEED_BASE,
    LoopPlan,
    LoopState,
    RecipeEntry,
    config_of,
    experiment_name,
    holds,
    parts_of,
)
from airlab.agents.roles import Draft
from airlab.store.records import (
    Part,
    ProposalRecord,
    SprintRequest,
    default_arm,
    is_default,
    make_arm,
)

if TYPE_CHECKING:
    from airlab.agents.architect import Design
    from airlab.agents.roles import Roles, SprintContext
    from airlab.spec import Arm
    from airlab.store.team import SprintRow

VERSUS = ("recipe", "current")  # the confirmation's paired comparison: candidate vs current


def _draft(ctx: SprintContext, what: str, baseline: Arm, arms: list[Arm], hypothesis: str
           ) -> Draft:
    """A recipe sprint's draft: the request's task, budget (fixed) and seeds."""
    q = ctx.record.request
    t = q.task
    return Draft(name=experiment_name(ctx.session, ctx.number, what), baseline=baseline,
                 arms=arms, workload=t.workload, preset=t.preset, dataset=t.dataset,
                 unit=t.unit, tokens=float(q.tokens or 400_000), minutes=q.minutes,
                 seeds=q.seeds, options=ctx.lab.options, hypothesis=hypothesis)


def _figures(row: SprintRow, res: Any) -> dict[str, Any]:
    rec = row.record
    return {"experiment": row.experiment, **(asdict(res) if res is not None else {}),
            "seeds": list(rec.spec.seeds) if rec.spec is not None else [],
            "label": rec.request.task.label(rec.request.tokens)}


def _cut_short(row: SprintRow, res: Any, pairs: int) -> bool:
    """Whether a sprint's comparison lacks seed pairs because its runs did not all run (cut
    by the box or the session's end), not because runs failed."""
    if res is not None and res.n >= pairs:
        return False
    runs = row.record.runs
    return runs is not None and runs.failed == 0 and (
        runs.incomplete > 0 or runs.reused + runs.ran < runs.planned)


class Stack:
    """The winners together on the recipe, each ablated out, against the default
    configuration (and the recipe itself as an arm)."""

    name = "stack"

    def propose(self, ctx: SprintContext, roles: Roles) -> ProposalRecord:
        parts = parts_of(ctx)
        names = "+".join(p.idea for p in parts)
        won = f"{len(parts)} ideas won" if len(parts) != 1 else "1 idea won"
        return ProposalRecord("stack", None, f"{won} against "
                              f"{ctx.base.idea}: try them together ({names}), each one "
                              "ablated out", parts=parts)

    def design(self, ctx: SprintContext, roles: Roles, proposal: ProposalRecord) -> Design:
        base = ctx.base
        parts = [p.arm() for p in proposal.parts]
        on = base.arm("base")
        stack, notes = merge("stack", [on, *parts], "+".join(p.name for p in parts))
        arms = [stack]
        seen = {config_of(stack), config_of(default_arm())}
        for p in parts:
            rest, _ = merge(f"stack-minus-{p.name}", [on, *(x for x in parts if x != p)],
                            f"the stack without {p.name}")
            if config_of(rest) in seen:  # the part adds nothing, or nothing is left
                same = config_of(rest) == config_of(stack)
                notes.append(f"no ablation of {p.name}: the stack without it is "
                             f"{'the stack itself' if same else 'another arm'}")
                continue
            seen.add(config_of(rest))
            arms.append(rest)
        if base.use or base.options:
            arms.append(make_arm("base", base.use, base.options,
                                 f"the current recipe {base.idea}"))
        d = roles.architect.design(ctx, _draft(
            ctx, "stack", default_arm(), arms,
            f"Stacking {', '.join(p.name for p in parts)} on {base.idea} reaches the default "
            "configuration's quality sooner than each alone."))
        d.notes.extend(notes)
        return d

    def design_notes(self, ctx: SprintContext, design: Design) -> list[str]:
        return []

    def update(self, state: LoopState, row: SprintRow) -> None:
        if row.status != "done":
            return
        rec = row.record
        parts = rec.proposal.parts if rec.proposal is not None else ()
        state.stacks_tried.append(sorted(p.idea for p in parts))
        arms = rec.validation.arms if rec.validation is not None else {}
        s, b = arms.get("stack"), arms.get("base")
        state.base_ratio = b.ratio if b is not None else 1.0
        if s is not None and s.wins and (s.ratio or 0) > (state.base_ratio or 1.0):
            assert rec.spec is not None
            arm = next(a for a in rec.spec.arms if a.name == "stack")
            base = state.base
            name = "+".join([*([base.idea] if not is_default(base) else []),
                             *(p.idea for p in parts)])
            sel = _figures(row, s)
            state.candidate = Part(name, tuple(arm.use), dict(arm.options),
                                   parts=tuple(p.idea for p in parts), selection=sel)
            state.recipes[name] = RecipeEntry(state.candidate, sel, "candidate")

    def wants(self, state: LoopState, plan: LoopPlan) -> SprintRequest | None:
        """Two or more winners; or one, once nothing is left to try, the session is nearly
        spent (a stack and a confirmation still fit), or a few more ideas found no second
        winner to stack it with; and this set was not stacked yet."""
        winners = sorted(state.winners, key=lambda p: -(p.ratio or 0))[:MAX_STACK_PARTS]
        names = sorted(p.idea for p in winners)
        want = len(winners) >= 2 or (len(winners) == 1 and (
            not plan.open_ideas(state) or (plan.left is not None and plan.left <= 3)
            or state.since_win >= SINGLE_WINNER_WAIT))
        if not want or names in state.stacks_tried:
            return None
        return plan.request("stack", state.base, parts=tuple(winners))


class Confirm:
    """A candidate recipe against the default configuration on fresh seeds, beside the
    current recipe on the same seeds (the paired comparison that decides replacement)."""

    name = "confirm"

    def propose(self, ctx: SprintContext, roles: Roles) -> ProposalRecord:
        parts = parts_of(ctx)
        seeds = list(ctx.record.request.seeds) if ctx.record.request.seeds else None
        beside = "" if is_default(ctx.base) else \
            f", beside the current recipe {ctx.base.idea} on the same seeds"
        return ProposalRecord("confirm", None, f"confirm recipe {parts[0].idea} against the "
                              f"default configuration on fresh seeds {seeds}{beside}",
                              parts=parts)

    def design(self, ctx: SprintContext, roles: Roles, proposal: ProposalRecord) -> Design:
        recipe, base = proposal.parts[0], ctx.base
        arms = [recipe.arm(VERSUS[0], recipe.idea)]
        if not is_default(base):
            arms.append(base.arm(VERSUS[1], f"the current recipe {base.idea}"))
        d = roles.architect.design(ctx, _draft(
            ctx, "confirm", default_arm(), arms,
            f"Recipe {recipe.idea} still reaches the default configuration's quality sooner "
            "on fresh seeds" + ("" if is_default(base) else
                                f", and sooner than the current recipe {base.idea}") + "."))
        if is_default(base):
            return d
        d.notes.append(f"replacement: {VERSUS[0]} against {VERSUS[1]} seed by seed, the time "
                       "to the default configuration's quality (its mean final here) as the "
                       "target; the interval must lie above 1")
        return dataclasses.replace(d, versus=[list(VERSUS)])

    def design_notes(self, ctx: SprintContext, design: Design) -> list[str]:
        return []

    def update(self, state: LoopState, row: SprintRow) -> None:
        """It replaces the current recipe if it holds against the default configuration on
        fresh seeds and, on the same seeds, reaches that quality sooner than the current
        recipe (paired by seed, the interval above 1): docs/team.md."""
        if row.status != "done":
            return
        rec = row.record
        state.confirms += 1
        parts = rec.proposal.parts if rec.proposal is not None else ()
        res = rec.validation.arms.get(VERSUS[0]) if rec.validation is not None else None
        vs = rec.validation.versus.get("/".join(VERSUS)) if rec.validation is not None \
            else None
        pairs = len(rec.spec.seeds) if rec.spec is not None else 0
        if parts and _cut_short(row, res, pairs):
            # Runs cut by the box or the session's end, none failed: the confirmation says
            # nothing, so the recipe stays the candidate (confirmed again, on fresh seeds, when
            # time is left), never "rejected" for lack of time.
            p = parts[0]
            state.recipes[p.idea] = RecipeEntry(p, dict(p.selection or {}), "candidate", {
                **_figures(row, res), "hours": round(state.spent_s / 3600, 4),
                "incomplete": f"{res.n if res else 0} of {pairs} seed pairs finished"})
            state.candidate = p
            return
        replaces = holds(res)
        if replaces and not is_default(state.base):
            beside = rec.spec is not None and any(a.name == VERSUS[1] for a in rec.spec.arms)
            if beside:  # the paired comparison with the current recipe decides
                replaces = vs is not None and vs.wins
            elif state.base_ratio is not None:  # a sprint stored before it existed
                replaces = res is not None and (res.ratio or 0) > state.base_ratio
        if parts:
            p = parts[0]
            conf = {**_figures(row, res), "hours": round(state.spent_s / 3600, 4)}
            if vs is not None:
                conf["versus"] = asdict(vs)
            state.recipes[p.idea] = RecipeEntry(p, dict(p.selection or {}),
                                                "confirmed" if replaces else "rejected", conf)
            if replaces and res is not None:
                state.base = Part(p.idea, p.use, dict(p.options))
                state.base_ratio = res.ratio
                state.winners = []
                state.since_win = 0
        state.candidate = None

    def wants(self, state: LoopState, plan: LoopPlan) -> SprintRequest | None:
        if state.candidate is None:
            return None
        fresh = tuple(CONFIRM_SEED_BASE + 100 * state.confirms + i
                      for i in range(len(plan.seeds)))
        return plan.request("confirm", state.base, seeds=fresh, parts=(state.candidate,))


class Transfer:
    """The current recipe against the default configuration on fresh seeds, at 4x the
    session's budget ("budget"), then on the transfer dataset ("dataset")."""

    name = "transfer"

    def propose(self, ctx: SprintContext, roles: Roles) -> ProposalRecord:
        parts, q = parts_of(ctx), ctx.record.request
        why = f"{TRANSFER_SCALE}x the session's budget" if q.transfer == "budget" \
            else "another dataset"
        return ProposalRecord("transfer", None, f"measure recipe {parts[0].idea} against the "
                              f"default configuration at {q.task.label(q.tokens)} ({why}) on "
                              f"fresh seeds {list(q.seeds or ())}", parts=parts)

    def design(self, ctx: SprintContext, roles: Roles, proposal: ProposalRecord) -> Design:
        recipe, q = proposal.parts[0], ctx.record.request
        return roles.architect.design(ctx, _draft(
            ctx, f"transfer-{q.transfer or 'budget'}", default_arm(),
            [recipe.arm(VERSUS[0], recipe.idea)],
            f"Recipe {recipe.idea} reaches the default configuration's quality sooner at "
            f"{q.task.label(q.tokens)} too."))

    def design_notes(self, ctx: SprintContext, design: Design) -> list[str]:
        return []

    def update(self, state: LoopState, row: SprintRow) -> None:
        state.transfers += 1
        rec = row.record
        parts = rec.proposal.parts if rec.proposal is not None else rec.request.parts
        entry = state.recipes.get(parts[0].idea) if parts else None
        if entry is None or row.status not in ("done", "failed"):
            return
        where = rec.request.transfer or "budget"
        if row.status == "failed":
            entry.transfer[where] = {"experiment": row.experiment, "error": rec.error,
                                     "label": rec.request.task.label(rec.request.tokens)}
            return
        res = rec.validation.arms.get(VERSUS[0]) if rec.validation is not None else None
        figures = _figures(row, res)
        pairs = len(figures["seeds"])
        if res is None or res.n < pairs:  # runs cut by the box or failed: not measured
            figures["incomplete"] = f"{res.n if res else 0} of {pairs} seed pairs finished"
            entry.transfer[where] = figures
            return
        ok = figures["holds"] = holds(res)
        entry.transfer[where] = figures
        if not ok:
            for idea in entry.recipe.parts or ():
                state.not_transferred.setdefault(
                    idea, f"recipe {entry.recipe.idea} did not hold at {figures['label']}")

    def wants(self, state: LoopState, plan: LoopPlan) -> SprintRequest | None:
        base = state.base
        entry = state.recipes.get(base.idea)
        if is_default(base) or entry is None or entry.status != "confirmed":
            return None
        seeds = tuple(TRANSFER_SEED_BASE + 100 * state.transfers + i
                      for i in range(len(plan.seeds)))
        common: dict[str, Any] = {"seeds": seeds, "parts": (entry.recipe,)}
        if "budget" not in entry.transfer:
            return plan.request("transfer", base, tokens=plan.amount * TRANSFER_SCALE,
                                transfer="budget", **common)
        if plan.transfer and "dataset" not in entry.transfer:
            task = dataclasses.replace(plan.the_task, dataset=plan.transfer)
            return plan.request("transfer", base, task=task, transfer="dataset", **common)
        return None
