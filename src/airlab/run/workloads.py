"""Workloads: what gets trained. Each turns a TrainConfig into a Task for the one training loop.

The registry metadata (presets, defaults, model fields, budget units, checks) is what resolve()
needs; torch is imported only by ``setup`` and the model registries it reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from airlab.config import RESERVED_FIELDS, TRAIN_FIELDS, TrainConfig
from airlab.errors import AirlabError, did_you_mean, lookup

if TYPE_CHECKING:
    import torch
    from torch import nn

    from airlab.settings import Settings


@dataclass
class Task:
    """A model plus its data, as the trainer sees them."""

    model: nn.Module
    unit: str  # "tokens" or "samples": what the budget counts
    units_per_step: int
    flops_per_unit: float  # training FLOPs per token or per sample (forward + backward)
    train_size: int  # units in one epoch of training data
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    evaluate: Callable[[nn.Module], dict[str, float]]
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)  # dataset provenance, vocab size, ...
    # How to rebuild the model (airlab.models.io.build_model): saved with trained weights.
    build: dict[str, Any] = field(default_factory=dict)


class Workload:
    """Registry entry: knows its presets, its model fields and how to build a Task."""

    name: str = ""
    default_dataset: str = ""
    default_preset: str = ""
    budget_units: tuple[str, ...] = ("epochs", "seconds")  # units this workload can count

    def presets(self) -> list[str]:
        raise NotImplementedError

    def presets_check(self, preset: str) -> None:
        """AirlabError naming the closest preset when ``preset`` is unknown."""
        if preset not in self.presets():
            raise AirlabError(f"unknown {self.name} preset '{preset}'",
                              did_you_mean(str(preset), self.presets()))

    def defaults(self, preset: str) -> dict[str, Any]:
        """Trainer-field defaults for a preset (batch size, learning rate, ...)."""
        raise NotImplementedError

    def model_fields(self, preset: str) -> set[str]:
        raise NotImplementedError

    def check(self, config: TrainConfig) -> None:
        """Raise AirlabError if the model part of the config cannot be built."""

    def prepare(self, dataset: str, settings: Settings) -> None:
        """Load (and if needed download) a dataset once, in the parent, before any worker starts:
        a missing file is then one clear error, and workers never race to download."""
        raise NotImplementedError

    def setup(self, config: TrainConfig, device: torch.device, settings: Settings) -> Task:
        raise NotImplementedError


def _data_dirs(settings: Settings) -> dict[str, Any]:
    return {"data_dir": settings.data_dir, "cache_dir": settings.cache_dir}


def _check_types(model: dict[str, Any], types: dict[str, type], what: str) -> None:
    """Model options must have the field's type: n_head 2.5 or "abc" is one clear error."""
    for k, v in model.items():
        want = types.get(k)
        if want is None or v is None:
            continue
        ok = (isinstance(v, bool) if want is bool
              else isinstance(v, int) and not isinstance(v, bool) if want is int
              else isinstance(v, int | float) and not isinstance(v, bool) if want is float
              else isinstance(v, want))
        if not ok:
            raise AirlabError(f"{what} option {k}={v!r} must be {want.__name__}",
                              f"give {k} as a {'whole number' if want is int else want.__name__}")


class CharLM(Workload):
    name = "charlm"
    default_dataset = "pycode"
    default_preset = "tiny"
    budget_units = ("tokens", "epochs", "seconds")

    def presets(self) -> list[str]:
        from airlab.models import PRESETS

        return sorted(PRESETS)

    def defaults(self, preset: str) -> dict[str, Any]:
        from airlab.models import PRESET_TRAINING, PRESETS

        lookup(PRESETS, preset, "charlm preset")
        hints = PRESET_TRAINING.get(preset, {})
        # The budget (and a step limit) come from the spec, never from the preset's recipe.
        return {k: v for k, v in hints.items() if k in TRAIN_FIELDS and k not in RESERVED_FIELDS}

    def model_fields(self, preset: str) -> set[str]:
        from airlab.models import GPTConfig

        return {f.name for f in fields(GPTConfig)} - {"vocab_size"}

    def check(self, config: TrainConfig) -> None:
        from airlab.models import PRESETS, GPTConfig

        base = dict(lookup(PRESETS, config.preset, "charlm preset"))
        unknown = set(config.model) - self.model_fields(config.preset)
        for k in sorted(unknown):
            raise AirlabError(
                f"unknown model option '{k}' for charlm", did_you_mean(k, self.model_fields(""))
            )
        types = {f.name: f.type for f in fields(GPTConfig)}
        _check_types(config.model, {k: _GPT_TYPES.get(str(t), object)
                                    for k, t in types.items()}, "charlm model")
        try:
            GPTConfig(**{**base, **config.model})
        except (TypeError, ValueError) as e:
            raise AirlabError(f"invalid charlm model options: {e}") from None

    def prepare(self, dataset: str, settings: Settings) -> None:
        from airlab.data import load_text

        load_text(dataset, **_data_dirs(settings))

    def setup(self, config: TrainConfig, device: torch.device, settings: Settings) -> Task:
        import torch

        from airlab.data import load_text
        from airlab.models import build_gpt

        corpus = load_text(config.dataset, **_data_dirs(settings))
        model = build_gpt(corpus.vocab_size, config.preset, **config.model).to(device)
        T = model.config.block_size
        B = config.batch_size
        train = corpus.train.long()
        val = corpus.val.long()
        if len(train) <= T + 1 or len(val) <= T + 1:
            raise AirlabError(
                f"dataset '{config.dataset}' is too small for context {T}",
                "use a larger text or a smaller block_size",
            )
        gen = torch.Generator().manual_seed(config.seed)  # data order follows the run's seed
        offsets = torch.arange(T)

        def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
            ix = torch.randint(len(train) - T - 1, (B,), generator=gen)
            idx = ix[:, None] + offsets  # (B, T)
            return train[idx].to(device), train[idx + 1].to(device)

        # A fixed, evenly spaced held-out subset: identical for every arm and seed.
        n_seq = max(1, min(config.eval_tokens // T, (len(val) - 1) // T))
        starts = torch.linspace(0, len(val) - T - 1, n_seq).long()
        vidx = starts[:, None] + offsets
        vx, vy = val[vidx], val[vidx + 1]

        def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            _, loss = m(x, y)
            return loss

        def evaluate(m: nn.Module) -> dict[str, float]:
            was_training = m.training
            m.eval()
            total, count = 0.0, 0
            with torch.no_grad():
                for i in range(0, n_seq, 256):  # large eval batches: fewer, faster matmuls
                    x, y = vx[i : i + 256].to(device), vy[i : i + 256].to(device)
                    _, loss = m(x, y)
                    total += float(loss) * x.numel()
                    count += x.numel()
            m.train(was_training)
            val_loss = total / count
            return {"val_loss": val_loss, "val_bpc": val_loss / math.log(2)}

        return Task(
            model=model,
            unit="tokens",
            units_per_step=B * T,
            flops_per_unit=float(model.flops_per_token(training=True)),
            train_size=len(train),
            next_batch=next_batch,
            evaluate=evaluate,
            loss_fn=loss_fn,
            build={"kind": "gpt", "vocab_size": corpus.vocab_size, "preset": config.preset,
                   "model": dict(config.model)},
            info={
                "dataset_sha256": corpus.sha256,
                "vocab_size": corpus.vocab_size,
                "train_tokens": len(train),
                "val_tokens": len(val),
                "eval_tokens": int(vx.numel()),
            },
        )


class Vision(Workload):
    name = "vision"
    default_dataset = "digits"
    default_preset = "mlp"
    budget_units = ("samples", "epochs", "seconds")

    def presets(self) -> list[str]:
        from airlab.models import VISION_MODELS

        return sorted(VISION_MODELS)

    def defaults(self, preset: str) -> dict[str, Any]:
        from airlab.models import VISION_MODELS

        lookup(VISION_MODELS, preset, "vision model")
        return {"batch_size": 64, "lr": 2e-3, "min_lr": 1e-4, "warmup_steps": 20,
                "weight_decay": 0.01, "beta2": 0.999}

    def model_fields(self, preset: str) -> set[str]:
        import inspect

        from airlab.models import VISION_MODELS

        if preset not in VISION_MODELS:
            return set().union(*(self.model_fields(p) for p in VISION_MODELS))
        sig = inspect.signature(VISION_MODELS[preset])
        return {p for p in sig.parameters if p not in ("input_shape", "n_classes")}

    def check(self, config: TrainConfig) -> None:
        allowed = self.model_fields(config.preset)
        for k in sorted(set(config.model) - allowed):
            raise AirlabError(
                f"unknown model option '{k}' for vision model '{config.preset}'",
                did_you_mean(k, allowed),
            )
        import inspect

        from airlab.models import VISION_MODELS

        params = inspect.signature(VISION_MODELS[config.preset]).parameters
        types = {k: type(p.default) for k, p in params.items()
                 if type(p.default) in (int, float, bool)}
        _check_types(config.model, types, f"vision model '{config.preset}'")
        dropout = config.model.get("dropout", 0.0)
        if not 0 <= float(dropout) < 1:
            raise AirlabError(f"vision model option dropout={dropout!r} must be in [0, 1)",
                              "e.g. dropout: 0.1")

    def prepare(self, dataset: str, settings: Settings) -> None:
        from airlab.data import load_vision

        load_vision(dataset, **_data_dirs(settings))

    def setup(self, config: TrainConfig, device: torch.device, settings: Settings) -> Task:
        import torch
        from torch import nn

        from airlab.data import load_vision
        from airlab.models import build_vision, flops_per_sample

        data = load_vision(config.dataset, **_data_dirs(settings))
        model = build_vision(config.preset, data.input_shape, data.n_classes, **config.model)
        flops = float(flops_per_sample(model, data.input_shape, training=True))
        model = model.to(device)
        B = config.batch_size
        xt, yt = data.x_train, data.y_train
        n = len(xt)
        gen = torch.Generator().manual_seed(config.seed)
        perm = [torch.randperm(n, generator=gen)]
        pos = [0]

        def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
            # Shuffled epochs; an epoch's tail shorter than a batch is skipped (fixed batch size).
            if pos[0] + B > n:
                perm[0], pos[0] = torch.randperm(n, generator=gen), 0
            idx = perm[0][pos[0] : pos[0] + B]
            pos[0] += B
            return xt[idx].to(device), yt[idx].to(device)

        def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return nn.functional.cross_entropy(m(x), y)

        def evaluate(m: nn.Module) -> dict[str, float]:
            was_training = m.training
            m.eval()
            total, correct = 0.0, 0
            with torch.no_grad():
                for i in range(0, len(data.x_val), 1000):
                    x = data.x_val[i : i + 1000].to(device)
                    y = data.y_val[i : i + 1000].to(device)
                    logits = m(x).float()
                    total += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
                    correct += int((logits.argmax(-1) == y).sum())
            m.train(was_training)
            nv = len(data.x_val)
            return {"val_loss": total / nv, "val_acc": correct / nv}

        return Task(
            model=model,
            unit="samples",
            units_per_step=B,
            flops_per_unit=flops,
            train_size=n,
            next_batch=next_batch,
            evaluate=evaluate,
            loss_fn=loss_fn,
            build={"kind": "vision", "preset": config.preset, "model": dict(config.model),
                   "input_shape": list(data.input_shape), "n_classes": int(data.n_classes)},
            info={"dataset_source": data.source, "train_samples": n,
                  "val_samples": len(data.x_val)},
        )


# GPTConfig field annotations (strings under postponed evaluation) -> the type a value must have.
_GPT_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str,
                               "int | None": int}

WORKLOADS: dict[str, Workload] = {w.name: w for w in (CharLM(), Vision())}


def get_workload(name: str) -> Workload:
    return lookup(WORKLOADS, name, "workload")
