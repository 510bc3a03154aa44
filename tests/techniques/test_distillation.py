"""Knowledge distillation: the loss by hand, the teacher trained once and reused from the
on-disk cache (its cost always reported), and distilled students for both workloads."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import MICRO

from airlab.plan import resolve
from airlab.run.trainer import train
from airlab.techniques import distillation as kd

TEACHER_METRICS = ("teacher_train_seconds", "teacher_flops", "teacher_val_loss",
                   "teacher_params", "teacher_cached", "teacher_forward_flops")




def test_kd_loss_equals_hand_computation() -> None:
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    t = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    ce = torch.tensor(1.25)
    T, alpha = 2.0, 0.3
    kl = 0.0
    for i in range(2):
        ps = [math.exp(v / T) for v in s[i].tolist()]
        pt = [math.exp(v / T) for v in t[i].tolist()]
        ps = [v / sum(ps) for v in ps]
        pt = [v / sum(pt) for v in pt]
        kl += sum(b * math.log(b / a) for a, b in zip(ps, pt, strict=True))
    expected = alpha * T * T * kl / 2 + (1 - alpha) * 1.25  # KL averaged over the 2 rows
    got = kd.distillation_loss(s, t, ce, T, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # Sequence logits (B, T, V) average over every position the same way.
    got3 = kd.distillation_loss(s.view(1, 2, 3), t.view(1, 2, 3), ce, T, alpha)
    assert got3.item() == pytest.approx(expected, rel=1e-6)
    # Identical logits: no soft loss; alpha = 0 is plain cross-entropy.
    assert kd.distillation_loss(s, s, ce, T, alpha).item() == pytest.approx(0.7 * 1.25)
    assert kd.distillation_loss(s, t, ce, T, 0.0).item() == pytest.approx(1.25)


def test_teacher_config_is_larger_and_follows_the_student() -> None:
    tiny = kd.teacher_config(resolve(budget={"tokens": 4000}, use=["distill"]))
    assert tiny.model == {"n_layer": 6, "n_embd": 192, "block_size": 64}
    assert tiny.tokens == 8000 and tiny.techniques == () and tiny.options == {}
    micro = kd.teacher_config(resolve(budget={"tokens": 4000}, use=["distill"],
                                      options={**MICRO, "kd_teacher_tokens": 6000}))
    assert micro.model == {"n_layer": 2, "n_head": 2, "n_embd": 48, "block_size": 32}
    assert micro.tokens == 6000 and micro.batch_size == 8 and micro.seed == 42
    explicit = kd.teacher_config(resolve(
        budget={"tokens": 4000}, use=["distill"],
        options={**MICRO, "kd_teacher_model": {"n_layer": 3, "n_embd": 64}}))
    assert explicit.model["n_layer"] == 3 and explicit.model["n_embd"] == 64
    cnn = kd.teacher_config(resolve(workload="vision", preset="cnn", budget={"epochs": 1},
                                    use=["distill"]))
    assert cnn.model == {"channels": [32, 64], "hidden": 128} and cnn.epochs == 2


def test_teacher_trained_once_then_loaded_from_cache(_lab: Path) -> None:
    cfg = resolve(budget={"tokens": 4000}, use=["distill"], options=MICRO)
    t0 = time.perf_counter()
    first = train(cfg)
    t1 = time.perf_counter()
    second = train(cfg)
    t2 = time.perf_counter()
    a, b = first.metrics, second.metrics
    assert first.state == second.state == "finished"
    assert a["teacher_cached"] == 0 and b["teacher_cached"] == 1
    for k in ("teacher_val_loss", "teacher_train_seconds", "teacher_flops", "teacher_params"):
        assert a[k] == b[k], k  # the cached teacher carries its original cost
    # The same teacher and the global RNGs restored: the student run is reproduced exactly.
    assert a["val_loss"] == b["val_loss"]
    assert t2 - t1 < t1 - t0  # no teacher training the second time
    print(f"\nteacher {a['teacher_params']:.0f} params, trained in "
          f"{a['teacher_train_seconds']:.2f} s; student run {t1 - t0:.2f} s -> "
          f"{t2 - t1:.2f} s with the cache")
    files = sorted(p.suffix for p in (_lab / "teachers").iterdir())
    assert files == [".json", ".lock", ".pt"]  # one teacher, no stray temp files
    other_seed = train(resolve(budget={"tokens": 4000}, use=["distill"], seed=7, options=MICRO))
    assert other_seed.metrics["teacher_cached"] == 0  # one teacher per seed


def test_distilled_student_reports_teacher_cost() -> None:
    r = train(resolve(budget={"tokens": 4000}, use=["distill"],
                      options={**MICRO, "kd_alpha": 0.7, "kd_temperature": 3.0}))
    m = r.metrics
    assert r.state == "finished" and math.isfinite(m["val_loss"])
    assert all(k in m and math.isfinite(m[k]) for k in TEACHER_METRICS)
    assert m["teacher_params"] > 2 * m["params"] and m["teacher_val_loss"] < m["val_loss"]
    assert m["teacher_flops"] > m["flops"] and m["teacher_forward_flops"] > 0


def test_distill_vision_cnn() -> None:
    r = train(resolve(workload="vision", preset="cnn", budget={"epochs": 1}, use=["distill"]))
    m = r.metrics
    assert r.state == "finished" and math.isfinite(m["val_loss"])
    assert m["teacher_cached"] == 0 and m["teacher_params"] > 2 * m["params"]


def test_lock_makes_a_second_worker_wait(tmp_path: Path) -> None:
    lock = tmp_path / "t.lock"
    got: list[float] = []

    def second() -> None:
        with kd._exclusive(lock):
            got.append(time.perf_counter())

    with kd._exclusive(lock):
        th = threading.Thread(target=second)
        th.start()
        time.sleep(0.3)
        released = time.perf_counter()
        assert not got  # still waiting
    th.join(5)
    assert got and got[0] >= released
