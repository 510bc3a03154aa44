"""Trained-model artifacts: weights plus how to rebuild the module, plus a small cost record.

A run whose config has ``save_model`` writes ``<artifacts_dir>/<run_key>/model.pt`` and
``cost.json`` (train_seconds, flops, units, val_loss, ...). A later run (a distilled student)
loads them by run key. Files are written to a temporary name and renamed, so a reader never
sees half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

MODEL_FILE = "model.pt"
COST_FILE = "cost.json"


def build_model(build: dict[str, Any]) -> nn.Module:
    """Rebuild an untrained module from a build record (``kind`` gpt or vision)."""
    from airlab.models import build_gpt, build_vision

    if build["kind"] == "gpt":
        return build_gpt(int(build["vocab_size"]), build["preset"], **build["model"])
    return build_vision(build["preset"], tuple(build["input_shape"]), int(build["n_classes"]),
                        **build["model"])


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the whole new one


def save_trained(folder: Path, model: nn.Module, build: dict[str, Any],
                 cost: dict[str, Any]) -> None:
    """Write the model's weights (with its build record) and its cost record into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic_write(folder / MODEL_FILE,
                  lambda p: torch.save({"build": build, "state_dict": state}, p))
    # The cost last: its presence means the weights are complete.
    _atomic_write(folder / COST_FILE, lambda p: p.write_text(json.dumps(cost, indent=1)))


def load_trained(folder: Path, device: torch.device | str = "cpu"
                 ) -> tuple[nn.Module, dict[str, Any]]:
    """Load what ``save_trained`` wrote: (model on ``device``, cost record)."""
    payload = torch.load(folder / MODEL_FILE, map_location=device, weights_only=True)
    model = build_model(payload["build"]).to(device)
    model.load_state_dict(payload["state_dict"])
    return model, json.loads((folder / COST_FILE).read_text())


def has_trained(folder: Path) -> bool:
    return (folder / COST_FILE).is_file() and (folder / MODEL_FILE).is_file()
