"""Pathologies beyond NaN: a language model whose samples collapsed, a run that overfits.

A loss can look fine while the model has collapsed (the seeds tell of a character model that
after long training wrote only punctuation), and a validation loss can rise while the training
loss still falls. Both are measured here from data the trainer already has, as 0/1 metrics
the rubric and the critique read by name: ``collapsed``, ``overfit`` (with
``sample_distinct_2`` and ``sample_entropy_ratio`` beside ``collapsed``).

Thresholds were chosen from measured runs (see ``COLLAPSE_*`` and ``OVERFIT_*`` below).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TextSample:
    """Text a trained model wrote, beside the real text that followed the same prompts."""

    generated: list[list[int]]  # one list of sampled ids per prompt
    reference: list[list[int]]  # the real continuation of each prompt, same lengths
    prompt: str  # the first prompt, decoded (for a person reading the run)
    text: str  # the first generated continuations, decoded


# --------------------------------------------------------------------------- text samples

# A sample is collapsed when its token entropy is below COLLAPSE_ENTROPY x the real text's, or
# its distinct-bigram ratio below COLLAPSE_DISTINCT x the real text's (either suffices).
# Measured on tinyshakespeare, 8 prompts x 64 sampled characters, temperature 1, ratios as
# (entropy, distinct-2); * = measured with a 16-character sampling context instead of 12:
#   untrained tiny GPT*                                      1.27, 2.16  (noise: above 1)
#   micro GPT, 4k tokens (barely trained)*                   1.19, 2.03
#   micro GPT, 250 steps, lr 3e-3 (normal)                   1.01, 1.16
#   tiny GPT, 150k tokens (normal)*                          0.98, 1.12
#   tiny GPT, 600k tokens (normal)*                          1.02, 1.13
#   tiny GPT, 150k tokens, lr 0.05 (too high, not collapsed)* 1.03, 1.24
#   micro GPTs on a 2 kB file, 30-80 epochs (overfit)        1.03-1.12, 1.71-2.08
#   the micro GPT, logits +4 on punctuation (half degraded)  0.74, 0.70
#   the micro GPT, logits +6 on punctuation ("\n\n\n:\n\n")   0.46, 0.33  (collapsed)
#   the micro GPT, logits +10 on punctuation                 0.38, 0.20  (collapsed)
#   the micro GPT, repeating 8 back (+10: "Good O:\nGood O:") 0.84, 0.25  (collapsed: a loop)
#   the micro GPT, repeating 4 back (+10: "ood ood ood")     0.72, 0.13  (collapsed: a loop)
# Normal runs sit at 0.94-1.3 (entropy) and 1.04-2.2 (distinct); degenerate ones at or below
# 0.5 / 0.35. The thresholds leave the normal runs a margin of 1.5x (entropy) and 2x
# (distinct): entropy 0.6, distinct-2 0.5. A loop keeps its letters' entropy but not its
# bigrams: the distinct ratio catches it. (A model trained on text of only punctuation is not
# collapsed by this measure: its sample is as varied as its data, ratios 1.00, 1.00.)
COLLAPSE_ENTROPY = 0.6
COLLAPSE_DISTINCT = 0.5


def distinct_ratio(streams: Sequence[Sequence[int]], n: int = 2) -> float:
    """Distinct n-grams / all n-grams, n-grams taken within each stream, counted over all."""
    grams = [tuple(s[i : i + n]) for s in streams for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


def unigram_entropy(streams: Sequence[Sequence[int]]) -> float:
    """Plug-in entropy (nats) of the token frequencies over all streams."""
    counts = Counter(t for s in streams for t in s)
    total = sum(counts.values())
    if not total:
        return math.nan
    return -sum(c / total * math.log(c / total) for c in counts.values())


def sample_metrics(sample: TextSample) -> dict[str, float]:
    """Diversity of a sample against real text of the same length and shape.

    Both ratios compare like with like: the reference is the real continuation of the same
    prompts, so the plug-in entropy's downward bias and the distinct ratio's fall with length
    are the same on both sides and cancel (the corpus-wide unigram entropy would not).
    """
    d_gen, d_ref = distinct_ratio(sample.generated), distinct_ratio(sample.reference)
    h_gen, h_ref = unigram_entropy(sample.generated), unigram_entropy(sample.reference)
    distinct = d_gen / d_ref if d_ref > 0 else math.nan
    entropy = h_gen / h_ref if h_ref > 0 else math.nan
    collapsed = (entropy < COLLAPSE_ENTROPY) or (distinct < COLLAPSE_DISTINCT)
    return {"sample_distinct_2": distinct, "sample_entropy_ratio": entropy,
            "collapsed": float(collapsed)}


# --------------------------------------------------------------------------- overfitting


def train_loss_of(point: dict[str, float]) -> float:
    """A curve point's (or a run's) training loss: ``train_eval_loss`` where the trusted side
    evaluated the model on a fixed subset of the training data (runs of generated code), else
    ``train_loss``, the mean of the last batches' losses the trainer saw."""
    return float(point.get("train_eval_loss", point.get("train_loss", math.nan)))

# overfit = 1 when the last evaluation's validation loss is above the curve's minimum by more
# than OVERFIT_RISE of what training gained (the step-0 loss minus that minimum), while the
# training loss at the end is below its value at the minimum (training still improving).
# Relative to the gain, not to the loss itself: a digits classifier ends near 0.05 nats, where
# one confidently wrong image moves the loss by 1%. Measured rise / gain:
#   charlm micro, 30k tokens, shakespeare, 2 seeds           0 (the end is the minimum)
#   charlm tiny, 150k and 600k tokens, shakespeare           0
#   vision mlp, digits, 20 epochs, 2 seeds                   0.0013, 0.0002
#   vision mlp, digits, 200 epochs, 2 seeds                  0.0015, 0.0032  (val 0.035->0.042)
#   charlm 2x64, 4 kB file, 100 epochs, 2 seeds              0.41, 0.52  (val 2.37->3.18)
#   charlm 1x64, 2 kB file, 80 epochs, 2 seeds               0.18, 0.28
# The curve noise of normal runs stays below 0.5% of the gain; 5% is ten times that and still
# far below a real overfit, which it flags early (the 4 kB run from about 45 epochs on).
# (Digits classifiers hardly overfit in loss: once the training loss is ~0 the gradients
# vanish and the validation loss stays put.)
OVERFIT_RISE = 0.05


def overfit_metrics(curve: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, Any]]:
    """``overfit`` (0/1) from an evaluation curve, and the figures behind it for the run info."""
    points = [p for p in curve if math.isfinite(p.get("val_loss", math.nan))]
    if len(points) < 3:
        return {"overfit": 0.0}, {"overfit_rule": "fewer than 3 evaluations: not judged"}
    i_min = min(range(len(points)), key=lambda i: points[i]["val_loss"])
    v_0, v_min, v_end = (points[0]["val_loss"], points[i_min]["val_loss"],
                         points[-1]["val_loss"])
    gain = v_0 - v_min
    rise = (v_end - v_min) / gain if gain > 0 else 0.0
    t_min, t_end = train_loss_of(points[i_min]), train_loss_of(points[-1])
    # At step 0 there is no training loss: a run whose best validation loss is its untrained
    # one got worse by training (a divergence or a bad lr), not by overfitting.
    train_falling = math.isfinite(t_min) and math.isfinite(t_end) and t_end < t_min
    flag = rise > OVERFIT_RISE and train_falling
    return {"overfit": float(flag)}, {
        "val_loss_min": v_min, "val_loss_min_step": points[i_min].get("step", math.nan),
        "val_loss_end": v_end, "val_loss_rise": rise, "train_loss_at_min": t_min,
        "train_loss_end": t_end,
        "overfit_rule": f"val loss at the end above its minimum by more than {OVERFIT_RISE:.0%} "
                        "of the gain from step 0, while the train loss still falls",
    }


# --------------------------------------------------------------------------- plausibility

# Figures no honest run shows, whatever trained it: each is measured by the trusted side from
# its own evaluations and trips for any run, generated code or not. A flagged run's arm is
# never "better" and never credited (airlab.analysis); the reasons are kept in the run info.
# Where honest runs sit (benchmarks/plausibility.py: charlm tiny on Tiny Shakespeare and pycode
# at 60k-400k tokens with cosine, wsd, a 0.3 horizon, dropout 0.3, rope+rmsnorm, ptq_int8,
# prune_oneshot, wq_int4; a micro model at 12k; vision mlp and cnn on digits; 2 seeds each,
# 30 runs; docs/sandbox.md):
#
# - val_below_train: the held-out loss below VAL_TRAIN_RATIO x ``train_eval_loss`` (the same
#   model on fixed training windows, measured the same way). Honest runs: 0.987-1.053 (text),
#   1.27-14.8 (vision: the training loss goes to ~0). A patched evaluation once showed 0.10.
# - below_floor: text only: bits per character below the text's floor (workloads.FLOOR_*).
#   Honest runs: 2.76-8.03 x the floor.
# - starts_trained: the untrained model (step 0) already below STEP0_RATIO x the loss of a
#   uniform guess, ln(vocabulary) or ln(classes): knowledge no training paid for (a table of
#   statistics written into the code). Honest runs: 0.960-1.008 x.
# - compression_improved: a deploy step (quantize, prune) that made the held-out loss better
#   by more than COMPRESSION_GAIN of its value: compression loses information. Honest runs
#   (ptq_int8, prune_oneshot, wq_int4): quality_drop of +0.0000 to +0.0005 x the loss.
# - curve_jump: one evaluation interval in the second half of training (and after the warmup)
#   that gains more than CURVE_JUMP of the run's whole gain: a model swapped in late, not
#   trained. Early intervals are left out on purpose: a fast learner (a CNN on digits) makes
#   58 % of its whole gain in its first interval after a short warmup, and the end of a long
#   warmup is where any run falls fastest; a late swap is what no honest curve shows. Honest
#   runs: at most 0.18 of the whole gain (vision mlp, 2 epochs), 0.11 on text (micro GPT,
#   12k tokens), 0.00-0.03 at 60k-400k tokens with cosine, wsd and a 0.3 horizon.
VAL_TRAIN_RATIO = 0.75
STEP0_RATIO = 0.8
COMPRESSION_GAIN = 0.02
CURVE_JUMP = 0.5


def curve_jump(curve: Sequence[dict[str, float]], warmup_steps: int = 0
               ) -> tuple[float, tuple[tuple[float, float], float, float] | None]:
    """The largest gain of one evaluation interval in the second half of training (and after
    the warmup), as a share of the run's whole gain (step 0 to its last evaluation), and that
    interval ((steps), gain, whole gain); (0, None) when there is none."""
    points = [p for p in curve if math.isfinite(p.get("val_loss", math.nan))]
    best: tuple[float, tuple[tuple[float, float], float, float] | None] = (0.0, None)
    if len(points) < 3:
        return best
    whole = points[0]["val_loss"] - points[-1]["val_loss"]
    late = max(float(max(1, warmup_steps)), 0.5 * float(points[-1].get("step", 0)))
    if whole <= 0:
        return best
    for prev, cur in zip(points, points[1:], strict=False):
        if prev.get("step", 0) < late:
            continue
        gain = prev["val_loss"] - cur["val_loss"]
        if gain / whole > best[0]:
            best = (gain / whole, ((float(prev.get("step", math.nan)),
                                    float(cur.get("step", math.nan))), gain, whole))
    return best


def plausibility(curve: Sequence[dict[str, float]], metrics: dict[str, float], *,
                 chance_loss: float | None, floor_bpc: float | None = None,
                 warmup_steps: int = 0) -> tuple[dict[str, float], list[str]]:
    """``implausible`` (the number of checks tripped) and one line per tripped check.
    ``warmup_steps``: the curve jump is judged after the learning rate's warmup only (at its
    end the loss falls fastest)."""
    reasons: list[str] = []
    # The trained model's loss on training data, measured as the held-out one (eval mode):
    # the running mean of training batches would carry dropout and the model's past.
    val = metrics.get("val_loss_before", metrics.get("val_loss", math.nan))
    train = metrics.get("train_eval_loss", math.nan)
    if math.isfinite(val) and math.isfinite(train) and train > 0 and \
            val < VAL_TRAIN_RATIO * train:
        reasons.append(f"val_below_train: held-out loss {val:.4g} is below {VAL_TRAIN_RATIO:g} "
                       f"x the training loss {train:.4g}")
    bpc = metrics.get("val_bpc", math.nan)
    if floor_bpc is not None and math.isfinite(bpc) and bpc < floor_bpc:
        reasons.append(f"below_floor: {bpc:.3g} bits per character is below this text's floor "
                       f"of {floor_bpc:.3g}")
    points = [p for p in curve if math.isfinite(p.get("val_loss", math.nan))]
    if chance_loss and points and points[0].get("step", 0) == 0 and \
            points[0]["val_loss"] < STEP0_RATIO * chance_loss:
        reasons.append(f"starts_trained: the untrained model scores {points[0]['val_loss']:.4g}"
                       f", below {STEP0_RATIO:g} x a uniform guess ({chance_loss:.4g})")
    drop = metrics.get("quality_drop", math.nan)
    before = metrics.get("val_loss_before", math.nan)
    if math.isfinite(drop) and math.isfinite(before) and drop < -COMPRESSION_GAIN * abs(before):
        reasons.append(f"compression_improved: the deployed model's loss is {-drop:.4g} better "
                       "than the trained one's")
    ratio, jump = curve_jump(curve, warmup_steps)
    if jump is not None and ratio > CURVE_JUMP:
        (s0, s1), gain, whole = jump
        reasons.append(f"curve_jump: the loss fell {gain:.4g} between steps {s0:g} and {s1:g}, "
                       f"late in training: {ratio:.0%} of the run's whole gain ({whole:.4g})")
    return {"implausible": float(len(reasons))}, reasons
