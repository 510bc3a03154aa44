"""Resolve configs and plan an experiment: spec -> one RunPlan per arm x seed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from airlab.config import BUDGET_UNITS, TRAIN_FIELDS, TrainConfig
from airlab.errors import AirlabError, did_you_mean
from airlab.run.workloads import get_workload
from airlab.techniques import TECHNIQUES, get_technique

if TYPE_CHECKING:
    from airlab.spec import ExperimentSpec


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
    wl = get_workload(workload)
    model_fields = wl.model_fields(preset)
    tech_params: set[str] = set()
    for t in techniques:
        tech_params |= set(get_technique(t).params)
    out: dict[str, Any] = {"model": {}, "options": {}}
    for key, value in options.items():
        if key in ("model", "options") and isinstance(value, Mapping):
            out[key].update(value)
        elif key in TRAIN_FIELDS:
            out[key] = value
        elif key in model_fields:
            out["model"][key] = value
        elif key in tech_params:
            out["options"][key] = value
        else:
            known = set(TRAIN_FIELDS) | model_fields | {
                p for t in TECHNIQUES.values() for p in t.params
            }
            raise AirlabError(f"unknown option '{key}'", did_you_mean(key, known))
    return out


def resolve(
    *,
    workload: str = "charlm",
    preset: str | None = None,
    dataset: str | None = None,
    budget: Mapping[str, float],
    seed: int = 42,
    use: Iterable[str] = (),
    options: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Build the full TrainConfig for one run.

    Precedence (later wins): workload preset defaults < technique switches < explicit options.
    """
    wl = get_workload(workload)
    preset = preset or wl.default_preset
    use = tuple(use)
    for t in use:
        tech = get_technique(t)
        if workload not in tech.workloads:
            raise AirlabError(
                f"technique '{t}' does not apply to workload '{workload}'",
                f"it works with: {', '.join(tech.workloads)}",
            )
    for unit in budget:
        if unit not in BUDGET_UNITS:
            raise AirlabError(f"unknown budget unit '{unit}'", did_you_mean(unit, BUDGET_UNITS))
    explicit = split_options(workload, preset, options or {}, use)
    cfg: dict[str, Any] = {
        "workload": workload,
        "preset": preset,
        "dataset": dataset or wl.default_dataset,
        "seed": int(seed),
        **wl.defaults(preset),
        **{k: float(v) for k, v in budget.items()},
        "model": {},
        "options": {},
    }
    # Technique defaults for their own options, then their config changes, then explicit options.
    for t in use:
        tech = get_technique(t)
        cfg["options"] = {**tech.params, **cfg["options"]}
    cfg = _merge(cfg, {k: v for k, v in explicit.items() if k not in ("model",)})
    cfg["model"] = dict(explicit["model"])
    for t in use:
        cfg = _merge(cfg, get_technique(t).configure(cfg))
    cfg = _merge(cfg, explicit)  # explicit options beat what a switch set
    cfg["techniques"] = use
    _scale_lr(cfg)
    try:
        config = TrainConfig(**cfg)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "config"
        raise AirlabError(f"invalid {where}: {err['msg']}") from None
    wl.check(config)
    return config


def _scale_lr(cfg: dict[str, Any]) -> None:
    """Apply the stated batch-size rule to lr and min_lr, recording the reference batch."""
    rule = cfg.get("lr_scaling", "none")
    if rule == "none":
        return
    base = cfg.get("base_batch_size")
    if not base:
        raise AirlabError(f"lr_scaling={rule} needs base_batch_size",
                          "e.g. options: {lr_scaling: sqrt, base_batch_size: 12}")
    k = 1.0 if rule == "linear" else 0.5
    factor = (float(cfg["batch_size"]) / float(base)) ** k
    cfg["lr"] = float(cfg["lr"]) * factor
    cfg["min_lr"] = float(cfg.get("min_lr", 0.0)) * factor


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


def plan_runs(spec: ExperimentSpec) -> list[RunPlan]:
    """One RunPlan per arm x seed; all arms share the seeds so comparisons can be paired.

    Runs are identified by (arm, run key): two arms with the same config (an A/A check) both run.
    """
    if spec.sweep is not None and not spec.sweep_chosen:
        raise AirlabError(f"experiment '{spec.name}' has a sweep that has not been run",
                          "run it with run_experiment / airlab run, which runs the sweep first")
    plans = []
    for arm in spec.all_arms:
        chosen = ({spec.sweep.option: sweep_value(spec, arm, spec.sweep_chosen[arm.name])}
                  if spec.sweep is not None else {})
        for seed in spec.seeds:
            cfg = resolve(workload=spec.workload, preset=spec.preset, dataset=spec.dataset,
                          budget=spec.budget, seed=seed, use=arm.use,
                          options={**spec.options, **arm.options, **chosen})
            plans.append(RunPlan(spec.name, arm.name, seed, cfg))
    return plans


def sweep_value(spec: ExperimentSpec, arm: Any, value: float) -> float:
    """The option value a sweep point means for an arm (scaled from the arm's own value)."""
    assert spec.sweep is not None
    if spec.sweep.mode == "set":
        return value
    base = resolve(workload=spec.workload, preset=spec.preset, dataset=spec.dataset,
                   budget=spec.budget, seed=spec.seeds[0], use=arm.use,
                   options={**spec.options, **arm.options})
    own = getattr(base, spec.sweep.option, None)
    if own is None:
        own = base.options.get(spec.sweep.option)
    if not isinstance(own, int | float):
        raise AirlabError(f"sweep mode 'scale' needs a numeric option, '{spec.sweep.option}' "
                          f"is {own!r}", "use mode: set")
    return float(own) * value
