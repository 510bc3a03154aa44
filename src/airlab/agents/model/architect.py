"""The model-backed Architect: extra arms from the language model beside the design's.

The offline Architect designs (arms, seeds, budget); the model may add at most
:data:`MAX_EXTRA_ARMS` arms on registered switches (explore sprints only), each kept only if the
spec with it passes ``check_spec`` (the reason is recorded otherwise). Fallback: the offline
design as it is.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airlab.agents.llm import LLMBackend, LLMUnavailable
from airlab.agents.model.seat import one_line as _one_line
from airlab.agents.model.seat import tag
from airlab.errors import AirlabError
from airlab.spec import Arm

if TYPE_CHECKING:
    from airlab.agents.architect import Design
    from airlab.agents.model.seat import ModelSeat
    from airlab.agents.roles import ArchitectRole, Draft, SprintContext
    from airlab.settings import Settings
    from airlab.spec import ExperimentSpec

MAX_EXTRA_ARMS = 2  # the Architect's arms beyond the design (each costs a full set of seeds)


# ============================================================================= schema

class ArmAnswer(Arm):
    """An extra arm as the model writes it: the lab's one arm type, with the model's reason."""

    use: list[str] = Field(default_factory=list, max_length=8)
    why: str = ""


class ArchitectAnswer(BaseModel):
    """Extra arms worth running beside the design's (none is a fine answer)."""

    model_config = ConfigDict(extra="forbid")

    arms: list[ArmAnswer] = Field(default_factory=list, max_length=MAX_EXTRA_ARMS)
    reasons: str = ""



# ============================================================================= asking

ARCHITECT_SYSTEM = """{tag} You are the Architect of airlab. A design for an experiment is
given: its baseline, its arms, seeds and budget. You may add at most {n} extra arms that would
make the experiment more informative (a stronger ablation, a dose of an option), using only the
registered switches and their options. Answer with an empty list of arms when the design is
enough: every arm costs a run per seed."""


def propose_arms(llm: LLMBackend, spec: ExperimentSpec, settings: Settings | None
                 ) -> tuple[list[Arm], list[dict[str, Any]]]:
    """Extra arms from the model, each kept only if the spec with it passes ``check_spec``.
    Returns (accepted arms, every proposed arm with its fate). LLMUnavailable passes up."""
    from airlab.check import check_spec
    from airlab.spec import ExperimentSpec
    from airlab.techniques import TECHNIQUES

    switches = "; ".join(f"{n}: {t.help}" for n, t in sorted(TECHNIQUES.items()))
    design = {"baseline": spec.baseline.model_dump(), "arms": [a.model_dump() for a in spec.arms],
              "seeds": spec.seeds, "budget": spec.budget, "hypothesis": spec.hypothesis}
    user = (f"The design: {json.dumps(design, default=str)}\n"
            f"Registered switches: {switches}")
    ans = llm.ask("architect", ARCHITECT_SYSTEM.format(tag=tag("architect"), n=MAX_EXTRA_ARMS),
                  user, ArchitectAnswer)
    accepted: list[Arm] = []
    fates: list[dict[str, Any]] = []
    taken = {a.name for a in spec.all_arms}
    data = spec.to_dict()
    for a in ans.arms:
        fate: dict[str, Any] = {"name": a.name, "use": list(a.use), "options": dict(a.options),
                                "why": a.why}
        if a.name in taken:
            fate["rejected"] = f"arm name '{a.name}' is taken"
            fates.append(fate)
            continue
        arm = Arm(name=a.name, use=list(a.use), options=dict(a.options),
                  description=f"the model's arm: {a.why}"[:200])
        trial = {**data, "arms": [*data["arms"], arm.model_dump()]}
        try:
            cand = ExperimentSpec.model_validate(trial)
            problems = check_spec(cand, settings=settings)
        except ValidationError as e:
            problems = [AirlabError(_one_line(e.errors()[0]["msg"]))]
        except AirlabError as e:
            problems = [e]
        if problems:
            fate["rejected"] = _one_line(problems[0].message)
        else:
            fate["accepted"] = True
            accepted.append(arm)
            taken.add(a.name)
            data = trial
        fates.append(fate)
    return accepted, fates


# ============================================================================= the role


class ModelArchitect:
    """The offline design, with the model's extra arms that pass ``check_spec``."""

    def __init__(self, offline: ArchitectRole, seat: ModelSeat) -> None:
        self.offline = offline
        self.seat = seat

    def design(self, ctx: SprintContext, draft: Draft) -> Design:
        from airlab.spec import ExperimentSpec

        design = self.offline.design(ctx, draft)
        seat = self.seat
        notes = seat.notes(ctx)
        if ctx.kind != "explore" or not seat.active(ctx):
            notes.parts.setdefault("architect", "offline")
            return design
        try:
            accepted, fates = propose_arms(seat.bound(ctx), design.spec, ctx.lab.settings)
        except LLMUnavailable as e:
            notes.parts["architect"] = "offline"
            seat.warn(ctx, e.reason)
            return design
        notes.parts["architect"] = (f"model: {len(accepted)} extra arm(s) of {len(fates)} "
                                    "proposed")
        notes.arms = fates
        lines = list(design.notes)
        for f in fates:
            lines.append(f"the model's arm {f['name']}: " + ("added" if f.get("accepted")
                                                            else f"refused: {f['rejected']}"))
        if not accepted:
            return dataclasses.replace(design, notes=lines)
        data = design.spec.to_dict()
        data["arms"] = [*data["arms"], *(a.model_dump() for a in accepted)]
        lines.append("the model's arms add runs beyond the time-box estimate")
        return dataclasses.replace(design, spec=ExperimentSpec.model_validate(data), notes=lines)
