"""What every sprint kind shares: the loop's state, its plan, the kind Protocol and the rules
the kinds read (which ideas are open, what a run key is, when a recipe holds).

The kinds themselves are in ``agents.explore`` (explore) and ``agents.recipes`` (stack,
confirm, transfer); ``agents.kinds`` is their registry and the loop's policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from airlab.agents.coder import merge
from airlab.errors import AirlabError
from airlab.store.records import (
    ArmResult,
    Part,
    ProposalRecord,
    SprintRequest,
    Task,
    default_arm,
    default_base,
    make_arm,
)

if TYPE_CHECKING:
    from airlab.agents.architect import Design
    from airlab.agents.knowledge import Idea
    from airlab.agents.roles import Lab, Roles, SprintContext
    from airlab.spec import Arm
    from airlab.store.team import SprintRow

SINGLE_WINNER_WAIT = 2  # explore sprints after a lone winner before it is stacked alone
CONFIRM_SEED_BASE = 10_000  # fresh seeds: 10_000 + 100 * k + i, never used for selection
TRANSFER_SEED_BASE = 20_000  # transfer sprints: 20_000 + 100 * k + i, fresh too
TRANSFER_SCALE = 4  # a recipe is measured at this multiple of the session's budget
MAX_STACK_PARTS = 6
# Areas whose ideas change the time to reach a quality (the loop's objective). The others
# trade quality for size (quantization, pruning) or need a teacher (distillation).
SPEED_AREAS = ("optimizers", "attention", "positions", "normalization", "training_dynamics",
               "batch_size", "efficient_arch", "mixed_precision")
SPEED_METRICS = ("val_loss", "time_to_target", "train_seconds")
# The budget of a sprint when neither the session nor the idea gives one in the task's unit.
DEFAULT_AMOUNT = {"tokens": 400_000.0, "samples": 30_000.0}


@dataclass
class RecipeEntry:
    recipe: Part
    selection: Mapping[str, Any]
    status: str  # candidate | confirmed | rejected
    confirmation: Mapping[str, Any] | None = None
    # "budget" (4x the session's) and "dataset" (the transfer dataset): the recipe against the
    # default configuration there, on fresh seeds
    transfer: dict[str, Mapping[str, Any]] = field(default_factory=dict)


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
    transfers: int = 0
    on_base: dict[str, list[str]] = field(default_factory=dict)  # recipe -> ideas tested on it
    since_win: int = 0  # explore sprints on the current recipe after its first winner
    recipes: dict[str, RecipeEntry] = field(default_factory=dict)
    # Ideas whose win did not hold beyond where it was selected: idea -> why (the Researcher
    # discounts them in later choices).
    not_transferred: dict[str, str] = field(default_factory=dict)
    spent_s: float = 0.0  # sprint seconds of the sprints replayed so far

    @property
    def tested_on_base(self) -> list[str]:
        return self.on_base.get(self.base.idea, [])


@dataclass(frozen=True)
class LoopPlan:
    """The loop's fixed setup for choosing the next sprint: the session's task and budget
    (the default configuration), its selection seeds, the sprints that still fit and the
    dataset a recipe is transferred to (None: no dataset transfer)."""

    lab: Lab
    seeds: tuple[int, ...]
    left: int | None  # sprints that still fit (None: no limit known)
    task: Task | None = None  # None: the lab's
    amount: float = DEFAULT_AMOUNT["tokens"]
    transfer: str | None = None

    @property
    def the_task(self) -> Task:
        return self.task or self.lab.task

    def open_ideas(self, state: LoopState) -> list[str]:
        """Ideas about speed not yet tested on the current recipe; one tested on an earlier
        recipe is open again only if it has options to tune (its best value may have moved)."""
        ideas = self.lab.ideas
        return [n for n in speed_ideas(ideas, self.the_task, self.lab)
                if n not in state.tested_on_base
                and (n not in state.tested or ideas[n].implementation.search)
                and not adds_nothing(ideas[n], state.base)]

    def retune_ideas(self, state: LoopState) -> list[str]:
        """Once no idea is open: the ideas with search ranges (another trial of their study may
        find better values on this recipe), the ones tried fewest times on it first. Empty
        when none has ranges."""
        ideas = self.lab.ideas
        tunable = [n for n in speed_ideas(ideas, self.the_task, self.lab)
                   if ideas[n].implementation.search and not adds_nothing(ideas[n], state.base)]
        if not tunable:
            return []
        tries = {n: state.tested_on_base.count(n) for n in tunable}
        least = min(tries.values())
        return [n for n in tunable if tries[n] == least]

    def request(self, kind: str, base: Part, **kw: Any) -> SprintRequest:
        """A request of ``kind`` on the session's task and budget (``kw`` overrides)."""
        return SprintRequest(kind, **{"seeds": self.seeds, "base": base, "task": self.the_task,
                                      "tokens": self.amount, **kw})


class SprintKind(Protocol):
    name: str

    def propose(self, ctx: SprintContext, roles: Roles) -> ProposalRecord: ...

    def design(self, ctx: SprintContext, roles: Roles, proposal: ProposalRecord) -> Design: ...

    def design_notes(self, ctx: SprintContext, design: Design) -> list[str]: ...

    def update(self, state: LoopState, row: SprintRow) -> None: ...

    def wants(self, state: LoopState, plan: LoopPlan) -> SprintRequest | None: ...


# ------------------------------------------------------------------------------ the rules


def applies(idea: Idea, task: Task, lab: Lab | None = None) -> str | None:
    """Why ``idea`` does not apply to ``task`` (None: it does): the workloads it declares,
    then whether its arm resolves there (a switch of one workload only, a model field the
    task's model lacks). Ideas that need code are the Coder's to judge."""
    if task.workload not in idea.workloads:
        return f"declared for {', '.join(idea.workloads)} only"
    if idea.needs_code:
        return None
    me = idea.minimum_experiment
    try:
        for arm in (make_arm("baseline", me.baseline.use, me.baseline.options), idea.arm):
            run_key(lab, task, arm, 1000.0, 0, me.options)
    except AirlabError as e:
        return e.message
    return None


def speed_ideas(ideas: Mapping[str, Idea], task: Task | None = None, lab: Lab | None = None
                ) -> list[str]:
    """Runnable ideas about getting to a quality sooner (the autonomous loop's objective)
    that test themselves against the default configuration and apply to ``task``."""
    def on_default(i: Idea) -> bool:  # the session's baseline: the default configuration
        me = i.minimum_experiment
        return not me.options and not me.baseline.use and not me.baseline.options

    return [n for n, i in ideas.items() if not i.needs_code and i.area in SPEED_AREAS
            and i.prediction.metric in SPEED_METRICS and on_default(i)
            and (task is None or applies(i, task, lab) is None)]


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


def config_of(arm: Arm) -> tuple[Any, ...]:
    """An arm's switches and options, comparable (names aside)."""
    return (tuple(sorted(arm.use)), tuple(sorted((k, repr(v)) for k, v in arm.options.items())))


def run_key(lab: Lab | None, task: Task, arm: Arm, amount: float, seed: int,
            options: Mapping[str, Any] | None = None) -> str:
    """The run key of ``arm`` on ``task`` at ``amount`` with the team's shared options (and
    ``options``, an idea's own shared ones)."""
    from airlab.plan import resolve

    shared = lab.options if lab is not None else {}
    return resolve(workload=task.workload, preset=task.preset, dataset=task.dataset,
                   budget={task.unit: float(amount)}, seed=int(seed), use=list(arm.use),
                   options={**(options or {}), **shared, **arm.options},
                   settings=lab.settings if lab is not None else None).run_key


def default_target(lab: Lab, task: Task, amount: float, seeds: Sequence[int]
                   ) -> float | None:
    """The default configuration's mean final val_loss on ``task`` at ``amount`` on
    ``seeds``, from its finished runs in the store; None unless every seed has one."""
    from airlab.store.team import finished_values

    keys = [run_key(lab, task, default_arm(), amount, s) for s in seeds]
    found = finished_values(lab.store, keys, "val_loss")
    if len(found) < len(set(keys)):
        return None
    return sum(found.values()) / len(found)


def holds(res: ArmResult | None) -> bool:
    """Whether a recipe holds against the default configuration (a confirmation, a transfer):
    it wins there (``validator.arm_wins``) and its time-to-target interval, when it has one,
    lies above 1."""
    return res is not None and res.wins and (res.ci_low is None or res.ci_low > 1)


def parts_of(ctx: SprintContext) -> tuple[Part, ...]:
    parts = ctx.record.request.parts
    if not parts:
        raise AirlabError(f"a {ctx.kind} sprint needs the recipe parts to test",
                          "the loop passes its winners")
    return parts


def transfer_label(entry: RecipeEntry) -> str:
    """Where a confirmed recipe holds: 'holds only at 400k tokens on shakespeare' when neither
    4x the budget nor the other dataset kept its win; '' before its transfer is measured."""
    if entry.status != "confirmed" or not entry.transfer:
        return ""
    where = str(entry.selection.get("label") or "the selection budget and dataset")
    ok = {k: bool(v.get("holds")) for k, v in entry.transfer.items() if "holds" in v}
    label = {k: str(v.get("label") or k) for k, v in entry.transfer.items()}
    if ok and not any(ok.values()):
        return f"holds only at {where}"
    good = [label[k] for k, v in ok.items() if v]
    bad = [label[k] for k, v in ok.items() if not v]
    unknown = [f"{label[k]}: not measured ("
               + (f"{v['incomplete']}" if v.get("incomplete") else "the sprint failed") + ")"
               for k, v in entry.transfer.items() if "holds" not in v]
    text = f"holds at {where}" + "".join(f" and at {g}" for g in good)
    text += "".join(f"; not at {b}" for b in bad)
    return text + "".join(f"; {u}" for u in unknown)
