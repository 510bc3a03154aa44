"""Sandboxed executor: the local pool, where a run of generated code trains in the sandbox and
is measured by a process that never imports it.

A spec may name technique files (``techniques: [file.py]``; the Coder writes them). Each run
imports only the code its own config uses:

- every run of such a spec is measured the same way: it trains in a sandbox
  (:mod:`airlab.run.child` under :func:`airlab.sandbox.start_sandboxed`: no network, no
  dataset, a read-only view of Python, the airlab source and that run's own technique files,
  tmpfs folders of a fixed size, an unprivileged user, limits on the whole process tree),
  importing only the technique files its own config uses (the baseline: none). Its worker — a
  fork of the warm zygote that imports no technique file — serves it its batches, keeps its
  clock and evaluates the models it hands over (:mod:`airlab.run.harness`). Their configs say
  ``measured_by: harness`` (part of the key), so they never stand in for ordinary runs.

Runs share the pool's slots, events and failure handling (:class:`LocalExecutor`). The code is
stored with its hash: each file is copied to ``<home>/techniques/<sha16>.py``
(content-addressed; the run key's ``code`` names that hash) and the sandbox runs that copy.

``check_technique_file`` is `airlab techniques check FILE`: the contract in the sandbox
(``airlab.techniques.contract``), then a few training steps of a micro model with each
technique through the same harness, evaluated by the trusted side.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airlab.executors.base import Job
from airlab.executors.local import LocalExecutor
from airlab.sandbox import Limits, Protections, protections

if TYPE_CHECKING:
    from airlab.settings import Settings

# The contract check's training: a micro GPT on the charlm workload (or the vision MLP), 8 steps.
CHECK_CHARLM = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
                "warmup_steps": 2, "eval_points": 2, "eval_tokens": 1024}
CHECK_CHARLM_TOKENS = 8 * 8 * 32
CHECK_VISION = {"eval_points": 1, "batch_size": 64}
CHECK_VISION_SAMPLES = 8 * 64
CHECK_LIMITS = Limits(address_space_mb=4096, cpu_s=300, processes=64, file_size_mb=64,
                      wall_s=300.0, disk_mb=256, memory_mb=4096)


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


def measured_by_harness(plans: Sequence[Any]) -> bool:
    """Whether any plan is measured by the harness (its spec runs generated code)."""
    return any(p.config.measured_by == "harness" for p in plans)


class SandboxedExecutor(LocalExecutor):
    """The local pool for a spec with technique files: a job whose config uses one of
    ``technique_files`` goes to the harness with exactly the files it uses; the others run as
    on the plain pool."""

    def __init__(self, settings: Settings | None = None,
                 technique_files: Sequence[Path | str] = (), *, workers: int = 1,
                 threads: int | None = None, allow_unsafe: bool = False,
                 timeout_s: float | None = None) -> None:
        super().__init__(workers, threads=threads, settings=settings, timeout_s=timeout_s)
        from airlab.techniques.base import file_digest
        from airlab.techniques.contract import check_technique_path

        self.allow_unsafe = allow_unsafe
        self._stored: dict[str, Path] = {}  # file digest -> the stored copy
        for f in technique_files:
            path = check_technique_path(f)
            self._stored[file_digest(path)] = store_code(self.settings.home, path)

    def files_for(self, config: dict[str, Any]) -> list[str]:
        """The stored technique files the config's own techniques come from (by their hash
        in the config's ``code``); empty for a run that uses none."""
        code = config.get("code") or {}
        return sorted({str(self._stored[d]) for d in code.values() if d in self._stored})

    def _payload(self, job: Job) -> dict[str, Any]:
        payload = super()._payload(job)
        files = self.files_for(job.config)
        if files or job.config.get("measured_by") == "harness":
            from airlab.techniques import get_technique

            deploys = any(get_technique(t).deploys for t in job.config.get("techniques", ()))
            payload.update(technique_files=files, deploys=deploys,
                           allow_unsafe=self.allow_unsafe,
                           timeout_s=job.timeout_s or self.timeout_s)
        return payload


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
    """Run the technique contract on ``path``: the static checks in the sandbox, then a few
    training steps of a micro model with each technique through the harness (trained in the
    sandbox, evaluated here).

    AirlabError for bad input (no such file, not .py) and when no sandbox is available
    without ``allow_unsafe``; a contract failure is ``ok=False`` with a one-line reason."""
    from airlab.plan import resolve
    from airlab.run.harness import run_generated
    from airlab.settings import get_settings
    from airlab.techniques import get_technique
    from airlab.techniques.contract import (
        ContractError,
        check_technique_path,
        register_technique_files,
    )

    p = check_technique_path(path)
    settings = settings or get_settings()
    t0 = time.perf_counter()
    prot = protections()
    try:
        entry = register_technique_files([p], limits=limits, allow_unsafe=allow_unsafe)[p]
    except ContractError as e:
        return TechniqueCheck(False, e.message, [], prot, time.perf_counter() - t0)
    stored = str(store_code(settings.home, p))
    out: dict[str, dict[str, float]] = {}
    for name in entry.names:
        t = get_technique(name)
        if "charlm" in t.workloads:
            cfg = resolve(workload="charlm", budget={"tokens": CHECK_CHARLM_TOKENS}, use=[name],
                          options=CHECK_CHARLM)
        else:
            cfg = resolve(workload=t.workloads[0], preset="mlp",
                          budget={"samples": CHECK_VISION_SAMPLES}, use=[name],
                          options=CHECK_VISION)
        res = run_generated(cfg.to_dict(), [stored], settings=settings, limits=limits,
                            deploys=t.deploys, allow_unsafe=allow_unsafe)
        if res.state != "finished":
            return TechniqueCheck(False, f"technique '{name}': training failed: {res.reason}",
                                  list(entry.names), prot, time.perf_counter() - t0, out)
        value = res.metrics.get("val_loss")
        if value is None or not math.isfinite(float(value)):
            return TechniqueCheck(False, f"technique '{name}': no finite evaluation after "
                                         f"training (val_loss={value})", list(entry.names), prot,
                                  time.perf_counter() - t0, out)
        out[name] = {"val_loss": float(value), "steps": float(res.metrics.get("steps", 0))}
    return TechniqueCheck(True, "", list(entry.names), prot, time.perf_counter() - t0, out)


__all__ = ["CHECK_LIMITS", "SandboxedExecutor", "TechniqueCheck", "check_technique_file",
           "measured_by_harness", "store_code"]
