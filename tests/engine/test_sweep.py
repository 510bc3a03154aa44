"""A fair learning-rate sweep: the same values for every arm, chosen on short runs, recorded."""

from conftest import MICRO

from airlab.analysis.compare import analyze
from airlab.executors.inprocess import InProcessExecutor
from airlab.experiment import run_experiment
from airlab.plan import plan_runs
from airlab.spec import Arm, ExperimentSpec, Sweep
from airlab.store import Store


def test_sweep_chooses_per_arm_and_is_recorded(db_url: str) -> None:
    spec = ExperimentSpec(
        name="opt", budget={"tokens": 4000}, options=MICRO, seeds=[1, 2],
        baseline=Arm(name="adamw"), arms=[Arm(name="sgd", options={"optimizer": "sgd"})],
        sweep=Sweep(values=[1e-4, 3e-3], seeds=[1], budget_fraction=0.5))
    store = Store(db_url)
    out = run_experiment(spec, store, InProcessExecutor())
    assert out.planned == 4 and out.failed == 0
    sweep = store.experiment("opt.sweep")
    assert sweep is not None and sweep["kind"] == "sweep"
    sruns = store.runs(sweep["id"])
    assert len(sruns) == 4 and all(r["config"]["tokens"] == 2000 for r in sruns)
    assert {r["arm"] for r in sruns} == {"adamw.lr_0.0001", "adamw.lr_0.003", "sgd.lr_0.0001",
                                         "sgd.lr_0.003"}
    # The experiment (not its sweep) was analysed once and rated; the outcome carries both.
    assert out.analysis is not None and [r.arm for r in out.analysis.rows] == ["adamw", "sgd"]
    assert out.verdict is not None and out.verdict.experiment == "opt"
    stored = ExperimentSpec(**store.experiment("opt")["spec"])
    # On a 4k-token budget the larger lr is better for AdamW: the sweep must have found that.
    assert stored.sweep_chosen["adamw"] == 3e-3
    assert set(stored.sweep_chosen) == {"adamw", "sgd"}
    lrs = {(p.arm, p.config.lr) for p in plan_runs(stored)}
    assert lrs == {("adamw", 3e-3), ("sgd", stored.sweep_chosen["sgd"])}
    # Running again reuses everything, sweep included.
    again = run_experiment(spec, store, InProcessExecutor())
    assert again.ran == 0 and again.reused == 4
    assert len(analyze(store, "opt").rows) == 2
