"""The rubric: each band, the caps, the critique's numbers, stored verdicts, A/A with real runs,
and the sequential run-until-decisive procedure."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import MICRO

from airlab.analysis import stats
from airlab.analysis.compare import Analysis, ArmRow, RunFacts
from airlab.decide import Look, look_schedule, run_until_decisive
from airlab.executors.base import Job
from airlab.executors.inprocess import InProcessExecutor
from airlab.experiment import rate_experiment, run_experiment
from airlab.run.result import RunResult
from airlab.spec import Arm, ExperimentSpec
from airlab.store import Store, latest_verdicts, list_verdicts
from airlab.validate import band_of, next_seeds, rate

FACTS = RunFacts(frozenset({("host", "cpu", "cpu")}), frozenset({("tokens", 3000.0)}),
                 frozenset({"pycode"}))




def analysis(base: Sequence[float], arm: Sequence[float], *, arm_means: dict[str, float]
             | None = None, efficiency: Any = None, failures: Sequence[str] = (),
             tolerance: float = 0.0, direction: str = "minimize") -> Analysis:
    """An Analysis built the way compare.analyze builds one, from per-seed values."""
    seeds = next_seeds([], len(base))
    spec = {"name": "x", "baseline": {"name": "base"}, "arms": [{"name": "arm"}],
            "seeds": seeds, "budget": {"tokens": 3000}, "dataset": "pycode",
            "metric": "val_loss", "direction": direction, "tolerance": tolerance}
    n_ok = sum(not math.isnan(v) for v in arm)
    b = ArmRow("base", True, seeds, list(base), len(seeds), len(seeds), 0, [],
               stats.summarize(base), means={"train_seconds": 10.0, "model_bytes": 4000.0})
    a = ArmRow("arm", False, seeds, list(arm), len(seeds), n_ok, len(failures), list(failures),
               stats.summarize(arm), means=arm_means or {"train_seconds": 10.0,
                                                          "model_bytes": 4000.0})
    a.comparison = stats.compare(base, arm, direction=direction)
    a.p_holm = stats.holm([a.comparison.p_value])[0]
    a.verdict = stats.verdict(a.comparison, adjusted_p=a.p_holm)
    b.verdict = "baseline"
    if efficiency is not None:
        a.efficiency = efficiency  # type: ignore[attr-defined]
    return Analysis("x", "val_loss", direction, spec, [b, a])


BASE = [3.00, 3.02, 2.99, 3.01, 2.98]
BETTER = [2.80, 2.83, 2.78, 2.82, 2.79]


def test_a_clear_win_with_full_rigor_is_publishable() -> None:
    eff = SimpleNamespace(ratio={"train_seconds": (2.4, 2.1, 2.7)}, reached=5, n=5,
                          size_ratio=None, latency_ratio=None, memory_ratio=None,
                          quality_drop=-0.2)
    v = rate(analysis(BASE, BETTER, efficiency=eff), FACTS)
    assert v.rating == 10 and v.band == "publishable"
    assert {k: b["points"] for k, b in v.breakdown.items()} == {"evidence": 3, "impact": 3,
                                                                "rigor": 4}
    assert v.best_arm == "arm" and not v.caps
    # Without a time-to-target ratio the same quality win still earns 8 (impact: quality only).
    v2 = rate(analysis(BASE, BETTER), FACTS)
    assert v2.rating == 8 and v2.band == "publishable"
    assert any("2x" in line for line in v2.critique)


def test_compression_at_equal_quality_is_an_improvement() -> None:
    same_quality = [3.01, 3.00, 3.00, 3.02, 2.98]
    v = rate(analysis(BASE, same_quality, arm_means={"train_seconds": 10.0,
                                                     "model_bytes": 1000.0}), FACTS)
    assert v.breakdown["impact"]["points"] == 3  # 4x smaller (exact) and quality kept
    assert v.breakdown["evidence"]["points"] == 0
    assert v.rating == 7 and v.band == "publishable"


def test_a_failed_seed_caps_a_win_at_good_progress() -> None:
    arm = [2.80, 2.83, math.nan, 2.82, 2.79]
    v = rate(analysis(BASE, arm, failures=["seed 256: diverged at step 12"]), FACTS)
    assert v.breakdown["rigor"]["checks"]["no_failures"] is False
    assert v.rating == 6 and v.band == "good progress"
    assert any("capped at 6" in line for line in v.critique)
    assert any("seed 256: diverged" in line and "--retry-failed" in line for line in v.critique)


def test_no_improvement_needs_work_and_says_how_many_seeds() -> None:
    tiny = [3.01, 2.99, 3.00, 2.995, 2.985]  # 0.004 lower on average, noisy pairs
    v = rate(analysis(BASE, tiny), FACTS)
    assert v.rating <= 4 and v.band == "needs work"
    under = next(line for line in v.critique if line.startswith("underpowered"))
    assert "minimum detectable effect is" in under and "nats at n = 5" in under
    assert "more seeds" in under
    # Worse quality: needs work too, and the critique names it.
    w = rate(analysis(BASE, [3.3, 3.31, 3.29, 3.32, 3.3]), FACTS)
    assert w.band == "needs work" and any("significantly worse" in c for c in w.critique)


def test_rigor_checks_each_cost_a_point() -> None:
    two_hosts = RunFacts(frozenset({("a", "cpu", "cpu"), ("b", "cpu", "cpu")}),
                         frozenset({("tokens", 3000.0), ("tokens", 6000.0)}),
                         frozenset({"synthetic"}))
    v = rate(analysis(BASE, BETTER), two_hosts)
    checks = v.breakdown["rigor"]["checks"]
    assert checks["same_hardware"] is False and checks["real_data_matched_budget"] is False
    assert v.rating == 6  # 3 + 1 + 2 -> capped at 6 anyway
    text = "\n".join(v.critique)
    assert "2 machines" in text and "synthetic" in text and "tokens=3000, tokens=6000" in text
    few = rate(analysis(BASE[:2], BETTER[:2]), FACTS)
    assert few.breakdown["rigor"]["checks"]["three_seeds"] is False
    assert any("run 1 more" in c and "256" in c for c in few.critique)


def test_bands_and_seed_sequence() -> None:
    assert [band_of(r) for r in (1, 4, 5, 6, 7, 10)] == [
        "needs work", "needs work", "good progress", "good progress", "publishable",
        "publishable"]
    assert next_seeds([42, 137, 256], 3) == [512, 1024, 2048]
    assert next_seeds([42, 7], 2) == [137, 256]
    assert len(set(next_seeds([], 14))) == 14
    assert look_schedule(3, 10, 2) == [3, 5, 7, 9, 10]
    assert look_schedule(3, 3, 2) == [3] and look_schedule(5, 3, 1) == [5]


# --------------------------------------------------------------------------- real runs


class InProcess(InProcessExecutor):
    """The real in-process executor, counting the runs it executes."""

    def __init__(self) -> None:
        super().__init__()
        self.ran: list[tuple[str, int]] = []

    def run(self, jobs: Sequence[Job], on_event: Any = None) -> Iterator[tuple[Job, RunResult]]:
        for job, result in super().run(jobs, on_event):
            self.ran.append((str(job.config.get("options", {}).get("label", "")),
                             int(job.config["seed"])))
            yield job, result


def micro_spec(name: str, arms: list[Arm], seeds: list[int]) -> ExperimentSpec:
    return ExperimentSpec(name=name, hypothesis="micro", dataset="pycode",
                          budget={"tokens": 3000}, options=dict(MICRO),
                          baseline=Arm(name="base"), arms=arms, seeds=seeds)


def test_a_a_with_real_runs_is_never_rated_an_improvement(db_url: str) -> None:
    store = Store(db_url)
    spec = micro_spec("aa", [Arm(name="same")], [42, 137, 256])
    out = run_experiment(spec, store, InProcess())  # rates once and stores the verdict
    v = out.verdict
    assert v is not None and v == rate_experiment(store, "aa")  # deterministic, not saved
    assert v.rating <= 4 and v.band == "needs work"
    assert v.breakdown["rigor"]["points"] == 4  # a rigorous null result is still not progress
    assert any("A/A" in c for c in v.critique)
    assert any("same: runs the baseline's exact configuration" in c for c in v.critique)
    stored = list_verdicts(store)
    assert len(stored) == 1 and stored[0]["rating"] == v.rating
    assert stored[0]["breakdown"]["rigor"]["checks"]["same_hardware"] is True
    assert stored[0]["critique"] == v.critique and stored[0]["rubric_version"]
    rate_experiment(store, "aa", save=True)
    assert len(list_verdicts(store)) == 2 and len(latest_verdicts(store)) == 1


class KilledOnce(InProcess):
    """Runs every job for real, except the first one ever given: its worker "dies" before it
    starts, and the result is what the local executor yields for a killed worker."""

    def __init__(self) -> None:
        super().__init__()
        self.killed = False

    def run(self, jobs: Sequence[Job], on_event: Any = None) -> Iterator[tuple[Job, RunResult]]:
        jobs = list(jobs)
        if jobs and not self.killed:
            self.killed = True
            yield jobs[0], RunResult.failed("worker killed by signal 9", infra=True)
            jobs = jobs[1:]
        yield from super().run(jobs, on_event)


def test_retry_failed_reexecutes_the_failed_run_and_only_it(db_url: str) -> None:
    store = Store(db_url)
    spec = micro_spec("retry", [Arm(name="rope", use=["rope"])], [42, 137])
    ex = KilledOnce()
    first = run_experiment(spec, store, ex)
    assert (first.planned, first.ran, first.failed) == (4, 4, 1) and len(ex.ran) == 3
    assert first.verdict is not None and any("--retry-failed" in c
                                             for c in first.verdict.critique)
    (lost,) = [r for r in store.runs(first.experiment_id) if r["state"] == "failed"]
    # A plain rerun leaves the failed run alone...
    again = run_experiment(spec, store, ex)
    assert (again.reused, again.ran) == (4, 0) and len(ex.ran) == 3
    # ... --retry-failed executes it (and nothing else) and the rubric sees no failure.
    retried = run_experiment(spec, store, ex, retry_failed=True)
    assert (retried.reused, retried.ran, retried.failed) == (3, 1, 0)
    assert ex.ran[3:] == [("", lost["seed"])]
    row = next(r for r in store.runs(first.experiment_id) if r["id"] == lost["id"])
    assert row["state"] == "finished" and row["attempts"] == 2
    assert retried.verdict is not None
    assert retried.verdict.breakdown["rigor"]["checks"]["no_failures"] is True
    assert retried.analysis is not None and all(r.finished == 2 for r in retried.analysis.rows)


def test_a_failed_teacher_fails_only_its_students_and_is_retried(db_url: str) -> None:
    store = Store(db_url)
    spec = micro_spec("kd", [Arm(name="kd", use=["distill"],
                                 options={"kd_teacher_tokens": 3000})], [42, 137])
    ex = KilledOnce()  # the first job is the first teacher (prerequisites run first)
    out = run_experiment(spec, store, ex)
    assert out.prerequisites is not None and out.prerequisites.failed == 1
    teacher = store.experiment("kd.teacher")
    assert teacher is not None and teacher["kind"] == "prerequisite"
    (dead,) = [r for r in store.runs(teacher["id"]) if r["state"] == "failed"]
    runs = {(r["arm"], r["seed"]): r for r in store.runs(out.experiment_id)}
    student = runs[("kd", dead["seed"])]
    assert student["state"] == "failed"
    assert student["reason"] == "teacher run failed: worker killed by signal 9"
    assert all(r["state"] == "finished" for k, r in runs.items() if k != ("kd", dead["seed"]))
    assert len(ex.ran) == 4  # one teacher and three students executed; that one never ran
    again = run_experiment(spec, store, ex, retry_failed=True)
    assert again.prerequisites is not None and again.prerequisites.failed == 0
    assert (again.reused, again.ran, again.failed) == (3, 1, 0) and len(ex.ran) == 6
    assert all(r["state"] == "finished" for r in store.runs(teacher["id"]))


# --------------------------------------------------------------------------- until decisive


def test_until_decisive_stops_at_the_first_decisive_look(db_url: str) -> None:
    store = Store(db_url)
    # A real, large effect: lr 3e-3 against a starved baseline at lr 1e-5 on micro runs.
    spec = micro_spec("dec", [Arm(name="fast", options={"lr": 3e-3})], [42, 137, 256])
    spec = spec.model_copy(update={"baseline": Arm(name="base", options={"lr": 1e-5,
                                                                         "min_lr": 1e-6})})
    ex = InProcess()
    looks: list[Look] = []
    d = run_until_decisive(spec, store, ex, max_seeds=6, step=1, on_look=looks.append)
    assert d.schedule == [3, 4, 5, 6] and d.alpha_per_look == pytest.approx(0.05 / 4)
    assert d.decided and len(d.looks) == 1 and d.looks[0].decisions == {"fast": "better"}
    assert len(ex.ran) == 6 and looks == d.looks


def test_until_decisive_adds_seeds_up_to_the_cap(db_url: str) -> None:
    store = Store(db_url)
    # An arm identical to the baseline (A/A) never decides: seeds are added up to the cap.
    spec = micro_spec("und", [Arm(name="copy", options={"lr": 0.001})], [42, 137, 256])
    ex = InProcess()
    d = run_until_decisive(spec, store, ex, max_seeds=6, step=2)
    assert d.schedule == [3, 5, 6] and len(d.looks) == 3 and not d.decided
    assert d.seeds == [42, 137, 256, 512, 1024, 2048]
    assert sorted({s for _, s in ex.ran}) == sorted(d.seeds)
    assert len(ex.ran) == 12  # finished runs were reused between looks, never rerun
    exp = store.experiment("und")
    assert exp is not None and exp["spec"]["seeds"] == d.seeds
