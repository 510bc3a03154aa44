"""Techniques: mixed precision.

* ``bf16``: ``precision=bf16``: the trainer runs the forward pass (and the loss) under
  ``torch.autocast(dtype=bfloat16)`` on CPU and GPU; weights, gradients and optimizer state stay
  fp32, autocast casts matmul inputs to bf16 (ops on its fp32 list, e.g. softmax, stay fp32).
* ``fp16``: ``precision=fp16``: autocast to float16 with the trainer's GradScaler (dynamic loss
  scaling against fp16 underflow). CUDA only: on CPU the trainer refuses the run with a clear
  AirlabError before it starts.
* ``bf16_weights``: the model itself is cast to bfloat16 (parameters and float buffers), i.e.
  pure bf16 training with no fp32 master copy. Effects: half the parameter bytes; gradients are
  bf16; optimizers create their state like the parameter, so AdamW's moments are bf16 too
  (Adafactor keeps its statistics in fp32); and an update smaller than ~1/256 of a weight
  rounds away (bf16 has 8 significant bits), which is what usually costs quality late in a
  decaying schedule. Float inputs are cast to bf16 on the way in and float outputs back to
  fp32 on the way out (forward hooks on the model), so losses are computed in fp32 and
  evaluation code that feeds fp32 images keeps working.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from airlab.techniques.base import Hooks, Technique, register


def _cast_floats(obj: Any, dtype: torch.dtype) -> Any:
    """Cast floating tensors inside (nested) tuples/lists; leave everything else alone."""
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_cast_floats(o, dtype) for o in obj)
    return obj


def _inputs_to_bf16(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return _cast_floats(args, torch.bfloat16)


def _outputs_to_fp32(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    return _cast_floats(output, torch.float32)


class BF16WeightsHooks(Hooks):
    def on_model(self, model: Any) -> Any:
        model = model.to(torch.bfloat16)
        # Module-level functions (not closures) keep the model picklable/deep-copyable.
        model.register_forward_pre_hook(_inputs_to_bf16)
        model.register_forward_hook(_outputs_to_fp32)
        return model


for _t in (
    Technique("bf16", "mixed_precision", "bf16 autocast for the forward pass (fp32 weights)",
              {"precision": "bf16"}, excludes=("fp16",)),
    Technique("fp16", "mixed_precision", "fp16 autocast with loss scaling (CUDA only)",
              {"precision": "fp16"}, excludes=("bf16", "bf16_weights")),
    Technique("bf16_weights", "mixed_precision",
              "pure bf16 training: parameters, gradients and optimizer state in bf16",
              hooks=BF16WeightsHooks, excludes=("fp16",)),
):
    register(_t)
