"""Sandboxed executor: each run of a spec that names technique files, in the sandbox.

Generated technique code (``techniques: [file.py]`` in a spec) never runs in the airlab
process. Every run of such a spec (all arms, the baseline too, so the arms are measured under
the same conditions) is a child ``python -m airlab.executors.sandboxed run job.json`` under
:func:`airlab.sandbox.run_sandboxed`: no network, a read-only view of Python, the airlab source
and the run's data, a private writable folder, an unprivileged user, resource limits and a
wall-clock timeout. The child imports the technique files, runs the job through the same
:func:`airlab.run.execute.execute` as every executor and writes the RunResult as JSON in its
private folder. Whatever the code does (escape attempts included) ends as a result: a run the
sandbox stopped is stored failed with the sandbox's one-line reason, and the experiment goes on.

The code is stored with its hash: each file is copied to ``<home>/techniques/<sha16>.py``
(content-addressed; the run key's ``code`` names that hash) and the sandbox runs that copy.

``check_technique_file`` is `airlab techniques check FILE`: the contract in the sandbox (the
static checks of ``airlab.techniques.contract`` and a few training steps of a tiny model
through the one trainer, then its evaluation).
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airlab.executors.base import EventSink, Job
from airlab.run.result import RunResult
from airlab.sandbox import Limits, Protections, protections, run_sandboxed

# Not at module level: airlab.techniques imports torch, and this module must stay light.
RESULT_FILE = "contract.json"  # = airlab.techniques.contract.RESULT_FILE

if TYPE_CHECKING:
    from airlab.settings import Settings

JOB_FILE = "job.json"
# Limits of one sandboxed training run (the wall clock is the job's timeout when it has one).
RUN_LIMITS = Limits(address_space_mb=8192, cpu_s=3600, processes=64, file_size_mb=512,
                    wall_s=3600.0)
CHECK_LIMITS = Limits(address_space_mb=4096, cpu_s=300, processes=64, file_size_mb=64,
                      wall_s=300.0)
# The contract check's training: a micro GPT on the charlm workload (or the vision MLP).
CHECK_CHARLM = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
                "warmup_steps": 2, "eval_points": 2, "eval_tokens": 1024, "max_steps": 8}
CHECK_VISION = {"eval_points": 1, "max_steps": 8}


def store_code(home: Path, path: Path) -> Path:
    """Copy a technique file to ``<home>/techniques/<sha16>.py`` (content-addressed) and
    return the copy: the code is kept with the hash its runs' keys name."""
    from airlab.techniques.base import file_digest

    digest = file_digest(path)
    dest = Path(home) / "techniques" / f"{digest}.py"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(dest)
    return dest


def _child_settings(settings: Settings | None) -> dict[str, Any]:
    """What the child may know of the settings: data locations only (read-only inside), never
    the database URL or the lab folder; the child puts home in its private folder."""
    s = settings.to_dict() if settings is not None else {}
    return {"data_dir": s.get("data_dir"), "cache_dir": s.get("cache_dir"),
            "techniques_dir": s.get("techniques_dir")}


def _read_only(settings: Settings | None, config: dict[str, Any] | None,
               files: Sequence[Path]) -> list[Path]:
    """The paths a run may read: its technique files, the data and cache folders, a `file:`
    dataset and the techniques folder; never the lab folder or its database."""
    out = [Path(f) for f in files]
    if settings is not None:
        for d in (settings.data_dir, settings.cache_dir, settings.techniques_dir):
            if d is not None and Path(d).exists():
                out.append(Path(d))
    ds = str((config or {}).get("dataset") or "")
    if ds.startswith("file:") and Path(ds[5:]).exists():
        out.append(Path(ds[5:]))
    return out


def uses_technique_files(plans: Sequence[Any]) -> bool:
    """Whether any plan's config uses a technique registered from a technique file."""
    from airlab.techniques.base import FILE_MODULE_PREFIX, TECHNIQUES

    return any(TECHNIQUES[n].module.startswith(FILE_MODULE_PREFIX + ".")
               for p in plans for n in p.config.techniques if n in TECHNIQUES)


@dataclass
class SandboxedExecutor:
    """Runs each job in the sandbox, one after another (``workers`` = 1)."""

    streams = True  # run() takes each job from its iterable only when the last one is done

    settings: Settings | None = None
    technique_files: Sequence[Path] = ()
    limits: Limits = RUN_LIMITS
    allow_unsafe: bool = False
    threads: int = 1
    workers: int = 1
    _stored: list[Path] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.settings is None:  # a library user gave none: this constructor is the edge
            from airlab.settings import get_settings

            self.settings = get_settings()
        from airlab.techniques.contract import check_technique_path

        self._stored = [store_code(self.settings.home, check_technique_path(f))
                        for f in self.technique_files]

    def run(self, jobs: Iterable[Job], on_event: EventSink | None = None
            ) -> Iterator[tuple[Job, RunResult]]:
        for job in jobs:
            t0 = time.perf_counter()
            result = self.run_one(job)
            result.info.setdefault("worker_wall_seconds", time.perf_counter() - t0)
            result.info["sandbox"] = True
            yield job, result

    def run_one(self, job: Job) -> RunResult:
        """One job in the sandbox; a failure of any kind is a failed RunResult."""
        from dataclasses import replace

        from airlab.executors.base import DEADLINE_GRACE_S

        limits = self.limits
        if job.timeout_s:
            limits = replace(limits, wall_s=float(job.timeout_s))
        if job.stop_at is not None:  # a time box: the run stops itself; killed if it overruns
            left = max(1.0, job.stop_at - time.time() + DEADLINE_GRACE_S)
            limits = replace(limits, wall_s=min(limits.wall_s, left))
        with tempfile.TemporaryDirectory(prefix="airlab-sandbox-run-") as tmp:
            folder = Path(tmp)
            (folder / JOB_FILE).write_text(json.dumps({
                "config": job.config, "settings": _child_settings(self.settings),
                "stop_at": job.stop_at,
                "technique_files": [str(p) for p in self._stored]}), encoding="utf-8")
            try:
                r = run_sandboxed([sys.executable, "-m", "airlab.executors.sandboxed", "run",
                                   JOB_FILE], workdir=folder,
                                  read_only=_read_only(self.settings, job.config, self._stored),
                                  limits=limits, allow_unsafe=self.allow_unsafe,
                                  threads=self.threads)
            except OSError as e:  # bwrap could not start: not the code's fault, retryable
                return RunResult.failed(f"sandbox failed to start: {e}", infra=True)
            data = _read_result(folder)
        if not r.ok or data is None or not isinstance(data.get("result"), dict):
            reason = r.reason or "the sandboxed run wrote no result"
            if data is not None and data.get("reason"):
                reason = str(data["reason"])
            return RunResult.failed(reason if reason.startswith("sandbox") else
                                    f"sandbox: {reason}", killed_by=r.killed_by)
        try:
            result = RunResult.from_dict(data["result"])
        except (KeyError, TypeError, ValueError) as e:
            return RunResult.failed(f"sandbox: malformed result: {type(e).__name__}: {e}")
        prov = result.info.get("provenance")
        if isinstance(prov, dict):
            # The sandbox has a hostname of its own; the run ran on this machine (which is what
            # comparing timings and adopting results across experiments go by).
            prov["host"], prov["sandboxed"] = socket.gethostname(), True
        return result

    def shutdown(self) -> None:
        """Each run ends with its sandbox; nothing is left to stop."""


@dataclass(frozen=True)
class TechniqueCheck:
    """The outcome of `airlab techniques check FILE`."""

    ok: bool
    reason: str
    techniques: list[str]
    protections: Protections
    seconds: float
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def check_technique_file(path: Path | str, *, settings: Settings | None = None,
                         limits: Limits = CHECK_LIMITS, allow_unsafe: bool = False
                         ) -> TechniqueCheck:
    """Run the technique contract on ``path`` in the sandbox: import, static checks, a few
    training steps of a micro model with each technique through the one trainer, evaluated.

    AirlabError for bad input (no such file, not .py) and when no sandbox is available
    without ``allow_unsafe``; a contract failure is ``ok=False`` with a one-line reason."""
    from airlab.techniques.contract import check_technique_path

    p = check_technique_path(path)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="airlab-sandbox-check-") as tmp:
        folder = Path(tmp)
        (folder / JOB_FILE).write_text(json.dumps({"file": str(p), "settings":
                                                   _child_settings(settings)}))
        r = run_sandboxed([sys.executable, "-m", "airlab.executors.sandboxed", "check",
                           JOB_FILE], workdir=folder, read_only=_read_only(settings, None, [p]),
                          limits=limits, allow_unsafe=allow_unsafe)
        data = _read_result(folder)
    seconds = time.perf_counter() - t0
    prot = protections()
    if data is None:
        return TechniqueCheck(False, r.reason or "the sandboxed check wrote no result", [], prot,
                              seconds)
    names = [str(d.get("name")) for d in data.get("techniques") or [] if isinstance(d, dict)]
    if not data.get("ok") or not r.ok:
        reason = str(data.get("reason") or r.reason or "failed")
        return TechniqueCheck(False, reason, names, prot, seconds)
    return TechniqueCheck(True, "", names, prot, seconds, dict(data.get("metrics") or {}))


# ------------------------------------------------------------------ child side (in the sandbox)


def _read_result(folder: Path) -> dict[str, Any] | None:
    """The child's result file (None if missing or not a JSON object)."""
    try:
        data = json.loads((folder / RESULT_FILE).read_text(encoding="utf-8")[:4_000_000])
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _settings_here(d: dict[str, Any]) -> Settings:
    from airlab.settings import Settings

    here = Path.cwd()
    return Settings(home=here, db_url=f"sqlite:///{here / 'unused.db'}",
                    data_dir=Path(d["data_dir"]) if d.get("data_dir") else None,
                    cache_dir=Path(d["cache_dir"]) if d.get("cache_dir") else here / "cache",
                    techniques_dir=(Path(d["techniques_dir"]) if d.get("techniques_dir")
                                    else None))


def _child_run(job: dict[str, Any]) -> dict[str, Any]:
    from airlab.run.execute import execute
    from airlab.techniques.base import load_technique_file
    from airlab.techniques.contract import one_line

    try:
        for f in job.get("technique_files") or []:
            load_technique_file(f)
    except BaseException as e:  # noqa: BLE001 - the file's failure is the run's result
        return {"ok": False, "reason": f"technique file failed to load: {one_line(e)}"}
    result = execute(job["config"], settings=_settings_here(job.get("settings") or {}),
                     stop_at=job.get("stop_at"))
    return {"ok": True, "result": result.to_dict()}


def _child_check(job: dict[str, Any]) -> dict[str, Any]:
    from airlab.plan import resolve
    from airlab.run.execute import execute
    from airlab.techniques.contract import describe, load_and_check

    techs = load_and_check(job["file"])
    out: dict[str, Any] = {"techniques": [describe(t) for t in techs], "metrics": {}}
    settings = _settings_here(job.get("settings") or {})
    for t in techs:
        if "charlm" in t.workloads:
            cfg = resolve(workload="charlm", budget={"tokens": 4096}, use=[t.name],
                          options=CHECK_CHARLM)
        else:
            cfg = resolve(workload=t.workloads[0], preset="mlp", budget={"samples": 512},
                          use=[t.name], options=CHECK_VISION)
        res = execute(cfg.to_dict(), settings=settings)
        if res.state != "finished":
            return {**out, "ok": False,
                    "reason": f"technique '{t.name}': training failed: {res.reason}"}
        metric = "val_loss" if "val_loss" in res.metrics else next(
            (k for k in res.metrics if k.startswith("val_")), None)
        value = res.metrics.get(metric) if metric else None
        if value is None or not math.isfinite(float(value)):
            return {**out, "ok": False,
                    "reason": f"technique '{t.name}': no finite evaluation after training "
                              f"({metric}={value})"}
        out["metrics"][t.name] = {metric: float(value),
                                  "steps": float(res.metrics.get("steps", 0) or 0)}
    return {**out, "ok": True}


def main(argv: list[str] | None = None) -> int:
    """Sandbox child: ``run job.json`` or ``check job.json``; writes contract.json here."""
    from airlab.techniques.contract import one_line, write_result

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("run", "check"):
        print("usage: python -m airlab.executors.sandboxed run|check job.json", file=sys.stderr)
        return 2
    try:
        job = json.loads(Path(args[1]).read_text(encoding="utf-8"))
        data = _child_run(job) if args[0] == "run" else _child_check(job)
    except BaseException as e:  # noqa: BLE001 - even sys.exit in generated code is a result
        data = {"ok": False, "reason": one_line(e)}
    write_result(data)
    return 0 if data.get("ok") else 1


__all__ = ["CHECK_LIMITS", "RESULT_FILE", "RUN_LIMITS", "SandboxedExecutor", "TechniqueCheck",
           "check_technique_file", "store_code", "uses_technique_files"]

if __name__ == "__main__":
    sys.exit(main())
