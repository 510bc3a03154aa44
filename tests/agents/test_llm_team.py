"""The team with a language model: `airlab sprint` against the scripted chat server (a real HTTP
server process, tests/agents/chat_server.py), the generated technique checked and run in the
sandbox, replay with the server stopped, and the fallbacks to the offline team.

Every sprint runs real training of a tiny model (1 layer, 32 wide, a few thousand tokens) in
the console script, in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chat_server import ChatServer, json_reply
from listener import Listener

from airlab.agents.generated import commit_technique
from airlab.agents.llm import LLMUnavailable
from airlab.agents.model.researcher import IdeaAnswer, ResearchAnswer, propose_idea
from airlab.agents.model.seat import tag
from airlab.agents.model.validator import ungrounded
from airlab.settings import get_settings
from airlab.store import Store
from airlab.store import team as team_store
from airlab.store.calls import load_calls, token_totals

pytest.importorskip("openai")

AIRLAB = [str(Path(sys.executable).with_name("airlab"))]
TINY = ["--option", "n_layer=1", "--option", "n_embd=32", "--option", "eval_tokens=1024",
        "--option", "eval_points=2", "--option", "block_size=32", "--tokens", "4000"]
SWITCH = "llm_shrink_init"

IDEA = {
    "name": "shrunken_initial_matrices",
    "title": "Shrunken initial weight matrices",
    "area": "training_dynamics",
    "aspect": "normalization_stability",
    "pitch": "Multiplying every initial weight matrix by a constant below one lets the first "
             "updates, not the random draw, shape the network.",
    "math": "W_0 <- s * W_0 for every 2-D parameter, with 0 < s < 1",
    "why_it_might_work": "Smaller initial logits give flatter early softmax outputs and "
                         "gradients dominated by the data.",
    "why_it_might_not": "Too small a start slows signal propagation through the residual "
                        "stream and the first steps are wasted.",
    "implementation": {"needs_code": True, "switch": SWITCH,
                       "sketch": "on_model multiplies every parameter with two dimensions by "
                                 "the option llm_shrink_init_scale under torch.no_grad"},
    "prediction": {"metric": "val_loss", "kind": "delta", "direction": "lower",
                   "expected": -0.01, "low": -0.05, "high": -0.001},
}

GOOD_CODE = f'''"""Shrink every initial weight matrix (written by the model)."""

import torch

from airlab.techniques import Hooks, Option, Technique, register


class ShrinkInit(Hooks):
    def on_model(self, model):
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(self.options["{SWITCH}_scale"])
        return model


register(Technique(
    "{SWITCH}", "initialization", "scale 2-D weights at initialization",
    options={{"{SWITCH}_scale": Option(0.7, float, 0.0, 2.0, low_open=True,
                                      help="factor on every matrix at init")}},
    hooks=ShrinkInit, workloads=("charlm",),
))
'''


def research(idea: dict[str, Any] | None = None) -> dict[str, Any]:
    i = idea or IDEA
    return {"ideas": [i], "chosen": i["name"],
            "reasons": "it needs no new data and tests how much the initial draw matters"}


ARCHITECT = {"arms": [{"name": "double_dose", "use": ["no_such_switch"], "options": {},
                       "why": "a stronger version"}],
             "reasons": "one more arm would show the dose response"}
CRITIQUE = {"critique": ["The rating rests on few seed pairs; rerun on fresh seeds."],
            "summary": "Too few pairs to trust a small effect."}


def script_team(srv: ChatServer, code: str = GOOD_CODE, *, idea: dict[str, Any] | None = None,
                coder_answers: int = 1) -> None:
    srv.script(json_reply(research(idea)), when=tag("researcher"))
    srv.script(json_reply(ARCHITECT), when=tag("architect"))
    srv.script(*[json_reply({"code": code, "notes": "scales matrices"})] * coder_answers,
               when=tag("coder"))
    srv.script(json_reply(CRITIQUE), when=tag("validator"))


def airlab(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 600
           ) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "AIRLAB_LLM_TIMEOUT": "20", **(env or {})}
    return subprocess.run(AIRLAB + args, capture_output=True, text=True, timeout=timeout,
                          env=full)


def model_env(srv: ChatServer) -> dict[str, str]:
    return {"AIRLAB_LLM_BASE_URL": srv.url, "AIRLAB_LLM_MODEL": "scripted-model",
            "AIRLAB_LLM_API_KEY": "test-key"}


def sprint_row(session: str, number: int) -> dict[str, Any]:
    """The stored sprint with its record as the JSON the store keeps."""
    store = Store(get_settings().db_url)
    row = team_store.get_sprint(store, session, number)
    assert row is not None
    return {"status": row.status, "idea": row.idea, "record": row.record.to_json()}


# ------------------------------------------------------------------------- the whole path


# Slow (about 60 s on one core since every run of a spec with generated code is measured by the
# harness in the sandbox, the baseline's too): CI keeps the model's escaping technique below,
# the replayed model sprint of tests/agents/test_team_unchanged.py and the harness's own tests.
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (the sandbox) missing")
def test_a_model_sprint_writes_a_technique_runs_it_and_replays(shared_data: Path) -> None:
    with ChatServer() as srv:
        script_team(srv)
        p = airlab(["sprint", "--minutes", "2", *TINY], env=model_env(srv))
        assert p.returncode == 0, p.stdout + p.stderr
        reqs = [r["body"] for r in srv.requests()]
    asked = [b["messages"][0]["content"].split()[0] for b in reqs]
    # Every role asked once, in the phases' order; nothing else.
    assert asked == [tag("researcher"), tag("architect"), tag("coder"), tag("validator")]
    row = sprint_row("sprints", 1)
    rec = row["record"]
    assert row["status"] == "done" and row["idea"] == IDEA["name"]
    # The new idea in the knowledge-base schema, checked for novelty before anything ran.
    prop = rec["proposal"]
    assert prop["source"] == "model" and prop["llm_idea"]["prediction"]["expected"] == -0.01
    (cand,) = prop["researcher"]["candidates"]
    assert cand["accepted"] and cand["novelty"]["novel"] and cand["novelty"]["similar"]
    # The Architect's arm with an unknown switch was refused by check_spec, with the reason.
    (arm,) = rec["llm"]["arms"]
    assert "no_such_switch" in arm["rejected"] and not arm.get("accepted")
    assert [a["name"] for a in rec["spec"]["arms"]] == [IDEA["name"]]
    # The generated technique: checked in the sandbox, stored with its hash, named by the
    # spec, used by the idea's arm, and its runs finished in the sandbox.
    code = rec["llm"]["code"]
    assert code["ok"] and code["switch"] == SWITCH and len(code["attempts"]) == 1
    stored = Path(code["path"])
    assert stored.read_text() == GOOD_CODE and code["sha256"][:16] in stored.name
    assert rec["spec"]["techniques"] == [str(stored)]
    assert rec["spec"]["arms"][0]["use"] == [SWITCH]
    impl = {a["arm"]: a for a in rec["implementation"]["arms"]}
    assert impl[IDEA["name"]]["code"][SWITCH] == code["sha256"]
    assert rec["runs"]["failed"] == 0 and rec["runs"]["ran"] == rec["runs"]["planned"] > 0
    store = Store(get_settings().db_url)
    runs = store.runs(store.experiment(rec["spec"]["name"])["id"])
    assert {r["arm"] for r in runs} == {"baseline", IDEA["name"]}
    assert all(r["state"] == "finished" for r in runs)
    # Every run is measured by the harness, in the sandbox; the baseline imported no file.
    assert all((r["info"] or {}).get("sandbox") for r in runs)
    assert all(bool(r["info"]["generated_code"]) == (r["arm"] != "baseline") for r in runs)
    # Committed to the lab's git repository, a branch per sprint.
    if shutil.which("git"):
        repo = get_settings().home / "techniques.git"
        shown = subprocess.run(["git", "--git-dir", str(repo), "show",
                                f"sprint/sprints/001:{SWITCH}.py"], capture_output=True,
                               text=True, check=True).stdout
        assert shown == GOOD_CODE
    # The Validator's critique sits beside the rubric's and did not change the rating.
    val = rec["validation"]
    assert val["llm_critique"]["lines"] == CRITIQUE["critique"]
    assert val["llm_critique"]["rating_unchanged"] == val["rating"]
    assert val["llm_critique"]["by"] == "scripted-model"
    facts = reqs[-1]["messages"][1]["content"]  # the Validator's prompt: the stored statistics
    assert f'"rating": {val["rating"]}' in facts
    assert json.dumps(val["arms"][IDEA["name"]]["value"]) in facts
    # Every call stored with the sprint; the post names the model and the token counts.
    totals = token_totals(store, sprint="sprints:1")
    assert totals["calls"] == 4 and totals["models"] == ["scripted-model"]
    post = (Path(rec["folder"]) / "sprint.md").read_text()
    assert "scripted-model" in post
    assert f"{totals['prompt_tokens']:,} prompt + {totals['completion_tokens']:,} completion" \
        in post
    assert "The model's critique" in post

    # The server is stopped: the replay answers from the stored calls.
    p = airlab(["sprint", "--replay", "sprints:1"],
               env={**model_env(srv), "AIRLAB_LLM_BASE_URL": "http://127.0.0.1:9/v1"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "equal the original's" in p.stdout, p.stdout
    again = sprint_row("replay", 1)["record"]
    assert again["proposal"]["llm_idea"] == prop["llm_idea"]
    assert {k: v for k, v in again["spec"].items() if k != "name"} == \
        {k: v for k, v in rec["spec"].items() if k != "name"}
    assert again["llm"]["code"]["sha256"] == code["sha256"]
    assert again["llm"]["replay_of"] == "sprints:1"
    assert load_calls(store, sprint="replay:1") == []  # no model was called


# ------------------------------------------------------------------------- fallbacks


def test_a_server_that_is_gone_warns_once_and_the_sprint_goes_on(shared_data: Path) -> None:
    srv = ChatServer()
    url = srv.url
    srv.stop()
    p = airlab(["sprint", "--minutes", "2", "--idea", "short_warmup", *TINY],
               env={"AIRLAB_LLM_BASE_URL": url, "AIRLAB_LLM_MODEL": "gone"})
    assert p.returncode == 0, p.stdout + p.stderr
    warnings = [line for line in p.stdout.splitlines() if " warning " in line]
    assert len(warnings) == 1 and "continuing offline" in warnings[0], p.stdout
    rec = sprint_row("sprints", 1)["record"]
    assert rec["llm"]["offline"] and rec["llm"]["parts"]["architect"] == "offline"
    assert rec["validation"]["rating"] is not None and "llm_critique" not in rec["validation"]


@pytest.mark.slow  # CI keeps the server that is gone: the same warn-once-and-go-on path
def test_a_spent_token_budget_warns_once_and_the_sprint_goes_on(shared_data: Path) -> None:
    with ChatServer() as srv:
        script_team(srv)
        p = airlab(["sprint", "--minutes", "2", "--idea", "short_warmup", "--max-tokens", "1",
                    *TINY], env=model_env(srv))
        assert p.returncode == 0, p.stdout + p.stderr
        assert len(srv.requests()) == 1  # the first call may finish; the next is refused
    warnings = [line for line in p.stdout.splitlines() if " warning " in line]
    assert len(warnings) == 1 and "token budget" in warnings[0], p.stdout
    row = sprint_row("sprints", 1)
    rec = row["record"]
    assert row["status"] == "done" and rec["llm"]["parts"]["architect"].startswith("model")
    assert rec["llm"]["parts"]["validator"] == "offline"
    assert rec["validation"]["rating"] is not None


@pytest.mark.slow  # ~11 s; CI keeps tests/sandbox/test_technique_files.py's escaping run
@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (the sandbox) missing")
def test_an_escaping_technique_is_a_failed_implementation(shared_data: Path) -> None:
    # A listener the generated code tries to reach: the sandbox has no network, so nothing
    # may ever connect to it.
    with Listener() as lsn:
        bad = GOOD_CODE.replace("import torch\n", "import socket\n\nimport torch\n\n"
                                f"socket.create_connection(('127.0.0.1', {lsn.port}), "
                                "timeout=2)\n")
        with ChatServer() as srv:
            script_team(srv, bad, coder_answers=3)
            p = airlab(["sprint", "--minutes", "2", *TINY], env=model_env(srv))
            assert p.returncode == 0, p.stdout + p.stderr
        assert lsn.close() == []
    row = sprint_row("sprints", 1)
    rec = row["record"]
    (failed,) = rec["failed_implementations"]
    assert failed["idea"] == IDEA["name"] and len(failed["attempts"]) == 3
    assert "network" in failed["reason"].lower() or "connect" in failed["reason"].lower() \
        or "refused" in failed["reason"].lower(), failed["reason"]
    # The sprint went on with an offline idea and ran it.
    assert row["status"] == "done" and row["idea"] != IDEA["name"]
    assert rec["proposal"].get("source") != "model"
    assert rec["llm"]["parts"]["coder"] == "failed" and rec["llm"]["offline"]
    assert "failed implementation" in (Path(rec["folder"]) / "sprint.md").read_text()


# ------------------------------------------------------------------------- pieces


class _Fixed:
    """A backend with canned answers per role (no server): the researcher's checks alone."""

    model = "fixed"

    def __init__(self, answers: dict[str, list[dict[str, Any]]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def ask(self, role: str, system: str, user: str, schema: Any, **_: Any) -> Any:
        self.asked.append(user)
        if not self.answers.get(role):
            raise LLMUnavailable(f"{role}: no more answers")
        return schema.model_validate(self.answers[role].pop(0))


def test_a_known_idea_under_a_new_name_is_refused_before_anything_runs() -> None:
    s = get_settings()
    store = Store(s.db_url)
    rope = {**IDEA, "name": "spinning_positions", "title": "Rotary position embeddings",
            "pitch": "Rotate queries and keys by position-dependent angles so attention sees "
                     "relative positions.",
            "math": "q_m = R(m theta) q, k_n = R(n theta) k; q_m . k_n depends on m - n",
            "why_it_might_work": "Rotary position embeddings encode relative position in "
                                 "attention without learned position tables.",
            "implementation": {"use": ["rope"]}}
    llm = _Fixed({"researcher": [research(rope), research()]})
    from airlab.agents.knowledge import load_ideas

    out = propose_idea(llm, store, s, ideas=load_ideas())
    assert out.idea.name == IDEA["name"]
    assert "rope" in out.rejected[0] and "another name" in out.rejected[0]
    assert "spinning_positions" in llm.asked[1]  # the refusal went back to the model
    llm = _Fixed({"researcher": [research(rope)] * 3})
    with pytest.raises(LLMUnavailable, match="no new idea"):
        propose_idea(llm, store, s, ideas=load_ideas())


def test_the_answer_schemas_refuse_what_the_lab_cannot_use() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="already an idea"):
        IdeaAnswer.model_validate({**IDEA, "name": "rope"})
    with pytest.raises(ValidationError, match="not a registered switch"):
        IdeaAnswer.model_validate({**IDEA, "implementation": {"use": ["warp_drive"]}})
    bad_pred = {**IDEA["prediction"], "direction": "higher"}
    with pytest.raises(ValidationError, match="direction"):
        IdeaAnswer.model_validate({**IDEA, "prediction": bad_pred})
    with pytest.raises(ValidationError, match="chosen"):
        ResearchAnswer.model_validate({**research(), "chosen": "other"})
    assert IdeaAnswer.model_validate(IDEA).to_idea().needs_code


def test_numbers_a_critique_cites_must_come_from_the_statistics() -> None:
    facts = json.dumps({"ratio": 1.234, "value": 4.1875, "rating": 6})
    assert ungrounded(["the arm is 1.23x faster at val_loss 4.19 (3 seeds)"], facts) == []
    assert ungrounded(["a 23.4% speed-up"], facts) == []
    assert ungrounded(["it is 2.5x faster"], facts) == ["2.5"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git missing")
def test_attempts_are_commits_on_the_sprint_branch(tmp_path: Path) -> None:
    a, where = commit_technique(tmp_path, "sprint/s/001", {"x.py": "one\n"}, "attempt 1")
    b, _ = commit_technique(tmp_path, "sprint/s/001", {"x.py": "two\n"}, "attempt 2")
    assert a and b and a != b and "techniques.git" in where
    git = ["git", "--git-dir", str(tmp_path / "techniques.git")]
    log = subprocess.run([*git, "log", "--format=%s", "sprint/s/001"], capture_output=True,
                         text=True, check=True).stdout.split("\n")
    assert log[:2] == ["attempt 2", "attempt 1"]
    diff = subprocess.run([*git, "diff", a, b], capture_output=True, text=True,
                          check=True).stdout
    assert "-one" in diff and "+two" in diff
    assert commit_technique(tmp_path, "bad..name", {"x.py": ""}, "m")[0] is None


def test_without_git_the_code_is_not_committed_and_says_so(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    sha, note = commit_technique(tmp_path, "sprint/s/001", {"x.py": "one\n"}, "attempt 1")
    assert sha is None and "git not found" in note
    assert not (tmp_path / "techniques.git").exists()


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (the sandbox) missing")
def test_a_later_sprint_finds_the_code_of_a_switch_the_model_wrote(tmp_path: Path) -> None:
    """A stack or recipe using a generated switch names its file, so its runs are sandboxed."""
    from dataclasses import dataclass

    from airlab.agents.generated import attach_technique_files, technique_files_for
    from airlab.executors.sandboxed import store_code
    from airlab.spec import ExperimentSpec
    from airlab.store.records import ModelNotes, SprintRecord, SprintRequest
    from airlab.techniques import TECHNIQUES

    s = get_settings()
    store = Store(s.db_url)
    src = tmp_path / "gen.py"
    src.write_text(GOOD_CODE.replace(SWITCH, "llm_later_switch"))
    stored = store_code(s.home, src)
    team_store.start_sprint(store, "sprints", 1, SprintRecord(
        SprintRequest(), 0.0, llm=ModelNotes("m", "sprints:1", code={
            "ok": True, "switch": "llm_later_switch", "path": str(stored)})))
    assert technique_files_for(store, ["rope"]) == []
    assert technique_files_for(store, ["rope", "llm_later_switch"]) == [str(stored)]
    assert "llm_later_switch" in TECHNIQUES  # a stand-in: its code ran only in the sandbox

    @dataclass
    class D:
        spec: ExperimentSpec

    spec = ExperimentSpec.model_validate({
        "name": "stack", "workload": "charlm", "budget": {"tokens": 4000},
        "baseline": {"name": "baseline"}, "seeds": [0, 1],
        "arms": [{"name": "stack", "use": ["rope", "llm_later_switch"]}]})
    assert attach_technique_files(D(spec), store).spec.techniques == [str(stored)]


def test_bad_model_flags_are_one_line_errors() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRLAB_LLM_")}
    p = subprocess.run([*AIRLAB, "sprint", "--llm"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 2 and "AIRLAB_LLM_BASE_URL" in p.stderr + p.stdout
    for ref, what in (("sprints:7", "no sprint"), ("nope", "not a sprint id")):
        p = subprocess.run([*AIRLAB, "sprint", "--replay", ref], capture_output=True,
                           text=True, env=env, timeout=120)
        assert p.returncode == 2 and what in p.stderr + p.stdout, p.stderr
        assert "Traceback" not in p.stderr


def test_a_model_idea_on_registered_switches_runs_and_its_prediction_is_scored(
        shared_data: Path) -> None:
    """In-process, with canned answers: the model's idea needs no code; its arm uses the
    registered switch, and the prediction it made is scored after the runs."""
    from airlab.agents.knowledge import load_ideas
    from airlab.agents.team import Team
    from airlab.executors.local import LocalExecutor

    rotary = {**IDEA, "name": "rotary_positions_again", "title": "Rotary positions",
              "pitch": "Rotating queries and keys by their positions lets attention see "
                       "relative offsets.",
              "implementation": {"use": ["rope"]}}
    # A knowledge base without rope, so the idea is new to this team.
    kb = {n: i for n, i in load_ideas().items() if n == "short_warmup"}
    llm = _Fixed({"researcher": [research(rotary)], "architect": [{"arms": []}],
                  "validator": [CRITIQUE]})
    s = get_settings()
    store = Store(s.db_url)
    ex = LocalExecutor(2, settings=s)
    try:
        team = Team(store, s, ex, seed=1, ideas=kb, llm=llm, options={
            "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
            "eval_points": 4, "eval_tokens": 1024})
        out = team.sprint(tokens=6000, minutes=3)
    finally:
        ex.shutdown()
    assert out.status == "done" and out.idea == "rotary_positions_again", out.reason
    rec = out.record.to_json()
    assert rec["llm"]["parts"]["researcher"] == "model"
    assert rec["spec"]["arms"][0]["use"] == ["rope"] and rec["spec"]["techniques"] == []
    pred = rec["validation"]["prediction"]
    assert pred is not None and pred["idea"] == "rotary_positions_again"
    assert rec["validation"]["llm_critique"]["lines"] == CRITIQUE["critique"]
    assert "llm" in rec and "code" not in rec["llm"]


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (the sandbox) missing")
@pytest.mark.slow  # ~20-40 s on 2 cores; `make test-all` runs it
def test_the_model_writes_the_code_a_knowledge_base_idea_needs(shared_data: Path) -> None:
    """An idea of the knowledge base marked "needs code" is taken up by the model's Coder."""
    from airlab.agents.team import Team
    from airlab.executors.local import LocalExecutor

    code = GOOD_CODE.replace(SWITCH, "zero_init")
    llm = _Fixed({"architect": [{"arms": []}], "coder": [{"code": code}],
                  "validator": [CRITIQUE]})
    s = get_settings()
    store = Store(s.db_url)
    ex = LocalExecutor(2, settings=s)
    try:
        team = Team(store, s, ex, seed=1, llm=llm, options={
            "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
            "eval_points": 2, "eval_tokens": 1024})
        out = team.sprint(idea="zero_init_residual", tokens=4000, minutes=3)
    finally:
        ex.shutdown()
    assert out.status == "done", out.reason
    rec = out.record.to_json()
    assert "Switch name: zero_init" in llm.asked[1]  # the Coder got the idea's sketch
    assert rec["llm"]["parts"]["researcher"].startswith("offline")
    assert rec["llm"]["code"]["ok"] and rec["spec"]["arms"][0]["use"] == ["zero_init"]
    assert rec["runs"]["failed"] == 0 and rec["validation"]["prediction"] is not None
    # Without a model the same idea is refused in one line.
    off = Team(store, s, None).sprint(idea="zero_init_residual", tokens=4000)  # type: ignore
    assert off.status == "failed" and "needs code" in off.reason
