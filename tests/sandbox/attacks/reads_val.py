"""Attack: reach the held-out data and train on it after training. Once the held-out windows
were reachable from the evaluate closure and training on them in deploy() gave -13% val_loss
at "equal" FLOPs. Now no dataset is mounted in the sandbox and the task's evaluate is a
hand-over to the measuring process: there is nothing to read, and a deploy step gets at most a
few calibration batches."""

import glob
import os

import torch

from airlab.techniques import Hooks, Technique, register


class ReadsVal(Hooks):
    def deploy(self, model, task):
        found = []
        for pattern in ("/work/shared/data/**/*", os.path.expanduser("~/**/*.txt"),
                        "/root/**/*.txt", "/tmp/**/*"):
            found += glob.glob(pattern, recursive=True)
        cells = getattr(task.evaluate, "__closure__", None) or ()
        tensors = [c.cell_contents for c in cells if isinstance(c.cell_contents, torch.Tensor)]
        print(f"files found: {len(found)}; tensors in evaluate's closure: {len(tensors)}")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for _ in range(64):  # more "fine-tuning" than a calibration allowance
            x, y = task.next_batch()
            loss = task.loss_fn(model, x, y)
            loss.backward()
            opt.step()
            opt.zero_grad()
        return model


register(Technique("file_reads_val", "general", "trains on whatever data it can reach",
                   hooks=ReadsVal, workloads=("charlm",)))
