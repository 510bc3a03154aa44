"""The model-backed Validator: a written critique grounded in the stored statistics.

The offline Validator rates (the rubric) and reads every arm; the model then writes a critique
from the statistics in its prompt. It is stored beside the rubric's verdict, labelled as the
model's, and cannot change the rating; numbers it cites that are not in the statistics are
flagged. Fallback: the offline validation alone.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from airlab.agents.llm import LLMBackend, LLMUnavailable
from airlab.agents.model.seat import one_line as _one_line
from airlab.agents.model.seat import tag

if TYPE_CHECKING:
    from airlab.agents.model.seat import ModelSeat
    from airlab.agents.roles import SprintContext, ValidatorRole
    from airlab.experiment import ExperimentOutcome
    from airlab.spec import ExperimentSpec
    from airlab.store.records import ValidationRecord


# ============================================================================= schema

class CritiqueAnswer(BaseModel):
    """The model's critique of a rated experiment."""

    model_config = ConfigDict(extra="forbid")

    critique: list[str] = Field(min_length=1, max_length=8)
    summary: str = ""

    @field_validator("critique")
    @classmethod
    def _lines(cls, v: list[str]) -> list[str]:
        out = [" ".join(s.split()) for s in v if s.strip()]
        if not out:
            raise ValueError("give at least one critique line")
        return [s[:500] for s in out]



# ============================================================================= asking

VALIDATOR_SYSTEM = """{tag} You are the Validator of airlab. An experiment has been run and
rated by the lab's fixed rubric. Write a short critique of it grounded ONLY in the statistics
given (quote the numbers you rely on): what the evidence supports, what it does not, and what
the next experiment should check. You cannot change the rating."""

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _facts(validation: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("verdict", "quality", "improved", "ratio", "ci_low", "ci_high", "reached", "n",
            "value", "wins")
    arms = {name: {k: r.get(k) for k in keep}
            for name, r in (validation.get("arms") or {}).items()}
    return {"experiment": validation.get("experiment"), "hypothesis": spec.get("hypothesis"),
            "rating": validation.get("rating"), "band": validation.get("band"),
            "seeds": spec.get("seeds"), "budget": spec.get("budget"),
            "arms_vs_baseline": arms, "rubric_critique": validation.get("critique"),
            "prediction": validation.get("prediction")}


def _numbers(text: str) -> list[float]:
    out = []
    for m in _NUMBER.findall(text):
        try:
            out.append(float(m))
        except ValueError:
            continue
    return out


def ungrounded(lines: Sequence[str], facts_text: str) -> list[str]:
    """Numbers the lines cite that appear nowhere in the statistics (to 2 significant digits,
    percentages of ratios included), as written."""
    known = [x for x in _numbers(facts_text) if math.isfinite(x)]

    def close(x: float) -> bool:
        for k in known:
            for cand in (k, k * 100, (k - 1) * 100, (1 - k) * 100):
                if abs(cand - x) <= max(0.01, 0.05 * abs(cand)):
                    return True
        return False

    bad = []
    for line in lines:
        for m in _NUMBER.findall(line):
            x = float(m)
            if abs(x) < 10 and x == int(x):
                continue  # small counts (3 seeds, 2 arms, 1 idea) need no source
            if not close(x):
                bad.append(m)
    return bad


def critique(llm: LLMBackend, validation: Mapping[str, Any], spec: Mapping[str, Any]
             ) -> dict[str, Any]:
    """The model's critique, stored beside the rubric's (``by``: the model). The rating is
    not an input it can change: it is returned as the rubric gave it, for the record."""
    facts = _facts(validation, spec)
    facts_text = json.dumps(facts, default=str, sort_keys=True)
    ans = llm.ask("validator", VALIDATOR_SYSTEM.format(tag=tag("validator")),
                  f"The statistics: {facts_text}", CritiqueAnswer)
    return {"by": llm.model, "label": "the model's critique (does not change the rating)",
            "lines": list(ans.critique), "summary": _one_line(ans.summary, 600),
            "rating_unchanged": validation.get("rating"),
            "ungrounded_numbers": ungrounded([*ans.critique, ans.summary], facts_text)}


# ============================================================================= the role


class ModelValidator:
    """The offline validation, with the model's critique beside it (the rating kept)."""

    def __init__(self, offline: ValidatorRole, seat: ModelSeat) -> None:
        self.offline = offline
        self.seat = seat

    def validate(self, ctx: SprintContext, spec: ExperimentSpec,
                 outcome: ExperimentOutcome | None) -> ValidationRecord:
        from airlab.store.calls import token_totals

        val = self.offline.validate(ctx, spec, outcome)
        seat = self.seat
        notes = seat.notes(ctx)
        if not seat.active(ctx):
            notes.parts.setdefault("validator", "offline")
        else:
            try:
                val.llm_critique = critique(seat.bound(ctx), val.to_json(), spec.to_dict())
                notes.parts["validator"] = "model: critique beside the rubric's (rating kept)"
            except LLMUnavailable as e:
                notes.parts["validator"] = "offline"
                seat.warn(ctx, e.reason)
        # Token counts of the sprint's calls (of the original's, for a replay).
        notes.tokens = token_totals(ctx.lab.store, sprint=seat.replay_of or ctx.key)
        return val
