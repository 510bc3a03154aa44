"""Batch size: the lr scaling rule as stated in a config or an arm, and the noise scale."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import MICRO
from torch import nn

from airlab.errors import AirlabError
from airlab.plan import plan_runs, resolve
from airlab.run.trainer import train
from airlab.run.workloads import get_workload
from airlab.settings import get_settings
from airlab.spec import Arm, ExperimentSpec
from airlab.techniques.batch_size import measure_noise_scale, noise_scale_from_norms


@pytest.mark.parametrize(("rule", "factor"), [("none", 1.0), ("linear", 4.0), ("sqrt", 2.0)])
def test_lr_scaling_rules(rule: str, factor: float) -> None:
    base = resolve(budget={"tokens": 4000}, options=MICRO)  # batch 8, lr 1e-3, min_lr 1e-4
    cfg = resolve(budget={"tokens": 4000},
                  options={**MICRO, "batch_size": 32, "lr_scaling": rule, "base_batch_size": 8})
    assert cfg.lr == pytest.approx(base.lr * factor)
    assert cfg.min_lr == pytest.approx(base.min_lr * factor)
    assert cfg.lr_scaling == rule and cfg.batch_size == 32


def test_lr_scaling_needs_a_reference_batch() -> None:
    with pytest.raises(AirlabError, match="needs base_batch_size"):
        resolve(budget={"tokens": 4000}, options={**MICRO, "lr_scaling": "sqrt"})


def test_an_experiment_arm_states_its_scaling_rule() -> None:
    spec = ExperimentSpec(
        name="batch-rule", area="batch_size", budget={"tokens": 4000}, seeds=[42],
        options={**MICRO, "base_batch_size": 8},
        arms=[Arm(name="b32_linear", options={"batch_size": 32, "lr_scaling": "linear"}),
              Arm(name="b32_sqrt", options={"batch_size": 32, "lr_scaling": "sqrt"}),
              Arm(name="b32_fixed", options={"batch_size": 32})])
    lr = {p.arm: p.config.lr for p in plan_runs(spec)}
    assert lr == pytest.approx({"baseline": 1e-3, "b32_linear": 4e-3, "b32_sqrt": 2e-3,
                                "b32_fixed": 1e-3})
    keys = {p.arm: p.run_key for p in plan_runs(spec)}
    assert len(set(keys.values())) == 4  # the rule is part of the run's identity


def test_estimators_are_exact_on_exact_expectations() -> None:
    # E|g_B|^2 = |G|^2 + tr(Sigma) / B for a batch of B independent samples.
    g2, tr = 0.5, 30.0
    out = noise_scale_from_norms(g2 + tr / 4, g2 + tr / 64, 4, 64)
    assert out["grad_norm_sq"] == pytest.approx(g2)
    assert out["grad_trace_cov"] == pytest.approx(tr)
    assert out["gns_b_simple"] == pytest.approx(tr / g2)
    # Noise swamps the signal (the |G|^2 estimate is negative): not measurable.
    assert math.isnan(noise_scale_from_norms(1.0, 0.01, 4, 64)["gns_b_simple"])


class _LinearRegression:
    """y = x . w* + N(0, sigma^2), x ~ N(0, I_d); loss 0.5 (x . w - y)^2 averaged over a batch.

    Per-sample gradient g = (x . delta - eps) x with delta = w - w*: G = delta and, by Isserlis,
    E[g g^T] = (|delta|^2 + sigma^2) I + 2 delta delta^T, so
    tr(Sigma) = d (|delta|^2 + sigma^2) + |delta|^2 and B_simple = tr(Sigma) / |delta|^2.
    """

    unit = "samples"

    def __init__(self, d: int, sigma: float, batch: int, seed: int) -> None:
        self.d, self.sigma, self.batch = d, sigma, batch
        self.gen = torch.Generator().manual_seed(seed)
        self.w_star = torch.randn(d, generator=self.gen)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(self.batch, self.d, generator=self.gen)
        return x, x @ self.w_star + self.sigma * torch.randn(self.batch, generator=self.gen)

    @staticmethod
    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * (m(x).squeeze(-1) - y).square().mean()


def test_noise_scale_recovers_the_analytic_value_on_linear_regression() -> None:
    d, sigma = 10, 1.0
    task = _LinearRegression(d, sigma, batch=16, seed=0)
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        delta = torch.randn(d, generator=torch.Generator().manual_seed(1))
        delta *= 1.0 / delta.norm()  # |G|^2 = 1
        model.weight.copy_((task.w_star + delta)[None])
    truth_trace = d * (1.0 + sigma**2) + 1.0  # = 21
    out = measure_noise_scale(model, task, n_batches=400)
    # Measured over 6 data seeds: 20.5 .. 22.1 against 21.
    assert out["grad_norm_sq"] == pytest.approx(1.0, rel=0.15)
    assert out["grad_trace_cov"] == pytest.approx(truth_trace, rel=0.15)
    assert out["gns_b_simple"] == pytest.approx(truth_trace, rel=0.15)
    assert "gns_b_simple_tokens" not in out  # samples, not text
    assert model.weight.grad is None and model.training


def test_noise_scale_on_a_micro_gpt(shared_data) -> None:
    r = train(resolve(budget={"tokens": 4000}, use=["noise_scale"], options=MICRO))
    assert r.state == "finished", r.reason
    m = r.metrics
    assert math.isfinite(m["val_loss"])
    assert math.isfinite(m["gns_b_simple"]) and m["gns_b_simple"] > 0
    assert m["gns_b_simple_tokens"] == pytest.approx(m["gns_b_simple"] * MICRO["block_size"])
    assert m["grad_norm_sq"] > 0 and m["grad_trace_cov"] > 0
    # Called directly: no gradients are left behind and the model is back in train mode.
    cfg = resolve(budget={"tokens": 4000}, use=["noise_scale"], options=MICRO)
    task = get_workload("charlm").setup(cfg, torch.device("cpu"), get_settings())
    task.model.eval()
    out = measure_noise_scale(task.model, task, n_batches=4)
    assert out["gns_b_simple"] > 0
    assert task.model.training
    assert all(p.grad is None for p in task.model.parameters())


def test_noise_scale_contract_vision() -> None:
    r = train(resolve(workload="vision", budget={"samples": 640}, use=["noise_scale"],
                      options={"eval_points": 1}))
    assert r.state == "finished", r.reason
    assert math.isfinite(r.metrics["val_loss"]) and r.metrics["grad_trace_cov"] > 0
    assert "gns_b_simple_tokens" not in r.metrics
