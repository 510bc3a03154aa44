"""What the model-backed roles of one team share: the language model, the sprint's notes of what
came from it, the rule that one failure sends the rest of the sprint offline, and each role's
share of the sprint's time box and completion cap.

Every question goes through :meth:`ModelSeat.ask`: it sends the role's completion cap (sized to
the role's answer schema unless ``AIRLAB_LLM_MAX_TOKENS`` sets one for all), bounds the answer
by the role's share of the box (a role that cannot answer within it falls back to its offline
role at once), and records the seconds it took in the sprint's box.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from airlab.agents.llm import LLMBackend, LLMUnavailable
from airlab.store.records import ModelNotes

if TYPE_CHECKING:
    from airlab.agents.roles import Lab, SprintContext

M = TypeVar("M", bound=BaseModel)

# Share of the sprint's time box each role may spend waiting for the model: the rest is for
# the runs. A role past its share falls back to its offline role.
BOX_SHARE = {"researcher": 0.15, "architect": 0.05, "coder": 0.15, "validator": 0.05}
# Completion cap per role, sized to its answer schema (tokens): one to three ideas of about
# 300 tokens each; two arms; one technique module; eight critique lines.
COMPLETION_CAP = {"researcher": 1200, "architect": 300, "coder": 2000, "validator": 500}
MIN_SHARE_S = 5.0  # a share shorter than this is no time to answer in


def tag(role: str) -> str:
    """The marker each role's system prompt starts with (servers and logs can tell roles
    apart; the scripted test server routes answers by it)."""
    return f"[airlab:{role}]"


def one_line(text: object, limit: int = 400) -> str:
    s = " ".join(str(text).split())
    return s[:limit] + ("..." if len(s) > limit else "")


class ModelSeat:
    """The language model as the team's roles use it, with the state of the current sprint
    (``ctx.record.llm``: which parts came from the model, warnings, why it went offline)."""

    def __init__(self, llm: LLMBackend, lab: Lab, *, allow_unsafe: bool = False) -> None:
        self.llm = llm
        self.lab = lab
        self.allow_unsafe = allow_unsafe
        self.replay_of: str | None = getattr(llm, "replay_of", None)
        self.replaying: str | None = getattr(llm, "replay_experiment", None)
        self._ctx: SprintContext | None = None
        if getattr(llm, "recorder", False) is None:  # a live client without a recorder
            llm.recorder = self._save  # type: ignore[attr-defined]

    @property
    def model(self) -> str:
        return self.llm.model

    def _save(self, rec: Any) -> None:
        from airlab.store.calls import save_call

        ctx = self._ctx
        save_call(self.lab.store, ctx.session if ctx else "", ctx.key if ctx else "", rec)

    def notes(self, ctx: SprintContext) -> ModelNotes:
        """The sprint's notes of what came from the model (made on first use, kept on resume)."""
        self._ctx = ctx
        rec = ctx.record
        if rec.llm is None:
            lab = self.lab
            rec.llm = ModelNotes(self.llm.model, ctx.key, team={
                "seed": lab.seed, "options": dict(lab.options), "workers": lab.workers},
                replay_of=self.replay_of)
        return rec.llm

    def active(self, ctx: SprintContext) -> bool:
        return self.notes(ctx).offline is None

    def warn(self, ctx: SprintContext, reason: str) -> None:
        """One line, then offline for the rest of the sprint."""
        notes = self.notes(ctx)
        reason = one_line(reason)
        notes.offline = reason
        notes.warnings.append(reason)
        ctx.say("warning", f"language model unavailable, continuing offline: {reason}")

    def share_s(self, ctx: SprintContext, role: str) -> float:
        """Seconds the role may still wait for the model in this sprint: its share of the box
        less what it already waited, within what is left of the box."""
        box = ctx.record.request.minutes * 60.0
        spent = ctx.record.box.get(f"model.{role}", 0.0)
        return min(BOX_SHARE.get(role, 0.05) * box - spent, ctx.left())

    def ask(self, ctx: SprintContext, role: str, system: str, user: str, schema: type[M]) -> M:
        """One question to the model (repairs included), bounded by the role's share of the box
        and capped at the role's completion size. LLMUnavailable when no usable answer came."""
        self.notes(ctx)
        limit = self.share_s(ctx, role)
        if limit < MIN_SHARE_S:
            raise LLMUnavailable(f"{role}: {max(limit, 0):.0f} s of its share of the time box "
                                 "left, too little to wait for an answer")
        t0 = time.monotonic()
        try:
            return self.llm.ask(role, system, user, schema,
                                max_tokens=COMPLETION_CAP.get(role), time_limit=limit)
        finally:
            box = ctx.record.box
            key = f"model.{role}"
            box[key] = round(box.get(key, 0.0) + time.monotonic() - t0, 3)

    def bound(self, ctx: SprintContext) -> LLMBackend:
        """The model as a plain backend whose questions go through :meth:`ask` for ``ctx``."""
        return _Bound(self, ctx)


class _Bound:
    def __init__(self, seat: ModelSeat, ctx: SprintContext) -> None:
        self.seat, self.ctx, self.model = seat, ctx, seat.model

    def ask(self, role: str, system: str, user: str, schema: type[M], **_: Any) -> M:
        return self.seat.ask(self.ctx, role, system, user, schema)
