"""Experiment specs: plain data describing an experiment, loaded from YAML or built in Python.

A bad spec is refused with the file, the line and the field, and the closest valid name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from airlab.config import BUDGET_UNITS
from airlab.errors import AirlabError, did_you_mean

DEFAULT_SEEDS = (42, 137, 256)


class Arm(BaseModel):
    """One arm: a set of switches (technique names) and options on top of the shared setup."""

    model_config = ConfigDict(extra="forbid")

    name: str
    use: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    description: str = ""

    @field_validator("use", mode="before")
    @classmethod
    def _strip_use_prefix(cls, v: Any) -> Any:
        # Accept the command-line spelling too: "use_rope" or "--use_rope" mean "rope".
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list):
            return [re.sub(r"^(--)?use_", "", str(x)) for x in v]
        return v


class Sweep(BaseModel):
    """A fair per-arm choice of one option (usually lr): the same small sweep for every arm,
    on short runs, before the main runs. The sweep is stored as its own experiment."""

    model_config = ConfigDict(extra="forbid")

    option: str = "lr"
    values: list[float] = Field(min_length=2)
    # "scale": values multiply each arm's own resolved value (optimizers differ in their lr
    # scale, so the same relative sweep is the fair one); "set": values are used as given.
    mode: Literal["scale", "set"] = "set"
    seeds: list[int] | None = None  # default: the spec's first seed
    budget_fraction: float = Field(0.25, gt=0, le=1)


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    hypothesis: str = ""
    area: str = "general"
    workload: str = "charlm"
    preset: str | None = None
    dataset: str | None = None
    budget: dict[str, float]
    baseline: Arm = Field(default_factory=lambda: Arm(name="baseline"))
    arms: list[Arm] = Field(default_factory=list)  # none: measure the baseline alone
    seeds: list[int] = Field(default_factory=lambda: list(DEFAULT_SEEDS), min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)  # shared by every arm
    metric: str = "val_loss"
    direction: Literal["minimize", "maximize"] = "minimize"
    tolerance: float = Field(0.0, ge=0)  # quality change still counted as "no worse"
    timeout_s: float | None = Field(None, gt=0)  # per run
    sweep: Sweep | None = None
    sweep_chosen: dict[str, float] = Field(default_factory=dict)  # arm -> value, set by the lab
    quick_budget: dict[str, float] | None = None  # `airlab run --quick`: a smoke-test budget

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: dict[str, float]) -> dict[str, float]:
        if len(v) != 1:
            raise ValueError(f"give exactly one of {', '.join(BUDGET_UNITS)}")
        (unit, amount), = v.items()
        if unit not in BUDGET_UNITS:
            raise ValueError(f"unknown budget unit '{unit}': {did_you_mean(unit, BUDGET_UNITS)}")
        if float(amount) <= 0:
            raise ValueError(f"budget {unit} must be positive")
        return {unit: float(amount)}

    @field_validator("quick_budget")
    @classmethod
    def _quick_budget(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        return None if v is None else cls._budget(v)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds repeat; each seed must appear once")
        return v

    @model_validator(mode="after")
    def _unique_arms(self) -> ExperimentSpec:
        names = [self.baseline.name] + [a.name for a in self.arms]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"arm names repeat: {', '.join(sorted(dup))}")
        return self

    @property
    def all_arms(self) -> list[Arm]:
        return [self.baseline, *self.arms]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# Loading with precise errors


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Map each YAML path (keys and list indices) to its 1-based line number."""
    out: dict[tuple[Any, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return out

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        out[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                out[path + (k.value,)] = k.start_mark.line + 1
                walk(v, path + (k.value,))
                out[path + (k.value,)] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return out


def _line_for(lines: dict[tuple[Any, ...], int], loc: Sequence[Any]) -> int | None:
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """Field names valid at a location, for did-you-mean on extra keys."""
    if len(loc) >= 1 and loc[0] in ("baseline", "arms"):
        return list(Arm.model_fields)
    return list(ExperimentSpec.model_fields)


def spec_from_dict(data: Any, source: str = "<spec>", text: str | None = None) -> ExperimentSpec:
    """Validate plain data as a spec; errors name the source, line and field."""
    lines = _line_index(text) if text else {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise AirlabError(f"{source}: a spec must be a mapping of fields, got {kind}")
    try:
        spec = ExperimentSpec(**data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [x for x in err["loc"] if x != "__root__"]
        field = ".".join(f"[{x}]" if isinstance(x, int) else str(x) for x in loc).replace(".[", "[")
        line = _line_for(lines, loc)
        where = f"{source}:{line}" if line else source
        if err["type"] == "extra_forbidden":
            bad = str(loc[-1])
            hint = did_you_mean(bad, _fields_at(loc[:-1]))
            raise AirlabError(f"{where}: unknown field '{field}'", hint) from None
        if err["type"] == "missing":
            raise AirlabError(f"{where}: missing required field '{field}'") from None
        msg = err["msg"].removeprefix("Value error, ")
        raise AirlabError(f"{where}: {field or 'spec'}: {msg}") from None
    check_spec(spec, source, lines)
    return spec


def check_spec(spec: ExperimentSpec, source: str = "<spec>",
               lines: dict[tuple[Any, ...], int] | None = None) -> None:
    """Check names against the registries by resolving every arm once (seed irrelevant)."""
    from airlab.plan import resolve

    lines = lines or {}
    for i, arm in enumerate(spec.all_arms):
        loc: tuple[Any, ...] = ("baseline",) if i == 0 else ("arms", i - 1)
        try:
            resolve(workload=spec.workload, preset=spec.preset, dataset=spec.dataset,
                    budget=spec.budget, seed=spec.seeds[0], use=arm.use,
                    options={**spec.options, **arm.options})
        except AirlabError as e:
            line = _line_for(lines, loc + ("use",)) if "technique" in e.message else None
            line = line or _line_for(lines, loc + ("options",)) or _line_for(lines, loc)
            where = f"{source}:{line}" if line else source
            raise AirlabError(f"{where}: arm '{arm.name}': {e.message}", e.hint) from None


def library_dir() -> Path:
    return Path(str(resources.files("airlab") / "library"))


def library_specs() -> dict[str, Path]:
    """Built-in experiments by name (and alias)."""
    out: dict[str, Path] = {}
    for p in sorted(library_dir().glob("*.yaml")):
        out[p.stem] = p
        try:
            head = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError:
            continue
        for alias in head.get("aliases", []) if isinstance(head, dict) else []:
            out.setdefault(alias, p)
    return out


def load_spec(ref: str | Path) -> ExperimentSpec:
    """Load a spec from a YAML path or a built-in experiment name."""
    path = Path(ref)
    if not path.exists():
        lib = library_specs()
        if str(ref) in lib:
            path = lib[str(ref)]
        elif str(ref).endswith((".yaml", ".yml")):
            raise AirlabError(f"spec file not found: {ref}", "check the path")
        else:
            raise AirlabError(f"no spec file or built-in experiment '{ref}'",
                              did_you_mean(str(ref), lib))
    try:
        text = path.read_text()
    except OSError as e:
        raise AirlabError(f"cannot read spec {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise AirlabError(f"{path}{line}: not valid YAML: {problem}") from None
    if isinstance(data, dict):
        data.pop("aliases", None)  # library metadata, not part of the spec
    return spec_from_dict(data, str(path), text)

