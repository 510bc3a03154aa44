"""The research team at work: one sprint as a table of phases, run by one resume loop.

A **sprint** is one pass through :data:`PHASES`; each phase's output is stored in the sprint's
record as it ends, so a killed sprint resumes at the first phase whose output is missing (never
re-proposing, never re-running a run):

    ideas -> design -> implementation -> runs -> validation -> post

* ideas: the sprint's kind proposes (``agents.kinds``: an idea from the Researcher, a stack of
  winners, a recipe to confirm on fresh seeds);
* design: the kind's arms, sized by the Architect (seeds, a budget that fits the time box);
* implementation: the Coder builds every arm (the model's Coder may write a technique; when it
  cannot, the sprint goes back to its ideas phase with the model offline);
* runs: the pipeline runs them (baseline runs another sprint already has are adopted, not run
  again); at the box's end runs in flight are cut and stored incomplete;
* validation: the Validator rates, reads each arm's result, scores the prediction, with the
  analysis and verdict the pipeline already made;
* post: the experiment folder plus ``sprint.md`` (``report.sprint``).

The team holds its four roles (``agents.roles``), chosen once when it is built: offline, or
each wrapped by its model-backed role. The sprint only calls them.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airlab.agents.generated import attach_technique_files, technique_files_for
from airlab.agents.kinds import SprintKind, kind_of
from airlab.agents.knowledge import Idea, load_ideas
from airlab.agents.offline import offline_roles
from airlab.agents.roles import Lab, SilentTeamReporter, SprintContext, TeamReporter
from airlab.errors import AirlabError
from airlab.report.sprint import arm_line
from airlab.store import team as team_store
from airlab.store.records import (
    Part,
    RunsRecord,
    SprintRecord,
    SprintRequest,
    Task,
    default_base,
)

if TYPE_CHECKING:
    from airlab.agents.llm import LLMBackend
    from airlab.executors.base import Executor
    from airlab.experiment import ExperimentOutcome
    from airlab.settings import Settings
    from airlab.spec import ExperimentSpec
    from airlab.store import Store
    from airlab.store.team import SprintRow

SPRINT_SESSION = "sprints"  # the session of sprints started one at a time


@dataclass
class SprintOutcome:
    session: str
    number: int
    kind: str
    status: str  # done | failed | review (stopped after the design)
    experiment: str | None
    idea: str | None
    rating: int | None
    folder: Path | None
    record: SprintRecord
    reason: str = ""


def _outcome(row: SprintRow) -> SprintOutcome:
    rec = row.record
    return SprintOutcome(row.session, row.number, row.kind, row.status, row.experiment,
                         row.idea, rec.validation.rating if rec.validation else None,
                         Path(rec.folder) if rec.folder else None, rec, rec.error or "")


@dataclass
class _Live:
    """What one call of the resume loop holds beside the stored record."""

    row_id: int
    reviewed: bool  # the sprint stopped for review: its spec file is read back
    review: bool  # stop after the design
    outcome: ExperimentOutcome | None = None  # run_experiment's, passed to the Validator
    phase_started: float = 0.0
    phase: str = "ideas"
    stop: str | None = None  # "review": stopped after the design
    restart: bool = False  # back to the ideas phase


class Team:
    """The four roles around one store and one executor (kept warm across sprints)."""

    def __init__(self, store: Store, settings: Settings, executor: Executor, *,
                 seed: int = 0, workers: int = 2, reporter: TeamReporter | None = None,
                 ideas: Mapping[str, Idea] | None = None,
                 options: Mapping[str, Any] | None = None,
                 llm: LLMBackend | None = None, task: Task | None = None,
                 researcher: str = "team", sources: Mapping[str, str] | None = None) -> None:
        """``llm``: a language model (``LLMClient``, or ``ReplayClient`` to replay a sprint):
        each role is then its model-backed role around the offline one (``agents.model``).
        ``task``: what a sprint studies unless its request names another (default: charlm
        tiny on the embedded pycode). ``researcher``: ``team`` (the offline bandit, or the
        model's) or ``random`` (the control: ``agents.control``). ``sources``: where each
        idea was read (``knowledge.lab_ideas``)."""
        self.lab = Lab(store, settings, executor,
                       dict(ideas) if ideas is not None else dict(load_ideas()),
                       dict(options or {}), int(seed), workers,
                       reporter or SilentTeamReporter(), task=task or Task(),
                       idea_sources=dict(sources or {}))
        roles = offline_roles(self.lab)
        if llm is not None:  # the one place a model is looked for: the roles are chosen here
            from airlab.agents.model import model_roles

            roles = model_roles(roles, llm, self.lab, allow_unsafe=settings.unsafe_no_sandbox)
        if researcher != "team":
            from airlab.agents.control import researcher_role

            roles = dataclasses.replace(roles, researcher=researcher_role(researcher,
                                                                          self.lab))
        self.researcher = researcher
        self.roles = roles

    @property
    def store(self) -> Store:
        return self.lab.store

    @property
    def ideas(self) -> dict[str, Idea]:
        return self.lab.ideas

    # ------------------------------------------------------------------------- one sprint

    def sprint(self, *, session: str = SPRINT_SESSION, number: int | None = None,
               kind: str = "explore", minutes: float = 15.0, idea: str | None = None,
               area: str | None = None, topic: str | None = None,
               base: Part | None = None, tokens: float | None = None,
               seeds: Sequence[int] | None = None, exclude: Sequence[str] = (),
               parts: Sequence[Part] = (), review: bool = False,
               session_end: float | None = None, task: Task | None = None) -> SprintOutcome:
        """Run (or resume) sprint ``number`` of ``session`` (the next one when None).

        ``kind`` explore: one idea on top of ``base`` (default configuration when None);
        stack: ``parts`` (winners) stacked on ``base``, against the default configuration,
        each part ablated out; confirm: ``parts[0]`` (a recipe) against the default
        configuration on ``seeds`` (fresh). ``tokens``: a fixed budget in the task's unit
        (else the idea's, cut to the box). ``task``: what it studies (the team's).
        ``review``: stop after the design.
        """
        kind_of(kind)
        req = SprintRequest(kind, float(minutes), idea, area, topic, base or default_base(),
                            tokens, tuple(int(s) for s in seeds) if seeds is not None else None,
                            tuple(exclude), tuple(parts), task or self.lab.task)
        return self.run(req, session=session, number=number, review=review,
                        session_end=session_end)

    def run(self, request: SprintRequest, *, session: str, number: int | None = None,
            review: bool = False, session_end: float | None = None) -> SprintOutcome:
        """The resume loop: the phases whose output the record lacks, in order."""
        store = self.lab.store
        if number is None:
            number = len(team_store.list_sprints(store, session)) + 1
            last = team_store.get_sprint(store, session, number - 1) if number > 1 else None
            if last is not None and last.status in ("open", "review"):
                number -= 1  # a killed (or reviewed) sprint is finished before a new one
        row = team_store.start_sprint(store, session, number,
                                      SprintRecord(request, time.time()))
        if row.status == "done":
            return _outcome(row)
        rec = row.record
        started = rec.started or row.started_at
        if row.status in ("open", "review") and row.phase != "ideas" and rec.runs is None:
            # Resumed (after a kill or a review): the box restarts, else the runs left would be
            # cut at once.
            started = max(started, time.time())
        deadline = started + rec.request.minutes * 60.0
        if session_end is not None:
            deadline = min(deadline, session_end)
        ctx = SprintContext(self.lab, session, number, rec, deadline)
        live = _Live(row.id, reviewed=row.status == "review", review=review)
        kind = kind_of(rec.kind)
        try:
            i = 0
            while i < len(PHASES):
                name, step = PHASES[i]
                live.phase, live.phase_started = name, time.monotonic()
                step(self, ctx, kind, live)
                if live.stop == "review":
                    out = _outcome(team_store.sprint_by_id(store, row.id) or row)
                    out.status = "review"
                    return out
                i = 0 if live.restart else i + 1
                live.restart = False
        except AirlabError as e:
            rec.error = f"{e.message}" + (f" ({e.hint})" if e.hint else "")
            self._spent(ctx, live)
            team_store.update_sprint(store, row.id, status="failed", record=rec)
            ctx.say("failed", rec.error)
        return _outcome(team_store.sprint_by_id(store, row.id) or row)

    # -- the phases --------------------------------------------------------------------------

    def _spent(self, ctx: SprintContext, live: _Live) -> None:
        """The seconds this phase took, added to the box's account."""
        box = ctx.record.box
        took = time.monotonic() - live.phase_started
        box[live.phase] = round(box.get(live.phase, 0.0) + took, 3)
        live.phase_started = time.monotonic()

    def _save(self, ctx: SprintContext, live: _Live, phase: str, **kw: Any) -> None:
        self._spent(ctx, live)
        team_store.update_sprint(self.lab.store, live.row_id, phase=phase, record=ctx.record,
                                 **kw)

    def _ideas(self, ctx: SprintContext, kind: SprintKind, live: _Live) -> None:
        rec = ctx.record
        if rec.proposal is None:
            rec.proposal = kind.propose(ctx, self.roles)
            self._save(ctx, live, "design", idea=rec.proposal.idea)
        prop = rec.proposal
        if prop.llm_idea and prop.idea:  # the model's idea (kept in the record, also on resume)
            self.lab.model_ideas[prop.idea] = Idea.model_validate(prop.llm_idea)
        ctx.say("ideas", prop.summary)

    def _design(self, ctx: SprintContext, kind: SprintKind, live: _Live) -> None:
        rec, store = ctx.record, self.lab.store
        assert rec.proposal is not None
        if rec.design is None or rec.spec is None:
            # Switches the model wrote in earlier sprints (in the recipe or the stack's parts)
            # are registered first, and the spec names their files.
            technique_files_for(store, [*ctx.base.use, *(
                u for p in rec.proposal.parts for u in p.use)])
            design = attach_technique_files(kind.design(ctx, self.roles, rec.proposal), store)
            rec.design = design.record()
            rec.design.notes += kind.design_notes(ctx, design)
            rec.spec = design.spec
            self._save(ctx, live, "implementation", experiment=design.spec.name)
            if live.review:
                path = self._write_review(ctx, design.spec)
                rec.review_file = str(path)
                team_store.update_sprint(store, live.row_id, status="review", record=rec)
                ctx.say("design", f"stopped for review: edit or approve {path}, then "
                        f"`airlab sprint --continue {ctx.session}:{ctx.number}`")
                live.stop = "review"
                return
        if live.reviewed and rec.review_file:
            rec.spec = self._read_review(Path(rec.review_file), rec.spec)
            team_store.update_sprint(store, live.row_id, status="open", record=rec)
            live.reviewed = False
        spec, d = rec.spec, rec.design
        (unit, amount), = spec.budget.items()
        ctx.say("design", f"{spec.name}: {len(spec.all_arms)} arms x {len(spec.seeds)} seeds, "
                f"{amount:,.0f} {unit} on {spec.dataset}; {d.seeds_reason}; "
                f"{d.budget_reason}")

    def _implementation(self, ctx: SprintContext, kind: SprintKind, live: _Live) -> None:
        rec = ctx.record
        assert rec.spec is not None
        if rec.implementation is None:
            got = self.roles.coder.implement(ctx, rec.spec)
            if got is None:  # the idea cannot be implemented: choose again (model offline)
                rec.restart_ideas()
                self._save(ctx, live, "ideas")
                live.restart = True
                return
            rec.spec, rec.implementation = got
            self._save(ctx, live, "runs")
        ctx.say("implementation", "; ".join(
            f"{a['arm']}: {' '.join('--use_' + u for u in a['use']) or '(no switch)'}"
            f"{' ' + str(a['options']) if a['options'] else ''}"
            for a in rec.implementation.arms))

    def _runs(self, ctx: SprintContext, kind: SprintKind, live: _Live) -> None:
        from airlab import plan as plan_module
        from airlab.experiment import run_experiment, store_plans

        rec, lab = ctx.record, self.lab
        if rec.runs is not None:
            return
        spec = rec.spec
        assert spec is not None
        plans = plan_module.plan_runs(spec, lab.settings)
        exp_id, _ = store_plans(spec.name, spec, plans, lab.store, kind="experiment")
        adopted = team_store.adopt_results(lab.store, exp_id, host=socket.gethostname())
        if adopted:
            ctx.say("runs", f"{adopted} run(s) adopted from earlier sprints (same run key on "
                    "this host)")
        if time.time() >= ctx.deadline:
            raise AirlabError(f"sprint {ctx.label}: the time box ended before its runs "
                              "started", "give the sprint more --minutes")
        out = run_experiment(spec, lab.store, lab.executor, settings=lab.settings,
                             reporter=lab.reporter.runs(spec.name), deadline=ctx.deadline)
        c = out.runs
        live.outcome = out
        rec.runs = RunsRecord(spec.name, c.planned, c.reused, adopted, c.ran, c.failed,
                              c.incomplete, out.verdict.rating if out.verdict else None)
        self._save(ctx, live, "validation")

    def _validation(self, ctx: SprintContext, kind: SprintKind, live: _Live) -> None:
        rec = ctx.record
        assert rec.spec is not None and rec.proposal is not None
        if rec.validation is None:
            rec.validation = self.roles.validator.validate(ctx, rec.spec, live.outcome)
            self.roles.researcher.tell(ctx, rec.proposal, rec.validation)
            self._save(ctx, live, "post")
        val = rec.validation
        ctx.say("validation", f"rated {val.rating}/10 ({val.band}); " + "; ".join(
            arm_line(r) for r in val.arms.values()))

    def _post(self, ctx: SprintContext, kind: SprintKind, live: _Live) -> None:
        from airlab.report.sprint import write_sprint_md

        rec = ctx.record
        assert rec.spec is not None
        folder = write_sprint_md(self.lab.settings.home, rec.spec.name, rec)
        rec.folder = str(folder)
        self._save(ctx, live, "done", status="done")
        ctx.say("post", f"written to {folder}")

    # -- review ------------------------------------------------------------------------------

    def _write_review(self, ctx: SprintContext, spec: ExperimentSpec) -> Path:
        import yaml

        folder = self.lab.settings.home / "sprints" / ctx.session / f"{ctx.number:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "spec.yaml"
        path.write_text("# Edit this spec or leave it as it is, then continue the sprint.\n"
                        + yaml.safe_dump(spec.to_dict(), sort_keys=False))
        return path

    def _read_review(self, path: Path, old: ExperimentSpec | None) -> ExperimentSpec:
        from airlab.check import load_checked

        spec = load_checked(str(path), self.lab.settings)
        if old is not None and spec.name != old.name:
            raise AirlabError(f"{path}: name: the reviewed spec must keep the sprint's "
                              f"experiment name '{old.name}'",
                              "change the arms, seeds or budget, not the name")
        return spec


Step = Callable[[Team, SprintContext, SprintKind, _Live], None]
# The sprint, as data: each phase runs when the record lacks its output, then reports.
PHASES: tuple[tuple[str, Step], ...] = (
    ("ideas", Team._ideas),
    ("design", Team._design),
    ("implementation", Team._implementation),
    ("runs", Team._runs),
    ("validation", Team._validation),
    ("post", Team._post),
)
