"""Knowledge distillation: the loss by hand, the teacher as a planned run of its own (saved
weights, reused by every student, its cost always reported), distilled students for both
workloads."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from conftest import MICRO

from airlab.config import TrainConfig
from airlab.errors import AirlabError
from airlab.plan import RunPlan, prerequisites, resolve
from airlab.run.result import RunResult
from airlab.run.trainer import train
from airlab.techniques import distillation as kd

TEACHER_METRICS = ("teacher_train_seconds", "teacher_flops", "teacher_val_loss",
                   "teacher_params", "teacher_forward_flops")




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
    assert tiny.save_model and tiny.code == {}
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


def _with_teacher(cfg: TrainConfig) -> tuple[RunResult, list[RunResult]]:
    """Train the run's prerequisites (its teacher) first, then the run, as the pipeline does."""
    teachers = [train(p.config) for p in prerequisites([RunPlan("t", "kd", cfg.seed, cfg)])]
    return train(cfg), teachers


def test_teacher_is_a_planned_run_keyed_in_the_students_options(_lab: Path) -> None:
    cfg = resolve(budget={"tokens": 4000}, use=["distill"], options=MICRO)
    plans = [RunPlan("e", "kd", cfg.seed, cfg), RunPlan("e", "kd2", cfg.seed, cfg)]
    [teacher] = prerequisites(plans)  # deduplicated by run key
    assert teacher.experiment == "e.teacher" and teacher.config.save_model
    assert teacher.config.techniques == () and teacher.run_key == cfg.options["teacher_key"]
    # Another seed: another teacher (the student's seed varies everything, its teacher too).
    other = resolve(budget={"tokens": 4000}, use=["distill"], seed=7, options=MICRO)
    assert other.options["teacher_key"] != cfg.options["teacher_key"]
    assert len(prerequisites([*plans, RunPlan("e", "kd", 7, other)])) == 2
    # A changed teacher recipe is a changed student.
    bigger = resolve(budget={"tokens": 4000}, use=["distill"],
                     options={**MICRO, "kd_teacher_tokens": 9000})
    assert bigger.run_key != cfg.run_key
    with pytest.raises(AirlabError, match="set by the lab"):
        resolve(budget={"tokens": 4000}, use=["distill"],
                options={**MICRO, "teacher_key": "abc"})


def test_student_without_its_teacher_fails_clearly() -> None:
    cfg = resolve(budget={"tokens": 2000}, use=["distill"], options=MICRO)
    with pytest.raises(AirlabError, match="teacher's weights .* are missing"):
        train(cfg)


def test_teacher_saved_once_and_loaded_by_every_student(_lab: Path) -> None:
    cfg = resolve(budget={"tokens": 4000}, use=["distill"], options=MICRO)
    first, [teacher] = _with_teacher(cfg)
    second = train(cfg)  # the teacher's files are there: no teacher training at all
    assert teacher.state == first.state == second.state == "finished"
    folder = _lab / "artifacts" / cfg.options["teacher_key"]
    assert sorted(p.name for p in folder.iterdir()) == ["cost.json", "model.pt"]
    a, b = first.metrics, second.metrics
    tm = teacher.metrics
    # The teacher's own run's cost is what the students report: nothing hidden.
    assert a["teacher_train_seconds"] == tm["train_seconds"] == b["teacher_train_seconds"]
    assert a["teacher_flops"] == tm["flops"] and a["teacher_val_loss"] == tm["val_loss"]
    assert a["teacher_params"] == tm["params"]
    assert a["val_loss"] == b["val_loss"]  # same teacher, same seed: the same student


def test_distilled_student_reports_teacher_cost() -> None:
    r, _ = _with_teacher(resolve(budget={"tokens": 4000}, use=["distill"],
                                 options={**MICRO, "kd_alpha": 0.7, "kd_temperature": 3.0}))
    m = r.metrics
    assert r.state == "finished" and math.isfinite(m["val_loss"])
    assert all(k in m and math.isfinite(m[k]) for k in TEACHER_METRICS)
    assert m["teacher_params"] > 2 * m["params"] and m["teacher_val_loss"] < m["val_loss"]
    assert m["teacher_flops"] > m["flops"] and m["teacher_forward_flops"] > 0


def test_distill_vision_cnn() -> None:
    r, [t] = _with_teacher(resolve(workload="vision", preset="cnn", budget={"epochs": 1},
                                   use=["distill"]))
    m = r.metrics
    assert r.state == t.state == "finished" and math.isfinite(m["val_loss"])
    assert m["teacher_params"] > 2 * m["params"] == 2 * m["params_deployed"]


def test_no_training_loop_outside_the_trainer() -> None:
    """One training loop: nothing outside airlab/run steps an optimizer, and no technique or
    model module imports the run layer (so none can start a run nested in a run)."""
    import airlab

    root = Path(airlab.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        if path.parent != root / "run":
            assert ".step()" not in text, path
        if path.parent.name in ("techniques", "models"):
            assert not re.search(r"^\s*(from|import) airlab\.run", text, re.M), path
