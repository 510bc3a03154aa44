"""Sprint kinds: what a sprint proposes and designs, and what the loop learns from it.

A kind is one object in :data:`KINDS` with four methods:

* ``propose(ctx, roles)``: the ideas phase (an idea from the Researcher, or recipe parts);
* ``design(ctx, roles, proposal)``: the arms, handed to the Architect to size;
* ``update(state, row)``: the loop's state after a stored sprint of this kind;
* ``wants(state, plan)``: the request the loop runs next, or None.

The loop (``agents.loop``) asks the kinds in :data:`POLICY` order and runs the first that wants
a sprint; it never names a kind. Adding a kind (a transfer to another workload, a random-search
control) is one class here and one entry in each table.

* **explore**: one idea on top of the current recipe (the default configuration at first);
* **stack**: the ideas that won against the recipe, together, each ablated out, against the
  default configuration;
* **confirm**: a candidate recipe against the default configuration on fresh seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from airlab.agents.coder import merge
from airlab.agents.roles import Draft
from airlab.errors import AirlabError
from airlab.store.records import (
    Part,
    ProposalRecord,
    SprintRecord,
    SprintRequest,
    default_arm,
    default_base,
    is_default,
    make_arm,
)

if TYPE_CHECKING:
    from airlab.agents.architect import Design
    from airlab.agents.knowledge import Idea, MinimumExperiment
    from airlab.agents.roles import Lab, Roles, SprintContext
    from airlab.spec import Arm
    from airlab.store.team import SprintRow

SINGLE_WINNER_WAIT = 2  # explore sprints after a lone winner before it is stacked alone
CONFIRM_SEED_BASE = 10_000  # fresh seeds: 10_000 + 100 * k + i, never used for selection
MAX_STACK_PARTS = 6
# Areas whose ideas change the time to reach a quality (the loop's objective). The others
# trade quality for size (quantization, pruning) or need a teacher (distillation).
SPEED_AREAS = ("optimizers", "attention", "positions", "normalization", "training_dynamics",
               "batch_size", "efficient_arch", "mixed_precision")
SPEED_METRICS = ("val_loss", "time_to_target", "train_seconds")


@dataclass(frozen=True)
class RecipeEntry:
    recipe: Part
    selection: Mapping[str, Any]
    status: str  # candidate | confirmed | rejected
    confirmation: Mapping[str, Any] | None = None


@dataclass
class LoopState:
    """What the loop knows, derived from its stored sprints (``agents.loop.replay``)."""

    base: Part = field(default_factory=default_base)  # the current recipe
    winners: list[Part] = field(default_factory=list)  # ideas that won against it
    tested: list[str] = field(default_factory=list)
    stacks_tried: list[list[str]] = field(default_factory=list)
    candidate: Part | None = None  # a recipe waiting for its confirmation
    base_ratio: float | None = None  # the current recipe's latest ratio (None: default)
    confirms: int = 0
    on_base: dict[str, list[str]] = field(default_factory=dict)  # recipe -> ideas tested on it
    since_win: int = 0  # explore sprints on the current recipe after its first winner
    recipes: dict[str, RecipeEntry] = field(default_factory=dict)

    @property
    def tested_on_base(self) -> list[str]:
        return self.on_base.get(self.base.idea, [])


@dataclass(frozen=True)
class LoopPlan:
    """The loop's fixed setup for choosing the next sprint."""

    lab: Lab
    seeds: tuple[int, ...]
    left: int | None  # sprints that still fit (None: no limit known)

    def open_ideas(self, state: LoopState) -> list[str]:
        """Ideas about speed not yet tested on the current recipe; one tested on an earlier
        recipe is open again only if it has options to tune (its best value may have moved)."""
        ideas = self.lab.ideas
        return [n for n in speed_ideas(ideas) if n not in state.tested_on_base
                and (n not in state.tested or ideas[n].implementation.search)
                and not adds_nothing(ideas[n], state.base)]


class SprintKind(Protocol):
    name: str

    def propose(self, ctx: SprintContext, roles: Roles) -> ProposalRecord: ...

    def design(self, ctx: SprintContext, roles: Roles, proposal: ProposalRecord) -> Design: ...

    def design_notes(self, ctx: SprintContext, design: Design) -> list[str]: ...

    def update(self, state: LoopState, row: SprintRow) -> None: ...

    def wants(self, state: LoopState, plan: LoopPlan) -> SprintRequest | None: ...


def speed_ideas(ideas: Mapping[str, Idea]) -> list[str]:
    """Runnable ideas about getting to a quality sooner (the autonomous loop's objective)."""
    def on_default(i: Idea) -> bool:  # the session's baseline: the default configuration
        me = i.minimum_experiment
        return ((me.workload, me.preset, me.dataset) == ("charlm", "tiny", "shakespeare")
                and not me.options and not me.baseline.use and not me.baseline.options)

    return [n for n, i in ideas.items() if not i.needs_code and i.area in SPEED_AREAS
            and i.prediction.metric in SPEED_METRICS and on_default(i)]


def adds_nothing(idea: Idea, base: Part) -> bool:
    """Whether the idea's arm is already part of the base (its switches and options) and it
    has nothing to tune (with search ranges, Optuna proposes other values on the new base)."""
    if idea.implementation.search:
        return False
    top, _ = merge(idea.name, [base.arm("base"), idea.arm])
    return set(top.use) == set(base.use) and dict(top.options) == dict(base.options)


def experiment_name(session: str, number: int, what: str) -> str:
    from airlab.spec import slug

    return slug(f"sprint.{session}.{number:03d}.{what}", 100)


def _config_of(arm: Arm) -> tuple[Any, ...]:
    """An arm's switches and options, comparable (names aside)."""
    return (tuple(sorted(arm.use)), tuple(sorted((k, repr(v)) for k, v in arm.options.items())))


# ----------------------------------------------------------------------------------- explore


def run_key(lab: Lab, me: MinimumExperiment, arm: Arm, tokens: float, seed: int) -> str:
    """The run key of ``arm`` in an experiment of ``me``'s kind with the team's options."""
    from airlab.plan import resolve

    return resolve(workload=me.workload, preset=me.preset, dataset=me.dataset,
                   budget={"tokens": float(tokens)}, seed=int(seed), use=list(arm.use),
                   options={**me.options, **lab.options, **arm.options},
                   settings=lab.settings).run_key


def is_base(lab: Lab, name: str, options: Mapping[str, Any], base: Part) -> bool:
    """Whether idea ``name`` with ``options``, stacked on ``base`` as an explore sprint would,
    resolves to the base's own configuration (the same run key)."""
    idea = lab.idea(name)
    me, arm = idea.minimum_experiment, idea.arm
    mine = make_arm(name, arm.use, {**arm.options, **options})
    if is_default(base):  # as the design: the idea's arm against the idea's baseline
        ref, top = make_arm("base", me.baseline.use, me.baseline.options), mine
    else:  # stacked on the recipe
        ref = base.arm("base")
        top, _ = merge(name, [ref, mine])
    try:
        return run_key(lab, me, top, 1000.0, 0) == run_key(lab, me, ref, 1000.0, 0)
    except AirlabError:
        return False


def default_target(lab: Lab, me: MinimumExperiment, tokens: float,
                   seeds: Sequence[int]) -> float | None:
    """The default configuration's mean final val_loss at ``tokens`` on ``seeds``, from its
    finished runs in the store; None unless every seed has one."""
    from airlab.store.team import finished_values

    keys = [run_key(lab, me, default_arm(), tokens, s) for s in seeds]
    found = finished_values(lab.store, keys, "val_loss")
    if len(found) < len(set(keys)):
        return None
    return sum(found.values()) / len(found)


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
        q = ctx.record.request
        if q.idea:
            roles.coder.check_idea(ctx.lab.idea(q.idea))
        return roles.researcher.propose(
            ctx, lambda name, opts: is_base(ctx.lab, name, opts, ctx.base))

    def design(self, ctx: SprintContext, roles: Roles, proposal: ProposalRecord) -> Design:
        lab, q, base = ctx.lab, ctx.record.request, ctx.base
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
        budget = float(q.tokens or me.budget.get("tokens", 200_000))
        # On a recipe the loop's objective stays the default configuration's quality: the
        # arms' time to it is measured against the recipe's (a declared target), so an idea
        # that trades late quality for early speed (a shorter schedule) can win.
        target = None if is_default(base) or not q.seeds else \
            default_target(lab, me, budget, q.seeds)
        d = roles.architect.design(ctx, Draft(
            name=experiment_name(ctx.session, ctx.number, idea.name), baseline=baseline,
            arms=arms, workload=me.workload, preset=me.preset, dataset=me.dataset,
            tokens=budget, minutes=q.minutes, effect=effect, seeds=q.seeds,
            options={**me.options, **lab.options},
            hypothesis=f"{idea.pitch} Prediction: {p.text()}.", area=idea.area,
            idea=idea.name, fixed_budget=q.tokens is not None, target=target))
        if target is not None:
            d.notes.append(f"time to target at the default configuration's quality: "
                           f"val_loss {target:.4f}, the mean final of its runs on seeds "
                           f"{', '.join(map(str, q.seeds or ()))} at {budget:,.0f} tokens")
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
        if part is not None:
            state.winners.append(part)

    def wants(self, state: LoopState, plan: LoopPlan) -> SprintRequest | None:
        exclude = sorted(set(plan.lab.ideas) - set(plan.open_ideas(state)))
        return SprintRequest("explore", seeds=plan.seeds, base=state.base,
                             exclude=tuple(exclude))


# ------------------------------------------------------------------------- stack, confirm


def _parts_of(ctx: SprintContext) -> tuple[Part, ...]:
    parts = ctx.record.request.parts
    if not parts:
        raise AirlabError(f"a {ctx.kind} sprint needs the recipe parts to test",
                          "the loop passes its winners")
    return parts


class Stack:
    """The winners together on the recipe, each ablated out, against the default
    configuration (and the recipe itself as an arm)."""

    name = "stack"

    def propose(self, ctx: SprintContext, roles: Roles) -> ProposalRecord:
        parts = _parts_of(ctx)
        names = "+".join(p.idea for p in parts)
        return ProposalRecord("stack", None, f"{len(parts)} ideas won against "
                              f"{ctx.base.idea}: try them together ({names}), each one "
                              "ablated out", parts=parts)

    def design(self, ctx: SprintContext, roles: Roles, proposal: ProposalRecord) -> Design:
        base, q = ctx.base, ctx.record.request
        parts = [p.arm() for p in proposal.parts]
        on = base.arm("base")
        stack, notes = merge("stack", [on, *parts], "+".join(p.name for p in parts))
        arms = [stack]
        seen = {_config_of(stack), _config_of(default_arm())}
        for p in parts:
            rest, _ = merge(f"stack-minus-{p.name}", [on, *(x for x in parts if x != p)],
                            f"the stack without {p.name}")
            if _config_of(rest) in seen:  # the part adds nothing, or nothing is left
                same = _config_of(rest) == _config_of(stack)
                notes.append(f"no ablation of {p.name}: the stack without it is "
                             f"{'the stack itself' if same else 'another arm'}")
                continue
            seen.add(_config_of(rest))
            arms.append(rest)
        if base.use or base.options:
            arms.append(make_arm("base", base.use, base.options,
                                 f"the current recipe {base.idea}"))
        d = roles.architect.design(ctx, Draft(
            name=experiment_name(ctx.session, ctx.number, "stack"), baseline=default_arm(),
            arms=arms, tokens=float(q.tokens or 400_000), minutes=q.minutes, seeds=q.seeds,
            options=ctx.lab.options,
            hypothesis=f"Stacking {', '.join(p.name for p in parts)} on {base.idea} "
                       "reaches the default configuration's quality sooner than each alone."))
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
            sel = {"experiment": row.experiment, **asdict(s), "seeds": list(rec.spec.seeds)}
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
        return SprintRequest("stack", seeds=plan.seeds, base=state.base, parts=tuple(winners))


class Confirm:
    """A candidate recipe against the default configuration on fresh seeds."""

    name = "confirm"

    def propose(self, ctx: SprintContext, roles: Roles) -> ProposalRecord:
        parts = _parts_of(ctx)
        seeds = list(ctx.record.request.seeds) if ctx.record.request.seeds else None
        return ProposalRecord("confirm", None, f"confirm recipe {parts[0].idea} against the "
                              f"default configuration on fresh seeds {seeds}", parts=parts)

    def design(self, ctx: SprintContext, roles: Roles, proposal: ProposalRecord) -> Design:
        recipe, q = proposal.parts[0], ctx.record.request
        return roles.architect.design(ctx, Draft(
            name=experiment_name(ctx.session, ctx.number, "confirm"), baseline=default_arm(),
            arms=[recipe.arm("recipe", recipe.idea)],
            tokens=float(q.tokens or 400_000), minutes=q.minutes, seeds=q.seeds,
            options=ctx.lab.options,
            hypothesis=f"Recipe {recipe.idea} still reaches the default configuration's "
                       "quality sooner on fresh seeds."))

    def design_notes(self, ctx: SprintContext, design: Design) -> list[str]:
        return []

    def update(self, state: LoopState, row: SprintRow) -> None:
        """It holds if it still wins against the default configuration on fresh seeds and
        beats the current recipe's latest ratio against it (measured beside the stack in the
        stack sprint, else the recipe's own confirmation): docs/team.md."""
        if row.status != "done":
            return
        rec = row.record
        state.confirms += 1
        parts = rec.proposal.parts if rec.proposal is not None else ()
        res = rec.validation.arms.get("recipe") if rec.validation is not None else None
        holds = res is not None and res.wins and (res.ci_low is None or res.ci_low > 1)
        if holds and res is not None and state.base_ratio is not None \
                and (res.ratio or 0) <= state.base_ratio:
            holds = False
        if parts:
            p = parts[0]
            conf = {"experiment": row.experiment, **(asdict(res) if res is not None else {}),
                    "seeds": list(rec.spec.seeds) if rec.spec is not None else []}
            state.recipes[p.idea] = RecipeEntry(p, dict(p.selection or {}),
                                                "confirmed" if holds else "rejected", conf)
            if holds and res is not None:
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
        return SprintRequest("confirm", seeds=fresh, base=state.base, parts=(state.candidate,))


KINDS: dict[str, SprintKind] = {k.name: k for k in (Explore(), Stack(), Confirm())}
POLICY = ("confirm", "stack", "explore")  # the loop runs the first kind that wants a sprint


def kind_of(name: str) -> SprintKind:
    from airlab.errors import lookup

    return lookup(KINDS, name, "sprint kind")  # type: ignore[no-any-return]
