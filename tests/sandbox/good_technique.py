"""A technique file as the Coder writes one: shrink the initial weights of the output layers."""

import torch

from airlab.techniques import Hooks, Option, Technique, register


class ShrinkInit(Hooks):
    def on_model(self, model):
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(self.options["file_init_scale"])
        return model

    def on_finish(self, model, task):
        return {"file_init_scale": float(self.options["file_init_scale"])}


register(Technique(
    "file_shrink_init", "initialization", "scale 2-D weights at initialization",
    options={"file_init_scale": Option(0.5, float, 0.0, 2.0, low_open=True,
                                       help="factor on every matrix at init")},
    hooks=ShrinkInit, workloads=("charlm",),
))
