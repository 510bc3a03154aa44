"""compare.analyze over stored runs (written straight into a real SQLite store, no training):
decisions by paired t / TOST, the stored noise floor, pathologies, a saving metric, --quick."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from scipy import stats as st

from airlab.analysis import decisions
from airlab.analysis.compare import analyze
from airlab.store import Store, floor_key, save_noise_floor, save_sequential_state
from airlab.validate import rate

SEEDS = [42, 137, 256, 512, 1024]
CFG = {"workload": "charlm", "preset": "tiny", "dataset": "pycode", "tokens": 3000.0}


def store_experiment(store: Store, name: str, values: dict[str, list[dict[str, float]]],
                     metric: str = "val_loss", infos: dict[str, list[dict[str, Any]]] | None
                     = None, **spec_extra: Any) -> None:
    """Arms -> per-seed metric dicts (and run infos); each run gets a short falling val_loss
    curve."""
    arms = list(values)
    spec = {"name": name, "baseline": {"name": arms[0]},
            "arms": [{"name": a} for a in arms[1:]], "seeds": SEEDS,
            "budget": {"tokens": 3000}, "dataset": "pycode", "metric": metric,
            "direction": "minimize", **spec_extra}
    eid = store.upsert_experiment(name, spec)
    planned = [(a, s, f"{a}-{s}", {**CFG, "seed": s}) for a in arms for s in SEEDS]
    rows = store.ensure_runs(eid, planned)
    for r in rows:
        m = values[r["arm"]][SEEDS.index(r["seed"])]
        final = m.get("val_loss", 3.0)
        curve = [{"step": k, "units": 1000.0 * k, "train_seconds": 1.0 * k, "flops": 1e9 * k,
                  "val_loss": final + 0.5 * (3 - k)} for k in (1, 2, 3)]
        info = (infos or {}).get(r["arm"], [{}] * len(SEEDS))[SEEDS.index(r["seed"])]
        store.claim(r["id"])
        store.finish(r["id"], "finished", None, m, curve, info)


BASE = [3.00, 3.02, 2.99, 3.01, 2.98]


def test_analyze_decides_by_paired_t_and_tost_with_the_stored_floor(db_url: str) -> None:
    store = Store(db_url)
    store_experiment(store, "e", {
        "base": [{"val_loss": v} for v in BASE],
        "same": [{"val_loss": v + d} for v, d in zip(BASE, [1e-3, -1e-3, 2e-3, 0, -2e-3],
                                                      strict=True)],
        "worse": [{"val_loss": v + 0.1 + d} for v, d in zip(BASE, [1e-3, -1e-3, 2e-3, 0, 0],
                                                            strict=True)],
    })
    a = analyze(store, "e")
    assert a.margin.provisional  # no floor, no declared margin yet
    save_noise_floor(store, floor_key(CFG, {"tokens": 3000}), "val_loss",
                     {"n": 10, "df": 8, "mean": 3.0, "sd": 0.01, "sd_diff": 0.0141},
                     "e.calibrate")
    a = analyze(store, "e")
    # 1 sd of the floor at its lower 80% bound on df 8 (issue 22; it was 2 sd at face value).
    assert a.margin.source == "noise floor"
    assert a.margin.value == pytest.approx(0.01 * math.sqrt(8 / st.chi2.ppf(0.8, 8)))
    labels = {r.arm: r.verdict for r in a.rows[1:]}
    assert labels == {"same": "equivalent", "worse": "worse"}
    assert a.rows[1].mde_source == "noise floor"
    v = rate(a)
    assert "decisions" in v.breakdown["impact"]
    assert v.breakdown["impact"]["margin"]["source"] == "noise floor"


def test_pathologies_and_quick_are_read_from_the_store(db_url: str) -> None:
    store = Store(db_url)
    store_experiment(store, "p-quick", {
        "base": [{"val_loss": v, "collapsed": 0.0} for v in BASE],
        "arm": [{"val_loss": v - 0.2, "collapsed": float(i == 0), "overfit": 0.0,
                 "sample_distinct_2": 0.1} for i, v in enumerate(BASE)],
    })
    a = analyze(store, "p-quick")
    assert a.quick and a.rows[1].pathologies == {"collapsed": 1}
    assert a.rows[0].pathologies == {}
    assert a.rows[1].means["sample_distinct_2"] == pytest.approx(0.1)
    assert rate(a).band == "smoke test, not rated"


def test_a_saving_metric_judges_quality_on_val_loss(db_url: str) -> None:
    store = Store(db_url)
    store_experiment(store, "mem", {
        "base": [{"val_loss": v, "peak_mem_mb": 100.0 + i} for i, v in enumerate(BASE)],
        "ckpt": [{"val_loss": v + 0.0005 * (-1) ** i, "peak_mem_mb": 40.0 + 0.5 * i}
                 for i, v in enumerate(BASE)],
    }, metric="peak_mem_mb", margin=5.0)
    a = analyze(store, "mem")
    row = a.rows[1]
    assert a.quality_metric == "val_loss" and not a.quality_is_primary
    assert row.verdict == "better" and row.quality is not None
    assert row.quality.label == "equivalent"  # provisional margin from the baseline's val_loss
    assert a.quality_margin.provisional and a.margin.source == "spec margin"
    assert row.efficiency is not None and not math.isnan(row.efficiency.quality_drop)
    v = rate(a)
    assert v.breakdown["impact"]["checks"]["efficiency"].startswith("peak_mem_mb saving")
    assert not any(re.search(r"\bnan\b", c) for c in v.critique)


def test_analyze_reads_implausible_flags_and_the_sequential_state(db_url: str) -> None:
    """Issue 21's flags and issue 22's sequential verdict reach analyze from the store."""
    store = Store(db_url)
    why = "val_loss 0.28 far below train loss 2.1"
    store_experiment(store, "flag", {
        "base": [{"val_loss": v} for v in BASE],
        "win": [{"val_loss": v - 0.2 + 0.001 * i, "implausible": float(i == 1)}
                for i, v in enumerate(BASE)],
        "clean": [{"val_loss": v - 0.2 + 0.001 * i, "implausible": 0.0}
                  for i, v in enumerate(BASE)],
    }, infos={"win": [{"implausible": [why]} if i == 1 else {} for i in range(5)]})
    a = analyze(store, "flag")
    win, clean = a.rows[1], a.rows[2]
    assert win.implausible_runs == 1 and win.implausible == [f"seed {SEEDS[1]}: {why}"]
    assert win.verdict == "undecided" and clean.verdict == "better"
    assert clean.implausible_runs == 0
    v = rate(a)
    assert v.best_arm == "clean" and any(why in c for c in v.critique)
    # A sequential state in the store: its labels are the verdict's, not fixed-n ones.
    state = decisions.new_sequential_state(["win", "clean"], n_max=10)
    _, state = decisions.sequential_look(
        state, BASE[:3], {"win": [v - 0.2 for v in BASE[:3]],
                          "clean": [v + 0.0005 for v in BASE[:3]]}, margin=0.02)
    save_sequential_state(store, "flag", state)
    s = analyze(store, "flag")
    assert s.sequential is not None and s.rows[2].decision is not None
    assert s.rows[2].verdict == state["decided"]["clean"] == "undecided"
    assert s.rows[2].decision.look == 3
