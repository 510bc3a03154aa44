"""Resolve configs and plan an experiment: spec -> one RunPlan per arm x seed.

``resolve`` is where a run's config is checked against the registries (workloads, optimizers,
techniques): anything wrong is one AirlabError line with a suggestion, before any worker starts.
Importing this module is cheap (no torch); ``resolve`` imports the technique registry, whose
built-in modules import torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from airlab.config import (
    BUDGET_UNITS,
    RESERVED_FIELDS,
    TRAIN_FIELDS,
    TrainConfig,
    lr_scale_factor,
)
from airlab.errors import AirlabError, did_you_mean

if TYPE_CHECKING:
    from airlab.run.workloads import Workload
    from airlab.settings import Settings
    from airlab.spec import ExperimentSpec

# Fields that have their own argument in resolve() (budget=, dataset=, ...), never an option.
_OWN_ARGUMENT = {"workload": "workload", "preset": "preset", "dataset": "dataset",
                 "seed": "seeds", **{u: "budget" for u in BUDGET_UNITS}}
_LAB_SET = {"techniques", "code", "save_model", "measured_by"}  # the lab's, not a spec's
_DEVICE = re.compile(r"^(cpu|auto|mps|cuda(:\d+)?)$")
_MAX_SEED = 2**63 - 1


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if k in ("model", "options") and isinstance(v, Mapping):
            out[k] = {**out.get(k, {}), **v}
        else:
            out[k] = v
    return out


def split_options(workload: str, preset: str, options: Mapping[str, Any],
                  techniques: Iterable[str] = ()) -> dict[str, Any]:
    """Sort flat options into trainer fields, model fields and technique options.

    Raises AirlabError naming an option no one knows, with the closest known name.
    """
    from airlab.run.workloads import get_workload
    from airlab.techniques import TECHNIQUES, get_technique

    wl = get_workload(workload)
    model_fields = wl.model_fields(preset)
    tech_params: set[str] = set()
    for t in techniques:
        tech_params |= set(get_technique(t).options)
    out: dict[str, Any] = {"model": {}, "options": {}}
    for key, value in options.items():
        if not isinstance(key, str):
            raise AirlabError(f"option name {key!r} is not a string", "write names as text")
        if key in ("model", "options") and isinstance(value, Mapping):
            out[key].update(value)
        elif key in TRAIN_FIELDS:
            out[key] = value
        elif key in model_fields:
            out["model"][key] = value
        elif key in tech_params:
            out["options"][key] = value
        else:
            owners = sorted(n for n, t in TECHNIQUES.items() if key in t.options)
            if owners:
                raise AirlabError(f"option '{key}' belongs to technique '{owners[0]}', which "
                                  "is not switched on", f"add use: [{owners[0]}] or drop it")
            known = set(TRAIN_FIELDS) | model_fields | {
                p for t in TECHNIQUES.values() for p in t.options
            }
            raise AirlabError(f"unknown option '{key}'", did_you_mean(key, known))
    return out


def _budget(wl: Workload, budget: Mapping[str, Any]) -> dict[str, float]:
    if not isinstance(budget, Mapping) or len(budget) != 1:
        raise AirlabError(f"give exactly one budget ({', '.join(BUDGET_UNITS)})",
                          "e.g. budget: {tokens: 200000}")
    (unit, value), = budget.items()
    if unit not in BUDGET_UNITS:
        raise AirlabError(f"unknown budget unit '{unit}'", did_you_mean(str(unit), BUDGET_UNITS))
    if unit not in wl.budget_units:
        raise AirlabError(f"workload '{wl.name}' cannot count a budget in {unit}",
                          f"give it in {', '.join(wl.budget_units)}")
    try:
        amount = float(value)
    except (TypeError, ValueError):
        raise AirlabError(f"budget {unit}={value!r} is not a number", "e.g. 200000") from None
    if not math.isfinite(amount) or amount <= 0:
        raise AirlabError(f"budget {unit}={value!r} must be finite and positive", "e.g. 200000")
    return {unit: amount}


def _config(cfg: dict[str, Any], stage: str = "") -> TrainConfig:
    """A TrainConfig from ``cfg``, or a one-line AirlabError naming the field."""
    try:
        return TrainConfig(**cfg)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "config"
        value = err.get("input")
        shown = f" {value!r}" if where != "config" and not isinstance(value, dict) else ""
        msg = err["msg"].removeprefix("Value error, ")
        raise AirlabError(f"invalid {where}{shown}{stage}: {msg}") from None


def resolve(
    *,
    workload: str = "charlm",
    preset: str | None = None,
    dataset: str | None = None,
    budget: Mapping[str, float],
    seed: int = 42,
    use: Iterable[str] = (),
    options: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> TrainConfig:
    """Build the full TrainConfig for one run.

    Precedence (later wins): workload preset defaults < technique switches < explicit options.
    ``settings`` (optional) names a techniques folder to load into the registry first.
    """
    from airlab.run.optim import OPTIMIZERS
    from airlab.run.workloads import get_workload
    from airlab.techniques import check_compatible, get_technique, load_techniques

    if settings is not None:
        load_techniques(settings.techniques_dir)
    wl = get_workload(workload)
    preset = preset or wl.default_preset
    wl.presets_check(preset)
    use = tuple(use)
    techs = [get_technique(t) for t in use]
    for tech in techs:
        if workload not in tech.workloads:
            raise AirlabError(
                f"technique '{tech.name}' does not apply to workload '{workload}'",
                f"it works with: {', '.join(tech.workloads)}",
            )
    check_compatible(use)
    units = _budget(wl, budget)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise AirlabError(f"seed {seed!r} must be an integer from 0 to 2^63-1", "e.g. 42")
    options = dict(options or {})
    for key in options:
        if key in _OWN_ARGUMENT:
            raise AirlabError(f"option '{key}' is reserved: it is set by the spec's "
                              f"'{_OWN_ARGUMENT[key]}' and is the same for every arm",
                              f"move it to {_OWN_ARGUMENT[key]}:")
        if key in _LAB_SET or any(key == t.prerequisite_option for t in techs):
            raise AirlabError(f"option '{key}' is set by the lab, not by a spec",
                              "leave it out")
    explicit = split_options(workload, preset, options, use)
    cfg: dict[str, Any] = {
        "workload": workload,
        "preset": preset,
        "dataset": dataset or wl.default_dataset,
        "seed": int(seed),
        **wl.defaults(preset),
        **units,
        "model": {},
        "options": {},
    }
    cfg = _merge(cfg, {k: v for k, v in explicit.items() if k not in ("model",)})
    cfg["model"] = dict(explicit["model"])
    # Check the explicit values before any technique computes with them (lr 0, n_head 2.5).
    wl.check(_config(cfg))
    if not _DEVICE.match(str(cfg.get("device", "cpu"))):
        raise AirlabError(f"unknown device '{cfg['device']}'", "use cpu, cuda, cuda:N or auto")
    # Technique options: defaults, then explicit values; validated against the declared ranges.
    for tech in techs:
        cfg["options"] = {**cfg["options"], **tech.check_options(cfg["options"])}
    for tech in techs:
        cfg = _merge(cfg, _technique_call(tech, "configure this run", tech.configure, cfg))
    cfg = _merge(cfg, explicit)  # explicit options beat what a switch set
    for tech in techs:  # a switch may have set options: check them again
        cfg["options"] = {**cfg["options"], **tech.check_options(cfg["options"])}
    if cfg.get("optimizer", "adamw") not in OPTIMIZERS:
        raise AirlabError(f"unknown optimizer '{cfg['optimizer']}'",
                          did_you_mean(str(cfg["optimizer"]), OPTIMIZERS))
    if cfg.get("device") == "auto":  # resolved here: the run key names the real device
        from airlab.run.devices import concrete_device

        cfg["device"] = concrete_device("auto")
    cfg["techniques"] = use
    cfg["code"] = {t.name: t.source_hash for t in techs}
    _scale_lr(cfg, techs)
    config = _config(cfg, " (after the technique switches)")
    for tech in techs:
        if tech.prerequisite is not None and tech.prerequisite_option:
            pre = _technique_call(tech, "plan its prerequisite run", tech.prerequisite, config)
            wl.check(pre)
            cfg["options"] = {**cfg["options"], tech.prerequisite_option: pre.run_key}
            config = _config(cfg)
    wl.check(config)
    return config


def _technique_call(tech: Any, what: str, fn: Any, arg: Any) -> Any:
    """Call a technique's planning code; its bugs on this config become one-line errors."""
    try:
        return fn(arg)
    except AirlabError:
        raise
    except (TypeError, ValueError, ArithmeticError, KeyError) as e:
        raise AirlabError(f"technique '{tech.name}' cannot {what}: "
                          f"{type(e).__name__}: {e}") from None


def _scale_lr(cfg: dict[str, Any], techs: Iterable[Any] = ()) -> None:
    """Apply the stated batch-size rule to lr, min_lr and the techniques' lr options."""
    rule = cfg.get("lr_scaling", "none")
    if rule == "none":
        return
    base = cfg.get("base_batch_size")
    if not base:
        raise AirlabError(f"lr_scaling={rule} needs base_batch_size",
                          "e.g. options: {lr_scaling: sqrt, base_batch_size: 12}")
    factor = lr_scale_factor(rule, cfg["batch_size"], base)
    cfg["lr"] = float(cfg["lr"]) * factor
    cfg["min_lr"] = float(cfg.get("min_lr", 0.0)) * factor
    for tech in techs:
        for name, opt in tech.options.items():
            if opt.scales_with_lr and cfg["options"].get(name) is not None:
                cfg["options"][name] = float(cfg["options"][name]) * factor


@dataclass(frozen=True)
class RunPlan:
    """One planned run: an arm of an experiment at one seed."""

    experiment: str
    arm: str
    seed: int
    config: TrainConfig

    @property
    def run_key(self) -> str:
        return self.config.run_key


def plan_runs(spec: ExperimentSpec, settings: Settings | None = None) -> list[RunPlan]:
    """One RunPlan per arm x seed; all arms share the seeds so comparisons can be paired.

    Runs are identified by (arm, run key): two arms with the same config (an A/A check) both run.
    Prerequisite runs (a distillation teacher) are not in this list: see ``prerequisites``.
    """
    if spec.sweep is not None and not spec.sweep_chosen:
        raise AirlabError(f"experiment '{spec.name}' has a sweep that has not been run",
                          "run it with run_experiment / airlab run, which runs the sweep first")
    load_spec_techniques(spec, allow_unsafe=bool(settings and settings.unsafe_no_sandbox))
    plans = []
    for arm in spec.all_arms:
        reserved = sorted(set(arm.options) & RESERVED_FIELDS)
        if reserved:
            raise AirlabError(f"arm '{arm.name}': option '{reserved[0]}' is the same for every "
                              "arm", "set it once for the experiment (budget:, dataset:, "
                              "options:)")
        chosen: dict[str, Any] = {}
        if spec.sweep is not None:
            if arm.name not in spec.sweep_chosen:
                raise AirlabError(f"sweep of '{spec.sweep.option}' has no value for arm "
                                  f"'{arm.name}'", "run the sweep again (airlab run)")
            chosen = {spec.sweep.option: sweep_value(spec, arm, spec.sweep_chosen[arm.name],
                                                     settings)}
        for seed in spec.seeds:
            cfg = resolve(workload=spec.workload, preset=spec.preset, dataset=spec.dataset,
                          budget=spec.budget, seed=seed, use=arm.use,
                          options={**spec.options, **arm.options, **chosen}, settings=settings)
            plans.append(RunPlan(spec.name, arm.name, seed, cfg))
    if any(uses_file_technique(p.config) for p in plans):
        # Generated code is measured by the harness; so is every other run of its experiment
        # (each importing only the files its own config uses), so that the arms are compared
        # measured the same way.
        plans = [RunPlan(p.experiment, p.arm, p.seed,
                         p.config.model_copy(update={"measured_by": "harness"}))
                 for p in plans]
    return plans


def uses_file_technique(config: TrainConfig) -> bool:
    """Whether a config uses a technique registered from a technique file (generated code)."""
    from airlab.techniques.base import FILE_MODULE_PREFIX, TECHNIQUES

    return any(TECHNIQUES[n].module.startswith(FILE_MODULE_PREFIX + ".")
               for n in config.techniques if n in TECHNIQUES)


def load_spec_techniques(spec: ExperimentSpec, *, allow_unsafe: bool = False) -> list[str]:
    """Register the technique files a spec names (``techniques: [file.py]``), so its arms can
    ``use`` them; returns their technique names. The files' code runs only in the sandbox:
    here the registry gets stand-ins built from the sandbox's description, whose source hash
    is the file's sha256, so a changed file is a new run key (techniques/contract.py)."""
    if not spec.techniques:
        return []
    from pathlib import Path

    from airlab.techniques.contract import register_technique_files

    files = register_technique_files([Path(f) for f in spec.techniques],
                                     allow_unsafe=allow_unsafe)
    return sorted({n for entry in files.values() for n in entry.names})


def prerequisites(plans: list[RunPlan]) -> list[RunPlan]:
    """The runs the given plans need first (a distilled arm's teacher), one per run key.

    Each is planned as experiment ``<experiment>.teacher``, arm ``teacher.<first arm>``, at the
    student's seed; its config saves the trained model (``save_model``) under
    ``<artifacts_dir>/<run key>/``, and the student's options carry that run key.
    """
    from airlab.techniques import get_technique

    out: dict[str, RunPlan] = {}
    for p in plans:
        for name in p.config.techniques:
            tech = get_technique(name)
            if tech.prerequisite is None:
                continue
            # A teacher is an ordinary run (no generated code), whoever measures its student.
            pre = tech.prerequisite(p.config.model_copy(update={"measured_by": "trainer"}))
            key = pre.run_key
            if tech.prerequisite_option and p.config.options.get(tech.prerequisite_option) != key:
                raise AirlabError(f"run of arm '{p.arm}' names a different {name} prerequisite "
                                  "than its config gives", "plan the experiment again")
            if key not in out:
                out[key] = RunPlan(f"{p.experiment}.teacher", f"teacher.{p.arm}", p.seed, pre)
    return list(out.values())


def sweep_value(spec: ExperimentSpec, arm: Any, value: float,
                settings: Settings | None = None) -> float:
    """The option value a sweep point means for an arm (scaled from the arm's own value)."""
    assert spec.sweep is not None
    if spec.sweep.mode == "set":
        return value
    load_spec_techniques(spec, allow_unsafe=bool(settings and settings.unsafe_no_sandbox))
    base = resolve(workload=spec.workload, preset=spec.preset, dataset=spec.dataset,
                   budget=spec.budget, seed=spec.seeds[0], use=arm.use,
                   options={**spec.options, **arm.options}, settings=settings)
    own = getattr(base, spec.sweep.option, None)
    if own is None:
        own = base.options.get(spec.sweep.option)
    if isinstance(own, bool) or not isinstance(own, int | float):
        raise AirlabError(f"sweep mode 'scale' needs a numeric option, '{spec.sweep.option}' "
                          f"is {own!r}", "use mode: set")
    return float(own) * value
