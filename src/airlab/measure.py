"""Fixed metric definitions, one place each. Names carry their units.

- ``val_loss``: mean cross-entropy (nats per token or per sample) on the fixed held-out subset.
- ``val_bpc``: val_loss / ln 2, bits per character (text).
- ``train_seconds``: wall time of training steps only (evaluation excluded).
- ``tokens_per_s`` / ``samples_per_s``: units trained / train_seconds.
- ``flops``: analytic training FLOPs = flops_per_unit x units trained (forward + backward).
- ``peak_mem_mb``: on CPU, the worker process's peak resident set during training (VmHWM, reset
  just before training starts, so it covers model, optimizer state, activations and the data);
  on CUDA, torch.cuda.max_memory_allocated.
- ``params``: parameter count (shared tensors once); ``model_bytes``: bytes of parameters and
  persistent buffers as stored.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Linux lets a process reset its own RSS high-water mark (VmHWM) by writing "5".
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if os.uname().sysname == "Darwin" else 1024)


def count_params(model: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() already yields a shared tensor once
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def model_bytes(model: nn.Module) -> int:
    """Bytes of the state dict as stored (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for t in model.state_dict(keep_vars=False).values():
        if not isinstance(t, torch.Tensor):
            continue
        key = t.untyped_storage().data_ptr() if t.numel() else id(t)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total
