"""Techniques: quantization (post-training dynamic int8, weight-only int8/int4, QAT).

What gets quantized: every ``nn.Linear`` that owns its weight. A Linear whose weight is shared
with another module -- the GPT's ``lm_head`` tied to the token embedding ``wte`` -- is left in
fp32 and stays tied, so the shared matrix is stored (and counted by ``model_bytes``) once, in
fp32. Quantizing it would break the tie and ship two copies (fp32 lookup table + int8 head),
which is larger than keeping it tied for small vocabularies. Convolutions are not quantized.

Metrics returned by every quantization switch (on top of the trainer's ``params`` /
``model_bytes`` / latency, which it measures on the quantized ``task.model``):

- ``val_loss`` (and ``val_bpc`` / ``val_acc``): of the quantized model, measured by the trainer
  on what ``deploy`` returns; the trainer keeps the trained model's figures as
  ``val_loss_before`` (``val_acc_before``, ...).
- ``quality_drop``: val_loss - val_loss_before (the trainer computes it for every deploy step).
- ``quant_layers``, ``quant_bits``; ``quant_bytes_fp32`` / ``quant_bytes``: ``model_bytes`` of
  the quantized layers before and after; ``quant_compression`` = their ratio (measured).

Note that ``params`` counts ``nn.Parameter`` elements only: integer weights live in buffers, so
a quantized model reports fewer params; ``quant_weights`` gives the number of weights held in
integer form. For wq_*/qat, params + quant_weights = the fp32 model's count; ptq_int8 also
moves the quantized layers' (fp32) biases into torch's packed objects, out of ``params``.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from airlab import measure
from airlab.errors import AirlabError
from airlab.techniques.base import Hooks, Option, Technique, register

# ---------------------------------------------------------------------------------------------
# Helpers shared by all variants.


def quantizable_linears(model: nn.Module) -> list[str]:
    """Names of the Linear layers that own their weight (tied weights are skipped)."""
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and uses[id(m.weight)] == 1]


def _linear(model: nn.Module, name: str) -> nn.Linear:
    """The Linear at ``name`` (the only layers quantized here)."""
    m = model.get_submodule(name)
    assert isinstance(m, nn.Linear), f"{name} is a {type(m).__name__}"
    return m


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def _check_bits(bits: Any) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise AirlabError(f"quant_bits={bits!r} must be an integer from 2 to 8")
    return bits


def channel_scales(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel symmetric scales (out, 1): max |w| of the row maps to the top level."""
    # An all-zero row (e.g. after pruning) would give scale 0 and 0/0; any positive scale works.
    return weight.detach().abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / _qmax(bits)


def quantize_rows(weight: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer levels in [-qmax, qmax] (symmetric: -2^(b-1) is unused so 0 is exact)."""
    q = _qmax(bits)
    return torch.clamp(torch.round(weight / scale), -q, q)


# ---------------------------------------------------------------------------------------------
# Weight-only integer Linear: int8 storage, or two 4-bit values per byte for bits <= 4.


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(out, in) levels in [-8, 7] -> (out, ceil(in/2)) uint8, even column in the low nibble."""
    u = (q.to(torch.int16) + 8).to(torch.uint8)  # offset to 0..15
    if u.shape[1] % 2:
        u = F.pad(u, (0, 1), value=8)  # pad with the code for 0
    return u[:, 0::2] | (u[:, 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """Inverse of pack_nibbles: (out, ceil(in/2)) uint8 -> (out, in) int8 levels."""
    low = (packed & 15).to(torch.int8)
    high = (packed >> 4).to(torch.int8)
    both = torch.stack((low, high), dim=-1).reshape(packed.shape[0], -1)
    return both[:, :in_features] - 8


class WeightOnlyLinear(nn.Module):
    """A Linear whose weight is stored as integers plus one fp32 scale per output row.

    Forward dequantizes the weight and runs a float matmul: storage shrinks, compute does not
    (on CPU this is usually slower than fp32 -- the latency metrics show it).
    """

    qweight: torch.Tensor
    scale: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bits: int, bias: bool = True,
                 device: Any = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.bits = in_features, out_features, bits
        self.packed = bits <= 4
        cols = math.ceil(in_features / 2) if self.packed else in_features
        dtype = torch.uint8 if self.packed else torch.int8
        self.register_buffer("qweight", torch.zeros(out_features, cols, dtype=dtype,
                                                    device=device))
        self.register_buffer("scale", torch.ones(out_features, 1, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None

    @classmethod
    def from_linear(cls, lin: nn.Linear, bits: int) -> WeightOnlyLinear:
        w = lin.weight.detach().float()
        new = cls(lin.in_features, lin.out_features, bits, lin.bias is not None, w.device)
        scale = channel_scales(w, bits)
        q = quantize_rows(w, scale, bits)
        new.qweight.copy_(pack_nibbles(q) if new.packed else q.to(torch.int8))
        new.scale.copy_(scale)
        if lin.bias is not None and new.bias is not None:
            new.bias.data.copy_(lin.bias.detach())
        return new

    def dequantize(self) -> torch.Tensor:
        q = unpack_nibbles(self.qweight, self.in_features) if self.packed else self.qweight
        return q.float() * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dequantize().to(x.dtype)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, w, b)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bits={self.bits}, packed={self.packed}")


# ---------------------------------------------------------------------------------------------
# Fake quantization with a straight-through estimator (for QAT).


class _FakeQuantSTE(torch.autograd.Function):
    """Forward: round to the integer grid and clip. Backward: identity inside the clip range,
    zero outside (the clipped values do not move the output, so they get no gradient)."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, scale: torch.Tensor, qmax: int) -> torch.Tensor:
        inside = (w / scale).abs() <= qmax
        ctx.save_for_backward(inside)
        return torch.clamp(torch.round(w / scale), -qmax, qmax) * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None


def fake_quant(w: torch.Tensor, bits: int, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Quantize-dequantize ``w`` per output row; gradients pass straight through."""
    if scale is None:
        scale = channel_scales(w, bits)  # detached: no gradient through the scale
    return _FakeQuantSTE.apply(w, scale, _qmax(bits))


class FakeQuantLinear(nn.Linear):
    """nn.Linear that trains through fake-quantized weights (same parameters, same names)."""

    bits: int = 8

    @classmethod
    def from_linear(cls, lin: nn.Linear, bits: int) -> FakeQuantLinear:
        # Built on the meta device, then handed the original Parameters: the optimizer and the
        # rest of the model see exactly the same tensors.
        new = cls(lin.in_features, lin.out_features, bias=lin.bias is not None, device="meta")
        new.weight = lin.weight
        new.bias = lin.bias
        new.bits = bits
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, fake_quant(self.weight, self.bits), self.bias)


# ---------------------------------------------------------------------------------------------
# Post-training dynamic int8 (torch.ao): int8 weights, activations quantized on the fly.


def _dynamic_linear_cls() -> type[nn.Module]:
    """torch.ao's dynamic Linear, with a state dict that shows the int8 weight it holds.

    torch keeps the weight in an opaque packed object that ``state_dict`` returns as a tuple,
    so ``measure.model_bytes`` would count nothing for it. This subclass adds the weight as an
    int8 tensor, its (scale, zero point) as fp32 and the fp32 bias: the bytes a checkpoint of
    the quantized layer holds. The extra keys are dropped again when loading.
    """
    import torch.ao.nn.quantized.dynamic as nnqd

    class DynamicInt8Linear(nnqd.Linear):
        def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
            super()._save_to_state_dict(destination, prefix, keep_vars)
            w = self.weight()
            destination[prefix + "weight_int8"] = w.int_repr()
            destination[prefix + "weight_qparams"] = torch.tensor(
                [w.q_scale(), w.q_zero_point()], dtype=torch.float32)
            b = self.bias()
            if b is not None:
                destination[prefix + "bias_fp32"] = b.detach()

        def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
            for k in ("weight_int8", "weight_qparams", "bias_fp32"):
                state_dict.pop(prefix + k, None)
            super()._load_from_state_dict(state_dict, prefix, *args)

    return DynamicInt8Linear


class OnCPU(nn.Module):
    """Runs a CPU-only (dynamically quantized) model for inputs on another device: inputs go
    to the CPU and outputs come back, so evaluate() and latency work unchanged (latency then
    includes the transfers)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: Any) -> Any:
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
        out = self.inner(*(a.cpu() if isinstance(a, torch.Tensor) else a for a in args))
        if device is None or device.type == "cpu":
            return out
        if isinstance(out, tuple):
            return tuple(o.to(device) if isinstance(o, torch.Tensor) else o for o in out)
        return out.to(device)


def quantize_dynamic_int8(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A CPU copy of ``model`` with its own-weight Linears dynamically quantized to int8."""
    names = quantizable_linears(model)
    cpu = copy.deepcopy(model).cpu()  # deepcopy keeps weight ties
    with warnings.catch_warnings():
        # torch.ao.quantization warns that it is deprecated in favour of torchao (not
        # installed); the eager dynamic path still works in this torch.
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(
            cpu, set(names), dtype=torch.qint8, mapping={nn.Linear: _dynamic_linear_cls()},
            inplace=True)
    return q, names


# ---------------------------------------------------------------------------------------------
# Hooks


def _weight_only(model: nn.Module, bits: int, names: list[str]) -> nn.Module:
    """Copy of ``model`` with the named Linears replaced by WeightOnlyLinear."""
    q = copy.deepcopy(model)
    for name in names:
        _set_module(q, name, WeightOnlyLinear.from_linear(_linear(q, name), bits))
    return q


class _QuantHooks(Hooks):
    """Shared deploy: quantize and measure the quantized layers; the trainer evaluates it."""

    bits = 8

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.stats: dict[str, float] = {}

    def quantize(self, model: nn.Module) -> tuple[nn.Module, list[str]]:
        """Return the deployable quantized model and the names (in ``model``) it quantized."""
        raise NotImplementedError

    def deploy(self, model: nn.Module, task: Any) -> nn.Module:
        qmodel, names = self.quantize(model)
        inner = qmodel.inner if isinstance(qmodel, OnCPU) else qmodel
        bytes_fp32 = sum(measure.model_bytes(model.get_submodule(n)) for n in names)
        bytes_q = sum(measure.model_bytes(inner.get_submodule(n)) for n in names)
        self.stats = {
            "quant_bits": float(self.bits),
            "quant_layers": float(len(names)),
            "quant_weights": float(sum(_linear(model, n).weight.numel() for n in names)),
            "quant_bytes_fp32": float(bytes_fp32),
            "quant_bytes": float(bytes_q),
            "quant_compression": bytes_fp32 / bytes_q if bytes_q else 1.0,
        }
        return qmodel

    def on_finish(self, model: nn.Module, task: Any) -> dict[str, float]:
        return dict(self.stats)


class PTQInt8(_QuantHooks):
    bits = 8

    def quantize(self, model: nn.Module) -> tuple[nn.Module, list[str]]:
        q, names = quantize_dynamic_int8(model)
        if next(model.parameters()).device.type != "cpu":
            q = OnCPU(q)  # torch's dynamic int8 kernels are CPU-only
        return q, names


class WeightOnlyInt8(_QuantHooks):
    bits = 8

    def quantize(self, model: nn.Module) -> tuple[nn.Module, list[str]]:
        names = quantizable_linears(model)
        return _weight_only(model, self.bits, names), names


class WeightOnlyInt4(WeightOnlyInt8):
    bits = 4


class QAT(_QuantHooks):
    """Train through fake-quantized weights, then ship the real integer weight-only model."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.bits = _check_bits(self.options.get("quant_bits", 8))

    def on_model(self, model: nn.Module) -> nn.Module:
        for name in quantizable_linears(model):
            _set_module(model, name, FakeQuantLinear.from_linear(_linear(model, name),
                                                                 self.bits))
        return model

    def quantize(self, model: nn.Module) -> tuple[nn.Module, list[str]]:
        # The integer model uses the same per-row scales as the fake quantizer, so it computes
        # what training saw (quality_drop ~ 0 up to float rounding).
        names = [n for n, m in model.named_modules() if isinstance(m, FakeQuantLinear)]
        return _weight_only(model, self.bits, names), names


# One quantization of the shipped model: the switches exclude each other.
QUANT_SWITCHES = ("ptq_int8", "wq_int8", "wq_int4", "qat")


def _others(name: str) -> tuple[str, ...]:
    return tuple(n for n in QUANT_SWITCHES if n != name)


register(Technique(
    name="ptq_int8", area="quantization",
    help="post-training dynamic int8 of Linear layers (torch.ao, CPU); reports the quantized "
         "model's val_loss, quality_drop and bytes",
    hooks=PTQInt8, workloads=("charlm", "vision"), excludes=_others("ptq_int8")))
register(Technique(
    name="wq_int8", area="quantization",
    help="weight-only int8 Linear weights, per-output-channel symmetric scales",
    hooks=WeightOnlyInt8, workloads=("charlm", "vision"), excludes=_others("wq_int8")))
register(Technique(
    name="wq_int4", area="quantization",
    help="weight-only int4 Linear weights (two per byte), per-output-channel symmetric scales",
    hooks=WeightOnlyInt4, workloads=("charlm", "vision"), excludes=_others("wq_int4")))
register(Technique(
    name="qat", area="quantization",
    help="quantization-aware training: fake-quant Linear weights (STE), then weight-only int",
    options={"quant_bits": Option(8, int, 2, 8, help="integer bits of the shipped weights")},
    hooks=QAT, workloads=("charlm", "vision"), excludes=_others("qat")))
