"""Models: a configurable character-level GPT and small vision classifiers."""

from __future__ import annotations

import torch
from torch import nn

from airlab.models.gpt import GPT, PRESET_TRAINING, PRESETS, GPTConfig, build_gpt, generate
from airlab.models.vision import (
    MLP,
    VISION_MODELS,
    SmallCNN,
    build_vision,
    flops_per_sample,
)

__all__ = [
    "GPT",
    "GPTConfig",
    "MLP",
    "PRESETS",
    "PRESET_TRAINING",
    "SmallCNN",
    "VISION_MODELS",
    "build_gpt",
    "build_vision",
    "flops_per_sample",
    "generate",
    "model_bytes",
    "num_params",
]


def num_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters; tied (shared) parameters are counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _tensor_bytes(value: object, seen: set[int]) -> int:
    # Quantized modules store tuples of packed tensors in their state_dict; walk into them.
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v, seen) for v in value)
    if not isinstance(value, torch.Tensor) or id(value) in seen:
        return 0
    seen.add(id(value))
    return value.numel() * value.element_size()


def model_bytes(model: nn.Module) -> int:
    """Bytes of parameters plus persistent buffers, i.e. what a checkpoint stores.

    Built on state_dict(keep_vars=True) so non-persistent buffers (e.g. RoPE tables)
    are excluded, and a tensor shared by several modules (tied embeddings) is counted
    once because it appears as the same object.
    """
    seen: set[int] = set()
    return sum(_tensor_bytes(v, seen) for v in model.state_dict(keep_vars=True).values())
