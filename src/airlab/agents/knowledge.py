"""The knowledge base: research ideas as data, their schema, loader and queries.

Each idea lives in ``airlab/agents/knowledge/<area>.yaml`` (one file per research area, a list
under ``ideas:``; the file's ``area`` is every idea's default). An idea states what it is (pitch,
mathematics, why it might work and why not), how to run it (``implementation``: the registered
switches and options, with the ranges a tuner may search, or ``needs_code`` with a sketch for
the Coder), the smallest experiment that tests it, and a falsifiable ``prediction`` scored
after the runs.

Conventions the roles rely on:

* The idea's arm is the baseline plus the idea: ``baseline.use + implementation.use`` with
  ``{**baseline.options, **implementation.options}``. An ablation arm is a delta over the
  baseline too; when none is declared and the idea sets both switches and options, the
  ablation is the switches alone (their defaults), so a win can be told from the tuning.
* A prediction is about ``metric`` of the idea's arm against the baseline (or the ablation,
  ``against: ablation``). ``kind: delta`` is arm - reference in the metric's units;
  ``kind: ratio`` is arm / reference, except for ``time_to_target`` where the ratio is the
  speed-up, reference cost / arm cost (as ``airlab.analysis.efficiency`` reports it).
  ``direction`` is the predicted direction of the change, and ``expected`` must lie on that
  side of no change, inside ``[low, high]``.
* Every idea has one of the innovator's five aspects. Ideas outside them are filed by their
  mechanism: MLP shapes and numerics under normalization_stability (gradient flow, numerical
  range), compression, batch size and training-time procedures under training_dynamics.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from airlab.errors import AirlabError, did_you_mean
from airlab.spec import DEFAULT_SEEDS, Arm, line_for, parse_yaml, printable

if TYPE_CHECKING:
    from airlab.plan import RunPlan
    from airlab.settings import Settings
    from airlab.spec import ExperimentSpec

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


# ---------------------------------------------------------------------------------------------
# Loading


def knowledge_dir() -> Path:
    return Path(str(resources.files("airlab") / "agents" / "knowledge"))


def _where(source: str, lines: dict[tuple[Any, ...], int], loc: Sequence[Any]) -> str:
    line = line_for(lines, loc)
    return f"{source}:{line}" if line else source


def _field(loc: Sequence[Any]) -> str:
    return "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc).lstrip(".")


def _read_file(path: Path) -> list[tuple[Idea, str]]:
    source = f"knowledge/{path.name}" if path.parent == knowledge_dir() else str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise AirlabError(f"{source}: cannot read: {e}", "save the file as UTF-8 YAML") from None
    data, lines = parse_yaml(text, source)
    if not isinstance(data, dict) or not isinstance(data.get("ideas"), list):
        raise AirlabError(f"{source}: an ideas file is a mapping with a list under 'ideas'",
                          "e.g. area: optimizers / ideas: [- name: muon ...]")
    extra = sorted(set(data) - {"area", "ideas"})
    if extra:
        raise AirlabError(f"{_where(source, lines, (extra[0],))}: unknown field '{extra[0]}'",
                          "an ideas file has only area and ideas")
    area = data.get("area")
    out = []
    for i, raw in enumerate(data["ideas"]):
        if not isinstance(raw, dict):
            raise AirlabError(f"{_where(source, lines, ('ideas', i))}: ideas[{i}] is not a "
                              f"mapping", "each idea is a mapping of fields (name, title, ...)")
        if area is not None:
            raw = {"area": area, **raw}
        try:
            idea = Idea.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ["ideas", i, *err["loc"]]
            name = raw.get("name", f"#{i}")
            if err["type"] == "extra_forbidden":
                bad = str(loc[-1])
                fields = _fields_at(loc[2:-1])
                raise AirlabError(f"{_where(source, lines, loc)}: idea '{printable(name)}': "
                                  f"unknown field '{_field(loc[2:])}'",
                                  did_you_mean(bad, fields)) from None
            msg = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
            raise AirlabError(f"{_where(source, lines, loc)}: idea '{printable(name)}': "
                              f"{_field(loc[2:]) or 'idea'}: {msg}",
                              "see the schema in airlab/agents/knowledge.py") from None
        out.append((idea, f"{_where(source, lines, ('ideas', i))}"))
    return out


def _fields_at(loc: Sequence[Any]) -> list[str]:
    models: dict[str, type[BaseModel]] = {
        "implementation": Implementation, "minimum_experiment": MinimumExperiment,
        "prediction": Prediction, "baseline": ArmDelta, "ablation": ArmDelta}
    model: type[BaseModel] = Idea
    for part in loc:
        if isinstance(part, str) and part in models:
            model = models[part]
        elif isinstance(part, str) and model is Implementation and part == "search":
            model = SearchDim
    return list(model.model_fields)


def read_ideas(folder: Path | str) -> dict[str, Idea]:
    """Load every ``*.yaml`` ideas file in ``folder`` (sorted): {name: Idea}.

    Checks each idea's schema, that names are unique across files and that ``related`` names
    ideas that exist. Errors are one AirlabError naming the file, line and field.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AirlabError(f"ideas folder '{folder}' does not exist")
    ideas: dict[str, Idea] = {}
    where: dict[str, str] = {}
    for path in sorted(folder.glob("*.yaml")):
        for idea, at in _read_file(path):
            if idea.name in ideas:
                raise AirlabError(f"{at}: idea name '{idea.name}' is used twice (first at "
                                  f"{where[idea.name]})", "give each idea its own name")
            ideas[idea.name] = idea
            where[idea.name] = at
    for name, idea in ideas.items():
        for other in idea.related:
            if other not in ideas:
                raise AirlabError(f"{where[name]}: idea '{name}': related: no idea '{other}'",
                                  did_you_mean(other, ideas))
    return ideas


@functools.cache
def load_ideas() -> dict[str, Idea]:
    """The package's knowledge base, {name: Idea} (read once per process).

    Callers must not mutate the returned ideas: the same objects are shared."""
    return read_ideas(knowledge_dir())


def get_idea(name: str) -> Idea:
    ideas = load_ideas()
    if name not in ideas:
        raise AirlabError(f"unknown idea '{printable(name)}'", did_you_mean(name, ideas))
    return ideas[name]


def filter_ideas(ideas: Mapping[str, Idea] | None = None, *, area: str | None = None,
                 aspect: str | None = None, tier: int | None = None,
                 runnable: bool | None = None) -> list[Idea]:
    """Ideas matching every given filter (runnable: no code needed), in name order."""
    ideas = load_ideas() if ideas is None else ideas
    if area is not None and area not in AREAS:
        raise AirlabError(f"unknown area '{printable(area)}'", did_you_mean(area, AREAS))
    if aspect is not None and aspect not in ASPECTS:
        raise AirlabError(f"unknown aspect '{printable(aspect)}'", did_you_mean(aspect, ASPECTS))
    return [i for _, i in sorted(ideas.items())
            if (area is None or i.area == area) and (aspect is None or i.aspect == aspect)
            and (tier is None or i.tier == tier)
            and (runnable is None or runnable != i.needs_code)]


# ---------------------------------------------------------------------------------------------
# Experiments and search spaces


def idea_spec(idea: Idea | str, *, seeds: Iterable[int] | None = None,
              budget: Mapping[str, float] | None = None) -> ExperimentSpec:
    """The idea's minimum experiment as a spec: baseline, the idea's arm and its ablation
    (when it has one). ``seeds`` / ``budget`` replace the minimum experiment's (the Architect
    sizes them); the prediction keeps the budget it was made for."""
    from airlab.spec import ExperimentSpec

    if isinstance(idea, str):
        idea = get_idea(idea)
    if idea.needs_code:
        raise AirlabError(f"idea '{idea.name}' needs code: no switch implements it yet",
                          f"the Coder writes --use_{idea.implementation.switch} first")
    me = idea.minimum_experiment
    arms = [idea.arm] + ([idea.ablation] if idea.ablation is not None else [])
    data = {
        "name": f"idea.{idea.name}",
        "hypothesis": f"{idea.pitch} Prediction: {idea.prediction.text()}.",
        "area": idea.area,
        "workload": me.workload,
        "preset": me.preset,
        "dataset": me.dataset,
        "budget": dict(budget) if budget is not None else dict(me.budget),
        "baseline": {"name": me.baseline.name, "use": list(me.baseline.use),
                     "options": dict(me.baseline.options)},
        "arms": [{"name": a.name, "use": list(a.use), "options": dict(a.options)} for a in arms],
        "seeds": list(seeds) if seeds is not None else list(me.seeds),
        "options": dict(me.options),
        "metric": me.metric,
        "direction": me.direction,
        "tolerance": me.tolerance,
        "idea": idea.name,  # the tracker finds the experiments that test an idea by it
    }
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        msg = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
        raise AirlabError(f"idea '{idea.name}': its experiment is not a valid spec: "
                          f"{_field(err['loc']) or 'spec'}: {msg}",
                          "fix minimum_experiment in the idea's file") from None


def search_space(idea: Idea | str) -> dict[str, SearchDim]:
    """The option ranges a tuner may search for the idea's arm (empty: nothing to tune)."""
    if isinstance(idea, str):
        idea = get_idea(idea)
    return dict(idea.implementation.search)


def check_idea(idea: Idea | str, settings: Settings | None = None) -> list[RunPlan]:
    """Check an idea against the registries: its spec plans, and every end of every search
    range (each choice) resolves as a run. Returns the plans; AirlabError names the idea."""
    from airlab.plan import plan_runs, resolve

    if isinstance(idea, str):
        idea = get_idea(idea)
    spec = idea_spec(idea)
    try:
        plans = plan_runs(spec, settings)
    except AirlabError as e:
        raise AirlabError(f"idea '{idea.name}': {e.message}", e.hint) from None
    arm = idea.arm
    for opt, dim in idea.implementation.search.items():
        for value in dim.points:
            try:
                resolve(workload=spec.workload, preset=spec.preset, dataset=spec.dataset,
                        budget=spec.budget, seed=spec.seeds[0], use=arm.use,
                        options={**spec.options, **arm.options, opt: value}, settings=settings)
            except AirlabError as e:
                raise AirlabError(f"idea '{idea.name}': search {opt}={value!r}: {e.message}",
                                  e.hint or "narrow the range") from None
    return plans


# ---------------------------------------------------------------------------------------------
# Text similarity (the novelty check)


@functools.cache
def _index(names: tuple[str, ...], texts: tuple[str, ...]) -> tuple[Any, Any, Any, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    # Words catch shared terms; character n-grams within words catch inflections and
    # compounds ("rotary"/"rotation", "normalise"/"normalization") a paraphrase changes.
    words = TfidfVectorizer(stop_words="english", sublinear_tf=True, ngram_range=(1, 2))
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)
    return words, words.fit_transform(texts), chars, chars.fit_transform(texts)


def similar_ideas(text: str, k: int = 5, ideas: Mapping[str, Idea] | None = None
                  ) -> list[tuple[str, float]]:
    """The ``k`` ideas most similar to ``text``: [(name, cosine similarity in [0, 1])], best
    first (TF-IDF over words and character n-grams, averaged)."""
    if not isinstance(text, str) or not text.strip():
        raise AirlabError("similar_ideas needs some text", "describe the idea in a sentence")
    ideas = load_ideas() if ideas is None else ideas
    if k < 1 or not ideas:
        return []
    names = tuple(sorted(ideas))
    words, wm, chars, cm = _index(names, tuple(ideas[n].text() for n in names))
    sim = 0.5 * (wm @ words.transform([text]).T).toarray().ravel() \
        + 0.5 * (cm @ chars.transform([text]).T).toarray().ravel()
    order = sorted(range(len(names)), key=lambda i: (-sim[i], names[i]))[:k]
    return [(names[i], float(sim[i])) for i in order]
