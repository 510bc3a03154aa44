import math

import pytest
from conftest import MICRO

from airlab.errors import AirlabError
from airlab.plan import resolve
from airlab.run.trainer import lr_at, train


def micro(seed: int = 42, tokens: float = 6000, **kw):
    return resolve(budget={"tokens": tokens}, seed=seed, options={**MICRO, **kw})


def test_same_config_and_seed_give_the_same_result_twice() -> None:
    a, b = train(micro()), train(micro())
    assert a.state == b.state == "finished"
    assert a.metrics["val_loss"] == b.metrics["val_loss"]
    assert [p["val_loss"] for p in a.curve] == [p["val_loss"] for p in b.curve]
    c = train(micro(seed=43))
    assert c.metrics["val_loss"] != a.metrics["val_loss"]  # the seed changes init and data order


def test_run_measures_what_it_promises() -> None:
    r = train(micro(tokens=8192))
    m = r.metrics
    assert r.state == "finished" and r.reason is None
    # Budget: 8192 tokens at 8 x 32 per step = 32 steps exactly.
    assert m["steps"] == 32 and m["tokens"] == 8192
    assert [p["step"] for p in r.curve] == [0, 16, 32]  # step 0 + eval_points=2
    assert r.curve[0]["val_loss"] > r.curve[-1]["val_loss"]  # it learned something
    assert abs(r.curve[0]["val_loss"] - math.log(r.info["vocab_size"])) < 0.3
    assert m["val_bpc"] == pytest.approx(m["val_loss"] / math.log(2))
    assert m["best_val_loss"] <= m["val_loss"]
    assert m["tokens_per_s"] == pytest.approx(8192 / m["train_seconds"])
    assert m["flops"] > 6 * m["params"] * 8192 * 0.9
    assert m["peak_mem_mb"] > 10 and m["model_bytes"] == 4 * m["params"]
    assert r.info["eval_tokens"] == 1024 and r.info["provenance"]["versions"]["torch"]
    # Energy comes from airlab.energy and says where it came from, in info (stored with the run).
    assert m["energy_kwh_est"] > 0 and r.info["energy_source"].startswith("estimate: ")


def test_nan_or_exploding_loss_fails_the_run_with_the_step() -> None:
    r = train(micro(tokens=20000, lr=50.0, min_lr=0.0, grad_clip=0.0, warmup_steps=0))
    assert r.state == "failed"
    assert r.reason.startswith("diverged at step ")
    assert r.curve and r.curve[0]["step"] == 0  # the partial curve is kept


def test_divergence_is_reported_at_the_exact_step_although_losses_sync_in_groups() -> None:
    # Constant lr, no warmup: the trajectory does not depend on the budget, so a run stopped one
    # step before the reported step must finish, and one stopped at it must fail there.
    kw = dict(lr=50.0, min_lr=0.0, grad_clip=0.0, warmup_steps=0, schedule="constant")
    r = train(micro(tokens=20000, **kw))
    assert r.state == "failed"
    n = int(r.reason.split()[3].rstrip(":"))
    assert train(micro(tokens=256 * (n - 1), **kw)).state == "finished"
    again = train(micro(tokens=256 * n, **kw))
    assert again.state == "failed" and again.reason == r.reason


def test_time_budget_stops_and_evaluates_at_the_end() -> None:
    r = train(resolve(budget={"seconds": 1.0}, options=MICRO))
    assert r.state == "finished"
    assert 1.0 <= r.metrics["train_seconds"] < 3.0
    assert r.curve[-1]["step"] == r.metrics["steps"]


def test_vision_digits_learns() -> None:
    r = train(resolve(workload="vision", preset="mlp", budget={"epochs": 3}))
    assert r.state == "finished"
    assert r.metrics["val_acc"] > 0.85
    assert r.metrics["samples"] >= 3 * 1400


def test_fp16_on_cpu_is_refused() -> None:
    with pytest.raises(AirlabError, match="fp16 needs a CUDA GPU"):
        train(micro(precision="fp16"))


def test_bf16_autocast_runs_on_cpu() -> None:
    r = train(micro(precision="bf16"))
    assert r.state == "finished" and math.isfinite(r.metrics["val_loss"])


def test_schedule_warmup_then_cosine_to_min_lr() -> None:
    cfg = micro(lr=1e-3, min_lr=1e-4, warmup_steps=10)
    assert lr_at(cfg, 0, 0.0, 0.0) == pytest.approx(1e-4)
    assert lr_at(cfg, 9, 0.05, 0.0) == pytest.approx(1e-3)
    assert lr_at(cfg, 50, 0.1, 0.1) == pytest.approx(1e-3)
    assert lr_at(cfg, 100, 1.0, 0.1) == pytest.approx(1e-4)
    wsd = micro(schedule="wsd", warmup_steps=0)
    assert lr_at(wsd, 10, 0.5, 0.0) == wsd.lr
    assert lr_at(wsd, 10, 1.0, 0.0) == pytest.approx(wsd.min_lr)


def test_horizon_ends_the_decay_early_then_holds_min_lr() -> None:
    cfg = micro(lr=1e-3, min_lr=1e-4, warmup_steps=10, horizon=0.3)
    assert lr_at(cfg, 9, 0.05, 0.0) == pytest.approx(1e-3)  # warmup as before
    half = 0.1 + (0.3 - 0.1) / 2  # half way from the warmup's end to the horizon
    assert lr_at(cfg, 50, half, 0.1) == pytest.approx(5.5e-4)  # the cosine's midpoint
    for p in (0.3, 0.5, 1.0):
        assert lr_at(cfg, 100, p, 0.1) == pytest.approx(1e-4)
    assert lr_at(micro(horizon=0.3, warmup_steps=0, schedule="wsd"), 5, 0.2, 0.0) \
        == micro().lr  # wsd holds over the first 80 % of the horizon
    # A warmup that outlasts the horizon drops straight to the floor after it.
    assert lr_at(micro(horizon=0.05, warmup_steps=10, min_lr=1e-4), 20, 0.3, 0.1) \
        == pytest.approx(1e-4)
    # Default 1.0 is not part of a run key: stored runs keep their keys.
    assert micro().run_key == micro(horizon=1.0).run_key != micro(horizon=0.5).run_key


@pytest.mark.parametrize("preset", ["small", pytest.param("seed88m", marks=pytest.mark.slow)])
def test_large_presets_build_and_step_through_the_trainer(preset: str) -> None:
    # Reduced context and batch: the point is that the real loop runs them, not their speed.
    r = train(resolve(preset=preset, budget={"tokens": 64},
                      options={"block_size": 32, "batch_size": 2, "eval_points": 1,
                               "eval_tokens": 64, "warmup_steps": 0}))
    assert r.state == "finished" and r.metrics["steps"] == 1
    assert math.isfinite(r.metrics["val_loss"])
    assert r.metrics["params"] > (8e6 if preset == "small" else 80e6)
