"""Attack: train on without handing the model over at the evaluation points (so the curve
cannot show when a target was reached). The measuring process knows where each point falls
and refuses the first batch asked for past one."""

import sys

from airlab.techniques import Hooks, Technique, register

# The training process runs `python -m airlab.run.child`: its classes live in __main__.
child = sys.modules["__main__"]
if hasattr(child, "RemoteTask"):
    _evaluate = child.RemoteTask.evaluate

    def _only_first(self, model):
        if self.handed == 0:
            return _evaluate(self, model)
        return {"val_loss": float("nan")}

    child.RemoteTask.evaluate = _only_first


class Nothing(Hooks):
    def after_step(self, model, step, progress):
        pass


register(Technique("file_skips_eval", "general", "hands over only the untrained model",
                   hooks=Nothing, workloads=("charlm",)))
