"""The after-run pipeline: plan -> execute -> store -> analyse -> rate -> write artifacts.

:func:`run_experiment` is the whole of it, callable from Python (the CLI is a thin wrapper):
plan arms x seeds, run the prerequisites (a distillation teacher) first, skip finished runs,
execute the rest, store each result, then analyse ONCE and hand that analysis to the rubric
and to the artifact writers. :func:`execute_runs` is the first half alone (sweeps, the looks of
:mod:`airlab.decide`), :func:`finish_experiment` the second (also `airlab verdict`).

Resumable by construction: every run is a row keyed by (arm, run key); a finished row is never
run again, and a row left 'running' by a killed airlab goes back to 'pending' on the next call.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from airlab import plan as plan_module
from airlab.executors.base import Executor, Job
from airlab.run.result import RunResult
from airlab.settings import Settings, get_settings
from airlab.spec import ExperimentSpec
from airlab.store import LiveWriter, Store, owner_id, save_verdict

if TYPE_CHECKING:
    from airlab.analysis.compare import Analysis
    from airlab.plan import RunPlan
    from airlab.validate import Verdict

OnResult = Callable[[dict[str, Any], RunResult], None]
log = logging.getLogger(__name__)


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
class RunCounts:
    """What executing an experiment's runs did; ``rows`` are its current runs as planned."""

    experiment_id: int
    planned: int
    reused: int
    ran: int
    failed: int
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    incomplete: int = 0  # runs cut by the time box (``deadline``): run again by the next call


@dataclass
class ExperimentOutcome:
    """Counts of one `run_experiment`, its analysis and verdict (None when not rated)."""

    name: str
    runs: RunCounts
    analysis: Analysis | None = None
    verdict: Verdict | None = None
    folder: Path | None = None  # the experiment folder the artifacts were written to
    prerequisites: RunCounts | None = None  # the teacher runs, when the spec needs any

    @property
    def experiment_id(self) -> int:
        return self.runs.experiment_id

    @property
    def planned(self) -> int:
        return self.runs.planned

    @property
    def reused(self) -> int:
        return self.runs.reused

    @property
    def ran(self) -> int:
        return self.runs.ran

    @property
    def failed(self) -> int:
        return self.runs.failed


@dataclass
class Finished:
    """The second half of the pipeline: one analysis, its verdict, the files written."""

    analysis: Analysis
    verdict: Verdict
    paths: list[Path]


# --------------------------------------------------------------------------- the pipeline


def run_experiment(spec: ExperimentSpec, store: Store, executor: Executor, *,
                   settings: Settings | None = None, reporter: Reporter | None = None,
                   retry_failed: bool = False, rate: bool = True, kind: str = "experiment",
                   on_result: OnResult | None = None,
                   deadline: float | None = None) -> ExperimentOutcome:
    """Plan, execute, store; then (``rate``, kind "experiment") analyse once, rate, store the
    verdict and write the experiment folder. ``retry_failed`` runs failed runs again.

    ``deadline`` (epoch seconds, ``time.time()``; a time box, never part of a run key): no run
    starts after it; unstarted runs stay pending; a run in flight stops at its next loss sync
    and is stored 'incomplete' (left out of the statistics, run again by the next call)."""
    settings = settings or get_settings()  # a library entry point given none: read it here
    rated = rate and kind == "experiment"
    if rated:
        on_result = _tracking(store, spec.name, settings.home, on_result)

        def warm() -> None:
            # The analysis, rubric and plots import scipy and matplotlib (seconds of CPU, once
            # per process). Imported now, in the background, they use the core a new worker
            # pool leaves idle while its zygote imports torch, instead of the end of the run.
            import importlib

            for mod in ("airlab.report.post", "airlab.report.plots", "matplotlib.figure",
                        "matplotlib.backends.backend_agg"):
                try:
                    importlib.import_module(mod)
                except Exception:  # noqa: BLE001 - the artifact writer reports it, if needed
                    return

        threading.Thread(target=warm, daemon=True, name="airlab-warm-imports").start()
    counts = execute_runs(spec, store, executor, settings=settings, reporter=reporter,
                          retry_failed=retry_failed, kind=kind, on_result=on_result,
                          deadline=deadline)
    out = ExperimentOutcome(spec.name, counts, prerequisites=counts_of_prerequisites(store, spec))
    if rated:
        done = finish_experiment(store, spec.name, settings=settings, runs=counts.rows)
        out.analysis, out.verdict = done.analysis, done.verdict
        out.folder = done.paths[0].parent if done.paths else None
    return out


def finish_experiment(store: Store, name: str, *, settings: Settings | None = None,
                      save: bool = True, write: bool = True, analysis: Analysis | None = None,
                      runs: Sequence[dict[str, Any]] | None = None) -> Finished:
    """Analyse once (unless given ``analysis``), rate with the rubric, store the verdict with its
    breakdown (``save``) and write the experiment folder under ``settings.home`` (``write``),
    all from that one analysis. ``runs``: the current rows, when the caller has them."""
    from airlab.analysis.compare import analyze, run_facts
    from airlab.validate import rate as rubric

    a = analysis or analyze(store, name, runs=runs)
    v = rubric(a, run_facts(store, name, runs=runs))
    if save:
        exp = store.experiment(name)
        assert exp is not None  # analyze raised otherwise
        save_verdict(store, exp["id"], rating=v.rating, band=v.band, breakdown=v.breakdown,
                        critique=v.critique, rubric_version=v.rubric_version,
                        best_arm=v.best_arm)
    paths: list[Path] = []
    if write:
        from airlab.report.post import write_artifacts

        home = (settings or get_settings()).home
        paths = write_artifacts(store, name, home, analysis=a, verdict=v)
    return Finished(a, v, paths)


def rate_experiment(store: Store, name: str, *, save: bool = False,
                    analysis: Analysis | None = None) -> Verdict:
    """The rubric's verdict on a stored experiment (stored too with ``save``); writes no files."""
    return finish_experiment(store, name, save=save, write=False, analysis=analysis).verdict


def _tracking(store: Store, name: str, home: Path, then: OnResult | None) -> OnResult:
    """After each run, rewrite the experiment's tracking.md (cheap), then call ``then``."""
    from airlab.report.post import write_tracking

    def on_result(run: dict[str, Any], result: RunResult) -> None:
        write_tracking(store, name, home)
        if then:
            then(run, result)

    return on_result


# --------------------------------------------------------------------------- executing runs


def execute_runs(spec: ExperimentSpec, store: Store, executor: Executor, *,
                 settings: Settings | None = None, reporter: Reporter | None = None,
                 retry_failed: bool = False, kind: str = "experiment",
                 on_result: OnResult | None = None, deadline: float | None = None) -> RunCounts:
    """Choose swept values, run the prerequisites, then every missing run of the spec; store
    each result as it comes. Analyses nothing (see :func:`run_experiment`). ``deadline``: the
    time box (epoch seconds), as in :func:`run_experiment`."""
    settings = settings or get_settings()
    reporter = reporter or SilentReporter()
    if spec.sweep is not None and not spec.sweep_chosen:
        spec = run_sweep(spec, store, executor, settings=settings, reporter=reporter,
                         retry_failed=retry_failed)
    plans = plan_module.plan_runs(spec, settings)
    blocked: dict[str, str] = {}  # run key of a plan -> why it cannot run
    pre = plan_module.prerequisites(plans)
    if pre:
        pre_counts = _execute(f"{spec.name}.teacher", spec, pre, store, executor,
                              settings=settings, reporter=reporter, retry_failed=retry_failed,
                              kind="prerequisite", deadline=deadline)
        failed = {r["run_key"]: r["reason"] or "failed" for r in pre_counts.rows
                  if r["state"] == "failed"}
        for p in plans:
            why = [failed[k] for k in _requires(p, pre) if k in failed]
            if why:
                blocked[p.run_key] = f"teacher run failed: {why[0]}"
    return _execute(spec.name, spec, plans, store, executor, settings=settings,
                    reporter=reporter, retry_failed=retry_failed, kind=kind,
                    on_result=on_result, blocked=blocked, deadline=deadline)


def store_plans(name: str, spec: ExperimentSpec, plans: Sequence[RunPlan], store: Store, *,
                kind: str, retry_failed: bool = False) -> tuple[int, list[dict[str, Any]]]:
    """Store the plans as experiment ``name`` (runs of a killed process back to pending; failed
    runs pending again with ``retry_failed``); return its id and its current run rows."""
    spec_dict = spec.to_dict() if name == spec.name else {**spec.to_dict(), "name": name}
    exp_id = store.upsert_experiment(name, spec_dict, kind=kind, area=spec.area,
                                     workload=spec.workload, hypothesis=spec.hypothesis)
    store.recover_interrupted(exp_id)
    rows = store.ensure_runs(exp_id, [(p.arm, p.seed, p.run_key, p.config.to_dict())
                                      for p in plans])
    if retry_failed and store.reset_failed(exp_id):
        by_id = {r["id"]: r for r in store.runs(exp_id)}
        rows = [by_id.get(r["id"], r) for r in rows]
    return exp_id, rows


def enqueue(spec: ExperimentSpec, store: Store, *, settings: Settings | None = None,
            retry_failed: bool = False) -> tuple[int, dict[str, int]]:
    """Plan ``spec`` and store its runs as pending without executing any (workers take them);
    a distillation teacher goes first as experiment ``NAME.teacher``. Returns the experiment id
    and its runs by state."""
    from airlab.errors import AirlabError

    if spec.sweep is not None and not spec.sweep_chosen:
        raise AirlabError(f"experiment '{spec.name}' has a learning-rate sweep, which must "
                          "finish before its runs can be planned",
                          "run it with `airlab run` (workers share the store), or drop sweep:")
    plans = plan_module.plan_runs(spec, settings or get_settings())
    if spec.techniques:
        from airlab.executors.sandboxed import measured_by_harness

        if measured_by_harness(plans):
            raise AirlabError(f"experiment '{spec.name}' runs generated code (technique files), "
                              "which trains in this machine's sandbox and is measured by the "
                              "process that plans it, not by shared workers",
                              "run it with `airlab run` (without --enqueue)")
    pre = plan_module.prerequisites(plans)
    if pre:
        store_plans(f"{spec.name}.teacher", spec, pre, store, kind="prerequisite",
                    retry_failed=retry_failed)
    exp_id, _ = store_plans(spec.name, spec, plans, store, kind="experiment",
                            retry_failed=retry_failed)
    return exp_id, store.counts(exp_id)


def _execute(name: str, spec: ExperimentSpec, plans: Sequence[RunPlan], store: Store,
             executor: Executor, *, settings: Settings, reporter: Reporter,
             retry_failed: bool, kind: str, on_result: OnResult | None = None,
             blocked: dict[str, str] | None = None, deadline: float | None = None) -> RunCounts:
    """Store the plans as experiment ``name`` and run those not finished (nor blocked), claiming
    each run so that other airlab processes sharing the store split the work."""
    exp_id, rows = store_plans(name, spec, plans, store, kind=kind, retry_failed=retry_failed)
    for r in rows:
        why = (blocked or {}).get(r["run_key"])
        if why and r["state"] in ("pending", "failed"):
            # A run whose teacher failed is a failed result of its own: stored, never dropped.
            store.claim(r["id"])
            store.finish(r["id"], "failed", why, {}, [], {})
    todo = [r for r in rows if r["run_key"] not in (blocked or {})
            and (_claimable(r) or r["state"] == "incomplete")]  # a time box's cut: run again
    if spec.techniques:
        from airlab.executors.sandboxed import SandboxedExecutor, measured_by_harness

        if measured_by_harness(plans):
            # Generated code trains in the sandbox and is measured by a process that never
            # imports it; so is every other run of the spec, importing no technique file at
            # all, so that the arms are measured the same way.
            executor = SandboxedExecutor(
                settings, [Path(f) for f in spec.techniques],
                workers=int(getattr(executor, "workers", 1) or 1),
                threads=int(getattr(executor, "threads", 1) or 1),
                allow_unsafe=settings.unsafe_no_sandbox)
    reporter.start(total=len(rows), done=len(rows) - len(todo))
    try:
        done = execute_claimed(store, executor, owner=owner_id(), experiment_ids=[exp_id],
                               settings=settings, reporter=reporter, on_result=on_result,
                               timeout_s=spec.timeout_s, deadline=deadline)
    finally:
        reporter.stop()
    now = {r["id"]: r for r in store.runs(exp_id)}
    current = [now.get(r["id"], r) for r in rows]  # with the states just stored
    failed = sum(now[i]["state"] == "failed" for i in done.run_ids if i in now)
    incomplete = sum(r["state"] == "incomplete" for r in current)
    return RunCounts(exp_id, len(rows), len(rows) - len(todo), len(done.run_ids), failed,
                     current, incomplete)


# --------------------------------------------------------------------------- claiming runs

LEASE_S = 60.0  # a claim lasts this long without a heartbeat before anyone may take it over
HEARTBEAT_S = 15.0  # how often the leases of our running runs are renewed
WAIT_POLL_S = 2.0  # how often we look again while other processes run our remaining runs
RETRY_INFRA_LIMIT = 3  # attempts in all for a run that failed for infrastructure reasons


@dataclass
class ClaimedCounts:
    """What :func:`execute_claimed` did: every run it executed (a run retried after an
    infrastructure failure counts once), results stored, results refused (taken over)."""

    run_ids: list[int] = field(default_factory=list)
    executions: int = 0
    stored: int = 0
    refused: int = 0
    infra_failures: int = 0


class _Heartbeat:
    """Renews the leases of the runs this process holds; a run taken over is cancelled."""

    def __init__(self, store: Store, executor: Executor, owner: str, lease_s: float,
                 every_s: float) -> None:
        self.store, self.executor, self.owner = store, executor, owner
        self.lease_s, self.every_s = lease_s, every_s
        self.held: set[int] = set()
        self.lost: set[int] = set()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="airlab-heartbeat")

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)

    def hold(self, run_id: int) -> None:
        with self.lock:
            self.held.add(run_id)

    def drop(self, run_id: int) -> None:
        with self.lock:
            self.held.discard(run_id)

    def _loop(self) -> None:
        while not self.stop_event.wait(self.every_s):
            with self.lock:
                held = sorted(self.held)
            for rid in held:
                try:
                    ok = self.store.heartbeat(rid, self.owner, self.lease_s)
                except Exception as e:  # noqa: BLE001 - a damaged store: the main loop says so
                    log.warning("heartbeat stopped: %s", e)
                    return
                if not ok:
                    with self.lock:
                        self.lost.add(rid)
                    cancel = getattr(self.executor, "cancel", None)
                    if cancel is not None:  # else finish(owner=...) refuses its result
                        cancel(rid)


def execute_claimed(store: Store, executor: Executor, *, owner: str,
                    experiment_ids: Sequence[int] | None = None, max_runs: int | None = None,
                    settings: Settings, reporter: Reporter | None = None,
                    on_result: OnResult | None = None, timeout_s: float | None = None,
                    lease_s: float = LEASE_S, heartbeat_s: float = HEARTBEAT_S,
                    retry_infra_limit: int = RETRY_INFRA_LIMIT,
                    wait_for_others: bool = True,
                    deadline: float | None = None, live: bool = True) -> ClaimedCounts:
    """Claim and execute pending runs of the given experiments (default: every experiment in
    the store, prerequisites first) until none is left or ``max_runs`` were executed.

    Each run is taken atomically with ``owner`` and a lease that a heartbeat thread renews; a
    result is stored only while ``owner`` still holds the run. Runs that failed for
    infrastructure reasons (worker killed, OOM kill, lost lease) are claimed again, up to
    ``retry_infra_limit`` attempts; other failures stay failed. While other processes still
    run some of these runs, it waits for them (``wait_for_others``), taking over any whose
    lease expires, so the caller sees every run finished. On any exception or Ctrl-C the runs
    it holds go back to pending. ``timeout_s``: per-run limit (default: each experiment's
    spec). The caller starts and stops the reporter.

    An executor that streams (``streams = True``: local pool, in-process) is fed one claimed run
    per free slot, so no slot waits for the slowest run of a batch; others get batches of
    ``workers`` runs. ``deadline`` (epoch seconds): no run is claimed after it, runs in flight
    get it as ``Job.stop_at`` (stored 'incomplete' when cut), and nobody is waited for.

    ``live``: every event an executor reports (``airlab.executors.base.EventSink``) is also
    written, batched, to the store's live tables (``airlab.store.live``): evaluation points and
    a progress heartbeat per run, for `airlab dashboard` and for runs that never finish.
    """
    from airlab.run.workloads import get_workload

    reporter = reporter or SilentReporter()
    exps = {e["id"]: e for e in store.experiments()}
    if experiment_ids is None:  # a worker serving the whole store: teachers before students
        experiment_ids = [e["id"] for e in sorted(exps.values(),
                                                   key=lambda e: e["kind"] != "prerequisite")]
    ids = list(experiment_ids)
    slots = max(1, int(getattr(executor, "workers", 1) or 1))
    streams = bool(getattr(executor, "streams", False))
    out = ClaimedCounts()
    prepared: set[tuple[str, str]] = set()
    held: dict[int, dict[str, Any]] = {}  # run id -> its row, from claim to stored result
    claimed = 0  # runs claimed by this call (each is one execution)
    seen_waiting = -1

    def past_deadline() -> bool:
        return deadline is not None and time.time() >= deadline

    def claim_one() -> dict[str, Any] | None:
        nonlocal claimed
        if past_deadline() or (max_runs is not None and claimed >= max_runs):
            return None
        for eid in ids:
            row = store.claim_next(eid, owner, lease_s, retry_infra_limit=retry_infra_limit)
            if row is not None:
                claimed += 1
                held[row["id"]] = row
                hb.hold(row["id"])
                key = (row["config"]["workload"], row["config"]["dataset"])
                if key not in prepared:  # once per dataset, in the parent
                    get_workload(key[0]).prepare(key[1], settings)
                    prepared.add(key)
                return row
        return None

    def job_of(row: dict[str, Any]) -> Job:
        t = timeout_s
        if t is None:
            t = ((exps.get(row["experiment_id"]) or {}).get("spec") or {}).get("timeout_s")
        return Job(row["id"], row["config"], t, stop_at=deadline)

    def stream() -> Iterator[Job]:
        """Claims lazily: the executor asks for the next job when a slot is free."""
        while (row := claim_one()) is not None:
            yield job_of(row)

    def on_event(job: Job, ev: dict[str, Any]) -> None:
        row = held.get(job.id)
        if row is None:  # a straggler after its result: nothing to attach it to
            return
        if writer is not None:
            writer.event(row["id"], int(row.get("attempts") or 1), ev)
        reporter.event(row, ev)

    writer = LiveWriter(store) if live and not store.readonly else None
    with _Heartbeat(store, executor, owner, lease_s, heartbeat_s) as hb:
        try:
            while not past_deadline() and (max_runs is None or claimed < max_runs):
                before = claimed
                if streams:
                    jobs: Iterable[Job] = stream()
                else:
                    jobs = [job_of(r) for _ in range(slots)
                            if (r := claim_one()) is not None]
                results = executor.run(jobs, on_event)
                try:
                    for job, result in results:
                        row = held.pop(job.id)
                        hb.drop(job.id)
                        out.executions += 1
                        stored = store.finish(job.id, result.state, result.reason, result.metrics,
                                              result.curve, result.info,
                                              result.info.get("worker_wall_seconds"), owner=owner,
                                              infra=bool(result.infra))
                        if not stored:  # taken over after our lease lapsed: theirs counts
                            out.refused += 1
                            continue
                        out.stored += 1
                        if job.id not in out.run_ids:
                            out.run_ids.append(job.id)
                        if result.state == "failed" and result.infra:
                            out.infra_failures += 1
                        reporter.finished(row, result)
                        if on_result:
                            on_result(row, result)
                finally:
                    close = getattr(results, "close", None)
                    if close is not None:  # an error mid-batch: stop its other runs now
                        close()
                if claimed > before:
                    continue
                # Nothing left to claim: wait for runs other processes hold, unless time is up.
                elsewhere = (_running_elsewhere(store, ids, owner)
                             if wait_for_others and not past_deadline() else 0)
                if not elsewhere:
                    break
                if elsewhere != seen_waiting:
                    _note(reporter, f"{elsewhere} run(s) running in other airlab "
                                    "processes; waiting for them")
                    seen_waiting = elsewhere
                time.sleep(WAIT_POLL_S)
                for eid in ids:  # claims of processes that died on this host: free now
                    store.recover_interrupted(eid)
        finally:
            # When an error is already on its way up (a full disk, a lost server), it is the one
            # line the user reads; the same store refusing these writes too adds nothing to it
            # (what stays claimed goes back to pending when its lease or process is gone).
            say = log.debug if sys.exc_info()[0] is not None else log.warning
            if writer is not None:
                try:  # the last points, before the claims go back
                    writer.close()
                except Exception as e:  # noqa: BLE001 - a live view never fails the runs
                    say("live data not written: %s", e)
            for eid in ids:
                try:  # Ctrl-C or an error: what we still hold goes back to pending for anyone
                    store.release_owned(eid, owner)
                except Exception as e:  # noqa: BLE001 - never mask the error that got us here
                    say("could not release the runs of experiment %s: %s", eid, e)
    return out


def _claimable(row: dict[str, Any]) -> bool:
    """Whether the claim loop would take (or wait for) this run: not a result to reuse."""
    return row["state"] in ("pending", "running") or (
        row["state"] == "failed" and bool(row.get("infra"))
        and (row.get("attempts") or 0) < RETRY_INFRA_LIMIT)


def _running_elsewhere(store: Store, ids: Sequence[int], owner: str) -> int:
    """Runs of these experiments that another owner is running now."""
    return sum(r["state"] == "running" and r["owner"] != owner
               for eid in ids for r in store.runs(eid))


def _note(reporter: Reporter, text: str) -> None:
    note = getattr(reporter, "note", None)  # an optional Reporter method
    if note is not None:
        note(text)


def counts_of_prerequisites(store: Store, spec: ExperimentSpec) -> RunCounts | None:
    """Counts of the spec's teacher experiment, when it has one (its cost is shown beside)."""
    exp = store.experiment(f"{spec.name}.teacher")
    if exp is None or exp["kind"] != "prerequisite":
        return None
    rows = store.runs(exp["id"])
    fin = sum(r["state"] == "finished" for r in rows)
    return RunCounts(exp["id"], len(rows), fin, 0, sum(r["state"] == "failed" for r in rows),
                     rows)


def _requires(p: RunPlan, pre: Sequence[RunPlan]) -> list[str]:
    """Run keys of the prerequisites plan ``p`` needs (a teacher's key sits in its options)."""
    values = {v for v in p.config.options.values() if isinstance(v, str)}
    return [q.run_key for q in pre if q.run_key in values]


# --------------------------------------------------------------------------- sweeps


def sweep_arm_name(arm: str, sweep: Any, value: float) -> str:
    """The sweep arm of ``arm`` at one value, in the characters arm names allow:
    ``adamw.lr_0.003`` (mode set), ``adamw.lr_x0.5`` (mode scale)."""
    return f"{arm}.{sweep.option}_{'x' if sweep.mode == 'scale' else ''}{value:g}"


# The sweep's default seed. Never one the verdict uses (see sweep_seeds): a value chosen on the
# verdict's own seeds would be fitted to their noise, and the verdict would credit that luck.
SWEEP_SEED = 7


def sweep_seeds(spec: ExperimentSpec) -> list[int]:
    """The seeds the sweep runs: ``sweep.seeds`` when given (the spec refuses ones that overlap
    its own seeds), else :data:`SWEEP_SEED` or the next integer the spec's seeds do not use."""
    assert spec.sweep is not None
    if spec.sweep.seeds is not None:
        return list(spec.sweep.seeds)
    seed = SWEEP_SEED
    while seed in spec.seeds:
        seed += 1
    return [seed]


def sweep_spec(spec: ExperimentSpec, settings: Settings | None = None) -> ExperimentSpec:
    """The sweep as an experiment of its own: every arm x every value, short budget, on seeds
    and a held-out subset (``eval_split: select``) that the verdict does not use."""
    from airlab.spec import Arm

    assert spec.sweep is not None
    sw = spec.sweep
    (unit, amount), = spec.budget.items()
    arms = [Arm(name=sweep_arm_name(arm.name, sw, v), use=arm.use,
                options={**arm.options,
                         sw.option: plan_module.sweep_value(spec, arm, v, settings)})
            for arm in spec.all_arms for v in sw.values]
    return spec.model_copy(update={
        "name": f"{spec.name}.sweep", "hypothesis": f"{sw.option} sweep for {spec.name}",
        "budget": {unit: amount * sw.budget_fraction}, "baseline": arms[0], "arms": arms[1:],
        "seeds": sweep_seeds(spec), "options": {**spec.options, "eval_split": "select"},
        "sweep": None, "sweep_chosen": {}})


def run_sweep(spec: ExperimentSpec, store: Store, executor: Executor, *,
              settings: Settings | None = None, reporter: Reporter | None = None,
              retry_failed: bool = False) -> ExperimentSpec:
    """Run the sweep (reusing finished runs), choose each arm's best value, return the spec
    with the choices recorded in ``sweep_chosen``. Failed sweep runs count as worst."""
    from airlab.analysis.compare import analyze

    assert spec.sweep is not None
    sw_spec = sweep_spec(spec, settings)
    counts = execute_runs(sw_spec, store, executor, settings=settings, reporter=reporter,
                          retry_failed=retry_failed, kind="sweep")
    a = analyze(store, sw_spec.name, runs=counts.rows)
    sign = 1.0 if spec.direction == "minimize" else -1.0
    chosen: dict[str, float] = {}
    for arm in spec.all_arms:
        best, best_score = spec.sweep.values[0], float("inf")
        for v in spec.sweep.values:
            row = next(r for r in a.rows if r.arm == sweep_arm_name(arm.name, spec.sweep, v))
            mean = row.summary.mean
            score = sign * mean if row.summary.n and mean == mean else float("inf")
            if score < best_score:
                best, best_score = v, score
        chosen[arm.name] = best
    return spec.model_copy(update={"sweep_chosen": chosen})
