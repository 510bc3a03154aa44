import math

import pytest
import scipy.stats as st

from airlab.analysis.efficiency import arm_efficiency, cost_to_target, geo_ratio


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
    base = {s: {"curve": curve([(0, 4.0), (10, 3.0), (20, 2.0)]),
                "metrics": {"energy_kwh_est": 2.0, "model_bytes": 400.0}} for s in (1, 2)}
    fast = {1: {"curve": curve([(0, 4.0), (5, 3.0), (10, 2.0), (20, 1.8)]),
                "metrics": {"energy_kwh_est": 2.0, "model_bytes": 100.0}},
            2: {"curve": curve([(0, 4.0), (10, 3.0), (20, 2.5)]),  # never reaches 2.0
                "metrics": {"energy_kwh_est": 2.0, "model_bytes": 100.0}}}
    e = arm_efficiency("fast", "val_loss", "minimize", base, fast,
                       {"model_bytes": 400.0, "val_loss": 2.0},
                       {"model_bytes": 100.0, "val_loss": 2.15})
    assert e.n == 2 and e.reached == 1
    assert e.ratio["train_seconds"][0] == pytest.approx(2.0)
    assert e.ratio["energy_kwh_est"][0] == pytest.approx(2.0)
    assert math.isnan(e.cost["train_seconds"][1])
    assert e.size_ratio == pytest.approx(4.0)
    assert e.quality_drop == pytest.approx(0.15)
    assert "not reached at 1 of 2 seeds" in e.notes[0]
