"""The one training loop. Techniques hook into it; metrics are defined in airlab.measure.

Read it top to bottom: set up (seed, task, optimizer) -> loop (schedule, step, clip, hooks,
divergence check, evaluation at fixed budget marks) -> final metrics.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from airlab import measure
from airlab.config import TrainConfig
from airlab.errors import AirlabError, lookup
from airlab.run.optim import OPTIMIZERS
from airlab.run.provenance import provenance
from airlab.run.seeding import seed_everything
from airlab.run.workloads import Task, get_workload
from airlab.techniques import get_technique

Event = dict[str, Any]


@dataclass
class RunResult:
    state: str  # "finished" or "failed"
    reason: str | None
    metrics: dict[str, float]
    curve: list[dict[str, float]]
    info: dict[str, Any] = field(default_factory=dict)  # provenance and dataset facts
    # The trained model, only with train(..., keep_model=True); never serialized.
    model: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, "metrics": self.metrics,
                "curve": self.curve, "info": self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        return cls(d["state"], d.get("reason"), d.get("metrics", {}), d.get("curve", []),
                   d.get("info", {}))


class RunFailed(Exception):
    """The run cannot go on (diverged, NaN); the partial curve is kept."""


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule as a function of step and budget progress (0..1).


def lr_at(cfg: TrainConfig, step: int, progress: float, warm_progress: float) -> float:
    """Linear warmup over ``warmup_steps``, then the schedule over the rest of the budget."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    frac = min(1.0, max(0.0, (progress - warm_progress) / max(1e-12, 1 - warm_progress)))
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


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if cfg.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------------------------------------


def train(config: TrainConfig, on_event: Callable[[Event], None] | None = None, *,
          keep_model: bool = False) -> RunResult:
    """Train one run to its budget and measure it. Divergence returns a failed result.

    ``keep_model=True`` also returns the trained model as ``RunResult.model`` (e.g. a
    distillation teacher); it changes nothing else.
    """
    emit = on_event or (lambda e: None)
    device = resolve_device(config.device)
    if config.precision == "fp16" and device.type != "cuda":
        raise AirlabError("precision fp16 needs a CUDA GPU (loss scaling)",
                          "use --precision bf16 on CPU")
    seed_everything(config.seed)
    wl = get_workload(config.workload)
    wl.check(config)
    cfg_dict = config.to_dict()
    techniques = [h for t in config.techniques if (h := get_technique(t).create(cfg_dict))]

    t_setup = time.perf_counter()
    task: Task = wl.setup(config, device)
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
    last_emit = time.perf_counter()
    reason: str | None = None
    try:
        while True:
            progress = (train_s if by_time else consumed) / total
            if progress >= 1.0:
                break
            t0 = time.perf_counter()
            lr = lr_at(config, step, progress, warm_progress)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = task.next_batch()
            with _autocast(config, device):
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
            loss_val = float(loss.detach())
            train_s += time.perf_counter() - t0
            if step == config.warmup_steps:
                warm_progress = (train_s if by_time else consumed) / total

            if not math.isfinite(loss_val):
                raise RunFailed(f"diverged at step {step}: loss is {loss_val}")
            if initial_loss is None:
                initial_loss = loss_val
            elif loss_val > config.diverge_factor * initial_loss:
                raise RunFailed(f"diverged at step {step}: loss {loss_val:.3g} > "
                                f"{config.diverge_factor:g} x initial {initial_loss:.3g}")
            recent.append(loss_val)
            if len(recent) > 50:
                recent.pop(0)

            done = train_s if by_time else consumed
            if done >= next_mark:
                record()
                next_mark = next(marks, math.inf)
            now = time.perf_counter()
            if now - last_emit > 0.5:
                last_emit = now
                emit({"type": "step", "step": step, "progress": min(1.0, done / total),
                      "loss": loss_val, "lr": lr})
        if not curve or curve[-1]["step"] != step:
            record()  # a time budget can end between marks
    except RunFailed as e:
        reason = str(e)

    metrics = _final_metrics(task, curve, consumed, step, train_s, eval_s, device)
    if reason is None:
        for t in techniques:
            extra = t.on_finish(task.model, task)
            if "val_loss" in extra:
                metrics.setdefault("val_loss_before", metrics["val_loss"])
                if "val_bpc" in metrics and "val_bpc" not in extra:
                    extra["val_bpc"] = extra["val_loss"] / math.log(2)
            metrics.update(extra)
        # A technique may have replaced task.model by its deployable form (quantized, shrunk):
        # size and latency are measured on what would be shipped. `params` stays the trained
        # architecture's count; `params_deployed` counts the float parameters left in the
        # deployable model (integer weights of a quantized layer are buffers, not parameters).
        metrics["params_deployed"] = float(measure.count_params(task.model))
        metrics["model_bytes"] = float(measure.model_bytes(task.model))
        if config.latency:
            x, _ = task.next_batch()
            metrics.update(measure.latency_metrics(task.model, x))
    emit({"type": "done", "step": step, "progress": 1.0})
    result = RunResult("failed" if reason else "finished", reason, metrics, curve, info)
    if keep_model:
        result.model = task.model
    return result


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
    energy, source = measure.energy_kwh_est(train_s, device, torch.get_num_threads())
    m["energy_kwh_est"] = energy
    task.info["energy_source"] = source
    return m


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with n intra-op threads (restored afterwards)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
