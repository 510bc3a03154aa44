"""Gradient (activation) checkpointing (area "checkpointing"): trade compute for memory.

``checkpoint`` keeps only the input of each checkpointed segment during the forward pass and
recomputes the segment's activations in the backward pass (``torch.utils.checkpoint`` with
``use_reentrant=False``, which also replays the RNG so dropout masks match). Segments:

* charlm: every GPT block (``model.blocks[i]``);
* vision: every stage of a ``nn.Sequential`` (``SmallCNN.features``: conv -> ReLU -> pool per
  stage; ``MLP.net``: Linear -> activation -> dropout per layer); a stage starts at each
  convolution or Linear layer.

Checkpointing is active only while the model is training with grad enabled, so evaluation and
inference run the plain forward. Parameters and state-dict keys are unchanged.

``max_batch_under_cap`` measures, in a fresh subprocess per candidate, the largest batch size
(or context length) whose training steps stay under a memory cap, with and without it.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from airlab.config import TrainConfig
from airlab.errors import AirlabError
from airlab.techniques import Hooks, Technique, register


def _checkpointed_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """Bound per instance in place of ``forward``; the class's forward does the real work."""
    inner = type(self).forward.__get__(self)
    if self.training and torch.is_grad_enabled():
        return checkpoint(inner, *args, use_reentrant=False, **kwargs)
    return inner(*args, **kwargs)


def _wrap(module: nn.Module) -> None:
    # An instance attribute shadows the class's forward; MethodType (not a closure) so that
    # copy.deepcopy rebinds it to the copy instead of calling the original module.
    module.forward = types.MethodType(_checkpointed_forward, module)  # type: ignore[method-assign]


def _has_matmul(module: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in module.modules())


def _stage_groups(seq: nn.Sequential) -> list[list[int]]:
    """Indices of consecutive layers forming stages; a stage starts at a conv/Linear layer."""
    groups: list[list[int]] = []
    for i, layer in enumerate(seq):
        if not groups or (_has_matmul(layer) and any(_has_matmul(seq[j]) for j in groups[-1])):
            groups.append([])
        groups[-1].append(i)
    return groups


def _staged_forward(self: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """A Sequential's forward that checkpoints each stage listed in ``_ckpt_groups``."""

    def run(group: list[int], h: torch.Tensor) -> torch.Tensor:
        for i in group:
            h = self[i](h)
        return h

    groups: list[list[int]] = self._ckpt_groups  # type: ignore[assignment]
    for group in groups:
        if self.training and torch.is_grad_enabled():
            x = checkpoint(run, group, x, use_reentrant=False)
        else:
            x = run(group, x)
    return x


def _wrap_stages(seq: nn.Sequential) -> None:
    # Patch forward instead of regrouping modules, so state-dict keys stay as they were.
    seq._ckpt_groups = _stage_groups(seq)  # type: ignore[assignment]
    seq.forward = types.MethodType(_staged_forward, seq)  # type: ignore[method-assign]


def apply_checkpointing(model: nn.Module) -> nn.Module:
    """Checkpoint a GPT's blocks or a vision model's Sequential stages (in place)."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList):
        for block in blocks:
            _wrap(block)  # each block maps (B, T, C) -> (B, T, C)
        return model
    for attr in ("features", "net"):  # SmallCNN conv stages, vision MLP layers
        seq = getattr(model, attr, None)
        if isinstance(seq, nn.Sequential):
            _wrap_stages(seq)
            return model
    raise AirlabError(f"checkpoint: no blocks or stages found in {type(model).__name__}",
                      "it supports the charlm GPT and the vision MLP/CNN")


class CheckpointHooks(Hooks):
    def on_model(self, model: nn.Module) -> nn.Module:
        return apply_checkpointing(model)


register(Technique(
    "checkpoint", "checkpointing",
    "activation checkpointing: recompute each block's/stage's activations in backward",
    hooks=CheckpointHooks,
))


# ---------------------------------------------------------------------------------------------
# Memory measurement: a few real training steps in a fresh process per configuration.


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"{field} not in /proc/self/status")


def measure_steps(config: TrainConfig, steps: int = 2) -> dict[str, float]:
    """Run ``steps`` training steps of ``config`` in THIS process and measure memory and time.

    Set up exactly as the trainer does (workload task, technique hooks, optimizer, loss
    wrappers), then:
    * CPU: ``baseline_mb`` = VmRSS after setup (model, optimizer object, data, torch itself);
      the RSS high-water mark is reset (``/proc/self/clear_refs``) and ``peak_mb`` = VmHWM
      after the steps. ``growth_mb`` = peak - baseline: gradients, optimizer moments,
      activations and allocator slack of the steps.
    * CUDA: the same with ``torch.cuda.memory_allocated`` / ``max_memory_allocated``.
    Call it in a fresh process (see ``measure_in_subprocess``): memory freed earlier in a
    process stays mapped by the allocator and would hide part of the growth.
    """
    from airlab.run.optim import OPTIMIZERS
    from airlab.run.seeding import seed_everything
    from airlab.run.trainer import _autocast, resolve_device
    from airlab.run.workloads import get_workload
    from airlab.techniques import get_technique

    device = resolve_device(config.device)
    seed_everything(config.seed)
    cfg_dict = config.to_dict()
    hooks = [h for t in config.techniques if (h := get_technique(t).create(cfg_dict))]
    task = get_workload(config.workload).setup(config, device)
    model = task.model
    for h in hooks:
        model = h.on_model(model) or model
    opt = OPTIMIZERS[config.optimizer](
        model, **config.model_dump(exclude={"model", "options", "techniques"}))
    for h in hooks:
        opt = h.on_optimizer(opt, model) or opt
    loss_fn = task.loss_fn
    for h in hooks:
        loss_fn = h.wrap_loss(loss_fn)
    batches = [task.next_batch() for _ in range(steps)]  # data drawn before the baseline
    model.train()

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        baseline = torch.cuda.memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    else:
        baseline = _rss_mb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    times = []
    for x, y in batches:
        t0 = time.perf_counter()
        with _autocast(config, device):
            loss = loss_fn(model, x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else _rss_mb("VmHWM")
    return {"peak_mb": peak, "baseline_mb": baseline, "growth_mb": peak - baseline,
            "step_seconds": min(times), "loss": float(loss.detach())}


def _child(config: dict[str, Any], steps: int, threads: int, env: dict[str, str],
           out: Any) -> None:
    """Entry point of a measuring process: report measure_steps (or the error) on ``out``."""
    os.environ.update(env)  # the fork server was started with an older environment
    torch.set_num_threads(threads)
    try:
        out.put(("ok", measure_steps(TrainConfig(**config), steps)))
    except Exception as e:  # noqa: BLE001 - any failure goes back to the parent as text
        out.put(("error", f"{type(e).__name__}: {e}"))


def measure_in_subprocess(config: TrainConfig, steps: int = 2, threads: int = 1,
                          timeout: float = 300) -> dict[str, float]:
    """``measure_steps`` in a fresh process, so its high-water mark and heap are clean.

    Uses a multiprocessing fork server that has imported torch and airlab but trained
    nothing: each measurement is a fresh fork of it (no seconds-long torch import per
    candidate, and no freed-but-resident memory inherited from the caller). Falls back to
    spawn where there is no fork server. Scripts calling this need the usual
    ``if __name__ == "__main__":`` guard.
    """
    methods = mp.get_all_start_methods()
    ctx: Any = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        # Effective only before the server starts. torch._dynamo: building an optimizer
        # imports it lazily, which would cost every measuring process seconds.
        ctx.set_forkserver_preload([__name__, "torch._dynamo"])
    env = {k: v for k, v in os.environ.items() if k.startswith("AIRLAB_")}
    env["OMP_NUM_THREADS"] = str(threads)
    out = ctx.Queue()
    proc = ctx.Process(target=_child, args=(config.to_dict(), steps, threads, env, out))
    proc.start()
    try:
        status, value = out.get(timeout=timeout)
    except queue.Empty:
        proc.kill()
        raise AirlabError(f"memory measurement timed out after {timeout:g} s") from None
    finally:
        proc.join(timeout=30)
    if status != "ok":
        raise AirlabError(f"memory measurement failed: {value}")
    return value


def _with_value(config: TrainConfig, dimension: str, value: int, ckpt: bool) -> TrainConfig:
    d = config.to_dict()
    if dimension == "batch_size":
        d["batch_size"] = int(value)
    elif dimension == "block_size":
        d["model"] = {**d["model"], "block_size": int(value)}
    else:
        raise AirlabError(f"unknown dimension '{dimension}'", "use batch_size or block_size")
    techs = [t for t in d["techniques"] if t != "checkpoint"]
    d["techniques"] = (*techs, "checkpoint") if ckpt else tuple(techs)
    return TrainConfig(**d)


def max_batch_under_cap(config: TrainConfig, cap_mb: float, *,
                        candidates: Sequence[int] = (8, 16, 32, 64, 128, 256),
                        dimension: str = "batch_size", steps: int = 2,
                        threads: int = 1) -> dict[str, Any]:
    """Largest candidate batch size (or ``dimension="block_size"``: context length) whose
    training steps fit under ``cap_mb``, without and with checkpointing.

    Each candidate runs ``steps`` real training steps in a fresh subprocess
    (``measure_in_subprocess``); it fits when the peak memory of the steps (process VmHWM on
    CPU, which includes the interpreter and torch; ``max_memory_allocated`` on CUDA) is
    <= ``cap_mb``. Candidates are tried in increasing order and the search stops at the first
    one over the cap (memory grows with both dimensions). Returns, per arm ("plain",
    "checkpoint"): the largest fitting value (None if none fits) and every measurement.
    """
    values = sorted({int(c) for c in candidates})
    out: dict[str, Any] = {"dimension": dimension, "cap_mb": float(cap_mb),
                           "measure": "peak_mb of a few training steps, fresh process each"}
    for arm, ckpt in (("plain", False), ("checkpoint", True)):
        best: int | None = None
        measured: dict[int, dict[str, float]] = {}
        for v in values:
            m = measure_in_subprocess(_with_value(config, dimension, v, ckpt), steps, threads)
            measured[v] = m
            if m["peak_mb"] > cap_mb or not math.isfinite(m["loss"]):
                break
            best = v
        out[arm] = {"max": best, "measured": measured}
    return out
