"""Experiment specs: plain data describing an experiment, loaded from YAML or built in Python.

This module is torch-free and knows no registry: it checks the *structure* of a spec (types,
names, finite budgets, safe strings) and keeps the YAML line of every field on the spec, so the
semantic checks in `airlab.check` (which resolve every arm through the registries) can still
point at `file:line`. A bad spec is refused with the file, the line, the field and a suggestion,
always on one line.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import stat
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from airlab.config import BUDGET_UNITS, RESERVED_FIELDS
from airlab.errors import AirlabError, did_you_mean

DEFAULT_SEEDS = (42, 137, 256)

INT64_MAX = 2**63 - 1
NAME_CHARS = r"A-Za-z0-9_.-"
_NAME_RE = re.compile(rf"^[A-Za-z0-9][{NAME_CHARS}]*$")
ARM_NAME_MAX = 64
EXPERIMENT_NAME_MAX = 100
MAX_SPEC_BYTES = 1 << 20  # a spec is a page of YAML; anything bigger is not one
MAX_YAML_DEPTH = 16  # the deepest real spec is 4 levels; refuse pathological nesting early
MAX_STRING = 10_000
MAX_ARMS = 64
MAX_SEEDS = 100
MAX_TECHNIQUE_FILES = 16
MAX_TIMEOUT_S = 86_400.0  # a day: a run that needs longer needs a different budget
# Upper bounds that still mean "a finite run": beyond them a budget is a typo or an attack.
BUDGET_MAX = {"tokens": 1e12, "samples": 1e10, "epochs": 1e5, "seconds": 7 * 86_400.0}
MAX_DATASET_BYTES = 256 * 1024 * 1024
MIN_DATASET_BYTES = 1_000
# System folders whose files are never training data (and may hold secrets or be unbounded).
_SYSTEM_DIRS = ("/proc", "/sys", "/dev", "/etc", "/run", "/boot", "/var/run")
FILE_PREFIX = "file:"

# Fields every arm must share for the comparison to mean anything (budget, data, model family,
# device, seed, evaluation settings): an arm may not override them (config.RESERVED_FIELDS).
RESERVED_ARM_OPTIONS = RESERVED_FIELDS
# Fields that have their own place in a spec (or are the lab's) and so are not options at all.
RESERVED_SPEC_OPTIONS = frozenset({"seed", *BUDGET_UNITS, "workload", "preset", "dataset",
                                   "techniques", "code"})
_FREE_TEXT = {"hypothesis", "description"}  # the only fields where newlines and tabs are fine

Seed = Annotated[int, Field(strict=True, ge=0, le=INT64_MAX)]


def slug(name: str, max_len: int = ARM_NAME_MAX) -> str:
    """A safe file-name form of any name: [A-Za-z0-9_.-], at most ``max_len`` characters.

    A valid name that fits is returned unchanged; anything else is cleaned and given a short
    hash of the original, so two different names never map to one file.
    """
    s = re.sub(rf"[^{NAME_CHARS}]+", "_", name).strip("._-")
    if s == name and 0 < len(s) <= max_len:
        return s
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{s[: max_len - 9] or 'x'}-{digest}"


def printable(value: Any, limit: int = 40) -> str:
    """A short, printable, one-line rendering of user input for an error message."""
    text = value if isinstance(value, str) else repr(value)
    out = []
    for ch in text[:limit]:
        o = ord(ch)
        if not ch.isprintable():  # controls, surrogates, bidi overrides: shown escaped
            out.append(f"\\x{o:02x}" if o < 256 else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out) + ("..." if len(text) > limit else "")


def _check_name(v: str, what: str, max_len: int) -> str:
    if not v:
        raise ValueError(f"{what} is empty; use letters, digits, '_', '.' or '-'")
    if len(v) > max_len:
        raise ValueError(f"{what} has {len(v)} characters; at most {max_len} (it names files)")
    if not _NAME_RE.match(v):
        raise ValueError(f"{what} '{printable(v)}' may use only letters, digits, '_', '.' and '-', "
                         f"starting with a letter or digit (e.g. '{slug(v, max_len)}')")
    return v


def _number(v: Any) -> Any:
    # YAML reads `true` as a bool and pydantic would take it as 1: a budget is never a bool.
    if isinstance(v, bool):
        raise ValueError("must be a number, not true/false")
    return v


class Arm(BaseModel):
    """One arm: a set of switches (technique names) and options on top of the shared setup."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    use: list[str] = Field(default_factory=list, max_length=32)
    options: dict[str, Any] = Field(default_factory=dict)
    description: str = Field(default="", max_length=MAX_STRING)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "arm name", ARM_NAME_MAX)

    @field_validator("use", mode="before")
    @classmethod
    def _strip_use_prefix(cls, v: Any) -> Any:
        # Accept the command-line spelling too: "use_rope" or "--use_rope" mean "rope".
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list):
            return [re.sub(r"^(--)?use_", "", x) if isinstance(x, str) else x for x in v]
        return v

    @field_validator("use")
    @classmethod
    def _unique_use(cls, v: list[str]) -> list[str]:
        for t in v:
            if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", t):
                raise ValueError(f"'{printable(t)}' is not a technique name (letters, digits, '_')")
        dup = sorted({t for t in v if v.count(t) > 1})
        if dup:
            raise ValueError(f"technique listed twice: {', '.join(dup)}; list each once")
        return v

    @field_validator("options")
    @classmethod
    def _reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            if k == "seed":
                raise ValueError("an arm may not set 'seed': every arm runs the spec's `seeds` "
                                 "(so runs pair up); list the seeds under `seeds`")
            if k in RESERVED_ARM_OPTIONS:
                raise ValueError(f"an arm may not override '{k}': every arm must share it for "
                                 f"a fair comparison; set it once at the top of the spec")
        return v


class Sweep(BaseModel):
    """A fair per-arm choice of one option (usually lr): the same small sweep for every arm,
    on short runs, before the main runs. The sweep is stored as its own experiment."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    option: str = Field("lr", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    values: list[float] = Field(min_length=2, max_length=20)
    # "scale": values multiply each arm's own resolved value (optimizers differ in their lr
    # scale, so the same relative sweep is the fair one); "set": values are used as given.
    mode: Literal["scale", "set"] = "set"
    seeds: list[Seed] | None = Field(None, min_length=1, max_length=MAX_SEEDS)
    budget_fraction: float = Field(0.25, gt=0, le=1)

    @field_validator("option")
    @classmethod
    def _option(cls, v: str) -> str:
        if v in RESERVED_ARM_OPTIONS:
            raise ValueError(f"cannot sweep '{v}': it must be the same for every run; "
                             f"sweep a training option such as lr")
        return v

    @field_validator("values", mode="before")
    @classmethod
    def _no_bools(cls, v: Any) -> Any:
        if isinstance(v, list):
            for x in v:
                _number(x)
        return v

    @field_validator("budget_fraction", mode="before")
    @classmethod
    def _fraction(cls, v: Any) -> Any:
        return _number(v)

    @model_validator(mode="after")
    def _values(self) -> Sweep:
        if len(set(self.values)) != len(self.values):
            raise ValueError("sweep values repeat; list each value once")
        if self.mode == "scale" and min(self.values) <= 0:
            raise ValueError("scale values multiply the arm's own value and must be positive")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError("sweep seeds repeat; each seed must appear once")
        return self


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    hypothesis: str = Field("", max_length=MAX_STRING)
    area: str = "general"
    workload: str = "charlm"
    preset: str | None = None
    dataset: str | None = Field(None, max_length=4096)
    budget: dict[str, float]
    baseline: Arm = Field(default_factory=lambda: Arm(name="baseline", description=""))
    arms: list[Arm] = Field(default_factory=list, max_length=MAX_ARMS)  # none: baseline alone
    seeds: list[Seed] = Field(default_factory=lambda: list(DEFAULT_SEEDS), min_length=1,
                              max_length=MAX_SEEDS)
    options: dict[str, Any] = Field(default_factory=dict)  # shared by every arm
    metric: str = Field(default="val_loss", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    direction: Literal["minimize", "maximize"] = "minimize"
    tolerance: float = Field(0.0, ge=0)  # quality change still counted as "no worse"
    # Equivalence margin in the metric's units ("quality kept" = within +-margin by TOST);
    # None: 2 sd of the measured noise floor, else a provisional one from the baseline's sd.
    margin: float | None = Field(default=None, gt=0)
    target: float | None = None  # declared time-to-target value (else leave-one-seed-out)
    # The one cost ratio the rubric credits (the others are reported): time-to-target seconds,
    # FLOPs or energy, or the model's size / peak memory (compression, memory savings).
    credit: Literal["time", "flops", "energy", "size", "memory"] = "time"
    timeout_s: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S)  # per run
    sweep: Sweep | None = None
    sweep_chosen: dict[str, float] = Field(default_factory=dict)  # arm -> value, set by the lab
    quick_budget: dict[str, float] | None = None  # `airlab run --quick`: a smoke-test budget
    # The knowledge-base idea this experiment tests (set by the research team; not in run keys).
    idea: str | None = Field(default=None, max_length=64)
    # Technique files (generated code) the arms may `use`: paths relative to the spec file,
    # made absolute when loading. Their code runs only in the sandbox (docs/sandbox.md).
    techniques: list[str] = Field(default_factory=list, max_length=MAX_TECHNIQUE_FILES)

    # Where the spec came from and the YAML line of each field, for file:line in later checks.
    _source: str = PrivateAttr("<spec>")
    _lines: dict[tuple[Any, ...], int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _safe_values(cls, data: Any) -> Any:
        # Specs built in Python (agents, tests) get the same value checks as loaded files.
        problems = _scan(data)
        if problems:
            path, msg = problems[0]
            raise ValueError(f"{_field_name(path) or 'spec'}: {msg}")
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "experiment name", EXPERIMENT_NAME_MAX)

    @field_validator("area", "workload", "preset", "idea")
    @classmethod
    def _simple_names(cls, v: str | None) -> str | None:
        return None if v is None else _check_name(v, "name", 64)

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str | None) -> str | None:
        if v is None or v.startswith(FILE_PREFIX):
            if v == FILE_PREFIX:
                raise ValueError("'file:' needs a path, e.g. file:notes.txt")
            return v
        return _check_name(v, "dataset name", 64)

    @field_validator("tolerance", "timeout_s", "margin", "target", mode="before")
    @classmethod
    def _plain_number(cls, v: Any) -> Any:
        return _number(v)

    @field_validator("budget", "quick_budget", mode="before")
    @classmethod
    def _budget_numbers(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for x in v.values():
                _number(x)
        return v

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: dict[str, float]) -> dict[str, float]:
        if len(v) != 1:
            raise ValueError(f"give exactly one of {', '.join(BUDGET_UNITS)}, e.g. "
                             f"{{tokens: 100000}}")
        (unit, amount), = v.items()
        if unit not in BUDGET_UNITS:
            raise ValueError(f"unknown budget unit '{printable(unit)}': "
                             f"{did_you_mean(unit, BUDGET_UNITS)}")
        if not math.isfinite(amount) or amount <= 0:
            raise ValueError(f"budget {unit} must be a finite positive number, got {amount}")
        if amount > BUDGET_MAX[unit]:
            raise ValueError(f"budget {unit}={amount:g} is beyond {BUDGET_MAX[unit]:g}; "
                             f"give a budget a run can finish")
        return {unit: float(amount)}

    @field_validator("quick_budget")
    @classmethod
    def _quick_budget(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        return None if v is None else cls._budget(v)

    @field_validator("techniques")
    @classmethod
    def _technique_files(cls, v: list[str]) -> list[str]:
        for f in v:
            if not f.endswith(".py") or len(f) > 4096:
                raise ValueError(f"technique file '{printable(f)}' must be a .py file, "
                                 "e.g. techniques: [my_technique.py]")
        if len(set(v)) != len(v):
            raise ValueError("a technique file is listed twice; list each once")
        return v

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds repeat; each seed must appear once")
        return v

    @field_validator("options")
    @classmethod
    def _reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            if k in RESERVED_SPEC_OPTIONS:
                where = "seeds" if k == "seed" else "budget" if k in BUDGET_UNITS else k
                raise ValueError(f"'{k}' is not an option: give it as the spec's "
                                 f"`{where}` field")
        return v

    @model_validator(mode="after")
    def _unique_arms(self) -> ExperimentSpec:
        names = [self.baseline.name] + [a.name for a in self.arms]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"arm names repeat: {', '.join(sorted(dup))}; give each arm its "
                             f"own name")
        if self.sweep is not None:
            # Each sweep point runs as an arm named `<arm>.<option>_<value>` (see
            # experiment.sweep_arm_name): those names must fit the arm-name rule too.
            sw = self.sweep
            longest = max(len(f".{sw.option}_x{v:g}") for v in sw.values)
            too_long = [n for n in names if len(n) + longest > ARM_NAME_MAX]
            if too_long:
                raise ValueError(f"arm '{too_long[0]}' is too long to name its sweep arms "
                                 f"(name plus '.{sw.option}_<value>' must fit {ARM_NAME_MAX} "
                                 f"characters); shorten it to {ARM_NAME_MAX - longest}")
            shared = sorted(set(sw.seeds or ()) & set(self.seeds))
            if shared:  # the sweep selects; the verdict's seeds must play no part in that
                raise ValueError(f"sweep seeds {shared} are also the experiment's seeds; give "
                                 f"the sweep seeds of its own (or leave sweep.seeds out)")
        if self.sweep_chosen:
            if self.sweep is None:
                raise ValueError("sweep_chosen is set by the lab after a sweep; remove it")
            if set(self.sweep_chosen) != set(names):
                raise ValueError("sweep_chosen must name every arm (it is set by the lab "
                                 "after a sweep; remove it)")
        return self

    @property
    def all_arms(self) -> list[Arm]:
        return [self.baseline, *self.arms]

    @property
    def source(self) -> str:
        """The file (or label) the spec was loaded from."""
        return self._source

    @property
    def lines(self) -> dict[tuple[Any, ...], int]:
        """YAML line (1-based) of each field path, e.g. ("arms", 0, "use") -> 12."""
        return self._lines

    def where(self, *path: Any) -> str:
        """`source:line` of a field path (the nearest enclosing field that has a line)."""
        line = line_for(self._lines, path)
        return f"{self._source}:{line}" if line else self._source

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# Value checks every spec gets: safe strings, finite numbers, plain YAML types


def _bad_string(s: str, free_text: bool) -> str | None:
    if len(s) > MAX_STRING:
        return f"text of {len(s):,} characters; at most {MAX_STRING:,}"
    for ch in s:
        o = ord(ch)
        if 0xD800 <= o <= 0xDFFF:
            return f"a lone surrogate (\\u{o:04x}) is not text; remove it"
        if o == 0:
            return "a NUL character is not allowed; remove it"
        if (o < 32 or o == 127) and not (free_text and ch in "\n\t\r"):
            return f"control character \\x{o:02x} is not allowed here; remove it"
    return None


def _scan(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """Problems with plain values anywhere in spec data: (path, message)."""
    out: list[tuple[tuple[Any, ...], str]] = []
    if len(path) > MAX_YAML_DEPTH:
        return [(path, f"nested deeper than {MAX_YAML_DEPTH} levels; a spec is flat")]
    if isinstance(data, dict):
        for k, v in data.items():
            if not isinstance(k, str):
                out.append((path, f"key {printable(k)} is of type {type(k).__name__}; keys must "
                                  f"be names (quote it if it is one)"))
                continue
            bad = _bad_string(k, False)
            if bad:
                out.append((path + (k,), f"key '{printable(k)}': {bad}"))
                continue
            out += _scan(v, path + (k,))
    elif isinstance(data, list | tuple):
        for i, v in enumerate(data):
            out += _scan(v, path + (i,))
    elif isinstance(data, str):
        free = bool(path) and path[-1] in _FREE_TEXT
        bad = _bad_string(data, free)
        if bad:
            out.append((path, bad))
    elif isinstance(data, bool) or data is None:
        pass
    elif isinstance(data, BaseModel):  # an Arm or Sweep built in Python
        out += _scan(data.model_dump(), path)
    elif isinstance(data, int):
        if abs(data) > INT64_MAX:
            out.append((path, f"integer {printable(data, 24)} is beyond 64 bits; "
                              f"use a number below 2^63"))
    elif isinstance(data, float):
        if not math.isfinite(data):
            out.append((path, f"{data} is not a finite number; give a plain number"))
    else:
        out.append((path, f"a {type(data).__name__} value is not allowed; use a number, text, "
                          f"a list or a mapping"))
    return out


# ---------------------------------------------------------------------------------------------
# YAML: one strict parse that also records the line of every field


class _YAMLRefused(yaml.YAMLError):
    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (billion-laughs and recursive documents), caps nesting
    (the composer recurses) and refuses a key given twice (YAML would keep the last)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _YAMLRefused("aliases (*name) are not allowed in a spec; write the value out",
                               event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _YAMLRefused(f"nested deeper than {MAX_YAML_DEPTH} levels",
                                   self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise _YAMLRefused(f"key '{printable(key_node.value)}' is given twice; "
                                       "keep one", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _index(root: Any) -> dict[tuple[Any, ...], int]:
    out: dict[tuple[Any, ...], int] = {}
    stack: list[tuple[Any, tuple[Any, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        out.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else None
                out[path + (key,)] = k.start_mark.line + 1  # a field's line is its key's line
                stack.append((v, path + (key,)))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                stack.append((v, path + (i,)))
    return out


def parse_yaml(text: str, source: str = "<spec>") -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse spec YAML strictly; return (data, line index). Raises a one-line AirlabError."""
    loader: _SpecLoader | None = None
    try:
        loader = _SpecLoader(text)  # the reader refuses unprintable characters here
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except RecursionError:
        raise AirlabError(f"{source}: YAML nested too deeply", "a spec is a flat mapping") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            line = f":{mark.line + 1}"
        elif isinstance(getattr(e, "position", None), int):  # the reader's unprintable chars
            line = f":{text[: e.position].count(chr(10)) + 1}"  # type: ignore[attr-defined]
        else:
            line = ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise AirlabError(f"{source}{line}: not valid YAML: {printable(problem, 120)}",
                          "indent with spaces, quote text with special characters, one "
                          "document per file") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, (_index(root) if root is not None else {})


def line_for(lines: dict[tuple[Any, ...], int], loc: Sequence[Any]) -> int | None:
    """The line of a field path, or of the nearest enclosing field that has one."""
    path = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _field_name(loc: Sequence[Any]) -> str:
    return "".join(f"[{x}]" if isinstance(x, int) else f".{printable(str(x))}"
                   for x in loc).lstrip(".")


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """Field names valid at a location, for did-you-mean on extra keys."""
    if loc and loc[0] in ("baseline", "arms"):
        return list(Arm.model_fields)
    if loc and loc[0] == "sweep":
        return list(Sweep.model_fields)
    return list(ExperimentSpec.model_fields)


# ---------------------------------------------------------------------------------------------
# Structure: all problems at once, each one line with file:line and field


def spec_problems(data: Any, source: str = "<spec>",
                  lines: dict[tuple[Any, ...], int] | None = None
                  ) -> tuple[ExperimentSpec | None, list[AirlabError]]:
    """Validate plain data as a spec: (spec or None, one AirlabError per structural problem)."""
    lines = lines or {}

    def where(loc: Sequence[Any]) -> str:
        line = line_for(lines, loc)
        return f"{source}:{line}" if line else source

    if not isinstance(data, dict):
        kind = "nothing" if data is None else f"a {type(data).__name__}"
        return None, [AirlabError(f"{where(())}: a spec must be a mapping of fields, got {kind}",
                                  "start from `airlab run --list` or a file in the library")]
    scanned = _scan(data)
    if scanned:
        return None, [AirlabError(f"{where(p)}: {_field_name(p) or 'spec'}: {m}")
                      for p, m in scanned]
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as e:
        return None, [_pydantic_problem(err, where) for err in e.errors()]
    spec._source, spec._lines = source, dict(lines)
    return spec, []


def _pydantic_problem(err: Any, where: Any) -> AirlabError:
    loc = [x for x in err["loc"] if x != "__root__"]
    # pydantic adds the type tried (e.g. "str", "float") to the location of a union; drop it.
    loc = [x for x in loc if not (isinstance(x, str) and x in ("str", "float", "int", "none"))]
    field = _field_name(loc)
    if err["type"] == "extra_forbidden":
        bad = str(loc[-1])
        return AirlabError(f"{where(loc)}: unknown field '{field}'",
                           did_you_mean(bad, _fields_at(loc[:-1])))
    if err["type"] == "missing":
        return AirlabError(f"{where(loc)}: missing required field '{field}'")
    msg = err["msg"].removeprefix("Value error, ")
    hint = None
    if "e.g." not in msg and loc:
        hint = _HINTS.get(str(loc[-1])) or _HINTS.get(str(loc[0]))
    return AirlabError(f"{where(loc)}: {field or 'spec'}: {_one_line(msg)}", hint)


# A suggestion for each field, shown with the type and range errors pydantic words itself.
_HINTS = {
    "seeds": "seeds are whole numbers from 0 to 2^63-1, e.g. seeds: [42, 137, 256]",
    "budget": "e.g. budget: {tokens: 100000}",
    "quick_budget": "e.g. quick_budget: {tokens: 10000}",
    "timeout_s": "give seconds per run, more than 0 and at most 86400 (a day)",
    "tolerance": "a number >= 0 in the metric's units, e.g. 0.01",
    "margin": "a number > 0 in the metric's units, e.g. 0.02",
    "target": "a value of the metric, e.g. 1.9",
    "credit": "one of time, flops, energy, size, memory",
    "direction": "minimize or maximize",
    "metric": "a metric name such as val_loss",
    "values": "e.g. values: [0.5, 1.0, 2.0]",
    "budget_fraction": "a fraction in (0, 1], e.g. 0.25",
    "mode": "scale or set",
    "option": "an option name such as lr",
    "use": "a list of technique names, e.g. use: [rope]",
    "options": "a mapping of option names to values, e.g. options: {lr: 0.001}",
    "arms": "a list of arms, each {name: ..., use: [...]}",
    "baseline": "e.g. baseline: {name: base}",
    "sweep": "e.g. sweep: {option: lr, values: [0.5, 1.0, 2.0], mode: scale}",
    "sweep_chosen": "remove it: the lab sets it after a sweep",
    "techniques": "a list of technique files relative to the spec, e.g. techniques: [mine.py]",
    "hypothesis": "text, e.g. hypothesis: rope lowers val_loss",
    "description": "text describing the arm",
    "workload": "charlm or vision",
    "preset": "a preset name such as tiny",
    "dataset": "a dataset name such as pycode, or file:PATH",
    "area": "a short name such as optimizers",
    "name": "letters, digits, '_', '.' and '-', e.g. name: my_experiment",
}


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


def spec_from_dict(data: Any, source: str = "<spec>", text: str | None = None) -> ExperimentSpec:
    """Validate plain data as a spec; the first problem is raised naming source, line, field.

    Registry-level checks (techniques, options, units, metrics) are in `airlab.check`.
    """
    lines = parse_yaml(text, source)[1] if text else {}
    spec, problems = spec_problems(data, source, lines)
    if problems:
        raise problems[0]
    assert spec is not None
    return spec


# ---------------------------------------------------------------------------------------------
# Files


def check_file_dataset(raw: str, base_dir: Path | None = None) -> Path:
    """The absolute path of a `file:` dataset, or AirlabError: relative paths are relative to
    ``base_dir`` (the spec's folder), and only a regular file of a sane size outside the
    system folders is training data (no /dev/zero, /proc/self/environ or /etc/passwd)."""
    if not raw:
        raise AirlabError("'file:' needs a path", "e.g. dataset: file:notes.txt")
    p = Path(raw).expanduser()
    if not p.is_absolute():
        p = (base_dir or Path.cwd()) / p
    p = Path(os.path.realpath(p))
    shown = printable(str(p), 120)
    if any(str(p) == d or str(p).startswith(d + "/") for d in _SYSTEM_DIRS):
        raise AirlabError(f"dataset file {shown} is in a system folder, not training data",
                          "copy the text into your project folder")
    try:
        st = p.stat()
    except FileNotFoundError:
        raise AirlabError(f"dataset file not found: {shown}",
                          "a relative path is relative to the spec file's folder") from None
    except (OSError, ValueError) as e:
        raise AirlabError(f"cannot read dataset file {shown}: "
                          f"{getattr(e, 'strerror', None) or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise AirlabError(f"dataset file {shown} is not a regular file", "give a text file")
    if st.st_size > MAX_DATASET_BYTES:
        raise AirlabError(f"dataset file {shown} has {st.st_size:,} bytes; at most "
                          f"{MAX_DATASET_BYTES:,}", "use a smaller text file")
    if st.st_size < MIN_DATASET_BYTES:
        raise AirlabError(f"dataset file {shown} has {st.st_size:,} bytes; a corpus needs at "
                          f"least {MIN_DATASET_BYTES:,}", "use a longer text file")
    return p


def library_dir() -> Path:
    return Path(str(resources.files("airlab") / "library"))


def library_specs() -> dict[str, Path]:
    """Built-in experiments by name (and alias)."""
    out: dict[str, Path] = {}
    for p in sorted(library_dir().glob("*.yaml")):
        out[p.stem] = p
        try:
            head = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        for alias in head.get("aliases", []) if isinstance(head, dict) else []:
            out.setdefault(alias, p)
    return out


def _spec_path(ref: str | Path) -> Path:
    path = Path(ref)
    if path.exists():
        return path
    lib = library_specs()
    if str(ref) in lib:
        return lib[str(ref)]
    if str(ref).endswith((".yaml", ".yml")):
        raise AirlabError(f"spec file not found: {printable(str(ref), 200)}", "check the path")
    raise AirlabError(f"no spec file or built-in experiment '{printable(str(ref), 100)}'",
                      did_you_mean(str(ref), lib))


def read_spec(ref: str | Path) -> tuple[Any, dict[tuple[Any, ...], int], Path]:
    """Read and parse a spec file (or built-in name): (data, line index, path)."""
    path = _spec_path(ref)
    try:
        if not path.is_file():
            raise AirlabError(f"spec {printable(str(path), 200)} is not a regular file",
                              "give a .yaml file")
        with path.open("rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise AirlabError(f"cannot read spec {printable(str(path), 200)}: "
                          f"{e.strerror or e}") from None
    source = str(path)
    if len(raw) > MAX_SPEC_BYTES:
        raise AirlabError(f"{source}: spec is over {MAX_SPEC_BYTES:,} bytes", "a spec is a page")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise AirlabError(f"{source}:{line}: not UTF-8 text (bad byte at offset {e.start})",
                          "save the file as UTF-8") from None
    data, lines = parse_yaml(text, source)
    if isinstance(data, dict):
        data.pop("aliases", None)  # library metadata, not part of the spec
    return data, lines, path


def load_spec_problems(ref: str | Path) -> tuple[ExperimentSpec | None, list[AirlabError]]:
    """Structural check of a spec file: (spec or None, problems). `file:` datasets are made
    absolute relative to the spec file and checked (regular file, size)."""
    try:
        data, lines, path = read_spec(ref)
    except AirlabError as e:
        return None, [e]
    spec, problems = spec_problems(data, str(path), lines)
    if spec is not None and spec.dataset and spec.dataset.startswith(FILE_PREFIX):
        try:
            real = check_file_dataset(spec.dataset[len(FILE_PREFIX):], path.parent)
        except AirlabError as e:
            problems.append(AirlabError(f"{spec.where('dataset')}: dataset: {e.message}", e.hint))
            return None, problems
        spec.dataset = f"{FILE_PREFIX}{real}"
    if spec is not None and spec.techniques:
        resolved = []
        for i, f in enumerate(spec.techniques):
            p = Path(os.path.realpath(path.parent / Path(f).expanduser()))
            if not p.is_file():
                problems.append(AirlabError(f"{spec.where('techniques', i)}: techniques: "
                                            f"file not found: {printable(str(p), 200)}",
                                            "a path is relative to the spec file's folder"))
            resolved.append(str(p))
        if problems:
            return None, problems
        spec.techniques = resolved
    return (spec if not problems else None), problems


def load_spec(ref: str | Path) -> ExperimentSpec:
    """Load a spec from a YAML path or a built-in experiment name (structure only).

    The spec keeps its source and YAML lines (`spec.where(...)`); `airlab.check.check_spec`
    adds the registry-level checks with the same file:line.
    """
    spec, problems = load_spec_problems(ref)
    if problems:
        raise problems[0]
    assert spec is not None
    return spec
