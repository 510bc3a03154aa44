"""The Architect: turns a chosen idea (or a stack of winners) into an experiment spec.

It decides three things and writes down why:

* **arms**: the baseline (the default configuration, or the session's current best recipe),
  the idea's arm with the Researcher's option values, and one ablation (the idea's declared or
  derived ablation; for a stack, the stack minus each part);
* **seeds**: enough pairs to see the predicted effect over the measured noise floor at 80 %
  power (``decisions.design_pairs``), at least 3 (the time-to-target interval needs 3
  reached pairs) and no more than fit the time box;
* **budget**: the idea's own budget (or the session's), cut so that the runs still to do fit
  the sprint's time box at the throughput measured on this machine (median of stored runs of
  the same resolved configuration, model fields included: ``check.measured_throughput``; a
  short probe run when the store has none).

Budgets count the workload's unit: tokens for charlm, samples for vision.

The spec it returns passes ``check_spec`` (the same checks as `airlab check`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airlab.errors import AirlabError

if TYPE_CHECKING:
    from airlab.settings import Settings
    from airlab.spec import Arm, ExperimentSpec
    from airlab.store import Store
    from airlab.store.records import DesignRecord

MIN_SEEDS = 3  # the time-to-target interval needs 3 reached seed pairs
MAX_SEEDS = 8
# Below this a run says little about the idea: 30k characters of text; 2,000 images.
MIN_BUDGET = {"tokens": 30_000.0, "samples": 2_000.0}
RUN_OVERHEAD_S = 4.0  # per run: fork, model build, final evaluation and sample (measured: bench)
EVAL_SHARE = 0.12  # evaluation time as a share of training time at the default eval settings
BOX_SHARE = 0.80  # of the time box given to runs (the rest: design, analysis, post, slack)


@dataclass(frozen=True)
class Design:
    spec: ExperimentSpec
    seeds_reason: str
    budget_reason: str
    throughput: float  # units/s per run used for the estimate
    throughput_source: str
    runs_to_do: int
    estimate_s: float  # wall time the runs should take with the workers given
    notes: list[str]
    versus: list[list[str]] = field(default_factory=list)  # arm pairs compared head to head

    def record(self) -> DesignRecord:
        """What the sprint keeps of it beside the spec: the reasons and the estimate."""
        from airlab.store.records import DesignRecord

        return DesignRecord(self.seeds_reason, self.budget_reason, self.throughput,
                            self.throughput_source, self.runs_to_do, self.estimate_s,
                            list(self.notes), [list(v) for v in self.versus])


def _floor_sd_diff(store: Store, config: Mapping[str, Any], budget: Mapping[str, float]
                   ) -> tuple[float, float, str]:
    from airlab.store import floor_key, load_noise_floor

    try:
        floor = load_noise_floor(store, floor_key(config, budget), "val_loss")
    except Exception:  # noqa: BLE001 - an unreadable floor only loses the sizing
        floor = None
    if floor and math.isfinite(float(floor.get("sd_diff", math.nan))):
        return (float(floor["sd_diff"]), float(floor.get("df", 0)),  # df: the floor's error
                f"noise floor {floor.get('source', '')}".strip())
    return math.nan, math.nan, "none measured"


class Architect:
    """Designs sprint experiments. ``workers``: runs at once (the local pool's size)."""

    def __init__(self, store: Store, settings: Settings, *, workers: int = 2) -> None:
        self.store = store
        self.settings = settings
        self.workers = max(1, int(workers))

    # -- throughput ---------------------------------------------------------------------------

    def throughput(self, config: Mapping[str, Any]) -> tuple[float, str] | None:
        """Median units/s per run of stored runs of this resolved configuration (None: none
        stored)."""
        from airlab.check import measured_throughput

        found = measured_throughput(self.store, config)
        if not found:
            return None
        rate, n = found
        return rate, f"median of {n} runs of this configuration stored on this lab's machines"

    # -- the design ---------------------------------------------------------------------------

    def design(self, *, name: str, baseline: Arm, arms: Sequence[Arm],
               workload: str = "charlm", preset: str = "tiny", dataset: str = "pycode",
               tokens: float, minutes: float | None, effect: float | None = None,
               seeds: Sequence[int] | None = None, seed_base: int = 0,
               options: Mapping[str, Any] | None = None, hypothesis: str = "",
               area: str = "general", idea: str | None = None, fixed_budget: bool = False,
               done_runs: int = 0, rate: tuple[float, str] | None = None,
               target: float | None = None, unit: str = "tokens") -> Design:
        """The spec of one sprint experiment; ``tokens``: the budget per run in ``unit``.

        ``effect``: the predicted change of val_loss (sizes the seeds). ``seeds``: given (a
        session's selection or fresh confirmation seeds), else ``seed_base``.. sized here.
        ``fixed_budget``: keep ``tokens`` (an `auto` session compares every sprint at one
        budget); else cut it to fit ``minutes``. ``done_runs``: runs already stored (reused
        baselines) that will not run again. ``rate``: (units/s, source) when known.
        ``target``: a declared time-to-target value for every arm (else leave-one-seed-out
        targets from the baseline's finals).
        """
        from airlab.analysis.decisions import design_pairs
        from airlab.plan import resolve

        notes: list[str] = []
        arms = list(arms)
        if not arms:
            raise AirlabError(f"sprint design '{name}' has no arm to test",
                              "give the Architect the idea's arm")
        shared = dict(options or {})
        probe = resolve(workload=workload, preset=preset, dataset=dataset,
                        budget={unit: float(tokens)}, seed=seed_base, use=list(baseline.use),
                        options={**shared, **dict(baseline.options)}, settings=self.settings)
        config = probe.to_dict()
        if rate is None:
            rate = self.throughput(config)
        if rate is None:
            rate = (6_000.0, f"assumed 6,000 {unit}/s per run (nothing measured yet)")
            notes.append("no throughput measured on this machine yet: the budget uses an "
                         "assumed rate")
        units_per_s, rate_source = rate

        # Seeds: enough pairs for the predicted effect over the noise floor.
        n_arms = len(arms)
        if seeds is not None:
            chosen = list(seeds)
            seeds_reason = f"{len(chosen)} seeds given by the session"
        else:
            sd_diff, sd_df, floor_source = _floor_sd_diff(self.store, config, {unit: tokens})
            if math.isfinite(sd_diff) and effect and abs(effect) > 0:
                need = design_pairs(sd_diff, abs(effect), arms=n_arms, sd_df=sd_df)
                n = min(max(need, MIN_SEEDS), MAX_SEEDS)
                seeds_reason = (f"{need} pairs find the predicted effect {effect:+.3g} over "
                                f"the noise floor (sd_diff {sd_diff:.3g}, {floor_source}) at 80 % "
                                f"power with {n_arms} arm(s); using {n} "
                                f"(between {MIN_SEEDS} and {MAX_SEEDS})")
            else:
                n = MIN_SEEDS
                why = "no noise floor measured (run `airlab calibrate`)" \
                    if not math.isfinite(sd_diff) else "no predicted effect on val_loss"
                seeds_reason = f"{n} seeds, the minimum for a time-to-target interval: {why}"
            chosen = list(range(seed_base, seed_base + n))

        # Budget: what fits the box at the measured rate.
        total_runs = (1 + n_arms) * len(chosen)
        todo = max(0, total_runs - done_runs)
        rounds = math.ceil(todo / self.workers) if todo else 0

        def wall(tok: float) -> float:
            return rounds * (tok / units_per_s * (1 + EVAL_SHARE) + RUN_OVERHEAD_S)

        budget = float(tokens)
        if minutes is not None and rounds:
            box = minutes * 60.0 * BOX_SHARE
            if wall(budget) > box and not fixed_budget:
                n0 = len(chosen)
                while len(chosen) > MIN_SEEDS and wall(budget) > box:
                    chosen.pop()
                    total_runs = (1 + n_arms) * len(chosen)
                    todo = max(0, total_runs - done_runs)
                    rounds = math.ceil(todo / self.workers)
                if len(chosen) < n0:
                    seeds_reason += f"; cut to {len(chosen)} to fit the time box"
                per_run = box / max(rounds, 1) - RUN_OVERHEAD_S
                fit = per_run * units_per_s / (1 + EVAL_SHARE)
                least = MIN_BUDGET.get(unit, 1000.0)
                budget = float(max(least, math.floor(min(budget, fit) / 1000) * 1000))
                if budget < tokens:
                    notes.append(f"budget cut from {tokens:,.0f} to {budget:,.0f} {unit} to fit "
                                 f"{minutes:g} minutes")
            elif wall(budget) > box:
                notes.append(f"the runs need about {wall(budget) / 60:.1f} min, more than the "
                             f"{minutes:g}-minute box: runs cut at the box are kept incomplete")
        spec = self._spec(name=name, baseline=baseline, arms=arms, workload=workload,
                          preset=preset, dataset=dataset, budget={unit: budget}, seeds=chosen,
                          options=shared, hypothesis=hypothesis, area=area, idea=idea,
                          target=target)
        stored = self._stored(spec)
        if stored > done_runs:  # runs another experiment already has: adopted, not run
            todo = max(0, (1 + n_arms) * len(chosen) - stored)
            rounds = math.ceil(todo / self.workers) if todo else 0
        budget_reason = (f"{budget:,.0f} {unit} per run; {todo} of {total_runs} runs to do on "
                         f"{self.workers} worker(s) at {units_per_s:,.0f} {unit}/s per run "
                         f"({rate_source}) take about {wall(budget) / 60:.1f} min")
        return Design(spec, seeds_reason, budget_reason, units_per_s, rate_source, todo,
                      wall(budget), notes)

    def _stored(self, spec: ExperimentSpec) -> int:
        """Planned runs whose run key already finished in the store (any experiment)."""
        from airlab.plan import plan_runs
        from airlab.store.team import finished_run_keys

        keys = [p.run_key for p in plan_runs(spec, self.settings)]
        return len(finished_run_keys(self.store, keys))

    def _spec(self, *, name: str, baseline: Arm, arms: Sequence[Arm], workload: str,
              preset: str, dataset: str, budget: Mapping[str, float], seeds: Sequence[int],
              options: Mapping[str, Any], hypothesis: str, area: str,
              idea: str | None, target: float | None = None) -> ExperimentSpec:
        from pydantic import ValidationError

        from airlab.check import check_spec
        from airlab.spec import ExperimentSpec

        data: dict[str, Any] = {
            "name": name, "hypothesis": hypothesis[:1900], "area": area, "workload": workload,
            "preset": preset, "dataset": dataset, "budget": dict(budget),
            "baseline": baseline.model_dump(), "arms": [a.model_dump() for a in arms],
            "seeds": list(seeds), "options": dict(options), "idea": idea,
        }
        if target is not None:
            data["target"] = float(target)
        try:
            spec = ExperimentSpec.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise AirlabError(f"sprint design '{name}' is not a valid spec: {where}: "
                              f"{err['msg']}", "the idea's arms or options need fixing") from None
        problems = check_spec(spec, settings=self.settings)
        if problems:
            raise AirlabError(f"sprint design '{name}' fails `airlab check`: "
                              f"{problems[0].message}", problems[0].hint)
        return spec

