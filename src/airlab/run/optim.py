"""Optimizers: a registry of builders. Each takes the model and flat keyword arguments (the
trainer passes every TrainConfig field; a builder picks what it needs and ignores the rest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Decay matrices (weights, embeddings); not biases or norm gains.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _adamw(model: nn.Module, *, lr: float, weight_decay: float, beta1: float, beta2: float,
           **_: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(beta1, beta2))


def _sgd(model: nn.Module, *, lr: float, weight_decay: float, beta1: float,
         **_: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(_param_groups(model, weight_decay), lr=lr, momentum=beta1,
                           nesterov=beta1 > 0)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"adamw": _adamw, "sgd": _sgd}
