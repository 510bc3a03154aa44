"""The training side of a run of generated code, inside the sandbox: it trains, it measures
nothing that counts.

``python -m airlab.run.child`` reads its job (JSON) on stdin, imports the technique files its
own config uses (and no other), and trains through the one loop (:func:`airlab.run.trainer.
train`) on a task whose data and evaluation are the trusted parent's (:mod:`airlab.run.harness`):

- every batch is asked for and served by the parent, which counts them (this process never
  sees the dataset, and the held-out text not at all);
- at each evaluation point the model is handed over — its forward pass as a graph of ATen
  operators at the first point (and again at the end), its weights (safetensors) at every
  point — and the parent evaluates it on held-out data while this process is frozen;
- what this process itself computes (its clock, its FLOPs, its curve, its result) is thrown
  away; only its training losses travel, marked as reported, for a person watching.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import TYPE_CHECKING, Any

from airlab.run.handover import (
    batch_of,
    export_graph,
    model_weights,
    pack_weights,
    read_frame,
    write_frame,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from airlab.config import TrainConfig
    from airlab.run.workloads import Task
    from airlab.settings import Settings

# What the trainer puts in a run's metrics itself: anything else came from a technique's
# on_finish and travels to the parent as "reported" (stored aside, never as a metric).
_OWN = ("val_", "train_loss", "best_val_loss", "steps", "tokens", "samples", "train_seconds",
        "eval_seconds", "flops", "peak_mem_mb", "params", "energy_kwh_est", "quality_drop",
        "model_bytes", "overfit", "implausible", "latency_")


class Refused(Exception):
    """The parent refused a request (the budget is spent); its reason is the run's."""


class Link:
    """Frames to the parent (the result pipe) and its replies (the reply pipe)."""

    def __init__(self, out_fd: int, in_fd: int) -> None:
        self.out_fd, self.in_fd = out_fd, in_fd

    def send(self, header: dict[str, Any], parts: dict[str, bytes] | None = None) -> None:
        write_frame(self.out_fd, header, parts)

    def ask(self, header: dict[str, Any], parts: dict[str, bytes] | None = None
            ) -> tuple[dict[str, Any], dict[str, bytes]]:
        self.send(header, parts)
        reply, data = read_frame(self.in_fd)
        if reply.get("t") == "refused":
            raise Refused(str(reply.get("reason") or "refused"))
        return reply, data


class RemoteTask:
    """Builds the trainer's Task: the declared model built here, the data and the evaluation
    at the other end of the link."""

    def __init__(self, link: Link, job: dict[str, Any]) -> None:
        self.link, self.job = link, job
        self.task: Task | None = None
        self.handed = 0  # checkpoints handed over so far
        self.last_loss = math.nan

    def setup(self, config: TrainConfig, device: torch.device, settings: Settings) -> Task:
        import torch

        from airlab.run.workloads import Task, get_workload

        wl = get_workload(config.workload)
        model, _ = wl.declared_model(self.job["build"])
        shape, dtype = self.job["example"]
        self.example = torch.zeros(shape, dtype=getattr(torch, dtype), device=device)
        self.task = Task(model=model.to(device), unit=self.job["unit"],
                         units_per_step=int(self.job["units_per_step"]),
                         flops_per_unit=float(self.job["flops_per_unit"]),
                         train_size=int(self.job["train_size"]), next_batch=self.next_batch,
                         evaluate=self.evaluate, loss_fn=wl.loss, build=self.job["build"],
                         evaluate_deployed=lambda m: {"val_loss": math.nan})
        self.device = device
        return self.task

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        reply, parts = self.link.ask({"t": "batch"})
        x, y = batch_of(reply, parts)
        return x.to(self.device), y.to(self.device)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Hand the model over (the graph too, the first time); the parent evaluates it."""
        assert self.task is not None
        header: dict[str, Any] = {"t": "ckpt", "loss": _finite(self.last_loss)}
        if self.handed == 0:
            graph, values = export_graph(model, self.example)
            # The trainer added the techniques' declared extra FLOPs to the task's count.
            extra = self.task.flops_per_unit - float(self.job["flops_per_unit"])
            header["extra_flops_per_unit"] = _finite(extra)
            parts = {"graph": json.dumps(graph).encode(), "values": pack_weights(values)}
        else:
            parts = {"weights": pack_weights(model_weights(model))}
        self.link.ask(header, parts)
        self.handed += 1
        return {"val_loss": math.nan}

    def final(self, model: nn.Module, deployed: bool) -> None:
        """Hand over the model the run ends with (deployed, or trained) at every batch size the
        parent measures it at."""
        graphs: list[dict[str, Any]] = []
        values: dict[str, Any] = {}
        for rows in self.job["rows"]:
            example = self.example[:1].expand(rows, *self.example.shape[1:]).contiguous()
            graph, values = export_graph(model, example)
            graphs.append(graph)
        self.link.ask({"t": "final", "deployed": deployed},
                      {"graphs": json.dumps(graphs).encode(), "values": pack_weights(values)})

    def progress(self, event: dict[str, Any]) -> None:
        """The trainer's progress events: its training loss (reported, for display only)."""
        if event.get("type") == "step":
            self.last_loss = float(event.get("loss", math.nan))
            self.link.send({"t": "progress", "loss": _finite(self.last_loss)})


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _settings(job: dict[str, Any]) -> Settings:
    from pathlib import Path

    from airlab.settings import Settings

    here = Path.cwd()
    tdir = job.get("techniques_dir")
    return Settings(home=here, db_url=f"sqlite:///{here / 'unused.db'}", data_dir=None,
                    cache_dir=here / "cache", techniques_dir=Path(tdir) if tdir else None)


def run(job: dict[str, Any], link: Link) -> None:
    import torch

    from airlab.config import TrainConfig
    from airlab.run.trainer import train
    from airlab.techniques import get_technique
    from airlab.techniques.base import load_technique_file

    torch.set_num_threads(int(job.get("threads") or 1))
    for f in job.get("technique_files") or []:
        load_technique_file(f)
    # Latency and saved weights are the parent's to measure and keep, not this process's.
    config = TrainConfig(**{**job["config"], "latency": False, "save_model": False})
    remote = RemoteTask(link, job)
    result = train(config, remote.progress, settings=_settings(job),
                   stop_at=job.get("stop_at"), task_setup=remote.setup)
    if result.state == "finished" and remote.task is not None:
        deployed = any(get_technique(t).deploys for t in config.techniques)
        remote.final(remote.task.model, deployed)
    reported = {k: v for k, v in result.metrics.items()
                if not k.startswith(_OWN) and isinstance(v, int | float)}
    link.send({"t": "end", "state": result.state, "reason": result.reason,
               "reported": {k: _finite(float(v)) for k, v in reported.items()}})


def main() -> int:
    from airlab.sandbox import REPLY_FD_ENV, RESULT_FD_ENV
    from airlab.techniques.contract import one_line

    link = Link(int(os.environ[RESULT_FD_ENV]), int(os.environ[REPLY_FD_ENV]))
    try:
        job = json.loads(sys.stdin.read())
        run(job, link)
    except BaseException as e:  # noqa: BLE001 - the technique's failure is the run's result
        reason = str(e) if isinstance(e, Refused) else one_line(e)
        try:
            link.send({"t": "end", "state": "failed", "reason": reason})
        except OSError:
            pass
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
