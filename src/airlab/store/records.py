"""The research team's records as typed data: what one sprint asked for and what each phase gave.

A sprint's row (``store.team``) holds one :class:`SprintRecord`; the roles and the loop read and
write its fields, never JSON. Converting to and from the JSON column happens here and only here
(``to_json`` / ``from_json``, called by ``store.team``), and the JSON keeps the shape that
earlier versions stored, so a sprint stored by them resumes and replays.

The one arm type is :class:`airlab.spec.Arm` (a name, switches, options, a description); a
recipe :class:`Part` is switches and options with where they came from (``Part.arm()``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from airlab.spec import Arm, ExperimentSpec

DEFAULT_NAME = "default"


@dataclass(frozen=True)
class Task:
    """The problem a sprint studies: a workload, its preset and dataset, and the unit its
    budget counts. With the session's shared options (model fields included) and budget it
    is the *default configuration* that every ratio of a session is measured against."""

    workload: str = "charlm"
    preset: str = "tiny"
    dataset: str = "pycode"
    unit: str = "tokens"

    def label(self, amount: float | None = None) -> str:
        """'400k tokens on shakespeare' (or 'charlm tiny on shakespeare' without an amount)."""
        where = self.dataset.rsplit("/", 1)[-1] if self.dataset.startswith("file:") \
            else self.dataset
        if amount is None:
            return f"{self.workload} {self.preset} on {where}"
        return f"{_amount(amount)} {self.unit} on {where}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> Task:
        """A stored task; a record stored before tasks existed studied Tiny Shakespeare."""
        if not d:
            return LEGACY_TASK
        return cls(str(d.get("workload") or "charlm"), str(d.get("preset") or "tiny"),
                   str(d.get("dataset") or "pycode"), str(d.get("unit") or "tokens"))


# Sprints and sessions stored before the team took a task studied charlm tiny on Tiny
# Shakespeare (the ideas' minimum experiment): their records replay as such.
LEGACY_TASK = Task(dataset="shakespeare")


def _amount(x: float) -> str:
    """400000 -> '400k', 1600000 -> '1.6M', 2500 -> '2,500'."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale and x / scale == round(x / scale, 1):
            return f"{x / scale:g}{suffix}"
    return f"{x:,.0f}"


def default_arm() -> Arm:
    """The default configuration: no switch, no option (the loop's first base)."""
    return Arm(name=DEFAULT_NAME, description="the default configuration")


def make_arm(name: str, use: Sequence[str] = (), options: Mapping[str, Any] | None = None,
             description: str = "") -> Arm:
    return Arm(name=name, use=list(use), options=dict(options or {}), description=description)


def default_base() -> Part:
    """The loop's first base: the default configuration, as a recipe of nothing."""
    return Part(DEFAULT_NAME)


def is_default(base: Part) -> bool:
    return base.idea == DEFAULT_NAME and not base.use and not base.options


@dataclass(frozen=True)
class Part:
    """A part of a recipe: an idea's switches and options beyond the base (a winner), or a
    whole recipe (``idea``: its name, ``a+b``; ``parts``: the ideas it stacks; ``selection``:
    the figures that selected it). :meth:`arm` is it as an arm."""

    idea: str
    use: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    ratio: float | None = None
    parts: tuple[str, ...] | None = None
    selection: Mapping[str, Any] | None = None

    def arm(self, name: str | None = None, description: str = "") -> Arm:
        """The part as an arm (named after its idea unless ``name`` is given)."""
        return make_arm(name or self.idea, self.use, self.options, description)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"idea": self.idea, "use": list(self.use),
                             "options": dict(self.options)}
        if self.ratio is not None:
            d["ratio"] = self.ratio
        if self.parts is not None:
            d["parts"] = list(self.parts)
        if self.selection is not None:
            d["selection"] = dict(self.selection)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Part:
        return cls(str(d["idea"]), tuple(d.get("use") or ()), dict(d.get("options") or {}),
                   d.get("ratio"), tuple(d["parts"]) if d.get("parts") is not None else None,
                   dict(d["selection"]) if d.get("selection") is not None else None)


@dataclass(frozen=True)
class SprintRequest:
    """What a sprint was asked to do (kept as asked, so that a resumed sprint does the same)."""

    kind: str = "explore"
    minutes: float = 15.0
    idea: str | None = None
    area: str | None = None
    topic: str | None = None
    base: Part = field(default_factory=lambda: default_base())  # the recipe it builds on
    tokens: float | None = None  # the budget per run, in the task's unit
    seeds: tuple[int, ...] | None = None
    exclude: tuple[str, ...] = ()
    parts: tuple[Part, ...] = ()
    task: Task = field(default_factory=Task)  # what the sprint studies
    # Ideas whose win did not hold beyond where it was selected (a recipe of theirs failed a
    # transfer): the Researcher discounts them; idea -> why.
    discount: tuple[tuple[str, str], ...] = ()
    transfer: str | None = None  # a transfer sprint: "budget" (4x) or "dataset"
    # Every idea was tested on the current recipe: a tunable one gets a new trial of its study
    # (sampled, not the best so far again, as a re-check would).
    retune: bool = False


@dataclass
class ProposalRecord:
    """The ideas phase: the idea to test (explore) or the recipe parts (stack, confirm)."""

    kind: str
    idea: str | None
    summary: str
    options: dict[str, Any] = field(default_factory=dict)
    trial: int | None = None
    researcher: dict[str, Any] = field(default_factory=dict)  # how it was chosen (the post)
    parts: tuple[Part, ...] = ()
    source: str | None = None  # "model": the language model proposed it
    llm_idea: dict[str, Any] | None = None  # the model's idea, in the knowledge-base schema
    skipped: dict[str, str] = field(default_factory=dict)  # idea -> why it does not apply

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "idea": self.idea, "options": dict(self.options),
                             "trial": self.trial, "summary": self.summary}
        if self.skipped:
            d["skipped"] = dict(self.skipped)
        if self.researcher:
            d["researcher"] = self.researcher
        if self.parts:
            d["parts"] = [p.to_json() for p in self.parts]
        if self.source is not None:
            d["source"] = self.source
        if self.llm_idea is not None:
            d["llm_idea"] = self.llm_idea
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ProposalRecord:
        return cls(str(d.get("kind") or "explore"), d.get("idea"), str(d.get("summary") or ""),
                   dict(d.get("options") or {}), d.get("trial"), dict(d.get("researcher") or {}),
                   tuple(Part.from_json(p) for p in d.get("parts") or ()), d.get("source"),
                   d.get("llm_idea"), dict(d.get("skipped") or {}))


@dataclass
class DesignRecord:
    """Why the design has these seeds and this budget (the spec itself is the record's)."""

    seeds_reason: str = ""
    budget_reason: str = ""
    throughput: float = 0.0
    throughput_source: str = ""
    runs_to_do: int = 0
    estimate_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    # Arm pairs the Validator compares head to head (arm, reference), paired by seed, at the
    # default configuration's quality: a candidate recipe against the current one.
    versus: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True)
class ImplementationRecord:
    """Per arm its switches, options and each technique's source hash; the planned runs."""

    source: str  # "registered techniques" (offline) | with "+ generated code" (the model's)
    arms: list[dict[str, Any]]
    runs: int
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunsRecord:
    experiment: str
    planned: int
    reused: int
    adopted: int
    ran: int
    failed: int
    incomplete: int
    rating: int | None


@dataclass(frozen=True)
class ArmResult:
    """One arm against the baseline in the terms the loop decides on."""

    arm: str
    verdict: str  # the arm's label on the primary metric: better | worse | equivalent | ...
    quality: str  # the quality metric's label
    improved: bool  # the rubric counts it as an improvement
    ratio: float | None  # time-to-target (train seconds), baseline / arm: > 1 is faster
    ci_low: float | None
    ci_high: float | None
    reached: int
    n: int
    value: float | None  # mean of the primary metric
    wins: bool

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ArmResult:
        return cls(str(d.get("arm") or ""), str(d.get("verdict") or "undecided"),
                   str(d.get("quality") or "undecided"), bool(d.get("improved")),
                   d.get("ratio"), d.get("ci_low"), d.get("ci_high"), int(d.get("reached") or 0),
                   int(d.get("n") or 0), d.get("value"), bool(d.get("wins")))


@dataclass
class ValidationRecord:
    """The rubric's verdict, each arm's result, the scored prediction, the model's critique."""

    experiment: str
    rating: int
    band: str
    critique: list[str]
    arms: dict[str, ArmResult]
    prediction: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)
    llm_critique: dict[str, Any] | None = None
    # Head-to-head results (DesignRecord.versus), keyed "arm/reference".
    versus: dict[str, ArmResult] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if self.llm_critique is None:
            d.pop("llm_critique")
        if not self.versus:
            d.pop("versus")
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ValidationRecord:
        arms = {str(k): ArmResult.from_json({"arm": k, **v})
                for k, v in (d.get("arms") or {}).items()}
        versus = {str(k): ArmResult.from_json(v) for k, v in (d.get("versus") or {}).items()}
        return cls(str(d.get("experiment") or ""), int(d.get("rating") or 0),
                   str(d.get("band") or ""), list(d.get("critique") or []), arms,
                   d.get("prediction"), list(d.get("notes") or []), d.get("llm_critique"),
                   versus)


@dataclass
class ModelNotes:
    """What came from the language model in one sprint: which parts, its warnings, the arms it
    proposed, the code it wrote and the tokens it took (``offline``: why the rest of the sprint
    ran without it)."""

    model: str
    sprint: str
    team: dict[str, Any] = field(default_factory=dict)  # seed, options, workers (for replay)
    parts: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    replay_of: str | None = None
    offline: str | None = None
    arms: list[dict[str, Any]] | None = None
    code: dict[str, Any] | None = None
    tokens: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items()
                if v is not None or k in ("model", "sprint")}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ModelNotes:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class SprintRecord:
    """Everything one sprint stored, phase by phase (None: the phase has not ended)."""

    request: SprintRequest
    started: float
    proposal: ProposalRecord | None = None
    design: DesignRecord | None = None
    spec: ExperimentSpec | None = None
    implementation: ImplementationRecord | None = None
    runs: RunsRecord | None = None
    validation: ValidationRecord | None = None
    folder: str | None = None
    error: str | None = None
    review_file: str | None = None
    llm: ModelNotes | None = None
    failed_implementations: list[dict[str, Any]] = field(default_factory=list)
    box: dict[str, float] = field(default_factory=dict)  # seconds each phase took

    @property
    def kind(self) -> str:
        return self.request.kind

    def restart_ideas(self) -> None:
        """Back to the ideas phase (the chosen idea could not be implemented)."""
        self.proposal, self.design, self.spec = None, None, None

    # -- JSON (only the store calls these) ---------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        q = self.request
        d: dict[str, Any] = {
            "kind": q.kind, "minutes": q.minutes, "idea": q.idea, "area": q.area,
            "topic": q.topic, "base": {"name": q.base.idea, "use": list(q.base.use),
                                       "options": dict(q.base.options)},
            "tokens": q.tokens,
            "seeds": list(q.seeds) if q.seeds is not None else None,
            "exclude": list(q.exclude), "parts": [p.to_json() for p in q.parts],
            "task": q.task.to_json(), "started": self.started}
        if q.discount:
            d["discount"] = [list(x) for x in q.discount]
        if q.transfer:
            d["transfer"] = q.transfer
        if q.retune:
            d["retune"] = True
        if self.proposal is not None:
            d["proposal"] = self.proposal.to_json()
        if self.design is not None:
            d["design"] = asdict(self.design)
        if self.spec is not None:
            d["spec"] = self.spec.to_dict()
        if self.implementation is not None:
            d["implementation"] = asdict(self.implementation)
        if self.runs is not None:
            d["runs"] = asdict(self.runs)
        if self.validation is not None:
            d["validation"] = self.validation.to_json()
        for k in ("folder", "error", "review_file"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.llm is not None:
            d["llm"] = self.llm.to_json()
        if self.failed_implementations:
            d["failed_implementations"] = self.failed_implementations
        if self.box:
            d["box"] = dict(self.box)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any], *, kind: str = "explore",
                  started: float = 0.0) -> SprintRecord:
        """From the stored JSON (``kind`` and ``started``: the row's, for a record that lacks
        them)."""
        seeds = d.get("seeds")
        req = SprintRequest(
            kind=str(d.get("kind") or kind), minutes=float(d.get("minutes") or 15.0),
            idea=d.get("idea"), area=d.get("area"), topic=d.get("topic"),
            base=Part(str(d["base"]["name"]), tuple(d["base"].get("use") or ()),
                      dict(d["base"].get("options") or {})) if d.get("base") else default_base(),
            tokens=d.get("tokens"), seeds=tuple(int(s) for s in seeds) if seeds else None,
            exclude=tuple(d.get("exclude") or ()),
            parts=tuple(Part.from_json(p) for p in d.get("parts") or ()),
            task=Task.from_json(d.get("task")),
            discount=tuple((str(a), str(b)) for a, b in d.get("discount") or ()),
            transfer=d.get("transfer"), retune=bool(d.get("retune")))
        design = d.get("design")
        known = {f.name for f in fields(DesignRecord)}
        impl, runs, val = d.get("implementation"), d.get("runs"), d.get("validation")
        return cls(
            req, float(d.get("started") or started),
            ProposalRecord.from_json(d["proposal"]) if d.get("proposal") else None,
            DesignRecord(**{k: v for k, v in design.items() if k in known}) if design else None,
            ExperimentSpec.model_validate(d["spec"]) if d.get("spec") else None,
            ImplementationRecord(impl["source"], list(impl["arms"]), int(impl["runs"]),
                                 list(impl.get("notes") or [])) if impl else None,
            RunsRecord(**{k: runs.get(k, 0) for k in
                          ("experiment", "planned", "reused", "adopted", "ran", "failed",
                           "incomplete", "rating")}) if runs else None,
            ValidationRecord.from_json(val) if val else None,
            d.get("folder"), d.get("error"), d.get("review_file"),
            ModelNotes.from_json(d["llm"]) if d.get("llm") else None,
            list(d.get("failed_implementations") or []), dict(d.get("box") or {}))
