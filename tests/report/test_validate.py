"""The rubric: each band, the caps, the critique's numbers, stored verdicts, A/A with real runs,
and the sequential run-until-decisive procedure."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import MICRO
from scipy import stats as st

from airlab import validate
from airlab.analysis import decisions as D
from airlab.analysis import stats
from airlab.analysis.compare import (
    QUALITY_METRICS,
    Analysis,
    ArmRow,
    RunFacts,
    apply_decisions,
    is_quick,
)
from airlab.analysis.decisions import NoiseFloor
from airlab.decide import Look, look_schedule, run_until_decisive
from airlab.executors.base import Job
from airlab.executors.inprocess import InProcessExecutor
from airlab.experiment import rate_experiment, run_experiment
from airlab.run.result import RunResult
from airlab.spec import Arm, ExperimentSpec
from airlab.store import Store, latest_verdicts, list_verdicts, load_sequential_state
from airlab.validate import band_of, next_seeds, rate

FACTS = RunFacts(frozenset({("host", "cpu", "cpu")}), frozenset({("tokens", 3000.0)}),
                 frozenset({"pycode"}))




def analysis(base: Sequence[float], arm: Sequence[float], *, arm_means: dict[str, float]
             | None = None, efficiency: Any = None, failures: Sequence[str] = (),
             tolerance: float = 0.0, direction: str = "minimize", margin: float | None = 0.05,
             credit: str = "time", name: str = "x", metric: str = "val_loss",
             quality: tuple[Sequence[float], Sequence[float]] | None = None,
             floors: dict[str, NoiseFloor] | None = None,
             pathologies: dict[str, int] | None = None,
             more_arms: dict[str, Sequence[float]] | None = None,
             implausible: dict[str, list[str]] | None = None,
             sequential: dict[str, Any] | None = None) -> Analysis:
    """An Analysis built the way compare.analyze builds one, from per-seed values."""
    seeds = next_seeds([], len(base))
    extra = dict(more_arms or {})
    spec = {"name": name, "baseline": {"name": "base"},
            "arms": [{"name": "arm"}, *({"name": k} for k in extra)],
            "seeds": seeds, "budget": {"tokens": 3000}, "dataset": "pycode",
            "metric": metric, "direction": direction, "tolerance": tolerance,
            "margin": margin, "credit": credit}
    q_base, q_arm = quality if quality is not None else ([], [])

    def row(arm_name: str, values: Sequence[float], qv: Sequence[float], means: dict[str, float],
            fails: Sequence[str] = ()) -> ArmRow:
        n_ok = sum(not math.isnan(v) for v in values)
        return ArmRow(arm_name, arm_name == "base", seeds, list(values), len(seeds), n_ok,
                      len(fails), list(fails), stats.summarize(values), means=dict(means),
                      quality_values=list(qv))

    default = {"train_seconds": 10.0, "model_bytes": 4000.0}
    rows = [row("base", base, q_base, default),
            row("arm", arm, q_arm, arm_means or default, failures)]
    rows += [row(k, v, [], default) for k, v in extra.items()]
    if pathologies:
        rows[1].pathologies = dict(pathologies)
    for r in rows:  # runs the measuring side flagged: arm -> reasons (one run each)
        r.implausible = list((implausible or {}).get(r.arm, []))
        r.implausible_runs = len(r.implausible)
    qm = metric if metric in QUALITY_METRICS else "val_loss"
    a = Analysis(name, metric, direction, spec, rows, qm, QUALITY_METRICS.get(qm, "minimize"),
                 floors=floors or {}, credit=credit, quick=is_quick(name, spec),
                 sequential=sequential)
    apply_decisions(a)
    if efficiency is not None:
        rows[1].efficiency = efficiency
    return a


def eff(ratio: tuple[float, float, float], reached: int = 5, n: int = 5, **kw: Any) -> Any:
    """Efficiency of one arm: the time-to-target ratio (geo mean, CI) and other ratios."""
    nan3 = (math.nan, math.nan, math.nan)
    return SimpleNamespace(ratio={"train_seconds": ratio, "flops": nan3,
                                  "energy_kwh_est": nan3}, reached=reached, n=n,
                           size_ratio=kw.get("size"), latency_ratio=None,
                           memory_ratio=kw.get("memory"), quality_drop=math.nan)


BASE = [3.00, 3.02, 2.99, 3.01, 2.98]
BETTER = [2.80, 2.83, 2.78, 2.82, 2.79]
SAME = [3.001, 3.019, 2.992, 3.011, 2.979]  # within 0.002 of the baseline, seed by seed


def test_a_clear_win_with_full_rigor_is_publishable() -> None:
    v = rate(analysis(BASE, BETTER, efficiency=eff((2.4, 2.1, 2.7))), FACTS)
    assert v.rating == 10 and v.band == "publishable"
    assert {k: b["points"] for k, b in v.breakdown.items()} == {"evidence": 3, "impact": 3,
                                                                "rigor": 4}
    assert v.best_arm == "arm" and not v.caps
    assert v.breakdown["impact"]["decisions"] == {"arm": "better"}
    # Without a time-to-target ratio the same quality win still earns 8 (impact: quality only).
    v2 = rate(analysis(BASE, BETTER), FACTS)
    assert v2.rating == 8 and v2.band == "publishable"
    assert any("no time ratio measured" in line and "2x" in line for line in v2.critique)


def test_compression_credits_only_the_declared_ratio() -> None:
    small = {"train_seconds": 10.0, "model_bytes": 1000.0}
    # credit: size -> 4x smaller (exact) with quality equivalent: impact 3, rating 7.
    v = rate(analysis(BASE, SAME, arm_means=small, credit="size"), FACTS)
    assert v.breakdown["impact"]["points"] == 3 and v.breakdown["evidence"]["points"] == 0
    assert v.rating == 7 and v.band == "publishable"
    assert v.breakdown["impact"]["checks"]["quality_label"] == "equivalent"
    # The default credit (time) does not count the size: reported, not credited.
    t = rate(analysis(BASE, SAME, arm_means=small), FACTS)
    assert t.breakdown["impact"]["points"] == 1 and t.rating <= 4
    assert any("reported, not credited: size 4.00x" in c for c in t.critique)


def test_not_shown_worse_is_not_quality_kept() -> None:
    # 2-layer-like arm: worse by ~0.013 with noisy pairs, p > 0.05: the old rubric called it
    # "quality within tolerance"; without equivalence it is undecided and earns no impact.
    noisy_worse = [3.02, 3.01, 3.03, 3.00, 3.01]
    small = {"train_seconds": 10.0, "model_bytes": 2000.0}
    v = rate(analysis(BASE, noisy_worse, arm_means=small, credit="size", margin=0.01), FACTS)
    s = v.breakdown["impact"]["checks"]
    assert s["quality_kept"] is False and s["quality_label"] != "equivalent"
    assert v.breakdown["impact"]["points"] == 0 and v.rating <= 4
    text = "\n".join(v.critique)
    assert "toward better" not in text and not re.search(r"\bnan\b", text)


def test_a_failed_seed_caps_a_win_at_good_progress() -> None:
    arm = [2.80, 2.83, math.nan, 2.82, 2.79]
    v = rate(analysis(BASE, arm, failures=["seed 256: diverged at step 12"]), FACTS)
    assert v.breakdown["rigor"]["checks"]["no_failures"] is False
    assert v.rating == 6 and v.band == "good progress"
    assert any("capped at 6" in line for line in v.critique)
    assert any("seed 256: diverged" in line and "--retry-failed" in line for line in v.critique)


def test_undecided_arm_says_how_many_seeds_and_worse_arm_says_stop() -> None:
    tiny = [3.01, 2.99, 3.00, 2.995, 2.985]  # 0.004 lower on average, noisy pairs
    v = rate(analysis(BASE, tiny, margin=0.001), FACTS)
    assert v.rating <= 4 and v.band == "needs work"
    under = next(line for line in v.critique if line.startswith("arm: undecided"))
    assert "the smallest effect 5 seeds detect is" in under and "nats" in under
    assert "paired differences" in under
    # Worse quality: needs work; the critique says so plainly and does not ask for seeds.
    w = rate(analysis(BASE, [3.3, 3.31, 3.29, 3.32, 3.3]), FACTS)
    assert w.band == "needs work"
    line = next(c for c in w.critique if c.startswith("arm: worse on val_loss"))
    assert "Δ = +0.304 nats" in line and "more seeds will not turn it around" in line
    assert not any("toward better" in c or re.search(r"\bnan\b", c) for c in w.critique)


def test_zero_spread_is_undecided_not_p_zero() -> None:
    shifted = [b - 0.01 for b in BASE]  # every pair differs by exactly 0.01
    a = analysis(BASE, shifted)
    d = a.rows[1].decision
    assert d is not None and d.label == "undecided" and math.isnan(d.p) and math.isnan(d.dz)
    # With a stored noise floor the floor's sd of differences is used instead.
    floor = NoiseFloor(n=10, df=8, mean=3.0, sd=0.002, sd_diff=0.002 * math.sqrt(2))
    f = analysis(BASE, shifted, floors={"val_loss": floor}, margin=0.005)
    fd = f.rows[1].decision
    assert fd is not None and fd.label == "better" and math.isfinite(fd.p) and fd.p > 0
    # Inside a margin of 0.05 the same 0.01 gain is real but negligible (issue 22).
    g = analysis(BASE, shifted, floors={"val_loss": floor}).rows[1].decision
    assert g is not None and g.label == "equivalent" and g.shown == "better" and g.negligible


def test_margin_from_floor_or_provisional() -> None:
    floor = NoiseFloor(n=10, df=8, mean=3.0, sd=0.004, sd_diff=0.004 * math.sqrt(2))
    a = analysis(BASE, SAME, margin=None, floors={"val_loss": floor})
    # 1 sd at its lower 80% bound on the floor's 8 df (issue 22; it was 2 sd at face value).
    lower = 0.004 * math.sqrt(8 / st.chi2.ppf(0.8, 8))
    assert a.margin.source == "noise floor" and a.margin.value == pytest.approx(lower)
    assert a.margin.upper == pytest.approx(0.004 * math.sqrt(8 / st.chi2.ppf(0.2, 8)))
    assert a.rows[1].mde_source == "noise floor"
    p = analysis(BASE, SAME, margin=None, credit="size",
                 arm_means={"train_seconds": 10.0, "model_bytes": 1000.0})
    own = stats.summarize(BASE).sd * math.sqrt(4 / st.chi2.ppf(0.8, 4))
    assert p.margin.provisional and p.margin.value == pytest.approx(own)
    v = rate(p, FACTS)
    assert v.rating == 6 and any("provisional margin" in c for c in v.caps)


def test_best_arm_is_the_largest_credited_ratio() -> None:
    # Two arms, both equivalent in quality; "arm" is 2.7x faster, "fast" 5.6x faster.
    a = analysis(BASE, SAME, efficiency=eff((2.7, 2.3, 3.1)),
                 more_arms={"fast": [3.002, 3.018, 2.991, 3.012, 2.978]})
    a.rows[2].efficiency = eff((5.6, 4.9, 6.4))
    v = rate(a, FACTS)
    assert v.best_arm == "fast"
    assert v.breakdown["impact"]["checks"]["efficiency"].startswith(
        "time-to-target train_seconds 5.60x")


def test_memory_metric_is_the_saving_and_quality_is_val_loss() -> None:
    base_mem, arm_mem = [100.0, 101.0, 99.0, 100.5, 99.5], [40.0, 41.0, 39.5, 40.2, 39.8]
    a = analysis(base_mem, arm_mem, metric="peak_mem_mb", margin=None,
                 quality=(BASE, SAME), floors={"val_loss": NoiseFloor(10, 8, 3.0, 0.004,
                                                                       0.0057)},
                 arm_means={"peak_mem_mb": 40.1, "train_seconds": 13.0})
    a.rows[0].means["peak_mem_mb"] = 100.0
    v = rate(a, FACTS)
    assert a.quality_metric == "val_loss" and a.rows[1].quality is not None
    assert a.rows[1].quality.label == "equivalent"
    assert v.breakdown["impact"]["checks"]["efficiency"].startswith("peak_mem_mb saving 2.49x")
    assert v.rating == 10
    text = "\n".join(v.critique)
    assert "quality kept on val_loss" in text and not re.search(r"\bnan\b", text)


def test_pathologies_cap_and_are_named() -> None:
    v = rate(analysis(BASE, BETTER, efficiency=eff((2.4, 2.1, 2.7)),
                      pathologies={"collapsed": 1}), FACTS)
    assert v.rating == 4 and any("collapsed" in c for c in v.caps)
    assert any("1 run(s) collapsed" in c for c in v.critique)
    o = rate(analysis(BASE, BETTER, efficiency=eff((2.4, 2.1, 2.7)),
                      pathologies={"overfit": 2}), FACTS)
    assert o.rating == 6 and any("overfit" in c for c in o.critique)


def test_quick_runs_are_not_rated() -> None:
    v = rate(analysis(BASE, BETTER, name="x-quick"), FACTS)
    assert v.rating == 0 and not v.rated and v.band == "smoke test, not rated"
    assert band_of(0) == "smoke test, not rated"


def test_rubric_version_is_a_hash_of_the_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    v = rate(analysis(BASE, BETTER), FACTS)
    assert v.rubric_version == validate.RUBRIC_VERSION == validate.rubric_version()
    assert len(v.rubric_version) <= 20  # the verdicts table's column
    monkeypatch.setattr(validate, "GOAL_RATIO", 3.0)
    assert validate.rubric_version() != v.rubric_version


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


# --------------------------------------------------------------------------- issue 22
# The deterministic cases of issue 22, through apply_decisions (what analyze calls) and rate.

BASE2 = [2.00, 2.02, 1.98, 2.01, 1.99]


def test_a_real_loss_inside_the_margin_is_never_kept_nor_credited() -> None:
    """Hole 1: +0.008..+0.012 on every seed, margin 0.036, 2.5x faster to target. It was
    "worse" yet quality kept and rated 7 (publishable) while the critique said drop it."""
    arm = [b + d for b, d in zip(BASE2, [0.010, 0.008, 0.012, 0.009, 0.011], strict=True)]
    a = analysis(BASE2, arm, margin=0.036, efficiency=eff((2.5, 2.3, 2.7)))
    d = a.rows[1].decision
    assert d is not None and 1.4e-4 < d.p_holm < 1.6e-4
    assert d.label == "equivalent" and d.shown == "worse" and not d.quality_kept
    v = rate(a, FACTS)
    checks = v.breakdown["impact"]["checks"]
    assert checks["quality_kept"] is False and v.breakdown["impact"]["points"] == 0
    assert v.breakdown["evidence"]["points"] == 0 and v.rating == 4 and v.band == "needs work"
    text = "\n".join(v.critique)
    assert "equivalent (negligible)" in text and "a real loss is never quality kept" in text
    assert "does not count while quality is not shown kept" in text
    assert "drop the arm" not in text  # no contradiction with the label


def test_a_negligible_gain_is_not_better_and_scores_no_evidence() -> None:
    """Hole 2: -0.0002 nats on every seed, inside margins of 0.036 and 0.05: it was "better"
    and rated 7; it is equivalent (negligible), not an improvement: at most 4."""
    arm = [b - 0.0002 + e for b, e in zip(BASE2, [1e-5, -1e-5, 2e-5, 0.0, -2e-5], strict=True)]
    for margin in (0.036, 0.05):
        a = analysis(BASE2, arm, margin=margin)
        d = a.rows[1].decision
        assert d is not None and d.p_holm < 0.05 and d.label == "equivalent" and d.negligible
        v = rate(a, FACTS)
        assert v.breakdown["evidence"]["points"] == 0
        assert v.breakdown["impact"]["decisions"] == {"arm": "equivalent"}
        assert v.rating == 4 and any("no arm improved" in c for c in v.caps)
        assert any("real but negligible gain" in c for c in v.critique)


def test_evidence_points_come_only_from_calibrated_tests() -> None:
    """Hole 3: p Holm 0.12, a 1.5x ratio, quality equivalent; the seeds' rule and d_z >= 0.5
    hold. They earned 2 points (rating 8); reported beside, they score nothing: 6."""
    arm = [b + d for b, d in zip(BASE, [-0.09, -0.06, -0.03, 0.0, 0.005], strict=True)]
    a = analysis(BASE, arm, margin=0.08, efficiency=eff((1.5, 1.3, 1.7)))
    d = a.rows[1].decision
    assert d is not None and d.p_holm == pytest.approx(
        st.ttest_rel(arm, BASE).pvalue, rel=1e-10) and 0.11 < d.p_holm < 0.13
    assert d.seeds_rule and d.dz >= 0.5 and d.label == "equivalent" and d.quality_kept
    v = rate(a, FACTS)
    assert v.breakdown["evidence"]["points"] == 0 and v.breakdown["impact"]["points"] == 2
    assert v.rating == 6
    assert v.breakdown["evidence"]["reported"]["seeds_rule"] is True
    assert v.breakdown["evidence"]["reported"]["d_z"] == pytest.approx(d.dz)
    assert set(v.breakdown["evidence"]["checks"]) == {"significant", "strong", "beyond_margin"}


def test_each_evidence_point_is_a_test_at_its_alpha() -> None:
    """A clear win earns all three (p Holm < 0.005, gain beyond the margin); the same gain
    against a margin wider than it keeps 'better' only when it is outside the interval."""
    a = analysis(BASE, BETTER)
    d = a.rows[1].decision
    assert d is not None and d.p_holm < 0.005 and d.p_beyond_holm < 0.05
    assert rate(a, FACTS).breakdown["evidence"]["checks"] == {
        "significant": True, "strong": True, "beyond_margin": True}
    # Gain ~0.2 with a margin of 0.19: better (not inside), but not shown beyond 0.19.
    near = analysis(BASE, BETTER, margin=0.19)
    nd = near.rows[1].decision
    assert nd is not None and nd.label == "better" and nd.p_beyond_holm > 0.05
    assert rate(near, FACTS).breakdown["evidence"]["checks"]["beyond_margin"] is False
    # No margin at all (a constant baseline, none declared): no beyond point, no "nan".
    flat = rate(analysis([3.0] * 5, BETTER, margin=None), FACTS)
    assert flat.breakdown["evidence"]["checks"]["beyond_margin"] is False
    line = next(c for c in flat.critique if c.startswith("arm: better"))
    assert "no margin to show the gain beyond" in line and not re.search(r"\bnan\b", line)


def test_the_stored_verdict_is_the_sequential_decision() -> None:
    """Hole 4: fixed n at the stopping point says better (p 0.04 at 6 pairs); the sequential
    procedure (looks at 3 and 6) left it undecided. The verdict follows the sequential one."""
    base = [1.0, 1.1, 0.9, 1.05, 0.95, 1.02]
    arm = [b - x for b, x in zip(base, [0.05, 0.11, -0.02, 0.09, 0.01, 0.08], strict=True)]
    fixed = analysis(base, arm, margin=0.01)
    assert fixed.rows[1].verdict == "better"
    state = D.new_sequential_state(["arm"], n_max=6)
    for n in (3, 6):
        _, state = D.sequential_look(state, base[:n], {"arm": arm[:n]}, margin=0.01)
    a = analysis(base, arm, margin=0.01, sequential=state)
    d = a.rows[1].decision
    assert d is not None and a.rows[1].verdict == "undecided" and d.look == 6
    v = rate(a, FACTS)
    assert v.breakdown["impact"]["decisions"] == {"arm": "undecided"} and v.rating <= 4
    assert any("sequential decision of `airlab decide` (2 look(s) at 3, 6 seeds" in c
               for c in v.critique)
    # A sequential "better" scores its evidence at the alpha the deciding look spent.
    win = analysis(BASE + [2.99], BETTER + [2.79], sequential=D.sequential_look(
        D.new_sequential_state(["arm"], n_max=6), BASE + [2.99], {"arm": BETTER + [2.79]},
        margin=0.05)[1])
    wd = win.rows[1].decision
    assert wd is not None and wd.label == "better" and wd.alpha == pytest.approx(0.05)


def test_undecided_seeds_needed_come_from_the_margin_never_the_observed_difference() -> None:
    """Hole 7: an A/A-like undecided arm said "about 41-128 seeds would detect the observed"
    or "too small to detect: treat it as no effect". Seeds-needed is now a design for an
    effect the size of the margin, with the sd's upper 80% bound."""
    floor = NoiseFloor(n=10, df=8, mean=3.0, sd=0.01, sd_diff=0.01 * math.sqrt(2))
    noisy = [3.012, 3.004, 2.981, 3.019, 2.986]
    a = analysis(BASE, noisy, margin=None, floors={"val_loss": floor})
    row = a.rows[1]
    assert row.verdict == "undecided" and row.seeds_effect == pytest.approx(a.margin.value)
    want = D.seeds_needed_paired(D.sd_bounds(floor.sd_diff, 8)[1], a.margin.value, 1)
    assert row.seeds_needed == want
    v = rate(a, FACTS)
    line = next(c for c in v.critique if c.startswith("arm: undecided"))
    assert f"about {want} seeds find an effect the size of the margin" in line
    assert "observed" not in line and "treat it as no effect" not in line
    # Too small a margin for the noise says so, and never "no effect".
    tiny = rate(analysis(BASE, noisy, margin=1e-5), FACTS)
    line = next(c for c in tiny.critique if c.startswith("arm: undecided"))
    assert "over 1000 seeds" in line and "no effect" not in line


def test_an_implausible_run_is_never_better_kept_or_credited() -> None:
    """Issue 21's flags: an arm with a run the measuring side flagged is never better nor
    kept nor credited, the verdict is at most 4 and the critique names the reason."""
    why = "val_loss 0.28 far below train loss 2.1"
    a = analysis(BASE, BETTER, efficiency=eff((2.4, 2.1, 2.7)), implausible={"arm": [why]})
    d = a.rows[1].decision
    assert d is not None and d.label == "undecided" and not d.quality_kept
    assert why in d.note
    v = rate(a, FACTS)
    assert v.rating == 4 and v.breakdown["impact"]["points"] == 0
    assert v.breakdown["impact"]["checks"]["efficiency_credited"] is True  # the ratio itself
    assert v.breakdown["impact"]["checks"]["quality_kept"] is False  # ...but not counted
    assert any(why in c for c in v.critique)
    # An equivalent, 4x smaller arm: not kept, no size credit.
    small = {"train_seconds": 10.0, "model_bytes": 1000.0}
    s = rate(analysis(BASE, SAME, arm_means=small, credit="size",
                      implausible={"arm": [why]}), FACTS)
    assert s.rating <= 4 and s.breakdown["impact"]["points"] == 0
    # A flagged baseline run: no arm is believed better.
    b = rate(analysis(BASE, BETTER, efficiency=eff((2.4, 2.1, 2.7)),
                      implausible={"base": ["eval on training data"]}), FACTS)
    assert b.rating == 4 and b.breakdown["impact"]["decisions"] == {"arm": "undecided"}
    assert any(c.startswith("base: 1 run(s) flagged implausible") and "eval on training data"
               in c for c in b.critique)
    # Worse stays worse.
    w = analysis(BASE, [3.3, 3.31, 3.29, 3.32, 3.3], implausible={"arm": [why]})
    assert w.rows[1].verdict == "worse"


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
            # Not marked infra: infra failures are now retried automatically by the pipeline,
            # and these tests are about the runs that stay failed until --retry-failed.
            yield jobs[0], RunResult.failed("worker killed by signal 9")
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
    state = load_sequential_state(store, "und")
    assert state is not None and [x["n"] for x in state["looks"]] == [3, 5, 6]
    assert state["spent"]["copy"] == pytest.approx(0.05)  # the whole alpha, spent once
    # Deciding again does not restart alpha: no look spends anything, nothing runs again.
    again = run_until_decisive(spec, store, ex, max_seeds=10, step=2)
    assert len(ex.ran) == 12 and all(look.alpha == 0.0 for look in again.looks)
    assert load_sequential_state(store, "und") == state
