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

``max_batch_under_cap`` finds the largest batch size (or context length) whose training steps
stay under a memory cap, with and without it: each candidate is a few steps of the one trainer
(``max_steps``), run by the caller's executor in a fresh process.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from airlab.config import TrainConfig
from airlab.errors import AirlabError
from airlab.techniques.base import Hooks, Technique, register


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
# Memory-cap search: a few real steps of the one trainer per candidate (max_steps), each in a
# fresh worker process chosen by the caller, so its memory high-water mark is its own.

Measure = Callable[[TrainConfig], Mapping[str, float]]


def measurement_config(config: TrainConfig, steps: int = 2) -> TrainConfig:
    """``config`` cut to ``steps`` optimizer steps with one tiny evaluation: what the trainer
    then reports as ``peak_mem_mb`` is the memory of those training steps."""
    block = int(config.model.get("block_size", 64))
    d = config.to_dict()
    d.update(max_steps=int(steps), eval_points=1, eval_tokens=max(1, block), latency=False)
    return TrainConfig(**d)


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
    code = {k: v for k, v in d.get("code", {}).items() if k != "checkpoint"}
    if ckpt:
        from airlab.techniques.base import get_technique

        code["checkpoint"] = get_technique("checkpoint").source_hash
    d["code"] = code
    return TrainConfig(**d)


def max_batch_under_cap(config: TrainConfig, cap_mb: float, measure: Measure, *,
                        candidates: Sequence[int] = (8, 16, 32, 64, 128, 256),
                        dimension: str = "batch_size", steps: int = 2) -> dict[str, Any]:
    """Largest candidate batch size (or ``dimension="block_size"``: context length) whose
    training steps fit under ``cap_mb``, without and with checkpointing.

    ``measure(config)`` runs a config through the one trainer and returns its metrics (use an
    executor that starts a fresh worker process per run, so each peak is clean); each candidate
    is ``measurement_config`` of the config at that value: ``steps`` real training steps. It
    fits when ``peak_mem_mb`` (process VmHWM on CPU, which includes the interpreter and torch;
    ``max_memory_allocated`` on CUDA) is <= ``cap_mb`` and the loss is finite. Candidates are
    tried in increasing order and the search stops at the first one over the cap (memory
    grows with both dimensions). Returns, per arm ("plain", "checkpoint"): the largest fitting
    value (None if none fits) and every measurement.
    """
    values = sorted({int(c) for c in candidates})
    out: dict[str, Any] = {"dimension": dimension, "cap_mb": float(cap_mb),
                           "measure": "peak_mem_mb of a few trainer steps (max_steps)"}
    for arm, ckpt in (("plain", False), ("checkpoint", True)):
        best: int | None = None
        measured: dict[int, dict[str, float]] = {}
        for v in values:
            m = measure(measurement_config(_with_value(config, dimension, v, ckpt), steps))
            if "peak_mem_mb" not in m:
                raise AirlabError(f"memory measurement at {dimension}={v} returned no "
                                  "peak_mem_mb", "check that the run finished")
            steps_done = max(1.0, float(m.get("steps", steps)))
            row = {"peak_mb": float(m["peak_mem_mb"]),
                   "step_seconds": float(m.get("train_seconds", math.nan)) / steps_done,
                   "loss": float(m.get("train_loss", math.nan))}
            measured[v] = row
            if row["peak_mb"] > cap_mb or not math.isfinite(row["loss"]):
                break
            best = v
        out[arm] = {"max": best, "measured": measured}
    return out
