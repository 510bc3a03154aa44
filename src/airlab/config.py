"""The resolved configuration of one training run: flat, validated, hashable.

Everything that can change a run's result is in here, so the run key (a hash of this config)
identifies a run. Executor-level settings (threads, timeouts) are not: they change speed only.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

BUDGET_UNITS = ("tokens", "samples", "epochs", "seconds")


class TrainConfig(BaseModel):
    """One run. Model-architecture fields live in ``model``; the rest are trainer fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workload: str = "charlm"
    preset: str = "tiny"
    dataset: str = "pycode"
    seed: int = 42

    # Budget: exactly one of these is set.
    tokens: float | None = None
    samples: float | None = None
    epochs: float | None = None
    seconds: float | None = None

    batch_size: int = Field(12, ge=1)
    optimizer: str = "adamw"
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-4, ge=0)
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0)  # 0 disables clipping
    # Batch-size rule: lr and min_lr were scaled by (batch_size / base_batch_size)^k at resolve
    # time (k = 1 linear, 1/2 sqrt); the config records the rule and the resulting values.
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    base_batch_size: int | None = Field(None, ge=1)

    eval_points: int = Field(8, ge=1)  # evaluations after step 0, evenly spaced over the budget
    eval_tokens: int = Field(16384, ge=1)  # fixed held-out subset for text (same for all runs)
    diverge_factor: float = Field(3.0, gt=1)  # loss above factor x initial loss => diverged

    latency: bool = False  # measure inference latency (batch 1 and a full batch) after training

    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"

    model: dict[str, Any] = Field(default_factory=dict)
    techniques: tuple[str, ...] = ()
    options: dict[str, Any] = Field(default_factory=dict)  # technique options, e.g. prune_sparsity

    @model_validator(mode="after")
    def _one_budget(self) -> TrainConfig:
        set_units = [u for u in BUDGET_UNITS if getattr(self, u) is not None]
        if len(set_units) != 1:
            raise ValueError(
                f"give exactly one budget ({', '.join(BUDGET_UNITS)}); got "
                f"{', '.join(set_units) or 'none'}"
            )
        value = getattr(self, set_units[0])
        if value <= 0:
            raise ValueError(f"budget {set_units[0]} must be positive, got {value}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr={self.min_lr} is larger than lr={self.lr}")
        return self

    @property
    def budget_unit(self) -> str:
        return next(u for u in BUDGET_UNITS if getattr(self, u) is not None)

    @property
    def budget(self) -> float:
        return float(getattr(self, self.budget_unit))

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        return d

    @property
    def run_key(self) -> str:
        """Stable id of this exact configuration (sha256 of canonical JSON, 16 hex chars).

        Fields at their default value are left out of the hash, so adding a new field to
        TrainConfig later does not change the keys of runs already stored.
        """
        d = self.to_dict()
        defaults = _defaults()
        return config_key({k: v for k, v in d.items()
                           if k in _ALWAYS_KEYED or k not in defaults or v != defaults[k]})


_ALWAYS_KEYED = {"workload", "preset", "dataset", "seed", *BUDGET_UNITS}


def _defaults() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, f in TrainConfig.model_fields.items():
        value = f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


TRAIN_FIELDS = tuple(f for f in TrainConfig.model_fields if f not in ("model", "techniques"))


def config_key(d: dict[str, Any]) -> str:
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
