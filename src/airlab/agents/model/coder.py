"""The model-backed Coder: a technique module for an idea that needs code, checked in the sandbox.

For a ``needs_code`` idea the model writes a module against the technique contract
(docs/techniques.md); ``check_technique_file`` runs the contract and a few training steps in the
sandbox and a failure goes back to the model for :data:`CODE_ROUNDS` more questions. Every
attempt is committed to the lab's git repository (``agents.generated``), the passing code is
stored content-addressed and named by the spec, so its runs happen in the sandbox. Then the
offline Coder plans every arm.

Fallback: when no code passes, the sprint records a failed implementation and goes back to its
ideas phase with the model offline (an offline idea then).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from airlab.agents.generated import commit_technique
from airlab.agents.llm import LLMBackend, LLMUnavailable
from airlab.agents.model.seat import one_line as _one_line
from airlab.agents.model.seat import tag
from airlab.errors import AirlabError

if TYPE_CHECKING:
    from airlab.agents.knowledge import Idea
    from airlab.agents.model.seat import ModelSeat
    from airlab.agents.roles import CoderRole, SprintContext
    from airlab.settings import Settings
    from airlab.spec import ExperimentSpec
    from airlab.store.records import ImplementationRecord

CODE_ROUNDS = 2  # extra questions after generated code failed the sandboxed contract check


# ============================================================================= schema

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



def _strip_fence(code: str) -> str:
    m = re.match(r"^\s*```[a-zA-Z]*\n(.*?)\n?```\s*$", code, re.S)
    return m.group(1) if m else code



# ============================================================================= asking

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


# ============================================================================= the role


class ModelCoder:
    """The model writes what a ``needs_code`` idea needs; the offline Coder plans the arms."""

    def __init__(self, offline: CoderRole, seat: ModelSeat) -> None:
        self.offline = offline
        self.seat = seat

    def check_idea(self, idea: Idea) -> None:
        """Nothing to refuse: an idea that needs code is this Coder's to write."""

    def implement(self, ctx: SprintContext, spec: ExperimentSpec
                  ) -> tuple[ExperimentSpec, ImplementationRecord] | None:
        prop = ctx.record.proposal
        idea = ctx.lab.idea(prop.idea) if prop is not None and prop.idea else None
        if idea is not None and idea.needs_code and not spec.techniques:
            made = self._write(ctx, spec, idea)
            if made is None:
                return None
            spec = made
        got = self.offline.implement(ctx, spec)
        if got is None:
            return None
        spec, impl = got
        code = self.seat.notes(ctx).code or {}
        if code.get("ok"):
            impl = dataclasses.replace(impl, source=(
                f"{impl.source} + generated code ({self.seat.model}): "
                f"--use_{code['switch']}").strip(" +"))
        return spec, impl

    def _write(self, ctx: SprintContext, spec: ExperimentSpec, idea: Idea
               ) -> ExperimentSpec | None:
        """The spec with the generated technique (the file named in ``techniques``, the idea's
        arm using its switch); None when the code could not be had (recorded as a failed
        implementation, and the model goes offline for the rest of the sprint)."""
        from airlab.spec import ExperimentSpec

        seat, notes = self.seat, self.seat.notes(ctx)
        switch = str(idea.implementation.switch)
        if not seat.active(ctx):
            gen = GeneratedTechnique(False, switch, reason="no language model to write it "
                                     f"({notes.offline})")
        else:
            gen = write_technique(seat.bound(ctx), idea, ctx.lab.settings,
                                  branch=f"sprint/{ctx.session}/{ctx.number:03d}",
                                  allow_unsafe=seat.allow_unsafe)
        notes.code = gen.to_dict()
        rec = ctx.record
        if not gen.ok:
            notes.parts["coder"] = "failed"
            rec.failed_implementations.append(
                {"idea": idea.name, "switch": switch, "reason": gen.reason,
                 "attempts": gen.attempts, "experiment": spec.name})
            ctx.say("implementation", f"generated technique --use_{switch} failed: "
                    f"{gen.reason}; recorded as a failed implementation, falling back to an "
                    "offline idea")
            if notes.offline is None:
                notes.offline = f"the generated technique failed: {gen.reason}"
            if rec.request.idea == idea.name:  # the named idea cannot run: the Researcher picks
                rec.request = dataclasses.replace(rec.request, idea=None)
            return None
        notes.parts["coder"] = (f"model: --use_{switch}, {len(gen.attempts)} attempt(s), "
                                "checked in the sandbox")
        data = spec.to_dict()
        data["techniques"] = [str(gen.path)]
        for a in data["arms"]:
            if a["name"] == idea.name and switch not in a["use"]:
                a["use"] = [*a["use"], switch]
        git = f"committed to {gen.git}" if gen.attempts[-1]["commit"] else gen.git
        ctx.say("implementation", f"the model wrote --use_{switch} (sha256 "
                f"{str(gen.sha256)[:12]}, {len(gen.attempts)} attempt(s)); passes the "
                f"sandboxed contract check; {git}")
        return ExperimentSpec.model_validate(data)
