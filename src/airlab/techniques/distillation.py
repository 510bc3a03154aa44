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

The teacher is a planned run of its own (``airlab.plan.prerequisites``): its config
(``teacher_config``: workload, data set, seed and every trainer field of the student, a larger
model, ``save_model``) is trained once by the same trainer, stored under its own run key and
reused by every arm that needs it; its weights and cost land in
``<artifacts_dir>/<teacher run key>/``. The student's options carry that run key
(``teacher_key``, so it is part of the student's run key) and the student loads the weights from
there; if they are missing the student fails with a clear reason. The teacher's cost is always
reported with the student: ``teacher_train_seconds``, ``teacher_flops``, ``teacher_val_loss``,
``teacher_params`` and ``teacher_forward_flops`` (the teacher's inference FLOPs spent during the
student's training, also counted in the student's ``flops``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from airlab.config import BUDGET_UNITS, TrainConfig
from airlab.errors import AirlabError
from airlab.models.io import has_trained, load_trained
from airlab.techniques.base import Hooks, Option, Technique, register

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
    """The teacher's TrainConfig: the student's trainer fields, a larger model, no techniques,
    saving its trained weights (``save_model``) for the students."""
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
    d.update(preset=preset, model=model, techniques=(), options={}, code={}, eval_points=1,
             latency=False, max_steps=None, save_model=True)
    return TrainConfig(**d)


# ---------------------------------------------------------------------------------------------


class DistillHooks(Hooks):
    """Loads the teacher run's weights in on_model; mixes its soft targets into the loss."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.temperature = float(self.options.get("kd_temperature", 2.0))
        self.alpha = float(self.options.get("kd_alpha", 0.5))
        self.teacher: nn.Module | None = None
        self.meta: dict[str, Any] = {}
        self.units_seen = 0  # tokens/samples the teacher has scored during student training
        self._capture = False
        self._student_out: torch.Tensor | None = None

    def on_model(self, model: nn.Module) -> nn.Module:
        key = self.options.get("teacher_key")
        root = self.context.artifacts_dir
        if not key or root is None:
            raise AirlabError("distill: this run does not know where its teacher is",
                              "resolve the config with airlab.plan.resolve and run it with the "
                              "lab's settings")
        folder = root / str(key)
        if not has_trained(folder):
            raise AirlabError(f"distill: the teacher's weights (run {key}) are missing at "
                              f"{folder}", "run the experiment's prerequisites first "
                              "(airlab run does; in Python: airlab.plan.prerequisites)")
        device = next(model.parameters()).device
        self.teacher, self.meta = load_trained(folder, device)
        self.teacher.eval()
        self.teacher.requires_grad_(False)
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
            # Training FLOPs are 3x forward, so one inference pass is flops_per_unit / 3.
            "teacher_forward_flops": float(m["flops_per_unit"]) / 3 * self.units_seen,
        }


register(Technique(
    "distill", "distillation",
    "knowledge distillation from a larger teacher (its own planned run, once per config/seed)",
    hooks=DistillHooks,
    options={
        "kd_teacher_preset": Option(None, str, help="teacher preset (None: the student's)"),
        "kd_teacher_model": Option(None, dict, help="teacher model-field overrides"),
        "kd_teacher_tokens": Option(None, float, 0, 1e15, low_open=True,
                                    help="teacher budget in the workload's unit (None: 2x)"),
        "kd_temperature": Option(2.0, float, 0, 100, low_open=True),
        "kd_alpha": Option(0.5, float, 0, 1, help="weight of the soft (teacher) term"),
        "teacher_key": Option(None, str, help="the teacher run's key (set by resolve)"),
    },
    prerequisite=teacher_config, prerequisite_option="teacher_key",
))
