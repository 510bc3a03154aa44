"""Worker side of the local pool: one forked child process per run, from a warm zygote.

The local executor starts a multiprocessing *forkserver* (the zygote) whose preload list
(:data:`PRELOAD`) imports torch, torch._dynamo and airlab's trainer ONCE; every run is then a
fresh ``os.fork()`` of it that starts training in milliseconds instead of paying ~4 s of imports.
A fresh process per run keeps what matters isolated: a crash, an out-of-memory kill or a hang
takes one run down, and the run's peak RSS is its own process's high-water mark.

The zygote imports but never computes, so no OpenMP/intra-op thread pool exists at fork time
and ``torch.set_num_threads`` works in each child. This module itself imports no torch: the
executor names :func:`serve` as the child's target without importing PyTorch.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

# Imported once by the zygote. torch._dynamo is what the first optimizer construction would
# otherwise import (~2-3 s); the trainer pulls in models, techniques and measure; the data and
# models packages are otherwise imported lazily by the first setup (~0.1 s per run).
PRELOAD = ["torch", "torch._dynamo", "airlab.run.execute", "airlab.run.trainer", "airlab.data",
           "airlab.models", "airlab.run.workloads", "airlab.settings"]

# Settings fields mirrored into the child's environment, for any code below the edge that still
# resolves settings itself: the zygote's environment is the one it was started with.
_ENV = {"home": "AIRLAB_HOME", "db_url": "AIRLAB_DB", "data_dir": "AIRLAB_DATA_DIR",
        "cache_dir": "AIRLAB_CACHE_DIR"}


def _die_with_parent() -> None:
    """If the zygote (and so airlab) dies, even by SIGKILL, this run must not live on."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            return
        except OSError:
            pass
    parent = os.getppid()

    def watch() -> None:  # portable fallback: poll the parent pid
        import time

        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def serve(conn: Any, job: dict[str, Any]) -> None:
    """Child entry point: run ``job`` and send events, then the result, on ``conn``.

    ``job``: {"config": {...}, "settings": {...} | None, "threads": N, "mem_limit_mb": M | None,
    "log": path, "stop_at": epoch seconds | None (a time box's deadline)}, and for a run of
    generated code "technique_files" (the files its config uses), "timeout_s", "allow_unsafe".
    stdout and stderr go to the ``log`` file, whose tail the executor keeps for a failure's
    reason, so nothing a library prints can corrupt the protocol.
    """
    _die_with_parent()
    log_fd = os.open(job["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)

    threads = int(job.get("threads") or 1)
    # The OpenMP runtime reads these when its pool first starts, which is after this fork.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    settings = job.get("settings")
    for key, var in _ENV.items():
        if settings and settings.get(key):
            os.environ[var] = str(settings[key])

    if job.get("mem_limit_mb"):
        import resource

        limit = int(job["mem_limit_mb"]) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def send(msg: dict[str, Any]) -> None:
        try:
            conn.send(msg)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            os._exit(1)  # the executor is gone: nobody wants this run any more

    send({"type": "started", "pid": os.getpid()})
    from airlab.run.execute import execute
    from airlab.settings import Settings

    try:
        import torch

        torch.set_num_threads(threads)
        run_settings = Settings.from_dict(settings) if settings else None
        if job.get("technique_files") is not None:
            # Generated code: it trains in the sandbox; this process (which never imports it)
            # serves its data, keeps its clock and evaluates what it hands over.
            from airlab.run.harness import run_generated
            from airlab.settings import get_settings

            result = run_generated(job["config"], job["technique_files"],
                                   settings=run_settings or get_settings(),
                                   deploys=bool(job.get("deploys")), threads=threads,
                                   stop_at=job.get("stop_at"), emit=send,
                                   timeout_s=job.get("timeout_s"),
                                   allow_unsafe=bool(job.get("allow_unsafe")))
        else:
            result = execute(job["config"], on_event=send, settings=run_settings,
                             stop_at=job.get("stop_at"))
        msg = {"type": "result", **result.to_dict()}
    except MemoryError:  # execute() catches its own; this is the import or the setup above
        msg = {"type": "result", "state": "failed", "reason": "out of memory (MemoryError)"}
    send(msg)
    sys.stdout.flush()
    sys.stderr.flush()
    conn.close()


__all__ = ["PRELOAD", "serve"]
