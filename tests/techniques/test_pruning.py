"""Pruning techniques: exact sparsity, persistent masks, the cubic schedule, real shrinking."""

import math

import pytest
import torch
from conftest import MICRO
from torch import nn

from airlab.errors import AirlabError
from airlab.measure import count_params, model_bytes
from airlab.models import build_gpt, build_vision
from airlab.plan import resolve
from airlab.run.trainer import train
from airlab.techniques.pruning import (
    Gradual,
    OneShot,
    Structured,
    csr_bytes,
    cubic_sparsity,
    global_magnitude_masks,
    measured_sparsity,
    prunable_weights,
    sparse_bytes_est,
)

PRUNE = ["prune_oneshot", "prune_gradual", "prune_structured"]




def _gpt(**kw) -> nn.Module:
    torch.manual_seed(0)
    return build_gpt(65, "tiny", n_layer=2, **kw)


def _opts(**kw) -> dict:
    return {"options": kw}


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_global_magnitude_reaches_the_requested_sparsity(sparsity) -> None:
    model = _gpt()
    weights = prunable_weights(model)
    # Block Linears only: not the embeddings nor the tied lm_head.
    assert weights and all(n.startswith("blocks.") for n in weights)
    before = {n: w.detach().abs().clone() for n, w in weights.items()}
    masks = global_magnitude_masks(weights, sparsity)
    with torch.no_grad():
        for n, m in masks.items():
            weights[n].mul_(m)
    assert abs(measured_sparsity(weights) - sparsity) < 0.01
    # Global: every kept weight was at least as large as every pruned one, across layers.
    kept = torch.cat([before[n][m.bool()] for n, m in masks.items()])
    pruned = torch.cat([before[n][~m.bool()] for n, m in masks.items()])
    assert kept.min() >= pruned.max()


def test_masks_stay_applied_through_further_optimizer_steps() -> None:
    model = _gpt()
    hooks = OneShot(_opts(prune_sparsity=0.5, prune_at=0.5))
    hooks.on_model(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 65, (4, 16))
    for step in range(1, 9):
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad()
        hooks.after_step(model, step, (step - 1) / 8)
    assert hooks.masks is not None and hooks.set_at == 0.5
    zero = {n: m == 0 for n, m in hooks.masks.items()}
    for n, w in hooks.weights.items():
        assert (w[zero[n]] == 0).all()
    assert abs(measured_sparsity(hooks.weights) - 0.5) < 0.01


def test_cubic_schedule_matches_the_formula() -> None:
    s_i, s_f, p0, p1 = 0.1, 0.8, 0.1, 0.8
    assert cubic_sparsity(0.0, s_i, s_f, p0, p1) == s_i
    assert cubic_sparsity(p0, s_i, s_f, p0, p1) == s_i
    mid = (p0 + p1) / 2
    assert cubic_sparsity(mid, s_i, s_f, p0, p1) == pytest.approx(s_f + (s_i - s_f) * 0.5**3)
    assert cubic_sparsity(p1, s_i, s_f, p0, p1) == s_f
    assert cubic_sparsity(1.0, s_i, s_f, p0, p1) == s_f
    # The hooks follow it: updates every prune_every steps, sparsity never goes down, and the
    # final value is reached at prune_end.
    model = _gpt()
    hooks = Gradual(_opts(prune_sparsity=0.8, prune_initial=0.0, prune_start=0.1,
                          prune_end=0.8, prune_every=10))
    hooks.on_model(model)
    seen = []
    for step in range(1, 101):
        hooks.after_step(model, step, (step - 1) / 100)
        seen.append(measured_sparsity(hooks.weights))
    assert seen[9] == 0.0 and seen == sorted(seen)
    assert abs(seen[49] - cubic_sparsity(0.49, 0.0, 0.8, 0.1, 0.8)) < 0.01
    # Updates at steps 20..80 (progress 0.19..0.79), then once at progress 0.8 for s_f.
    assert abs(seen[-1] - 0.8) < 0.01 and hooks.updates == 8 and hooks.set_at == 0.8


def test_csr_estimate_is_computed_not_assumed() -> None:
    w = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]])
    assert csr_bytes(w) == 3 * (4 + 4) + 3 * 4
    model = _gpt()
    weights = prunable_weights(model)
    for sparsity, smaller in ((0.3, False), (0.9, True)):
        masks = global_magnitude_masks(weights, sparsity)
        with torch.no_grad():
            for n, m in masks.items():
                weights[n].mul_(m)
        assert (sparse_bytes_est(model, weights) < model_bytes(model)) is smaller


@pytest.mark.parametrize("build", [
    lambda: _gpt(),
    lambda: _gpt(activation="swiglu", bias=True),
    lambda: build_vision("mlp", (1, 8, 8), 10),
    lambda: build_vision("cnn", (1, 8, 8), 10),
    lambda: build_vision("cnn", (1, 8, 8), 10, separable=True),
], ids=["gpt", "gpt_swiglu_bias", "mlp", "cnn", "cnn_separable"])
def test_structured_rebuild_is_smaller_and_matches_the_masked_model(build) -> None:
    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():  # nonzero biases, so dropping a unit's bias matters too
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
                m.bias.normal_(0, 0.1)
    hooks = Structured(_opts(prune_sparsity=0.5, prune_at=0.5))
    hooks.on_model(model)
    hooks.prune(model, 0.5)
    small = hooks.rebuild(model)
    assert count_params(small) < 0.75 * count_params(model)
    assert model_bytes(small) < model_bytes(model)
    x = torch.randint(0, 65, (3, 16)) if hasattr(model, "blocks") else torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        a, b = model(x), small(x)
    a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", PRUNE)
def test_train_with_pruning(name) -> None:
    r = train(resolve(budget={"tokens": 8000}, use=[name],
                      options={**MICRO, "prune_sparsity": 0.7, "latency": True}))
    m = r.metrics
    assert r.state == "finished" and math.isfinite(m["val_loss"])
    assert m["prune_target"] == 0.7 and m["latency_ms_b1"] > 0
    if name == "prune_structured":
        assert m["neuron_sparsity"] == pytest.approx(0.7, abs=0.01)
        assert m["params_deployed"] < m["params_dense"] == m["params"]
    else:
        assert abs(m["sparsity"] - 0.7) < 0.01
        assert 0 < m["sparse_bytes_est"] < m["model_bytes"]  # 70% sparse: CSR pays off


@pytest.mark.parametrize("name", PRUNE)
def test_contract_charlm_and_vision(name) -> None:
    r = train(resolve(budget={"tokens": 4000}, use=[name], options=MICRO))
    assert r.state == "finished" and math.isfinite(r.metrics["val_loss"])
    r = train(resolve(workload="vision", preset="mlp", budget={"epochs": 1}, use=[name]))
    assert r.state == "finished" and math.isfinite(r.metrics["val_loss"])
    assert "sparsity" in r.metrics


def test_pruning_options_are_checked_at_resolve() -> None:
    with pytest.raises(AirlabError, match="prune_sparsity"):
        resolve(budget={"tokens": 4000}, use=["prune_oneshot"],
                options={**MICRO, "prune_sparsity": 1.5})
    with pytest.raises(AirlabError, match="prune_end"):
        resolve(budget={"tokens": 4000}, use=["prune_gradual"],
                options={**MICRO, "prune_start": 0.5, "prune_end": 0.2})
