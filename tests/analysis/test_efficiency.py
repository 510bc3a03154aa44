import math

import numpy as np
import pytest
import scipy.stats as st

from airlab.analysis.efficiency import (
    arm_efficiency,
    cost_to_target,
    crossing_batch,
    geo_ratio,
    loo_targets,
    time_to_target,
)


def curve(points):
    return [{"step": i, "train_seconds": t, "flops": 10 * t, "val_loss": v}
            for i, (t, v) in enumerate(points)]


def test_cost_to_target_interpolates_linearly() -> None:
    c = curve([(0, 4.0), (10, 3.0), (20, 2.0), (30, 1.5)])
    assert cost_to_target(c, "val_loss", 2.5, "minimize", "train_seconds") == pytest.approx(15.0)
    assert cost_to_target(c, "val_loss", 2.0, "minimize", "flops") == pytest.approx(200.0)
    assert math.isnan(cost_to_target(c, "val_loss", 1.0, "minimize", "train_seconds"))
    acc = [{"train_seconds": t, "val_acc": a} for t, a in [(0, 0.1), (4, 0.5), (8, 0.9)]]
    assert cost_to_target(acc, "val_acc", 0.7, "maximize", "train_seconds") == pytest.approx(6.0)


def test_geo_ratio_is_a_t_interval_on_logs() -> None:
    r = [1.5, 2.0, 2.5]
    mean, lo, hi = geo_ratio(r)
    logs = [math.log(x) for x in r]
    ilo, ihi = st.t.interval(0.95, len(r) - 1, loc=sum(logs) / 3, scale=st.sem(logs))
    assert mean == pytest.approx(math.exp(sum(logs) / 3), rel=1e-12)
    assert (lo, hi) == pytest.approx((math.exp(ilo), math.exp(ihi)), rel=1e-9)


def test_paired_time_to_target_and_not_reached() -> None:
    """Two seeds and a noise floor: each pair's target is the other seed's baseline final + 3
    floor sds. Without a floor two seeds give no target: the slack would have to come from
    the pair's own final (issue 22)."""
    base = {1: {"curve": curve([(0, 4.0), (10, 3.0), (20, 2.0)]),
                "metrics": {"energy_kwh_est": 2.0, "model_bytes": 400.0}},
            2: {"curve": curve([(0, 4.0), (10, 3.0), (20, 2.2)]),
                "metrics": {"energy_kwh_est": 2.0, "model_bytes": 400.0}}}
    fast = {1: {"curve": curve([(0, 4.0), (5, 3.0), (10, 2.0), (20, 1.8)]),
                "metrics": {"energy_kwh_est": 2.0, "model_bytes": 100.0}},
            2: {"curve": curve([(0, 4.0), (10, 3.0), (20, 2.5)]),  # never reaches 2.0
                "metrics": {"energy_kwh_est": 2.0, "model_bytes": 100.0}}}
    means = ({"model_bytes": 400.0, "val_loss": 2.1}, {"model_bytes": 100.0, "val_loss": 2.15})
    e = arm_efficiency("fast", "val_loss", "minimize", base, fast, *means, floor_sd=0.02)
    assert e.targets == pytest.approx([2.2 + 0.06, 2.0 + 0.06])
    assert e.n == 2 and e.reached == 1
    # Pair 1 (target 2.26): the arm gets there in half the baseline's time.
    assert e.ratio["train_seconds"][0] == pytest.approx(2.0)
    assert e.ratio["energy_kwh_est"][0] == pytest.approx(2.0)
    assert math.isnan(e.ratio["train_seconds"][1])  # no interval from one pair
    assert math.isnan(e.cost["train_seconds"][1])
    assert e.size_ratio == pytest.approx(4.0)
    assert e.quality_drop == pytest.approx(0.05)
    assert "1 of 2 seed pairs" in e.notes[0]
    no_floor = arm_efficiency("fast", "val_loss", "minimize", base, fast, *means)
    assert all(math.isnan(t) for t in no_floor.targets) and no_floor.reached == 0
    assert "3 seed pairs or a noise floor" in no_floor.notes[0]


def test_loo_targets_leave_each_seed_out() -> None:
    """Without a floor the slack is 3 x the other seeds' sd at its upper 80% bound (chi-square
    on n - 2 df); pair i's own final moves neither centre nor slack of its target."""
    f = np.array([2.000, 2.012, 1.995, 2.006])
    got = loo_targets(f, "minimize", slack_sigmas=3.0)
    up = math.sqrt(2 / st.chi2.ppf(0.2, 2))
    for i in range(4):
        o = np.delete(f, i)
        assert got[i] == pytest.approx(o.mean() + 3.0 * o.std(ddof=1) * up, rel=1e-12)
    acc = loo_targets(f, "maximize", floor_sd=0.01)
    assert acc[0] == pytest.approx(np.delete(f, 0).mean() - 0.03)
    # Issue 22, hole 6: seed 0's final moving from 2.000 to 2.060 left its own target at
    # 2.011 -> 2.102 under the old slack (all finals); now it does not move it at all.
    g = f.copy()
    g[0] = 2.060
    for floor in (math.nan, 0.01):
        assert loo_targets(g, "minimize", floor_sd=floor)[0] == pytest.approx(
            loo_targets(f, "minimize", floor_sd=floor)[0], rel=1e-12)
    assert np.isnan(loo_targets(f[:2], "minimize")).all()  # 2 seeds, no floor: no slack


def test_crossing_batch_matches_cost_to_target() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        vals = np.sort(rng.uniform(1, 4, size=8))[::-1] + rng.normal(0, 0.1, size=8)
        secs = np.cumsum(rng.uniform(1, 3, size=8))
        target = rng.uniform(0.9, 4.2)
        c = [{"val_loss": float(v), "train_seconds": float(t)} for v, t in zip(vals, secs,
                                                                                strict=True)]
        want = cost_to_target(c, "val_loss", target, "minimize", "train_seconds")
        got = float(crossing_batch(vals, secs, np.array(target), "minimize"))
        assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want)


def test_time_to_target_interval_needs_three_pairs() -> None:
    base = [curve([(0, 4.0), (10, 3.0), (20, 2.0 + 0.01 * i)]) for i in range(4)]
    arm = [curve([(0, 4.0), (5, 3.0), (10, 2.0), (20, 1.9)]) for _ in range(4)]
    t = time_to_target(base, arm, "val_loss", "minimize", "train_seconds")
    assert t.reached == 4 and math.isfinite(t.ci_low) and t.ci_low <= t.ratio <= t.ci_high
    arm[0] = arm[1] = curve([(0, 4.0), (10, 3.5), (20, 3.0)])
    t2 = time_to_target(base, arm, "val_loss", "minimize", "train_seconds")
    assert t2.reached == 2 and math.isfinite(t2.ratio) and math.isnan(t2.ci_low)
    declared = time_to_target(base, arm, "val_loss", "minimize", "train_seconds", target=2.5)
    assert declared.targets == [2.5] * 4


def test_time_to_target_aa_coverage() -> None:
    """1,000 simulated A/A experiments at 5 seeds: the interval covers 1 about 95% of the time.

    The old rule (the baseline's own final as target) covers it only ~84% (issue 12).
    """
    rng = np.random.default_rng(8)
    trials, n, evals = 1000, 5, 30
    s = np.arange(1, evals + 1) / evals

    def curves() -> tuple[np.ndarray, np.ndarray]:
        tau = 0.05 * np.exp(0.05 * rng.standard_normal((trials, n)))[..., None]
        loss = 1.5 + 2.5 * (1 + s / tau) ** -0.7 + 0.01 * rng.standard_normal((trials, n, 1))
        loss = loss + 0.003 * rng.standard_normal((trials, n, evals))
        return loss, 100 * s * np.exp(0.03 * rng.standard_normal((trials, n, 1)))

    (bl, bs), (al, as_) = curves(), curves()
    cover = {}
    for key, target in (("loo", loo_targets(bl[..., -1], "minimize")), ("own", bl[..., -1])):
        logs = np.log(crossing_batch(bl, bs, target, "minimize")
                      / crossing_batch(al, as_, target, "minimize"))
        hits = []
        for row in logs:
            r = row[~np.isnan(row)]
            if r.size >= 3:
                lo, hi = st.t.interval(0.95, r.size - 1, loc=r.mean(), scale=st.sem(r))
                hits.append(lo <= 0 <= hi)
        cover[key] = float(np.mean(hits))
    assert cover["loo"] >= 0.93
    assert cover["own"] < 0.9
