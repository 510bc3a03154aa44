"""The research team at work: sprints, and the autonomous loop that stacks winners.

A **sprint** is one cycle through six phases, each stored in the sprint's row as it ends so
that a killed sprint resumes where it stopped (never re-proposing, never re-running a run):

    ideas -> design -> implementation -> runs -> validation -> post

* ideas: the Researcher proposes three ideas from different aspects and picks one (or the
  sprint is a stack of winners, or a confirmation of a recipe on fresh seeds);
* design: the Architect writes the spec (arms, seeds, budget that fits the time box);
* implementation: the Coder composes the techniques and plans every arm;
* runs: the pipeline runs them (baseline runs another sprint already has are adopted, not
  run again); at the box's end runs in flight are cut and stored incomplete;
* validation: the Validator rates, reads each arm's result, scores the prediction;
* post: the experiment folder (analysis, design, implementation, tracking, post) plus
  ``sprint.md`` with the team's reasoning.

The **autonomous loop** (:func:`run_auto`) runs sprints within a budget of sprints or hours.
Exploration tests ideas on top of the session's current best recipe (the default
configuration at first). Once two ideas have won against it, a stack sprint tries them
together against the default configuration, each part ablated out. A stack that beats the
current recipe is a *candidate*; before it becomes the recipe, a confirmation sprint re-runs
it against the default configuration on fresh seeds that played no part in selecting it, and
it is kept only if it still wins there. `airlab leaderboard` lists the recipes with both sets
of figures side by side.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from airlab.agents.architect import Architect, ArmSpec, Design
from airlab.agents.coder import Coder, merge
from airlab.agents.knowledge import Idea, MinimumExperiment, load_ideas
from airlab.agents.llm_roles import (
    ModelRoles,
    attach_technique_files,
    score_model_idea,
    technique_files_for,
)
from airlab.agents.validator import Validator
from airlab.errors import AirlabError
from airlab.store import team as team_store

if TYPE_CHECKING:
    from airlab.agents.llm import LLMBackend
    from airlab.executors.base import Executor
    from airlab.experiment import Reporter
    from airlab.settings import Settings
    from airlab.spec import ExperimentSpec
    from airlab.store import Store

DEFAULT = ArmSpec("default", (), {}, "the default configuration")
SPRINT_SESSION = "sprints"  # the session of sprints started one at a time
SELECTION_SEEDS = (0, 1, 2)
# The loop evaluates twice as often on half the held-out tokens (the same evaluation cost as
# the default 8 x 16,384): a time-to-target is interpolated between evaluations, and a recipe
# that reaches the target at a sixth of the budget would otherwise have one point before it.
LOOP_OPTIONS = {"eval_points": 16, "eval_tokens": 8192}
SINGLE_WINNER_WAIT = 2  # explore sprints after a lone winner before it is stacked alone
CONFIRM_SEED_BASE = 10_000  # fresh seeds: 10_000 + 100 * k + i, never used for selection
MAX_STACK_PARTS = 6
# Areas whose ideas change the time to reach a quality (the loop's objective). The others
# trade quality for size (quantization, pruning) or need a teacher (distillation).
SPEED_AREAS = ("optimizers", "attention", "positions", "normalization", "training_dynamics",
               "batch_size", "efficient_arch", "mixed_precision")
SPEED_METRICS = ("val_loss", "time_to_target", "train_seconds")


class TeamReporter(Protocol):
    """How a sprint shows its phases (the CLI: Rich lines; the library: silent)."""

    def phase(self, sprint: str, phase: str, text: str) -> None: ...

    def runs(self, title: str) -> Reporter: ...


class SilentTeamReporter:
    def phase(self, sprint: str, phase: str, text: str) -> None:
        pass

    def runs(self, title: str) -> Reporter:
        from airlab.experiment import SilentReporter

        return SilentReporter()


@dataclass
class SprintOutcome:
    session: str
    number: int
    kind: str
    status: str  # done | failed | review (stopped after the design)
    experiment: str | None = None
    idea: str | None = None
    rating: int | None = None
    folder: Path | None = None
    record: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def _arm(d: Mapping[str, Any]) -> ArmSpec:
    return ArmSpec(str(d["name"]), tuple(d.get("use") or ()), dict(d.get("options") or {}),
                   str(d.get("description") or ""))


def speed_ideas(ideas: Mapping[str, Idea]) -> list[str]:
    """Runnable ideas about getting to a quality sooner (the autonomous loop's objective)."""
    def on_default(i: Idea) -> bool:  # the session's baseline: the default configuration
        me = i.minimum_experiment
        return ((me.workload, me.preset, me.dataset) == ("charlm", "tiny", "shakespeare")
                and not me.options and not me.baseline.use and not me.baseline.options)

    return [n for n, i in ideas.items() if not i.needs_code and i.area in SPEED_AREAS
            and i.prediction.metric in SPEED_METRICS and on_default(i)]


class Team:
    """The four roles around one store and one executor (kept warm across sprints)."""

    def __init__(self, store: Store, settings: Settings, executor: Executor, *,
                 seed: int = 0, workers: int = 2, reporter: TeamReporter | None = None,
                 ideas: Mapping[str, Idea] | None = None,
                 options: Mapping[str, Any] | None = None,
                 llm: LLMBackend | None = None) -> None:
        """``llm``: a language model (``LLMClient``, or ``ReplayClient`` to replay a sprint):
        each phase asks its model-backed role (agents/llm_roles.py) and falls back to the
        offline role, with one warning line, when the model gives nothing usable."""
        self.store = store
        self.options = dict(options or {})  # shared by every arm of every sprint (keyed)
        self.settings = settings
        self.executor = executor
        self.seed = int(seed)
        self.workers = workers
        self.reporter = reporter or SilentTeamReporter()
        self.ideas = dict(ideas) if ideas is not None else load_ideas()
        self.architect = Architect(store, settings, workers=workers)
        self.coder = Coder(settings)
        self.validator = Validator(store)
        self.model_ideas: dict[str, Idea] = {}  # ideas the model wrote (not in the knowledge base)
        self.model_roles: ModelRoles | None = None
        if llm is not None:
            self.model_roles = ModelRoles(llm, store, settings, self.reporter,
                                          allow_unsafe=settings.unsafe_no_sandbox)

    def researcher(self, seed: int) -> Any:
        from airlab.agents.researcher import Researcher

        return Researcher(self.store, self.settings, seed=seed, ideas=self.ideas)

    # ------------------------------------------------------------------------- one sprint

    def sprint(self, *, session: str = SPRINT_SESSION, number: int | None = None,
               kind: str = "explore", minutes: float = 15.0, idea: str | None = None,
               area: str | None = None, topic: str | None = None,
               base: ArmSpec | None = None, tokens: float | None = None,
               seeds: Sequence[int] | None = None, exclude: Sequence[str] = (),
               parts: Sequence[Mapping[str, Any]] = (), review: bool = False,
               session_end: float | None = None) -> SprintOutcome:
        """Run (or resume) sprint ``number`` of ``session`` (the next one when None).

        ``kind`` explore: one idea on top of ``base`` (default configuration when None);
        stack: ``parts`` (winners, as {"idea", "use", "options"}) stacked on ``base``, against
        the default configuration, each part ablated out; confirm: ``parts[0]`` (a recipe)
        against the default configuration on ``seeds`` (fresh). ``tokens``: a fixed budget
        (else the idea's, cut to the box). ``review``: stop after the design.
        """
        if number is None:
            number = len(team_store.list_sprints(self.store, session)) + 1
            last = team_store.get_sprint(self.store, session, number - 1) if number > 1 else None
            if last is not None and last["status"] in ("open", "review"):
                number -= 1  # a killed (or reviewed) sprint is finished before a new one
        row = team_store.start_sprint(self.store, session, number, kind=kind, record={
            "kind": kind, "minutes": minutes, "idea": idea, "area": area, "topic": topic,
            "base": (base or DEFAULT).to_dict(), "tokens": tokens,
            "seeds": list(seeds) if seeds is not None else None, "exclude": list(exclude),
            "parts": [dict(p) for p in parts], "started": time.time()})
        if row["status"] == "done":
            return self._outcome(row)
        rec = dict(row["record"])
        kind = rec["kind"]
        label = f"{session} #{number}"
        started = float(rec.get("started") or row["started_at"])
        if row["status"] in ("open", "review") and row["phase"] != "ideas" and "runs" not in rec:
            # Resumed (after a kill or a review): the box restarts, else the runs left would be
            # cut at once.
            started = max(started, time.time())
        deadline = started + float(rec["minutes"]) * 60.0
        if session_end is not None:
            deadline = min(deadline, session_end)
        base = _arm(rec["base"])

        def save(phase: str, **kw: Any) -> None:
            team_store.update_sprint(self.store, row["id"], phase=phase, record=rec, **kw)

        if self.model_roles is not None:
            self.model_roles.begin(rec, session, number, label, {
                "seed": self.seed, "options": self.options, "workers": self.workers})
        try:
            # -- ideas
            if "proposal" not in rec:
                rec["proposal"] = self._ideas(kind, rec, number, base)
                save("design", idea=rec["proposal"].get("idea"))
            prop = rec["proposal"]
            if prop.get("llm_idea"):  # the model's idea (kept in the record, also on resume)
                self.model_ideas[prop["idea"]] = Idea.model_validate(prop["llm_idea"])
            self.reporter.phase(label, "ideas", prop["summary"])
            # -- design
            if "design" not in rec:
                # Switches the model wrote in earlier sprints (in the recipe or the stack's
                # parts) are registered first, and the spec names their files.
                technique_files_for(self.store, [*base.use, *(
                    u for p in prop.get("parts") or [] for u in p.get("use") or [])])
                design = self._design(kind, rec, session, number, base, prop)
                if self.model_roles is not None:
                    design = self.model_roles.arms(design, kind)
                design = attach_technique_files(design, self.store)
                rec["design"] = design.to_dict()
                if kind == "explore":
                    rec["design"]["notes"] += self._duplicate(design.spec, prop["idea"])
                rec["spec"] = design.spec.to_dict()
                save("implementation", experiment=design.spec.name)
                if review:
                    path = self._write_review(session, number, design.spec)
                    rec["review_file"] = str(path)
                    team_store.update_sprint(self.store, row["id"], status="review", record=rec)
                    self.reporter.phase(label, "design", f"stopped for review: edit or approve "
                                        f"{path}, then `airlab sprint --continue {session}:"
                                        f"{number}`")
                    out = self._outcome(team_store.sprint_by_id(self.store, row["id"]) or row)
                    out.status = "review"
                    return out
            if row["status"] == "review" and rec.get("review_file"):
                rec["spec"] = self._read_review(Path(rec["review_file"]), rec["spec"])
                team_store.update_sprint(self.store, row["id"], status="open", record=rec)
            spec = self._spec(rec["spec"])
            d = rec["design"]
            self.reporter.phase(label, "design", f"{spec.name}: {len(spec.all_arms)} arms x "
                                f"{len(spec.seeds)} seeds, {spec.budget.get('tokens', 0):,.0f} "
                                f"tokens; {d['seeds_reason']}; {d['budget_reason']}")
            # -- implementation
            if "implementation" not in rec:
                if self.model_roles is not None:
                    made = self.model_roles.implement(
                        rec, spec, self._idea(prop["idea"]) if prop.get("idea") else None)
                    if made is None:  # the generated technique failed: an offline idea now
                        for k in ("proposal", "design", "spec"):
                            rec.pop(k, None)
                        save("ideas")
                        return self.sprint(session=session, number=number, review=review,
                                           session_end=session_end)
                    rec["spec"] = made.to_dict()
                    spec = made
                impl = self.coder.implement(spec)
                rec["implementation"] = impl.to_dict()
                if self.model_roles is not None:
                    self.model_roles.note_implementation(rec["implementation"])
                save("runs")
            impl_d = rec["implementation"]
            self.reporter.phase(label, "implementation", "; ".join(
                f"{a['arm']}: {' '.join('--use_' + u for u in a['use']) or '(no switch)'}"
                f"{' ' + str(a['options']) if a['options'] else ''}" for a in impl_d["arms"]))
            # -- runs
            outcome = self._runs(spec, deadline, label)
            rec["runs"] = outcome
            save("validation")
            # -- validation
            val = self.validator.validate(spec.name)
            rec["validation"] = val.to_dict()
            model_idea = self.model_ideas.get(prop.get("idea") or "")
            if model_idea is not None and rec["validation"].get("prediction") is None:
                rec["validation"]["prediction"] = score_model_idea(self.store, spec.name,
                                                                   model_idea)
            if self.model_roles is not None:
                self.model_roles.validate(rec, spec)
            self._tell(prop, val, spec)
            save("post")
            self.reporter.phase(label, "validation", f"rated {val.rating}/10 ({val.band}); " +
                                "; ".join(_arm_line(r.to_dict()) for r in val.arms.values()))
            # -- post
            if self.model_roles is not None:
                self.model_roles.post(rec)
            folder = self._post(spec, rec)
            rec["folder"] = str(folder)
            save("done", status="done")
            self.reporter.phase(label, "post", f"written to {folder}")
        except AirlabError as e:
            rec["error"] = f"{e.message}" + (f" ({e.hint})" if e.hint else "")
            team_store.update_sprint(self.store, row["id"], status="failed", record=rec)
            self.reporter.phase(label, "failed", rec["error"])
        got = team_store.sprint_by_id(self.store, row["id"])
        return self._outcome(got or row)

    # -- phases ------------------------------------------------------------------------------

    def _ideas(self, kind: str, rec: dict[str, Any], number: int, base: ArmSpec
               ) -> dict[str, Any]:
        if kind == "explore":
            if self.model_roles is not None:
                prop = self.model_roles.ideas(rec, self.ideas)
                if prop is not None:
                    return prop
            r = self.researcher(self.seed * 1000 + number)
            if rec.get("idea"):
                self._check_code(self._idea(rec["idea"]))
            p = r.propose(topic=rec.get("topic"), area=rec.get("area"), idea=rec.get("idea"),
                          exclude=rec.get("exclude") or (),
                          is_base=lambda name, opts: self._is_base(name, opts, base))
            d = p.to_dict()
            chosen = p.chosen
            others = ", ".join(c.idea for c in p.candidates if c.idea != chosen.idea)
            tuned = f" with {p.options}" if p.options else ""
            return {"kind": kind, "idea": chosen.idea, "options": dict(p.options),
                    "trial": p.trial, "researcher": d,
                    "summary": f"chose {chosen.idea}{tuned} over {others or 'nothing else'}: "
                               f"{p.reasons}"}
        parts = rec.get("parts") or []
        if not parts:
            raise AirlabError(f"a {kind} sprint needs the recipe parts to test",
                              "the loop passes its winners")
        names = "+".join(p["idea"] for p in parts)
        if kind == "stack":
            why = (f"{len(parts)} ideas won against {base.name}: try them together "
                   f"({names}), each one ablated out")
        else:
            why = (f"confirm recipe {parts[0]['idea']} against the default configuration on "
                   f"fresh seeds {rec.get('seeds')}")
        return {"kind": kind, "idea": None, "options": {}, "trial": None, "summary": why,
                "parts": parts}

    def _check_code(self, idea: Idea) -> None:
        """An idea that needs code is refused unless the model's Coder can write it."""
        if not (idea.needs_code and self.model_roles is not None):
            self.coder.check_idea(idea)

    def _idea(self, name: str) -> Idea:
        if name in self.model_ideas:
            return self.model_ideas[name]
        if name not in self.ideas:
            from airlab.errors import did_you_mean

            raise AirlabError(f"--idea: unknown idea '{name}'", did_you_mean(name, self.ideas))
        return self.ideas[name]

    def _design(self, kind: str, rec: dict[str, Any], session: str, number: int,
                base: ArmSpec, prop: dict[str, Any]) -> Design:
        tokens = rec.get("tokens")
        minutes = float(rec["minutes"])
        seeds = rec.get("seeds")
        if kind == "explore":
            idea = self._idea(prop["idea"])
            self._check_code(idea)
            me = idea.minimum_experiment
            arm_delta = idea.arm
            arm = ArmSpec(idea.name, tuple(arm_delta.use),
                          {**arm_delta.options, **prop.get("options", {})}, idea.title)
            on_default = base.name == DEFAULT.name and not base.use and not base.options
            if on_default:
                baseline = ArmSpec("baseline", tuple(me.baseline.use), dict(me.baseline.options),
                                   "the idea's baseline")
                arms = [arm]
                if idea.ablation is not None:
                    abl = idea.ablation
                    arms.append(ArmSpec(abl.name, tuple(abl.use), dict(abl.options),
                                        "ablation"))
            else:
                baseline = ArmSpec("baseline", base.use, dict(base.options),
                                   f"the current recipe {base.name}")
                top, _ = merge(idea.name, [base, arm], idea.title)
                arms = [top]
                if idea.ablation is not None:
                    abl = idea.ablation
                    a2, _ = merge(abl.name, [base, ArmSpec(abl.name, tuple(abl.use),
                                                           dict(abl.options))], "ablation")
                    if (a2.use, dict(a2.options)) != (baseline.use, dict(baseline.options)):
                        arms.append(a2)
            effect = idea.prediction.expected if (idea.prediction.kind == "delta" and
                                                  idea.prediction.metric == "val_loss") else None
            budget = float(tokens or me.budget.get("tokens", 200_000))
            # On a recipe the loop's objective stays the default configuration's quality: the
            # arms' time to it is measured against the recipe's (a declared target), so an idea
            # that trades late quality for early speed (a shorter schedule) can win.
            target = None if on_default or not seeds else \
                self._default_target(me, budget, seeds)
            d = self.architect.design(
                name=_name(session, number, idea.name), baseline=baseline, arms=arms,
                workload=me.workload, preset=me.preset, dataset=me.dataset,
                tokens=budget, minutes=minutes,
                effect=effect, seeds=seeds, options={**me.options, **self.options},
                hypothesis=f"{idea.pitch} Prediction: {idea.prediction.text()}.",
                area=idea.area, idea=idea.name, fixed_budget=tokens is not None,
                rate=self._rate(me.preset, me.dataset), target=target)
            if target is not None:
                d.notes.append(f"time to target at the default configuration's quality: "
                               f"val_loss {target:.4f}, the mean final of its runs on seeds "
                               f"{', '.join(map(str, seeds or ()))} at {budget:,.0f} tokens")
            return d
        parts = [ArmSpec(p["idea"], tuple(p.get("use") or ()), dict(p.get("options") or {}))
                 for p in prop["parts"]]
        tok = float(tokens or 400_000)
        if kind == "stack":
            stack, notes = merge("stack", [base, *parts], "+".join(p.name for p in parts))
            arms = [stack]
            seen = {_config_of(stack), _config_of(DEFAULT)}
            for p in parts:
                rest, _ = merge(f"stack-minus-{p.name}", [base, *(q for q in parts if q != p)],
                                f"the stack without {p.name}")
                if _config_of(rest) in seen:  # the part adds nothing, or nothing is left
                    same = _config_of(rest) == _config_of(stack)
                    notes.append(f"no ablation of {p.name}: the stack without it is "
                                 f"{'the stack itself' if same else 'another arm'}")
                    continue
                seen.add(_config_of(rest))
                arms.append(rest)
            if base.use or base.options:
                arms.append(ArmSpec("base", base.use, dict(base.options),
                                    f"the current recipe {base.name}"))
            d = self.architect.design(
                name=_name(session, number, "stack"), baseline=DEFAULT, arms=arms,
                tokens=tok, minutes=minutes, seeds=seeds, fixed_budget=True,
                options=self.options, rate=self._rate(),
                hypothesis=f"Stacking {', '.join(p.name for p in parts)} on {base.name} "
                           "reaches the default configuration's quality sooner than each alone.",
                area="general")
            d.notes.extend(notes)
            return d
        recipe = parts[0]
        arm = ArmSpec("recipe", recipe.use, dict(recipe.options), recipe.name)
        return self.architect.design(
            name=_name(session, number, "confirm"), baseline=DEFAULT, arms=[arm], tokens=tok,
            minutes=minutes, seeds=seeds, fixed_budget=True, area="general",
            options=self.options, rate=self._rate(),
            hypothesis=f"Recipe {recipe.name} still reaches the default configuration's "
                       "quality sooner on fresh seeds.")

    def _is_base(self, name: str, options: Mapping[str, Any], base: ArmSpec) -> bool:
        """Whether idea ``name`` with ``options``, stacked on ``base`` as an explore sprint
        would, resolves to the base's own configuration (the same run key)."""
        idea = self._idea(name)
        me, arm = idea.minimum_experiment, idea.arm
        on_default = base.name == DEFAULT.name and not base.use and not base.options
        mine = ArmSpec(name, tuple(arm.use), {**arm.options, **options})
        if on_default:  # as _design: the idea's arm against the idea's baseline
            ref, top = ArmSpec("base", tuple(me.baseline.use), dict(me.baseline.options)), mine
        else:  # stacked on the recipe
            ref, (top, _) = base, merge(name, [base, mine])

        try:
            return self._run_key(me, top, 1000.0, 0) == self._run_key(me, ref, 1000.0, 0)
        except AirlabError:
            return False

    def _run_key(self, me: MinimumExperiment, arm: ArmSpec, tokens: float, seed: int) -> str:
        """The run key of ``arm`` in an experiment of ``me``'s kind with this team's options."""
        from airlab.plan import resolve

        return resolve(workload=me.workload, preset=me.preset, dataset=me.dataset,
                       budget={"tokens": float(tokens)}, seed=int(seed), use=list(arm.use),
                       options={**me.options, **self.options, **arm.options},
                       settings=self.settings).run_key

    def _default_target(self, me: MinimumExperiment, tokens: float,
                        seeds: Sequence[int]) -> float | None:
        """The default configuration's mean final val_loss at ``tokens`` on ``seeds``, from its
        finished runs in the store; None unless every seed has one."""
        keys = [self._run_key(me, DEFAULT, tokens, s) for s in seeds]
        found = team_store.finished_values(self.store, keys, "val_loss")
        if len(found) < len(set(keys)):
            return None
        return sum(found.values()) / len(found)

    def _rate(self, preset: str = "tiny", dataset: str = "shakespeare") -> tuple[float, str]:
        """Tokens/s per run on this machine: stored runs, else a short probe (one run per
        worker at once, as the sprint's runs will go; stored as experiment ``probe.PRESET``
        so the next design reads it from the store)."""
        from airlab.experiment import run_experiment
        from airlab.plan import resolve
        from airlab.spec import ExperimentSpec

        cfg = resolve(workload="charlm", preset=preset, dataset=dataset,
                      budget={"tokens": 1.0}, seed=0, options=dict(self.options),
                      settings=self.settings).to_dict()
        found = self.architect.throughput("charlm", str(cfg["preset"]), str(cfg["dataset"]))
        if found is not None:
            return found
        spec = ExperimentSpec.model_validate({
            "name": f"probe.{preset}", "hypothesis": "throughput probe for the Architect",
            "workload": "charlm", "preset": preset, "dataset": dataset,
            "budget": {"tokens": 20_000.0}, "seeds": list(range(self.workers)),
            "options": {**self.options, "eval_points": 1}})
        run_experiment(spec, self.store, self.executor, settings=self.settings, rate=False,
                       kind="probe")
        found = self.architect.throughput("charlm", str(cfg["preset"]), str(cfg["dataset"]))
        return found or (6_000.0, "assumed 6,000 tokens/s per run (the probe failed)")

    def _duplicate(self, spec: ExperimentSpec, arm: str) -> list[str]:
        """The novelty check again on the final spec (the Architect sized seeds and budget):
        an arm whose runs are already stored elsewhere is adopted, not run again."""
        from airlab.agents.researcher import find_duplicate

        idea = self.model_ideas.get(arm) or self.ideas.get(arm)
        if idea is None or idea.needs_code:  # its arm gets its switch only once the code exists
            return []
        dup = find_duplicate(self.store, spec, arm, self.settings)
        return [f"novelty: arm {arm} has the runs of experiment {dup} (identical configs): "
                "they are adopted, not run again"] if dup else []

    def _spec(self, d: Mapping[str, Any]) -> ExperimentSpec:
        from airlab.spec import ExperimentSpec

        return ExperimentSpec.model_validate(dict(d))

    def _write_review(self, session: str, number: int, spec: ExperimentSpec) -> Path:
        import yaml

        folder = self.settings.home / "sprints" / session / f"{number:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "spec.yaml"
        path.write_text("# Edit this spec or leave it as it is, then continue the sprint.\n"
                        + yaml.safe_dump(spec.to_dict(), sort_keys=False))
        return path

    def _read_review(self, path: Path, old: Mapping[str, Any]) -> dict[str, Any]:
        from airlab.check import load_checked

        spec = load_checked(str(path), self.settings)
        d = spec.to_dict()
        if d.get("name") != old.get("name"):
            raise AirlabError(f"{path}: name: the reviewed spec must keep the sprint's "
                              f"experiment name '{old.get('name')}'",
                              "change the arms, seeds or budget, not the name")
        return d

    def _runs(self, spec: ExperimentSpec, deadline: float, label: str) -> dict[str, Any]:
        from airlab import plan as plan_module
        from airlab.experiment import run_experiment, store_plans

        plans = plan_module.plan_runs(spec, self.settings)
        exp_id, _ = store_plans(spec.name, spec, plans, self.store, kind="experiment")
        adopted = team_store.adopt_results(self.store, exp_id, host=socket.gethostname())
        if adopted:
            self.reporter.phase(label, "runs", f"{adopted} run(s) adopted from earlier sprints "
                                "(same run key on this host)")
        if time.time() >= deadline:
            raise AirlabError(f"sprint {label}: the time box ended before its runs started",
                              "give the sprint more --minutes")
        out = run_experiment(spec, self.store, self.executor, settings=self.settings,
                             reporter=self.reporter.runs(spec.name), deadline=deadline)
        c = out.runs
        return {"experiment": spec.name, "planned": c.planned, "reused": c.reused,
                "adopted": adopted, "ran": c.ran, "failed": c.failed,
                "incomplete": getattr(c, "incomplete", 0),
                "rating": out.verdict.rating if out.verdict is not None else None}

    def _tell(self, prop: Mapping[str, Any], val: Any, spec: ExperimentSpec) -> None:
        """The explore sprint's outcome back to the idea's Optuna study: the arm's
        time-to-target ratio (None: no ratio, the trial failed)."""
        if prop.get("kind") != "explore" or prop.get("trial") is None:
            return
        from airlab.agents.researcher import Proposal

        res = val.arms.get(prop["idea"])
        self.researcher(0).tell(Proposal.from_dict(prop["researcher"]),
                                res.ratio if res is not None else None)

    def _post(self, spec: ExperimentSpec, rec: Mapping[str, Any]) -> Path:
        from airlab.report.post import experiment_dir

        folder = experiment_dir(self.settings.home, spec.name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sprint.md").write_text(sprint_md(rec), encoding="utf-8")
        return folder

    def _outcome(self, row: Mapping[str, Any]) -> SprintOutcome:
        rec = dict(row.get("record") or {})
        val = rec.get("validation") or {}
        return SprintOutcome(row["session"], int(row["number"]), str(row["kind"]),
                             str(row["status"]), row.get("experiment"), row.get("idea"),
                             val.get("rating"), Path(rec["folder"]) if rec.get("folder")
                             else None, rec, rec.get("error", ""))


def _config_of(arm: ArmSpec) -> tuple[Any, ...]:
    """An arm's switches and options, comparable (names aside)."""
    return (tuple(sorted(arm.use)), tuple(sorted((k, repr(v)) for k, v in arm.options.items())))


def _name(session: str, number: int, what: str) -> str:
    from airlab.spec import slug

    return slug(f"sprint.{session}.{number:03d}.{what}", 100)


def _fmt_ratio(r: Mapping[str, Any]) -> str:
    g = r.get("ratio")
    if g is None:
        return "no time-to-target"
    lo, hi = r.get("ci_low"), r.get("ci_high")
    ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
    return f"{g:.2f}x{ci}"


def _arm_line(r: Mapping[str, Any]) -> str:
    return (f"{r['arm']}: {r['verdict']}, {_fmt_ratio(r)}"
            f"{' (wins)' if r.get('wins') else ''}")


def sprint_md(rec: Mapping[str, Any]) -> str:
    """The team's reasoning for one sprint, phase by phase (beside the experiment's post)."""
    prop = rec.get("proposal") or {}
    lines = [f"# Sprint: {rec.get('kind', 'explore')}", ""]
    lines += ["## Ideas", "", prop.get("summary", ""), ""]
    res = prop.get("researcher") or {}
    for c in res.get("candidates", []):
        nov = c.get("novelty") or {}
        sim = ", ".join(f"{n} {s:.2f}" for n, s in (nov.get("similar") or [])[:3])
        ev = c.get("expected_value")
        ev_text = "proposed by the model" if c.get("source") == "model" \
            else f"expected value {float('nan') if ev is None else ev:.3g}"
        lines.append(f"- **{c.get('idea')}** ({c.get('aspect')}, {c.get('area')}): {ev_text}; "
                     f"{'; '.join(c.get('reasons', []))}"
                     f"{'; similar: ' + sim if sim else ''}"
                     f"{'; known as ' + nov['known_as'] if nov.get('known_as') else ''}")
    d = rec.get("design") or {}
    lines += ["", "## Design", "", f"- seeds: {d.get('seeds_reason', '')}",
              f"- budget: {d.get('budget_reason', '')}"]
    lines += [f"- note: {n}" for n in d.get("notes", [])]
    impl = rec.get("implementation") or {}
    lines += ["", "## Implementation", "", f"Source: {impl.get('source', '')}; "
              f"{impl.get('runs', 0)} runs planned.", ""]
    for a in impl.get("arms", []):
        lines.append(f"- {a['arm']}: {' '.join('--use_' + u for u in a['use']) or '(none)'} "
                     f"{a['options'] or ''}")
    runs = rec.get("runs") or {}
    lines += ["", "## Runs", "", ", ".join(f"{k} {v}" for k, v in runs.items()
                                           if k != "experiment")]
    val = rec.get("validation") or {}
    lines += ["", "## Validation", "", f"Rated {val.get('rating')}/10 ({val.get('band')}).", ""]
    for r in (val.get("arms") or {}).values():
        lines.append(f"- {_arm_line(r)}; quality {r.get('quality')}")
    pred = val.get("prediction")
    if pred:
        p = pred.get("prediction") or {}
        obs = pred.get("observed")
        lines += ["", f"Prediction: {p.get('metric')} {p.get('kind')} {p.get('expected')} "
                      f"[{p.get('low')}, {p.get('high')}] ({p.get('direction')}); observed "
                      f"{'n/a' if obs is None else format(obs, '.4g')}: "
                      f"{'hit' if pred.get('hit') else 'miss'}"
                      + ("" if pred.get("hit") or pred.get("miss_by") is None
                         else f" by {pred['miss_by']:.3g}") + "."]
    lines += [""] + [f"- {c}" for c in val.get("critique", [])]
    mc = val.get("llm_critique")
    if mc:
        lines += ["", f"The model's critique ({mc.get('by')}; it does not change the rating "
                      f"{val.get('rating')}/10):", ""]
        lines += [f"- {c}" for c in mc.get("lines", [])]
        if mc.get("ungrounded_numbers"):
            lines.append(f"- (numbers not in the statistics: "
                         f"{', '.join(mc['ungrounded_numbers'])})")
    lines += _model_md(rec)
    return "\n".join(lines) + "\n"


def _model_md(rec: Mapping[str, Any]) -> list[str]:
    """The sprint post's account of the language model: which parts it gave, at what cost."""
    llm = rec.get("llm") or {}
    failed = rec.get("failed_implementations") or []
    if not llm and not failed:
        return []
    tok = llm.get("tokens") or {}
    models = ", ".join(tok.get("models") or [str(llm.get("model"))])
    lines = ["", "## Language model", ""]
    if llm:
        replay = (f" Replayed from the answers stored with sprint {llm['replay_of']}: no model "
                  "was called; the counts are the original's." if llm.get("replay_of") else "")
        lines += [f"Model {models}: {tok.get('calls', 0)} calls ({tok.get('failed', 0)} without "
                  f"a usable answer), {tok.get('prompt_tokens', 0):,} prompt + "
                  f"{tok.get('completion_tokens', 0):,} completion tokens.{replay}", ""]
        for part, how in (llm.get("parts") or {}).items():
            lines.append(f"- {part}: {how}")
        for w in llm.get("warnings") or []:
            lines.append(f"- warning: {w}")
        code = llm.get("code") or {}
        if code.get("ok"):
            committed = "committed to " if (code.get("attempts") or [{}])[-1].get("commit") \
                else ""
            lines.append(f"- generated technique `--use_{code['switch']}`: passed the "
                         f"sandboxed contract check after {len(code.get('attempts') or [])} "
                         f"attempt(s); sha256 {code.get('sha256')}; stored as "
                         f"{code.get('path')}; {committed}{code.get('git')}")
            lines += [f"  - attempt {a.get('attempt')} failed the check: {a.get('reason')}"
                      for a in code.get("attempts") or [] if not a.get("ok")]
    for f in failed:
        lines.append(f"- failed implementation of {f.get('idea')} (`--use_{f.get('switch')}`) "
                     f"after {len(f.get('attempts') or [])} attempt(s): {f.get('reason')}")
    return lines


# ----------------------------------------------------------------------------- the loop


@dataclass
class AutoOutcome:
    session: str
    sprints: list[SprintOutcome]
    recipes: list[dict[str, Any]]
    stopped: str


def _winner_part(sprint_rec: Mapping[str, Any], base: ArmSpec) -> dict[str, Any] | None:
    """The idea's arm of an explore sprint as a recipe part (its switches and options beyond
    the base), when it won."""
    prop = sprint_rec.get("proposal") or {}
    val = sprint_rec.get("validation") or {}
    idea = prop.get("idea")
    res = (val.get("arms") or {}).get(idea) if idea else None
    if not res or not res.get("wins"):
        return None
    arm = next((a for a in (sprint_rec.get("spec") or {}).get("arms", [])
                if a.get("name") == idea), None)
    if arm is None:
        return None
    use = [u for u in arm.get("use", []) if u not in base.use]
    opts = {k: v for k, v in (arm.get("options") or {}).items() if base.options.get(k) != v}
    return {"idea": idea, "use": use, "options": opts, "ratio": res.get("ratio")}


def run_auto(team: Team, *, session: str, sprints: int | None = None,
             hours: float | None = None, tokens: float = 400_000, minutes: float = 15.0,
             seeds: Sequence[int] = SELECTION_SEEDS, topic: str | None = None) -> AutoOutcome:
    """Sprint after sprint until ``sprints`` are done or ``hours`` of sprint time are spent.
    Restarted with the same ``session``, it continues: the open sprint resumes, the state
    (current recipe, winners, candidates) comes from the store."""
    if sprints is None and hours is None:
        raise AirlabError("auto needs a budget", "give --sprints N or --hours H")
    row = team_store.open_session(team.store, session, seed=team.seed, setup={
        "sprints": sprints, "hours": hours, "tokens": tokens, "minutes": minutes,
        "seeds": list(seeds), "topic": topic, "options": {**LOOP_OPTIONS, **team.options}})
    setup = row["setup"]
    # Every sprint of a session shares its options (they are in every run key): a restarted
    # session keeps the ones it started with.
    team.options = dict(setup.get("options", team.options))
    # A restarted session keeps its setup (the same budget and seeds) unless the budget is
    # raised on the command line.
    sprints = sprints if sprints is not None else setup.get("sprints")
    hours = hours if hours is not None else setup.get("hours")
    tokens = float(setup.get("tokens") or tokens)
    seeds = list(setup.get("seeds") or seeds)
    team.seed = int(row["seed"])
    done: list[SprintOutcome] = []
    stopped = ""
    began = time.time()
    while True:
        state = _replay_state(team.store, session)
        rows = team_store.list_sprints(team.store, session)
        finished = [r for r in rows if r["status"] in ("done", "failed")]
        open_rows = [r for r in rows if r["status"] == "open"]
        # Sprint time spent: a killed sprint's time before this process started is not
        # counted while it is open (the loop was not running), only once it finishes.
        now = time.time()
        spent = sum((r["finished_at"] - r["started_at"]) if r["finished_at"]
                    else now - max(r["started_at"], began) for r in rows)
        if sprints is not None and len(finished) >= sprints and not open_rows:
            stopped = f"{len(finished)} sprints done"
            break
        if hours is not None and spent >= hours * 3600 and not open_rows:
            stopped = f"{spent / 3600:.2f} h of sprint time spent"
            break
        session_end = time.time() + (hours * 3600 - spent) if hours is not None else None
        if open_rows:
            r = open_rows[0]
            out = team.sprint(session=session, number=r["number"], session_end=session_end)
        else:
            left = (sprints - len(finished)) if sprints is not None else None
            took = [r["finished_at"] - r["started_at"] for r in finished if r["finished_at"]]
            if hours is not None and took:  # sprints that still fit, at the mean sprint's time
                fit = int((hours * 3600 - spent) // (sum(took) / len(took)))
                left = fit if left is None else min(left, fit)
            kind, kw = _next(team, state, seeds, tokens, left)
            box = minutes if session_end is None \
                else max(1.0, min(minutes, (session_end - time.time()) / 60))
            out = team.sprint(session=session, number=len(rows) + 1, kind=kind,
                              minutes=box, tokens=tokens, topic=topic,
                              session_end=session_end, **kw)
        done.append(out)
        if out.status == "failed" and out.kind == "explore" and not out.idea:
            stopped = f"sprint failed before choosing an idea: {out.reason}"
            break
    _replay_state(team.store, session)  # the recipes table as the last sprint left it
    return AutoOutcome(session, done, team_store.list_recipes(team.store, session), stopped)


def _replay_state(store: Store, session: str) -> dict[str, Any]:
    """The loop's state, derived from the stored sprints (so a restart sees what a run saw):
    the current recipe (base), the winners against it, tested ideas, candidates."""
    base = DEFAULT
    winners: list[dict[str, Any]] = []
    tested: list[str] = []
    stacks_tried: list[list[str]] = []
    candidate: dict[str, Any] | None = None
    base_ratio: float | None = None  # the current recipe's confirmed ratio (None: default)
    confirms = 0
    on_base: dict[str, list[str]] = {}  # recipe name -> ideas tested on top of it
    since_win = 0  # explore sprints on the current recipe after its first winner
    for r in team_store.list_sprints(store, session):
        rec = r["record"]
        if r["kind"] == "explore" and r.get("idea"):
            tested.append(r["idea"])
            on_base.setdefault((rec.get("base") or {}).get("name", DEFAULT.name),
                               []).append(r["idea"])
        if r["status"] != "done":
            continue
        if r["kind"] == "explore":
            if (rec.get("base") or {}).get("name", DEFAULT.name) != base.name:
                continue  # tested on an earlier recipe: not a winner against the current one
            if winners:
                since_win += 1
            part = _winner_part(rec, base)
            if part is not None:
                winners.append(part)
        elif r["kind"] == "stack":
            parts = (rec.get("proposal") or {}).get("parts") or []
            stacks_tried.append(sorted(p["idea"] for p in parts))
            arms = (rec.get("validation") or {}).get("arms") or {}
            s, b = arms.get("stack") or {}, arms.get("base") or {}
            base_ratio = b.get("ratio") if b else 1.0
            if s.get("wins") and (s.get("ratio") or 0) > (base_ratio or 1.0):
                spec_arm = next(a for a in rec["spec"]["arms"] if a["name"] == "stack")
                name = "+".join([*([base.name] if base.name != DEFAULT.name else []),
                                 *(p["idea"] for p in parts)])
                candidate = {"idea": name, "use": spec_arm["use"],
                             "options": spec_arm["options"], "parts": [p["idea"] for p in parts],
                             "selection": {"experiment": r["experiment"], **s,
                                           "seeds": rec["spec"]["seeds"]}}
                team_store.save_recipe(store, session, name, recipe=candidate,
                                       selection=candidate["selection"])
        elif r["kind"] == "confirm":
            confirms += 1
            parts = (rec.get("proposal") or {}).get("parts") or []
            res = ((rec.get("validation") or {}).get("arms") or {}).get("recipe") or {}
            # It holds if it still wins against the default configuration on fresh seeds and
            # beats the current recipe's latest ratio against it (measured beside the stack
            # in the stack sprint, else the recipe's own confirmation): docs/team.md.
            holds = bool(res.get("wins")) and (res.get("ci_low") is None or res["ci_low"] > 1)
            if holds and base_ratio is not None and (res.get("ratio") or 0) <= base_ratio:
                holds = False
            if parts:
                p = parts[0]
                sel = p.get("selection") or {}
                conf = {"experiment": r["experiment"], **res, "seeds": rec["spec"]["seeds"]}
                team_store.save_recipe(store, session, p["idea"], recipe=p, selection=sel,
                                       status="confirmed" if holds else "rejected",
                                       confirmation=conf)
                if holds:
                    base = ArmSpec(p["idea"], tuple(p["use"]), dict(p["options"]), "recipe")
                    base_ratio = res.get("ratio")
                    winners = []
                    since_win = 0
            candidate = None
    return {"base": base, "winners": winners, "tested": tested, "stacks_tried": stacks_tried,
            "candidate": candidate, "confirms": confirms, "since_win": since_win,
            "tested_on_base": on_base.get(base.name, [])}


def _next(team: Team, state: Mapping[str, Any], seeds: Sequence[int], tokens: float,
          left: int | None) -> tuple[str, dict[str, Any]]:
    """The next sprint: confirm a candidate, stack winners, else explore."""
    base: ArmSpec = state["base"]
    if state["candidate"] is not None:
        k = state["confirms"]
        fresh = [CONFIRM_SEED_BASE + 100 * k + i for i in range(len(seeds))]
        return "confirm", {"parts": [state["candidate"]], "seeds": fresh, "base": base}
    winners = sorted(state["winners"], key=lambda p: -(p.get("ratio") or 0))[:MAX_STACK_PARTS]
    names = sorted(p["idea"] for p in winners)
    # An idea is open when not yet tested on the current recipe; one tested on an earlier
    # recipe is open again only if it has options to tune (its best value may have moved).
    untested = [n for n in speed_ideas(team.ideas)
                if n not in state.get("tested_on_base", state["tested"])
                and (n not in state["tested"] or team.ideas[n].implementation.search)
                and not _adds_nothing(team.ideas[n], base)]
    # One winner is stacked on the recipe (and confirmed) once nothing is left to try, the
    # session is nearly spent (a stack and a confirmation still fit), or a few more ideas have
    # found no second winner to stack it with.
    want_stack = len(winners) >= 2 or (len(winners) == 1 and (
        not untested or (left is not None and left <= 3)
        or state.get("since_win", 0) >= SINGLE_WINNER_WAIT))
    if want_stack and names not in state["stacks_tried"]:
        return "stack", {"parts": winners, "seeds": list(seeds), "base": base}
    exclude = sorted(set(team.ideas) - set(untested))
    return "explore", {"seeds": list(seeds), "base": base, "exclude": exclude}


def _adds_nothing(idea: Idea, base: ArmSpec) -> bool:
    """Whether the idea's arm is already part of the base (its switches and options) and it
    has nothing to tune (with search ranges, Optuna proposes other values on the new base)."""
    if idea.implementation.search:
        return False
    arm = idea.arm
    top, _ = merge(idea.name, [base, ArmSpec(idea.name, tuple(arm.use), dict(arm.options))])
    return set(top.use) == set(base.use) and dict(top.options) == dict(base.options)


def leaderboard(store: Store, session: str | None = None) -> list[dict[str, Any]]:
    """Recipes, best confirmed first: time-to-target against the default configuration on
    the selection seeds and on the fresh confirmation seeds, side by side."""
    rows = []
    for r in team_store.list_recipes(store, session):
        sel, conf = r["selection"] or {}, r["confirmation"] or {}
        rows.append({"session": r["session"], "recipe": r["name"], "status": r["status"],
                     "use": r["recipe"].get("use", []), "options": r["recipe"].get("options", {}),
                     "selection": sel, "confirmation": conf})
    order = {"confirmed": 0, "candidate": 1, "rejected": 2}

    def key(x: dict[str, Any]) -> tuple[int, float]:
        g = (x["confirmation"] or {}).get("ratio") or (x["selection"] or {}).get("ratio") or 0
        return order.get(x["status"], 3), -float(g if math.isfinite(g) else 0)

    return sorted(rows, key=key)
