"""Quantization techniques: measured compression, closeness to fp32, the STE, full runs."""

import math

import pytest
import torch
from conftest import MICRO
from torch import nn

from airlab.errors import AirlabError
from airlab.measure import model_bytes
from airlab.models import build_gpt
from airlab.plan import resolve
from airlab.run.trainer import train
from airlab.techniques.quantization import (
    FakeQuantLinear,
    WeightOnlyLinear,
    fake_quant,
    pack_nibbles,
    quantizable_linears,
    quantize_dynamic_int8,
    unpack_nibbles,
)

QUANT = ["ptq_int8", "wq_int8", "wq_int4", "qat"]




@pytest.fixture(scope="module")
def tiny_gpt() -> nn.Module:
    torch.manual_seed(0)
    return build_gpt(65, "tiny").eval()


def _linear_bytes(model: nn.Module, names: list[str]) -> int:
    return sum(model_bytes(model.get_submodule(n)) for n in names)


def test_dynamic_int8_shrinks_linear_weights_about_4x_and_keeps_the_tie(tiny_gpt) -> None:
    q, names = quantize_dynamic_int8(tiny_gpt)
    assert "lm_head" not in names and len(names) == 4 * 4  # qkv, proj, fc, proj per block
    fp, qb = _linear_bytes(tiny_gpt, names), _linear_bytes(q, names)
    assert 3.5 < fp / qb < 4.1
    # Tied embeddings: lm_head stays fp32 and shared, so the matrix is stored (counted) once.
    assert q.lm_head.weight is q.wte.weight
    assert model_bytes(q) == model_bytes(tiny_gpt) - fp + qb
    x = torch.randint(0, 65, (2, 16))
    with torch.no_grad():
        ref, got = tiny_gpt(x)[0], q(x)[0]
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize(("bits", "lo", "hi"), [(8, 3.5, 4.0), (4, 7.0, 8.0)])
def test_weight_only_storage_ratio_and_error(tiny_gpt, bits, lo, hi) -> None:
    names = quantizable_linears(tiny_gpt)
    qs = {n: WeightOnlyLinear.from_linear(tiny_gpt.get_submodule(n), bits) for n in names}
    fp = _linear_bytes(tiny_gpt, names)
    qb = sum(model_bytes(m) for m in qs.values())
    assert lo < fp / qb <= hi
    for n, m in qs.items():
        w = tiny_gpt.get_submodule(n).weight
        # Round-to-nearest: every weight within half a step of its row's grid.
        assert ((m.dequantize() - w).abs() <= m.scale / 2 + 1e-7).all()


def test_nibble_packing_round_trips_odd_widths() -> None:
    q = torch.randint(-7, 8, (5, 7))
    packed = pack_nibbles(q)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 4)
    assert torch.equal(unpack_nibbles(packed, 7), q.to(torch.int8))


def test_ste_passes_the_gradient_inside_the_clip_range() -> None:
    w = torch.tensor([[-1.0, -0.2, 0.05, 0.3, 2.0]], requires_grad=True)
    scale = torch.tensor([[0.5 / 127]])  # clip range [-0.5, 0.5]: -1 and 2 are clipped
    up = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    out = fake_quant(w, 8, scale)
    out.backward(up)
    assert torch.equal(w.grad, torch.tensor([[0.0, 2.0, 3.0, 4.0, 0.0]]))
    assert out[0, 0] == -0.5 and out[0, 4] == 0.5
    # With its own per-row scale nothing is clipped: the gradient is the upstream one.
    w2 = torch.randn(4, 6, requires_grad=True)
    g = torch.randn(4, 6)
    fake_quant(w2, 4).backward(g)
    assert torch.equal(w2.grad, g)


def test_qat_layer_shares_parameters_and_converts_exactly() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(12, 5)
    fq = FakeQuantLinear.from_linear(lin, 4)
    assert fq.weight is lin.weight and fq.bias is lin.bias
    real = WeightOnlyLinear.from_linear(fq, 4)
    x = torch.randn(3, 12)
    assert torch.allclose(fq(x), real(x), atol=1e-6)
    assert not torch.allclose(lin(x), real(x), atol=1e-4)  # 4 bits does change the output


@pytest.mark.parametrize("name", QUANT)
def test_train_with_quantization_reports_the_quantized_model(name) -> None:
    r = train(resolve(budget={"tokens": 20000}, use=[name], options={**MICRO, "latency": True}))
    m = r.metrics
    assert r.state == "finished" and math.isfinite(m["val_loss"])
    assert abs(m["quality_drop"]) < 0.05  # a briefly trained micro model stays close to fp32
    assert m["quality_drop"] == pytest.approx(m["val_loss"] - m["val_loss_before"], abs=1e-6)
    lo = 6.0 if name == "wq_int4" else 3.5
    assert m["quant_compression"] > lo and m["quant_layers"] == 4
    assert m["model_bytes"] < 4 * m["params"] + m["quant_bytes_fp32"]  # the shipped model shrank
    assert m["latency_ms_b1"] > 0 and m["latency_ms_batch"] > 0


@pytest.mark.parametrize("name", QUANT)
def test_contract_charlm_and_vision(name) -> None:
    r = train(resolve(budget={"tokens": 4000}, use=[name], options=MICRO))
    assert r.state == "finished" and math.isfinite(r.metrics["val_loss"])
    r = train(resolve(workload="vision", preset="mlp", budget={"epochs": 1}, use=[name]))
    m = r.metrics
    assert r.state == "finished" and math.isfinite(m["val_loss"])
    assert "val_acc" in m and "val_acc_before" in m and m["quant_layers"] == 3


def test_quant_bits_is_checked_at_resolve() -> None:
    with pytest.raises(AirlabError, match="quant_bits"):
        resolve(budget={"tokens": 4000}, use=["qat"], options={**MICRO, "quant_bits": 1})
    cfg = resolve(budget={"tokens": 4000}, use=["qat"], options={**MICRO, "quant_bits": 4})
    assert cfg.options["quant_bits"] == 4
