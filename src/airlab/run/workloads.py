"""Workloads: what gets trained. Each turns a TrainConfig into a Task for the one training loop.

The registry metadata (presets, defaults, model fields, budget units, checks) is what resolve()
needs; torch is imported only by ``setup`` and the model registries it reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airlab.config import RESERVED_FIELDS, TRAIN_FIELDS, TrainConfig
from airlab.errors import AirlabError, did_you_mean, lookup
from airlab.run.pathology import TextSample

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
    # Text workloads: write a short sample with a trained model, beside real text (the
    # collapse check in airlab.run.pathology). None: the workload writes nothing.
    sample: Callable[[nn.Module], TextSample] | None = None
    # How the trainer evaluates the model a deploy step returned (None: ``evaluate``).
    evaluate_deployed: Callable[[nn.Module], dict[str, float]] | None = None
    # Text workloads: the bits per character no real model of this text reaches (the
    # plausibility check's floor; computed on demand, cached). None: no floor.
    floor_bpc: Callable[[], float] | None = None
    # The loss of a model on a fixed subset of the training data, measured as the held-out
    # loss is (eval mode, the same windows or images for every run): train_eval_loss.
    train_eval: Callable[[nn.Module], float] | None = None

    @property
    def chance_loss(self) -> float | None:
        return chance_loss(self.build)


def chance_loss(build: dict[str, Any]) -> float | None:
    """The loss of a uniform guess: ln(vocabulary) or ln(classes), from a build record."""
    n = build.get("vocab_size") or build.get("n_classes")
    return math.log(float(n)) if n else None


@dataclass
class Measurer:
    """The measuring side of a run that trains in another process (generated code): the data
    it serves and the held-out evaluation, never a model of its own but the declared one's
    cost. Built by :meth:`Workload.measurer` from the same pieces as :meth:`Workload.setup`,
    so the batches served and the evaluation are those of an in-process run."""

    unit: str
    units_per_step: int
    train_size: int
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    # metrics of a module that maps an input batch to logits (a handed-over graph)
    evaluate: Callable[[nn.Module], dict[str, float]]
    # the same loss on a fixed subset of the training data, a quarter the held-out size
    # (stored as train_eval_loss; the plausibility and overfit checks read it)
    train_loss: Callable[[nn.Module], float]
    example: torch.Tensor  # an input batch shaped as the evaluation feeds it
    flops_per_unit: float  # training FLOPs per unit of the declared model (the config's)
    build: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    # bits per character no real model of this text reaches (None: not a text workload)
    floor_bpc: float | None = None


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

    def model_defaults(self, preset: str) -> dict[str, Any]:
        """The model fields' values when a config leaves them out (the preset's, else the
        model's defaults); empty where the workload does not know them."""
        return {}

    def check(self, config: TrainConfig) -> None:
        """Raise AirlabError if the model part of the config cannot be built."""

    def prepare(self, dataset: str, settings: Settings) -> None:
        """Load (and if needed download) a dataset once, in the parent, before any worker starts:
        a missing file is then one clear error, and workers never race to download."""
        raise NotImplementedError

    def setup(self, config: TrainConfig, device: torch.device, settings: Settings) -> Task:
        raise NotImplementedError

    def measurer(self, config: TrainConfig, device: torch.device, settings: Settings
                 ) -> Measurer:
        """The measuring side of a run trained elsewhere (see :class:`Measurer`)."""
        raise NotImplementedError

    @staticmethod
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss the one loop minimises (before any technique wraps it)."""
        raise NotImplementedError

    @staticmethod
    def declared_model(build: dict[str, Any]) -> tuple[nn.Module, float]:
        """The untrained model a build record declares (on the CPU, drawing its initial
        weights from the global generator as ``setup`` does) and its training FLOPs per
        unit."""
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


# The collapse check's sample: SAMPLE_STREAMS prompts of SAMPLE_PROMPT real characters, each
# continued by SAMPLE_TOKENS sampled ones (512 in all) at temperature 1, each step seeing the
# last SAMPLE_CONTEXT characters. Without a KV cache a step re-reads its whole context, so the
# cost is about 512 x SAMPLE_CONTEXT token forwards plus 64 calls' overhead. Measured against
# the training steps of a 150k-token tiny run on tinyshakespeare (one CPU thread, 245 ms a
# step, 195 steps): context 12 costs 0.81 s = 1.7% of training, 16: 2.2%, the full 64: 3.8%
# (evaluation time not counted, so the share of the run is smaller still). Twelve characters
# still show collapse (punctuation, short loops) in a character model.
SAMPLE_STREAMS = 8
SAMPLE_TOKENS = 64
SAMPLE_PROMPT = 16
SAMPLE_CONTEXT = 12
SAMPLE_TEXT_CHARS = 200  # of the sample kept in the run info for a person to read

# Vision's selection subset: this fraction of the training set, held out by a fixed permutation
# (the data split's own seed, never an experiment seed) and not trained on by "select" runs.
VISION_SELECT_FRACTION = 0.2
# Text's, when the validation text has no room beside its own windows (text_select_windows).
TEXT_SELECT_FRACTION = 0.1
VISION_SELECT_SEED = 0


def text_eval_starts(n_val: int, T: int, eval_tokens: int) -> torch.Tensor:
    """Start offsets of the ``val`` evaluation windows: ``eval_tokens // T`` windows evenly
    spaced over the whole validation text, each reading T+1 tokens (T inputs, shifted by one
    for the targets). The subset every verdict is measured on; unchanged since the first runs."""
    import torch

    n_seq = max(1, min(eval_tokens // T, (n_val - 1) // T))
    return torch.linspace(0, n_val - T - 1, n_seq).long()


def text_gap_starts(n_val: int, T: int, eval_tokens: int) -> torch.Tensor:
    """Windows packed into the gaps between the ``val`` windows (no token shared with them, nor
    with each other), evenly chosen, at most as many as ``val`` has; empty when none fit."""
    import torch

    starts = text_eval_starts(n_val, T, eval_tokens)
    w = T + 1
    edges = [int(a) for a in starts]
    cands: list[int] = []
    for a, b in zip(edges, [*edges[1:], n_val], strict=True):
        lo, hi = a + w, b
        k = max(0, hi - lo) // w
        first = lo + (hi - lo - k * w) // 2  # centre the packed windows in the gap
        cands += [first + j * w for j in range(k)]
    if len(cands) > len(starts):
        pick = torch.linspace(0, len(cands) - 1, len(starts)).round().long().tolist()
        cands = [cands[i] for i in pick]
    return torch.tensor(cands, dtype=torch.long)


def text_select_windows(n_train: int, n_val: int, T: int, eval_tokens: int
                        ) -> tuple[str, torch.Tensor, int]:
    """Where ``select`` runs evaluate: ``(source, starts, n_train_kept)``.

    ``("val", ...)``: windows in the gaps between the ``val`` windows, when those hold at least
    half as many as ``val`` has (texts of about 2 x eval_tokens or more). Otherwise
    ``("train", ...)``: evenly spaced windows in the last TEXT_SELECT_FRACTION of the training
    text, which ``select`` runs then do not train on (the first ``n_train_kept`` tokens only).
    """
    n_val_windows = len(text_eval_starts(n_val, T, eval_tokens))
    gaps = text_gap_starts(n_val, T, eval_tokens)
    if len(gaps) >= max(1, n_val_windows // 2):
        return "val", gaps, n_train
    n_hold = int(n_train * TEXT_SELECT_FRACTION)
    if n_hold <= T + 1 or n_train - n_hold <= T + 1:
        raise AirlabError(
            f"the text is too small for a selection subset ({n_train:,} training and "
            f"{n_val:,} validation tokens, context {T})",
            "use a larger text or a smaller block_size, or drop the sweep",
        )
    return "train", text_eval_starts(n_hold, T, eval_tokens), n_train - n_hold


def vision_select_split(n_train: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices trained on, indices held out) of a vision training set for ``select`` runs:
    a fixed permutation, the same for every run, disjoint from the validation set."""
    import torch

    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(VISION_SELECT_SEED))
    n_sel = max(1, int(n_train * VISION_SELECT_FRACTION))
    return perm[n_sel:].sort().values, perm[:n_sel].sort().values


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

    def model_defaults(self, preset: str) -> dict[str, Any]:
        from airlab.models import PRESETS, GPTConfig

        return {**{f.name: f.default for f in fields(GPTConfig)},
                **lookup(PRESETS, preset, "charlm preset")}

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

        # The floor too, once, so that every run reads it from the cache folder.
        text_floor_bpc(load_text(dataset, **_data_dirs(settings)), settings)

    def _text(self, config: TrainConfig, device: torch.device, settings: Settings,
              T: int) -> _Text:
        """The data side of a text run with context ``T``: batches by the run's seed, and the
        fixed held-out windows (a disjoint subset for selection runs)."""
        import torch

        from airlab.data import load_text

        corpus = load_text(config.dataset, **_data_dirs(settings))
        B = config.batch_size
        train = corpus.train.long()
        val = corpus.val.long()
        if len(train) <= T + 1 or len(val) <= T + 1:
            raise AirlabError(
                f"dataset '{config.dataset}' is too small for context {T}",
                "use a larger text or a smaller block_size",
            )
        # A fixed held-out subset, identical for every arm and seed; selection runs
        # (eval_split="select") read a disjoint one (text_select_windows).
        held, eval_source = val, "val"
        if config.eval_split == "select":
            eval_source, starts, n_keep = text_select_windows(len(train), len(val), T,
                                                              config.eval_tokens)
            if eval_source == "train":
                held, train = train[n_keep:], train[:n_keep]
        else:
            starts = text_eval_starts(len(val), T, config.eval_tokens)
        offsets = torch.arange(T)
        vidx = starts[:, None] + offsets
        gen = torch.Generator().manual_seed(config.seed)  # data order follows the run's seed

        def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
            ix = torch.randint(len(train) - T - 1, (B,), generator=gen)
            idx = ix[:, None] + offsets  # (B, T)
            return train[idx].to(device), train[idx + 1].to(device)

        return _Text(corpus, T, B, train, val, held[vidx], held[vidx + 1], eval_source,
                     next_batch, device)

    def setup(self, config: TrainConfig, device: torch.device, settings: Settings) -> Task:
        import torch

        from airlab.models import build_gpt

        T = self._context(config)
        text = self._text(config, device, settings, T)
        corpus, train, val = text.corpus, text.train, text.val
        model = build_gpt(corpus.vocab_size, config.preset, **config.model).to(device)

        def evaluate(m: nn.Module) -> dict[str, float]:
            return text.evaluate(lambda x, y: m(x, y)[1], m)

        def sample(m: nn.Module) -> TextSample:
            from airlab.models import generate

            # Prompts and their real continuations from the validation text (the training
            # text when the validation text is too short), at fixed places.
            src = val if len(val) > SAMPLE_PROMPT + SAMPLE_TOKENS else train
            p = min(SAMPLE_PROMPT, T // 2)
            n_new = min(SAMPLE_TOKENS, len(src) - p - 1)
            at = torch.linspace(0, len(src) - p - n_new - 1, SAMPLE_STREAMS).long()
            prompts = src[at[:, None] + torch.arange(p)]  # (S, p)
            real = src[at[:, None] + p + torch.arange(n_new)]  # (S, n_new)
            # Its own generator, seeded from the run's seed: deterministic, and the global RNG
            # stream (anything after this) is left as it was.
            g = torch.Generator(device=device).manual_seed(config.seed)
            out = generate(m, prompts.to(device), n_new, block_size=min(T, SAMPLE_CONTEXT),
                           generator=g).cpu()
            text_out = "\n---\n".join(corpus.decode(row) for row in out)
            return TextSample(generated=out.tolist(), reference=real.tolist(),
                              prompt=corpus.decode(prompts[0]),
                              text=text_out[:SAMPLE_TEXT_CHARS])

        return Task(
            model=model,
            unit="tokens",
            units_per_step=text.B * T,
            flops_per_unit=float(model.flops_per_token(training=True)),
            train_size=len(train),
            next_batch=text.next_batch,
            evaluate=evaluate,
            loss_fn=self.loss,
            build=self._build(config, corpus.vocab_size),
            info=text.info(config),
            sample=sample,
            floor_bpc=lambda: text_floor_bpc(corpus, settings),
            train_eval=lambda m: text.train_loss(lambda x, y: m(x, y)[1], m),
        )

    @staticmethod
    def declared_model(build: dict[str, Any]) -> tuple[nn.Module, float]:
        from airlab.models import build_gpt

        model = build_gpt(int(build["vocab_size"]), build["preset"], **build["model"])
        return model, float(model.flops_per_token(training=True))

    @staticmethod
    def _build(config: TrainConfig, vocab_size: int) -> dict[str, Any]:
        return {"kind": "gpt", "vocab_size": vocab_size, "preset": config.preset,
                "model": dict(config.model)}

    @staticmethod
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _, loss = model(x, y)
        return loss

    def measurer(self, config: TrainConfig, device: torch.device, settings: Settings
                 ) -> Measurer:
        import torch

        from airlab.models import build_gpt

        T = self._context(config)
        text = self._text(config, device, settings, T)
        with torch.device("meta"):  # the declared model's shape and cost, no memory
            declared = build_gpt(text.corpus.vocab_size, config.preset, **config.model)
        rows = text.rows

        def logits_loss(m: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
            def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                logits = m(x)  # (B, T, V): the same cross-entropy as the model's own
                return torch.nn.functional.cross_entropy(
                    logits.float().reshape(x.numel(), -1), y.reshape(x.numel()))
            return loss

        return Measurer(
            unit="tokens", units_per_step=text.B * T, train_size=len(text.train),
            next_batch=text.next_batch,
            evaluate=lambda m: text.evaluate(logits_loss(m), m),
            train_loss=lambda m: text.train_loss(logits_loss(m), m),
            example=text.vx[:rows].to(device),
            flops_per_unit=float(declared.flops_per_token(training=True)),
            build=self._build(config, text.corpus.vocab_size), info=text.info(config),
            floor_bpc=text_floor_bpc(text.corpus, settings))

    def _context(self, config: TrainConfig) -> int:
        """The context length T the config's model reads."""
        return int({**self.model_defaults(config.preset), **config.model}["block_size"])


# Evaluation batches (windows per forward): on a CPU, 32 windows keep a layer's activations
# (2,048 tokens) in cache and measured ~10% faster than 256 on the tiny preset; a GPU wants
# large batches. The same windows either way (the loss differs only in float summation order).
def _eval_rows(device: torch.device) -> int:
    return 256 if device.type == "cuda" else 32


def _text_mean_loss(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    vx: torch.Tensor, vy: torch.Tensor, rows: int, device: torch.device,
                    m: nn.Module) -> float:
    """Mean per-token loss over fixed windows, ``rows`` windows per forward, in eval mode."""
    import torch

    was_training = m.training
    m.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(vx), rows):
            x = vx[i : i + rows].to(device)
            y = vy[i : i + rows].to(device)
            total += float(loss(x, y)) * x.numel()
            count += x.numel()
    m.train(was_training)
    return total / count


def _fixed_windows(tokens: torch.Tensor, T: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` evenly spaced windows of a token stream and their next-token targets."""
    import torch

    starts = torch.linspace(0, len(tokens) - T - 1, max(1, n)).long()
    idx = starts[:, None] + torch.arange(T)
    return tokens[idx], tokens[idx + 1]


@dataclass
class _Text:
    """What a text run reads: the corpus, its splits, the evaluation windows, the batches."""

    corpus: Any
    T: int
    B: int
    train: torch.Tensor
    val: torch.Tensor
    vx: torch.Tensor
    vy: torch.Tensor
    eval_source: str
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    device: torch.device

    @property
    def rows(self) -> int:
        return _eval_rows(self.device)

    def train_loss(self, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   m: nn.Module) -> float:
        """The mean loss on fixed windows of the training text, a quarter as many as the
        held-out ones: ``train_eval_loss``, the plausibility check's training loss."""
        tx, ty = _fixed_windows(self.train, self.T, max(1, len(self.vx) // 4))
        return _text_mean_loss(loss, tx, ty, self.rows, self.device, m)

    def evaluate(self, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 m: nn.Module) -> dict[str, float]:
        val_loss = _text_mean_loss(loss, self.vx, self.vy, self.rows, self.device, m)
        return {"val_loss": val_loss, "val_bpc": val_loss / math.log(2)}

    def info(self, config: TrainConfig) -> dict[str, Any]:
        return {"dataset_sha256": self.corpus.sha256, "vocab_size": self.corpus.vocab_size,
                "train_tokens": len(self.train), "val_tokens": len(self.val),
                "eval_tokens": int(self.vx.numel()), "eval_split": config.eval_split,
                "eval_source": self.eval_source}


# A text's entropy floor, for the plausibility check (airlab.run.pathology): no model of this
# size class reads text much better than a good compressor given the same context. The floor
# is FLOOR_FRACTION x the bits per character xz (preset 6) needs for the first
# FLOOR_VAL_BYTES of the validation text after the last FLOOR_TRAIN_BYTES of the training
# text (their conditional compressed size; 0.08-0.16 s). Measured so: Tiny Shakespeare 2.70
# bpc, pycode 1.69 (with 1 MB of context: 2.52 and 1.68). The best character models on
# enwik8 reach about 0.6 x xz; 0.4 x leaves real models a wide margin and still flags a loss
# of 0.28 nats on Shakespeare (0.40 bpc against a floor of 1.08).
FLOOR_FRACTION = 0.4
FLOOR_TRAIN_BYTES = 1 << 17
FLOOR_VAL_BYTES = 1 << 15
_FLOORS: dict[str, float] = {}


def text_floor_bpc(corpus: Any, settings: Settings | None = None) -> float:
    """FLOOR_FRACTION x xz's conditional bits per character of the validation text (cached by
    the corpus's sha256 in memory and in the cache folder)."""
    import lzma

    key = str(corpus.sha256)
    if key in _FLOORS:
        return _FLOORS[key]
    cache = None
    if settings is not None and settings.cache_dir is not None:
        cache = Path(settings.cache_dir) / "floors" / f"{key}.json"
        try:
            value = float(json.loads(cache.read_text())["floor_bpc"])
            _FLOORS[key] = value
            return value
        except (OSError, ValueError, KeyError, TypeError):
            pass
    train = corpus.decode(corpus.train[-FLOOR_TRAIN_BYTES:]).encode("utf-8")
    val_ids = corpus.val[:FLOOR_VAL_BYTES]
    val = corpus.decode(val_ids).encode("utf-8")
    size = lambda b: len(lzma.compress(b, preset=6))  # noqa: E731
    bpc = 8 * (size(train + val) - size(train)) / max(1, len(val_ids))
    value = FLOOR_FRACTION * bpc
    _FLOORS[key] = value
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"floor_bpc": value, "xz_bpc": bpc}))
        except OSError:
            pass
    return value


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

    def _images(self, config: TrainConfig, device: torch.device, settings: Settings
                ) -> _Images:
        """The data side of a vision run: shuffled epochs by the run's seed, the held-out set
        (a fixed part of the training set for selection runs)."""
        import torch

        from airlab.data import load_vision

        data = load_vision(config.dataset, **_data_dirs(settings))
        B = config.batch_size
        xt, yt = data.x_train, data.y_train
        xv, yv = data.x_val, data.y_val
        if config.eval_split == "select":
            # Selection runs hold a fixed part of the training set out and evaluate on it;
            # the validation set stays unseen by anything that chooses settings.
            keep, held = vision_select_split(len(xt))
            xt, yt, xv, yv = xt[keep], yt[keep], xt[held], yt[held]
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

        build = {"kind": "vision", "preset": config.preset, "model": dict(config.model),
                 "input_shape": list(data.input_shape), "n_classes": int(data.n_classes)}
        info = {"dataset_source": data.source, "train_samples": n, "val_samples": len(xv),
                "eval_split": config.eval_split}
        return _Images(xt, yt, xv, yv, B, next_batch, build, info, device)

    @staticmethod
    def declared_model(build: dict[str, Any]) -> tuple[nn.Module, float]:
        """The model a build record declares and its training FLOPs per sample (measured
        with a dummy forward pass, before the model moves to its device)."""
        from airlab.models import build_vision, flops_per_sample

        shape = tuple(build["input_shape"])
        model = build_vision(build["preset"], shape, int(build["n_classes"]), **build["model"])
        return model, float(flops_per_sample(model, shape, training=True))

    def setup(self, config: TrainConfig, device: torch.device, settings: Settings) -> Task:
        images = self._images(config, device, settings)
        model, flops = self.declared_model(images.build)
        return Task(
            train_eval=images.train_loss,
            model=model.to(device),
            unit="samples",
            units_per_step=images.B,
            flops_per_unit=flops,
            train_size=len(images.xt),
            next_batch=images.next_batch,
            evaluate=images.evaluate,
            loss_fn=self.loss,
            build=images.build,
            info=images.info,
        )

    @staticmethod
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from torch import nn

        return nn.functional.cross_entropy(model(x), y)

    def measurer(self, config: TrainConfig, device: torch.device, settings: Settings
                 ) -> Measurer:
        images = self._images(config, device, settings)
        _, flops = self.declared_model(images.build)
        return Measurer(
            unit="samples", units_per_step=images.B, train_size=len(images.xt),
            next_batch=images.next_batch, evaluate=images.evaluate,
            train_loss=images.train_loss,
            example=images.xv[:VISION_EVAL_ROWS].to(device), flops_per_unit=flops,
            build=images.build, info=images.info)


VISION_EVAL_ROWS = 1000  # images per evaluation forward pass


@dataclass
class _Images:
    """What a vision run reads: the training and held-out images, the batches."""

    xt: torch.Tensor
    yt: torch.Tensor
    xv: torch.Tensor
    yv: torch.Tensor
    B: int
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    build: dict[str, Any]
    info: dict[str, Any]
    device: torch.device

    def train_loss(self, m: nn.Module) -> float:
        """The loss on the first training images, a quarter as many as the held-out ones:
        ``train_eval_loss``, the plausibility check's training loss."""
        n = max(1, min(len(self.xt), len(self.xv)) // 4)
        return self.evaluate(m, self.xt[:n], self.yt[:n])["val_loss"]

    def evaluate(self, m: nn.Module, xv: torch.Tensor | None = None,
                 yv: torch.Tensor | None = None) -> dict[str, float]:
        """Loss and accuracy of ``m`` (input -> logits) on the held-out images (or others)."""
        import torch
        from torch import nn

        xv = self.xv if xv is None else xv
        yv = self.yv if yv is None else yv
        was_training = m.training
        m.eval()
        total, correct = 0.0, 0
        rows = VISION_EVAL_ROWS
        with torch.no_grad():
            for i in range(0, len(xv), rows):
                x = xv[i : i + rows].to(self.device)
                y = yv[i : i + rows].to(self.device)
                logits = m(x).float()
                total += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(-1) == y).sum())
        m.train(was_training)
        nv = len(xv)
        return {"val_loss": total / nv, "val_acc": correct / nv}


# GPTConfig field annotations (strings under postponed evaluation) -> the type a value must have.
_GPT_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str,
                               "int | None": int}

WORKLOADS: dict[str, Workload] = {w.name: w for w in (CharLM(), Vision())}


def get_workload(name: str) -> Workload:
    return lookup(WORKLOADS, name, "workload")
