"""Mixed precision: bf16 autocast really runs matmuls in bf16; bf16 weights; fp16 refusal."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from conftest import MICRO
from torch import nn

from airlab.errors import AirlabError
from airlab.models import build_gpt
from airlab.models.precision import autocast
from airlab.plan import resolve
from airlab.run.trainer import train
from airlab.techniques import get_technique

GPT_FIELDS = {k: MICRO[k] for k in ("n_layer", "n_head", "n_embd", "block_size")}




def _linear_output_dtypes(model: nn.Module, run: Callable[[], Any]) -> set[torch.dtype]:
    """Run ``run()`` with forward hooks on every nn.Linear; return the output dtypes seen."""
    seen: set[torch.dtype] = set()
    handles = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
               for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


def test_bf16_autocast_runs_the_matmuls_in_bf16() -> None:
    torch.manual_seed(0)
    model = build_gpt(65, "tiny", **GPT_FIELDS)
    x = torch.randint(0, 65, (2, 16))
    device = torch.device("cpu")
    for use, want in ((["bf16"], {torch.bfloat16}), ([], {torch.float32})):
        cfg = resolve(budget={"tokens": 4000}, use=use, options=MICRO)
        losses: list[torch.Tensor] = []

        def forward(cfg=cfg, losses=losses) -> None:
            with autocast(cfg.precision, device):  # the context the trainer wraps the loss in
                losses.append(model(x, x)[1])

        assert _linear_output_dtypes(model, forward) == want
        assert losses[0].dtype == torch.float32  # the loss itself stays fp32
    # Weights are untouched by autocast (fp32 master weights).
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_weights_casts_parameters_and_halves_model_bytes(shared_data) -> None:
    cfg = resolve(budget={"tokens": 4000}, use=["bf16_weights"], options=MICRO)
    hooks = get_technique("bf16_weights").create(cfg.to_dict())
    assert hooks is not None
    model = hooks.on_model(build_gpt(65, "tiny", **GPT_FIELDS))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    x = torch.randint(0, 65, (2, 16))
    logits, loss = model(x, x)
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    assert _linear_output_dtypes(model, lambda: model(x)) == {torch.bfloat16}

    ref = train(resolve(budget={"tokens": 4000}, options=MICRO))
    r = train(cfg)
    assert r.state == "finished", r.reason
    assert math.isfinite(r.metrics["val_loss"])
    assert r.metrics["model_bytes"] == ref.metrics["model_bytes"] / 2
    assert r.metrics["model_bytes"] == 2 * r.metrics["params"]


def test_bf16_loss_is_within_a_tenth_of_a_nat_of_fp32(shared_data) -> None:
    ref = train(resolve(budget={"tokens": 6000}, options=MICRO))
    for name in ("bf16", "bf16_weights"):
        r = train(resolve(budget={"tokens": 6000}, use=[name], options=MICRO))
        assert r.state == "finished", r.reason
        # Measured gap: bf16 autocast ~1e-5 nats, bf16 weights ~0.007 nats.
        assert abs(r.metrics["val_loss"] - ref.metrics["val_loss"]) < 0.1, name
        assert r.metrics["val_loss"] < r.curve[0]["val_loss"] - 0.1


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs on a CUDA GPU")
def test_fp16_is_refused_on_cpu_with_a_clear_message() -> None:
    cfg = resolve(budget={"tokens": 4000}, use=["fp16"], options=MICRO)
    assert cfg.precision == "fp16"
    with pytest.raises(AirlabError, match="precision fp16 needs a CUDA GPU") as e:
        train(cfg)
    assert "bf16" in str(e.value)  # the message says what to use instead


# Training every switch on charlm and vision: tests/techniques/test_contract.py.
