"""Techniques: optimizers. Each switch picks an optimizer from ``airlab.run.optim.OPTIMIZERS``
and a learning rate that suits it; an explicit ``lr`` option still wins over the switch.

* ``lion``: Lion at lr / 3 and weight_decay x 3 (the paper's advice: sign updates are larger
  than Adam's, so a smaller lr and a larger decay keep lr x wd about the same), beta2 = 0.99.
* ``adafactor``: Adafactor (factored second moments) at the config lr: with relative steps off
  and update clipping at 1 its steps are Adam-sized.
* ``muon``: Muon on hidden matrices at lr ``muon_lr`` (0.02), momentum ``muon_momentum`` (0.95),
  AdamW for embeddings, head, first layer and 1-D parameters at ``muon_adam_lr`` (default: the
  config lr before the switch). The schedule applies to both via a per-group ``lr_scale``.
* ``sgd_nesterov``: SGD with Nesterov momentum 0.9 at ``sgd_lr`` (0.1), L2 decay 5e-4.

min_lr is moved with lr so the schedule keeps the same floor relative to the peak.
"""

from __future__ import annotations

from typing import Any

from airlab.techniques.base import Hooks, Option, Technique, register

# One optimizer per run: every optimizer switch excludes the others.
OPTIMIZER_SWITCHES = ("lion", "adafactor", "muon", "sgd_nesterov")


def _others(name: str) -> tuple[str, ...]:
    return tuple(n for n in OPTIMIZER_SWITCHES if n != name)


def _with_lr(config: dict[str, Any], lr: float) -> dict[str, Any]:
    """lr and a min_lr that keeps the config's min_lr / lr ratio."""
    ratio = float(config.get("min_lr", 0.0)) / float(config.get("lr", 1e-3))  # lr > 0: checked
    return {"lr": lr, "min_lr": lr * ratio}


def _lion(config: dict[str, Any]) -> dict[str, Any]:
    lr = float(config.get("lr", 1e-3))
    return {"optimizer": "lion", **_with_lr(config, lr / 3),
            "weight_decay": float(config.get("weight_decay", 0.0)) * 3, "beta2": 0.99}


def _muon(config: dict[str, Any]) -> dict[str, Any]:
    opts = config.get("options", {})
    out: dict[str, Any] = {"optimizer": "muon", **_with_lr(config, float(opts["muon_lr"]))}
    if opts.get("muon_adam_lr") is None:
        # The AdamW part keeps the lr the run had before the switch (unless set explicitly).
        out["options"] = {"muon_adam_lr": float(config.get("lr", 1e-3))}
    return out


def _sgd(config: dict[str, Any]) -> dict[str, Any]:
    lr = float(config.get("options", {}).get("sgd_lr", 0.1))
    return {"optimizer": "sgd", **_with_lr(config, lr), "beta1": 0.9, "weight_decay": 5e-4}


class MuonHooks(Hooks):
    """Sets the AdamW groups' lr_scale = muon_adam_lr / lr and the Muon momentum."""

    def on_optimizer(self, optimizer: Any, model: Any) -> Any:
        # resolve() applied the batch-size rule (lr_scaling) to lr and to muon_adam_lr alike
        # (the option is declared scales_with_lr), so the ratio is the stated one.
        adam_lr = float(self.options["muon_adam_lr"])
        scale = adam_lr / float(self.config["lr"])
        for group in optimizer.param_groups:
            if group.get("use_muon"):
                group["momentum"] = float(self.options["muon_momentum"])
            else:
                group["lr_scale"] = scale
        return optimizer

    def extra_flops_per_unit(self, model: Any, optimizer: Any, task: Any) -> float:
        """Newton-Schulz FLOPs per step, spread over the step's tokens/samples.

        Each iteration on an m x n matrix (m <= n after the transpose NS does) costs
        X Xt (2 m^2 n) + A A (2 m^3) + B X (2 m^2 n) = 4 m^2 n + 2 m^3 FLOPs.
        """
        per_step = 0.0
        for group in optimizer.param_groups:
            if not group.get("use_muon"):
                continue
            for p in group["params"]:
                m, n = sorted(p.shape)
                per_step += group.get("ns_steps", 5) * (4 * m * m * n + 2 * m**3)
        return per_step / task.units_per_step


for _t in (
    Technique("lion", "optimizers",
              "Lion optimizer (sign of interpolated momentum), lr / 3, weight decay x 3",
              _lion, excludes=_others("lion")),
    Technique("adafactor", "optimizers",
              "Adafactor: factored second moments (row + column vectors per matrix)",
              {"optimizer": "adafactor"}, excludes=_others("adafactor")),
    Technique("muon", "optimizers",
              "Muon: Newton-Schulz orthogonalised momentum for hidden matrices, AdamW for the "
              "rest", _muon,
              options={"muon_lr": Option(0.02, float, 0, 10, low_open=True,
                                         help="lr of the Muon (hidden matrix) groups"),
                       "muon_adam_lr": Option(None, float, 0, 10, low_open=True,
                                              scales_with_lr=True,
                                              help="lr of the AdamW groups (None: config lr)"),
                       "muon_momentum": Option(0.95, float, 0, 1, high_open=True)},
              hooks=MuonHooks, excludes=_others("muon")),
    Technique("sgd_nesterov", "optimizers", "SGD with Nesterov momentum 0.9",
              _sgd, options={"sgd_lr": Option(0.1, float, 0, 100, low_open=True)},
              excludes=_others("sgd_nesterov")),
):
    register(_t)
