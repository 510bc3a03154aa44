"""Mixed-precision context: one definition, used by the trainer and by any technique that runs a
forward pass of its own (layer 1, so techniques never import the trainer for it)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for ``bf16`` / ``fp16``; a no-op context for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dev = torch.device(device)
    return torch.autocast(device_type=dev.type, dtype=_DTYPES[precision])
