"""Calibration: measure a workload's noise floor by real A/A runs, and run the lab's controls.

* :func:`calibrate` runs an experiment's baseline (same workload, preset, dataset, budget and
  options) on two DISJOINT seed sets A and B. The same config on identical seeds would give
  identical runs (delta exactly 0, which tests nothing); on disjoint seeds the two sets differ
  only by seed noise. :func:`airlab.analysis.decisions.noise_floor` of every metric the runs
  report is stored (``store/state.py``) under the baseline's workload, preset, dataset and
  budget, where :func:`airlab.analysis.compare.analyze` finds it: the equivalence margin
  (1 sd at its lower 80 % bound), the MDE, time-to-target slack and the report use it. The
  A/A comparison of the two sets is decided too: it must not come out better or worse (it
  would at most 5% of the time).
* :func:`run_controls` runs the library's controls through the normal pipeline and checks
  each arm's verdict against what it must be: a learning rate far too high must come out
  worse (positive control), dynamic int8 of a tiny model equivalent (null control). A FAIL
  means the lab no longer detects what it should.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airlab.analysis import decisions
from airlab.analysis.compare import QUALITY_METRICS
from airlab.analysis.decisions import NoiseFloor
from airlab.errors import AirlabError
from airlab.experiment import Reporter, run_experiment
from airlab.store import floor_key, save_noise_floor
from airlab.validate import next_seeds

if TYPE_CHECKING:
    from airlab.executors.base import Executor
    from airlab.settings import Settings
    from airlab.spec import ExperimentSpec
    from airlab.store import Store

# Per set: 5 + 5 runs (df 8). The floor is an estimate, and its error is carried (the margin
# at the sd's lower 80 % bound, designs at its upper one): at 3 + 3 (df 4) that costs a margin
# of 0.82 sd instead of 0.85 and designs 1.56x the sd instead of 1.32x, i.e. ~40 % more
# seeds in every experiment sized from it (docs/decision_rules.md).
DEFAULT_SEEDS = 5
# The controls in the library and the verdict each arm must get (against the baseline).
CONTROLS: dict[str, dict[str, str]] = {
    "controls_positive": {"lr_x30": "worse"},
    "controls_null": {"ptq_int8": "equivalent"},
}


@dataclass
class Calibration:
    """The outcome of one calibration: the floors stored and the A/A check."""

    name: str  # the calibration experiment in the store
    key: dict[str, str]  # workload, preset, dataset, budget
    seeds_a: list[int]
    seeds_b: list[int]
    floors: dict[str, NoiseFloor]  # metric -> floor
    aa: dict[str, str] = field(default_factory=dict)  # metric -> A/A decision label
    failed: int = 0

    @property
    def aa_ok(self) -> bool:
        """No false "better"/"worse" between the two seed sets on any metric decided."""
        return all(v not in ("better", "worse") for v in self.aa.values())


@dataclass
class ControlResult:
    control: str
    arm: str
    expected: str
    observed: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.expected == self.observed


def calibration_name(spec: ExperimentSpec) -> str:
    return f"{spec.name}.calibrate"


def calibration_spec(spec: ExperimentSpec, seeds: int = DEFAULT_SEEDS) -> ExperimentSpec:
    """The baseline alone on 2 x ``seeds`` seeds (sets A and B are the two halves)."""
    if seeds < 2:
        raise AirlabError(f"--seeds must be at least 2 per set, got {seeds}",
                          f"give --seeds {DEFAULT_SEEDS} ({DEFAULT_SEEDS} + {DEFAULT_SEEDS} "
                          "runs) or at least 2")
    all_seeds = next_seeds([], 2 * seeds)
    return spec.model_copy(update={
        "name": calibration_name(spec), "arms": [], "seeds": all_seeds, "sweep": None,
        "hypothesis": f"A/A noise floor of {spec.name}'s baseline on disjoint seed sets"})


def calibrate(spec: ExperimentSpec, store: Store, executor: Executor, *, seeds: int =
              DEFAULT_SEEDS, settings: Settings | None = None,
              reporter: Reporter | None = None) -> Calibration:
    """Run the A/A calibration of ``spec``'s baseline and store the noise floor of each metric.

    Finished runs are reused (calling again with the same seeds runs nothing new).
    """
    cal = calibration_spec(spec, seeds)
    out = run_experiment(cal, store, executor, settings=settings, reporter=reporter, rate=False,
                         kind="calibration")
    rows = {r["seed"]: r for r in out.runs.rows}
    finished = [r for r in rows.values() if r["state"] == "finished"]
    if not finished:
        raise AirlabError(f"calibration '{cal.name}': no run finished",
                          "check the spec with `airlab check` and rerun")
    key = floor_key(finished[0]["config"], cal.budget)
    half = len(cal.seeds) // 2
    set_a, set_b = cal.seeds[:half], cal.seeds[half:]
    mets = store.metrics([r["id"] for r in finished])

    def values(seed_set: list[int], metric: str) -> list[float]:
        got = []
        for s in seed_set:
            r = rows.get(s)
            v = mets.get(r["id"], {}).get(metric) if r and r["state"] == "finished" else None
            got.append(math.nan if v is None else float(v))
        return got

    names = sorted({m for r in finished for m, v in mets[r["id"]].items() if v is not None})
    floors: dict[str, NoiseFloor] = {}
    aa: dict[str, str] = {}
    checked = {spec.metric} if spec.metric in QUALITY_METRICS else {"val_loss"}
    for m in names:
        a, b = values(set_a, m), values(set_b, m)
        f = decisions.noise_floor(a, b)
        if not (math.isfinite(f.sd) and f.sd > 0):
            continue  # a constant (params, model_bytes): no noise to measure
        floors[m] = f
        save_noise_floor(store, key, m, f.to_dict(), cal.name)
        if m in checked:
            # The A/A check on the disjoint sets (pairs by position: different seeds). Only on
            # the quality metrics: a check per metric would be a dozen tests at 5% each, and
            # timings move with the machine's load, not with the seed.
            d = decisions.decide(a, {"B": b}, QUALITY_METRICS.get(m, spec.direction),
                                 decisions.default_margin(f.sd, f.df),
                                 margin_upper=decisions.margin_upper(f.sd, f.df))["B"]
            aa[m] = d.label
    return Calibration(cal.name, key, set_a, set_b, floors, aa,
                       failed=sum(r["state"] == "failed" for r in rows.values()))


def run_controls(store: Store, executor: Executor, *, settings: Settings | None = None,
                 reporter: Reporter | None = None,
                 names: list[str] | None = None) -> list[ControlResult]:
    """Run the library's controls through the pipeline; each arm's verdict vs the expected."""
    from airlab.check import load_checked

    results: list[ControlResult] = []
    for name in names or list(CONTROLS):
        expected = CONTROLS.get(name)
        if expected is None:
            raise AirlabError(f"no control named '{name}'",
                              f"the controls are {', '.join(CONTROLS)}")
        spec = load_checked(name, settings)
        out = run_experiment(spec, store, executor, settings=settings, reporter=reporter)
        a = out.analysis
        for arm, want in expected.items():
            row = next((r for r in a.rows if r.arm == arm), None) if a is not None else None
            if row is None or row.decision is None:
                results.append(ControlResult(name, arm, want, "missing",
                                             "the arm has no decision"))
                continue
            d = row.decision
            margin = a.margin.describe() if a is not None else ""
            detail = (f"Δ {a.metric if a else ''} = {d.mean_diff:+.4g} over {d.n} pairs, "
                      f"p Holm {d.p_holm:.3g}, TOST p Holm {d.p_tost_holm:.3g}, margin {margin}")
            results.append(ControlResult(name, arm, want, row.verdict, detail))
    return results


def describe_floor(c: Calibration) -> list[str]:
    """Lines for the terminal: the key, the floor of the main metrics, the A/A check."""
    key = ", ".join(f"{k} {v}" for k, v in c.key.items())
    lines = [f"{c.name}: sets A {c.seeds_a} and B {c.seeds_b} ({key})"]
    for m, f in sorted(c.floors.items()):
        lines.append(f"  {m}: mean {f.mean:.5g}, sd {f.sd:.3g} per run (df {f.df}), sd of a "
                     f"difference {f.sd_diff:.3g}; margin "
                     f"{decisions.MARGIN_SIGMAS:g} sd at its lower "
                     f"{100 * decisions.SD_CONFIDENCE:.0f}% bound = "
                     f"{decisions.default_margin(f.sd, f.df):.3g}"
                     + (f"; A/A: {c.aa[m]}" if m in c.aa else ""))
    lines.append("timings (train_seconds, tokens_per_s, energy) move with the machine's load: "
                 "their floor holds for a machine as loaded as during calibration")
    lines.append(f"A/A check on {', '.join(sorted(c.aa))}: " + (
        "no false better/worse" if c.aa_ok else
        "a false better/worse between identical configs: rerun with more seeds; if it "
        "persists, runs are not independent"))
    if c.failed:
        lines.append(f"{c.failed} run(s) failed: rerun `airlab calibrate` to retry them")
    return lines

