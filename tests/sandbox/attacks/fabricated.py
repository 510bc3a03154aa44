"""Attack: write a result and exit without training. Once the result file was the run's
result ("best speed-up 7.74x"). Now the result is what the measuring process saw: a message
saying "finished" with no model handed over is a failed run."""

import json
import os
import struct

from airlab.techniques import Hooks, Technique, register

if "SANDBOX_REPLY_FD" in os.environ:  # in a training run (not while being described)
    fd = int(os.environ["SANDBOX_RESULT_FD"])
    head = json.dumps({"t": "end", "state": "finished", "reason": None, "parts": {},
                       "reported": {"val_loss": 0.01, "train_seconds": 0.1}}).encode()
    os.write(fd, struct.pack("!IQ", len(head), 0) + head)
    os._exit(0)


class Nothing(Hooks):
    def after_step(self, model, step, progress):
        pass


register(Technique("file_fabricated", "general", "reports a result it never trained",
                   hooks=Nothing, workloads=("charlm",)))
