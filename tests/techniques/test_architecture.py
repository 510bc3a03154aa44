"""Efficient architectures: the low-rank MLP (exact parameter/FLOP accounting, init scale,
training) and the switches lowrank_mlp / separable_conv through resolve() and train()."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import MICRO
from torch import nn

from airlab.config import TrainConfig
from airlab.errors import AirlabError
from airlab.models import GPT, GPTConfig
from airlab.models.gpt import LowRankLinear
from airlab.plan import resolve
from airlab.run.trainer import train
from airlab.techniques.architecture import lowrank_rank

V = 65




def _gpt(**kw: object) -> GPT:
    torch.manual_seed(0)
    base: dict = dict(vocab_size=V, n_layer=1, n_head=4, n_embd=32, block_size=16)
    base.update(kw)
    return GPT(GPTConfig(**base))


def test_lowrank_params_and_flops_match_hand_computation() -> None:
    C, H, r, T, L = 32, 128, 8, 16, 1
    dense, low = _gpt(), _gpt(mlp_rank=r)
    attn = C * 3 * C + C * C  # qkv + proj
    mlp_low = (C * r + r * H) + (H * r + r * C)  # fc: C->r->H, proj: H->r->C
    lm_head = V * C
    assert low.matmul_params() == L * (attn + mlp_low) + lm_head == 8736
    forward = 2 * (L * (attn + mlp_low) + lm_head) + 4 * L * C * T
    assert low.flops_per_token() == 3 * forward == 58_560
    assert low.flops_per_token(training=False) == forward
    norms = 3 * C  # ln_1, ln_2, ln_f weights (no bias)
    assert low.num_params() == V * C + T * C + norms + attn + mlp_low == 9344
    # Dense: two C x 4C matrices. Low rank saves exactly 2*C*H - mlp_low per layer.
    assert dense.num_params() - low.num_params() == L * (2 * C * H - mlp_low) == 5632
    assert dense.flops_per_token() - low.flops_per_token() == 6 * L * (2 * C * H - mlp_low)


def test_lowrank_swiglu_factorizes_all_three_matrices() -> None:
    m = _gpt(mlp_rank=8, activation="swiglu")
    C, H = 32, m.config.hidden
    assert isinstance(m.blocks[0].mlp.gate, LowRankLinear)
    assert m.matmul_params() == (4 * C * C) + 3 * 8 * (C + H) + V * C


def test_lowrank_factors_are_linear_modules_and_train() -> None:
    m = _gpt(n_layer=2, mlp_rank=8)
    names = {n for n, mod in m.named_modules() if isinstance(mod, nn.Linear)}
    for part in ("fc", "proj"):
        assert {f"blocks.1.mlp.{part}.down", f"blocks.1.mlp.{part}.up"} <= names
    x = torch.randint(0, V, (2, 16))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        _, loss = m(x, x)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0  # it learns to copy its input


def test_lowrank_init_keeps_the_dense_scale() -> None:
    m = _gpt(n_layer=2, n_embd=128, mlp_rank=32)
    fc = m.blocks[0].mlp.fc
    product = fc.up.weight @ fc.down.weight  # (H, C): the effective dense matrix
    assert product.std().item() == pytest.approx(0.02, rel=0.15)
    proj = m.blocks[0].mlp.proj
    resid = 0.02 / math.sqrt(2 * 2)
    assert (proj.up.weight @ proj.down.weight).std().item() == pytest.approx(resid, rel=0.15)


def test_invalid_rank_is_refused() -> None:
    for bad in (0, 33, 2.5, True):
        with pytest.raises(AirlabError, match="mlp_rank"):
            GPTConfig(n_embd=32, n_head=4, mlp_rank=bad)


def test_rank_rule() -> None:
    assert lowrank_rank(128, 0.25) == 32
    assert lowrank_rank(32, 0.25) == 8
    assert lowrank_rank(100, 0.25) == 24  # 25 rounds to a multiple of 8
    assert lowrank_rank(16, 0.1) == 8  # at least 8
    with pytest.raises(AirlabError):
        lowrank_rank(128, 0.0)


def test_lowrank_switch_round_trips_and_trains() -> None:
    base = resolve(budget={"tokens": 4000}, options=MICRO)
    cfg = resolve(budget={"tokens": 4000}, use=["lowrank_mlp"], options=MICRO)
    assert cfg.model["mlp_rank"] == 8 and cfg.options["lowrank_ratio"] == 0.25
    assert TrainConfig(**cfg.to_dict()) == cfg and cfg.run_key != base.run_key
    half = resolve(budget={"tokens": 4000}, use=["lowrank_mlp"],
                   options={**MICRO, "lowrank_ratio": 0.5})
    assert half.model["mlp_rank"] == 16
    # The preset's width is used when n_embd is not given: tiny has n_embd 128.
    assert resolve(budget={"tokens": 4000}, use=["lowrank_mlp"]).model["mlp_rank"] == 32
    r = train(cfg)
    assert r.state == "finished" and math.isfinite(r.metrics["val_loss"])
    b = train(base)
    assert r.metrics["params"] < b.metrics["params"] and r.metrics["flops"] < b.metrics["flops"]


def test_separable_conv_switch() -> None:
    cfg = resolve(workload="vision", preset="cnn", budget={"epochs": 1}, use=["separable_conv"])
    assert cfg.model == {"separable": True}
    r = train(cfg)
    assert r.state == "finished" and math.isfinite(r.metrics["val_loss"])
    dense = resolve(workload="vision", preset="cnn", budget={"epochs": 1})
    from airlab.models import SmallCNN

    assert (sum(p.numel() for p in SmallCNN((1, 8, 8), 10, separable=True).parameters())
            == r.metrics["params"])
    assert r.metrics["params"] < sum(p.numel() for p in SmallCNN((1, 8, 8), 10).parameters())
    assert dense.run_key != cfg.run_key
    with pytest.raises(AirlabError, match="does not apply"):
        resolve(budget={"tokens": 4000}, use=["separable_conv"], options=MICRO)
