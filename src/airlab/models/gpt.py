"""A small decoder-only transformer for character-level language modelling.

The architecture is deliberately configurable (positions, norm, activation, attention
variant) so that techniques can be compared against the same baseline by flipping one
field of :class:`GPTConfig`. Structure that later techniques rely on:

* ``GPT.blocks`` is an ``nn.ModuleList`` and every block maps ``x -> x`` with shape
  (B, T, C), so a block can be wrapped (e.g. activation checkpointing) without knowing
  its internals.
* Every matmul is an ``nn.Linear`` with a stable name (``attn.qkv``, ``attn.proj``,
  ``mlp.fc``, ``mlp.gate``, ``mlp.proj``, ``lm_head``) so quantization and pruning can
  find them by type or by name. With ``mlp_rank`` set, each MLP matrix is a
  :class:`LowRankLinear` whose two factors are ``nn.Linear`` modules named
  ``mlp.fc.down`` / ``mlp.fc.up`` (likewise ``gate`` and ``proj``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from airlab.errors import AirlabError, did_you_mean, lookup

POSITIONS = ("learned", "rope", "none")
NORMS = ("layernorm", "rmsnorm")
ACTIVATIONS = ("gelu", "relu2", "swiglu")


def _swiglu_hidden(n_embd: int) -> int:
    """Default SwiGLU width: 8/3 * n_embd, rounded up to a multiple of 8.

    SwiGLU has three matrices instead of two, so a hidden width of 8/3*C keeps the MLP
    parameter count (3 * C * 8C/3 = 8C^2) equal to a 4*C two-matrix MLP; rounding to a
    multiple of 8 keeps matmul shapes friendly to vectorised kernels.
    """
    return 8 * math.ceil(8 * n_embd / 3 / 8)


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 64  # maximum context length T
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    n_kv_head: int | None = None  # None = n_head (MHA); 1 = MQA; otherwise GQA
    # None = 4 * n_embd, or for swiglu 8/3 * n_embd rounded up to a multiple of 8
    mlp_hidden: int | None = None
    dropout: float = 0.0
    positions: str = "learned"  # learned | rope | none
    norm: str = "layernorm"  # layernorm | rmsnorm
    qk_norm: bool = False  # RMSNorm q and k over the head dim before attention
    activation: str = "gelu"  # gelu | relu2 | swiglu
    bias: bool = False  # biases in Linear and LayerNorm layers
    tie_embeddings: bool = True  # lm_head shares its weight with the token embedding
    window: int | None = None  # sliding-window causal attention width; None = full causal
    rope_base: float = 10000.0
    # Low-rank MLP: each MLP matrix W (out x in) becomes up @ down with inner width mlp_rank.
    mlp_rank: int | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise AirlabError(f"{name}={value!r} must be a positive integer")
        if self.n_embd % self.n_head != 0:
            raise AirlabError(
                f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}",
                f"try n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}",
            )
        if self.n_kv_head is not None and (
            not isinstance(self.n_kv_head, int)
            or self.n_kv_head < 1
            or self.n_head % self.n_kv_head != 0
        ):
            divisors = [d for d in range(1, self.n_head + 1) if self.n_head % d == 0]
            raise AirlabError(
                f"n_kv_head={self.n_kv_head!r} must divide n_head={self.n_head}",
                f"choose from {divisors} or None for one KV head per query head",
            )
        if self.mlp_hidden is not None and (
            not isinstance(self.mlp_hidden, int) or self.mlp_hidden < 1
        ):
            raise AirlabError(f"mlp_hidden={self.mlp_hidden!r} must be a positive integer or None")
        if self.mlp_rank is not None:
            limit = min(self.n_embd, self.hidden)
            if (not isinstance(self.mlp_rank, int) or isinstance(self.mlp_rank, bool)
                    or not 1 <= self.mlp_rank <= limit):
                # A rank above min(n_embd, hidden) adds parameters without adding capacity.
                raise AirlabError(
                    f"mlp_rank={self.mlp_rank!r} must be an integer in [1, {limit}] or None",
                    "e.g. mlp_rank = n_embd // 4 (the lowrank_mlp switch picks one)",
                )
        if not 0.0 <= self.dropout < 1.0:
            raise AirlabError(f"dropout={self.dropout!r} must be in [0, 1)")
        for name, choices in (
            ("positions", POSITIONS),
            ("norm", NORMS),
            ("activation", ACTIVATIONS),
        ):
            value = getattr(self, name)
            if value not in choices:
                raise AirlabError(f"unknown {name}={value!r}", did_you_mean(str(value), choices))
        if self.positions == "rope":
            if self.head_dim % 2 != 0:
                raise AirlabError(
                    f"positions='rope' needs an even head dim, but n_embd/n_head="
                    f"{self.n_embd}/{self.n_head}={self.head_dim}",
                    "change n_embd or n_head so that n_embd // n_head is even",
                )
            if not self.rope_base > 0:
                raise AirlabError(f"rope_base={self.rope_base!r} must be positive")
        if self.window is not None and (not isinstance(self.window, int) or self.window < 1):
            raise AirlabError(
                f"window={self.window!r} must be a positive integer or None (full causal)"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def hidden(self) -> int:
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        return _swiglu_hidden(self.n_embd) if self.activation == "swiglu" else 4 * self.n_embd


class _RMSNormFn(torch.autograd.Function):
    """float32 RMSNorm with its gradient written out: y = x * r, r = rsqrt(mean(x^2) + eps),
    out = y * w;  dx = r (g w - y mean(g w y)),  dw = sum over rows of g y.

    Autograd of the composite (pow, mean, rsqrt, two products) keeps five intermediates and
    runs about twice the element-wise passes; on a CPU at the tiny preset's sizes this cuts
    the norm's forward and backward time by about half (measured; the gradients match
    autograd's to float32 rounding, see tests/models)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        r = torch.rsqrt(x.square().mean(dim=-1, keepdim=True).add_(eps))
        y = x * r
        ctx.save_for_backward(y, r, weight)
        return y * weight

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        y, r, weight = ctx.saved_tensors
        gw = (g * y).reshape(-1, y.shape[-1]).sum(dim=0)
        gy = g * weight
        gx = (gy - y * (gy * y).mean(dim=-1, keepdim=True)).mul_(r)
        return gx, gw, None


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dim (no mean subtraction, no bias)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            out: torch.Tensor = _RMSNormFn.apply(x, self.weight, self.eps)
            return out
        # Normalise in float32 so low-precision activations don't lose the tiny rms.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def _make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd)
    return nn.LayerNorm(config.n_embd, bias=config.bias)


@functools.cache
def _sdpa_has_gqa() -> bool:
    """Whether this torch's scaled_dot_product_attention accepts enable_gqa (torch >= 2.5)."""
    q = torch.zeros(1, 2, 1, 2)
    kv = torch.zeros(1, 1, 1, 2)
    try:
        F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
    except (TypeError, RuntimeError):
        return False
    return True


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    # Pairs dimension i with i + D/2 (the "split halves" RoPE layout).
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class _RopeFn(torch.autograd.Function):
    """out = x cos + rot(x) sin, with the gradient written out: dx = g cos + rot^T(g sin),
    where rot^T = -rot (a quarter turn's transpose is its inverse).

    The same arithmetic as autograd of the formula with about half the element-wise passes
    in the backward (no saved intermediates beyond cos and sin)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return torch.addcmul(x * cos, _rotate_half(x), sin)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        return g * cos - _rotate_half(g * sin), None, None


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (..., T, D) by the angles whose cos and sin are given (broadcast)."""
    if x.dtype == cos.dtype == sin.dtype and not cos.requires_grad and not sin.requires_grad:
        out: torch.Tensor = _RopeFn.apply(x, cos, sin)
        return out
    return x * cos + _rotate_half(x) * sin


class CausalSelfAttention(nn.Module):
    # Buffers, declared so type checkers know they are tensors (only set when used).
    rope_cos: torch.Tensor  # (1, 1, block_size, head_dim)
    rope_sin: torch.Tensor  # (1, 1, block_size, head_dim)
    band_mask: torch.Tensor  # (block_size, block_size) bool, True = may attend

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.kv_heads
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        self.window = config.window
        # One fused projection for q, k and v; k and v have n_kv_head heads each (GQA/MQA).
        qkv_out = (self.n_head + 2 * self.n_kv_head) * self.head_dim
        self.qkv = nn.Linear(config.n_embd, qkv_out, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_drop = nn.Dropout(config.dropout)
        self.q_norm: nn.Module | None = None
        self.k_norm: nn.Module | None = None
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim)
            self.k_norm = RMSNorm(self.head_dim)

        self.use_rope = config.positions == "rope"
        if self.use_rope:
            inv_freq = config.rope_base ** (
                -torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim
            )  # (D/2,)
            angles = torch.outer(torch.arange(config.block_size, dtype=torch.float32), inv_freq)
            angles = torch.cat((angles, angles), dim=-1)  # (T, D)
            # Non-persistent: derived from the config, so they stay out of checkpoints.
            self.register_buffer("rope_cos", angles.cos()[None, None], persistent=False)
            self.register_buffer("rope_sin", angles.sin()[None, None], persistent=False)
        if self.window is not None:
            pos = torch.arange(config.block_size)
            offset = pos[:, None] - pos[None, :]  # (T, T): query index - key index
            band = (offset >= 0) & (offset < self.window)  # True = may attend
            self.register_buffer("band_mask", band, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        H, Hkv, D = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.qkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
        q, k = q.reshape(B, T, H, D), k.reshape(B, T, Hkv, D)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # over D, before the transpose (contiguous)
        q = q.transpose(1, 2)  # (B, H, T, D)
        k = k.transpose(1, 2)  # (B, Hkv, T, D)
        v = v.view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)
        if self.use_rope:
            cos, sin = self.rope_cos[:, :, :T], self.rope_sin[:, :, :T]  # (1, 1, T, D)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        kwargs: dict = {}
        if Hkv != H:
            if _sdpa_has_gqa():
                kwargs["enable_gqa"] = True
            else:
                # Query head h reads KV head h // (H // Hkv), matching enable_gqa's grouping.
                k = k.repeat_interleave(H // Hkv, dim=1)  # (B, H, T, D)
                v = v.repeat_interleave(H // Hkv, dim=1)  # (B, H, T, D)
        if self.window is None:
            kwargs["is_causal"] = True
        else:
            kwargs["attn_mask"] = self.band_mask[:T, :T]  # (T, T) bool
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, **kwargs
        )  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y))


class LowRankLinear(nn.Module):
    """A Linear layer factorized as W ~ up.weight @ down.weight with inner width ``rank``.

    Costs rank * (in + out) weights (and per-token multiply-adds) instead of in * out. Both
    factors are plain ``nn.Linear`` modules, so quantization and pruning still find them.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)  # V: in -> rank
        self.up = nn.Linear(rank, out_features, bias=bias)  # U: rank -> out

    def reset_factors(self, std: float) -> None:
        """Initialise so the product up @ down has entries of standard deviation ``std``.

        down ~ N(0, 1/in) keeps the rank-wide bottleneck at the input's scale; up ~
        N(0, std^2 * in / rank) then gives Var((UV)_ij) = rank * (1/in) * std^2 * in / rank.
        """
        nn.init.normal_(self.down.weight, mean=0.0, std=1.0 / math.sqrt(self.in_features))
        nn.init.normal_(self.up.weight, mean=0.0,
                        std=std * math.sqrt(self.in_features / self.rank))
        if self.up.bias is not None:
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))  # (..., in) -> (..., rank) -> (..., out)


class _ReLU2Fn(torch.autograd.Function):
    """relu(h)^2 with the gradient 2 relu(h) g written out: one saved tensor and two passes
    instead of autograd's relu, product, product-rule sum and relu mask."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor) -> torch.Tensor:
        r = F.relu(h)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return (g * r).mul_(2.0)


def _mlp_linear(config: GPTConfig, n_in: int, n_out: int) -> nn.Module:
    if config.mlp_rank is None:
        return nn.Linear(n_in, n_out, bias=config.bias)
    return LowRankLinear(n_in, n_out, config.mlp_rank, bias=config.bias)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.activation = config.activation
        hidden = config.hidden
        self.fc = _mlp_linear(config, config.n_embd, hidden)
        if self.activation == "swiglu":
            self.gate = _mlp_linear(config, config.n_embd, hidden)
        self.proj = _mlp_linear(config, hidden, config.n_embd)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)  # (B, T, hidden)
        if self.activation == "gelu":
            h = F.gelu(h)
        elif self.activation == "relu2":
            h = _ReLU2Fn.apply(h)
        else:  # swiglu: silu(gate) scales the linear "value" path elementwise
            h = F.silu(self.gate(x)) * h
        return self.drop(self.proj(h))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = _make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = _make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe: nn.Embedding | None = None
        if config.positions == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = _make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2 scheme: N(0, 0.02) everywhere; the two projections that write into the
        # residual stream get 0.02/sqrt(2*n_layer) so the stream's variance does not grow
        # with depth (each block adds two such contributions).
        resid_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = resid_std if name.endswith(("attn.proj", "mlp.proj")) else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
        # Low-rank factors: the loop above gave each factor std 0.02, which would shrink their
        # product to ~0.02^2 * sqrt(rank); re-initialise so the product has the dense std.
        for name, module in self.named_modules():
            if isinstance(module, LowRankLinear):
                module.reset_factors(resid_std if name.endswith("mlp.proj") else 0.02)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = idx.shape
        if T > self.config.block_size:
            raise AirlabError(
                f"sequence length {T} exceeds block_size={self.config.block_size}",
                "crop the input or build the model with a larger block_size",
            )
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            pos = torch.arange(T, device=idx.device)
            x = x + self.wpe(pos)  # (B, T, C) + (T, C)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        x = self.ln_f(x)
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            # Mean over tokens in nats; computed in float32 for a stable log-softmax.
            loss = F.cross_entropy(logits.float().view(B * T, -1), targets.reshape(B * T))
        return logits, loss

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count, shared (tied) tensors counted once.

        ``non_embedding=True`` drops the input lookup tables (position embedding and,
        when untied, the token embedding). The output projection is always counted,
        since it is a real matmul; with tied embeddings the shared matrix counts once,
        as the output projection (the nanoGPT / Kaplan-style convention).
        """
        n = sum(p.numel() for p in self.parameters())  # parameters() de-duplicates ties
        if non_embedding:
            if self.wpe is not None:
                n -= self.wpe.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.wte.weight.numel()
        return n

    def matmul_params(self) -> int:
        """Weights that take part in a matmul per token: block Linears + lm_head.

        A low-rank MLP matrix counts both factors, rank * (in + out), which is exactly its
        per-token multiply-add count (x is multiplied by down, then by up).
        """
        n = sum(m.weight.numel() for m in self.blocks.modules() if isinstance(m, nn.Linear))
        return n + self.lm_head.weight.numel()

    def flops_per_token(self, training: bool = True, *, seq_len: int | None = None) -> float:
        """Approximate FLOPs per token (PaLM appendix-B accounting).

        forward = 2 * N_mm + 4 * n_layer * n_embd * T_eff
          * N_mm = weights of every Linear in the blocks plus lm_head (vocab * n_embd,
            counted even when tied); norms, biases, softmax and embedding lookups ignored.
          * 4 * n_layer * n_embd * T_eff = q @ k^T plus att @ v, each 2 * T_eff * n_embd
            per token per layer (the full context, not halved for the causal mask).
          * T_eff = seq_len (default block_size), capped at window for local attention.
        training = 3 * forward (backward costs twice the forward), i.e.
          6 * N_mm + 12 * n_layer * n_embd * T_eff;  inference = forward.
        """
        t = self.config.block_size if seq_len is None else seq_len
        if self.config.window is not None:
            t = min(t, self.config.window)
        forward = 2 * self.matmul_params() + 4 * self.config.n_layer * self.config.n_embd * t
        return float(3 * forward if training else forward)


@torch.no_grad()
def generate(model: nn.Module, idx: torch.Tensor, new_tokens: int, *, block_size: int,
             temperature: float = 1.0, generator: torch.Generator | None = None
             ) -> torch.Tensor:
    """Sample ``new_tokens`` continuations of each prompt row of ``idx`` (B, P): (B, new_tokens).

    Works on any model that maps ids (B, T) to logits (B, T, V) or to ``(logits, loss)``, so a
    technique's wrapped or deployed form generates too. No KV cache: each step runs the last
    ``block_size`` tokens again (fine for the few hundred tokens a pathology check samples).
    Draws only from ``generator`` (global RNG untouched); leaves the model's train/eval mode
    as it found it.
    """
    was_training = model.training
    model.eval()
    seq = idx
    try:
        for _ in range(new_tokens):
            out = model(seq[:, -block_size:])
            logits = (out[0] if isinstance(out, tuple) else out)[:, -1, :].float()  # (B, V)
            probs = F.softmax(logits / max(temperature, 1e-6), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
            seq = torch.cat([seq, nxt.to(seq.device)], dim=1)
    finally:
        model.train(was_training)
    return seq[:, idx.shape[1]:]


# Architecture presets: GPTConfig field values (vocab_size comes from the data set).
PRESETS: dict[str, dict] = {
    # nanoGPT's shakespeare_char recipe scaled for a laptop CPU (~0.8M parameters).
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0),
    # nanoGPT's shakespeare_char GPU recipe (~10.7M parameters).
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2),
    # A modern (Llama-style) stack: RoPE, RMSNorm, SwiGLU, GQA. 86,563,840 parameters
    # with vocab 65; with activation="gelu" the same widths give only 63.5M, so SwiGLU is
    # the variant closest to 88M.
    "seed88m": dict(
        n_layer=22,
        n_head=8,
        n_kv_head=4,
        n_embd=512,
        mlp_hidden=2048,
        block_size=1024,
        activation="swiglu",
        positions="rope",
        norm="rmsnorm",
        dropout=0.0,
    ),
}

# Trainer hints that go with each preset (kept apart: they are not model fields).
PRESET_TRAINING: dict[str, dict] = {
    "tiny": dict(
        batch_size=12,
        lr=1e-3,
        min_lr=1e-4,
        warmup_steps=100,
        max_steps=2000,
        weight_decay=0.1,
        beta2=0.99,  # small batches of few tokens: a slightly shorter second-moment memory
        grad_clip=1.0,
    ),
    "small": dict(
        batch_size=32,
        lr=1e-3,
        min_lr=1e-4,
        warmup_steps=100,
        max_steps=5000,
        weight_decay=0.1,
        beta2=0.99,
        grad_clip=1.0,
    ),
    "seed88m": dict(
        batch_size=16,
        lr=6e-4,
        min_lr=6e-5,
        warmup_steps=200,
        weight_decay=0.1,
        beta2=0.95,
        grad_clip=1.0,
    ),
}

_CONFIG_FIELDS = tuple(f.name for f in fields(GPTConfig))


def build_gpt(vocab_size: int, preset: str = "tiny", **overrides: object) -> GPT:
    """Build a GPT from a named preset, with any GPTConfig field overridden."""
    values = dict(lookup(PRESETS, preset, "GPT preset"))
    for key in overrides:
        if key not in _CONFIG_FIELDS:
            raise AirlabError(
                f"unknown GPT config field '{key}'", did_you_mean(key, _CONFIG_FIELDS)
            )
    values.update(overrides)
    values["vocab_size"] = vocab_size
    return GPT(GPTConfig(**values))
