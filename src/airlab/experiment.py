"""Run an experiment: plan arms x seeds, skip finished runs, execute the rest, store each result.

Resumable by construction: every run is a row keyed by (arm, run key); a finished row is never
run again, and a row left 'running' by a killed airlab goes back to 'pending' on the next call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from airlab.executors.base import Executor, Job
from airlab.plan import plan_runs
from airlab.run.trainer import RunResult
from airlab.run.workloads import get_workload
from airlab.spec import ExperimentSpec
from airlab.store import Store


class Reporter(Protocol):
    """Progress display; the CLI gives a Rich one, the library a silent one."""

    def start(self, total: int, done: int) -> None: ...
    def event(self, run: dict[str, Any], event: dict[str, Any]) -> None: ...
    def finished(self, run: dict[str, Any], result: RunResult) -> None: ...
    def stop(self) -> None: ...


class SilentReporter:
    def start(self, total: int, done: int) -> None:
        pass

    def event(self, run: dict[str, Any], event: dict[str, Any]) -> None:
        pass

    def finished(self, run: dict[str, Any], result: RunResult) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class RunOutcome:
    experiment_id: int
    planned: int
    reused: int
    ran: int
    failed: int


def run_experiment(spec: ExperimentSpec, store: Store, executor: Executor, *,
                   reporter: Reporter | None = None, retry_failed: bool = False,
                   kind: str = "experiment",
                   on_result: Callable[[dict[str, Any], RunResult], None] | None = None,
                   ) -> RunOutcome:
    reporter = reporter or SilentReporter()
    if spec.sweep is not None and not spec.sweep_chosen:
        spec = run_sweep(spec, store, executor, reporter=reporter)
    plans = plan_runs(spec)
    exp_id = store.upsert_experiment(spec.name, spec.to_dict(), kind=kind, area=spec.area,
                                     workload=spec.workload, hypothesis=spec.hypothesis)
    store.recover_interrupted(exp_id)
    rows = store.ensure_runs(exp_id, [(p.arm, p.seed, p.run_key, p.config.to_dict())
                                      for p in plans])
    todo_states = {"pending", "failed"} if retry_failed else {"pending"}
    todo = [r for r in rows if r["state"] in todo_states]
    by_id = {r["id"]: r for r in todo}
    for workload, dataset in sorted({(r["config"]["workload"], r["config"]["dataset"])
                                     for r in todo}):
        get_workload(workload).prepare(dataset)
    reporter.start(total=len(rows), done=len(rows) - len(todo))
    jobs = [Job(r["id"], r["config"], spec.timeout_s) for r in todo]
    claimed: set[int] = set()
    ran = failed = 0

    def on_event(job: Job, ev: dict[str, Any]) -> None:
        if job.id not in claimed:  # mark running once the worker really started
            claimed.add(job.id)
            store.claim(job.id)
        reporter.event(by_id[job.id], ev)

    try:
        for job, result in executor.run(jobs, on_event):
            if job.id not in claimed:
                store.claim(job.id)  # the worker died before its first event: still one attempt
            store.finish(job.id, result.state, result.reason, result.metrics, result.curve,
                         result.info, result.info.get("worker_wall_seconds"))
            ran += 1
            failed += result.state == "failed"
            reporter.finished(by_id[job.id], result)
            if on_result:
                on_result(by_id[job.id], result)
    finally:
        reporter.stop()
        store.recover_interrupted(exp_id)  # on Ctrl-C, our unfinished runs go back to pending
    return RunOutcome(exp_id, len(rows), len(rows) - len(todo), ran, failed)


def sweep_spec(spec: ExperimentSpec) -> ExperimentSpec:
    """The sweep as an experiment of its own: every arm x every value, short budget."""
    from airlab.plan import sweep_value
    from airlab.spec import Arm

    assert spec.sweep is not None
    sw = spec.sweep
    (unit, amount), = spec.budget.items()
    sep = "x" if sw.mode == "scale" else "="
    arms = [Arm(name=f"{arm.name}@{sw.option}{sep}{v:g}", use=arm.use,
                options={**arm.options, sw.option: sweep_value(spec, arm, v)})
            for arm in spec.all_arms for v in sw.values]
    return spec.model_copy(update={
        "name": f"{spec.name}.sweep", "hypothesis": f"{sw.option} sweep for {spec.name}",
        "budget": {unit: amount * sw.budget_fraction}, "baseline": arms[0], "arms": arms[1:],
        "seeds": sw.seeds or spec.seeds[:1], "sweep": None, "sweep_chosen": {}})


def run_sweep(spec: ExperimentSpec, store: Store, executor: Executor, *,
              reporter: Reporter | None = None) -> ExperimentSpec:
    """Run the sweep (reusing finished runs), choose each arm's best value, return the spec
    with the choices recorded in ``sweep_chosen``. Failed sweep runs count as worst."""
    from airlab.analysis.compare import analyze

    assert spec.sweep is not None
    sw_spec = sweep_spec(spec)
    run_experiment(sw_spec, store, executor, reporter=reporter, kind="sweep")
    a = analyze(store, sw_spec.name)
    sign = 1.0 if spec.direction == "minimize" else -1.0
    chosen: dict[str, float] = {}
    for arm in spec.all_arms:
        best, best_score = spec.sweep.values[0], float("inf")
        for v in spec.sweep.values:
            sep = "x" if spec.sweep.mode == "scale" else "="
            row = next(r for r in a.rows if r.arm == f"{arm.name}@{spec.sweep.option}{sep}{v:g}")
            mean = row.summary.mean
            score = sign * mean if row.summary.n and mean == mean else float("inf")
            if score < best_score:
                best, best_score = v, score
        chosen[arm.name] = best
    return spec.model_copy(update={"sweep_chosen": chosen})
