"""The team's roles with a language model: what each asks, the schema of its answer, and the
checks an answer must pass before the lab acts on it.

Each role is a function over an :class:`~airlab.agents.llm.LLMBackend` (a live
:class:`~airlab.agents.llm.LLMClient` or a :class:`~airlab.agents.llm.ReplayClient`) and
raises :class:`~airlab.agents.llm.LLMUnavailable` with a one-line reason when the model gives
nothing usable; the team then goes on with its offline role. Every answer is validated
against a pydantic schema (``extra="forbid"``) and the schema's own checks send their errors
back to the model in the client's repair rounds. On top of that:

* **Researcher** (:func:`propose_idea`): one to three *new* ideas in the knowledge-base schema
  (:class:`~airlab.agents.knowledge.Idea`, with a falsifiable prediction), either on
  registered switches or ``needs_code`` with a sketch for the Coder. Before anything runs,
  each is checked for novelty (same name or a known technique under another name by text
  similarity; identical resolved configs already stored) and against the registries; a
  rejected idea is sent back with the reason for a bounded number of rounds.
* **Architect** (:func:`propose_arms`): optional extra arms on registered switches; each is
  kept only if the spec with it passes ``check_spec`` (the reason is recorded otherwise).
* **Coder** (:func:`write_technique`): a technique module for a ``needs_code`` idea, written
  against the technique contract (docs/techniques.md), checked in the sandbox
  (``check_technique_file``: the contract and a few training steps), with the failure text
  sent back for a bounded number of repair rounds. Every attempt is committed to a git
  repository in the lab folder (``<home>/techniques.git``, branch ``sprint/<session>/<n>``),
  and the passing code is stored content-addressed (``<home>/techniques/<sha>.py``), the
  file a spec names so that its runs happen in the sandbox.
* **Validator** (:func:`critique`): a written critique grounded in the stored statistics (the
  prompt carries the analysis numbers). It is stored beside the rubric's verdict, labelled as
  the model's, and cannot change the rating; numbers it cites that are not in the statistics
  are flagged.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from airlab.agents.knowledge import Area, Aspect, Idea
from airlab.agents.knowledge import Implementation as IdeaImplementation
from airlab.agents.llm import LLMBackend, LLMUnavailable
from airlab.errors import AirlabError

if TYPE_CHECKING:
    from airlab.agents.architect import ArmSpec
    from airlab.settings import Settings
    from airlab.spec import ExperimentSpec
    from airlab.store import Store

NOVELTY_ROUNDS = 2  # extra questions after every proposed idea was rejected (not new, invalid)
CODE_ROUNDS = 2  # extra questions after generated code failed the sandboxed contract check
MAX_EXTRA_ARMS = 2  # the Architect's arms beyond the design (each costs a full set of seeds)
GIT_REPO = "techniques.git"


def tag(role: str) -> str:
    """The marker each role's system prompt starts with (servers and logs can tell roles
    apart; the scripted test server routes answers by it)."""
    return f"[airlab:{role}]"


def _one_line(text: object, limit: int = 400) -> str:
    s = " ".join(str(text).split())
    return s[:limit] + ("..." if len(s) > limit else "")


# ============================================================================= schemas


class PredictionAnswer(BaseModel):
    """A falsifiable forecast on a metric the lab measures (see knowledge.Prediction)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    metric: Literal["val_loss", "time_to_target", "train_seconds"]
    kind: Literal["delta", "ratio"] = "delta"
    direction: Literal["lower", "higher"]
    expected: float
    low: float
    high: float


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


_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ArmAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    use: list[str] = Field(default_factory=list, max_length=8)
    options: dict[str, Any] = Field(default_factory=dict)
    why: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _ARM_NAME.match(v):
            raise ValueError("an arm name uses letters, digits, '_', '.', '-'")
        return v


class ArchitectAnswer(BaseModel):
    """Extra arms worth running beside the design's (none is a fine answer)."""

    model_config = ConfigDict(extra="forbid")

    arms: list[ArmAnswer] = Field(default_factory=list, max_length=MAX_EXTRA_ARMS)
    reasons: str = ""


class CodeAnswer(BaseModel):
    """A technique module as Python source text."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=40, max_length=60_000)
    notes: str = ""

    @field_validator("code")
    @classmethod
    def _compiles(cls, v: str) -> str:
        v = _strip_fence(v)
        try:
            compile(v, "<technique>", "exec")
        except SyntaxError as e:
            raise ValueError(f"the code does not compile: line {e.lineno}: {e.msg}") from None
        return v


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


def _strip_fence(code: str) -> str:
    m = re.match(r"^\s*```[a-zA-Z]*\n(.*?)\n?```\s*$", code, re.S)
    return m.group(1) if m else code


# ============================================================================= Researcher


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
cheaper ways to train neural networks. Experiments train a small character-level GPT (workload
charlm, preset tiny, Tiny Shakespeare) over several seeds against a baseline, and decide with
paired statistics. Propose NEW research ideas that the knowledge base does not already hold
(not a known technique under another name). Each idea either uses switches the lab has
registered (implementation.use, with options) or, for something new, sets needs_code: true with
a new switch name and a sketch of the code a Coder will write as a technique module (hooks on
the model, the optimizer, the loss or each step). Give a falsifiable prediction: metric
(val_loss in nats/token, time_to_target as a speed-up ratio, or train_seconds), direction,
expected size and a range [low, high] that contains it."""


def _research_prompt(ideas: Mapping[str, Idea], *, topic: str | None, area: str | None,
                     tested: Sequence[str], rejected: Sequence[str]) -> str:
    from airlab.techniques import TECHNIQUES

    known = "; ".join(f"{n} ({i.title})" for n, i in sorted(ideas.items()))
    switches = ", ".join(sorted(TECHNIQUES))
    lines = [f"Ideas the knowledge base already has (do not repeat them): {known}.",
             f"Registered switches: {switches}."]
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
                 replaying: str | None = None) -> ResearchOutcome:
    """A new idea from the model, checked for novelty and against the registries before
    anything runs. LLMUnavailable when none is usable after ``rounds`` more questions.
    ``replaying``: the experiment of the sprint being replayed (its runs are no duplicate)."""
    rejected: list[str] = []
    candidates: list[dict[str, Any]] = []
    for _ in range(rounds + 1):
        ans = llm.ask("researcher", RESEARCHER_SYSTEM.format(tag=tag("researcher")),
                      _research_prompt(ideas, topic=topic, area=area, tested=tested,
                                       rejected=rejected), ResearchAnswer)
        order = sorted(ans.ideas, key=lambda i: i.name != ans.chosen)  # the chosen one first
        picked: Idea | None = None
        for a in order:
            idea = a.to_idea()
            why, nov = _refuse(idea, store, settings, ideas, area, replaying)
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
            area: str | None, replaying: str | None = None) -> tuple[str | None, dict[str, Any]]:
    """Why the idea cannot be tested (None: it can) and its novelty record."""
    from airlab.agents.knowledge import check_idea, idea_spec
    from airlab.agents.researcher import check_novelty

    if area is not None and idea.area != area:
        return f"it is in area '{idea.area}', not '{area}'", {}
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


# ============================================================================= Architect

ARCHITECT_SYSTEM = """{tag} You are the Architect of airlab. A design for an experiment is
given: its baseline, its arms, seeds and budget. You may add at most {n} extra arms that would
make the experiment more informative (a stronger ablation, a dose of an option), using only the
registered switches and their options. Answer with an empty list of arms when the design is
enough: every arm costs a run per seed."""


def propose_arms(llm: LLMBackend, spec: ExperimentSpec, settings: Settings | None
                 ) -> tuple[list[ArmSpec], list[dict[str, Any]]]:
    """Extra arms from the model, each kept only if the spec with it passes ``check_spec``.
    Returns (accepted arms, every proposed arm with its fate). LLMUnavailable passes up."""
    from airlab.agents.architect import ArmSpec
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
    accepted: list[ArmSpec] = []
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
        arm = ArmSpec(a.name, tuple(a.use), dict(a.options), f"the model's arm: {a.why}"[:200])
        trial = {**data, "arms": [*data["arms"], arm.to_dict()]}
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


# ============================================================================= Coder

CODER_SYSTEM = """{tag} You are the Coder of airlab. Write ONE Python module that registers one
technique for the lab's training loop, following this contract exactly:

- import only torch, math and `from airlab.techniques import Hooks, Option, Technique, register`;
  no files, network, subprocesses, threads or environment access (the module runs in a sandbox
  without them and is stopped if it tries).
- call `register(Technique(NAME, AREA, HELP, options=..., hooks=HooksSubclass,
  workloads=("charlm",)))` at module level; NAME is the switch name given below.
- options: a dict of `Option(default, type, low, high, help=...)`; numeric options need a range;
  option names start with the switch name (e.g. `<name>_scale`), never a training field such
  as lr, batch_size, seed, tokens, n_layer.
- hooks: a subclass of Hooks overriding any of `on_model(self, model) -> model`,
  `on_optimizer(self, optimizer, model) -> optimizer`, `wrap_loss(self, loss_fn) -> loss_fn`
  (loss_fn(model, x, y) -> loss), `after_backward(self, model, step)`,
  `after_step(self, model, step, progress)`, `on_finish(self, model, task) -> dict of floats`.
  `self.options` holds the option values. Never evaluate, step the optimizer or start a run.

Example:
```python
import torch
from airlab.techniques import Hooks, Option, Technique, register


class ShrinkInit(Hooks):
    def on_model(self, model):
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(self.options["shrink_init_scale"])
        return model


register(Technique(
    "shrink_init", "initialization", "scale 2-D weights at initialization",
    options={{"shrink_init_scale": Option(0.5, float, 0.0, 2.0, low_open=True,
                                          help="factor on every matrix at init")}},
    hooks=ShrinkInit, workloads=("charlm",),
))
```
Put the whole module in the `code` field."""


@dataclass
class GeneratedTechnique:
    """What the Coder produced for one idea: the code that passed (or why none did)."""

    ok: bool
    switch: str
    reason: str = ""
    path: str | None = None  # the content-addressed copy a spec names (<home>/techniques/)
    sha256: str | None = None  # the file's digest as the run key names it (sha256, 16 hex)
    attempts: list[dict[str, Any]] = field(default_factory=list)  # sha, ok, reason, commit
    git: str = ""  # where the attempts were committed, or why not
    protections: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coder_prompt(idea: Idea, failures: Sequence[tuple[str, str]]) -> str:
    impl = idea.implementation
    lines = [f"Switch name: {impl.switch}", f"Idea: {idea.title}. {idea.pitch}",
             f"Mathematics: {idea.math}", f"Sketch: {impl.sketch}"]
    for code, reason in failures[-1:]:  # the latest attempt only: small contexts
        lines += ["", "Your previous module failed the sandboxed contract check:",
                  f"{reason}", "Previous module:", "```python", code, "```",
                  "Fix it and send the whole module again."]
    return "\n".join(lines)


def write_technique(llm: LLMBackend, idea: Idea, settings: Settings, *, branch: str,
                    rounds: int = CODE_ROUNDS, allow_unsafe: bool = False
                    ) -> GeneratedTechnique:
    """A technique module for a ``needs_code`` idea, checked in the sandbox, with up to
    ``rounds`` repair questions carrying the failure. Never raises for the model's or the
    code's failures: ``ok=False`` with the reason (the sprint records a failed
    implementation and goes on)."""
    from airlab.executors.sandboxed import check_technique_file, store_code
    from airlab.techniques.base import file_digest

    switch = str(idea.implementation.switch)
    folder = settings.home / "generated" / branch.replace("/", "-")
    folder.mkdir(parents=True, exist_ok=True)
    out = GeneratedTechnique(False, switch)
    failures: list[tuple[str, str]] = []
    for n in range(rounds + 1):
        try:
            ans = llm.ask("coder", CODER_SYSTEM.format(tag=tag("coder")),
                          _coder_prompt(idea, failures), CodeAnswer)
        except LLMUnavailable as e:
            out.reason = e.reason if not failures else \
                f"{failures[-1][1]} (then: {e.reason})"
            return out
        code = ans.code if ans.code.endswith("\n") else ans.code + "\n"
        path = folder / f"{n + 1:02d}-{switch}.py"
        path.write_text(code, encoding="utf-8")
        digest = file_digest(path)
        try:
            res = check_technique_file(path, settings=settings, allow_unsafe=allow_unsafe)
            ok, reason = bool(res.ok), str(res.reason or "")
            out.protections = list(res.protections.lines()) if hasattr(
                res.protections, "lines") else []
            names = list(res.techniques)
            if ok and names != [switch]:
                ok, reason = False, (f"the module registers {names or 'nothing'}; it must "
                                     f"register exactly one technique named '{switch}'")
        except AirlabError as e:  # no sandbox here (and no --unsafe flag), a bad path ...
            ok, reason = False, _one_line(e.message + (f" ({e.hint})" if e.hint else ""))
        reason = _one_line(reason, 600)
        commit, note = commit_technique(
            settings.home, branch, {f"{switch}.py": code},
            f"{switch}: attempt {n + 1}: " + ("passes the contract check" if ok
                                              else f"fails: {reason}"))
        out.git = note
        out.attempts.append({"attempt": n + 1, "sha256": digest, "ok": ok, "reason": reason,
                             "commit": commit, "file": str(path)})
        if ok:
            stored = store_code(settings.home, path)
            out.ok, out.reason, out.path, out.sha256 = True, "", str(stored), digest
            return out
        failures.append((code, reason))
        out.reason = reason
    return out


def _git(args: Sequence[str], repo: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(repo),
           "GIT_AUTHOR_NAME": "airlab", "GIT_AUTHOR_EMAIL": "airlab@localhost",
           "GIT_COMMITTER_NAME": "airlab", "GIT_COMMITTER_EMAIL": "airlab@localhost",
           "GIT_CONFIG_NOSYSTEM": "1", "LANG": "C"}
    return subprocess.run(["git", "--git-dir", str(repo), *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def commit_technique(home: Path, branch: str, files: Mapping[str, str], message: str
                     ) -> tuple[str | None, str]:
    """Commit ``files`` (name -> text) as the tree of a new commit on ``branch`` of the bare
    repository ``<home>/techniques.git`` (created on first use), on top of the branch's last
    commit, so the branch's history shows each attempt as a reviewable diff. Plumbing only:
    no working tree, so concurrent sprints never disturb each other's files.

    Returns (commit sha, where) or (None, why not) when git is missing or fails."""
    if shutil.which("git") is None:
        return None, "git not found: the generated technique is stored but not committed"
    repo = Path(home) / GIT_REPO
    try:
        if not (repo / "HEAD").exists():
            repo.parent.mkdir(parents=True, exist_ok=True)
            r = subprocess.run(["git", "init", "--bare", "-q", str(repo)], capture_output=True,
                               text=True, timeout=60, check=False)
            if r.returncode != 0:
                return None, f"git init failed: {_one_line(r.stderr)}"
        ref = f"refs/heads/{branch}"
        if _git(["check-ref-format", ref], repo).returncode != 0:
            return None, f"'{branch}' is not a valid git branch name"
        parent = _git(["rev-parse", "--verify", "-q", ref], repo)
        entries = []
        for name, text in sorted(files.items()):
            blob = _git(["hash-object", "-w", "--stdin"], repo, text)
            if blob.returncode != 0:
                return None, f"git hash-object failed: {_one_line(blob.stderr)}"
            entries.append(f"100644 blob {blob.stdout.strip()}\t{name}\n")
        tree = _git(["mktree"], repo, "".join(entries))
        if tree.returncode != 0:
            return None, f"git mktree failed: {_one_line(tree.stderr)}"
        cmd = ["commit-tree", tree.stdout.strip(), "-m", message]
        if parent.returncode == 0:
            cmd += ["-p", parent.stdout.strip()]
        commit = _git(cmd, repo)
        if commit.returncode != 0:
            return None, f"git commit-tree failed: {_one_line(commit.stderr)}"
        sha = commit.stdout.strip()
        upd = _git(["update-ref", ref, sha], repo)
        if upd.returncode != 0:
            return None, f"git update-ref failed: {_one_line(upd.stderr)}"
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"git failed: {_one_line(e)}"
    return sha, f"{repo} branch {branch}"


# ============================================================================= Validator

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


# ============================================================================= replay


def sprint_key(session: str, number: int) -> str:
    """How stored calls name their sprint (``airlab.store.calls``)."""
    return f"{session}:{number}"


def find_sprint(store: Store, ref: str) -> dict[str, Any]:
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


def replay_backend(store: Store, row: Mapping[str, Any]) -> Any:
    """A ReplayClient over the calls the sprint ``row`` stored (AirlabError if it has none)."""
    from airlab.agents.llm import ReplayClient
    from airlab.store.calls import load_calls

    key = sprint_key(str(row["session"]), int(row["number"]))
    calls = load_calls(store, sprint=key)
    if not calls:
        raise AirlabError(f"--replay: sprint {key} stored no model calls",
                          "only a sprint run with a language model can be replayed")
    client = ReplayClient(calls)
    client.replay_of = key  # type: ignore[attr-defined]  # read by ModelRoles
    client.replay_experiment = row.get("experiment")  # type: ignore[attr-defined]
    return client


def compare_sprints(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """What differs between two sprint records in ideas, spec (its name aside) and generated
    code: empty when the replay reproduced the original."""
    diffs = []
    pa, pb = a.get("proposal") or {}, b.get("proposal") or {}
    if pa.get("idea") != pb.get("idea"):
        diffs.append(f"idea: {pa.get('idea')} vs {pb.get('idea')}")
    if (pa.get("llm_idea") or None) != (pb.get("llm_idea") or None):
        diffs.append("the model's idea text differs")
    sa = {k: v for k, v in (a.get("spec") or {}).items() if k != "name"}
    sb = {k: v for k, v in (b.get("spec") or {}).items() if k != "name"}
    for k in sorted(set(sa) | set(sb)):
        if sa.get(k) != sb.get(k):
            diffs.append(f"spec.{k}: {sa.get(k)!r} vs {sb.get(k)!r}")
    ca = ((a.get("llm") or {}).get("code") or {}).get("sha256")
    cb = ((b.get("llm") or {}).get("code") or {}).get("sha256")
    if ca != cb:
        diffs.append(f"generated code: {ca} vs {cb}")
    return diffs


# ============================================================================= the team's seat


def score_model_idea(store: Store, experiment: str, idea: Idea) -> dict[str, Any] | None:
    """Score the prediction of a model's idea (not in the knowledge base, so the Validator's
    own scoring does not find it); None when it cannot be scored yet."""
    from airlab.agents.status import score_experiment

    try:
        return score_experiment(store, experiment, ideas={idea.name: idea})
    except Exception:  # noqa: BLE001 - a scoring problem must not lose the sprint
        return None


class ModelRoles:
    """The model-backed roles of one Team, with the state of the sprint being run.

    Each phase asks the model when it is available and returns None (or leaves the record as
    it is) when the offline role should act: on :class:`LLMUnavailable` it prints one warning
    line and the rest of the sprint runs offline (``record["llm"]["offline"]``, kept across
    a restart). Every HTTP call is stored with the sprint (``save_call``).
    """

    def __init__(self, llm: LLMBackend, store: Store, settings: Settings, reporter: Any, *,
                 allow_unsafe: bool = False) -> None:
        self.llm = llm
        self.store = store
        self.settings = settings
        self.reporter = reporter
        self.allow_unsafe = allow_unsafe
        self.session = ""
        self.key = ""
        self.label = ""
        self.state: dict[str, Any] = {}
        self.replay_of: str | None = getattr(llm, "replay_of", None)
        self.replaying: str | None = getattr(llm, "replay_experiment", None)
        if getattr(llm, "recorder", False) is None:  # a live client without a recorder
            llm.recorder = self._save  # type: ignore[attr-defined]

    def _save(self, rec: Any) -> None:
        from airlab.store.calls import save_call

        save_call(self.store, self.session, self.key, rec)

    # -- per sprint ---------------------------------------------------------------------------

    def begin(self, rec: dict[str, Any], session: str, number: int, label: str,
              team: Mapping[str, Any]) -> None:
        """Start (or resume) a sprint: its ``record["llm"]`` holds what came from the model."""
        self.session, self.key, self.label = session, sprint_key(session, number), label
        st = rec.setdefault("llm", {})
        st.setdefault("model", self.llm.model)
        st.setdefault("sprint", self.key)
        st.setdefault("parts", {})
        st.setdefault("warnings", [])
        st.setdefault("team", dict(team))
        if self.replay_of:
            st.setdefault("replay_of", self.replay_of)
        self.state = st

    @property
    def active(self) -> bool:
        return "offline" not in self.state

    def warn(self, reason: str) -> None:
        """One line, then offline for the rest of the sprint."""
        reason = _one_line(reason)
        self.state["offline"] = reason
        self.state["warnings"].append(reason)
        self.reporter.phase(self.label, "warning",
                            f"language model unavailable, continuing offline: {reason}")

    # -- phases -------------------------------------------------------------------------------

    def ideas(self, rec: Mapping[str, Any], ideas: Mapping[str, Idea]) -> dict[str, Any] | None:
        """The proposal of an explore sprint from the model's new idea, or None (offline)."""
        parts = self.state["parts"]
        if rec.get("idea"):
            parts["researcher"] = "offline (the idea was given)"
            named = ideas.get(rec["idea"])
            if named is not None and named.needs_code and self.active:
                # Nothing to choose or tune: the model's Coder writes the switch it needs.
                switch = named.implementation.switch
                return {"kind": "explore", "idea": named.name, "options": {}, "trial": None,
                        "researcher": {"candidates": [], "chosen": named.name,
                                       "reasons": "named with --idea", "source": "given"},
                        "summary": f"{named.name} was named; it needs code: the model's "
                                   f"Coder writes --use_{switch}. Prediction: "
                                   f"{named.prediction.text()}"}
            return None
        if not self.active:
            parts["researcher"] = "offline"
            return None
        try:
            out = propose_idea(self.llm, self.store, self.settings, ideas=ideas,
                               topic=rec.get("topic"), area=rec.get("area"),
                               tested=rec.get("exclude") or (), replaying=self.replaying)
        except LLMUnavailable as e:
            parts["researcher"] = "offline"
            self.warn(e.reason)
            return None
        idea = out.idea
        parts["researcher"] = "model"
        code = f" (needs code: --use_{idea.implementation.switch})" if idea.needs_code else ""
        rejected = f"; refused first: {'; '.join(out.rejected)}" if out.rejected else ""
        return {"kind": "explore", "idea": idea.name, "options": {}, "trial": None,
                "source": "model", "llm_idea": idea.model_dump(mode="json"),
                "researcher": {"candidates": out.candidates, "chosen": idea.name,
                               "reasons": out.reasons, "rejected": out.rejected,
                               "source": "model"},
                "summary": f"the model ({self.llm.model}) proposed a new idea, {idea.name}"
                           f"{code}: {out.reasons.rstrip('. ')}. Prediction: "
                           f"{idea.prediction.text()}"
                           f"{rejected}"}

    def arms(self, design: Any, kind: str) -> Any:
        """The design with the model's extra arms that pass ``check_spec`` (explore only)."""
        import dataclasses

        from airlab.spec import ExperimentSpec

        if kind != "explore" or not self.active:
            self.state["parts"].setdefault("architect", "offline")
            return design
        try:
            accepted, fates = propose_arms(self.llm, design.spec, self.settings)
        except LLMUnavailable as e:
            self.state["parts"]["architect"] = "offline"
            self.warn(e.reason)
            return design
        self.state["parts"]["architect"] = (f"model: {len(accepted)} extra arm(s) of "
                                            f"{len(fates)} proposed")
        self.state["arms"] = fates
        notes = list(design.notes)
        for f in fates:
            notes.append(f"the model's arm {f['name']}: " + ("added" if f.get("accepted")
                                                            else f"refused: {f['rejected']}"))
        if not accepted:
            return dataclasses.replace(design, notes=notes)
        data = design.spec.to_dict()
        data["arms"] = [*data["arms"], *(a.to_dict() for a in accepted)]
        notes.append("the model's arms add runs beyond the time-box estimate")
        return dataclasses.replace(design, spec=ExperimentSpec.model_validate(data), notes=notes)

    def implement(self, rec: dict[str, Any], spec: ExperimentSpec, idea: Idea | None
                  ) -> ExperimentSpec | None:
        """The spec with the generated technique for a ``needs_code`` idea (the file named in
        ``techniques``, the idea's arm using its switch); the spec unchanged when no code is
        needed; None when the code could not be had (recorded as a failed implementation:
        the sprint falls back to an offline idea)."""
        from airlab.spec import ExperimentSpec

        if idea is None or not idea.needs_code or spec.techniques:
            return spec
        switch = str(idea.implementation.switch)
        if not self.active:
            gen = GeneratedTechnique(False, switch, reason="no language model to write it "
                                     f"({self.state.get('offline')})")
        else:
            number = self.key.rpartition(":")[2]
            branch = f"sprint/{self.session}/{int(number):03d}"
            gen = write_technique(self.llm, idea, self.settings, branch=branch,
                                  allow_unsafe=self.allow_unsafe)
        self.state["code"] = gen.to_dict()
        if not gen.ok:
            self.state["parts"]["coder"] = "failed"
            rec.setdefault("failed_implementations", []).append(
                {"idea": idea.name, "switch": switch, "reason": gen.reason,
                 "attempts": gen.attempts, "experiment": spec.name})
            self.reporter.phase(self.label, "implementation",
                                f"generated technique --use_{switch} failed: {gen.reason}; "
                                "recorded as a failed implementation, falling back to an "
                                "offline idea")
            self.state.setdefault("offline", f"the generated technique failed: {gen.reason}")
            if rec.get("idea") == idea.name:  # the named idea cannot run: the Researcher picks
                rec["idea"] = None
            return None
        self.state["parts"]["coder"] = (f"model: --use_{switch}, {len(gen.attempts)} "
                                        "attempt(s), checked in the sandbox")
        data = spec.to_dict()
        data["techniques"] = [str(gen.path)]
        for a in data["arms"]:
            if a["name"] == idea.name and switch not in a["use"]:
                a["use"] = [*a["use"], switch]
        git = f"committed to {gen.git}" if gen.attempts[-1]["commit"] else gen.git
        self.reporter.phase(self.label, "implementation",
                            f"the model wrote --use_{switch} (sha256 {str(gen.sha256)[:12]}, "
                            f"{len(gen.attempts)} attempt(s)); passes the sandboxed contract "
                            f"check; {git}")
        return ExperimentSpec.model_validate(data)

    def note_implementation(self, impl: dict[str, Any]) -> None:
        code = self.state.get("code") or {}
        if code.get("ok"):
            impl["source"] = (f"{impl.get('source', '')} + generated code "
                              f"({self.state.get('model')}): --use_{code['switch']}").strip(" +")

    def validate(self, rec: dict[str, Any], spec: ExperimentSpec) -> None:
        """The model's critique beside the rubric's (never changing the rating)."""
        val = rec.get("validation") or {}
        if not self.active:
            self.state["parts"].setdefault("validator", "offline")
            return
        try:
            val["llm_critique"] = critique(self.llm, val, spec.to_dict())
        except LLMUnavailable as e:
            self.state["parts"]["validator"] = "offline"
            self.warn(e.reason)
            return
        self.state["parts"]["validator"] = "model: critique beside the rubric's (rating kept)"

    def post(self, rec: dict[str, Any]) -> None:
        """Token counts of the sprint's calls (of the original's, for a replay)."""
        from airlab.store.calls import token_totals

        self.state["tokens"] = token_totals(self.store, sprint=self.replay_of or self.key)


# ============================================================================= generated switches


def generated_files(store: Store) -> dict[str, str]:
    """Switch -> stored file of every generated technique that passed its check, from the
    sprints' records (the latest sprint wins): how a later sprint finds the code of a winner
    the model wrote, also after a restart."""
    from airlab.store import team as team_store

    out: dict[str, str] = {}
    for r in team_store.list_sprints(store):
        code = ((r.get("record") or {}).get("llm") or {}).get("code") or {}
        if code.get("ok") and code.get("path") and Path(code["path"]).is_file():
            out[str(code["switch"])] = str(code["path"])
    return out


def technique_files_for(store: Store, uses: Sequence[str], *, allow_unsafe: bool = False
                        ) -> list[str]:
    """The generated technique files the switches ``uses`` need, registered in this process
    (stand-ins described in the sandbox) so that specs using them resolve; [] when every
    switch is built in."""
    from airlab.techniques import TECHNIQUES
    from airlab.techniques.contract import FILES, register_technique_files

    found: set[str] = set()
    gen: dict[str, str] | None = None
    for u in dict.fromkeys(uses):
        if u in FILES:
            found.add(str(FILES[u]))
        elif u not in TECHNIQUES:
            gen = generated_files(store) if gen is None else gen
            if u in gen:
                found.add(gen[u])
    paths = sorted(found)
    if paths:
        register_technique_files([Path(p) for p in paths], allow_unsafe=allow_unsafe)
    return paths


def attach_technique_files(design: Any, store: Store) -> Any:
    """The design with ``techniques`` naming the generated files its arms use (a stack or a
    recipe built on a switch the model wrote), so that its runs happen in the sandbox."""
    import dataclasses

    from airlab.spec import ExperimentSpec

    spec = design.spec
    paths = technique_files_for(store, [u for a in spec.all_arms for u in a.use])
    missing = [p for p in paths if p not in spec.techniques]
    if not missing:
        return design
    data = spec.to_dict()
    data["techniques"] = [*spec.techniques, *missing]
    return dataclasses.replace(design, spec=ExperimentSpec.model_validate(data))
