"""Stored model calls: every request the LLM team made, with what came back and what it cost.

One row per HTTP call (:class:`CallRecord`) in the ``llm_calls`` table, tagged with
the ``session`` (an ``auto`` session, or the sprint alone) and the ``sprint`` it belongs to, so
``airlab sprint --replay ID`` can answer the same questions from the stored answers with no
server, and a post can say which model answered and how many tokens it took.

The table shares ``tables.metadata`` (a Store opened writable after this module is imported
creates it with the others) and is also created on first use, so a database made before it
existed gains it when the first call is stored. The record type is the store's (the LLM
client builds records, this module keeps them); ``save_call`` takes one or its dict. Like
``verdicts.py``, this module imports no ``Store`` at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
)

from airlab.store.tables import metadata

if TYPE_CHECKING:
    from airlab.store.store import Store

llm_calls = Table(
    "llm_calls", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session", String(200), nullable=False, default=""),
    Column("sprint", String(200), nullable=False, default=""),
    Column("role", String(100), nullable=False),
    Column("model", String(200), nullable=False),
    Column("temperature", Float, nullable=False),
    Column("seed", BigInteger, nullable=True),
    Column("messages", JSON, nullable=False),  # the request's chat messages, in order
    Column("response", Text, nullable=True),  # the answer text; NULL when the call failed
    Column("parsed_ok", Boolean, nullable=False),
    Column("error", Text, nullable=True),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("latency_s", Float, nullable=False, default=0.0),
    Column("attempt", Integer, nullable=False),  # HTTP call number within one question
    Column("at", Float, nullable=False),  # unix time the call started
    Index("ix_llm_calls_sprint", "sprint"),
    Index("ix_llm_calls_session", "session"),
)

@dataclass(frozen=True)
class CallRecord:
    """One HTTP call to the model (or one that failed before an answer came).

    ``attempt`` counts HTTP calls within one ``ask`` from 1 (retries and repair rounds both add
    one), so a record with ``attempt == 1`` starts a new question: replay relies on it.
    ``parsed_ok`` says the answer passed the schema; ``error`` is why not (HTTP failure, bad
    JSON, schema errors, refusal). Token counts are the server's, or estimated at 4 characters
    a token when the server sends no usage.
    """

    role: str
    model: str
    temperature: float
    seed: int | None
    messages: list[dict[str, Any]]
    response: str | None
    parsed_ok: bool
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    attempt: int
    at: float  # unix time the call started

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (what ``airlab.store.calls`` stores)."""
        d = asdict(self)
        d["messages"] = [dict(m) for m in self.messages]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CallRecord:
        """From ``to_dict`` output or a stored row (extra keys such as ``id``, ``session``,
        ``sprint`` are ignored)."""
        seed = d.get("seed")
        return cls(role=str(d["role"]), model=str(d["model"]),
                   temperature=float(d["temperature"]),
                   seed=None if seed is None else int(seed),
                   messages=[dict(m) for m in (d.get("messages") or [])],
                   response=d.get("response"), parsed_ok=bool(d["parsed_ok"]),
                   error=d.get("error"), prompt_tokens=int(d.get("prompt_tokens") or 0),
                   completion_tokens=int(d.get("completion_tokens") or 0),
                   latency_s=float(d.get("latency_s") or 0.0), attempt=int(d["attempt"]),
                   at=float(d.get("at") or 0.0))


_RECORD_COLUMNS = tuple(c.name for c in llm_calls.columns if c.name not in
                        ("id", "session", "sprint"))


def save_call(store: Store, session: str, sprint: str,
              rec: CallRecord | Mapping[str, Any]) -> int:
    """Append one call; returns its row id."""
    d = rec.to_dict() if hasattr(rec, "to_dict") else dict(rec)
    missing = [k for k in _RECORD_COLUMNS if k not in d]
    if missing:
        raise ValueError(f"call record lacks {', '.join(missing)}")
    row = {k: d[k] for k in _RECORD_COLUMNS}
    row["messages"] = [dict(m) for m in row["messages"]]
    with store.writing() as c:
        if not inspect(c).has_table("llm_calls"):
            llm_calls.create(c, checkfirst=True)
        res = c.execute(insert(llm_calls).values(session=str(session or ""),
                                                 sprint=str(sprint or ""), **row))
        key = res.inserted_primary_key
        assert key is not None
        return int(key[0])


def load_calls(store: Store, *, session: str | None = None,
               sprint: str | None = None) -> list[dict[str, Any]]:
    """Stored calls in the order they were made (all, or one session's / sprint's): dicts with
    every ``CallRecord`` field plus ``id``, ``session`` and ``sprint``, ready for
    ``CallRecord.from_dict`` or ``ReplayClient``."""
    q = select(llm_calls).where(*_where(session, sprint)).order_by(llm_calls.c.id)
    with store.reading() as c:
        if not inspect(c).has_table("llm_calls"):  # nothing stored yet (or an older database)
            return []
        return [dict(r._mapping) for r in c.execute(q)]


def token_totals(store: Store, *, session: str | None = None,
                 sprint: str | None = None) -> dict[str, Any]:
    """``{"calls", "prompt_tokens", "completion_tokens", "failed", "models"}`` over the stored
    calls (all, or one session's / sprint's); ``failed`` counts calls with no usable answer,
    ``models`` lists the model names that answered, sorted."""
    out: dict[str, Any] = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
                           "failed": 0, "models": []}
    where = _where(session, sprint)
    with store.reading() as c:
        if not inspect(c).has_table("llm_calls"):
            return out
        n, pt, ct = c.execute(select(func.count(), func.sum(llm_calls.c.prompt_tokens),
                                     func.sum(llm_calls.c.completion_tokens))
                              .where(*where)).one()
        failed = c.execute(select(func.count()).where(*where,
                                                      llm_calls.c.parsed_ok.is_(False))).scalar()
        models = c.execute(select(llm_calls.c.model).where(*where).distinct()).scalars().all()
    out.update(calls=int(n or 0), prompt_tokens=int(pt or 0), completion_tokens=int(ct or 0),
               failed=int(failed or 0), models=sorted(models))
    return out


def _where(session: str | None, sprint: str | None) -> list[Any]:
    w = []
    if session is not None:
        w.append(llm_calls.c.session == str(session))
    if sprint is not None:
        w.append(llm_calls.c.sprint == str(sprint))
    return w
