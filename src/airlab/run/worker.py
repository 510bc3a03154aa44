"""Worker process: runs one TrainConfig and reports JSON lines on a private pipe.

Started as ``python -m airlab.run.worker`` by the local executor. The job arrives as JSON on
stdin: {"config": {...}, "threads": N, "mem_limit_mb": M}. Protocol lines go to the original
stdout; anything a library prints is sent to stderr so it cannot corrupt the protocol.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from typing import Any


def _die_with_parent() -> None:
    """If the parent (airlab) dies, even by SIGKILL, this worker must not live on."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
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


def main() -> int:
    _die_with_parent()
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints go to stderr
    job: dict[str, Any] = json.loads(sys.stdin.read())

    if job.get("mem_limit_mb"):
        import resource

        limit = int(job["mem_limit_mb"]) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def send(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg, default=float) + "\n")

    import torch

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    from airlab.config import TrainConfig
    from airlab.errors import AirlabError
    from airlab.run.trainer import train

    try:
        result = train(TrainConfig(**job["config"]), on_event=send).to_dict()
    except MemoryError:
        result = {"state": "failed", "reason": "out of memory (MemoryError)"}
    except AirlabError as e:
        result = {"state": "failed", "reason": str(e)}
    except Exception as e:  # a crash is a result: report it, with the traceback on stderr
        traceback.print_exc()
        result = {"state": "failed", "reason": f"crashed: {type(e).__name__}: {e}"}
    send({"type": "result", **result})
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
