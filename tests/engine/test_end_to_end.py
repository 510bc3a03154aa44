"""End-to-end on real data: pinned losses of a small run, and the issue's quality bar (slow)."""

import pytest
import torch
from conftest import MICRO

from airlab.plan import resolve
from airlab.run.trainer import train

# Measured on torch 2.13.0 CPU, 1 thread. Different CPUs may change the last digits (float
# summation order); a change beyond the tolerance means the training recipe changed.
PINNED = [4.178739, 3.990638, 3.824883, 3.742393, 3.715266]


def test_pinned_losses_of_a_small_shakespeare_run(shared_data) -> None:
    if not torch.__version__.startswith("2.13."):
        pytest.skip(f"losses pinned on torch 2.13, this is {torch.__version__}")
    r = train(resolve(dataset="shakespeare", budget={"tokens": 8192}, seed=42,
                      options={**MICRO, "eval_points": 4}))  # 1 thread (conftest)
    assert [p["val_loss"] for p in r.curve] == pytest.approx(PINNED, abs=2e-3)


@pytest.mark.slow
def test_tiny_preset_reaches_2_05_on_shakespeare_in_1m_tokens(shared_data) -> None:
    """The well-known CPU recipe: 4 layers, 4 heads, width 128, context 64, batch 12."""
    torch.set_num_threads(2)  # as `airlab train` runs it on this machine
    r = train(resolve(dataset="shakespeare", preset="tiny", budget={"tokens": 1e6}, seed=42))
    assert r.state == "finished"
    assert r.metrics["val_loss"] <= 2.05, r.metrics
