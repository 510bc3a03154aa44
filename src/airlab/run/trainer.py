"""The one training loop. Techniques hook into it; metrics are defined in airlab.measure.

Read it top to bottom: set up (seed, task, optimizer) -> loop (schedule, step, clip, hooks,
divergence check, evaluation at fixed budget marks) -> final metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from airlab import energy, measure
from airlab.config import TrainConfig
from airlab.errors import AirlabError, lookup
from airlab.models.io import save_trained
from airlab.models.precision import autocast
from airlab.run import pathology
from airlab.run.optim import OPTIMIZERS
from airlab.run.provenance import provenance
from airlab.run.result import RunResult
from airlab.run.seeding import seed_everything
from airlab.run.workloads import Task, get_workload
from airlab.techniques import HookContext, Hooks, get_technique, load_techniques

if TYPE_CHECKING:
    from airlab.settings import Settings

Event = dict[str, Any]
TaskSetup = Callable[[TrainConfig, torch.device, "Settings"], Task]

# Loss values are read back to the host (a device sync) once every SYNC_EVERY steps, at
# evaluation marks and for progress events, not every step: divergence is still caught within
# SYNC_EVERY steps and reported with the exact step it happened at.
SYNC_EVERY = 16


class RunFailed(Exception):
    """The run cannot go on (diverged, NaN); the partial curve is kept."""


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule as a function of step and budget progress (0..1).


def lr_at(cfg: TrainConfig, step: int, progress: float, warm_progress: float) -> float:
    """Linear warmup over ``warmup_steps``, then the schedule up to ``horizon`` (a fraction of
    the budget), then the schedule's final rate for the rest."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = cfg.horizon - warm_progress
    frac = 1.0 if span <= 1e-12 else min(1.0, max(0.0, (progress - warm_progress) / span))
    if cfg.schedule == "cosine":
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))
    # warmup-stable-decay: hold, then decay linearly over the last 20% of the budget.
    return cfg.lr if frac < 0.8 else cfg.lr + (cfg.min_lr - cfg.lr) * (frac - 0.8) / 0.2


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AirlabError(f"device '{name}' asked for, but no CUDA GPU is available",
                          "use --device cpu or --device auto")
    return dev


# ---------------------------------------------------------------------------------------------


def train(config: TrainConfig, on_event: Callable[[Event], None] | None = None, *,
          settings: Settings | None = None, stop_at: float | None = None,
          task_setup: TaskSetup | None = None) -> RunResult:
    """Train one run to its budget and measure it. Divergence returns a failed result.

    ``settings`` (where data, caches, artifacts and extra techniques live) is passed down from
    the edge; a library call given none reads them here, once. ``stop_at`` (epoch seconds,
    ``time.time()``; a time box's deadline, not part of the run key): past it, training stops
    at the next loss sync, evaluates once and returns state "incomplete" with its curve.
    ``task_setup``: where the model and data come from (default: the workload's ``setup``);
    a run of generated code trains on batches served by, and evaluated in, a trusted process
    (:mod:`airlab.run.child`), through this same loop.
    """
    emit = on_event or (lambda e: None)
    if settings is None:  # called as a library entry point with none: this is the edge
        from airlab.settings import get_settings

        settings = get_settings()
    load_techniques(settings.techniques_dir)  # the same registry as the parent that planned it
    for name, planned in config.code.items():
        if get_technique(name).source_hash != planned:
            raise AirlabError(f"technique '{name}' changed since this run was planned "
                              f"(source {planned} -> {get_technique(name).source_hash})",
                              "plan the experiment again: changed code is a new run")
    device = resolve_device(config.device)
    if config.precision == "fp16" and device.type != "cuda":
        raise AirlabError("precision fp16 needs a CUDA GPU (loss scaling)",
                          "use --precision bf16 on CPU")
    seed_everything(config.seed)
    wl = get_workload(config.workload)
    wl.check(config)
    cfg_dict = config.to_dict()
    context = HookContext(artifacts_dir=settings.artifacts_dir, device=str(device))
    techniques = [h for t in config.techniques
                  if (h := get_technique(t).create(cfg_dict, context))]

    t_setup = time.perf_counter()
    task: Task = (task_setup or wl.setup)(config, device, settings)
    model = task.model
    for t in techniques:
        model = t.on_model(model) or model
    task.model = model
    build = lookup(OPTIMIZERS, config.optimizer, "optimizer")
    opt = build(model, **config.model_dump(exclude={"model", "options", "techniques"}))
    for t in techniques:
        opt = t.on_optimizer(opt, model) or opt
    loss_fn = task.loss_fn
    for t in techniques:
        loss_fn = t.wrap_loss(loss_fn)
    extra_flops = sum(t.extra_flops_per_unit(model, opt, task) for t in techniques)
    task.flops_per_unit += extra_flops
    scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
    setup_seconds = time.perf_counter() - t_setup

    info: dict[str, Any] = {**task.info, "provenance": provenance(device),
                            "setup_seconds": setup_seconds,
                            "flops_per_unit": task.flops_per_unit,
                            "extra_flops_per_unit": extra_flops}
    unit = task.unit
    if config.budget_unit == "epochs":
        total = config.budget * task.train_size
    elif config.budget_unit == "seconds":
        total = config.budget
    else:
        if config.budget_unit != unit:
            raise AirlabError(f"workload '{config.workload}' counts {unit}, not "
                              f"{config.budget_unit}", f"give the budget as {unit} or seconds")
        total = config.budget
    by_time = config.budget_unit == "seconds"
    on_cuda = device.type == "cuda"
    marks = iter([total * k / config.eval_points for k in range(1, config.eval_points + 1)])
    next_mark = next(marks)

    curve: list[dict[str, float]] = []
    consumed, step, train_s, eval_s = 0, 0, 0.0, 0.0
    recent: list[float] = []
    initial_loss: float | None = None
    warm_progress = 0.0

    def record() -> dict[str, float]:
        nonlocal eval_s
        t0 = time.perf_counter()
        point = {"step": step, unit: consumed, "train_seconds": train_s,
                 "flops": task.flops_per_unit * consumed, **task.evaluate(model)}
        if recent:
            point["train_loss"] = sum(recent) / len(recent)
        eval_s += time.perf_counter() - t0
        curve.append(point)
        emit({"type": "eval", **point})
        return point

    model.train()
    record()  # step 0: the untrained model anchors the curve for time-to-target
    measure.reset_peak_memory(device)
    meter = energy.EnergyMeter(device, torch.get_num_threads())
    meter.start()
    last_emit = time.perf_counter()
    reason: str | None = None
    cut = False  # stopped by the time box (stop_at) before the budget was spent
    pending: list[torch.Tensor] = []  # detached losses not yet read back to the host
    loss_val = math.nan

    def sync_losses() -> None:
        """Read the pending losses back in one sync; check each step for divergence."""
        nonlocal initial_loss, loss_val
        if not pending:
            return
        values = torch.stack(pending).float().tolist()
        first_step = step - len(values) + 1
        pending.clear()
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise RunFailed(f"diverged at step {first_step + i}: loss is {v}")
            if initial_loss is None:
                initial_loss = v
            elif v > config.diverge_factor * initial_loss:
                raise RunFailed(f"diverged at step {first_step + i}: loss {v:.3g} > "
                                f"{config.diverge_factor:g} x initial {initial_loss:.3g}")
            recent.append(v)
        del recent[:-50]
        loss_val = values[-1]

    try:
        while True:
            progress = (train_s if by_time else consumed) / total
            if progress >= 1.0 or (config.max_steps is not None and step >= config.max_steps):
                break
            t0 = time.perf_counter()
            lr = lr_at(config, step, progress, warm_progress)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = task.next_batch()
            with autocast(config.precision, device):
                loss = loss_fn(model, x, y)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            for t in techniques:
                t.after_backward(model, step)
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            consumed += task.units_per_step
            for t in techniques:
                t.after_step(model, step, progress)
            pending.append(loss.detach())
            if len(pending) >= SYNC_EVERY:
                sync_losses()
                # The time box is looked at only here, at a sync: no extra per-step cost.
                cut = stop_at is not None and time.time() >= stop_at
            if on_cuda:  # kernels run asynchronously: the step's time is known once they end
                torch.cuda.synchronize(device)
            train_s += time.perf_counter() - t0
            if step == config.warmup_steps:
                warm_progress = (train_s if by_time else consumed) / total

            done = train_s if by_time else consumed
            if done >= next_mark:
                sync_losses()  # a diverged run is never evaluated, as before
                record()
                next_mark = next(marks, math.inf)
            now = time.perf_counter()
            if now - last_emit > 0.5:
                sync_losses()
                last_emit = now
                emit({"type": "step", "step": step, "progress": min(1.0, done / total),
                      "loss": loss_val, "lr": lr, unit: consumed, "train_seconds": train_s})
            if cut:
                if done < total and (config.max_steps is None or step < config.max_steps):
                    break
                cut = False  # the budget was spent at this very step: a finished run
        sync_losses()
        if not curve or curve[-1]["step"] != step:
            record()  # a time budget can end between marks
    except RunFailed as e:
        reason = str(e)
    kwh, energy_source = meter.stop(train_s)

    metrics = _final_metrics(task, curve, consumed, step, train_s, eval_s, device)
    metrics["energy_kwh_est"] = kwh
    info["energy_source"] = energy_source  # in info itself: it is stored with the run
    if cut and reason is None:
        # Cut by the time box: its curve and metrics are kept, but it is no finished run:
        # no deploy step, no saved weights (a teacher cut short must not be reused), no sample.
        done_units = train_s if by_time else consumed
        what = "seconds" if by_time else unit
        reason = (f"time box: stopped at {done_units:,.0f} of {total:,.0f} {what}")
        emit({"type": "done", "step": step, "progress": min(1.0, done_units / total),
              unit: consumed, "train_seconds": train_s})
        return RunResult("incomplete", reason, metrics, curve, info)
    if reason is None:
        trained = task.model
        for t in techniques:  # deploy steps return the model that would be shipped
            task.model = t.deploy(task.model, task) or task.model
        evaluated = set(metrics)
        if any(type(t).deploy is not Hooks.deploy for t in techniques):
            # The trainer, not the technique, measures the deployed model; the trained model's
            # figures stay beside it as *_before, and quality_drop is their difference.
            for k, v in (task.evaluate_deployed or task.evaluate)(task.model).items():
                metrics[f"{k}_before"] = metrics.get(k, math.nan)
                metrics[k] = float(v)
            metrics["quality_drop"] = metrics["val_loss"] - metrics["val_loss_before"]
            evaluated = set(metrics)
        for t in techniques:
            extra = t.on_finish(trained, task)
            # A technique never reports quality itself: eval metrics are the trainer's.
            metrics.update({k: float(v) for k, v in extra.items()
                            if k not in evaluated and not k.startswith("val_")})
        # A technique may have replaced task.model by its deployable form (quantized, shrunk):
        # size and latency are measured on what would be shipped. `params` stays the trained
        # architecture's count; `params_deployed` counts the float parameters left in the
        # deployable model (integer weights of a quantized layer are buffers, not parameters).
        metrics["params_deployed"] = float(measure.count_params(task.model))
        metrics["model_bytes"] = float(measure.model_bytes(task.model))
        if config.latency:
            x, _ = task.next_batch()
            metrics.update(measure.latency_metrics(task.model, x))
        if config.save_model:
            # Weights and cost by run key, for runs that build on this one (a teacher).
            save_trained(settings.artifacts_dir / config.run_key, trained, task.build, {
                "run_key": config.run_key, "unit": unit, unit: metrics[unit],
                "train_seconds": metrics["train_seconds"], "flops": metrics["flops"],
                "flops_per_unit": task.flops_per_unit, "val_loss": metrics["val_loss"],
                "params": metrics["params"], "steps": metrics["steps"]})
        # Pathologies a loss does not show, checked last: the sample draws from its own
        # generator and the model is left as it was, so nothing above changes with it.
        flags, info["overfit"] = pathology.overfit_metrics(curve)
        metrics.update(flags)
        if task.train_eval is not None:  # the trained model, measured as the held-out loss is
            metrics["train_eval_loss"] = float(task.train_eval(trained))
        flags, implausible = pathology.plausibility(
            curve, metrics, chance_loss=task.chance_loss,
            floor_bpc=task.floor_bpc() if task.floor_bpc is not None else None,
            warmup_steps=config.warmup_steps)
        metrics.update(flags)
        if implausible:
            info["implausible"] = implausible
        if task.sample is not None:
            t0 = time.perf_counter()
            try:
                sample = task.sample(task.model)  # the deployed model: what would be shipped
            except RuntimeError as e:
                # Non-finite logits (multinomial refuses them): the run's own metrics already
                # show a broken model; a diagnostic must not turn a finished run into a crash.
                info["sample"] = {"error": f"{type(e).__name__}: {e}"[:300]}
            else:
                metrics.update(pathology.sample_metrics(sample))
                info["sample"] = {"prompt": sample.prompt, "text": sample.text,
                                  "seconds": time.perf_counter() - t0}
    emit({"type": "done", "step": step, "progress": 1.0, unit: consumed,
          "train_seconds": train_s})
    return RunResult("failed" if reason else "finished", reason, metrics, curve, info)


def _final_metrics(task: Task, curve: list[dict[str, float]], consumed: int, step: int,
                   train_s: float, eval_s: float, device: torch.device) -> dict[str, float]:
    unit = task.unit
    last = curve[-1] if curve else {}
    m: dict[str, float] = {k: float(v) for k, v in last.items()
                           if k.startswith("val_") or k == "train_loss"}
    finite = [p["val_loss"] for p in curve if math.isfinite(p.get("val_loss", math.nan))]
    if finite:
        m["best_val_loss"] = min(finite)
    m.update({
        "steps": float(step),
        unit: float(consumed),
        "train_seconds": train_s,
        "eval_seconds": eval_s,
        f"{unit}_per_s": consumed / train_s if train_s > 0 else 0.0,
        "flops": task.flops_per_unit * consumed,
        "peak_mem_mb": measure.peak_memory_mb(device),
        "params": float(measure.count_params(task.model)),
    })
    return m
