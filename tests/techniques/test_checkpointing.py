"""Gradient checkpointing: same gradients, less activation memory (measured by the one trainer
with a step limit, in fresh worker processes), plain forward outside training, and the
max-batch-under-a-cap search."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import MICRO

from airlab.config import TrainConfig
from airlab.models import GPT, GPTConfig, SmallCNN
from airlab.plan import resolve
from airlab.run.trainer import train
from airlab.techniques import checkpointing as ck


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gpt_gradients_identical_with_checkpointing() -> None:
    torch.manual_seed(0)
    # Dropout on: checkpoint must replay the same dropout masks in the recomputation.
    plain = GPT(GPTConfig(vocab_size=65, n_layer=2, n_head=4, n_embd=32, block_size=16,
                          dropout=0.1))
    ckpt = ck.apply_checkpointing(copy.deepcopy(plain))
    assert ckpt.state_dict().keys() == plain.state_dict().keys()
    x = torch.randint(0, 65, (4, 16), generator=torch.Generator().manual_seed(1))
    for m in (plain, ckpt):
        torch.manual_seed(123)
        _, loss = m(x, x)
        loss.backward()
    g0, g1 = _grads(plain), _grads(ckpt)
    assert g0.keys() == g1.keys() and len(g0) > 10
    for name in g0:
        assert torch.allclose(g0[name], g1[name], atol=1e-6), name
    # Outside training the plain forward runs (nothing to recompute), with equal outputs.
    plain.eval(), ckpt.eval()
    with torch.no_grad():
        assert torch.equal(plain(x)[0], ckpt(x)[0])


def test_cnn_stages_checkpointed_with_identical_gradients() -> None:
    torch.manual_seed(0)
    plain = SmallCNN((1, 8, 8), 10, channels=(8, 16))
    ckpt = ck.apply_checkpointing(copy.deepcopy(plain))
    assert ckpt.features._ckpt_groups == [[0, 1, 2], [3, 4, 5]]  # conv -> relu -> pool each
    assert ckpt.state_dict().keys() == plain.state_dict().keys()
    x, y = torch.randn(6, 1, 8, 8), torch.arange(6)
    for m in (plain, ckpt):
        torch.nn.functional.cross_entropy(m(x), y).backward()
    for name, g in _grads(plain).items():
        assert torch.allclose(g, _grads(ckpt)[name], atol=1e-6), name
    copied = copy.deepcopy(ckpt)  # the patched forward follows the copy, not the original
    assert torch.equal(copied(x), ckpt(x))


@pytest.mark.parametrize("vision", [False, True], ids=["charlm", "vision-cnn"])
def test_contract_training_finishes_unchanged(vision: bool) -> None:
    if vision:
        def cfg(use: list[str]):  # noqa: ANN202
            return resolve(workload="vision", preset="cnn", budget={"epochs": 1}, use=use)
    else:
        def cfg(use: list[str]):  # noqa: ANN202
            return resolve(budget={"tokens": 4000}, use=use, options=MICRO)
    with_ck, without = train(cfg(["checkpoint"])), train(cfg([]))
    assert with_ck.state == "finished" and math.isfinite(with_ck.metrics["val_loss"])
    # Recomputation is exact, so the whole run matches the plain one.
    assert with_ck.metrics["val_loss"] == pytest.approx(without.metrics["val_loss"], abs=1e-5)


def _measure(cfg: TrainConfig) -> dict[str, float]:
    """Run a config through the one trainer in a fresh worker process (the local executor)."""
    from airlab.executors.base import Job
    from airlab.executors.local import LocalExecutor

    [(_, r)] = list(LocalExecutor(workers=1, threads=1).run([Job("m", cfg.to_dict())]))
    assert r.state == "finished", r.reason
    return r.metrics


def test_measurement_config_stops_the_trainer_after_max_steps() -> None:
    cfg = ck.measurement_config(resolve(budget={"tokens": 100_000}, options=MICRO), steps=3)
    assert cfg.max_steps == 3 and cfg.eval_points == 1
    r = train(cfg)
    assert r.state == "finished" and r.metrics["steps"] == 3
    assert r.metrics["tokens"] == 3 * MICRO["batch_size"] * MICRO["block_size"]
    # The step limit is part of the run key only when set.
    base = resolve(budget={"tokens": 100_000}, options=MICRO)
    assert cfg.run_key != base.run_key
    assert TrainConfig(**{**base.to_dict(), "max_steps": None}).run_key == base.run_key


def test_checkpointing_lowers_measured_peak_activation_memory() -> None:
    # Activations dominate: 8 layers x (8 x 256 tokens) x 128 wide, ~1.6M parameters.
    opts = {"n_layer": 8, "n_head": 4, "n_embd": 128, "block_size": 256, "batch_size": 8}
    res = {}
    for use in ((), ("checkpoint",)):
        cfg = resolve(budget={"tokens": 10_000}, use=use, options=opts)
        res[use] = _measure(ck.measurement_config(cfg, steps=2))
    plain, ckpt = res[()], res[("checkpoint",)]
    print(f"\npeak: plain {plain['peak_mem_mb']:.0f} MB, checkpoint "
          f"{ckpt['peak_mem_mb']:.0f} MB; train {plain['train_seconds']:.2f} s -> "
          f"{ckpt['train_seconds']:.2f} s (overhead reported, not asserted)")
    assert plain["train_loss"] == pytest.approx(ckpt["train_loss"], abs=1e-5)  # same computation
    assert plain["steps"] == ckpt["steps"] == 2
    assert plain["peak_mem_mb"] - ckpt["peak_mem_mb"] > 15  # the activations it did not keep


def test_max_batch_under_cap_real_measurement() -> None:
    cfg = resolve(budget={"tokens": 4000}, options=MICRO)
    out = ck.max_batch_under_cap(cfg, cap_mb=1e6, measure=_measure, candidates=(16, 4))
    assert out["dimension"] == "batch_size"
    for arm in ("plain", "checkpoint"):
        assert out[arm]["max"] == 16 and sorted(out[arm]["measured"]) == [4, 16]
        for m in out[arm]["measured"].values():
            assert m["peak_mb"] > 0 and math.isfinite(m["loss"])


def test_max_batch_under_cap_search_logic() -> None:
    # Fake memory model: 100 MB fixed + 2 MB per sample, a quarter of the growth with
    # checkpointing; the search must stop at the first candidate over the cap.
    seen: list[tuple[int, bool]] = []

    def fake(config: TrainConfig) -> dict[str, float]:
        on = "checkpoint" in config.techniques
        assert config.max_steps == 2  # a measurement: a few steps of the one trainer
        seen.append((config.batch_size, on))
        peak = 100 + config.batch_size * (0.5 if on else 2.0)
        return {"peak_mem_mb": peak, "train_seconds": 0.2, "steps": 2, "train_loss": 1.0}

    cfg = resolve(budget={"tokens": 4000}, options=MICRO)
    out = ck.max_batch_under_cap(cfg, cap_mb=200, measure=fake,
                                 candidates=(8, 32, 64, 128, 256))
    assert out["plain"]["max"] == 32 and out["checkpoint"]["max"] == 128
    assert (128, False) not in seen  # stopped after 64 went over the cap
    ctx = ck.max_batch_under_cap(cfg, cap_mb=101, measure=fake, candidates=(16, 32),
                                 dimension="block_size")
    assert ctx["plain"]["max"] is None and ctx["dimension"] == "block_size"
