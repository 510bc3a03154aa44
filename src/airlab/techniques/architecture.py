"""Efficient architectures (area "efficient_arch"): cheaper MLPs and convolutions.

* ``lowrank_mlp`` (charlm): every MLP matrix W (out x in) is factorized as U @ V with inner
  width r = ``lowrank_ratio`` x n_embd (rounded to a multiple of 8, at least 8, at most
  n_embd). Parameters and per-token FLOPs of an MLP matrix drop from in*out to
  r*(in + out); ``GPT.flops_per_token`` counts the factors exactly.
* ``separable_conv`` (vision, cnn preset): depthwise 3x3 + pointwise 1x1 convolutions
  instead of full 3x3 convolutions (``SmallCNN(separable=True)``).

The other MLP/attention switches (relu2, swiglu, gqa, mqa) are config switches registered
in ``airlab.techniques``.
"""

from __future__ import annotations

from typing import Any

from airlab.errors import AirlabError
from airlab.techniques import Technique, register


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


register(Technique(
    "lowrank_mlp", "efficient_arch",
    "low-rank factorized MLP matrices (W = U V, rank = lowrank_ratio x n_embd)",
    _lowrank, ("charlm",), params={"lowrank_ratio": 0.25},
))
register(Technique(
    "separable_conv", "efficient_arch",
    "depthwise-separable convolutions in the CNN (3x3 depthwise + 1x1 pointwise)",
    {"model": {"separable": True}}, ("vision",),
))
