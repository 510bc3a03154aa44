"""Fixed metric definitions, one place each. Names carry their units.

- ``val_loss``: mean cross-entropy (nats per token or per sample) on the fixed held-out subset.
- ``val_bpc``: val_loss / ln 2, bits per character (text).
- ``train_seconds``: wall time of training steps only (evaluation excluded).
- ``tokens_per_s`` / ``samples_per_s``: units trained / train_seconds.
- ``flops``: analytic training FLOPs = flops_per_unit x units trained (forward + backward).
- ``peak_mem_mb``: on CPU, the run's own process's peak resident set during training (VmHWM,
  reset just before training starts, so it covers model, optimizer state, activations and the
  data). Each run of the local pool is its own process forked from a zygote that has imported
  torch: its RSS counts the pages of that shared code it touches, as a fresh process would.
  On CUDA, torch.cuda.max_memory_allocated.
- ``params``: parameter count (shared tensors once); ``model_bytes``: bytes of parameters and
  persistent buffers as stored (of the deployable model when a technique replaced it).
- ``latency_ms_b1`` / ``latency_ms_batch``: median wall time of one inference forward pass at
  batch 1 and at the training batch size (with ``latency: true``).
- ``energy_kwh_est``: an ESTIMATE, never a measurement: train_seconds x an assumed power draw
  (``AIRLAB_WATTS_PER_THREAD``, default 15 W per busy CPU thread; GPU: board power from NVML
  when available, else 300 W). The source is stored beside it as ``energy_source``.
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


def cpu_bf16_units() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): only then can bf16 autocast
    be faster than fp32 on CPU; elsewhere it is emulated and slower. Linux flags; else False."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


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


def latency_metrics(model: nn.Module, batch: torch.Tensor, repeats: int = 20) -> dict[str, float]:
    """Median forward latency at batch 1 and at the given batch (inference mode, warmed up)."""
    import statistics
    import time

    def timed(x: torch.Tensor) -> float:
        times = []
        with torch.inference_mode():
            for i in range(repeats + 3):
                if x.is_cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                model(x)
                if x.is_cuda:
                    torch.cuda.synchronize()
                if i >= 3:  # the first calls pay one-off allocation costs
                    times.append(time.perf_counter() - t0)
        return 1000 * statistics.median(times)

    was_training = model.training
    model.eval()
    try:
        out = {"latency_ms_b1": timed(batch[:1]), "latency_ms_batch": timed(batch)}
    finally:
        model.train(was_training)
    return out


def energy_kwh_est(train_seconds: float, device: torch.device, threads: int) -> tuple[float, str]:
    """Energy of the training time, ESTIMATED from an assumed power draw; returns (kWh, source)."""
    if device.type == "cuda":
        watts, source = 300.0, "assumed 300 W GPU board power"
        try:
            import pynvml  # optional

            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            watts = pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1000
            source = f"NVML power limit {watts:.0f} W (upper bound)"
        except Exception:  # noqa: BLE001 - any NVML problem falls back to the assumption
            pass
    else:
        per = float(os.environ.get("AIRLAB_WATTS_PER_THREAD", "15"))
        watts, source = per * threads, f"assumed {per:g} W per CPU thread x {threads}"
    return watts * train_seconds / 3.6e6, f"estimate: {source}"
