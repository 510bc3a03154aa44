"""Replay: a sprint again from the model answers it stored, with no server.

``airlab sprint --replay ID`` builds the team with a :class:`~airlab.agents.llm.ReplayClient`
over the sprint's stored calls (:func:`replay_backend`) and runs a new sprint of session
``replay`` at the original's seeds and budget; :func:`compare_sprints` says what differs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from airlab.agents.answers import AnswerError, parse_answer
from airlab.agents.llm import LLMUnavailable
from airlab.errors import AirlabError
from airlab.store.calls import CallRecord

if TYPE_CHECKING:
    from airlab.store import Store
    from airlab.store.records import SprintRecord
    from airlab.store.team import SprintRow
M = TypeVar("M", bound=BaseModel)


class ReplayClient:
    """Answers ``ask`` from stored CallRecords, in order per role, with no server.

    The records of one role are split into questions at ``attempt == 1``; each ``ask`` takes
    the next question and returns its last answer that passed the schema (parsed again with the
    given schema), or raises LLMUnavailable as the live call did. ``mismatches`` lists roles
    whose prompt differs from the recorded one (the sprint is not replaying the same questions).
    """

    def __init__(self, records: Sequence[CallRecord | Mapping[str, Any]], *,
                 replay_of: str | None = None, replay_experiment: str | None = None) -> None:
        """``replay_of``: the sprint the records came from (SESSION:NUMBER);
        ``replay_experiment``: its experiment (its runs are no duplicate of the replay's)."""
        recs = [r if isinstance(r, CallRecord) else CallRecord.from_dict(r) for r in records]
        self.replay_of = replay_of
        self.replay_experiment = replay_experiment
        self._questions: dict[str, deque[list[CallRecord]]] = {}
        for r in recs:
            q = self._questions.setdefault(r.role, deque())
            if r.attempt <= 1 or not q:
                q.append([r])
            else:
                q[-1].append(r)
        self.model = recs[0].model if recs else "replay"
        self.mismatches: list[str] = []

    def ask(self, role: str, system: str, user: str, schema: type[M], *,
            max_tokens: int | None = None, time_limit: float | None = None) -> M:
        q = self._questions.get(role)
        if not q:
            raise LLMUnavailable(f"{role}: the recording has no more answers for this role")
        group = q.popleft()
        first = group[0].messages
        if len(first) >= 2 and first[1].get("content") != user:
            self.mismatches.append(role)
        for rec in reversed(group):
            if rec.parsed_ok and rec.response is not None:
                try:
                    return parse_answer(rec.response, schema)
                except AnswerError as e:
                    raise LLMUnavailable(f"{role}: the recorded answer no longer fits the "
                                         f"schema: {e}") from None
        raise LLMUnavailable(f"{role}: (recorded) {group[-1].error or 'no valid answer'}")


def find_sprint(store: Store, ref: str) -> SprintRow:
    """The stored sprint ``ref`` names: its row id, or SESSION:NUMBER. AirlabError if none."""
    from airlab.store import team as team_store

    ref = str(ref).strip()
    row = None
    if ref.isdigit():
        row = team_store.sprint_by_id(store, int(ref))
    else:
        session, _, num = ref.rpartition(":")
        if session and num.isdigit():
            row = team_store.get_sprint(store, session, int(num))
        else:
            raise AirlabError(f"--replay: '{ref}' is not a sprint id or SESSION:NUMBER",
                              "e.g. --replay sprints:1 (see `airlab sprint --list`)")
    if row is None:
        raise AirlabError(f"--replay: no sprint '{ref}' in the store",
                          "see `airlab sprint --list`")
    return row


def replay_backend(store: Store, row: SprintRow) -> ReplayClient:
    """A ReplayClient over the calls the sprint ``row`` stored (AirlabError if it has none)."""
    from airlab.store.calls import load_calls

    calls = load_calls(store, sprint=row.key)
    if not calls:
        raise AirlabError(f"--replay: sprint {row.key} stored no model calls",
                          "only a sprint run with a language model can be replayed")
    return ReplayClient(calls, replay_of=row.key, replay_experiment=row.experiment)


def compare_sprints(a: SprintRecord, b: SprintRecord) -> list[str]:
    """What differs between two sprint records in ideas, spec (its name aside) and generated
    code: empty when the replay reproduced the original."""
    diffs = []
    pa, pb = a.proposal, b.proposal
    if (pa and pa.idea) != (pb and pb.idea):
        diffs.append(f"idea: {pa and pa.idea} vs {pb and pb.idea}")
    if (pa and pa.llm_idea or None) != (pb and pb.llm_idea or None):
        diffs.append("the model's idea text differs")
    sa = {k: v for k, v in (a.spec.to_dict() if a.spec else {}).items() if k != "name"}
    sb = {k: v for k, v in (b.spec.to_dict() if b.spec else {}).items() if k != "name"}
    for k in sorted(set(sa) | set(sb)):
        if sa.get(k) != sb.get(k):
            diffs.append(f"spec.{k}: {sa.get(k)!r} vs {sb.get(k)!r}")
    ca = ((a.llm.code if a.llm else None) or {}).get("sha256")
    cb = ((b.llm.code if b.llm else None) or {}).get("sha256")
    if ca != cb:
        diffs.append(f"generated code: {ca} vs {cb}")
    return diffs
