"""Techniques: pruning (one-shot and gradual global magnitude, structured neuron pruning).

The pruned set: for a GPT, the weights of every Linear inside ``model.blocks`` (attention and
MLP; never the embeddings or the tied ``lm_head``); for other models, every Linear and Conv2d
weight that is not shared. Masks are re-applied after every optimizer step, so pruned weights
stay exactly zero during fine-tuning.

Metrics:

- ``sparsity``: measured fraction of exactly-zero weights in the pruned set.
- ``prune_progress``: budget fraction at which the (final) masks were set.
- unstructured only, ``sparse_bytes_est``: the model's bytes if every pruned matrix were stored
  in CSR form (fp values + int32 column indices + int32 row pointers), all else dense. It is
  smaller than the dense ``model_bytes`` only above ~50% sparsity (8 bytes per kept fp32
  weight vs 4 dense). The dense ``model_bytes`` and the latency are unchanged by unstructured
  pruning: zeros are still stored and multiplied.
- structured only: ``neuron_sparsity`` (fraction of neurons removed), ``params_dense`` (params
  before rebuilding); the trainer's ``params`` / ``model_bytes`` / latency are of the rebuilt,
  smaller dense model.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from airlab import measure
from airlab.errors import AirlabError
from airlab.techniques.base import Hooks, Option, Technique, register

Masks = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# The pruned set and global magnitude masks.


def _blocks(model: nn.Module) -> nn.Module | None:
    """A GPT's transformer blocks (the pruned part of a language model), or None."""
    blocks = getattr(model, "blocks", None)
    return blocks if isinstance(blocks, nn.Module) else None


def _layer(model: nn.Module, name: str) -> nn.Linear | nn.Conv2d:
    """The layer at ``name``, typed as what pruning touches (a Linear or Conv2d, or a module
    that stands in for one with the same ``weight`` and ``bias``: not checked here)."""
    return cast("nn.Linear | nn.Conv2d", model.get_submodule(name))


def prunable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights to prune, by module name (see the module docstring for which)."""
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    blocks = _blocks(model)  # not `or`: an empty ModuleList is falsy and still the root
    root = blocks if blocks is not None else model
    prefix = "blocks." if root is not model else ""
    kinds = (nn.Linear,) if root is not model else (nn.Linear, nn.Conv2d)
    return {prefix + name: m.weight for name, m in root.named_modules()
            if isinstance(m, kinds) and uses[id(m.weight)] == 1}


def global_magnitude_masks(weights: Mapping[str, torch.Tensor], sparsity: float) -> Masks:
    """Masks (1 keep, 0 prune) zeroing exactly round(sparsity * N) of the smallest |w| overall."""
    flat = torch.cat([w.detach().abs().flatten().float() for w in weights.values()])
    n = flat.numel()
    k = min(n, max(0, round(sparsity * n)))
    keep = torch.ones(n, dtype=torch.bool, device=flat.device)
    if k > 0:
        # kthvalue + tie repair instead of a full sort: O(N) memory for large models.
        thr = flat.kthvalue(k).values
        keep = flat > thr
        surplus = int(n - keep.sum()) - k  # weights tied at the threshold pruned beyond k
        if surplus > 0:
            tied = (flat == thr).nonzero().flatten()[:surplus]
            keep[tied] = True
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start:start + w.numel()].view_as(w).to(w.dtype)
        start += w.numel()
    return masks


def apply_masks(weights: Mapping[str, torch.Tensor], masks: Masks) -> None:
    with torch.no_grad():
        for name, m in masks.items():
            weights[name].mul_(m)


def measured_sparsity(weights: Mapping[str, torch.Tensor]) -> float:
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return zeros / max(1, sum(w.numel() for w in weights.values()))


def csr_bytes(w: torch.Tensor) -> int:
    """Bytes of ``w`` (viewed as rows x rest) in CSR: values, int32 col indices, row pointers."""
    rows = w.shape[0]
    nnz = int((w != 0).sum())
    return nnz * (w.element_size() + 4) + (rows + 1) * 4


def sparse_bytes_est(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> int:
    dense = sum(w.numel() * w.element_size() for w in weights.values())
    return measure.model_bytes(model) - dense + sum(csr_bytes(w) for w in weights.values())


def cubic_sparsity(p: float, s_i: float, s_f: float, p0: float, p1: float) -> float:
    """Zhu & Gupta (2017): s = s_f + (s_i - s_f)(1 - (p - p0)/(p1 - p0))^3, held outside."""
    if p <= p0:
        return s_i
    if p >= p1:
        return s_f
    return s_f + (s_i - s_f) * (1 - (p - p0) / (p1 - p0)) ** 3


def _fraction(options: dict[str, Any], name: str, upper: float = 1.0) -> float:
    v = options.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= upper:
        raise AirlabError(f"{name}={v!r} must be a number in [0, {upper:g}]")
    return float(v)


# ---------------------------------------------------------------------------------------------
# Unstructured hooks.


class _Unstructured(Hooks):
    """Holds the pruned set and its masks; subclasses decide when the masks change."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.sparsity = _fraction(self.options, "prune_sparsity", 0.999)
        self.weights: dict[str, torch.Tensor] = {}
        self.masks: Masks | None = None
        self.target = 0.0  # sparsity the current masks were made for
        self.set_at = 0.0
        self.updates = 0

    def on_model(self, model: nn.Module) -> nn.Module:
        self.weights = prunable_weights(model)
        if not self.weights:
            raise AirlabError("pruning found no Linear/Conv2d weights to prune")
        return model

    def prune_to(self, sparsity: float, progress: float) -> None:
        # Already-pruned weights are 0 and so stay among the smallest: masks only grow.
        self.masks = global_magnitude_masks(self.weights, sparsity)
        self.target, self.set_at = sparsity, progress
        self.updates += 1
        apply_masks(self.weights, self.masks)

    def after_step(self, model: nn.Module, step: int, progress: float) -> None:
        self.update(step, progress)
        if self.masks is not None:
            apply_masks(self.weights, self.masks)  # undo what the optimizer did to pruned ones

    def update(self, step: int, progress: float) -> None:
        raise NotImplementedError

    def deploy(self, model: nn.Module, task: Any) -> nn.Module:
        if self.target < self.sparsity:
            # The budget ended before the schedule's end: prune now, without fine-tuning; the
            # trainer evaluates the pruned model (and keeps the unpruned figure as *_before).
            self.prune_to(self.sparsity, 1.0)
        return model

    def on_finish(self, model: nn.Module, task: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        out.update({
            "sparsity": measured_sparsity(self.weights),
            "prune_target": self.sparsity,
            "prune_progress": self.set_at,
            "prune_updates": float(self.updates),
            "sparse_bytes_est": float(sparse_bytes_est(model, self.weights)),
        })
        return out


class OneShot(_Unstructured):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.at = _fraction(self.options, "prune_at")

    def update(self, step: int, progress: float) -> None:
        if self.masks is None and progress >= self.at:
            self.prune_to(self.sparsity, progress)


class Gradual(_Unstructured):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.s_i = _fraction(self.options, "prune_initial", 0.999)
        self.p0 = _fraction(self.options, "prune_start")
        self.p1 = _fraction(self.options, "prune_end")
        self.every = self.options.get("prune_every", 10)
        if self.p1 <= self.p0:
            raise AirlabError(f"prune_end={self.p1} must be after prune_start={self.p0}")
        if not isinstance(self.every, int) or self.every < 1:
            raise AirlabError(f"prune_every={self.every!r} must be a positive integer")

    def update(self, step: int, progress: float) -> None:
        if progress < self.p0:
            return
        s = cubic_sparsity(progress, self.s_i, self.sparsity, self.p0, self.p1)
        # Every `prune_every` steps, and once as soon as the end is passed (so the final
        # sparsity is always reached, whatever the step count).
        due = step % self.every == 0 or (progress >= self.p1 and self.target < self.sparsity)
        if due and s > self.target:
            self.prune_to(s, progress)


# ---------------------------------------------------------------------------------------------
# Structured pruning of neurons / channels.


@dataclass
class NeuronGroup:
    """Units produced by some layers (weight dim 0 + bias) and read by others (weight dim 1).

    ``consumers`` holds (module name, positions per unit): a Linear after a flattened conv map
    reads h*w inputs per channel.
    """

    size: int
    producers: list[str] = field(default_factory=list)
    consumers: list[tuple[str, int]] = field(default_factory=list)


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels > 1


def neuron_groups(model: nn.Module) -> list[NeuronGroup]:
    """The prunable units: GPT MLP hidden neurons, or hidden units / conv channels of a
    feed-forward stack (layers taken in registration order, the usual data-flow order; the
    rebuild check in deploy catches a model where that is not so)."""
    blocks = _blocks(model)
    if blocks is not None:
        groups = []
        for i, block in enumerate(cast(Iterable[nn.Module], blocks)):  # a ModuleList
            mlp = getattr(block, "mlp", None)
            if mlp is None or not isinstance(getattr(mlp, "fc", None), nn.Linear):
                continue
            prod = [f"blocks.{i}.mlp.fc"] + (
                [f"blocks.{i}.mlp.gate"] if isinstance(getattr(mlp, "gate", None), nn.Linear)
                else [])
            groups.append(NeuronGroup(mlp.fc.out_features, prod, [(f"blocks.{i}.mlp.proj", 1)]))
        return groups
    groups, current = [], None
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        if _is_depthwise(m):
            # One filter per channel: it carries the previous layer's units through.
            if current is not None:
                current.producers.append(name)
            continue
        if isinstance(m, nn.Conv2d) and m.groups != 1:
            current = None  # grouped convs other than depthwise: leave their inputs alone
            continue
        if current is not None:
            fan_in = m.in_features if isinstance(m, nn.Linear) else m.in_channels
            if fan_in % current.size == 0:
                current.consumers.append((name, fan_in // current.size))
                groups.append(current)
        current = NeuronGroup(m.out_features if isinstance(m, nn.Linear) else m.out_channels,
                              [name])
    return groups  # the last layer's outputs (the logits) are never pruned


def _cols(keep: torch.Tensor, per: int) -> torch.Tensor:
    """Input columns of the kept units when each unit spans ``per`` consecutive inputs."""
    return (keep[:, None] * per + torch.arange(per, device=keep.device)).flatten()


class Structured(Hooks):
    """Mask the lowest-L2 neurons per layer at ``prune_at``, fine-tune, then rebuild smaller."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.sparsity = _fraction(self.options, "prune_sparsity", 0.999)
        self.at = _fraction(self.options, "prune_at")
        self.groups: list[NeuronGroup] = []
        self.keep: list[torch.Tensor] | None = None
        self.masks: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.set_at = 0.0
        self.stats: dict[str, float] = {}

    def on_model(self, model: nn.Module) -> nn.Module:
        self.groups = neuron_groups(model)
        if not self.groups:
            raise AirlabError("prune_structured found no hidden neurons or channels to prune")
        return model

    def score(self, model: nn.Module, g: NeuronGroup) -> torch.Tensor:
        """L2 norm of every weight attached to each unit (its rows in and columns out)."""
        sq = torch.zeros(g.size, device=next(model.parameters()).device)
        for name in g.producers:
            m = _layer(model, name)
            sq += m.weight.detach().float().pow(2).flatten(1).sum(1)
            if m.bias is not None:
                sq += m.bias.detach().float().pow(2)
        for name, per in g.consumers:
            w = _layer(model, name).weight.detach().float()
            sq += w.pow(2).transpose(0, 1).flatten(1).sum(1).view(g.size, per).sum(1)
        return sq.sqrt()

    def prune(self, model: nn.Module, progress: float) -> None:
        self.keep, self.set_at = [], progress
        wmask: dict[str, torch.Tensor] = {}
        for g in self.groups:
            n_keep = max(1, g.size - round(self.sparsity * g.size))
            keep = self.score(model, g).topk(n_keep).indices.sort().values
            self.keep.append(keep)
            unit = torch.zeros(g.size, device=keep.device)
            unit[keep] = 1.0
            for name in g.producers:
                w = _layer(model, name).weight
                m = wmask.setdefault(name, torch.ones_like(w))
                m *= unit.view(-1, *([1] * (w.dim() - 1)))
            for name, per in g.consumers:
                w = _layer(model, name).weight
                m = wmask.setdefault(name, torch.ones_like(w))
                m *= unit.repeat_interleave(per).view(1, -1, *([1] * (w.dim() - 2)))
        producer_units = {n: self.keep[i] for i, g in enumerate(self.groups)
                          for n in g.producers}
        self.masks = {}
        for name, m in wmask.items():
            bias = _layer(model, name).bias
            bmask = None
            if bias is not None and name in producer_units:
                bmask = torch.zeros_like(bias)
                bmask[producer_units[name]] = 1.0
            self.masks[name] = (m, bmask)
        self.apply(model)

    def apply(self, model: nn.Module) -> None:
        with torch.no_grad():
            for name, (wm, bm) in self.masks.items():
                mod = _layer(model, name)
                mod.weight.mul_(wm)
                if bm is not None and mod.bias is not None:
                    mod.bias.mul_(bm)

    def after_step(self, model: nn.Module, step: int, progress: float) -> None:
        if self.keep is None and progress >= self.at:
            self.prune(model, progress)
        elif self.keep is not None:
            self.apply(model)

    def rebuild(self, model: nn.Module) -> nn.Module:
        """A copy of the (masked) model with the pruned units physically removed."""
        assert self.keep is not None
        rows: dict[str, torch.Tensor] = {}
        cols: dict[str, torch.Tensor] = {}
        for g, keep in zip(self.groups, self.keep, strict=True):
            for name in g.producers:
                rows[name] = keep
            for name, per in g.consumers:
                cols[name] = _cols(keep, per)
        small = copy.deepcopy(model)
        for name in sorted(set(rows) | set(cols)):
            old = _layer(small, name)
            w = old.weight.detach()
            r = rows.get(name)
            c = cols.get(name)
            if r is not None:
                w = w[r]
            if c is not None and not _is_depthwise(old):
                w = w[:, c]
            b = old.bias.detach() if old.bias is not None else None
            if b is not None and r is not None:
                b = b[r]
            new = self._resized(old, w, b)
            parent_name, _, child = name.rpartition(".")
            setattr(small.get_submodule(parent_name) if parent_name else small, child, new)
        return small

    @staticmethod
    def _resized(old: nn.Linear | nn.Conv2d, w: torch.Tensor, b: torch.Tensor | None
                 ) -> nn.Linear | nn.Conv2d:
        kw: dict[str, Any] = {"device": w.device, "dtype": w.dtype}
        new: nn.Linear | nn.Conv2d
        if isinstance(old, nn.Linear):
            new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, **kw)
        else:
            assert isinstance(old, nn.Conv2d)
            groups = w.shape[0] if _is_depthwise(old) else 1
            # The old layer's geometry (torch types it tuple[int, ...]; a Conv2d's is 2-d).
            kw.update(kernel_size=old.kernel_size, stride=old.stride, padding=old.padding,
                      dilation=old.dilation, padding_mode=old.padding_mode)
            new = nn.Conv2d(w.shape[1] * groups, w.shape[0], groups=groups, bias=b is not None,
                            **kw)
        with torch.no_grad():
            new.weight.copy_(w)
            if b is not None and new.bias is not None:
                new.bias.copy_(b)
        return new

    def deploy(self, model: nn.Module, task: Any) -> nn.Module:
        if self.keep is None:  # a budget too short to reach prune_at
            self.prune(model, 1.0)
        self.apply(model)
        pruned = {n: _layer(model, n).weight for n in self.masks}
        small = self.rebuild(model)
        # Cheap check that the rebuild is the masked model: same outputs on a few inputs.
        x, _ = task.next_batch()
        a, b = _outputs(model, x[:4]), _outputs(small, x[:4])
        if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
            raise AssertionError(f"structured rebuild changed the outputs (max diff "
                                 f"{float((a - b).abs().max()):.3g})")
        removed = sum(g.size - len(k) for g, k in zip(self.groups, self.keep or [], strict=True))
        self.stats = {
            "sparsity": measured_sparsity(pruned),
            "neuron_sparsity": removed / sum(g.size for g in self.groups),
            "prune_target": self.sparsity,
            "prune_progress": self.set_at,
            "params_dense": float(measure.count_params(model)),
        }
        return small

    def on_finish(self, model: nn.Module, task: Any) -> dict[str, float]:
        return dict(self.stats)


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train(was)
    return (out[0] if isinstance(out, tuple) else out).float()


def _validated(hooks: type[Hooks]) -> Any:
    """Config hook that checks how the options fit together (prune_end after prune_start) by
    building the hooks (cheap: no model yet), so a bad value fails at resolve time."""
    def check(config: dict[str, Any]) -> dict[str, Any]:
        hooks(config)
        return {}
    return check


PRUNE_SWITCHES = ("prune_oneshot", "prune_gradual", "prune_structured")


def _others(name: str) -> tuple[str, ...]:
    return tuple(n for n in PRUNE_SWITCHES if n != name)


def _frac(default: float, help: str, high: float = 1.0) -> Option:
    return Option(default, float, 0.0, high, help=help)


_SPARSITY = _frac(0.5, "fraction of the pruned set to remove", 0.999)
_AT = _frac(0.5, "budget fraction at which to prune")


register(Technique(
    name="prune_oneshot", area="pruning",
    help="global magnitude pruning of block weights to prune_sparsity at budget fraction "
         "prune_at, then fine-tuning with the mask kept",
    options={"prune_sparsity": _SPARSITY, "prune_at": _AT},
    hooks=OneShot, overrides=_validated(OneShot),
    workloads=("charlm", "vision"), excludes=_others("prune_oneshot")))
register(Technique(
    name="prune_gradual", area="pruning",
    help="Zhu & Gupta cubic sparsity schedule from prune_start to prune_end, global magnitude, "
         "masks updated every prune_every steps",
    options={"prune_sparsity": _SPARSITY,
             "prune_initial": _frac(0.0, "sparsity at prune_start", 0.999),
             "prune_start": _frac(0.1, "budget fraction where the schedule starts"),
             "prune_end": _frac(0.8, "budget fraction where it reaches prune_sparsity"),
             "prune_every": Option(10, int, 1, 10**9, help="steps between mask updates")},
    hooks=Gradual, overrides=_validated(Gradual), workloads=("charlm", "vision"),
    excludes=_others("prune_gradual")))
register(Technique(
    name="prune_structured", area="pruning",
    help="remove prune_sparsity of MLP neurons / conv channels per layer by L2 norm at "
         "prune_at, fine-tune, then rebuild smaller dense layers",
    options={"prune_sparsity": _SPARSITY, "prune_at": _AT},
    hooks=Structured, overrides=_validated(Structured),
    workloads=("charlm", "vision"), excludes=_others("prune_structured")))
