"""Attack: two batches per step (twice the data the budget allows, at "equal tokens"). The
measuring process serves and counts every batch: the second batch of a step arrives past an
evaluation point and the run is refused."""

from airlab.techniques import Hooks, Technique, register


class Hoards(Hooks):
    task = None

    def extra_flops_per_unit(self, model, optimizer, task):
        self.task = task  # the hooks that get the task: keep it for the loss below
        return 0.0

    def wrap_loss(self, loss_fn):
        def doubled(model, x, y):
            loss = loss_fn(model, x, y)
            if self.task is not None:
                loss = 0.5 * (loss + loss_fn(model, *self.task.next_batch()))
            return loss

        return doubled


register(Technique("file_hoards", "general", "takes two batches per step", hooks=Hoards,
                   workloads=("charlm",)))
