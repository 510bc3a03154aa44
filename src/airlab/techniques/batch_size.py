"""Techniques: batch size.

The learning-rate rule for a changed batch size is a config matter (``lr_scaling: linear|sqrt``
with ``base_batch_size``, applied in ``airlab.plan.resolve``). This module adds a measurement:

``noise_scale`` estimates the simple gradient noise scale of McCandlish et al. (2018),
"An Empirical Model of Large-Batch Training": B_simple = tr(Sigma) / |G|^2, where G is the true
gradient and Sigma the per-sample gradient covariance. B_simple approximates the critical batch
size: well below it, doubling the batch about halves the steps needed; well above it, a larger
batch buys little.

How it is measured (at the end of training, on the trained weights): K = ``gns_batches`` fresh
training batches of the run's batch size B_small each give a gradient g_i; their mean is the
gradient of one batch of B_big = K * B_small. With |g_small|^2 = mean_i |g_i|^2 and
|g_big|^2 = |mean_i g_i|^2 the unbiased estimators are

    |G|^2     = (B_big |g_big|^2 - B_small |g_small|^2) / (B_big - B_small)
    tr(Sigma) = (|g_small|^2 - |g_big|^2) / (1 / B_small - 1 / B_big)

Caveats: the ratio of two noisy estimates is itself noisy (K batches give one sample of each),
and it describes the end of training only (the noise scale grows as the loss falls). Units:
samples (sequences for text); ``gns_b_simple_tokens`` multiplies by the sequence length. When
the |G|^2 estimate is not positive (noise swamps the signal at this K), B_simple is reported as
nan (not measurable): raise ``gns_batches``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from airlab.techniques.base import Hooks, Option, Technique, register


def noise_scale_from_norms(sq_small: float, sq_big: float, b_small: float,
                           b_big: float) -> dict[str, float]:
    """The McCandlish et al. estimators from mean squared gradient norms at two batch sizes."""
    if not b_big > b_small > 0:
        raise ValueError(f"need 0 < b_small < b_big, got {b_small}, {b_big}")
    grad_sq = (b_big * sq_big - b_small * sq_small) / (b_big - b_small)
    trace = (sq_small - sq_big) / (1.0 / b_small - 1.0 / b_big)
    b_simple = trace / grad_sq if grad_sq > 0 else math.nan
    return {"gns_b_simple": b_simple, "grad_norm_sq": grad_sq, "grad_trace_cov": trace}


def measure_noise_scale(model: nn.Module, task: Any, n_batches: int = 8) -> dict[str, float]:
    """Estimate B_simple from ``n_batches`` batches of ``task.next_batch()`` (see module doc).

    Leaves no gradients on the model and puts it back in train mode.
    """
    if n_batches < 2:
        raise ValueError(f"gns_batches={n_batches} must be at least 2")
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()  # the gradients the optimizer saw were taken in train mode
    total = [torch.zeros(p.shape, dtype=torch.float32, device=p.device) for p in params]
    sq_small = 0.0
    b_small, seq_len = 0, 1
    for _ in range(n_batches):
        model.zero_grad(set_to_none=True)
        x, y = task.next_batch()
        b_small = int(x.shape[0])
        seq_len = int(x.shape[1]) if task.unit == "tokens" and x.dim() > 1 else 1
        task.loss_fn(model, x, y).backward()
        with torch.no_grad():
            norm_sq = 0.0
            for acc, p in zip(total, params, strict=True):
                if p.grad is None:
                    continue
                g = p.grad.float()  # fp32 sums even for bf16 weights
                acc.add_(g)
                norm_sq += float(g.square().sum())
        sq_small += norm_sq / n_batches
    model.zero_grad(set_to_none=True)
    sq_big = sum(float((acc / n_batches).square().sum()) for acc in total)
    out = noise_scale_from_norms(sq_small, sq_big, b_small, b_small * n_batches)
    if task.unit == "tokens":
        out["gns_b_simple_tokens"] = out["gns_b_simple"] * seq_len
    return out


class NoiseScaleHooks(Hooks):
    def on_finish(self, model: Any, task: Any) -> dict[str, float]:
        return measure_noise_scale(model, task, int(self.options["gns_batches"]))


register(Technique(
    "noise_scale", "batch_size",
    "measure the gradient noise scale B_simple (critical batch size estimate) after training",
    options={"gns_batches": Option(8, int, 2, 4096, help="batches of gradients to compare")},
    hooks=NoiseScaleHooks,
))
