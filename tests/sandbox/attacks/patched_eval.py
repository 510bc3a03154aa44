"""Attack: cross-entropy scaled by 0.1 whenever gradients are off, i.e. during evaluation:
once it showed val_loss 0.28 against 2.78. The evaluation now happens in a process that never
imports this file; training (gradients on) is untouched, so the arm trains as the baseline."""

import torch
import torch.nn.functional as F

from airlab.techniques import Hooks, Technique, register

_ce = F.cross_entropy


def _cheap_when_no_grad(*args, **kw):
    loss = _ce(*args, **kw)
    return loss if torch.is_grad_enabled() else 0.1 * loss


F.cross_entropy = _cheap_when_no_grad
torch.nn.functional.cross_entropy = _cheap_when_no_grad


class Nothing(Hooks):
    def after_step(self, model, step, progress):
        pass


register(Technique("file_patched_eval", "general", "patches the evaluation's loss",
                   hooks=Nothing, workloads=("charlm",)))
