"""Optimizers written in airlab.run.optim (Lion, Adafactor, Muon) and their switches."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import MICRO
from torch import nn

from airlab.models import build_gpt
from airlab.plan import resolve
from airlab.run.optim import OPTIMIZERS, Adafactor, Lion, muon_split, newton_schulz
from airlab.run.trainer import train
from airlab.techniques import get_technique

OPTIMIZER_SWITCHES = ("lion", "adafactor", "muon", "sgd_nesterov")




def test_newton_schulz_sends_singular_values_near_one() -> None:
    torch.manual_seed(0)
    g = torch.randn(64, 32) * 3.0  # any scale: NS normalises first
    before = torch.linalg.svdvals(g)
    s = torch.linalg.svdvals(newton_schulz(g))
    assert before.max() / before.min() > 3  # the input is far from orthogonal
    # Measured: min 0.68, max 1.04, mean 0.84 (the quintic coefficients trade exactness for
    # speed: 5 steps land every singular value in a band around 1, not on 1).
    assert s.min() > 0.5 and s.max() < 1.5
    assert 0.75 < float(s.mean()) < 1.05
    assert newton_schulz(g.T).shape == (32, 64)


def test_lion_moves_every_element_by_exactly_lr() -> None:
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(8, 5))
    p0 = p.detach().clone()
    p.grad = torch.randn(8, 5)
    Lion([p], lr=0.01, betas=(0.9, 0.99), weight_decay=0.0).step()
    delta = p.detach() - p0
    assert torch.allclose(delta.abs(), torch.full_like(delta, 0.01))
    assert torch.equal(delta.sign(), -p.grad.sign())  # first step: sign of the gradient
    # Decoupled decay: shrink first, then the same +-lr sign step.
    q = nn.Parameter(p0.clone())
    q.grad = p.grad.clone()
    Lion([q], lr=0.01, weight_decay=0.5).step()
    assert torch.allclose(q.detach(), p0 * (1 - 0.005) - 0.01 * p.grad.sign())


def test_adafactor_keeps_factored_second_moments_for_matrices() -> None:
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(6, 4))
    b = nn.Parameter(torch.randn(4))
    w0 = w.detach().clone()
    # A rank-1 gradient of positive entries: its square is rank 1, so the factored estimate
    # is exact and the first (beta2_t = 0) update is sign(g) = +1 in every element.
    w.grad = torch.outer(torch.rand(6) + 0.1, torch.rand(4) + 0.1)
    b.grad = torch.randn(4)
    opt = Adafactor([w, b], lr=0.01)
    opt.step()
    sw, sb = opt.state[w], opt.state[b]
    assert sw["exp_avg_sq_row"].shape == (6,) and sw["exp_avg_sq_col"].shape == (4,)
    assert "exp_avg_sq" not in sw  # no full 6x4 second moment
    assert sb["exp_avg_sq"].shape == (4,)  # vectors keep a full one
    assert torch.allclose(w.detach(), w0 - 0.01, atol=1e-6)


def test_muon_splits_hidden_matrices_from_the_rest() -> None:
    model = build_gpt(65, "tiny", n_layer=2, n_head=2, n_embd=32, block_size=16)
    matrices, rest = muon_split(model)
    hidden = {id(m.weight) for m in model.blocks.modules() if isinstance(m, nn.Linear)}
    assert {id(p) for p in matrices} == hidden
    assert id(model.wte.weight) in {id(p) for p in rest}  # embedding == tied lm_head
    assert all(p.dim() == 2 for p in matrices)
    assert len(matrices) + len(rest) == len(list(model.parameters()))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32),
                        nn.ReLU(), nn.Linear(32, 10))
    m_ids = {id(p) for p in muon_split(mlp)[0]}
    assert m_ids == {id(mlp[3].weight)}  # first (input) and last (output) layers use AdamW


def test_muon_switch_keeps_the_lr_ratio_under_the_schedule() -> None:
    cfg = resolve(budget={"tokens": 4000}, use=["muon"], options={**MICRO, "weight_decay": 0.0})
    assert cfg.optimizer == "muon" and cfg.lr == 0.02
    assert cfg.options["muon_adam_lr"] == pytest.approx(1e-3)  # the lr before the switch
    assert cfg.min_lr / cfg.lr == pytest.approx(0.1)  # same relative floor as the preset
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4))
    opt = OPTIMIZERS["muon"](model, **cfg.model_dump(exclude={"model", "options",
                                                              "techniques"}))
    hooks = get_technique("muon").create(cfg.to_dict())
    assert hooks is not None
    opt = hooks.on_optimizer(opt, model)
    muon_groups = [g for g in opt.param_groups if g["use_muon"]]
    adam_groups = [g for g in opt.param_groups if not g["use_muon"]]
    assert [p for g in muon_groups for p in g["params"]] == [model[1].weight]
    assert all(g["lr_scale"] == pytest.approx(0.05) for g in adam_groups)
    # The trainer writes the schedule's lr into every group; AdamW's first step then moves
    # each element by lr * lr_scale, and Muon's tall/square update has spectral size ~lr.
    for g in opt.param_groups:
        g["lr"] = 0.01
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(32, 8)).square().mean().backward()
    opt.step()
    first = model[0].weight.detach() - before[0]
    assert torch.allclose(first.abs(), torch.full_like(first, 0.01 * 0.05), rtol=1e-3)
    s = torch.linalg.svdvals(model[1].weight.detach() - before[2]) / 0.01
    assert 0.5 < float(s.max()) < 1.5


@pytest.mark.parametrize("name", OPTIMIZER_SWITCHES)
def test_each_optimizer_trains_a_micro_gpt(name: str, shared_data) -> None:
    r = train(resolve(budget={"tokens": 6000}, use=[name], options=MICRO))
    assert r.state == "finished", r.reason
    assert r.curve[0]["val_loss"] > 0
    assert math.isfinite(r.metrics["val_loss"])
    assert r.metrics["val_loss"] < r.curve[0]["val_loss"] - 0.1


# Training every switch on charlm and vision: tests/techniques/test_contract.py.


def test_lion_switch_sets_a_smaller_lr_and_larger_decay() -> None:
    base = resolve(budget={"tokens": 4000}, options=MICRO)
    lion = resolve(budget={"tokens": 4000}, use=["lion"], options=MICRO)
    assert lion.optimizer == "lion"
    assert lion.lr == pytest.approx(base.lr / 3)
    assert lion.lr * lion.weight_decay == pytest.approx(base.lr * base.weight_decay)
    explicit = resolve(budget={"tokens": 4000}, use=["lion"], options={**MICRO, "lr": 1e-4})
    assert explicit.lr == 1e-4  # an explicit option beats the switch


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_torch_optimizers_take_the_fused_path_with_the_same_update(name: str) -> None:
    """AdamW and SGD are built with torch's fused kernel where it has one (CPU float32 here):
    the same update as the default foreach path, to float rounding, over a few real steps."""
    def steps(fused: bool | None) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4))
        opt = OPTIMIZERS[name](model, lr=1e-2, weight_decay=0.1, beta1=0.9, beta2=0.99)
        if not fused:  # the same groups and settings on torch's default path
            opt = type(opt)([{k: v for k, v in g.items() if k != "fused"}
                             for g in opt.param_groups])
        gen = torch.Generator().manual_seed(1)
        for _ in range(20):
            x = torch.randn(32, 8, generator=gen)
            model(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return opt, [p.detach().clone() for p in model.parameters()]

    opt, fused = steps(True)
    assert opt.defaults["fused"] is True
    ref_opt, ref = steps(None)
    assert not ref_opt.defaults.get("fused")
    torch.manual_seed(0)
    init = [p.detach() for p in nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16),
                                              nn.Linear(16, 4)).parameters()]
    apart = max(float((a - b).abs().max()) for a, b in zip(fused, ref, strict=True))
    moved = min(float((a - b).abs().max()) for a, b in zip(fused, init, strict=True))
    assert apart < 1e-5 and moved > 1e-3, (apart, moved)  # every tensor trained, both alike


@pytest.mark.filterwarnings("ignore:Complex modules:UserWarning")
def test_fused_falls_back_where_torch_has_no_kernel() -> None:
    """Complex parameters have no fused AdamW kernel: the default path is taken, not an error."""
    model = nn.Linear(4, 4).to(torch.complex64)
    opt = OPTIMIZERS["adamw"](model, lr=1e-3, weight_decay=0.0, beta1=0.9, beta2=0.99)
    assert not opt.defaults.get("fused")
    model(torch.ones(2, 4, dtype=torch.complex64)).abs().sum().backward()
    opt.step()
