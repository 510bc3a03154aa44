"""Tests for the character-level GPT: every architecture variant runs, attention is causal
(and local when windowed), parameter/FLOP accounting matches hand computation, and the
model actually learns."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from airlab.errors import AirlabError
from airlab.models import (
    GPT,
    PRESET_TRAINING,
    PRESETS,
    GPTConfig,
    build_gpt,
    model_bytes,
    num_params,
)
from airlab.models.gpt import ACTIVATIONS, NORMS, POSITIONS

V = 65


def _micro(**kw: object) -> GPT:
    torch.manual_seed(0)
    base: dict = dict(vocab_size=V, n_layer=1, n_head=4, n_embd=32, block_size=16)
    base.update(kw)
    return GPT(GPTConfig(**base))


def _tokens(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


VARIANTS = list(itertools.product(POSITIONS, NORMS, ACTIVATIONS, (False, True), (None, 1, 2)))


def test_every_variant_trains_one_step() -> None:
    x, y = _tokens(2, 16), _tokens(2, 16, seed=1)
    for positions, norm, activation, qk_norm, n_kv_head in VARIANTS:
        model = _micro(
            positions=positions,
            norm=norm,
            activation=activation,
            qk_norm=qk_norm,
            n_kv_head=n_kv_head,
        )
        logits, loss = model(x, y)
        assert logits.shape == (2, 16, V)
        assert loss is not None and torch.isfinite(loss), (positions, norm, activation)
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert len(VARIANTS) == 3 * 2 * 3 * 2 * 3


def test_initial_loss_is_uniform_guess() -> None:
    torch.manual_seed(0)
    model = build_gpt(V, "tiny")
    _, loss = model(_tokens(8, 64), _tokens(8, 64, seed=1))
    assert loss is not None
    assert abs(loss.item() - math.log(V)) < 0.1


@pytest.mark.parametrize(
    "kw",
    [
        dict(positions="learned"),
        dict(positions="rope"),
        dict(positions="none"),
        dict(positions="rope", window=4),
        dict(positions="learned", n_kv_head=1, qk_norm=True, activation="swiglu"),
    ],
    ids=["learned", "rope", "none", "rope-window4", "learned-mqa-qknorm-swiglu"],
)
def test_causality(kw: dict) -> None:
    model = _micro(n_layer=2, **kw).eval()
    x = _tokens(2, 16)
    t = 7
    x2 = x.clone()
    x2[:, t + 1 :] = (x2[:, t + 1 :] + 1) % V  # change every future token
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(x2)
    assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-6)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :], atol=1e-4)  # the change is seen


def test_sliding_window_receptive_field() -> None:
    x = _tokens(1, 16)
    t = 10

    def changed_at_t(model: GPT, pos: int) -> bool:
        x2 = x.clone()
        x2[0, pos] = (x2[0, pos] + 1) % V
        with torch.no_grad():
            return not torch.allclose(model(x)[0][0, t], model(x2)[0][0, t], atol=1e-6)

    one = _micro(n_layer=1, window=4, positions="rope").eval()
    # One layer with window 4: position t sees exactly t-3..t.
    assert [p for p in range(t + 1) if changed_at_t(one, p)] == [7, 8, 9, 10]
    # Stacked windows compose: two layers reach back 2 * (4 - 1) = 6 tokens.
    two = _micro(n_layer=2, window=4, positions="rope").eval()
    assert [p for p in range(t + 1) if changed_at_t(two, p)] == list(range(4, 11))


def test_window_at_least_context_equals_full_causal() -> None:
    full = _micro(positions="rope")
    windowed = _micro(positions="rope", window=16)
    x = _tokens(2, 16)
    with torch.no_grad():
        assert torch.allclose(full(x)[0], windowed(x)[0], atol=1e-5)


def test_gqa_and_mqa_shrink_attention() -> None:
    mha, gqa, mqa = (_micro(n_kv_head=k).num_params() for k in (None, 2, 1))
    assert mqa < gqa < mha
    # k and v lose (n_head - n_kv_head) * head_dim output rows each: 2 * 2 * 8 * 32.
    assert mha - gqa == 2 * 2 * 8 * 32
    with pytest.raises(AirlabError, match="n_kv_head"):
        GPTConfig(n_head=4, n_kv_head=3)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(AirlabError, match="n_embd=130 must be divisible by n_head=4"):
        GPTConfig(n_embd=130)
    with pytest.raises(AirlabError, match="positions") as err:
        GPTConfig(positions="rotary")
    assert "did you mean" in str(err.value) or "choose from" in str(err.value)
    with pytest.raises(AirlabError, match="did you mean 'rmsnorm'"):
        GPTConfig(norm="rms_norm")
    with pytest.raises(AirlabError, match="window"):
        GPTConfig(window=0)
    with pytest.raises(AirlabError, match="even head dim"):
        GPTConfig(n_embd=12, n_head=4, positions="rope")
    with pytest.raises(AirlabError, match="did you mean 'n_layer'"):
        build_gpt(V, "tiny", n_layers=2)
    with pytest.raises(AirlabError, match="did you mean 'small'"):
        build_gpt(V, "smal")
    model = _micro()
    with pytest.raises(AirlabError, match="block_size"):
        model(_tokens(1, 17))


def test_tied_embeddings_counted_once() -> None:
    tied = build_gpt(V, "tiny")
    assert tied.lm_head.weight is tied.wte.weight
    every_tensor = sum(p.numel() for _, p in tied.named_parameters(remove_duplicate=False))
    assert tied.num_params() == every_tensor - V * 128 == num_params(tied)
    untied = build_gpt(V, "tiny", tie_embeddings=False)
    assert untied.lm_head.weight is not untied.wte.weight
    assert untied.num_params() - tied.num_params() == V * 128
    # Non-embedding count drops the lookup tables but keeps the output projection.
    assert tied.num_params(non_embedding=True) == tied.num_params() - 64 * 128
    assert untied.num_params(non_embedding=True) == tied.num_params(non_embedding=True)
    # Checkpoint bytes: the shared matrix once, RoPE/mask buffers (non-persistent) not at all.
    assert model_bytes(tied) == 4 * tied.num_params()
    rope = build_gpt(V, "tiny", positions="rope", window=8)
    assert model_bytes(rope) == 4 * rope.num_params()


def test_tiny_param_count_by_hand() -> None:
    model = build_gpt(V, "tiny")
    L, C, T = 4, 128, 64
    per_block = 4 * C * C + 8 * C * C + 2 * C  # attention, MLP, two LayerNorm weights
    expected = L * per_block + V * C + T * C + C  # + tied wte, wpe, final norm
    assert model.num_params() == expected == 804_096


def _meta_params(preset: str, **kw: object) -> int:
    # Parameter counts need shapes only: building on the meta device allocates nothing.
    with torch.device("meta"):
        return build_gpt(V, preset, **kw).num_params()


def test_preset_sizes() -> None:
    assert 8e6 <= _meta_params("small") <= 12e6
    seed = _meta_params("seed88m")
    assert 80e6 <= seed <= 96e6
    assert seed == 86_563_840
    # SwiGLU is the activation that lands closest to 88M with these widths.
    assert abs(seed - 88e6) < abs(_meta_params("seed88m", activation="gelu") - 88e6)
    assert set(PRESETS) == set(PRESET_TRAINING)
    for hints in PRESET_TRAINING.values():
        assert {"batch_size", "lr", "min_lr", "warmup_steps"} <= set(hints)


def test_seed88m_takes_an_optimizer_step() -> None:
    torch.manual_seed(0)
    model = build_gpt(V, "seed88m", block_size=32)
    assert model.num_params() == 86_563_840  # RoPE: context length adds no parameters
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4)
    x, y = _tokens(1, 32), _tokens(1, 32, seed=1)
    _, loss = model(x, y)
    # Near chance, a little above: with tied N(0, 0.02) embeddings and a unit-rms final
    # norm, initial logits have std 0.02 * sqrt(512) ~ 0.45, which costs ~0.1 nats.
    assert loss is not None and abs(loss.item() - math.log(V)) < 0.5
    before = model.blocks[0].mlp.gate.weight.detach().clone()
    loss.backward()
    opt.step()
    assert not torch.equal(before, model.blocks[0].mlp.gate.weight)
    assert torch.isfinite(model(x, y)[1])  # type: ignore[arg-type]


def test_overfits_a_fixed_sequence() -> None:
    torch.manual_seed(0)
    model = build_gpt(V, "tiny")
    seq = _tokens(1, 65, seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(150):
        _, loss = model(seq[:, :-1], seq[:, 1:])
        assert loss is not None
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if loss.item() < 0.5:
            break
    assert losses[0] > 4.0  # starts at chance ...
    assert losses[-1] < 0.5, losses[-5:]  # ... and memorises 64 random tokens


def test_init_scales_residual_projections() -> None:
    torch.manual_seed(0)
    model = build_gpt(V, "small")  # 6 layers: residual std 0.02 / sqrt(12)
    proj_std = torch.cat([b.mlp.proj.weight.flatten() for b in model.blocks]).std().item()
    fc_std = torch.cat([b.mlp.fc.weight.flatten() for b in model.blocks]).std().item()
    assert abs(fc_std - 0.02) < 0.001
    assert abs(proj_std - 0.02 / math.sqrt(12)) < 0.001


def test_flops_per_token_matches_hand_formula() -> None:
    model = build_gpt(V, "tiny")
    L, C, T = 4, 128, 64
    n = model.num_params(non_embedding=True)
    by_hand = 6 * n + 12 * L * C * T
    assert abs(model.flops_per_token() - by_hand) / by_hand < 0.10
    assert model.flops_per_token(training=False) == pytest.approx(model.flops_per_token() / 3)
    # Local attention only pays for the window.
    local = build_gpt(V, "tiny", window=16)
    attn_saving = 12 * L * C * (T - 16)
    assert model.flops_per_token() - local.flops_per_token() == attn_saving


def test_rmsnorm_gradient_matches_autograd_of_the_formula():
    """The hand-written float32 backward of RMSNorm equals autograd of x / rms(x) * w."""
    from airlab.models.gpt import RMSNorm

    torch.manual_seed(0)
    norm = RMSNorm(32)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(32))
    x = torch.randn(3, 5, 4, 32, requires_grad=True)
    out = norm(x)
    g = torch.randn_like(out)
    out.backward(g)
    gx, gw = x.grad.clone(), norm.weight.grad.clone()
    x.grad, norm.weight.grad = None, None
    ref = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight
    ref.backward(g)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, norm.weight.grad)
    # Not float32 (bf16 weights): the composite path, which normalises in float32.
    half = RMSNorm(32).to(torch.bfloat16)
    y = half(torch.randn(2, 32, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


def test_rope_and_relu2_gradients_match_autograd_of_the_formulas():
    from airlab.models.gpt import _ReLU2Fn, _rotate_half, apply_rope

    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 8, requires_grad=True)
    cos, sin = torch.randn(1, 1, 5, 8), torch.randn(1, 1, 5, 8)
    out = apply_rope(x, cos, sin)
    g = torch.randn_like(out)
    out.backward(g)
    gx = x.grad.clone()
    x.grad = None
    ref = x * cos + _rotate_half(x) * sin
    ref.backward(g)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gx, x.grad)

    h = torch.randn(4, 16, requires_grad=True)
    out = _ReLU2Fn.apply(h)
    g = torch.randn_like(out)
    out.backward(g)
    gh = h.grad.clone()
    h.grad = None
    ref = torch.relu(h).square()
    ref.backward(g)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gh, h.grad)
