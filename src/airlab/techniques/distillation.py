"""Knowledge distillation (area "distillation"): a student learns from a larger teacher.

``distill`` trains (or loads) a larger teacher of the same workload, data set and seed, then
trains the student on

    loss = kd_alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - kd_alpha) * cross-entropy(student, labels),         T = kd_temperature

with the teacher in eval mode under no_grad. The T^2 factor keeps the soft term's gradient
scale independent of T (Hinton et al., 2015).

Teacher (options):
* ``kd_teacher_preset`` (None = the student's preset) and ``kd_teacher_model`` (model-field
  overrides). With both None the teacher is the student's architecture scaled up:
  charlm: 1.5x depth and 1.5x width (rounded up to a multiple of 2 x n_head), so the "tiny"
  student (4 layers x 128) gets a 6 x 192 teacher (~3.4x the non-embedding parameters);
  vision: 2x every width (MLP hidden layers, CNN channels and head). The teacher's context is
  the student's (it must read the student's batches).
* ``kd_teacher_tokens``: teacher budget in the workload's unit (tokens or samples); None =
  2x the student's budget in the student's unit.
* Trainer fields (batch size, lr, schedule, precision, device) are the student's.

The teacher is trained once per teacher config (which holds workload, data set, seed and
every trainer field) with the ordinary trainer, and cached as
``<home>/teachers/<key>.pt`` plus a ``<key>.json`` sidecar with its measured cost. An
exclusive lock file serialises workers that need the same teacher (the second waits, then
loads), and files are written to a temp name and renamed, so a reader never sees half a file.
Its cost is always reported with the student: ``teacher_train_seconds``, ``teacher_flops``,
``teacher_val_loss``, ``teacher_params``, ``teacher_cached`` (1 = loaded from the cache) and
``teacher_forward_flops`` (the teacher's inference FLOPs spent during the student's training).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from airlab.config import BUDGET_UNITS, TrainConfig, config_key
from airlab.errors import AirlabError
from airlab.settings import get_settings
from airlab.techniques import Hooks, Technique, register

CACHE_VERSION = "kd-teacher-v1"  # bump when the teacher recipe changes: old files are ignored
WORKLOAD_UNIT = {"charlm": "tokens", "vision": "samples"}


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      hard_loss: torch.Tensor, temperature: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(p_teacher || p_student) + (1 - alpha) * hard_loss.

    Logits are (..., n_classes); the KL is summed over classes and averaged over every other
    position (tokens or samples), matching the mean cross-entropy it is mixed with.
    """
    n_cls = student_logits.size(-1)
    s = student_logits.float().reshape(-1, n_cls) / temperature  # (N, V)
    t = teacher_logits.float().reshape(-1, n_cls) / temperature  # (N, V)
    kl = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), log_target=True,
                  reduction="batchmean")
    return alpha * temperature**2 * kl + (1 - alpha) * hard_loss


# ---------------------------------------------------------------------------------------------
# The teacher's config.


def _round_up(x: float, multiple: int) -> int:
    return multiple * math.ceil(x / multiple)


def _charlm_teacher(config: TrainConfig, opts: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from airlab.models import PRESETS

    student = {**PRESETS[config.preset], **config.model}
    preset = opts.get("kd_teacher_preset") or config.preset
    over = opts.get("kd_teacher_model")
    # The default teacher inherits the student's architecture choices, but stays dense.
    model = ({k: v for k, v in config.model.items() if k != "mlp_rank"}
             if preset == config.preset else {})
    if over is None and preset == config.preset:
        heads = int(student.get("n_head", 4))
        over = {"n_layer": math.ceil(1.5 * int(student.get("n_layer", 4))),
                # A multiple of 2 * n_head keeps n_embd divisible and the head dim even (RoPE).
                "n_embd": _round_up(1.5 * int(student.get("n_embd", 128)), 2 * heads)}
        if student.get("mlp_hidden"):
            over["mlp_hidden"] = _round_up(1.5 * int(student["mlp_hidden"]), 8)
    model.update(over or {})
    ctx = int(student.get("block_size", 64))
    if int(model.get("block_size", ctx)) < ctx:
        raise AirlabError(f"teacher block_size={model['block_size']} is shorter than the "
                          f"student's context {ctx}", "leave block_size out of kd_teacher_model")
    model.setdefault("block_size", ctx)
    return preset, model


def _vision_teacher(config: TrainConfig, opts: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    import inspect

    from airlab.models import VISION_MODELS

    preset = opts.get("kd_teacher_preset") or config.preset
    over = opts.get("kd_teacher_model")
    if over is not None or preset != config.preset:
        return preset, dict(over or {})
    sig = inspect.signature(VISION_MODELS[preset]).parameters
    student = {k: p.default for k, p in sig.items() if p.default is not inspect.Parameter.empty}
    student.update(config.model)
    model = dict(config.model)
    for key in ("hidden", "channels"):  # every width doubles: MLP layers, CNN stages and head
        if key in student:
            v = student[key]
            model[key] = 2 * int(v) if isinstance(v, int) else [2 * int(w) for w in v]
    return preset, model


def teacher_config(config: TrainConfig) -> TrainConfig:
    """The teacher's TrainConfig: the student's trainer fields, a larger model, no techniques."""
    opts = config.options
    if config.workload not in WORKLOAD_UNIT:
        raise AirlabError(f"distill does not know workload '{config.workload}'")
    build = _charlm_teacher if config.workload == "charlm" else _vision_teacher
    preset, model = build(config, opts)
    d = config.to_dict()
    budget = opts.get("kd_teacher_tokens")
    for u in BUDGET_UNITS:
        d[u] = None
    if budget is None:
        d[config.budget_unit] = 2.0 * config.budget
    else:
        d[WORKLOAD_UNIT[config.workload]] = float(budget)
    d.update(preset=preset, model=model, techniques=(), options={}, eval_points=1,
             latency=False)
    return TrainConfig(**d)


# ---------------------------------------------------------------------------------------------
# The teacher cache.


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (blocking); without fcntl, no lock is taken and
    the atomic renames alone keep files whole (two workers may then both train)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the whole new one


def _n_classes(model: nn.Module) -> int:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features


def _build(spec: dict[str, Any]) -> nn.Module:
    """Rebuild an (untrained) teacher from the spec saved next to its weights."""
    if spec["workload"] == "charlm":
        from airlab.models import build_gpt

        return build_gpt(int(spec["vocab_size"]), spec["preset"], **spec["model"])
    from airlab.models import build_vision

    return build_vision(spec["preset"], tuple(spec["input_shape"]), int(spec["n_classes"]),
                        **spec["model"])


@contextlib.contextmanager
def _rng_preserved() -> Iterator[None]:
    """Training a teacher reseeds the global RNGs; restore them so the student's dropout stream
    is the same whether the teacher was trained now or loaded from the cache."""
    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        yield
    random.setstate(py)
    np.random.set_state(np_state)


def teacher_paths(tcfg: TrainConfig) -> tuple[Path, Path]:
    root = get_settings().home / "teachers"
    key = config_key({"version": CACHE_VERSION, "teacher": tcfg.to_dict()})
    return root / f"{key}.pt", root / f"{key}.json"


def obtain_teacher(tcfg: TrainConfig) -> tuple[nn.Module, dict[str, Any], bool]:
    """Load the teacher for ``tcfg`` from the cache, or train and cache it.

    Returns (teacher in eval mode with frozen parameters, its sidecar facts, cached?).
    """
    from airlab.run.trainer import resolve_device, train

    pt, meta_path = teacher_paths(tcfg)
    pt.parent.mkdir(parents=True, exist_ok=True)
    device = resolve_device(tcfg.device)
    with _exclusive(pt.with_suffix(".lock")):
        if pt.exists() and meta_path.exists():
            payload = torch.load(pt, map_location=device, weights_only=True)
            teacher = _build(payload["spec"]).to(device)
            teacher.load_state_dict(payload["state_dict"])
            meta, cached = json.loads(meta_path.read_text()), True
        else:
            with _rng_preserved():
                result = train(tcfg, keep_model=True)
            if result.state != "finished":
                raise AirlabError(f"distill: the teacher's training failed: {result.reason}",
                                  "lower the lr or change kd_teacher_model")
            teacher, m = result.model, result.metrics
            unit = WORKLOAD_UNIT[tcfg.workload]
            spec: dict[str, Any] = {"workload": tcfg.workload, "preset": tcfg.preset,
                                    "model": dict(tcfg.model)}
            if tcfg.workload == "charlm":
                spec["vocab_size"] = int(teacher.config.vocab_size)
            else:
                spec["input_shape"] = list(teacher.input_shape)
                spec["n_classes"] = _n_classes(teacher)
            meta = {"version": CACHE_VERSION, "config": tcfg.to_dict(), "unit": unit,
                    unit: m[unit], "train_seconds": m["train_seconds"], "flops": m["flops"],
                    "flops_per_unit": m["flops"] / max(1.0, m[unit]),
                    "val_loss": m["val_loss"], "params": m["params"], "steps": m["steps"],
                    "info": {k: v for k, v in result.info.items() if k != "provenance"}}
            _atomic_write(meta_path, lambda p: p.write_text(json.dumps(meta, indent=1)))
            state = {k: v.detach().cpu() for k, v in teacher.state_dict().items()}
            _atomic_write(pt, lambda p: torch.save({"spec": spec, "state_dict": state}, p))
            cached = False
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher, meta, cached


# ---------------------------------------------------------------------------------------------


class DistillHooks(Hooks):
    """Gets the teacher in on_model; mixes its soft targets into the loss."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.temperature = float(self.options.get("kd_temperature", 2.0))
        self.alpha = float(self.options.get("kd_alpha", 0.5))
        if not self.temperature > 0 or not 0 <= self.alpha <= 1:
            raise AirlabError(f"kd_temperature={self.temperature} must be > 0 and "
                              f"kd_alpha={self.alpha} in [0, 1]")
        self.teacher: nn.Module | None = None
        self.meta: dict[str, Any] = {}
        self.cached = False
        self.units_seen = 0  # tokens/samples the teacher has scored during student training
        self._capture = False
        self._student_out: torch.Tensor | None = None

    def on_model(self, model: nn.Module) -> nn.Module:
        cfg = TrainConfig(**self.config)
        self.teacher, self.meta, self.cached = obtain_teacher(teacher_config(cfg))
        device = next(model.parameters()).device
        self.teacher.to(device)
        # Capture the student's logits from the base loss's own forward pass (no second
        # forward), so a loss wrapped by an earlier technique is kept as the hard term.
        model.register_forward_hook(self._hook)
        return model

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self._capture:
            self._student_out = output[0] if isinstance(output, tuple) else output

    def wrap_loss(self, loss_fn: Callable[..., Any]) -> Callable[..., Any]:
        per_sample = self.config.get("workload") != "charlm"

        def kd_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            self._capture = True
            try:
                hard = loss_fn(model, x, y)
            finally:
                self._capture = False
            student, self._student_out = self._student_out, None
            if student is None:
                raise AirlabError("distill: the student's forward pass was not seen")
            assert self.teacher is not None
            with torch.no_grad():
                out = self.teacher(x)
                teacher = out[0] if isinstance(out, tuple) else out  # (B, T, V) or (B, K)
            self.units_seen += int(x.shape[0] if per_sample else x.numel())
            return distillation_loss(student, teacher, hard, self.temperature, self.alpha)

        return kd_loss

    def extra_flops_per_unit(self, model: Any, optimizer: Any, task: Any) -> float:
        # The teacher scores every training token/sample once: one inference pass, which is a
        # third of the training FLOPs per unit the teacher's own run recorded.
        return float(self.meta["flops_per_unit"]) / 3

    def on_finish(self, model: nn.Module, task: Any) -> dict[str, float]:
        m = self.meta
        return {
            "teacher_train_seconds": float(m["train_seconds"]),
            "teacher_flops": float(m["flops"]),
            "teacher_val_loss": float(m["val_loss"]),
            "teacher_params": float(m["params"]),
            "teacher_cached": 1.0 if self.cached else 0.0,
            # Training FLOPs are 3x forward, so one inference pass is flops_per_unit / 3.
            "teacher_forward_flops": float(m["flops_per_unit"]) / 3 * self.units_seen,
        }


register(Technique(
    "distill", "distillation",
    "knowledge distillation from a larger teacher (trained once per config/seed, cached)",
    hooks=DistillHooks,
    params={"kd_teacher_preset": None, "kd_teacher_model": None, "kd_teacher_tokens": None,
            "kd_temperature": 2.0, "kd_alpha": 0.5},
))
