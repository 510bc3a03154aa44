"""What an idea is: the knowledge base's schema (``agents.knowledge`` reads the ideas).

An idea states what it is (pitch, mathematics, why it might work and why not), how to run it
(``implementation``: the registered switches and options, with the ranges a tuner may search, or
``needs_code`` with a sketch for the Coder), the smallest experiment that tests it, and a
falsifiable ``prediction`` scored after the runs (conventions: ``agents.knowledge``).
"""


from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from airlab.spec import DEFAULT_SEEDS, MAX_STRING, Arm, printable

if TYPE_CHECKING:
    pass

# The lab's eight research areas, then the finer areas the technique registry files switches
# under (positions, normalization, attention) and training_dynamics (schedules, curricula).
LAB_AREAS = ("quantization", "pruning", "optimizers", "batch_size", "mixed_precision",
             "distillation", "checkpointing", "efficient_arch")
AREAS = (*LAB_AREAS, "positions", "normalization", "attention", "training_dynamics")
# The research innovator's five aspects: every idea names the one it works through.
ASPECTS = ("optimizers", "attention", "positional_encoding", "normalization_stability",
           "training_dynamics")
TIERS = (1, 2, 3)  # 1: run first (likely, large, cheap); 3: long shots and controls

_SLUG = re.compile(r"^[a-z][a-z0-9_]{1,47}$")  # an idea name is also an arm name
_SWITCH = re.compile(r"^[a-z][a-z0-9_]{1,47}$")
_ARM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Area = Literal["quantization", "pruning", "optimizers", "batch_size", "mixed_precision",
               "distillation", "checkpointing", "efficient_arch", "positions", "normalization",
               "attention", "training_dynamics"]
Aspect = Literal["optimizers", "attention", "positional_encoding", "normalization_stability",
                 "training_dynamics"]


def _finite(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("must be a number, not true/false")
    if isinstance(v, int | float) and not math.isfinite(v):
        raise ValueError(f"{v} is not a finite number")
    return v


class SearchDim(BaseModel):
    """One option's declared search range: ``{low, high, log?}`` or ``{choices: [...]}``.

    Whole-number bounds make an integer dimension. ``suggest(trial, name)`` asks an Optuna
    trial (or anything with ``suggest_int/suggest_float/suggest_categorical``) for a value.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    choices: list[Any] | None = Field(default=None, min_length=2, max_length=32)

    @field_validator("low", "high", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return _finite(v)

    @model_validator(mode="after")
    def _shape(self) -> SearchDim:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give either choices or low/high, not both")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise ValueError("choices repeat; list each once")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (e.g. {low: 0.001, high: 0.01, log: true}) "
                             "or choices")
        if not self.low < self.high:
            raise ValueError(f"low={self.low} must be below high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self

    @property
    def is_int(self) -> bool:
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)

    @property
    def points(self) -> list[Any]:
        """The values that bound the range (ends, or every choice): each must be a valid run."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def suggest(self, trial: Any, name: str) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(name, list(self.choices))
        if self.is_int:
            return trial.suggest_int(name, int(self.low), int(self.high),  # type: ignore[arg-type]
                                     log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high),  # type: ignore[arg-type]
                                   log=self.log)


def _check_switches(v: list[str]) -> list[str]:
    for s in v:
        if not _SWITCH.match(s):
            raise ValueError(f"'{printable(s)}' is not a switch name (lowercase letters, digits, "
                             f"'_'; e.g. rope)")
    dup = sorted({s for s in v if v.count(s) > 1})
    if dup:
        raise ValueError(f"switch listed twice: {', '.join(dup)}")
    return v


class Implementation(BaseModel):
    """How to run an idea: registered switches and options (``search``: the ranges a tuner may
    try), or ``needs_code: true`` with the switch name to write and a sketch of it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    use: list[str] = Field(default_factory=list, max_length=16)
    options: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, SearchDim] = Field(default_factory=dict)
    needs_code: bool = False
    switch: str | None = None  # needs_code: the `--use_<switch>` the Coder should register
    sketch: str = ""  # needs_code: what the code does, in a few lines

    @field_validator("use")
    @classmethod
    def _use(cls, v: list[str]) -> list[str]:
        return _check_switches(v)

    @model_validator(mode="after")
    def _kind(self) -> Implementation:
        if self.needs_code:
            if self.use or self.options:
                raise ValueError("a needs_code idea has no working switches yet: leave use and "
                                 "options out and describe the code in sketch")
            if not self.switch or not _SWITCH.match(self.switch):
                raise ValueError("needs_code needs switch: the name of the switch to write "
                                 "(lowercase, e.g. alibi)")
            if len(self.sketch.split()) < 8:
                raise ValueError("needs_code needs a sketch of the code (a few sentences)")
        else:
            if not self.use and not self.options:
                raise ValueError("give the switches (use) and/or options that implement the "
                                 "idea, or needs_code: true with a sketch")
            if self.switch or self.sketch:
                raise ValueError("switch and sketch are for needs_code ideas only")
        return self


class ArmDelta(Arm):
    """An arm as the knowledge base writes it: switches and options on top of the shared setup
    (the baseline, or an ablation), with the knowledge base's stricter names."""

    name: str = "baseline"
    use: list[str] = Field(default_factory=list, max_length=16)
    description: str = Field(default="", max_length=MAX_STRING)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _ARM.match(v):
            raise ValueError(f"arm name '{printable(v)}' may use letters, digits, '_', '.', '-'")
        return v

    @field_validator("use")
    @classmethod
    def _use(cls, v: list[str]) -> list[str]:
        return _check_switches(v)


class MinimumExperiment(BaseModel):
    """The smallest experiment that can falsify the idea (enough to build an ExperimentSpec)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    workload: str = "charlm"
    preset: str = "tiny"
    dataset: str = "shakespeare"
    budget: dict[str, float] = Field(default_factory=lambda: {"tokens": 200_000.0})
    seeds: list[int] = Field(default_factory=lambda: list(DEFAULT_SEEDS), min_length=2,
                             max_length=20)
    options: dict[str, Any] = Field(default_factory=dict)  # shared by every arm
    baseline: ArmDelta = Field(default_factory=lambda: ArmDelta())
    ablation: ArmDelta | None = None  # None: derived (switches without the tuned options)
    metric: str = "val_loss"  # the quality metric the verdict is about
    direction: Literal["minimize", "maximize"] = "minimize"
    tolerance: float = Field(default=0.0, ge=0)  # quality change still counted as "no worse"

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: dict[str, float]) -> dict[str, float]:
        if len(v) != 1:
            raise ValueError("give exactly one budget, e.g. {tokens: 200000}")
        (unit, amount), = v.items()
        if unit not in ("tokens", "samples", "epochs", "seconds"):
            raise ValueError(f"unknown budget unit '{printable(unit)}'; use tokens, samples, "
                             f"epochs or seconds")
        if not math.isfinite(amount) or amount <= 0:
            raise ValueError(f"budget {unit} must be finite and positive")
        return {unit: float(amount)}

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or min(v) < 0:
            raise ValueError("seeds must be distinct whole numbers >= 0")
        return v


class Prediction(BaseModel):
    """A falsifiable forecast: the metric moves in ``direction`` by about ``expected``,
    inside ``[low, high]``, at ``budget`` (default: the minimum experiment's)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    metric: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    kind: Literal["delta", "ratio"] = "delta"
    direction: Literal["lower", "higher"]
    expected: float
    low: float
    high: float
    against: Literal["baseline", "ablation"] = "baseline"
    budget: dict[str, float] | None = None

    @field_validator("expected", "low", "high", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return _finite(v)

    @model_validator(mode="after")
    def _consistent(self) -> Prediction:
        if not self.low <= self.expected <= self.high:
            raise ValueError(f"need low <= expected <= high, got {self.low}, {self.expected}, "
                             f"{self.high}")
        if self.kind == "ratio" and self.low <= 0:
            raise ValueError("a ratio is positive: low must be > 0")
        none = 1.0 if self.kind == "ratio" else 0.0
        if (self.direction == "lower") != (self.expected < none) or self.expected == none:
            raise ValueError(f"direction {self.direction} but expected {self.expected:g} is not "
                             f"{self.direction} than no change ({none:g})")
        return self

    @property
    def no_change(self) -> float:
        return 1.0 if self.kind == "ratio" else 0.0

    def score(self, observed: float) -> PredictionScore:
        """Score an observed effect (same kind and reference as the prediction)."""
        if not math.isfinite(observed):
            return PredictionScore(False, False, math.nan, math.nan)
        hit = self.low <= observed <= self.high
        right = observed < self.no_change if self.direction == "lower" \
            else observed > self.no_change
        miss = 0.0 if hit else min(abs(observed - self.low), abs(observed - self.high))
        return PredictionScore(hit, right, miss, observed - self.expected)

    def text(self) -> str:
        unit = "x" if self.kind == "ratio" else ""
        budget = ", ".join(f"{v:g} {k}" for k, v in (self.budget or {}).items())
        return (f"{self.metric} {self.kind} {self.expected:g}{unit} "
                f"[{self.low:g}, {self.high:g}] ({self.direction}) against {self.against}"
                f"{' at ' + budget if budget else ''}")


@dataclass(frozen=True)
class PredictionScore:
    """hit: inside [low, high]; direction_right: on the predicted side of no change;
    miss_by: distance to the nearest end of the range (0 on a hit); error: observed -
    expected."""

    hit: bool
    direction_right: bool
    miss_by: float
    error: float

    def to_dict(self) -> dict[str, Any]:
        return {"hit": self.hit, "direction_right": self.direction_right,
                "miss_by": self.miss_by, "error": self.error}


def _charlm() -> list[Literal["charlm", "vision"]]:
    return ["charlm"]


class Idea(BaseModel):
    """One research idea of the knowledge base."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    title: str = Field(min_length=3, max_length=120)
    area: Area
    aspect: Aspect
    tier: int = Field(ge=1, le=3)
    pitch: str = Field(min_length=10, max_length=400)
    math: str = Field(min_length=5)
    why_it_might_work: str = Field(min_length=10)
    why_it_might_not: str = Field(min_length=10)
    implementation: Implementation
    minimum_experiment: MinimumExperiment = Field(default_factory=lambda: MinimumExperiment())
    prediction: Prediction
    # The workloads the idea is about (a sprint on another workload skips it, and says why).
    workloads: list[Literal["charlm", "vision"]] = Field(default_factory=_charlm,
                                                         min_length=1)
    aliases: list[str] = Field(default_factory=list)  # other names of the same technique
    references: list[str] = Field(default_factory=list)
    related: list[str] = Field(default_factory=list)  # names of other ideas

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not _SLUG.match(v):
            raise ValueError(f"idea name '{printable(v)}' must be a slug: lowercase letters, "
                             f"digits and '_', 2-48 characters, starting with a letter")
        return v

    @field_validator("pitch")
    @classmethod
    def _one_sentence(cls, v: str) -> str:
        v = " ".join(v.split())
        if not v.endswith((".", "?", "!")):
            raise ValueError("the pitch is one sentence ending with a full stop")
        return v

    @model_validator(mode="after")
    def _fill(self) -> Idea:
        if self.prediction.budget is None:
            self.prediction.budget = dict(self.minimum_experiment.budget)
        if self.name in self.related:
            raise ValueError("an idea is not related to itself")
        if self.prediction.against == "ablation" and self.ablation is None:
            raise ValueError("prediction against the ablation, but the idea has no ablation "
                             "arm: declare minimum_experiment.ablation")
        for opt in self.implementation.search:
            if opt in ("seed", "tokens", "samples", "epochs", "seconds", "workload", "preset",
                       "dataset"):
                raise ValueError(f"search: '{opt}' is the same for every arm; search a "
                                 "training or technique option")
        return self

    @property
    def needs_code(self) -> bool:
        return self.implementation.needs_code

    @property
    def arm(self) -> ArmDelta:
        """The idea's arm: the baseline plus the idea's switches and options."""
        me = self.minimum_experiment
        impl = self.implementation
        return ArmDelta(name=self.name,
                        use=[*me.baseline.use, *(u for u in impl.use if u not in me.baseline.use)],
                        options={**me.baseline.options, **impl.options})

    @property
    def ablation(self) -> ArmDelta | None:
        """The ablation arm (absolute: baseline plus its delta), declared or derived."""
        me = self.minimum_experiment
        impl = self.implementation
        if me.ablation is not None:
            delta = me.ablation
        elif impl.use and impl.options and not impl.needs_code:
            delta = ArmDelta(name=f"{self.name}.switch_only", use=impl.use)
        else:
            return None
        return ArmDelta(name=delta.name,
                        use=[*me.baseline.use, *(u for u in delta.use if u not in me.baseline.use)],
                        options={**me.baseline.options, **delta.options})

    def text(self) -> str:
        """Everything said about the idea, for text similarity."""
        parts = [self.name.replace("_", " "), self.title, *self.aliases, self.pitch, self.math,
                 self.why_it_might_work, self.implementation.sketch,
                 " ".join(self.implementation.use), " ".join(self.implementation.options)]
        return "\n".join(p for p in parts if p)
