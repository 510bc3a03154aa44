"""The LLM backend against a real HTTP chat server (tests/agents/chat_server.py), the call
store on real SQLite, and replay with the server stopped."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from chat_server import ChatServer, drop, json_reply, refusal, reply, slow, status
from pydantic import BaseModel, ConfigDict

from airlab.agents.answers import AnswerError, extract_json, parse_answer
from airlab.agents.llm import (
    LLMClient,
    LLMSettings,
    LLMUnavailable,
    TokenBudget,
    normalize_base_url,
)
from airlab.agents.replay import ReplayClient
from airlab.errors import AirlabError
from airlab.store import Store
from airlab.store.calls import CallRecord, load_calls, save_call, token_totals

# The optional extra (in dev); imported here so timed tests do not pay for the first import.
pytest.importorskip("openai")


class Idea(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str
    expected: float
    tags: list[str] = []


GOOD = {"title": "muon for the hidden matrices", "expected": 0.9, "tags": ["optimizers"]}


def client(settings: LLMSettings, **kw: Any) -> tuple[LLMClient, list[CallRecord]]:
    records: list[CallRecord] = []
    return LLMClient(settings, recorder=records.append, **kw), records


def bodies(srv: ChatServer) -> list[dict[str, Any]]:
    return [r["body"] for r in srv.requests()]


# -- answers and repairs ------------------------------------------------------------------------

def test_valid_answer_records_the_call(chat_server: ChatServer, llm_settings: Any) -> None:
    chat_server.script(json_reply(GOOD, prompt_tokens=120, completion_tokens=17))
    c, recs = client(llm_settings(temperature=0.3, seed=7))
    got = c.ask("researcher", "You propose ideas.", "Propose one idea.", Idea)
    assert got == Idea(**GOOD)
    (body,) = bodies(chat_server)
    assert body["model"] == "scripted-model" and body["temperature"] == 0.3
    assert body["seed"] == 7 and body["response_format"] == {"type": "json_object"}
    assert '"expected"' in body["messages"][0]["content"]  # the schema is in the prompt
    assert chat_server.requests()[0]["auth"] == "Bearer test-key"
    (r,) = recs
    assert (r.role, r.model, r.temperature, r.seed, r.attempt) == \
        ("researcher", "scripted-model", 0.3, 7, 1)
    assert r.parsed_ok and r.error is None and json.loads(r.response or "") == GOOD
    assert (r.prompt_tokens, r.completion_tokens) == (120, 17)
    assert r.messages == body["messages"] and r.latency_s > 0 and r.at <= time.time()


def test_malformed_json_is_repaired(chat_server: ChatServer, llm_settings: Any) -> None:
    chat_server.script(reply('{"title": "muon", "expected": 0.9'),  # cut off
                       reply('{"title": "muon", "expected": "high"}'),  # wrong type
                       json_reply(GOOD))
    c, recs = client(llm_settings())
    assert c.ask("researcher", "sys", "idea please", Idea) == Idea(**GOOD)
    assert [r.parsed_ok for r in recs] == [False, False, True]
    assert [r.attempt for r in recs] == [1, 2, 3]
    assert "JSON is invalid" in (recs[0].error or "")
    assert "expected" in (recs[1].error or "")  # names the field that failed
    third = bodies(chat_server)[2]["messages"]
    # The conversation carries each bad answer and what was wrong with it.
    assert [m["role"] for m in third] == ["system", "user", "assistant", "user", "assistant",
                                          "user"]
    assert third[4]["content"] == '{"title": "muon", "expected": "high"}'
    assert "expected" in third[5]["content"] and "corrected JSON" in third[5]["content"]


def test_answers_wrapped_in_prose_fences_or_thinking_parse_without_repair(
        chat_server: ChatServer, llm_settings: Any) -> None:
    js = json.dumps(GOOD)
    chat_server.script(reply(f"Sure! Here is the idea:\n```json\n{js}\n```\nHope it helps."),
                       reply(f"<think>maybe {{not json}} here</think>\n{js}"),
                       reply('Answer: {"title": "muon for the hidden matrices", '
                             '"expected": 0.9, "tags": ["optimizers"],}'),
                       reply("{'title': 'muon for the hidden matrices', 'expected': 0.9, "
                             "'tags': ['optimizers']}"),
                       json_reply({"idea": GOOD}))
    c, recs = client(llm_settings())
    for _ in range(5):
        assert c.ask("researcher", "sys", "u", Idea) == Idea(**GOOD)
    assert all(r.parsed_ok for r in recs) and len(recs) == 5


def test_repairs_run_out(chat_server: ChatServer, llm_settings: Any) -> None:
    chat_server.script(*[reply("no idea, sorry")] * 3)
    c, recs = client(llm_settings(repair_rounds=2))
    with pytest.raises(LLMUnavailable) as e:
        c.ask("coder", "sys", "u", Idea)
    assert e.value.reason.startswith("coder: no valid answer after 2 repair round(s)")
    assert "\n" not in e.value.reason
    assert len(recs) == 3 and not any(r.parsed_ok for r in recs)


def test_refusal_goes_through_repair(chat_server: ChatServer, llm_settings: Any) -> None:
    chat_server.script(refusal("I cannot help with training models."), json_reply(GOOD))
    c, recs = client(llm_settings())
    assert c.ask("researcher", "sys", "u", Idea) == Idea(**GOOD)
    assert recs[0].error == "the model refused: I cannot help with training models."
    assert recs[0].response == "I cannot help with training models." and recs[1].parsed_ok

    chat_server.script(refusal("no"), reply("I'm sorry, I can't do that."))
    c, recs = client(llm_settings(repair_rounds=1))
    with pytest.raises(LLMUnavailable, match="no JSON object"):
        c.ask("researcher", "sys", "u", Idea)
    assert [r.error for r in recs] == ["the model refused: no",
                                       "no JSON object found in the answer"]


# -- transport failures -------------------------------------------------------------------------

def test_slow_reply_times_out_and_is_retried(chat_server: ChatServer,
                                             llm_settings: Any) -> None:
    chat_server.script(slow(3.0, json_reply({"title": "late", "expected": 1.0})),
                       json_reply(GOOD))
    c, recs = client(llm_settings(timeout_s=0.5))
    t0 = time.monotonic()
    assert c.ask("researcher", "sys", "u", Idea) == Idea(**GOOD)
    assert time.monotonic() - t0 < 2.5  # did not wait for the slow answer
    assert recs[0].error == "no answer within 0.5 s" and recs[0].response is None
    assert 0.4 < recs[0].latency_s < 2.0
    assert recs[1].parsed_ok and recs[1].attempt == 2


def test_dropped_connection_is_retried(chat_server: ChatServer, llm_settings: Any) -> None:
    chat_server.script(drop(), json_reply(GOOD))
    c, recs = client(llm_settings())
    assert c.ask("researcher", "sys", "u", Idea) == Idea(**GOOD)
    assert "connection failed" in (recs[0].error or "") and recs[1].parsed_ok


def test_429_waits_for_retry_after(chat_server: ChatServer, llm_settings: Any) -> None:
    chat_server.script(status(429, retry_after=0.4), json_reply(GOOD))
    c, recs = client(llm_settings())
    assert c.ask("researcher", "sys", "u", Idea) == Idea(**GOOD)
    first, second = (r["at"] for r in chat_server.requests())
    assert second - first >= 0.4
    assert (recs[0].error or "").startswith("HTTP 429")


def test_retry_after_is_capped(chat_server: ChatServer, llm_settings: Any) -> None:
    chat_server.script(status(429, retry_after=3600), json_reply(GOOD))
    c, _ = client(llm_settings(max_backoff_s=0.2))
    t0 = time.monotonic()
    assert c.ask("researcher", "sys", "u", Idea) == Idea(**GOOD)
    assert time.monotonic() - t0 < 2.0


def test_500_then_success_and_500_until_giving_up(chat_server: ChatServer,
                                                   llm_settings: Any) -> None:
    chat_server.script(status(500), status(503), json_reply(GOOD))
    c, recs = client(llm_settings(max_retries=2))
    assert c.ask("researcher", "sys", "u", Idea) == Idea(**GOOD)
    assert [r.attempt for r in recs] == [1, 2, 3] and recs[2].parsed_ok

    chat_server.script(*[status(500)] * 3)
    recs.clear()
    with pytest.raises(LLMUnavailable) as e:
        c.ask("researcher", "sys", "u", Idea)
    assert "failed 3 time(s): HTTP 500" in e.value.reason
    assert len(recs) == 3 and len(chat_server.requests()) == 6


def test_unsupported_json_mode_falls_back(chat_server: ChatServer, llm_settings: Any) -> None:
    chat_server.json_mode(False)
    chat_server.script(json_reply(GOOD), json_reply(GOOD))
    c, recs = client(llm_settings(response_format="json_schema"))
    assert c.ask("researcher", "sys", "u", Idea) == Idea(**GOOD)
    assert c.ask("researcher", "sys", "u", Idea) == Idea(**GOOD)
    sent = [b.get("response_format", {}).get("type") for b in bodies(chat_server)]
    # json_schema and json_object refused once each; the client remembers and stops asking.
    assert sent == ["json_schema", "json_object", None, None]
    assert [r.parsed_ok for r in recs] == [False, False, True, True]


def test_refused_key_gives_up_at_once(chat_server: ChatServer, llm_settings: Any) -> None:
    chat_server.script(status(401))
    c, recs = client(llm_settings())
    with pytest.raises(LLMUnavailable, match="AIRLAB_LLM_API_KEY"):
        c.ask("researcher", "sys", "u", Idea)
    assert len(recs) == 1 and len(chat_server.requests()) == 1


def test_stopped_server_is_unavailable_fast(chat_server: ChatServer,
                                            llm_settings: Any) -> None:
    settings = llm_settings(max_retries=3)
    chat_server.stop()
    c, recs = client(settings)
    t0 = time.monotonic()
    with pytest.raises(LLMUnavailable) as e:
        c.ask("researcher", "sys", "u", Idea)
    assert time.monotonic() - t0 < 3.0
    assert "failed 4 time(s): connection failed" in e.value.reason
    assert settings.base_url in e.value.reason
    assert len(recs) == 4 and all(r.response is None for r in recs)


def test_a_question_stops_at_its_time_limit_retries_included(chat_server: ChatServer,
                                                              llm_settings: Any) -> None:
    # The rule behind a role's share of the time box (the sprint-level test is slow):
    # the request waits at most what is left, and no retry starts after the limit.
    chat_server.script(slow(30.0, json_reply(GOOD)))
    c, recs = client(llm_settings(timeout_s=20.0, max_retries=3))
    t0 = time.monotonic()
    with pytest.raises(LLMUnavailable, match="within its 1 s share of the time box"):
        c.ask("researcher", "sys", "u", Idea, time_limit=1.0)
    assert 0.9 < time.monotonic() - t0 < 3.0  # not the 20-s timeout, not the 30-s answer
    assert len(chat_server.requests()) == 1 and len(recs) == 1 and recs[0].response is None


# -- token budget -------------------------------------------------------------------------------

def test_budget_spent_stops_asking(chat_server: ChatServer, llm_settings: Any) -> None:
    chat_server.script(json_reply(GOOD, prompt_tokens=80, completion_tokens=30),
                       json_reply(GOOD))
    budget = TokenBudget(total=100)
    c, recs = client(llm_settings(), budget=budget)
    assert c.ask("researcher", "sys", "u", Idea) == Idea(**GOOD)
    assert budget.used == 110 and budget.left() == 0
    with pytest.raises(LLMUnavailable, match="token budget of 100 tokens is spent"):
        c.ask("researcher", "sys", "u", Idea)
    assert len(chat_server.requests()) == 1 and len(recs) == 1


def test_budget_counts_estimated_tokens_without_usage(chat_server: ChatServer,
                                                      llm_settings: Any) -> None:
    chat_server.script(json_reply(GOOD, usage=False))
    budget = TokenBudget()
    c, recs = client(llm_settings(), budget=budget)
    c.ask("researcher", "sys", "u", Idea)
    assert recs[0].completion_tokens == -(-len(json.dumps(GOOD)) // 4)
    assert recs[0].prompt_tokens > 0 and budget.used == recs[0].prompt_tokens + \
        recs[0].completion_tokens and budget.left() is None


# -- storing and replaying ----------------------------------------------------------------------

def test_calls_are_stored_and_replayed_with_the_server_stopped(
        chat_server: ChatServer, llm_settings: Any, db_url: str) -> None:
    store = Store(db_url)
    ideas = [{"title": f"idea {i}", "expected": float(i), "tags": []} for i in range(3)]
    chat_server.script(status(429, retry_after=0), json_reply(ideas[0]),
                       reply("not json"), json_reply(ideas[1]), when="RESEARCHER")
    chat_server.script(json_reply({"title": "design", "expected": 2.5}), when="ARCHITECT")
    chat_server.script(*[reply("nope")] * 2, when="CRITIC")
    c = LLMClient(llm_settings(repair_rounds=1),
                  recorder=lambda r: save_call(store, "auto-1", "sprint-1", r))
    live: list[Any] = [c.ask("researcher", "RESEARCHER", "first", Idea),
                       c.ask("architect", "ARCHITECT", "design it", Idea),
                       c.ask("researcher", "RESEARCHER", "second", Idea)]
    with pytest.raises(LLMUnavailable):
        c.ask("critic", "CRITIC", "judge", Idea)
    save_call(store, "auto-1", "sprint-2", CallRecord(  # another sprint, not replayed
        role="researcher", model="m", temperature=0.2, seed=0, messages=[], response="{}",
        parsed_ok=True, error=None, prompt_tokens=5, completion_tokens=5, latency_s=0.1,
        attempt=1, at=time.time()))
    chat_server.stop()

    rows = load_calls(store, sprint="sprint-1")
    assert [r["role"] for r in rows] == ["researcher"] * 2 + ["architect"] + \
        ["researcher"] * 2 + ["critic"] * 2
    assert [r["parsed_ok"] for r in rows] == [False, True, True, False, True, False, False]
    assert rows[0]["error"].startswith("HTTP 429") and rows[0]["response"] is None
    assert rows[1]["messages"][1] == {"role": "user", "content": "first"}
    assert CallRecord.from_dict(rows[1]).to_dict() == {k: v for k, v in rows[1].items()
                                                       if k not in ("id", "session", "sprint")}
    totals = token_totals(store, sprint="sprint-1")
    assert totals["calls"] == 7 and totals["failed"] == 4
    assert totals["prompt_tokens"] == sum(r["prompt_tokens"] for r in rows) > 0
    assert totals["completion_tokens"] == sum(r["completion_tokens"] for r in rows) > 0
    assert totals["models"] == ["scripted-model"]
    assert token_totals(store, session="auto-1")["calls"] == 8
    assert len(load_calls(store)) == 8 and load_calls(store, session="other") == []

    # Replay in a fresh store handle, no server: same answers, same failure, then nothing.
    replay = ReplayClient(load_calls(Store(db_url), sprint="sprint-1"))
    again = [replay.ask("researcher", "RESEARCHER", "first", Idea),
             replay.ask("architect", "ARCHITECT", "design it", Idea),
             replay.ask("researcher", "RESEARCHER", "second", Idea)]
    assert again == live and replay.model == "scripted-model" and replay.mismatches == []
    with pytest.raises(LLMUnavailable, match="recorded"):
        replay.ask("critic", "CRITIC", "judge", Idea)
    with pytest.raises(LLMUnavailable, match="no more answers"):
        replay.ask("researcher", "RESEARCHER", "third", Idea)


def test_replay_notes_a_different_prompt() -> None:
    rec = CallRecord(role="r", model="m", temperature=0.0, seed=None,
                     messages=[{"role": "system", "content": "s"},
                               {"role": "user", "content": "old question"}],
                     response=json.dumps(GOOD), parsed_ok=True, error=None, prompt_tokens=1,
                     completion_tokens=1, latency_s=0.0, attempt=1, at=0.0)
    replay = ReplayClient([rec.to_dict()])
    assert replay.ask("r", "s", "new question", Idea) == Idea(**GOOD)
    assert replay.mismatches == ["r"]


def test_calls_table_is_created_on_first_use(any_db_url: str) -> None:
    store = Store(any_db_url)
    with store.writing() as c:
        c.exec_driver_sql("DROP TABLE llm_calls")  # as in a database made before the table
    assert load_calls(store) == [] and token_totals(store)["calls"] == 0
    rec = {"role": "r", "model": "m", "temperature": 0.2, "seed": 2**40,
           "messages": [{"role": "user", "content": "é ✓"}], "response": None,
           "parsed_ok": False, "error": "x", "prompt_tokens": 3, "completion_tokens": 0,
           "latency_s": 0.0, "attempt": 1, "at": 1.0}
    save_call(store, "s", 7, rec)  # a sprint id given as a number is stored as text
    save_call(store, "s", "q", {**rec, "parsed_ok": True, "response": "{}", "model": "n"})
    (row,) = load_calls(Store(any_db_url, readonly=True), sprint="7")
    assert CallRecord.from_dict(row).to_dict() == rec and row["sprint"] == "7"
    assert token_totals(store, session="s") == {"calls": 2, "prompt_tokens": 6,
                                                "completion_tokens": 0, "failed": 1,
                                                "models": ["m", "n"]}
    with pytest.raises(ValueError, match="lacks attempt"):
        save_call(store, "s", "p", {k: v for k, v in rec.items() if k != "attempt"})


# -- the scripted server itself -----------------------------------------------------------------

def test_server_routes_by_text_and_has_a_default(chat_server: ChatServer,
                                                 llm_settings: Any) -> None:
    chat_server.script(json_reply({"title": "a", "expected": 1}), when="ARCHITECT")
    chat_server.default(json_reply({"title": "d", "expected": 0}))
    c, _ = client(llm_settings())
    assert c.ask("researcher", "RESEARCHER", "u", Idea).title == "d"
    assert c.ask("architect", "ARCHITECT", "u", Idea).title == "a"
    assert c.ask("architect", "ARCHITECT", "u", Idea).title == "d"


# -- pieces without a server --------------------------------------------------------------------

def test_extract_json_and_parse_errors() -> None:
    assert extract_json('{"a": {"b": [1, 2]}} trailing') == {"a": {"b": [1, 2]}}
    assert extract_json('x {"a": 1} then {"b": 2}') == {"a": 1}
    assert extract_json('say "hi" {x} then {"a": "}{"}') == {"a": "}{"}
    # A broken outer object is reported as such, not replaced by one of its inner objects.
    with pytest.raises(AnswerError, match="invalid"):
        extract_json('{"title": "t", "inner": {"k": 1}, oops}')
    for bad, msg in [("", "empty"), ("just words", "no JSON object"),
                     ('{"a": 1', "invalid"), ("<think>{\"a\": 1}", "empty")]:
        with pytest.raises(AnswerError, match=msg):
            extract_json(bad)
    with pytest.raises(AnswerError, match="tags: Input should be a valid list"):
        parse_answer('{"title": "t", "expected": 1, "tags": 5}', Idea)
    with pytest.raises(AnswerError, match="why: Extra inputs"):  # extra="forbid" holds
        parse_answer('{"title": "t", "expected": 1, "why": "x"}', Idea)


def test_settings_from_env_and_validation() -> None:
    assert LLMSettings.from_env({}) is None
    s = LLMSettings.from_env({"AIRLAB_LLM_BASE_URL": "http://127.0.0.1:11434",
                              "AIRLAB_LLM_MODEL": "qwen2.5:0.5b", "AIRLAB_LLM_TIMEOUT": "5"})
    assert s is not None
    assert (s.base_url, s.model, s.api_key, s.timeout_s) == \
        ("http://127.0.0.1:11434/v1", "qwen2.5:0.5b", None, 5.0)
    s = LLMSettings.from_env({"AIRLAB_LLM_BASE_URL": "https://api.example.com/v1/",
                              "AIRLAB_LLM_MODEL": "m", "AIRLAB_LLM_API_KEY": "sk-secret"})
    assert s is not None and s.api_key == "sk-secret" and "sk-secret" not in repr(s)
    assert normalize_base_url("http://h:8080/v1/chat/completions") == "http://h:8080/v1"
    with pytest.raises(AirlabError, match="AIRLAB_LLM_MODEL"):
        LLMSettings.from_env({"AIRLAB_LLM_BASE_URL": "http://h:1/v1"})
    with pytest.raises(AirlabError, match="AIRLAB_LLM_TIMEOUT"):
        LLMSettings.from_env({"AIRLAB_LLM_BASE_URL": "http://h:1/v1", "AIRLAB_LLM_MODEL": "m",
                              "AIRLAB_LLM_TIMEOUT": "soon"})
    with pytest.raises(AirlabError, match="not an http"):
        LLMSettings(base_url="127.0.0.1:8080", model="m")
    with pytest.raises(AirlabError, match="response_format"):
        LLMSettings(base_url="http://h/v1", model="m", response_format="xml")
    with pytest.raises(AirlabError, match="max_retries"):
        LLMSettings(base_url="http://h/v1", model="m", max_retries=-1)
