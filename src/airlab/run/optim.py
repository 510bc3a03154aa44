"""Optimizers: a registry of builders. Each takes the model and flat keyword arguments (the
trainer passes every TrainConfig field; a builder picks what it needs and ignores the rest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Decay matrices (weights, embeddings); not biases or norm gains.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _fused(cls: Callable[..., torch.optim.Optimizer], groups: list[dict[str, Any]],
           **kw: Any) -> torch.optim.Optimizer:
    """``cls`` with its fused kernel (one pass over all parameters) where torch has one for
    these parameters' device and dtype, else torch's default (foreach) path.

    The same update either way, to float rounding. Measured on the tiny preset, 1 thread, CPU:
    an AdamW step takes 0.63 ms fused against 3.6 ms foreach, next to a 53 ms forward and
    backward (benchmarks/bench_trainer.py measures the whole loop)."""
    params = [q for g in groups for q in g["params"]]
    # torch checks some of this only at the first step (complex parameters), so look first.
    if all(q.is_floating_point() and q.layout == torch.strided
           and q.device.type in _FUSED_DEVICES for q in params):
        try:
            return cls(groups, fused=True, **kw)
        except (RuntimeError, ValueError, TypeError):  # no fused kernel after all
            pass
    return cls(groups, **kw)


_FUSED_DEVICES = frozenset({"cpu", "cuda", "mps", "xpu"})


def _adamw(model: nn.Module, *, lr: float, weight_decay: float, beta1: float, beta2: float,
           **_: Any) -> torch.optim.Optimizer:
    return _fused(torch.optim.AdamW, _param_groups(model, weight_decay), lr=lr,
                  betas=(beta1, beta2))


def _sgd(model: nn.Module, *, lr: float, weight_decay: float, beta1: float,
         **_: Any) -> torch.optim.Optimizer:
    return _fused(torch.optim.SGD, _param_groups(model, weight_decay), lr=lr, momentum=beta1,
                  nesterov=beta1 > 0)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"adamw": _adamw, "sgd": _sgd}


# ---------------------------------------------------------------------------------------------
# Optimizers written here (not in torch): Lion, Adafactor, Muon. Each keeps the trainer's contract:
# the trainer writes the schedule's value into every param group's "lr" before each step.



def _evaluate(closure: Callable[[], Any] | None) -> Any:
    """The optimizer protocol's optional closure: re-evaluate the loss with grad enabled."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()

class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

    update = sign(beta1 * m + (1 - beta1) * g);  p <- p * (1 - lr * wd) - lr * update;
    m <- beta2 * m + (1 - beta2) * g. One state tensor per parameter (Adam keeps two). Every
    element moves by exactly +-lr (before weight decay), so lr must be 3-10x smaller than
    AdamW's and weight decay correspondingly larger to keep lr * wd comparable.
    """

    def __init__(self, params: Any, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        if lr <= 0 or not all(0.0 <= b < 1.0 for b in betas) or weight_decay < 0:
            raise ValueError(f"invalid Lion settings lr={lr}, betas={betas}, wd={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = _evaluate(closure)
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                update = (m * beta1 + g * (1 - beta1)).sign_()
                if wd:
                    p.mul_(1 - lr * wd)  # decoupled: not part of the sign
                p.add_(update, alpha=-lr)
                m.mul_(beta2).add_(g, alpha=1 - beta2)
        return loss


class Adafactor(torch.optim.Optimizer):
    """Adafactor (Shazeer & Stern 2018) with an explicit learning rate.

    * Second moments: for a parameter with >= 2 dims, viewed as (rows, rest), only a row vector
      R (mean of g^2 over columns) and a column vector C (mean over rows) are kept, and
      V ~ outer(R, C) / mean(R): O(n + m) memory instead of O(n * m). 1-D parameters keep a
      full second moment.
    * beta2 schedule: beta2_t = min(beta2, 1 - t^-decay_rate) (the paper's 1 - t^-0.8 for
      decay_rate=0.8). Early steps thus average over all gradients so far, which removes the
      need for bias correction; the configured beta2 caps it later.
    * Relative step size and parameter scaling are OFF: the step is the given lr (so the
      trainer's schedule applies unchanged). Update clipping: U <- U / max(1, RMS(U) / d), d=1.
    * Momentum (beta1 > 0) is optional (the paper uses beta1 = 0 to save memory); weight decay
      is decoupled, p <- p * (1 - lr * wd).
    """

    def __init__(self, params: Any, lr: float = 1e-3, beta1: float = 0.0, beta2: float = 0.999,
                 decay_rate: float = 0.8, clip_threshold: float = 1.0, eps: float = 1e-30,
                 weight_decay: float = 0.0) -> None:
        if lr <= 0 or not 0.0 <= beta1 < 1.0 or not 0.0 < beta2 < 1.0:
            raise ValueError(f"invalid Adafactor settings lr={lr}, beta1={beta1}, beta2={beta2}")
        super().__init__(params, {"lr": lr, "beta1": beta1, "beta2": beta2,
                                  "decay_rate": decay_rate, "clip_threshold": clip_threshold,
                                  "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = _evaluate(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        assert p.grad is not None
        g = p.grad.float()  # statistics in fp32 even for low-precision weights
        state = self.state[p]
        factored = p.dim() >= 2
        if not state:
            state["step"] = 0
            if factored:
                rows = p.shape[0]
                cols = p.numel() // rows
                state["exp_avg_sq_row"] = torch.zeros(rows, device=p.device)
                state["exp_avg_sq_col"] = torch.zeros(cols, device=p.device)
            else:
                state["exp_avg_sq"] = torch.zeros_like(g)
            if group["beta1"] > 0:
                state["exp_avg"] = torch.zeros_like(g)
        state["step"] += 1
        t = state["step"]
        beta2 = min(group["beta2"], 1.0 - t ** (-group["decay_rate"]))
        sq = g.square().add_(group["eps"])
        if factored:
            sq2 = sq.reshape(p.shape[0], -1)
            r, c = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
            r.mul_(beta2).add_(sq2.mean(dim=1), alpha=1 - beta2)
            c.mul_(beta2).add_(sq2.mean(dim=0), alpha=1 - beta2)
            # V_ij ~ R_i C_j / mean(R): rank-1 reconstruction; divide without materialising V.
            inv_r = (r / r.mean()).rsqrt_()
            inv_c = c.rsqrt()
            u = (g.reshape(p.shape[0], -1) * inv_r[:, None] * inv_c[None, :]).reshape(p.shape)
        else:
            v = state["exp_avg_sq"]
            v.mul_(beta2).add_(sq, alpha=1 - beta2)
            u = g / v.sqrt()
        rms = u.square().mean().sqrt()
        u.div_(torch.clamp(rms / group["clip_threshold"], min=1.0))
        if group["beta1"] > 0:
            m = state["exp_avg"]
            m.mul_(group["beta1"]).add_(u, alpha=1 - group["beta1"])
            u = m
        lr = group["lr"]
        if group["weight_decay"]:
            p.mul_(1 - lr * group["weight_decay"])
        p.add_(u.to(p.dtype), alpha=-lr)


# Quintic Newton-Schulz coefficients (Keller Jordan's Muon): chosen to push every singular value
# of the normalised matrix quickly into a band around 1 rather than to converge exactly to 1.
_NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalise a 2-D matrix (replace its singular values by ~1).

    Runs in g's own dtype (fp32 on CPU; bf16 when the weights are bf16). Works on the wide
    orientation (rows <= cols) so the Gram matrix X X^T is the smaller one.
    """
    if g.dim() != 2:
        raise ValueError(f"newton_schulz needs a matrix, got shape {tuple(g.shape)}")
    a, b, c = _NS_COEFFS
    x = g / (g.norm() + eps)  # Frobenius norm >= spectral norm, so all singular values <= 1
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


class Muon(torch.optim.Optimizer):
    """Muon (Keller Jordan 2024): momentum + orthogonalised updates for hidden weight matrices,
    AdamW for everything else, in one optimizer object.

    Groups with ``use_muon=True``: buf <- momentum * buf + g; with Nesterov the update direction
    is g + momentum * buf; it is orthogonalised by 5 Newton-Schulz steps and scaled by
    max(1, rows / cols) ** 0.5; p <- p * (1 - lr * wd) - lr * scale * O.
    Groups with ``use_muon=False``: plain AdamW (bias-corrected, decoupled decay).

    Every group's effective lr is ``group["lr"] * group["lr_scale"]``: the trainer overwrites
    "lr" with the schedule each step, and the fixed per-group ``lr_scale`` keeps the ratio between
    the Muon lr and the AdamW lr, so the schedule (warmup, cosine) shapes both.
    """

    def __init__(self, params: Any, lr: float = 0.02, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = 5, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov,
                                  "ns_steps": ns_steps, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay, "use_muon": False,
                                  "lr_scale": 1.0})
        for group in self.param_groups:
            if group["use_muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon groups may only hold 2-D weight matrices")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = _evaluate(closure)
        for group in self.param_groups:
            lr = group["lr"] * group["lr_scale"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["use_muon"]:
                    self._muon(p, group, lr)
                else:
                    self._adamw(p, group, lr)
        return loss

    def _muon(self, p: torch.Tensor, group: dict[str, Any], lr: float) -> None:
        assert p.grad is not None
        g = p.grad
        state = self.state[p]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(g)
        buf = state["momentum_buffer"]
        buf.mul_(group["momentum"]).add_(g)
        d = g.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
        o = newton_schulz(d, steps=group["ns_steps"])
        # Orthogonal O has RMS sqrt(1/cols) for a tall matrix; the factor evens the RMS update
        # out between tall and wide matrices.
        scale = max(1.0, p.shape[0] / p.shape[1]) ** 0.5
        if group["weight_decay"]:
            p.mul_(1 - lr * group["weight_decay"])
        p.add_(o.to(p.dtype), alpha=-lr * scale)

    def _adamw(self, p: torch.Tensor, group: dict[str, Any], lr: float) -> None:
        assert p.grad is not None
        g = p.grad
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t = state["step"]
        beta1, beta2 = group["betas"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v / (1 - beta2**t)).sqrt_().add_(group["eps"])
        if group["weight_decay"]:
            p.mul_(1 - lr * group["weight_decay"])
        p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))


def muon_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split trainable parameters into (Muon matrices, AdamW rest).

    Muon gets the 2-D weights of the *hidden* nn.Linear layers. AdamW gets everything else:
    embeddings (and an lm_head tied to them), every 1-D parameter (norm gains, biases), conv
    kernels, the input layer (the first module with weights in registration order: the token
    embedding of a GPT, the first Linear of an MLP, the first conv of a CNN) and the output
    layer (the last nn.Linear registered: lm_head, or a classifier). Their gradients do not
    behave like hidden-layer matrices (sparse rows, one row per class), which is why the Muon
    authors keep them on AdamW.
    """
    weighted = [m for m in model.modules()
                if isinstance(m, (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    edge: set[int] = set()
    if weighted:
        edge.add(id(weighted[0]))
    if linears:
        edge.add(id(linears[-1]))
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    muon_ids = {id(m.weight) for m in linears
                if id(m) not in edge and m.weight.dim() == 2
                and id(m.weight) not in embedding_weights}
    params = [p for p in model.parameters() if p.requires_grad]  # shared tensors once
    return ([p for p in params if id(p) in muon_ids],
            [p for p in params if id(p) not in muon_ids])


# Default ratio AdamW lr / Muon lr when no technique sets it: 1e-3 / 0.02.
MUON_ADAM_LR_RATIO = 0.05


def _lion(model: nn.Module, *, lr: float, weight_decay: float, beta1: float, beta2: float,
          **_: Any) -> torch.optim.Optimizer:
    return Lion(_param_groups(model, weight_decay), lr=lr, betas=(beta1, beta2))


def _adafactor(model: nn.Module, *, lr: float, weight_decay: float, beta1: float,
               beta2: float, **_: Any) -> torch.optim.Optimizer:
    return Adafactor(_param_groups(model, weight_decay), lr=lr, beta1=beta1, beta2=beta2)


def _muon(model: nn.Module, *, lr: float, weight_decay: float, beta1: float, beta2: float,
          **_: Any) -> torch.optim.Optimizer:
    """Muon matrices at ``lr`` without weight decay (the reference setting); AdamW for the rest
    at ``lr * MUON_ADAM_LR_RATIO`` (the muon technique resets that ratio from muon_adam_lr)."""
    matrices, rest = muon_split(model)
    groups: list[dict[str, Any]] = [
        {"params": matrices, "use_muon": True, "lr_scale": 1.0, "weight_decay": 0.0}]
    for pg in _param_groups(nn.ParameterList(rest), weight_decay):
        groups.append({**pg, "use_muon": False, "lr_scale": MUON_ADAM_LR_RATIO})
    groups = [g for g in groups if g["params"]]
    return Muon(groups, lr=lr, betas=(beta1, beta2))


OPTIMIZERS["lion"] = _lion
OPTIMIZERS["adafactor"] = _adafactor
OPTIMIZERS["muon"] = _muon
