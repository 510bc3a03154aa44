"""The team's four roles as strategies over one typed sprint context.

Each role is a Protocol with one job; the sprint (``agents.team``) calls the role it holds and
never asks how the role does it. The offline roles (``agents.offline``) work from the knowledge
base and the store; the model-backed roles (``agents.model``) wrap an offline role, ask the
language model first and fall back to the wrapped role. Which ones a team holds is decided
once, when the team is built (:func:`agents.team.Team`): ``Roles`` is that choice.

Adding a role is one Protocol here, one module that implements it, and one row in the sprint's
phase table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from airlab.errors import AirlabError, did_you_mean

if TYPE_CHECKING:
    from airlab.agents.architect import Design
    from airlab.agents.knowledge import Idea
    from airlab.executors.base import Executor
    from airlab.experiment import ExperimentOutcome, Reporter
    from airlab.settings import Settings
    from airlab.spec import Arm, ExperimentSpec
    from airlab.store import Store
    from airlab.store.records import (
        ImplementationRecord,
        Part,
        ProposalRecord,
        SprintRecord,
        ValidationRecord,
    )

from airlab.store.records import Task


class TeamReporter(Protocol):
    """How a sprint shows its phases (the CLI: Rich lines; the library: silent)."""

    def phase(self, sprint: str, phase: str, text: str) -> None: ...

    def runs(self, title: str) -> Reporter: ...


class SilentTeamReporter:
    def phase(self, sprint: str, phase: str, text: str) -> None:
        pass

    def runs(self, title: str) -> Reporter:
        from airlab.experiment import SilentReporter

        return SilentReporter()


@dataclass
class Lab:
    """What every role and sprint shares: the store, the settings, the pool, the ideas (the
    knowledge base and the lab's own), the options every arm of every sprint carries, the
    seed, the reporter and the task a sprint studies unless its request names another."""

    store: Store
    settings: Settings
    executor: Executor
    ideas: dict[str, Idea]
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    workers: int = 2
    reporter: TeamReporter = field(default_factory=SilentTeamReporter)
    model_ideas: dict[str, Idea] = field(default_factory=dict)  # ideas the model wrote
    task: Task = field(default_factory=Task)
    idea_sources: dict[str, str] = field(default_factory=dict)  # idea -> file:line

    def idea(self, name: str) -> Idea:
        """An idea of the knowledge base or one the model wrote; AirlabError if unknown."""
        if name in self.model_ideas:
            return self.model_ideas[name]
        if name not in self.ideas:
            raise AirlabError(f"--idea: unknown idea '{name}'", did_you_mean(name, self.ideas))
        return self.ideas[name]


@dataclass
class SprintContext:
    """One sprint as the roles see it: where it is stored, its record so far and its box."""

    lab: Lab
    session: str
    number: int
    record: SprintRecord
    deadline: float  # epoch seconds: no run starts after it, model phases share it
    skipped: dict[str, str] = field(default_factory=dict)  # ideas that do not apply, and why

    @property
    def label(self) -> str:
        return f"{self.session} #{self.number}"

    @property
    def key(self) -> str:
        """SESSION:NUMBER (how stored model calls name their sprint)."""
        return f"{self.session}:{self.number}"

    @property
    def kind(self) -> str:
        return self.record.kind

    @property
    def base(self) -> Part:
        """The recipe the sprint builds on (the default configuration at first)."""
        return self.record.request.base

    def left(self) -> float:
        """Seconds left in the box."""
        return self.deadline - time.time()

    def say(self, phase: str, text: str) -> None:
        self.lab.reporter.phase(self.label, phase, text)


@dataclass(frozen=True)
class Draft:
    """What a sprint kind asks the Architect to size: the arms and what they are tested on.
    The Architect chooses the seeds (unless given) and the budget that fits the box.
    ``tokens`` is the budget per run in ``unit`` (tokens for charlm, samples for vision)."""

    name: str
    baseline: Arm
    arms: list[Arm]
    tokens: float
    minutes: float
    hypothesis: str
    workload: str = "charlm"
    preset: str = "tiny"
    dataset: str = "pycode"
    unit: str = "tokens"
    area: str = "general"
    idea: str | None = None
    effect: float | None = None
    seeds: tuple[int, ...] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    fixed_budget: bool = True
    target: float | None = None


IsBase = Callable[[str, Mapping[str, Any]], bool]


class ResearcherRole(Protocol):
    """Proposes the idea an explore sprint tests, and hears how it did."""

    def propose(self, ctx: SprintContext, is_base: IsBase) -> ProposalRecord: ...

    def tell(self, ctx: SprintContext, proposal: ProposalRecord,
             validation: ValidationRecord) -> None: ...


class ArchitectRole(Protocol):
    """Sizes a kind's draft into a spec that fits the box and passes `airlab check`."""

    def design(self, ctx: SprintContext, draft: Draft) -> Design: ...


class CoderRole(Protocol):
    """Builds every arm of the spec; ``None``: the idea cannot be implemented (the sprint goes
    back to its ideas phase)."""

    def check_idea(self, idea: Idea) -> None: ...

    def implement(self, ctx: SprintContext, spec: ExperimentSpec
                  ) -> tuple[ExperimentSpec, ImplementationRecord] | None: ...


class ValidatorRole(Protocol):
    """Rates the experiment and reads each arm's result (``outcome``: what the pipeline already
    analysed and rated, passed on; None on a resumed sprint)."""

    def validate(self, ctx: SprintContext, spec: ExperimentSpec,
                 outcome: ExperimentOutcome | None) -> ValidationRecord: ...


@dataclass(frozen=True)
class Roles:
    """The team's four roles, chosen once when the team is built."""

    researcher: ResearcherRole
    architect: ArchitectRole
    coder: CoderRole
    validator: ValidatorRole
    source: str = "offline"  # or the model's name
