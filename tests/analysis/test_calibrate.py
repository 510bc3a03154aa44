"""Calibration with real runs on a micro config: disjoint A/A seed sets, the stored noise floor,
and analyze() taking the margin and the MDE from it."""

from __future__ import annotations

import math

import pytest
from conftest import MICRO
from scipy import stats as st

from airlab.analysis.compare import analyze
from airlab.calibrate import CONTROLS, calibrate, calibration_spec
from airlab.errors import AirlabError
from airlab.executors.inprocess import InProcessExecutor
from airlab.experiment import run_experiment
from airlab.spec import Arm, ExperimentSpec, load_spec
from airlab.store import Store, list_noise_floors, load_noise_floor


def micro(name: str, arms: list[Arm]) -> ExperimentSpec:
    return ExperimentSpec(name=name, hypothesis="micro", dataset="pycode",
                          budget={"tokens": 3000}, options=dict(MICRO),
                          baseline=Arm(name="base"), arms=arms, seeds=[42, 137, 256])


def test_calibration_uses_disjoint_seeds_and_rejects_too_few() -> None:
    spec = micro("m", [Arm(name="rope", use=["rope"])])
    cal = calibration_spec(spec, 3)
    assert cal.arms == [] and len(set(cal.seeds)) == 6 and cal.name == "m.calibrate"
    a, b = cal.seeds[:3], cal.seeds[3:]
    assert not set(a) & set(b)
    with pytest.raises(AirlabError, match="--seeds"):
        calibration_spec(spec, 1)


def test_calibrate_stores_a_floor_that_analyze_uses(db_url: str) -> None:
    store = Store(db_url)
    spec = micro("m", [Arm(name="rope", use=["rope"])])
    ex = InProcessExecutor()
    c = calibrate(spec, store, ex, seeds=2)
    assert c.failed == 0 and set(c.seeds_a).isdisjoint(c.seeds_b)
    f = c.floors["val_loss"]
    # Real runs on different seeds differ: a positive, finite sd (an A/A on identical seeds
    # would give exactly 0 and test nothing).
    assert f.n == 4 and f.df == 2 and 0 < f.sd < 1 and f.sd_diff == pytest.approx(
        f.sd * math.sqrt(2))
    assert c.aa["val_loss"] in ("undecided", "equivalent")
    assert c.key == {"workload": "charlm", "preset": "tiny", "dataset": "pycode",
                     "budget": "tokens=3000"}
    stored = load_noise_floor(store, c.key, "val_loss")
    assert stored is not None and stored["sd"] == pytest.approx(f.sd)
    assert stored["source"] == "m.calibrate"
    assert {r["metric"] for r in list_noise_floors(store)} >= {"val_loss"}
    exp = store.experiment("m.calibrate")
    assert exp is not None and exp["kind"] == "calibration"
    # Calibrating again reuses every run and replaces (not duplicates) the floor.
    n = len(list_noise_floors(store))
    calibrate(spec, store, ex, seeds=2)
    assert len(list_noise_floors(store)) == n
    # An experiment on the same setup takes its margin (1 sd at its lower 80% bound on the
    # floor's df, issue 22) and its MDE from the floor.
    out = run_experiment(spec, store, ex)
    a = analyze(store, "m", runs=out.runs.rows)
    assert a.margin.source == "noise floor"
    assert a.margin.value == pytest.approx(f.sd * math.sqrt(2 / st.chi2.ppf(0.8, 2)))
    assert a.rows[1].mde_source == "noise floor" and math.isfinite(a.rows[1].mde)
    assert "val_loss" in a.floors


def test_controls_are_library_specs_with_the_expected_arms() -> None:
    for name, expected in CONTROLS.items():
        spec = load_spec(name)
        assert set(expected) <= {arm.name for arm in spec.arms}
        assert spec.workload == "charlm" and spec.preset == "tiny"
        assert spec.budget["tokens"] <= 150_000  # a few minutes on 2 cores
    pos = load_spec("controls_positive")
    assert pos.arms[0].options["lr"] >= 30 * 1e-3
