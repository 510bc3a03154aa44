"""The model-backed Researcher: new ideas from the language model, checked before anything runs.

The model proposes one to three *new* ideas in the knowledge-base schema (:class:`IdeaAnswer`:
a falsifiable prediction, registered switches or ``needs_code`` with a sketch for the Coder).
Each is checked for novelty (same name, a known technique under another name by text
similarity, identical resolved configs already stored) and against the registries; a refused
idea goes back to the model with the reason for :data:`NOVELTY_ROUNDS` more questions.

Fallback: when the model gives nothing usable, the wrapped offline Researcher proposes (one
warning line; the rest of the sprint runs offline). An idea named with ``--idea`` is the
offline Researcher's, except one that needs code, which the model's Coder then writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from airlab.agents.ideas import Area, Aspect, Idea
from airlab.agents.ideas import Implementation as IdeaImplementation
from airlab.agents.llm import LLMBackend, LLMUnavailable
from airlab.agents.model.seat import one_line as _one_line
from airlab.agents.model.seat import tag
from airlab.errors import AirlabError
from airlab.store.records import ProposalRecord

if TYPE_CHECKING:
    from airlab.agents.model.seat import ModelSeat
    from airlab.agents.roles import IsBase, ResearcherRole, SprintContext
    from airlab.settings import Settings
    from airlab.store import Store
    from airlab.store.records import Task, ValidationRecord

NOVELTY_ROUNDS = 2  # extra questions after every proposed idea was rejected (not new, invalid)


# ============================================================================= schema

class PredictionAnswer(BaseModel):
    """A falsifiable forecast on a metric the lab measures (see knowledge.Prediction)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    metric: Literal["val_loss", "time_to_target", "train_seconds"]
    kind: Literal["delta", "ratio"] = "delta"
    direction: Literal["lower", "higher"]
    expected: float
    low: float
    high: float


def _charlm() -> list[Literal["charlm", "vision"]]:
    return ["charlm"]


class IdeaAnswer(BaseModel):
    """One idea as the model writes it; :meth:`to_idea` makes it a knowledge-base Idea (its
    checks run at validation, so their errors go back to the model)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(description="new slug: lowercase letters, digits and '_'")
    title: str
    area: Area
    aspect: Aspect
    pitch: str = Field(description="one sentence ending with a full stop")
    math: str
    why_it_might_work: str
    why_it_might_not: str
    implementation: IdeaImplementation = Field(
        description="registered switches (use) and options, or needs_code: true with the new "
                    "switch name and a sketch of its code")
    prediction: PredictionAnswer
    workloads: list[Literal["charlm", "vision"]] = Field(
        default_factory=_charlm, min_length=1,
        description="the workloads the idea is about")

    @model_validator(mode="after")
    def _valid(self) -> IdeaAnswer:
        from airlab.agents.knowledge import load_ideas
        from airlab.techniques import TECHNIQUES

        known = load_ideas()
        if self.name in known:
            raise ValueError(f"name '{self.name}' is already an idea of the knowledge base: "
                             "propose a new idea under a new name")
        impl = self.implementation
        unknown = [u for u in impl.use if u not in TECHNIQUES]
        if unknown:
            raise ValueError(f"implementation.use: '{unknown[0]}' is not a registered switch "
                             f"(registered: {', '.join(sorted(TECHNIQUES))}); or set "
                             "needs_code: true with a new switch name and a sketch")
        if impl.needs_code and impl.switch in TECHNIQUES:
            raise ValueError(f"implementation.switch: '{impl.switch}' is already registered; "
                             "use it, or name the new switch differently")
        self.to_idea()  # the knowledge base's own checks (pitch, prediction consistency ...)
        return self

    def to_idea(self) -> Idea:
        data = {**self.model_dump(), "tier": 2}
        data["prediction"] = self.prediction.model_dump()
        try:
            return Idea.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"]) or "idea"
            raise ValueError(f"{loc}: {err['msg']}") from None


class ResearchAnswer(BaseModel):
    """The Researcher's answer: one to three new ideas and the one to test now."""

    model_config = ConfigDict(extra="forbid")

    ideas: list[IdeaAnswer] = Field(min_length=1, max_length=3)
    chosen: str = Field(description="the name of the idea to test now")
    reasons: str = Field(min_length=10, description="why that one, in a sentence or two")

    @model_validator(mode="after")
    def _chosen(self) -> ResearchAnswer:
        names = [i.name for i in self.ideas]
        if len(set(names)) != len(names):
            raise ValueError("two ideas have the same name")
        if self.chosen not in names:
            raise ValueError(f"chosen '{self.chosen}' is not one of the ideas ({', '.join(names)})")
        return self



# ============================================================================= asking


@dataclass
class ResearchOutcome:
    """The model's idea for a sprint and how it got there."""

    idea: Idea
    reasons: str
    candidates: list[dict[str, Any]]  # every proposed idea with its novelty and fate
    rejected: list[str] = field(default_factory=list)  # why earlier answers were refused

    def record(self) -> dict[str, Any]:
        """What the sprint stores (plain JSON)."""
        return {"idea": self.idea.model_dump(mode="json"), "reasons": self.reasons,
                "candidates": self.candidates, "rejected": list(self.rejected)}


RESEARCHER_SYSTEM = """{tag} You are the Researcher of airlab, an automated lab that looks for
cheaper ways to train neural networks. Experiments train a small model (the task is given
below: a character-level GPT, workload charlm, or an image classifier, workload vision) over
several seeds against a baseline, and decide with paired statistics. Propose NEW research
ideas that the knowledge base does not already hold (not a known technique under another
name). Each idea either uses switches the lab has
registered (implementation.use, with options) or, for something new, sets needs_code: true with
a new switch name and a sketch of the code a Coder will write as a technique module (hooks on
the model, the optimizer, the loss or each step). Give a falsifiable prediction: metric
(val_loss in nats/token, time_to_target as a speed-up ratio, or train_seconds), direction,
expected size and a range [low, high] that contains it."""


def _research_prompt(ideas: Mapping[str, Idea], *, topic: str | None, area: str | None,
                     tested: Sequence[str], rejected: Sequence[str], task: Task | None = None
                     ) -> str:
    from airlab.techniques import TECHNIQUES

    known = "; ".join(f"{n} ({i.title})" for n, i in sorted(ideas.items()))
    switches = ", ".join(sorted(n for n, t in TECHNIQUES.items()
                                if task is None or task.workload in t.workloads))
    lines = [f"Ideas the knowledge base already has (do not repeat them): {known}.",
             f"Registered switches: {switches}."]
    if task is not None:
        lines.insert(0, f"The task: {task.label()} (workload {task.workload}; give it in the "
                        "idea's workloads).")
    if tested:
        lines.append(f"Leave these ideas out now (tested, or not wanted): {', '.join(tested)}.")
    if topic:
        lines.append(f"Steer toward this topic: {topic}.")
    if area:
        lines.append(f"Stay in the research area '{area}'.")
    if rejected:
        lines.append("Earlier proposals were refused: " + " | ".join(rejected)
                     + ". Propose different ideas.")
    lines.append("Propose one to three new ideas and choose the one to test now.")
    return "\n".join(lines)


def propose_idea(llm: LLMBackend, store: Store, settings: Settings | None, *,
                 ideas: Mapping[str, Idea], topic: str | None = None, area: str | None = None,
                 tested: Sequence[str] = (), rounds: int = NOVELTY_ROUNDS,
                 replaying: str | None = None, task: Task | None = None) -> ResearchOutcome:
    """A new idea from the model, checked for novelty and against the registries before
    anything runs. LLMUnavailable when none is usable after ``rounds`` more questions.
    ``replaying``: the experiment of the sprint being replayed (its runs are no duplicate)."""
    rejected: list[str] = []
    candidates: list[dict[str, Any]] = []
    for _ in range(rounds + 1):
        ans = llm.ask("researcher", RESEARCHER_SYSTEM.format(tag=tag("researcher")),
                      _research_prompt(ideas, topic=topic, area=area, tested=tested,
                                       rejected=rejected, task=task), ResearchAnswer)
        order = sorted(ans.ideas, key=lambda i: i.name != ans.chosen)  # the chosen one first
        picked: Idea | None = None
        for a in order:
            idea = a.to_idea()
            why, nov = _refuse(idea, store, settings, ideas, area, replaying, task)
            candidates.append({"idea": idea.name, "aspect": idea.aspect, "area": idea.area,
                               "expected_value": None, "source": "model",
                               "reasons": [why] if why else [ans.reasons],
                               "novelty": nov, "accepted": why is None and picked is None})
            if why is not None:
                rejected.append(f"{idea.name}: {why}")
            elif picked is None:
                picked = idea
        if picked is not None:
            reasons = ans.reasons if picked.name == ans.chosen else \
                f"{ans.reasons} ({ans.chosen} was refused; {picked.name} was next)"
            return ResearchOutcome(picked, reasons, candidates, rejected)
    raise LLMUnavailable(f"researcher: no new idea after {rounds} more round(s): "
                         f"{rejected[-1] if rejected else 'nothing proposed'}")


def _refuse(idea: Idea, store: Store, settings: Settings | None, ideas: Mapping[str, Idea],
            area: str | None, replaying: str | None = None, task: Task | None = None
            ) -> tuple[str | None, dict[str, Any]]:
    """Why the idea cannot be tested (None: it can) and its novelty record."""
    from airlab.agents.knowledge import check_idea, idea_spec
    from airlab.agents.loopstate import applies
    from airlab.agents.novelty import check_novelty

    if area is not None and idea.area != area:
        return f"it is in area '{idea.area}', not '{area}'", {}
    if idea.name in ideas:
        return f"name '{idea.name}' is already an idea of this lab", {}
    if task is not None and (why := applies(idea, task)) is not None:
        return f"it does not apply to {task.label()}: {why}", {}
    spec = None
    if not idea.needs_code:
        try:
            check_idea(idea, settings)
            spec = idea_spec(idea)
        except AirlabError as e:
            return f"it does not plan: {_one_line(e.message)}", {}
    nov = check_novelty(store, settings, text=idea.text(), spec=spec, arm=idea.name,
                        ideas=ideas)
    d = nov.to_dict()
    if nov.known_as is not None:
        sim = next((s for n, s in nov.similar if n == nov.known_as), None)
        return (f"it is the known idea '{nov.known_as}' under another name"
                + (f" (text similarity {sim:.2f})" if sim is not None else "")), d
    if nov.duplicate_of is not None and nov.duplicate_of != replaying:
        return f"experiment '{nov.duplicate_of}' already ran the same configuration", d
    return None, d


# ============================================================================= the role


class ModelResearcher:
    """Asks the model for a new idea; the offline Researcher when it gives none."""

    def __init__(self, offline: ResearcherRole, seat: ModelSeat) -> None:
        self.offline = offline
        self.seat = seat

    def propose(self, ctx: SprintContext, is_base: IsBase) -> ProposalRecord:
        seat, q = self.seat, ctx.record.request
        parts = seat.notes(ctx).parts
        if q.idea:
            parts["researcher"] = "offline (the idea was given)"
            named = ctx.lab.ideas.get(q.idea)
            if named is not None and named.needs_code and seat.active(ctx):
                # Nothing to choose or tune: the model's Coder writes the switch it needs.
                switch = named.implementation.switch
                return ProposalRecord(
                    "explore", named.name, f"{named.name} was named; it needs code: the "
                    f"model's Coder writes --use_{switch}. Prediction: "
                    f"{named.prediction.text()}", researcher={
                        "candidates": [], "chosen": named.name, "reasons": "named with --idea",
                        "source": "given"})
            return self.offline.propose(ctx, is_base)
        if not seat.active(ctx):
            parts["researcher"] = "offline"
            return self.offline.propose(ctx, is_base)
        try:
            out = propose_idea(seat.bound(ctx), ctx.lab.store, ctx.lab.settings,
                               ideas=ctx.lab.ideas, topic=q.topic, area=q.area,
                               tested=(*q.exclude, *ctx.skipped), replaying=seat.replaying,
                               task=q.task)
        except LLMUnavailable as e:
            parts["researcher"] = "offline"
            seat.warn(ctx, e.reason)
            return self.offline.propose(ctx, is_base)
        idea = out.idea
        parts["researcher"] = "model"
        written = "" if seat.replaying else _write(ctx, idea, seat.model)
        code = f" (needs code: --use_{idea.implementation.switch})" if idea.needs_code else ""
        rejected = f"; refused first: {'; '.join(out.rejected)}" if out.rejected else ""
        return ProposalRecord(
            "explore", idea.name, f"the model ({seat.model}) proposed a new idea, {idea.name}"
            f"{code}: {out.reasons.rstrip('. ')}. Prediction: {idea.prediction.text()}"
            f"{rejected}{written}", researcher={
                "candidates": out.candidates, "chosen": idea.name, "reasons": out.reasons,
                "rejected": out.rejected, "source": "model"},
            source="model", llm_idea=idea.model_dump(mode="json"))

    def tell(self, ctx: SprintContext, proposal: ProposalRecord,
             validation: ValidationRecord) -> None:
        self.offline.tell(ctx, proposal, validation)


def _write(ctx: SprintContext, idea: Idea, model: str) -> str:
    """The model's idea as a file in ``<home>/ideas/model/`` (a person reads and edits it
    there; later sprints read it back as one of the lab's ideas). Returns a note for the
    summary."""
    from airlab.agents.knowledge import MODEL_IDEAS, write_idea

    folder = ctx.lab.settings.home / "ideas" / MODEL_IDEAS
    path = folder / f"{idea.name}.yaml"
    if path.exists():
        return f"; its file {path} is kept as it is"
    try:
        write_idea(folder, idea, f"Proposed by the language model {model} in sprint "
                                 f"{ctx.key}.\nEdit it freely: the lab reads it back as one of "
                                 "its ideas (airlab ideas).")
    except OSError as e:
        return f"; not written to {folder}: {e.strerror or e}"
    return f"; written to {path}"
