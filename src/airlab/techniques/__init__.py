"""Techniques: named switches (`--use_<name>`) that change a run.

A technique is a small object with optional hooks. The trainer calls the hooks at fixed points;
a technique never decides how metrics are computed. `TECHNIQUES` is the registry: a plain dict.

Hook order in one run: ``configure`` (while the config is resolved, before the run key is
computed) -> ``on_model`` (after the model is built) -> ``on_optimizer`` -> ``wrap_loss`` ->
each step: ``after_backward`` (before clipping), ``after_step`` -> ``on_finish`` (metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airlab.errors import lookup


class Hooks:
    """Per-run behaviour of a technique. A fresh instance is made for every run, so state kept
    on ``self`` (masks, a teacher model, statistics) never leaks between runs.

    ``config`` is the run's resolved config as a dict; the technique's own options are in
    ``config["options"]`` (declared with defaults in ``Technique.params``).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.options: dict[str, Any] = config.get("options", {})

    def on_model(self, model: Any) -> Any:
        """After the model is built (and moved to its device); return the model to train."""
        return model

    def on_optimizer(self, optimizer: Any, model: Any) -> Any:
        return optimizer

    def wrap_loss(self, loss_fn: Callable[..., Any]) -> Callable[..., Any]:
        """Return a loss function ``(model, x, y) -> loss`` (e.g. add a distillation term)."""
        return loss_fn

    def extra_flops_per_unit(self, model: Any, optimizer: Any, task: Any) -> float:
        """Training FLOPs per token/sample this technique adds beyond the model's own forward
        and backward (a teacher's forward pass, an optimizer's matrix iterations). Counted in
        ``flops`` and so in every FLOPs-based efficiency ratio: no cost is hidden."""
        return 0.0

    def after_backward(self, model: Any, step: int) -> None:
        """Gradients are ready (before clipping and the optimizer step)."""

    def after_step(self, model: Any, step: int, progress: float) -> None:
        """After the optimizer step; ``progress`` is the budget fraction used (0..1)."""

    def on_finish(self, model: Any, task: Any) -> dict[str, float]:
        """After training. ``task`` has evaluate(model), next_batch(), loss_fn, info, unit.

        Returned metrics are stored with the run; a returned ``val_loss`` replaces the trained
        model's (e.g. the quantized model's loss) and the trainer keeps the original as
        ``val_loss_before`` so the quality drop is always visible.
        """
        return {}


@dataclass(frozen=True)
class Technique:
    """A registered switch (`--use_<name>`): config changes and/or per-run hooks."""

    name: str
    area: str
    help: str
    # Config overrides applied when the switch is on; a callable gets the config resolved so far.
    overrides: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]] = field(
        default_factory=dict
    )
    workloads: tuple[str, ...] = ("charlm", "vision")
    # Options this technique reads from config["options"], with defaults (e.g. {"sparsity": 0.5}).
    params: dict[str, Any] = field(default_factory=dict)
    hooks: type[Hooks] | None = None  # None: a pure config switch

    def configure(self, config: dict[str, Any]) -> dict[str, Any]:
        """Return the config overrides this technique makes (model fields go under 'model')."""
        ov = self.overrides(config) if callable(self.overrides) else self.overrides
        return dict(ov)

    def create(self, config: dict[str, Any]) -> Hooks | None:
        return self.hooks(config) if self.hooks else None


TECHNIQUES: dict[str, Technique] = {}


def register(t: Technique) -> Technique:
    if t.name in TECHNIQUES:
        raise ValueError(f"technique '{t.name}' registered twice")
    TECHNIQUES[t.name] = t
    return t


def get_technique(name: str) -> Technique:
    return lookup(TECHNIQUES, name, "technique (--use_<name> switch)")


def _gqa(config: dict[str, Any]) -> dict[str, Any]:
    n_head = int(config.get("model", {}).get("n_head", 4))
    return {"model": {"n_kv_head": max(1, n_head // 2)}}


def _local(config: dict[str, Any]) -> dict[str, Any]:
    block = int(config.get("model", {}).get("block_size", 64))
    return {"model": {"window": max(1, block // 4)}}


# Architecture switches: pure config changes of the char GPT (positions, norms, attention, MLP).
for _t in (
    Technique("rope", "positions", "rotary position embeddings instead of learned positions",
              {"model": {"positions": "rope"}}, ("charlm",)),
    Technique("nope", "positions", "no position embeddings (causal mask only)",
              {"model": {"positions": "none"}}, ("charlm",)),
    Technique("rmsnorm", "normalization", "RMSNorm instead of LayerNorm",
              {"model": {"norm": "rmsnorm"}}, ("charlm",)),
    Technique("qk_norm", "normalization", "RMS-normalize queries and keys per head",
              {"model": {"qk_norm": True}}, ("charlm",)),
    Technique("relu2", "efficient_arch", "squared-ReLU MLP activation",
              {"model": {"activation": "relu2"}}, ("charlm",)),
    Technique("swiglu", "efficient_arch", "SwiGLU gated MLP (hidden 8/3 of width)",
              {"model": {"activation": "swiglu"}}, ("charlm",)),
    Technique("gqa", "efficient_arch", "grouped-query attention with half as many KV heads",
              _gqa, ("charlm",)),
    Technique("mqa", "efficient_arch", "multi-query attention (one KV head)",
              {"model": {"n_kv_head": 1}}, ("charlm",)),
    Technique("local_attn", "attention", "sliding-window causal attention, window = context/4",
              _local, ("charlm",)),
):
    register(_t)


# Each research area registers its techniques on import (after the registry exists).
from airlab.techniques import (  # noqa: E402,F401
    architecture,
    batch_size,
    checkpointing,
    distillation,
    optimizers,
    precision,
    pruning,
    quantization,
)
