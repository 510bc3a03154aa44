"""`airlab llm check`: one tiny request per role, to see before a sprint whether the model
answers in time and in each role's schema.

Each role's question is its real system prompt and answer schema with a tiny task, sent once
(no repair round, no retry), with the role's completion cap; the report is each role's latency,
completion tokens and whether the answer passed its schema (and why not).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airlab.agents.llm import LLMClient, LLMUnavailable
from airlab.agents.model.seat import COMPLETION_CAP, tag

if TYPE_CHECKING:
    from pydantic import BaseModel

    from airlab.agents.llm import LLMSettings
    from airlab.store.calls import CallRecord


@dataclass(frozen=True)
class RoleCheck:
    role: str
    passed: bool
    latency_s: float  # of the one request (0 when none was answered)
    completion_tokens: int
    cap: int | None  # the completion cap sent
    error: str = ""


def _questions() -> list[tuple[str, str, str, type[BaseModel]]]:
    from airlab.agents.model.architect import ARCHITECT_SYSTEM, MAX_EXTRA_ARMS, ArchitectAnswer
    from airlab.agents.model.coder import CODER_SYSTEM, CodeAnswer
    from airlab.agents.model.researcher import RESEARCHER_SYSTEM, ResearchAnswer
    from airlab.agents.model.validator import VALIDATOR_SYSTEM, CritiqueAnswer

    design = {"baseline": {"name": "baseline", "use": [], "options": {}},
              "arms": [{"name": "rope", "use": ["rope"], "options": {}}], "seeds": [0, 1, 2],
              "budget": {"tokens": 4000}, "hypothesis": "Rotary positions lower val_loss."}
    stats = {"experiment": "check", "rating": 5, "band": "suggestive", "seeds": [0, 1, 2],
             "arms_vs_baseline": {"rope": {"verdict": "better", "ratio": 1.2, "ci_low": 0.9,
                                           "ci_high": 1.6}}}
    return [
        ("researcher", RESEARCHER_SYSTEM.format(tag=tag("researcher")),
         "Propose exactly one new idea on a registered switch (for example swiglu) and choose "
         "it. Keep every text field to one short sentence.", ResearchAnswer),
        ("architect", ARCHITECT_SYSTEM.format(tag=tag("architect"), n=MAX_EXTRA_ARMS),
         f"The design: {json.dumps(design)}\nAnswer with no extra arm if the design is "
         "enough.", ArchitectAnswer),
        ("coder", CODER_SYSTEM.format(tag=tag("coder")),
         "Switch name: check_scale\nIdea: scale every 2-D weight by 0.9 at initialization.",
         CodeAnswer),
        ("validator", VALIDATOR_SYSTEM.format(tag=tag("validator")),
         f"The statistics: {json.dumps(stats)}", CritiqueAnswer),
    ]


def check_roles(settings: LLMSettings, roles: tuple[str, ...] | None = None
                ) -> list[RoleCheck]:
    """One request per role (``roles``: a subset) to the model ``settings`` name."""
    once = dataclasses.replace(settings, repair_rounds=0, max_retries=0)
    out: list[RoleCheck] = []
    for role, system, user, schema in _questions():
        if roles is not None and role not in roles:
            continue
        calls: list[CallRecord] = []
        client = LLMClient(once, recorder=calls.append)
        cap = once.max_tokens if once.max_tokens is not None else COMPLETION_CAP.get(role)
        error = ""
        try:
            client.ask(role, system, user, schema, max_tokens=cap)
        except LLMUnavailable as e:
            error = e.reason
        finally:
            client.close()
        last: Any = calls[-1] if calls else None
        out.append(RoleCheck(role, not error, float(last.latency_s) if last else 0.0,
                             int(last.completion_tokens) if last else 0, cap, error))
    return out
