"""Architecture switches of the char GPT and the vision CNN: pure config changes.

* positions: ``rope`` / ``nope`` (exclusive); normalization: ``rmsnorm``, ``qk_norm``;
  MLP activation: ``relu2`` / ``swiglu`` (exclusive); attention: ``gqa`` / ``mqa`` (exclusive),
  ``local_attn``.

* ``lowrank_mlp`` (charlm): every MLP matrix W (out x in) is factorized as U @ V with inner
  width r = ``lowrank_ratio`` x n_embd (rounded to a multiple of 8, at least 8, at most
  n_embd). Parameters and per-token FLOPs of an MLP matrix drop from in*out to
  r*(in + out); ``GPT.flops_per_token`` counts the factors exactly.
* ``separable_conv`` (vision, cnn preset): depthwise 3x3 + pointwise 1x1 convolutions
  instead of full 3x3 convolutions (``SmallCNN(separable=True)``).

"""

from __future__ import annotations

from typing import Any

from airlab.errors import AirlabError
from airlab.techniques.base import Option, Technique, register


def _gqa(config: dict[str, Any]) -> dict[str, Any]:
    n_head = _preset_value(config, "n_head", 4)
    return {"model": {"n_kv_head": max(1, n_head // 2)}}


def _local(config: dict[str, Any]) -> dict[str, Any]:
    block = _preset_value(config, "block_size", 64)
    return {"model": {"window": max(1, block // 4)}}


def _preset_value(config: dict[str, Any], key: str, default: int) -> int:
    """A GPT field as the run will see it: explicit model option, else the preset's value."""
    model = config.get("model", {})
    if key in model:
        return int(model[key])
    from airlab.models import PRESETS

    return int(PRESETS.get(config.get("preset", "tiny"), {}).get(key, default))


def lowrank_rank(n_embd: int, ratio: float) -> int:
    """Rank r = ratio * n_embd rounded to a multiple of 8 (vector-friendly), >= 8, <= n_embd."""
    if not 0 < ratio <= 1:
        raise AirlabError(f"lowrank_ratio={ratio!r} must be in (0, 1]",
                          "e.g. 0.25 keeps a quarter of the width")
    r = max(8, 8 * round(ratio * n_embd / 8))
    return min(r, n_embd)


def _lowrank(config: dict[str, Any]) -> dict[str, Any]:
    ratio = float(config.get("options", {}).get("lowrank_ratio", 0.25))
    n_embd = _preset_value(config, "n_embd", 128)
    return {"model": {"mlp_rank": lowrank_rank(n_embd, ratio)}}


for _t in (
    Technique("rope", "positions", "rotary position embeddings instead of learned positions",
              {"model": {"positions": "rope"}}, ("charlm",), excludes=("nope",)),
    Technique("nope", "positions", "no position embeddings (causal mask only)",
              {"model": {"positions": "none"}}, ("charlm",), excludes=("rope",)),
    Technique("rmsnorm", "normalization", "RMSNorm instead of LayerNorm",
              {"model": {"norm": "rmsnorm"}}, ("charlm",)),
    Technique("qk_norm", "normalization", "RMS-normalize queries and keys per head",
              {"model": {"qk_norm": True}}, ("charlm",)),
    Technique("relu2", "efficient_arch", "squared-ReLU MLP activation",
              {"model": {"activation": "relu2"}}, ("charlm",), excludes=("swiglu",)),
    Technique("swiglu", "efficient_arch", "SwiGLU gated MLP (hidden 8/3 of width)",
              {"model": {"activation": "swiglu"}}, ("charlm",), excludes=("relu2",)),
    Technique("gqa", "efficient_arch", "grouped-query attention with half as many KV heads",
              _gqa, ("charlm",), excludes=("mqa",)),
    Technique("mqa", "efficient_arch", "multi-query attention (one KV head)",
              {"model": {"n_kv_head": 1}}, ("charlm",), excludes=("gqa",)),
    Technique("local_attn", "attention", "sliding-window causal attention, window = context/4",
              _local, ("charlm",)),
):
    register(_t)

register(Technique(
    "lowrank_mlp", "efficient_arch",
    "low-rank factorized MLP matrices (W = U V, rank = lowrank_ratio x n_embd)",
    _lowrank, ("charlm",),
    options={"lowrank_ratio": Option(0.25, float, 0, 1, low_open=True,
                                     help="inner width as a fraction of n_embd")},
))
register(Technique(
    "separable_conv", "efficient_arch",
    "depthwise-separable convolutions in the CNN (3x3 depthwise + 1x1 pointwise)",
    {"model": {"separable": True}}, ("vision",),
))
