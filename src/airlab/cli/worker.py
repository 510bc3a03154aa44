"""Scale-out commands and options: `airlab worker`, `run --enqueue`, `--executor ray`, `--device`.

A shared store (PostgreSQL, or one SQLite file on one host) is the queue: ``airlab run SPEC
--enqueue`` plans and stores the runs without executing them; any number of ``airlab worker``
processes, on any hosts, claim pending runs (with leases, through the same claim loop as
``airlab run``) and execute them until none is left.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from airlab.cli.common import console, executor, open_store, set_settings, settings
from airlab.errors import AirlabError
from airlab.run.devices import concrete_device

if TYPE_CHECKING:
    from airlab.executors.base import Executor
    from airlab.spec import ExperimentSpec
    from airlab.store import Store

EXECUTORS = ("local", "ray")
LEASE_ENV = "AIRLAB_LEASE_S"


# -- devices -----------------------------------------------------------------------------------


def with_device(spec: ExperimentSpec, device: str | None) -> ExperimentSpec:
    """The spec with every run on ``device`` (resolved; the same for every arm)."""
    if device is None:
        return spec
    return spec.model_copy(update={"options": {**spec.options,
                                               "device": concrete_device(device)}})


def _device_family(device: str) -> str:
    return str(device or "cpu").split(":", 1)[0]


# -- executors ---------------------------------------------------------------------------------


@contextmanager
def make_executor(kind: str, workers: int, timeout: float | None, threads: int | None, *,
                  ray_address: str | None = None, gpus_per_run: float = 0
                  ) -> Iterator[Executor]:
    """The local process pool, or Ray (``kind`` "ray"), shut down however the command ends."""
    if kind not in EXECUTORS:
        raise AirlabError(f"--executor '{kind}' is not an executor",
                          f"use one of: {', '.join(EXECUTORS)}")
    if kind == "local":
        if ray_address:
            raise AirlabError("--ray-address needs --executor ray", "add --executor ray")
        with executor(workers, timeout, threads) as ex:
            yield ex
        return
    from airlab.executors.ray import RayExecutor

    ex = RayExecutor(ray_address, settings=settings(), num_cpus_per_run=threads or 1,
                     num_gpus_per_run=gpus_per_run, timeout_s=timeout,
                     workers=workers if workers > 1 else None)
    try:
        yield ex
    finally:
        ex.shutdown()


# -- enqueue -----------------------------------------------------------------------------------


# -- the worker command ------------------------------------------------------------------------


def _lease(lease: float | None) -> float:
    if lease is not None:
        return lease
    raw = os.environ.get(LEASE_ENV)
    if raw is None:
        from airlab.experiment import LEASE_S

        return LEASE_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 1 <= value <= 86_400:
        raise AirlabError(f"{LEASE_ENV}={raw!r} is not a lease in seconds",
                          "give a number from 1 to 86400, e.g. 60")
    return value


def _serving(store: Store, device: str | None, names: list[str] | None) -> list[int]:
    """Experiments this worker serves: those named (default all), whose runs' device is the
    worker's device family (default: any device this host has), teachers first."""
    exps = store.experiments()
    if names:
        known = {e["name"] for e in exps}
        missing = [n for n in names if n not in known]
        if missing:
            from airlab.errors import did_you_mean

            raise AirlabError(f"--experiment '{missing[0]}' is not in the store",
                              did_you_mean(missing[0], sorted(known)))
        exps = [e for e in exps if e["name"] in names]
    want = _device_family(concrete_device(device)) if device else None
    usable: dict[str, bool] = {"cpu": True}
    out = []
    for e in sorted(exps, key=lambda e: e["kind"] != "prerequisite"):
        if e["kind"] == "archive":
            continue
        rows = store.runs(e["id"])
        fams = {_device_family((r["config"] or {}).get("device", "cpu")) for r in rows}
        if not fams:
            continue
        if want is not None:
            if fams == {want}:
                out.append(e["id"])
            continue
        for fam in fams - set(usable):
            try:
                usable[fam] = concrete_device(fam) is not None
            except AirlabError:
                usable[fam] = False
        if all(usable[f] for f in fams):
            out.append(e["id"])
    return out


def worker(
    db: str = typer.Option(None, "--db", help="SQLAlchemy URL of the shared store (as the "
                           "global --db; env AIRLAB_DB)."),
    max_runs: int = typer.Option(None, "--max-runs", min=1, help="Stop after executing N runs."),
    device: str = typer.Option(None, "--device", help="Serve only runs planned for this device "
                               "(cpu, cuda, mps, auto = this host's best). Default: every run "
                               "whose device this host has."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Runs at a time."),
    threads: int = typer.Option(None, "--threads", min=1,
                                help="Torch threads per run (default: cores / workers)."),
    timeout: float = typer.Option(None, "--timeout", min=1, help="Per-run time limit, seconds "
                                  "(default: each experiment's timeout_s)."),
    experiment: list[str] = typer.Option(  # noqa: B008 - typer reads the default, once
        None, "--experiment", "-e", help="Serve only this experiment (repeatable)."),
    lease: float = typer.Option(None, "--lease", min=1, max=86_400, help="Seconds a claim "
                                "lasts without a heartbeat before another worker takes it "
                                f"over (env {LEASE_ENV}; default 60)."),
    executor_kind: str = typer.Option("local", "--executor", help="local or ray."),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster: auto or "
                                    "ADDRESS (with --executor ray)."),
) -> None:
    """Claim and execute pending runs from the shared store until none is left.

    Start any number, on any hosts sharing the database (`airlab run SPEC --enqueue` fills it).
    A worker that dies loses nothing: its runs are taken over when their lease expires.
    """
    from airlab.experiment import execute_claimed
    from airlab.store import owner_id

    if db:
        set_settings(dataclasses.replace(settings(), db_url=db))
    lease_s = _lease(lease)
    store = open_store()
    ids = _serving(store, device, experiment or None)
    if not ids:
        console.print(f"nothing to serve in {store.url}: enqueue runs with "
                      "`airlab run SPEC --enqueue`", highlight=False)
        return
    me = owner_id("worker")
    console.print(f"worker {me}: serving {len(ids)} experiment(s) from {store.url}",
                  highlight=False)
    with make_executor(executor_kind, workers, timeout, threads,
                       ray_address=ray_address) as ex:
        done = execute_claimed(store, ex, owner=me, experiment_ids=ids, max_runs=max_runs,
                               settings=settings(), reporter=_LineReporter(),
                               timeout_s=timeout, lease_s=lease_s,
                               heartbeat_s=max(0.5, lease_s / 4))
    console.print(f"worker {me}: executed {done.executions} run(s), stored {done.stored}, "
                  f"{done.infra_failures} infrastructure failure(s), {done.refused} refused "
                  "(taken over)", highlight=False)


class _LineReporter:
    """One line per finished run (a worker's log is read later, not watched)."""

    def start(self, total: int, done: int) -> None: ...

    def event(self, run: dict[str, Any], event: dict[str, Any]) -> None: ...

    def finished(self, run: dict[str, Any], result: Any) -> None:
        what = (f"val_loss {result.metrics.get('val_loss', float('nan')):.4f}"
                if result.state == "finished" else f"failed: {result.reason}")
        console.print(f"run {run['id']} {run['arm']} seed {run['seed']}: {what}",
                      highlight=False, markup=False)

    def note(self, text: str) -> None:
        console.print(text, highlight=False, markup=False)

    def stop(self) -> None: ...


__all__ = ["concrete_device", "make_executor", "with_device", "worker"]
