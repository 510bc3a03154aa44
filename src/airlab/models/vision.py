"""Small image classifiers (MLP and CNN) for 8x8 digits, 28x28 MNIST-like and 3x32x32
CIFAR-10 inputs."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from airlab.errors import AirlabError, did_you_mean, lookup

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


def _check_common(input_shape: Sequence[int], n_classes: int, dropout: float) -> None:
    if len(input_shape) == 0 or any(int(d) < 1 for d in input_shape):
        raise AirlabError(
            f"input_shape={tuple(input_shape)} must be positive sizes", "e.g. (1, 8, 8)"
        )
    if n_classes < 2:
        raise AirlabError(f"n_classes={n_classes} must be at least 2")
    if not 0.0 <= dropout < 1.0:
        raise AirlabError(f"dropout={dropout!r} must be in [0, 1)")


class MLP(nn.Module):
    """Flatten -> [Linear -> activation -> dropout] * len(hidden) -> Linear."""

    def __init__(
        self,
        input_shape: Sequence[int],
        n_classes: int,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        _check_common(input_shape, n_classes, dropout)
        act = lookup(ACTIVATIONS, activation, "activation")
        if any(h < 1 for h in hidden):
            raise AirlabError(f"hidden={tuple(hidden)} must be positive layer widths")
        self.input_shape = tuple(int(d) for d in input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(self.input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), act(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, *input_shape) -> (B, n_classes)


class DepthwiseSeparableConv2d(nn.Module):
    """3x3 depthwise conv (one filter per input channel) then a 1x1 pointwise mix.

    Costs C_in*9 + C_in*C_out weights instead of C_in*C_out*9 for a full 3x3 conv.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, kernel_size=3, padding=1, groups=c_in)
        self.pointwise = nn.Conv2d(c_in, c_out, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))  # (B, C_in, H, W) -> (B, C_out, H, W)


class SmallCNN(nn.Module):
    """[conv3x3 (pad 1) -> ReLU -> maxpool 2] per channel stage, then a 2-layer head.

    Padding keeps the spatial size through each conv, so only the pools shrink it:
    8x8 -> 4x4 -> 2x2, 28x28 -> 14x14 -> 7x7 and 32x32 -> 16x16 -> 8x8 with the default two
    stages. A pool is skipped once the map is 1 pixel wide, so more stages than the input
    supports still work.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        n_classes: int,
        channels: Sequence[int] = (16, 32),
        hidden: int = 64,
        dropout: float = 0.0,
        separable: bool = False,
    ) -> None:
        super().__init__()
        _check_common(input_shape, n_classes, dropout)
        if len(input_shape) != 3:
            raise AirlabError(
                f"SmallCNN needs input_shape=(channels, height, width), got {tuple(input_shape)}",
                "for 8x8 grayscale digits use (1, 8, 8)",
            )
        if not channels or any(c < 1 for c in channels) or hidden < 1:
            raise AirlabError(
                f"channels={tuple(channels)} and hidden={hidden} must be positive widths"
            )
        self.input_shape = tuple(int(d) for d in input_shape)
        c, h, w = self.input_shape
        layers: list[nn.Module] = []
        for c_out in channels:
            if separable:
                layers.append(DepthwiseSeparableConv2d(c, c_out))
            else:
                layers.append(nn.Conv2d(c, c_out, kernel_size=3, padding=1))
            layers.append(nn.ReLU())
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * h * w, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C_last, H', W')
        return self.head(x)  # (B, n_classes)


VISION_MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": MLP, "cnn": SmallCNN}


def build_vision(
    name: str, input_shape: Sequence[int], n_classes: int, **overrides: object
) -> nn.Module:
    """Build a registered vision model; unknown names or options get a suggestion."""
    factory = lookup(VISION_MODELS, name, "vision model")
    accepted = [
        p for p in inspect.signature(factory).parameters if p not in ("input_shape", "n_classes")
    ]
    for key in overrides:
        if key not in accepted:
            raise AirlabError(
                f"unknown option '{key}' for vision model '{name}'", did_you_mean(key, accepted)
            )
    return factory(input_shape, n_classes, **overrides)


def flops_per_sample(model: nn.Module, input_shape: Sequence[int], training: bool = True) -> float:
    """FLOPs for one sample, from the multiply-adds of every nn.Linear and nn.Conv2d.

    Measured with forward hooks on a dummy (1, *input_shape) batch, so it follows the
    real shapes (padding, pooling, groups). FLOPs = 2 * MACs for the forward pass;
    training counts 3x forward (the backward computes grads for inputs and weights).
    Activations, pooling and norms are ignored (they are not matmuls).
    """
    macs = 0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Linear):
            # Every output element is a dot product of length in_features.
            macs += output.numel() * module.in_features
        elif isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs += output.numel() * (module.in_channels // module.groups) * kh * kw

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    try:
        model.eval()  # no dropout and no BatchNorm statistic updates from the dummy batch
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    forward = 2.0 * macs
    return 3.0 * forward if training else forward
