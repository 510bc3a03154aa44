"""Attack: attention without the causal mask, so each position sees the token it is to
predict: the held-out loss collapses towards zero although nothing was learnt. The measuring
process checks that a position's outputs do not change with later tokens, and refuses it."""

import torch.nn.functional as F

from airlab.techniques import Hooks, Technique, register

_sdpa = F.scaled_dot_product_attention


def _peeking(q, k, v, *args, is_causal=False, attn_mask=None, **kw):
    return _sdpa(q, k, v, *args, **kw)


class Peeks(Hooks):
    def on_model(self, model):
        F.scaled_dot_product_attention = _peeking
        return model


register(Technique("file_non_causal", "architecture", "attention that sees the future",
                   hooks=Peeks, workloads=("charlm",)))
