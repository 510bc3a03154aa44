"""Semantic checks of a spec against the registries, and the plan it would run.

`airlab.spec` checks a spec's structure without torch or registries; this module resolves every
arm through `airlab.plan.resolve` (techniques, options, units, conflicts, reserved fields) and
adds the checks that need the workload registry (budget units, measured metrics). Every problem
is one AirlabError whose message starts with `file:line: field:` and ends with a suggestion.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airlab.config import BUDGET_UNITS, TrainConfig
from airlab.errors import AirlabError, did_you_mean
from airlab.plan import load_spec_techniques, resolve, sweep_value
from airlab.run.workloads import WORKLOADS, get_workload
from airlab.settings import Settings
from airlab.spec import ExperimentSpec, load_spec_problems, printable
from airlab.techniques import TECHNIQUES, get_technique

# What a workload's budget counts when given directly (epochs and seconds work for every one).
_WORKLOAD_UNIT = {"charlm": "tokens", "vision": "samples"}
# Metrics the trainer records for every finished run ({unit} is tokens or samples).
_COMMON_METRICS = ("steps", "{unit}", "{unit}_per_s", "train_seconds", "eval_seconds", "flops",
                   "peak_mem_mb", "params", "params_deployed", "model_bytes", "energy_kwh_est",
                   "best_val_loss")
# What each workload's evaluation measures.
_EVAL_METRICS = {"charlm": ("val_loss", "val_bpc"), "vision": ("val_loss", "val_acc")}
_LATENCY_METRICS = ("latency_ms_b1", "latency_ms_batch")  # with options: {latency: true}
_DEPLOY_METRICS = ("val_loss_before", "quality_drop")  # when a technique deploys a new model
# Throughput assumed when the store has no finished run to measure it from (tiny presets on
# one of two CPU cores; stated in the plan so nobody mistakes it for a measurement).
DEFAULT_THROUGHPUT = {"tokens": 10_000.0, "samples": 5_000.0}


def workload_unit(workload: str) -> str:
    """tokens or samples: what a workload's budget counts."""
    wl = get_workload(workload)
    return str(getattr(wl, "unit", None) or _WORKLOAD_UNIT.get(workload, "tokens"))


def budget_units(workload: str) -> tuple[str, ...]:
    """The budget units a workload accepts: its own unit, epochs and seconds."""
    declared = getattr(get_workload(workload), "budget_units", None)
    return tuple(declared) if declared else (workload_unit(workload), "epochs", "seconds")


def measured_metrics(workload: str, techniques: Iterable[str] = (), *,
                     latency: bool = False) -> set[str]:
    """Names of the metrics a run of this workload (with these switches) stores."""
    unit = workload_unit(workload)
    out = {m.format(unit=unit) for m in _COMMON_METRICS}
    out |= set(_EVAL_METRICS.get(workload, ("val_loss",)))
    if latency:
        out |= set(_LATENCY_METRICS)
    for name in techniques:
        t = TECHNIQUES.get(name)
        if t is None:
            continue
        out |= set(getattr(t, "metrics", ()))
        if getattr(t, "deploys", False):
            out |= set(_DEPLOY_METRICS)
    return out


def _one_line(text: str) -> str:
    return " ".join(printable(text, 400).split())


def _problem(spec: ExperimentSpec, path: tuple[Any, ...], field_name: str, message: str,
             hint: str | None = None) -> AirlabError:
    return AirlabError(f"{spec.where(*path)}: {field_name}: {_one_line(message)}",
                       _one_line(hint) if hint else None)


def _arm_path(i: int) -> tuple[Any, ...]:
    return ("baseline",) if i == 0 else ("arms", i - 1)


def _arm_field(i: int) -> str:
    return "baseline" if i == 0 else f"arms[{i - 1}]"


def _resolve_arm(spec: ExperimentSpec, arm: Any, seed: int,
                 extra: Mapping[str, Any] | None = None,
                 settings: Settings | None = None) -> TrainConfig:
    return resolve(workload=spec.workload, preset=spec.preset, dataset=spec.dataset,
                   budget=spec.budget, seed=seed, use=arm.use,
                   options={**spec.options, **arm.options, **(extra or {})}, settings=settings)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and k in ("model", "options"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _conflict(spec: ExperimentSpec, arm: Any) -> str | None:
    """A pair of the arm's switches that cannot both hold: declared by a technique's
    `excludes`, or both writing one config field with different values (last-wins)."""
    for a, b in itertools.combinations(arm.use, 2):
        ta, tb = get_technique(a), get_technique(b)
        if b in getattr(ta, "excludes", ()) or a in getattr(tb, "excludes", ()):
            return f"techniques '{a}' and '{b}' exclude each other"
    if len(arm.use) < 2:
        return None
    # Undeclared conflicts: what each switch changes on its own, from the same starting point.
    opts = {**spec.options, **arm.options}
    params = {t: set(get_technique(t).params) for t in arm.use}
    shared = {k: v for k, v in opts.items() if not any(k in p for p in params.values())}

    def flat(use: list[str]) -> dict[str, Any]:
        own = {k: v for k, v in opts.items() if any(k in params[t] for t in use)}
        cfg = resolve(workload=spec.workload, preset=spec.preset, dataset=spec.dataset,
                      budget=spec.budget, seed=spec.seeds[0], use=use,
                      options={**shared, **own})
        return {k: v for k, v in _flatten(cfg.model_dump()).items()
                if k != "techniques" and not k.startswith("code")}

    try:
        base = flat([])
        changes = {t: {k: v for k, v in flat([t]).items() if base.get(k) != v}
                   for t in arm.use}
    except AirlabError:
        return None  # resolving the whole arm reports the problem itself
    for a, b in itertools.combinations(arm.use, 2):
        for k in sorted(set(changes[a]) & set(changes[b])):
            if changes[a][k] != changes[b][k]:
                return (f"techniques '{a}' and '{b}' both set {k} "
                        f"({printable(changes[a][k])} vs {printable(changes[b][k])}); "
                        f"the second would silently win")
    return None


def check_spec(spec: ExperimentSpec, source: str | None = None,
               lines: dict[tuple[Any, ...], int] | None = None,
               settings: Settings | None = None) -> list[AirlabError]:
    """Every registry-level problem of a structurally valid spec, one AirlabError each.

    ``source``/``lines`` default to those the spec was loaded with (`load_spec`); ``settings``
    names a techniques folder to load first (as `airlab run` does).
    """
    if source is not None:
        spec._source = source
    if lines is not None:
        spec._lines = dict(lines)
    problems: list[AirlabError] = []
    if spec.workload not in WORKLOADS:
        return [_problem(spec, ("workload",), "workload",
                         f"unknown workload '{spec.workload}'",
                         did_you_mean(spec.workload, WORKLOADS))]
    units = budget_units(spec.workload)
    for key in ("budget", "quick_budget"):
        b = getattr(spec, key)
        unit = next(iter(b)) if b else None
        if unit is not None and unit not in units:
            problems.append(_problem(
                spec, (key, unit), key,
                f"workload '{spec.workload}' does not count {unit}",
                f"give the budget in {' or '.join(units)}"))
    problems += _check_dataset(spec)
    if problems:
        return problems  # every arm would repeat the unit or dataset problem
    if spec.techniques:
        try:  # technique files are imported only in the sandbox; this registers their stand-ins
            load_spec_techniques(spec, allow_unsafe=bool(settings and
                                                         settings.unsafe_no_sandbox))
        except AirlabError as e:
            return [_problem(spec, ("techniques",), "techniques", e.message, e.hint)]
    resolved: dict[str, TrainConfig] = {}
    for i, arm in enumerate(spec.all_arms):
        path, where = _arm_path(i), _arm_field(i)
        try:
            conflict = _conflict(spec, arm)
        except AirlabError:
            conflict = None  # an unknown technique: reported by resolve below
        if conflict:
            problems.append(_problem(spec, path + ("use",), f"{where}.use", conflict,
                                     "use one of them per arm"))
            continue
        try:
            resolved[arm.name] = _resolve_arm(spec, arm, spec.seeds[0], settings=settings)
        except AirlabError as e:
            sub = "use" if "technique" in e.message else "options"
            problems.append(_problem(spec, path + (sub,), f"{where} '{arm.name}'", e.message,
                                     e.hint or _default_hint(e.message)))
    if problems:
        return problems
    problems += _check_metric(spec, resolved)
    problems += _check_sweep(spec, settings)
    return problems


def metric_direction(metric: str) -> str | None:
    """Which way a measured metric gets better (None: no fixed direction, e.g. steps)."""
    if metric in ("val_acc",) or metric.endswith("_per_s"):
        return "maximize"
    if ("loss" in metric or metric.endswith(("_seconds", "_mb", "_bytes", "_kwh_est", "_bpc"))
            or metric in ("flops", "params", "params_deployed", "model_bytes")):
        return "minimize"
    return None


def _datasets(workload: str) -> Iterable[str] | None:
    """Dataset names a workload can load (None: not known here, left to the workload)."""
    from airlab.data import TEXT_CORPORA, VISION_DATASETS

    known: dict[str, Iterable[str]] = {"charlm": TEXT_CORPORA, "vision": VISION_DATASETS}
    return known.get(workload)


def _check_dataset(spec: ExperimentSpec) -> list[AirlabError]:
    if spec.dataset is None:
        return []
    known = _datasets(spec.workload)
    if known is None:
        return []
    if spec.dataset.startswith("file:"):
        if spec.workload == "charlm":
            return []  # checked (and made absolute) when the spec file was loaded
        return [_problem(spec, ("dataset",), "dataset",
                         f"workload '{spec.workload}' cannot read a file: dataset",
                         f"choose from: {', '.join(sorted(known))}")]
    if spec.dataset in known:
        return []
    return [_problem(spec, ("dataset",), "dataset",
                     f"unknown dataset '{spec.dataset}' for workload '{spec.workload}'",
                     did_you_mean(spec.dataset, [*known, *(["file:PATH"]
                                                           if spec.workload == "charlm" else [])]))]


def _default_hint(message: str) -> str:
    """A suggestion for a resolve error that came without one: the field's default value."""
    m = re.match(r"invalid (?:model\.)?(\w+)", message)
    f = TrainConfig.model_fields.get(m.group(1)) if m else None
    if f is not None and f.default is not None and not callable(f.default):
        return f"its default is {f.default!r}; set a value of that kind or leave it out"
    return "check this arm's use and options (or the spec's shared options)"


def _check_metric(spec: ExperimentSpec, resolved: Mapping[str, TrainConfig]
                  ) -> list[AirlabError]:
    # The compared metric must be measured by every arm, the baseline included.
    sets = [measured_metrics(c.workload, c.techniques, latency=c.latency)
            for c in resolved.values()]
    common = set.intersection(*sets) if sets else set()
    if spec.metric in common:
        want = metric_direction(spec.metric)
        if want and want != spec.direction:
            return [_problem(spec, ("direction",), "direction",
                             f"{spec.metric} is better when it is {want[:3]}imal, not "
                             f"{spec.direction[:3]}imal", f"direction: {want}")]
        return []
    return [_problem(spec, ("metric",), "metric",
                     f"'{spec.metric}' is not measured by every arm of workload "
                     f"'{spec.workload}'", did_you_mean(spec.metric, common))]


def _check_sweep(spec: ExperimentSpec, settings: Settings | None) -> list[AirlabError]:
    sw = spec.sweep
    if sw is None:
        return []
    out: list[AirlabError] = []
    for arm in spec.all_arms:
        try:
            for v in sw.values:
                value = sweep_value(spec, arm, v, settings)
                if not math.isfinite(value):
                    raise AirlabError(f"sweep value {v} gives {sw.option}={value}")
                _resolve_arm(spec, arm, spec.seeds[0], {sw.option: value}, settings)
        except AirlabError as e:
            out.append(_problem(spec, ("sweep",), "sweep",
                                f"arm '{arm.name}': {e.message}", e.hint))
            break
    return out


def check_file(ref: Any, settings: Settings | None = None
               ) -> tuple[ExperimentSpec | None, list[AirlabError]]:
    """Load a spec file (or built-in name) and check it fully: (spec or None, problems).

    Never raises for a bad spec: every problem comes back as an AirlabError (one line each).
    """
    spec, problems = load_spec_problems(ref)
    if spec is None or problems:
        return None, problems
    problems = check_spec(spec, settings=settings)
    return (None if problems else spec), problems


def load_checked(ref: Any, settings: Settings | None = None) -> ExperimentSpec:
    """`load_spec` plus the registry checks; raises the first problem."""
    spec, problems = check_file(ref, settings)
    if problems:
        raise problems[0]
    assert spec is not None
    return spec


# ---------------------------------------------------------------------------------------------
# The plan a valid spec makes, for `airlab check`


@dataclass
class ArmPlan:
    name: str
    use: list[str]
    diff: dict[str, tuple[Any, Any]]  # field -> (baseline value, this arm's value)


@dataclass
class PlanSummary:
    """What `airlab run` would do, without training: arms x seeds, budget, estimated time."""

    name: str
    workload: str
    preset: str
    dataset: str
    seeds: list[int]
    arms: list[ArmPlan]
    baseline: dict[str, Any]  # the baseline's resolved config (flattened)
    budget_unit: str
    budget: float
    units_per_run: float | None  # in the workload's unit (None: a time budget)
    runs: int
    sweep_runs: int
    throughput: float  # units per second of one run
    throughput_source: str  # "measured over N finished runs in the store" or "assumed default"
    est_seconds: float  # sequential wall time of every run (sweep included)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Plain-text rendering, one fact per line."""
        unit = workload_unit(self.workload)
        out = [f"{self.name}: {len(self.arms)} arms x {len(self.seeds)} seeds = {self.runs} runs"
               + (f" (+ {self.sweep_runs} sweep runs)" if self.sweep_runs else ""),
               f"workload {self.workload}, preset {self.preset}, dataset {self.dataset}",
               f"budget: {self.budget:g} {self.budget_unit} per run"
               + (f" = {self.units_per_run:,.0f} {unit}" if self.units_per_run is not None
                  and self.budget_unit != unit else ""),
               f"seeds: {', '.join(map(str, self.seeds))}"]
        for a in self.arms:
            changes = ", ".join(f"{k}: {_val(b)} -> {_val(v)}" for k, (b, v) in a.diff.items())
            use = f" [{', '.join(a.use)}]" if a.use else ""
            out.append(f"  arm {a.name}{use}: {changes or 'baseline config'}")
        out.append(f"estimated time: {_duration(self.est_seconds)} on one worker "
                   f"({self.throughput:,.0f} {unit}/s, {self.throughput_source})")
        out += self.notes
        return out


def _val(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else printable(v)


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "unknown"

    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


# What a run's training speed depends on beyond the machine: a rate is measured over finished
# runs whose resolved configuration has these fields equal (the model's fields included, so
# `--option n_layer=1` on the tiny preset is not timed by runs of the full preset).
THROUGHPUT_FIELDS = ("workload", "preset", "dataset", "model", "batch_size", "precision",
                     "device", "techniques")


def throughput_key(config: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a resolved configuration its throughput is matched on (JSON-plain)."""
    import json

    return json.loads(json.dumps({k: (list(v) if isinstance(v, tuple) else v)
                                  for k in THROUGHPUT_FIELDS
                                  if (v := config.get(k)) is not None or k == "model"},
                                 default=str))


def measured_throughput(store: Any, config: Mapping[str, Any] | TrainConfig
                        ) -> tuple[float, int] | None:
    """Median units/s of the finished runs in a store (its experiments / runs / metrics API)
    whose resolved configuration matches ``config`` on :data:`THROUGHPUT_FIELDS`, with how
    many runs it used; None if none."""
    cfg = config.model_dump(mode="json") if isinstance(config, TrainConfig) else dict(config)
    want = throughput_key(cfg)
    unit = workload_unit(str(cfg.get("workload", "charlm")))
    rates: list[float] = []
    for exp in store.experiments():
        rows = [r for r in store.runs(exp["id"]) if r.get("state") == "finished"
                and throughput_key(r.get("config") or {}) == want]
        if not rows:
            continue
        for m in store.metrics([r["id"] for r in rows]).values():
            v = m.get(f"{unit}_per_s")
            if v is not None and math.isfinite(v) and v > 0:
                rates.append(float(v))
    if not rates:
        return None
    rates.sort()
    return rates[len(rates) // 2], len(rates)


def plan_summary(spec: ExperimentSpec, store: Any = None,
                 settings: Settings | None = None) -> PlanSummary:
    """The plan of a valid spec (run `check_spec` first): arms x seeds, each arm's resolved
    config as a difference from the baseline, the budget in the workload's unit and the time
    it would take at the throughput measured in ``store`` (else a stated default)."""
    configs = [_resolve_arm(spec, arm, spec.seeds[0], settings=settings)
               for arm in spec.all_arms]
    base = _flatten(configs[0].model_dump(mode="json"))
    arms = []
    for arm, cfg in zip(spec.all_arms, configs, strict=True):
        flat = _flatten(cfg.model_dump(mode="json"))
        diff = {k: (base.get(k), v) for k, v in flat.items()
                if base.get(k) != v and k not in ("techniques",) and not k.startswith("code")}
        arms.append(ArmPlan(arm.name, list(arm.use), diff))
    c0 = configs[0]
    unit = workload_unit(spec.workload)
    (bunit, amount), = spec.budget.items()
    notes: list[str] = []
    found = None
    if store is not None:
        try:
            found = measured_throughput(store, c0)
        except Exception as e:  # a store that cannot be read must not stop a check
            notes.append(f"note: throughput not read from the store ({type(e).__name__})")
    if found:
        rate, n = found
        source = f"median of {n} finished runs of this configuration in the store"
    else:
        rate, source = DEFAULT_THROUGHPUT.get(unit, 10_000.0), "assumed default, no runs measured"
    per_run: float | None
    if bunit == "seconds":
        per_run, secs = None, amount
    elif bunit == "epochs":
        per_run = None
        secs = math.nan
        notes.append("note: an epochs budget depends on the dataset size; time not estimated")
    else:
        per_run, secs = amount, amount / rate
    runs = len(spec.all_arms) * len(spec.seeds)
    sweep_runs = 0
    if spec.sweep is not None:
        sweep_runs = len(spec.all_arms) * len(spec.sweep.values) * len(spec.sweep.seeds
                                                                        or spec.seeds[:1])
    total = secs * (runs + sweep_runs * (spec.sweep.budget_fraction if spec.sweep else 0))
    return PlanSummary(spec.name, c0.workload, c0.preset, c0.dataset, list(spec.seeds), arms,
                       base, bunit, float(amount), per_run, runs, sweep_runs, rate, source,
                       total, notes)


__all__ = ["ArmPlan", "BUDGET_UNITS", "PlanSummary", "budget_units", "check_file", "check_spec",
           "load_checked", "measured_metrics", "measured_throughput", "metric_direction",
           "throughput_key",
           "plan_summary",
           "workload_unit"]
