"""The model-backed team on a slow or small model: the time box bounds the model phases, every
role sends a completion cap sized to its schema, the tuning settings come from the environment
and the command line, and `airlab llm check` reports each role in one tiny request.

Against the scripted chat server (tests/chat_server.py: a real HTTP server process on
127.0.0.1); the sprint trains a tiny model for real through the console script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from chat_server import ChatServer, json_reply, reply, slow

from airlab.agents.model.seat import BOX_SHARE, COMPLETION_CAP, tag
from airlab.settings import get_settings
from airlab.store import Store
from airlab.store import team as team_store

pytest.importorskip("openai")

AIRLAB = [str(Path(sys.executable).with_name("airlab"))]
TINY = ["--option", "n_layer=1", "--option", "n_embd=32", "--option", "eval_tokens=1024",
        "--option", "eval_points=2", "--option", "block_size=32", "--tokens", "4000"]
IDEA = {
    "name": "cartographer_plan", "title": "A wandering cartographer's schedule",
    "area": "efficient_arch", "aspect": "attention",
    "pitch": "Letting the network map its terrain with a different compass may help it settle "
             "sooner.",
    "math": "y = f(x)", "why_it_might_work": "Cartographers settle disputes quickly.",
    "why_it_might_not": "Maps are not territories.", "implementation": {"use": ["relu2"]},
    "prediction": {"metric": "val_loss", "kind": "delta", "direction": "lower",
                   "expected": -0.02, "low": -0.08, "high": -0.001}}
RESEARCH = {"ideas": [IDEA], "chosen": IDEA["name"], "reasons": "cheap to test, and new"}
CODE = '''import torch
from airlab.techniques import Hooks, Option, Technique, register


class Scale(Hooks):
    def on_model(self, model):
        return model


register(Technique("check_scale", "initialization", "scale weights",
                   options={}, hooks=Scale, workloads=("charlm",)))
'''


def _env(srv: ChatServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRLAB_LLM_")}
    return {**env, "AIRLAB_LLM_BASE_URL": srv.url, "AIRLAB_LLM_MODEL": "scripted-model",
            "AIRLAB_LLM_TIMEOUT": "20", **extra}


def _airlab(args: list[str], env: dict[str, str], timeout: float = 600
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(AIRLAB + args, capture_output=True, text=True, timeout=timeout,
                          env=env)


def _by_role(srv: ChatServer) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in srv.requests():
        body = r["body"]
        role = body["messages"][0]["content"].split("]")[0].split(":")[-1]
        out.setdefault(role, []).append(body)
    return out


def test_llm_check_sends_one_request_per_role_with_the_settings_asked_for() -> None:
    with ChatServer() as srv:
        srv.script(json_reply(RESEARCH), when=tag("researcher"))
        srv.script(reply("I would add no arm, thanks!"), when=tag("architect"))
        srv.script(json_reply({"code": CODE}), when=tag("coder"))
        srv.script(json_reply({"critique": ["Three pairs are few."]}), when=tag("validator"))
        env = _env(srv, AIRLAB_LLM_TEMPERATURE="0.6", AIRLAB_LLM_RESPONSE_FORMAT="json_schema")
        p = _airlab(["llm", "check", "--json"], env)
        assert p.returncode == 0, p.stdout + p.stderr
        got = {r["role"]: r for r in json.loads(p.stdout)}
        asked = _by_role(srv)
        # The command line wins over the environment: one cap for every role.
        p = _airlab(["llm", "check", "--role", "validator", "--llm-cap", "321",
                     "--llm-temperature", "0"], env)
        assert p.returncode == 0, p.stdout + p.stderr
        capped = srv.requests()[-1]["body"]
    assert {r: g["passed"] for r, g in got.items()} == {
        "researcher": True, "architect": False, "coder": True, "validator": True}
    assert "no JSON object" in got["architect"]["error"]
    assert all(g["latency_s"] > 0 and g["completion_tokens"] > 0 for g in got.values())
    # One request per role (no repair round), each with its own cap, the temperature and the
    # JSON mode from the environment.
    assert {r: len(b) for r, b in asked.items()} == dict.fromkeys(got, 1)
    for role, (body,) in asked.items():
        assert body["max_tokens"] == COMPLETION_CAP[role] == got[role]["cap"]
        assert body["temperature"] == 0.6
        assert body["response_format"]["type"] == "json_schema"
    assert capped["max_tokens"] == 321 and capped["temperature"] == 0


def test_bad_model_settings_are_one_line_errors() -> None:
    with ChatServer() as srv:
        for args, env, needle in (
                (["llm", "check", "--llm-temperature", "5"], {}, "--llm-temperature"),
                (["llm", "check"], {"AIRLAB_LLM_RESPONSE_FORMAT": "xml"},
                 "AIRLAB_LLM_RESPONSE_FORMAT"),
                (["sprint", "--llm-cap", "0", "--idea", "rope"], {}, "--llm-cap"),
                (["auto", "--sprints", "1"], {"AIRLAB_LLM_MAX_TOKENS": "lots"},
                 "AIRLAB_LLM_MAX_TOKENS"),
                (["llm", "check", "--role", "critic"], {}, "--role")):
            p = _airlab(args, _env(srv, **env), timeout=120)
            lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
            assert p.returncode == 2 and lines and needle in lines[0], (args, p.stderr)
            assert len(lines) <= 2 and "Traceback" not in p.stderr
        assert srv.requests() == []  # refused before anything was asked


@pytest.mark.slow  # ~16 s; CI keeps test_llm's question stopped at its time limit
def test_a_role_that_cannot_answer_within_its_share_of_the_box_falls_back_at_once(
        shared_data: Path) -> None:
    minutes = 1.0
    share = BOX_SHARE["researcher"] * minutes * 60  # 9 s of a 1-minute box
    with ChatServer() as srv:
        srv.script(slow(90, json_reply(RESEARCH)), when=tag("researcher"))
        srv.script(json_reply({"arms": []}), when=tag("architect"))
        srv.script(json_reply({"critique": ["Few pairs."]}), when=tag("validator"))
        t0 = time.time()
        p = _airlab(["sprint", "--minutes", str(minutes), "--llm", *TINY], _env(srv))
        took = time.time() - t0
        asked = _by_role(srv)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "continuing offline" in p.stdout
    row = team_store.get_sprint(Store(get_settings().db_url), "sprints", 1)
    assert row is not None and row.status == "done"
    rec = row.record
    assert rec.llm is not None and rec.llm.parts["researcher"] == "offline"
    assert "share of the time box" in rec.llm.warnings[0]
    # It waited its share (one request, no retry, no repair), not the 90 s the server took,
    # and the rest of the sprint ran offline: the box says where the time went.
    assert list(asked) == ["researcher"] and len(asked["researcher"]) == 1
    assert share - 1 <= rec.box["model.researcher"] <= share + 5
    assert took < 90
    assert {"ideas", "design", "implementation", "runs", "validation", "post"} <= set(rec.box)
    assert rec.proposal is not None and rec.proposal.source is None  # the offline Researcher
    post = (Path(rec.folder or "") / "sprint.md").read_text()
    assert "## Time box" in post and "Waiting for the model: researcher" in post
