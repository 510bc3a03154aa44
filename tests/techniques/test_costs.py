"""Costs a technique adds beyond the model's forward and backward are counted in FLOPs."""

import pytest
from conftest import MICRO

from airlab.plan import RunPlan, prerequisites, resolve
from airlab.run.trainer import train


def test_muon_newton_schulz_flops_are_counted() -> None:
    r = train(resolve(budget={"tokens": 512}, use=["muon"], options=MICRO))
    # MICRO GPT (width 32, 1 layer): Muon gets qkv 96x32, attn.proj 32x32, fc 128x32 and
    # proj 32x128 (embeddings, tied lm_head and 1-D params go to AdamW). Per NS iteration an
    # m x n matrix (m <= n) costs 4 m^2 n + 2 m^3; 5 iterations; 8 x 32 tokens per step.
    per_iter = (4 * 32**2 * 96 + 2 * 32**3) + 6 * 32**3 + 2 * (4 * 32**2 * 128 + 2 * 32**3)
    assert r.info["extra_flops_per_unit"] == pytest.approx(5 * per_iter / (8 * 32))
    assert r.metrics["flops"] == pytest.approx(r.info["flops_per_unit"] * r.metrics["tokens"])


def test_distillation_counts_the_teacher_forward_passes() -> None:
    plain = train(resolve(budget={"tokens": 1024}, options=MICRO))
    cfg = resolve(budget={"tokens": 1024}, use=["distill"], options=MICRO)
    for pre in prerequisites([RunPlan("e", "kd", cfg.seed, cfg)]):
        assert train(pre.config).state == "finished"  # the teacher: a run of its own
    kd = train(cfg)
    teacher_forward_per_token = kd.metrics["teacher_forward_flops"] / kd.metrics["tokens"]
    assert kd.info["extra_flops_per_unit"] == pytest.approx(teacher_forward_per_token)
    assert kd.metrics["flops"] == pytest.approx(
        plain.metrics["flops"] + kd.metrics["teacher_forward_flops"])
