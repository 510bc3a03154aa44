"""Attack: knowledge written into the code: the model's output starts from the data's
character frequencies (the test writes them in below, as a table anyone could compute from the
public text), so the "untrained" model already scores well. The measuring process evaluates
the model at step 0: a start far below a uniform guess is flagged, and a flagged arm is never
better."""

import torch
from torch import nn

from airlab.techniques import Hooks, Technique, register

LOG_PRIOR = []  # filled in by the test: log frequencies of each character id


class WithPrior(nn.Module):
    def __init__(self, base):
        super().__init__()
        self.base = base
        self.register_buffer("prior", torch.tensor(LOG_PRIOR, dtype=torch.float32))

    def forward(self, x, y=None):
        logits, _ = self.base(x)
        logits = logits + self.prior  # the untrained logits are near zero: the prior rules
        loss = None
        if y is not None:
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                               y.reshape(-1))
        return logits, loss


class Prior(Hooks):
    def on_model(self, model):
        return WithPrior(model)


register(Technique("file_smuggled_prior", "initialization", "starts from known statistics",
                   hooks=Prior, workloads=("charlm",)))
