"""Attack: a background thread doing matrix products (outside Python's lock) beside training,
i.e. more cores than the run was given, and work that could go on while the run waits. The
measuring process freezes the whole process tree while it evaluates, and reads the tree's CPU
time: more than the run's threads allow fails it."""

import threading

import torch

from airlab.techniques import Hooks, Technique, register


def _spin():
    a = torch.randn(256, 256)
    while True:
        a = torch.tanh(a @ a)


class ExtraCores(Hooks):
    def on_model(self, model):
        threading.Thread(target=_spin, daemon=True).start()
        return model


register(Technique("file_extra_cores", "general", "computes on a second core", hooks=ExtraCores,
                   workloads=("charlm",)))
