"""Techniques: named switches (`--use_<name>`) that change a run.

A technique is a small object with optional hooks. The trainer calls the hooks at fixed points;
a technique never decides how metrics are computed. `TECHNIQUES` is the registry: a plain dict.

Hook order in one run: ``configure`` (while the config is resolved, before the run key is
computed) -> ``on_model`` (after the model is built) -> ``on_optimizer`` -> ``after_backward``
(each step, before clipping) -> ``after_step`` -> ``on_finish`` (extra metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airlab.errors import lookup


@dataclass(frozen=True)
class Technique:
    """A registered switch. Subclass and override hooks for behaviour beyond config changes."""

    name: str
    area: str
    help: str
    # Config overrides applied when the switch is on; a callable gets the config resolved so far.
    overrides: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]] = field(
        default_factory=dict
    )
    workloads: tuple[str, ...] = ("charlm", "vision")
    # Options this technique reads from config.options, with defaults (e.g. {"sparsity": 0.5}).
    params: dict[str, Any] = field(default_factory=dict)

    def configure(self, config: dict[str, Any]) -> dict[str, Any]:
        """Return the config overrides this technique makes (model fields go under 'model')."""
        ov = self.overrides(config) if callable(self.overrides) else self.overrides
        return dict(ov)

    # Runtime hooks: no-ops by default.
    def on_model(self, model: Any, config: dict[str, Any]) -> Any:
        return model

    def on_optimizer(self, optimizer: Any, model: Any, config: dict[str, Any]) -> Any:
        return optimizer

    def after_backward(self, model: Any, step: int) -> None:
        return None

    def after_step(self, model: Any, step: int, progress: float) -> None:
        return None

    def on_finish(
        self, model: Any, evaluate: Callable[[Any], dict[str, float]]
    ) -> dict[str, float]:
        return {}


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
