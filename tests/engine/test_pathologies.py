"""Pathologies a loss does not show: collapsed samples and overfitting, on real micro runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import MICRO
from torch import nn

from airlab.plan import resolve
from airlab.run.pathology import (
    COLLAPSE_DISTINCT,
    COLLAPSE_ENTROPY,
    OVERFIT_RISE,
    distinct_ratio,
    overfit_metrics,
    sample_metrics,
    unigram_entropy,
)
from airlab.run.trainer import train
from airlab.run.workloads import SAMPLE_STREAMS, SAMPLE_TOKENS, Task, get_workload
from airlab.settings import get_settings

SAMPLE_KEYS = {"sample_distinct_2", "sample_entropy_ratio", "collapsed"}


def test_diversity_measures_by_hand() -> None:
    assert distinct_ratio([[1, 2, 1, 2, 1]]) == 2 / 4  # bigrams 12 21 12 21
    assert distinct_ratio([[1, 2], [1, 2]]) == 1 / 2  # pooled over streams
    assert unigram_entropy([[0, 1], [2, 3]]) == pytest.approx(math.log(4))
    assert unigram_entropy([[5, 5, 5]]) == 0.0


def test_overfit_rule_on_curves() -> None:
    def curve(vals: list[float], trains: list[float]) -> list[dict[str, float]]:
        pts = [{"step": 0.0, "val_loss": vals[0]}]
        return pts + [{"step": float(i), "val_loss": v, "train_loss": t}
                      for i, (v, t) in enumerate(zip(vals[1:], trains, strict=True), 1)]

    # Gain 2.0; a rise of 1% of it is noise, 20% is an overfit (while training still falls).
    assert overfit_metrics(curve([3, 1.5, 1.0, 1.02], [2, 1, 0.9]))[0]["overfit"] == 0
    flagged, info = overfit_metrics(curve([3, 1.5, 1.0, 1.4], [2, 1, 0.5]))
    assert flagged["overfit"] == 1 and info["val_loss_rise"] == pytest.approx(0.2)
    assert 0.2 > OVERFIT_RISE
    # Both losses rising is instability, not overfitting.
    assert overfit_metrics(curve([3, 1.5, 1.0, 1.4], [2, 1, 1.2]))[0]["overfit"] == 0


def _micro_task() -> tuple[Task, object]:
    cfg = resolve(dataset="shakespeare", budget={"tokens": 4000}, options=MICRO)
    return get_workload("charlm").setup(cfg, torch.device("cpu"), get_settings()), cfg


def test_normal_run_is_not_flagged(shared_data: Path) -> None:
    cfg = resolve(dataset="shakespeare", budget={"tokens": 20_000}, options=MICRO)
    r = train(cfg, settings=get_settings())
    assert r.state == "finished"
    m = r.metrics
    assert m["collapsed"] == 0 and m["overfit"] == 0
    # A barely trained model writes more varied text than the data, never much less.
    assert m["sample_entropy_ratio"] > 0.9 and m["sample_distinct_2"] > 0.9
    sample = r.info["sample"]
    assert 0 < len(sample["text"]) <= 200 and sample["prompt"]
    # Cheap: the sample costs a small fraction of even this micro run's training.
    assert sample["seconds"] < 0.5 * m["train_seconds"]


def test_sampling_leaves_model_and_rng_alone(shared_data: Path) -> None:
    task, _ = _micro_task()
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    task.model.train()
    rng = torch.get_rng_state()
    assert task.sample is not None
    s = task.sample(task.model)
    assert torch.equal(rng, torch.get_rng_state())
    assert task.model.training
    assert all(torch.equal(before[k], v) for k, v in task.model.state_dict().items())
    assert len(s.generated) == SAMPLE_STREAMS and {len(g) for g in s.generated} == {SAMPLE_TOKENS}
    assert [len(x) for x in s.reference] == [len(g) for g in s.generated]
    # Deterministic: its generator is seeded from the run's seed.
    assert task.sample(task.model).generated == s.generated


class _Biased(nn.Module):
    """A deliberately collapsed model: a trained model whose logits favour punctuation."""

    def __init__(self, inner: nn.Module, ids: list[int], vocab: int, strength: float) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("bias", torch.zeros(vocab))
        self.bias[ids] = strength

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        logits, _ = self.inner(x)
        return logits + self.bias, None


class _Looping(nn.Module):
    """A deliberately looping model: strongly repeats the token ``period`` steps back."""

    def __init__(self, inner: nn.Module, period: int) -> None:
        super().__init__()
        self.inner, self.period = inner, period

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        logits, _ = self.inner(x)
        T = x.shape[1]
        if T > self.period:
            boost = torch.zeros_like(logits)
            boost[:, self.period - 1 :, :].scatter_(2, x[:, : T - self.period + 1, None], 10.0)
            logits = logits + boost
        return logits, None


def test_collapsed_models_are_flagged(shared_data: Path) -> None:
    from airlab.data import load_text

    task, _ = _micro_task()
    opt = torch.optim.AdamW(task.model.parameters(), lr=3e-3)
    for _ in range(100):  # a little real training: the sample looks like text, not noise
        x, y = task.next_batch()
        task.loss_fn(task.model, x, y).backward()
        opt.step()
        opt.zero_grad()
    assert task.sample is not None
    normal = sample_metrics(task.sample(task.model))
    assert normal["collapsed"] == 0
    s = get_settings()
    vocab = load_text("shakespeare", data_dir=s.data_dir, cache_dir=s.cache_dir).vocab
    punct = [vocab.index(c) for c in " \n.,;:!?'-" if c in vocab]
    collapsed = sample_metrics(task.sample(_Biased(task.model, punct, len(vocab), 10.0)))
    assert collapsed["collapsed"] == 1
    assert collapsed["sample_entropy_ratio"] < COLLAPSE_ENTROPY
    # A loop keeps its letters' entropy but not its bigrams: the distinct ratio catches it.
    looping = sample_metrics(task.sample(_Looping(task.model, 4)))
    assert looping["collapsed"] == 1 and looping["sample_distinct_2"] < COLLAPSE_DISTINCT


def test_overfitting_run_is_flagged(shared_data: Path, tmp_path: Path) -> None:
    # 2 kB of text, 80 epochs: the validation loss bottoms out early, then rises by 18-28% of
    # its gain while the training loss keeps falling (measured on 2 seeds).
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text()[:2000]
    (tmp_path / "small.txt").write_text(text)
    cfg = resolve(dataset=f"file:{tmp_path / 'small.txt'}", budget={"epochs": 80},
                  options={**MICRO, "n_embd": 64, "lr": 3e-3, "weight_decay": 0.0,
                           "eval_points": 8})
    r = train(cfg, settings=get_settings())
    assert r.state == "finished"
    assert r.metrics["overfit"] == 1, r.info["overfit"]
    assert r.info["overfit"]["val_loss_rise"] > OVERFIT_RISE
    assert r.metrics["val_loss"] > r.metrics["best_val_loss"]
    assert r.metrics["collapsed"] == 0  # memorising text is not collapsing


def test_vision_runs_get_the_overfit_flag_and_no_sample() -> None:
    cfg = resolve(workload="vision", dataset="digits", budget={"epochs": 3},
                  options={"eval_points": 3})
    r = train(cfg, settings=get_settings())
    assert r.state == "finished" and r.metrics["overfit"] == 0
    assert not SAMPLE_KEYS & set(r.metrics) and "sample" not in r.info


def _points(vals: list[float], every: int = 10) -> list[dict[str, float]]:
    return [{"step": float(i * every), "val_loss": v} for i, v in enumerate(vals)]


def test_plausibility_flags_each_figure_no_honest_run_shows() -> None:
    from airlab.run.pathology import plausibility

    honest = _points([4.2, 3.0, 2.6, 2.4, 2.3, 2.25, 2.2, 2.18, 2.17])
    ok = {"val_loss": 2.17, "val_bpc": 2.17 / math.log(2), "train_eval_loss": 2.15}
    assert plausibility(honest, ok, chance_loss=math.log(65), floor_bpc=1.08) == (
        {"implausible": 0.0}, [])

    def reasons(curve: list[dict[str, float]], metrics: dict[str, float], **kw: float
                ) -> list[str]:
        flags, why = plausibility(curve, metrics, chance_loss=math.log(65), **kw)
        assert flags["implausible"] == len(why)
        return [w.split(":")[0] for w in why]

    # The patched evaluation: 0.28 held out against 2.78 on training data.
    assert reasons(honest, {**ok, "val_loss": 0.28, "train_eval_loss": 2.78}) == \
        ["val_below_train"]
    assert reasons(honest, {**ok, "val_bpc": 0.5}, floor_bpc=1.08) == ["below_floor"]
    assert reasons(_points([3.1, 2.8, 2.6, 2.5, 2.45]), ok) == ["starts_trained"]
    assert reasons(honest, {**ok, "val_loss": 2.0, "val_loss_before": 2.2,
                            "quality_drop": -0.2, "train_eval_loss": 2.2}) == \
        ["compression_improved"]
    # A model swapped in at the end: one late interval makes most of the run's whole gain.
    swapped = _points([4.2, 3.6, 3.4, 3.3, 3.25, 3.2, 3.18, 3.17, 1.9])
    assert reasons(swapped, ok) == ["curve_jump"]


def test_a_curve_that_drops_after_its_warmup_is_not_a_jump() -> None:
    """Measured at 100k tokens with the preset's 100 warmup steps (about 130 in all): the loss
    barely moves while the rate warms up, then falls fast. Judged from the warmup's end on."""
    from airlab.run.pathology import curve_jump, plausibility

    warm = _points([4.2, 4.18, 4.15, 4.1, 4.0, 3.9, 3.7, 3.3, 2.9, 2.7], every=16)
    ok = {"val_loss": 2.7, "train_eval_loss": 2.68}
    assert curve_jump(warm, warmup_steps=100)[0] < 0.3
    assert plausibility(warm, ok, chance_loss=math.log(65), warmup_steps=100)[1] == []
    # A fast learner's first interval after a short warmup: most of its gain, and honest.
    fast = _points([2.3, 0.9, 0.4, 0.3, 0.25, 0.22, 0.2, 0.19, 0.185], every=28)
    assert plausibility(fast, {"val_loss": 0.185, "train_eval_loss": 0.1},
                        chance_loss=math.log(10), warmup_steps=20)[1] == []
