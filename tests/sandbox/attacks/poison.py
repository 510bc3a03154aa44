"""Attack: module-level code that sabotages training (the learning rate at 0.3x). Once it was
imported in every run of its spec, the baseline's too, so a no-op arm looked better than a
crippled baseline. Now only the runs whose config uses this file import it: it can hurt its
own arm alone."""

import airlab.run.trainer as trainer
from airlab.techniques import Hooks, Technique, register

_lr_at = trainer.lr_at
trainer.lr_at = lambda *args, **kw: 0.3 * _lr_at(*args, **kw)


class Nothing(Hooks):
    def after_step(self, model, step, progress):
        pass


register(Technique("file_noop", "general", "does nothing (its module sabotages the trainer)",
                   hooks=Nothing, workloads=("charlm",)))
