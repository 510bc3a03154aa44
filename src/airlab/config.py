"""The resolved configuration of one training run: flat, validated, hashable.

Everything that can change a run's result is in here, so the run key (a hash of this config)
identifies a run. Executor-level settings (threads, timeouts) are not: they change speed only.
"""

from __future__ import annotations

import hashlib
import json
import math
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
    # The schedule's decay ends at this fraction of the budget and the rate then stays at its
    # final value (min_lr): a run annealed for a shorter budget whose tokens go on at min_lr,
    # so its curve shows when the short schedule reaches a quality. 1 = the whole budget.
    horizon: float = Field(1.0, gt=0, le=1)
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
    # Which held-out subset evaluate() reads: "val", the fixed subset verdicts are made on, or
    # "select", a disjoint one that choices made before the verdict (the lr sweep) use, so the
    # verdict is not measured on the data that chose the runs' settings. See workloads.py.
    eval_split: Literal["val", "select"] = "val"
    diverge_factor: float = Field(3.0, gt=1)  # loss above factor x initial loss => diverged

    latency: bool = False  # measure inference latency (batch 1 and a full batch) after training
    # Stop after this many optimizer steps even if the budget is not used up (measurements such
    # as the memory-cap search run the one trainer for a few steps). None: the budget decides.
    max_steps: int | None = Field(None, ge=1)
    # Save the trained weights and a cost record under <artifacts_dir>/<run_key>/ (a
    # distillation teacher: students load it by run key).
    save_model: bool = False

    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"

    model: dict[str, Any] = Field(default_factory=dict)
    techniques: tuple[str, ...] = ()
    options: dict[str, Any] = Field(default_factory=dict)  # technique options, e.g. prune_sparsity
    # sha256 (16 hex) of each used technique's module source: changed code is a new run.
    code: dict[str, str] = Field(default_factory=dict)
    # Who measures the run: the trainer itself ("trainer"), or, for every run of a spec with
    # generated technique files, the trusted harness (airlab.run.harness: the run trains in
    # the sandbox on served batches and is evaluated and timed outside it). Part of the key,
    # so runs measured one way never stand in for runs measured the other.
    measured_by: Literal["trainer", "harness"] = "trainer"

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        # pydantic would read `lr: true` as 1.0; a yes/no is never a number here.
        if isinstance(data, dict):
            for name, value in data.items():
                if isinstance(value, bool) and name not in _BOOL_FIELDS:
                    raise ValueError(f"{name}={value} must be a number or text, not yes/no")
        return data

    @model_validator(mode="after")
    def _one_budget(self) -> TrainConfig:
        set_units = [u for u in BUDGET_UNITS if getattr(self, u) is not None]
        if len(set_units) != 1:
            raise ValueError(
                f"give exactly one budget ({', '.join(BUDGET_UNITS)}); got "
                f"{', '.join(set_units) or 'none'}"
            )
        value = getattr(self, set_units[0])
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"budget {set_units[0]} must be finite and positive, got {value}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "diverge_factor"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
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
_BOOL_FIELDS = {"latency", "save_model"}

# Fields the verdict depends on: the same for every arm of an experiment, so techniques may not
# override them and arm options may not set them.
RESERVED_FIELDS = frozenset({
    "workload", "preset", "dataset", "seed", *BUDGET_UNITS, "device", "eval_points",
    "eval_tokens", "eval_split", "diverge_factor", "latency", "max_steps", "save_model",
    "techniques", "code", "measured_by",
})


def lr_scale_factor(rule: str, batch_size: float, base_batch_size: float | None) -> float:
    """The batch-size rule for learning rates, in one place: (batch / base)^k, k = 1 for
    ``linear``, 1/2 for ``sqrt``, 1 for ``none``."""
    if rule == "none" or not base_batch_size:
        return 1.0
    k = 1.0 if rule == "linear" else 0.5
    return (float(batch_size) / float(base_batch_size)) ** k


def _defaults() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, f in TrainConfig.model_fields.items():
        value = f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


TRAIN_FIELDS = tuple(f for f in TrainConfig.model_fields
                     if f not in ("model", "techniques", "code", "measured_by"))


def config_key(d: dict[str, Any]) -> str:
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
