"""What a run needs to be reproduced: code version, dirty tree, libraries, host and device."""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from airlab.measure import cpu_bf16_units


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """The git commit of airlab's source and whether the tree had uncommitted changes."""
    from airlab import __version__

    src = Path(__file__).resolve().parents[1]
    out: dict[str, Any] = {"airlab": __version__, "commit": None, "dirty": None}
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=src, capture_output=True, text=True,
                                  timeout=5, check=True).stdout.strip()

        out["commit"] = git("rev-parse", "HEAD")
        out["dirty"] = bool(git("status", "--porcelain", "--", str(src)))
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (installed package): the version number stands alone
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def _static() -> dict[str, Any]:
    from importlib import metadata

    # Read versions from package metadata: importing scipy or sklearn here would cost a second.
    versions = {"python": sys.version.split()[0], "torch": torch.__version__}
    for dist in ("numpy", "scipy", "scikit-learn", "sqlalchemy", "pydantic"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {
        "code": code_version(),
        "versions": versions,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_bf16_units": cpu_bf16_units(),  # bf16 on CPU is only fast with these
    }


def provenance(device: torch.device) -> dict[str, Any]:
    info = dict(_static())
    info["device"] = str(device)
    info["threads"] = torch.get_num_threads()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
