"""Tests for the vision classifiers and the hook-based FLOP counter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from airlab.errors import AirlabError
from airlab.models import (
    MLP,
    VISION_MODELS,
    SmallCNN,
    build_vision,
    flops_per_sample,
    model_bytes,
    num_params,
)

SHAPES = [(1, 8, 8), (1, 28, 28)]
CIFAR = (3, 32, 32)


@pytest.mark.parametrize("shape", [*SHAPES, CIFAR], ids=["digits", "mnist", "cifar10"])
@pytest.mark.parametrize(
    "name,kw", [("mlp", {}), ("cnn", {}), ("cnn", {"separable": True})], ids=["mlp", "cnn", "sep"]
)
def test_forward_backward(name: str, kw: dict, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_vision(name, shape, 10, **kw)
    x = torch.randn(2, *shape)
    logits = model(x)
    assert logits.shape == (2, 10)
    nn.functional.cross_entropy(logits, torch.tensor([1, 2])).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert flops_per_sample(model, shape) > 0


@pytest.mark.parametrize("shape", SHAPES, ids=["digits", "mnist"])
def test_separable_cnn_is_smaller_and_cheaper(shape: tuple[int, ...]) -> None:
    plain = SmallCNN(shape, 10)
    sep = SmallCNN(shape, 10, separable=True)
    assert num_params(sep) < num_params(plain)
    assert flops_per_sample(sep, shape) < flops_per_sample(plain, shape)
    groups = [m.groups for m in sep.modules() if isinstance(m, nn.Conv2d)]
    assert groups == [1, 1, 16, 1]  # depthwise convs use groups=C_in


def test_mlp_flops_match_hand_count() -> None:
    model = MLP((1, 8, 8), 10, hidden=(256, 128))
    macs = 64 * 256 + 256 * 128 + 128 * 10
    assert flops_per_sample(model, (1, 8, 8), training=False) == 2 * macs
    assert flops_per_sample(model, (1, 8, 8)) == 3 * 2 * macs
    assert num_params(model) == macs + 256 + 128 + 10  # weights + biases


def test_cnn_flops_match_hand_count() -> None:
    model = SmallCNN((1, 8, 8), 10, channels=(16, 32), hidden=64)
    conv1 = 8 * 8 * 16 * 1 * 9  # padded 3x3 keeps 8x8, then pool -> 4x4
    conv2 = 4 * 4 * 32 * 16 * 9  # then pool -> 2x2
    head = 32 * 2 * 2 * 64 + 64 * 10
    assert flops_per_sample(model, (1, 8, 8), training=False) == 2 * (conv1 + conv2 + head)


def test_cifar_shape_flops_match_hand_count() -> None:
    # 3x32x32 colour images: every preset takes three input channels and flattens 3,072 values.
    mlp = build_vision("mlp", CIFAR, 10)
    macs = 3072 * 256 + 256 * 128 + 128 * 10
    assert flops_per_sample(mlp, CIFAR) == 3 * 2 * macs
    assert num_params(mlp) == macs + 256 + 128 + 10

    cnn = build_vision("cnn", CIFAR, 10)
    conv1 = 32 * 32 * 16 * 3 * 9  # padded 3x3 keeps 32x32, then pool -> 16x16
    conv2 = 16 * 16 * 32 * 16 * 9  # then pool -> 8x8
    head = 32 * 8 * 8 * 64 + 64 * 10
    assert flops_per_sample(cnn, CIFAR, training=False) == 2 * (conv1 + conv2 + head)

    sep = build_vision("cnn", CIFAR, 10, separable=True)
    stage1 = 32 * 32 * 3 * 9 + 32 * 32 * 16 * 3  # depthwise (groups=3), then 1x1 to 16
    stage2 = 16 * 16 * 16 * 9 + 16 * 16 * 32 * 16
    assert flops_per_sample(sep, CIFAR, training=False) == 2 * (stage1 + stage2 + head)
    assert [m.groups for m in sep.modules() if isinstance(m, nn.Conv2d)] == [3, 1, 16, 1]


def test_flops_counter_leaves_model_untouched() -> None:
    model = MLP((1, 8, 8), 10, dropout=0.5).train()
    flops_per_sample(model, (1, 8, 8))
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())


def test_registry_and_errors() -> None:
    assert set(VISION_MODELS) == {"mlp", "cnn"}
    with pytest.raises(AirlabError, match="did you mean 'cnn'"):
        build_vision("cnnn", (1, 8, 8), 10)
    with pytest.raises(AirlabError, match="did you mean 'channels'"):
        build_vision("cnn", (1, 8, 8), 10, channel=(8, 8))
    with pytest.raises(AirlabError, match="activation"):
        build_vision("mlp", (1, 8, 8), 10, activation="sigmoidd")
    with pytest.raises(AirlabError, match="input_shape"):
        SmallCNN((8, 8), 10)
    # More stages than the image supports: pools stop at 1x1 instead of failing.
    deep = SmallCNN((1, 8, 8), 10, channels=(4, 4, 4, 4, 4))
    assert deep(torch.randn(1, 1, 8, 8)).shape == (1, 10)


def test_model_bytes_counts_persistent_buffers() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    params = 4 * 3 + 3 + 3 + 3
    buffers = 3 * 4 + 3 * 4 + 8  # running mean/var (float32), num_batches_tracked (int64)
    assert model_bytes(model) == 4 * params + buffers
    assert model_bytes(model.half()) == 2 * params + 3 * 2 + 3 * 2 + 8
