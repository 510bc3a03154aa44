"""The offline roles in one place: the four strategies the team holds when no language model is
set, and the ones every model-backed role wraps and falls back to.

Each adapts a plain role (``researcher.Researcher``, ``architect.Architect``, ``coder.Coder``,
``validator.Validator``) to its Protocol in ``agents.roles``: the plain roles know nothing of
sprints; these read what they need from the sprint context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airlab.agents.architect import Architect, Design
from airlab.agents.coder import Coder
from airlab.agents.validator import Validator
from airlab.store.records import ProposalRecord

if TYPE_CHECKING:
    from airlab.agents.knowledge import Idea
    from airlab.agents.researcher import Researcher
    from airlab.agents.roles import Draft, IsBase, Lab, Roles, SprintContext
    from airlab.experiment import ExperimentOutcome
    from airlab.spec import ExperimentSpec
    from airlab.store.records import ImplementationRecord, ValidationRecord


class OfflineResearcher:
    """The seeded bandit over the knowledge base, with Optuna tuning (``agents.researcher``)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def _researcher(self, seed: int) -> Researcher:
        from airlab.agents.researcher import Researcher

        return Researcher(self.lab.store, self.lab.settings, seed=seed, ideas=self.lab.ideas)

    def propose(self, ctx: SprintContext, is_base: IsBase) -> ProposalRecord:
        q = ctx.record.request
        r = self._researcher(self.lab.seed * 1000 + ctx.number)
        p = r.propose(topic=q.topic, area=q.area, idea=q.idea,
                      exclude=(*q.exclude, *ctx.skipped), is_base=is_base,
                      discount=dict(q.discount), retune=q.retune)
        chosen = p.chosen
        others = ", ".join(c.idea for c in p.candidates if c.idea != chosen.idea)
        tuned = f" with {p.options}" if p.options else ""
        return ProposalRecord(
            "explore", chosen.idea, f"chose {chosen.idea}{tuned} over "
            f"{others or 'nothing else'}: {p.reasons}", dict(p.options), p.trial, p.to_dict())

    def tell(self, ctx: SprintContext, proposal: ProposalRecord,
             validation: ValidationRecord) -> None:
        """The idea arm's time-to-target ratio back to its Optuna study (no ratio: FAIL)."""
        if proposal.kind != "explore" or proposal.trial is None or proposal.idea is None:
            return
        from airlab.agents.researcher import Proposal

        res = validation.arms.get(proposal.idea)
        r = self._researcher(0)
        r.tell(Proposal.from_dict(proposal.researcher), res.ratio if res is not None else None)


class OfflineArchitect:
    """Seeds from the noise floor, a budget that fits the box at the measured throughput."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.architect = Architect(lab.store, lab.settings, workers=lab.workers)

    def design(self, ctx: SprintContext, draft: Draft) -> Design:
        return self.architect.design(
            name=draft.name, baseline=draft.baseline, arms=draft.arms, workload=draft.workload,
            preset=draft.preset, dataset=draft.dataset, tokens=draft.tokens,
            minutes=draft.minutes, effect=draft.effect, seeds=draft.seeds,
            options=draft.options, hypothesis=draft.hypothesis, area=draft.area,
            idea=draft.idea, fixed_budget=draft.fixed_budget, rate=self.rate(draft),
            target=draft.target, unit=draft.unit)

    def rate(self, draft: Draft) -> tuple[float, str]:
        """Units/s per run on this machine of the draft's baseline as resolved (model fields
        included): stored runs of that configuration, else a short probe (one run per worker
        at once, as the sprint's runs will go; stored as experiment ``probe.<hash>`` so the
        next design reads it from the store)."""
        import hashlib
        import json

        from airlab.check import throughput_key
        from airlab.experiment import run_experiment
        from airlab.plan import resolve
        from airlab.spec import ExperimentSpec

        lab, d = self.lab, draft
        options = {**d.options, **d.baseline.options}
        cfg = resolve(workload=d.workload, preset=d.preset, dataset=d.dataset,
                      budget={d.unit: 1.0}, seed=0, use=list(d.baseline.use),
                      options=options, settings=lab.settings).to_dict()
        found = self.architect.throughput(cfg)
        if found is not None:
            return found
        key = hashlib.sha256(json.dumps(throughput_key(cfg), sort_keys=True).encode())
        probe = {"tokens": 20_000.0, "samples": 5_000.0}.get(d.unit, 20_000.0)
        spec = ExperimentSpec.model_validate({
            "name": f"probe.{cfg['preset']}.{key.hexdigest()[:10]}",
            "hypothesis": f"throughput probe for the Architect: {d.workload} {cfg['preset']} "
                          f"on {cfg['dataset']}",
            "workload": d.workload, "preset": d.preset, "dataset": d.dataset,
            "budget": {d.unit: probe}, "seeds": list(range(lab.workers)),
            "baseline": d.baseline.model_dump(), "options": {**d.options, "eval_points": 1}})
        run_experiment(spec, lab.store, lab.executor, settings=lab.settings, rate=False,
                       kind="probe")
        found = self.architect.throughput(cfg)
        return found or (6_000.0, f"assumed 6,000 {d.unit}/s per run (the probe failed)")


class OfflineCoder:
    """Registered techniques only: plans every arm, refuses ideas that need code."""

    def __init__(self, lab: Lab) -> None:
        self.coder = Coder(lab.settings)

    def check_idea(self, idea: Idea) -> None:
        self.coder.check_idea(idea)

    def implement(self, ctx: SprintContext, spec: ExperimentSpec
                  ) -> tuple[ExperimentSpec, ImplementationRecord]:
        return spec, self.coder.implement(spec)


class OfflineValidator:
    """The rubric's verdict, each arm's result, the idea's prediction scored."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.validator = Validator(lab.store)

    def validate(self, ctx: SprintContext, spec: ExperimentSpec,
                 outcome: ExperimentOutcome | None) -> ValidationRecord:
        design = ctx.record.design
        return self.validator.validate(
            spec.name, outcome.analysis if outcome is not None else None,
            outcome.verdict if outcome is not None else None,
            ideas={**self.lab.ideas, **self.lab.model_ideas},
            versus=[(a, b) for a, b in design.versus] if design is not None else ())


def offline_roles(lab: Lab) -> Roles:
    from airlab.agents.roles import Roles

    return Roles(OfflineResearcher(lab), OfflineArchitect(lab), OfflineCoder(lab),
                 OfflineValidator(lab))
