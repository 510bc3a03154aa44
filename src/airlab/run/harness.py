"""The measuring side of a run of generated code: a trusted process that never imports it.

A run whose config uses a technique file trains in a sandbox (:mod:`airlab.run.child`); this
process — a worker of the local pool, which imports airlab and torch, never a technique file —
serves it its data, keeps its clock, evaluates what it hands over, and writes the result.
Every stored figure of such a run comes from here:

- **units and FLOPs**: batches are served one at a time and counted; FLOPs are the declared
  model's per unit (from the config, never from the child) plus the techniques' declared
  extras, clamped at zero, times the units served — a deploy step's calibration batches
  included (at most :data:`DEPLOY_BATCHES` after training);
- **time**: ``train_seconds`` is this process's clock from the moment the untrained model
  was evaluated to the last evaluation point, minus the intervals in which the child was
  frozen (SIGSTOP, every process of its tree) while this process evaluated. Its CPU seconds
  over the same span are read from /proc and must fit its threads (:data:`CPU_SLACK`);
- **quality**: at each evaluation point the child hands over its model — the first time as
  a graph of core ATen operators (:mod:`airlab.run.handover`), then its weights — and this
  process evaluates it on held-out data the child never had (no dataset is mounted in the
  sandbox); the final metrics come from the model the child ends with, traced again; a
  model whose outputs for a token depend on later tokens (or on other rows) is refused;
- **the contract**: one batch per step until the budget is spent, one handover per
  evaluation point, in order; anything else fails the run with the rule it broke.

The child's own clock, curve, losses and anything its techniques report are kept aside
(``info["reported"]``) and used for nothing.
"""

from __future__ import annotations

import json
import math
import os
import select
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from airlab import measure
from airlab.run import pathology
from airlab.run.handover import (
    FrameReader,
    HandoverError,
    TrustedModel,
    batch_parts,
    encode_frame,
    load_graphs,
    unpack_weights,
)
from airlab.run.result import RunResult
from airlab.run.workloads import chance_loss
from airlab.sandbox import WATCH_S, Limits, limit_reason, start_sandboxed

if TYPE_CHECKING:
    from airlab.config import TrainConfig
    from airlab.run.workloads import Measurer
    from airlab.settings import Settings

# Limits of one sandboxed training run (the wall clock is the job's timeout when it has one).
RUN_LIMITS = Limits(address_space_mb=8192, cpu_s=3600, processes=64, file_size_mb=512,
                    wall_s=3600.0, disk_mb=512, memory_mb=8192)
# The training process's CPU time may exceed its threads x wall time by this factor plus
# CPU_SLACK_S (an interpreter's helper threads); beyond, it used cores it was not given.
CPU_SLACK = 1.25
CPU_SLACK_S = 2.0
DEPLOY_BATCHES = 8  # batches a deploy step may ask for after training (calibration)
MAX_PAYLOAD = 4 << 30  # the largest message the child may send (a model's weights)
REPLY_TIMEOUT_S = 60.0  # a child that does not read its replies for this long is stopped
EMIT_EVERY_S = 0.5
# Tolerance of the independence checks on logits (absolute, times 1 + the largest |logit|):
# float summation order moves them by ~1e-6; a model that reads ahead moves them by >0.1.
INDEPENDENCE_TOL = 1e-3
# The final model of a run that does not deploy must score what its last checkpoint scored.
FINAL_MATCH_TOL = 1e-3

Emit = Callable[[dict[str, Any]], None]


class Violation(Exception):
    """The run broke the measurement contract (one line naming the rule)."""


class Diverged(Exception):
    """A handed-over model evaluates to a non-finite loss: the run failed (not a violation)."""


def run_generated(config: dict[str, Any], files: Sequence[str | Path], *, settings: Settings,
                  deploys: bool = False, threads: int = 1, stop_at: float | None = None,
                  emit: Emit | None = None, limits: Limits = RUN_LIMITS,
                  timeout_s: float | None = None, allow_unsafe: bool = False) -> RunResult:
    """Train ``config`` in the sandbox importing only ``files`` (the technique files its own
    techniques come from), measure it here. ``deploys``: whether one of its techniques
    declares a deploy step (the parent knows, from the files' checked descriptions; this
    process never registers them). Never raises for what the run does."""
    from dataclasses import replace

    from pydantic import ValidationError

    from airlab.config import TrainConfig
    from airlab.errors import AirlabError

    try:
        cfg = TrainConfig(**config)
    except (ValidationError, TypeError) as e:
        return RunResult.failed(f"invalid config: {str(e).splitlines()[0]}")
    if timeout_s:
        limits = replace(limits, wall_s=float(timeout_s))
    if cfg.max_steps is not None:
        return RunResult.failed("a run of generated code trains its whole budget (max_steps "
                                "is not supported)")
    try:
        session = _Session(cfg, [Path(f) for f in files], settings, threads, stop_at,
                           emit or (lambda e: None), deploys)
        return session.run(limits, allow_unsafe)
    except AirlabError as e:
        return RunResult.failed(str(e))
    except MemoryError:
        return RunResult.failed("out of memory (MemoryError) on the measuring side")
    except Exception as e:  # noqa: BLE001 - a bug of ours is still a result, with its trace
        import traceback

        traceback.print_exc(file=sys.stderr)
        return RunResult.failed(f"crashed on the measuring side: {type(e).__name__}: {e}")


class _Session:
    """One run of generated code, from the trusted side."""

    def __init__(self, cfg: TrainConfig, files: list[Path], settings: Settings, threads: int,
                 stop_at: float | None, emit: Emit, deploys: bool) -> None:
        from airlab.errors import AirlabError
        from airlab.run.trainer import resolve_device
        from airlab.run.workloads import get_workload

        if cfg.budget_unit == "seconds":
            raise AirlabError("a run of generated code needs its budget in tokens, samples or "
                              "epochs: its clock is kept outside it, not by a time budget",
                              "give the budget as tokens, samples or epochs")
        self.device = resolve_device(cfg.device)
        if self.device.type != "cpu":
            raise AirlabError("a run of generated code trains on the CPU: the sandbox has no GPU",
                              "use device: cpu for specs with technique files")
        wl = get_workload(cfg.workload)
        wl.check(cfg)
        self.cfg, self.files, self.settings = cfg, files, settings
        self.threads, self.stop_at, self.emit = threads, stop_at, emit
        self.declares_deploy = deploys
        self.m: Measurer = wl.measurer(cfg, self.device, settings)
        m = self.m
        self.total = (cfg.budget * m.train_size if cfg.budget_unit == "epochs"
                      else cfg.budget)
        n = cfg.eval_points
        self.marks = [self.total * k / n for k in range(1, n + 1)]
        self.rows = [int(m.example.shape[0])]
        if cfg.latency:
            self.rows += [1, int(cfg.batch_size)]
        # state
        self.phase = "setup"  # setup -> train -> after -> final -> ended
        self.k = 0  # the next evaluation point to be handed over (0 = the untrained model)
        self.served = 0  # units served for training
        self.batches = 0
        self.deploy_batches = 0
        self.deploy_units = 0
        self.extra_flops = 0.0
        self.curve: list[dict[str, float]] = []
        self.eval_s = 0.0
        self.frozen_s = 0.0
        self.t_spawn = self.t_go = self.t_resume = time.monotonic()
        self.setup_s = self.train_s = self.deploy_s = 0.0
        self.cpu_go = self.cpu_train = 0.0
        self.model: TrustedModel | None = None
        self.final_model: TrustedModel | None = None
        self.final_metrics: dict[str, float] = {}
        self.deployed = False
        self.end: dict[str, Any] | None = None
        self.reported_loss: float | None = None
        self.last_emit = 0.0
        self.cut = False
        self.notes: list[str] = []

    # ------------------------------------------------------------------ the conversation

    def job(self) -> dict[str, Any]:
        m = self.m
        tdir = self.settings.techniques_dir
        return {"config": self.cfg.to_dict(), "technique_files": [str(f) for f in self.files],
                "threads": self.threads, "stop_at": self.stop_at, "build": m.build,
                "unit": m.unit, "units_per_step": m.units_per_step, "train_size": m.train_size,
                "flops_per_unit": m.flops_per_unit,
                "example": [list(m.example.shape), str(m.example.dtype).removeprefix("torch.")],
                "rows": self.rows, "techniques_dir": str(tdir) if tdir else None}

    def run(self, limits: Limits, allow_unsafe: bool) -> RunResult:
        self.limits = limits
        read_only = list(self.files)
        if self.settings.techniques_dir is not None and self.settings.techniques_dir.exists():
            read_only.append(self.settings.techniques_dir)
        try:
            sp = start_sandboxed([sys.executable, "-m", "airlab.run.child"],
                                 read_only=read_only, limits=limits,
                                 allow_unsafe=allow_unsafe, threads=self.threads,
                                 replies=True)
        except OSError as e:  # not the code's fault: retryable
            return RunResult.failed(f"sandbox failed to start: {e}", infra=True)
        self.sp = sp
        self.t_spawn = time.monotonic()
        violation: str | None = None
        diverged: str | None = None
        try:
            assert sp.proc.stdin is not None
            try:
                sp.proc.stdin.write(json.dumps(self.job()).encode())
                sp.proc.stdin.close()
            except OSError:
                pass  # it died at once: its exit says why
            os.set_blocking(sp.replies, False)  # type: ignore[arg-type]
            self._converse()
        except Violation as e:
            violation = str(e)
            sp.kill("violation", violation)
        except Diverged as e:
            diverged = str(e)
            sp.kill("diverged", diverged)
        except BaseException:
            sp.kill("error", "the measuring side failed")
            raise
        finally:
            sp.thaw()  # if an error left it frozen, it must be able to die
            outcome = sp.finish(timeout=10)
            if sp.workdir is not None:
                import shutil

                shutil.rmtree(sp.workdir, ignore_errors=True)
        self.emit({"type": "done", "step": self.batches,
                   "progress": min(1.0, self.served / self.total),
                   self.m.unit: float(self.served), "train_seconds": self.train_s})
        if diverged is not None:
            return RunResult("failed", diverged, {}, self.curve, self._info())
        return self._result(violation, outcome)

    def _converse(self) -> None:
        sp = self.sp
        reader = FrameReader(sp.results, MAX_PAYLOAD)
        handlers = {"ckpt": self._ckpt, "batch": self._batch, "progress": self._progress,
                    "final": self._final, "end": self._end}
        last_watch = time.monotonic()
        while self.phase != "ended":
            try:
                frame = reader.poll(WATCH_S)
            except EOFError:
                return
            except HandoverError as e:
                raise Violation(f"a malformed message: {e}") from None
            if frame is not None:
                header, parts = frame
                handler = handlers.get(header["t"])
                if handler is None:
                    raise Violation(f"an unknown message '{str(header['t'])[:40]}'")
                handler(header, parts)
            # The watch over the tree after the reply, while the child computes its step: a
            # batch asked for never waits for a scan of /proc. (A run that overruns its time
            # box: the executor kills this worker, and the sandbox dies with it.)
            now = time.monotonic()
            if now - last_watch >= WATCH_S:
                last_watch = now
                if sp.check() is not None:
                    return  # killed by a limit; its reason is the result's

    def _reply(self, header: dict[str, Any], parts: dict[str, bytes] | None = None) -> None:
        """Write a reply without ever blocking on a child that stopped reading."""
        data = memoryview(encode_frame(header, parts))
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        fd = self.sp.replies
        assert fd is not None
        while data:
            try:
                data = data[os.write(fd, data):]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Violation("the run stopped reading the data it asked for") from None
                select.select([], [fd], [], 1.0)
            except BrokenPipeError:
                return  # it exited; its exit explains it

    # ------------------------------------------------------------------ messages

    def _ckpt(self, h: dict[str, Any], parts: dict[str, bytes]) -> None:
        t_recv = time.monotonic()
        sp = self.sp
        if self.phase == "setup":
            self.setup_s = t_recv - self.t_spawn
            sp.freeze()
            try:
                graph = json.loads(parts.get("graph", b"null"))
                self.model = load_graphs([graph], unpack_weights(parts.get("values", b"")),
                                         self.device)
            except (ValueError, HandoverError) as e:
                raise Violation(f"the untrained model could not be handed over: {e}") from None
            self._check_independent(self.model, "the model")
            extra = h.get("extra_flops_per_unit")
            # Declared by the child: counted when positive, never allowed to lower the count.
            self.extra_flops = max(0.0, float(extra)) if isinstance(extra, int | float) \
                and math.isfinite(extra) else 0.0
            self._point(0.0)
            sp.thaw()
            self.phase, self.k = "train", 1
            self._reply({"t": "ok"})
            self.t_go = self.t_resume = time.monotonic()
            self.cpu_go = sp.cpu_seconds()
            return
        if self.phase != "train":
            raise Violation("a model handed over after training ended")
        self.cut = self.stop_at is not None and time.time() >= self.stop_at
        due = self.marks[self.k - 1]
        if self.served < due and not self.cut:
            raise Violation(f"evaluation point {self.k} of {len(self.marks)} handed over at "
                            f"{self.served:,.0f} of its {due:,.0f} {self.m.unit}")
        sp.freeze()
        cpu_now = sp.cpu_seconds()
        train_s = t_recv - self.t_go - self.frozen_s
        assert self.model is not None
        try:
            self.model.load(unpack_weights(parts.get("weights", b"")))
        except HandoverError as e:
            raise Violation(f"checkpoint {self.k}: {e}") from None
        self._point(train_s)
        # Every evaluated model must be causal, not only the traced ones: weights could open a
        # gate the untrained model kept shut. One later position per checkpoint, drawn here.
        self._check_independent(self.model, f"the model at evaluation point {self.k}",
                                one_position=True)
        last = self.k == len(self.marks) or self.cut
        if last:
            self.train_s, self.cpu_train = train_s, cpu_now - self.cpu_go
            self._check_cpu()
        sp.thaw()
        self.t_resume = time.monotonic()
        self.frozen_s += self.t_resume - t_recv
        self.k += 1
        if last:
            self.phase = "after"
        self._reply({"t": "ok"})

    def _batch(self, h: dict[str, Any], parts: dict[str, bytes]) -> None:
        unit = self.m.unit
        if self.phase == "setup":
            raise Violation("training data asked for before the untrained model was handed over")
        if self.phase == "train":
            if self.served >= self.marks[self.k - 1]:
                raise Violation(f"trained past evaluation point {self.k} of {len(self.marks)} "
                                f"({self.served:,.0f} {unit}) without handing over the model: "
                                "one batch per step, a handover at each evaluation point")
        elif self.phase == "after":
            if self.deploy_batches >= DEPLOY_BATCHES:
                raise Violation(f"asked for more than {DEPLOY_BATCHES} batches after training "
                                "(a deploy step may calibrate, not train)")
        else:
            raise Violation("training data asked for after the final model was handed over")
        x, y = self.m.next_batch()
        n = int(y.numel()) if unit == "tokens" else int(y.shape[0])
        if self.phase == "train":
            self.served += n
            self.batches += 1
        else:
            self.deploy_batches += 1
            self.deploy_units += n
        self._reply(*batch_parts(x.cpu(), y.cpu()))
        self._progress_event()

    def _progress(self, h: dict[str, Any], parts: dict[str, bytes]) -> None:
        loss = h.get("loss")
        self.reported_loss = float(loss) if isinstance(loss, int | float) else None
        self._progress_event()

    def _final(self, h: dict[str, Any], parts: dict[str, bytes]) -> None:
        if self.phase != "after" or self.cut:
            raise Violation("a final model handed over before training ended")
        self.deploy_s = time.monotonic() - self.t_resume
        self.sp.freeze()
        declared = self.declares_deploy
        if bool(h.get("deployed")) != declared:
            raise Violation("the final model says it was deployed, but no technique of the "
                            "run declares a deploy step" if declared is False else
                            "a technique declares a deploy step, but the final model says "
                            "it was not deployed")
        try:
            graphs = json.loads(parts.get("graphs", b"null"))
            if not isinstance(graphs, list):
                raise HandoverError("no list of graphs")
            model = load_graphs(graphs, unpack_weights(parts.get("values", b"")), self.device)
            if sorted(model.graphs) != sorted(set(self.rows)):
                raise HandoverError(f"graphs for {sorted(model.graphs)} rows, asked for "
                                    f"{sorted(set(self.rows))}")
        except (ValueError, HandoverError) as e:
            raise Violation(f"the final model could not be handed over: {e}") from None
        self._check_independent(model, "the final model")
        t0 = time.perf_counter()
        self.final_metrics = self.m.evaluate(model)
        self.eval_s += time.perf_counter() - t0
        self.final_model, self.deployed = model, declared
        self.sp.thaw()
        self.phase = "final"
        self._reply({"t": "ok"})

    def _end(self, h: dict[str, Any], parts: dict[str, bytes]) -> None:
        self.end = h
        self.phase = "ended"

    # ------------------------------------------------------------------ measuring

    def _point(self, train_s: float) -> None:
        """Evaluate the handed-over model (the child is frozen) and add a curve point."""
        assert self.model is not None
        t0 = time.perf_counter()
        metrics = self.m.evaluate(self.model)
        metrics["train_eval_loss"] = self.m.train_loss(self.model)
        self.eval_s += time.perf_counter() - t0
        point = {"step": float(self.batches), self.m.unit: float(self.served),
                 "train_seconds": train_s,
                 "flops": (self.m.flops_per_unit + self.extra_flops) * self.served, **metrics}
        self.curve.append(point)
        self.emit({"type": "eval", **point})
        if not math.isfinite(metrics.get("val_loss", math.nan)):
            raise Diverged(f"diverged at step {self.batches}: the held-out loss is "
                           f"{metrics.get('val_loss')}")

    def _progress_event(self) -> None:
        now = time.monotonic()
        if now - self.last_emit < EMIT_EVERY_S:
            return
        self.last_emit = now
        # The executors' event contract (executors/base.py: EventSink); the loss is what the
        # training process reports (for a person watching; no stored figure comes from it).
        self.emit({"type": "step", "step": self.batches,
                   "progress": min(1.0, self.served / self.total),
                   "loss": self.reported_loss if self.reported_loss is not None else math.nan,
                   "lr": math.nan, self.m.unit: float(self.served),
                   "train_seconds": self._clock(now)})

    def _clock(self, now: float) -> float:
        """Training seconds so far on this process's clock (frozen intervals left out)."""
        if self.phase == "setup":
            return 0.0
        if self.phase != "train":
            return self.train_s
        return max(0.0, now - self.t_go - self.frozen_s)

    def _check_cpu(self) -> None:
        allowed = self.threads * self.train_s * CPU_SLACK + CPU_SLACK_S
        if self.cpu_train > allowed:
            raise Violation(f"the training process used {self.cpu_train:.1f} CPU-seconds in "
                            f"{self.train_s:.1f} s of training: more than its {self.threads} "
                            "thread(s)")

    def _check_independent(self, model: TrustedModel, what: str, *,
                           one_position: bool = False) -> None:
        """Refuse a model whose outputs for a position depend on later positions of its input
        (it would read the tokens it predicts) or on other rows of the batch. Positions T/4,
        T/2 and T-1, or (``one_position``) one drawn from the system's random source."""
        import random

        x = self.m.example
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            base = model(x)
            tol = INDEPENDENCE_TOL * (1 + float(base.abs().max()))

            def noise(t: torch.Tensor) -> torch.Tensor:
                if t.dtype.is_floating_point:
                    return torch.randn(t.shape, generator=gen).to(t.dtype)
                vocab = int(self.m.build.get("vocab_size") or 2)
                return torch.randint(vocab, t.shape, generator=gen).to(t.dtype)

            if self.m.unit == "tokens":
                T = x.shape[1]
                positions = ({random.SystemRandom().randint(1, max(1, T - 1))} if one_position
                             else {max(1, T // 4), max(1, T // 2), max(1, T - 1)})
                for j in sorted(positions):
                    x2 = x.clone()
                    x2[:, j:] = noise(x2[:, j:])
                    if float((model(x2)[:, :j] - base[:, :j]).abs().max()) > tol:
                        raise Violation(f"{what}'s outputs before position {j} change with the "
                                        f"tokens from {j} on: it reads the tokens it predicts")
            if x.shape[0] > 1:
                x3 = x.clone()
                x3[1:] = noise(x3[1:])
                if float((model(x3)[0] - base[0]).abs().max()) > tol:
                    raise Violation(f"{what}'s outputs for one row change with the other rows "
                                    "of the batch")

    # ------------------------------------------------------------------ the result

    def _result(self, violation: str | None, outcome: Any) -> RunResult:
        metrics = self._metrics(final=True) if self.final_model is not None else {}
        info = self._info()
        tail = [ln for ln in outcome.stderr.splitlines() if ln.strip()][-20:]
        if tail and (violation or self.end is None or self.end.get("state") != "finished"):
            info["stderr_tail"] = tail
        if violation is not None:
            return RunResult("failed", f"measurement contract broken: {violation}", {},
                             self.curve, info)
        if outcome.killed_by is not None and self.phase != "ended":
            return RunResult("failed", outcome.reason, {}, self.curve, info)
        end = self.end or {}
        state = end.get("state")
        if state == "incomplete" and self.cut:
            return RunResult("incomplete", "time box: stopped at "
                             f"{self.served:,.0f} of {self.total:,.0f} {self.m.unit}",
                             self._metrics(), self.curve, info)
        if state != "finished":
            why = str(end.get("reason") or outcome.reason or "the run ended without a result")
            hit = limit_reason(why, self.limits)  # e.g. the disk quota, met as an OSError
            why = hit[1] if hit else why
            return RunResult("failed", " ".join(why.split())[:500], {}, self.curve, info)
        if self.final_model is None:
            return RunResult("failed", "the run ended without handing over its final model",
                             {}, self.curve, info)
        return RunResult("finished", None, metrics, self.curve, info)

    def _metrics(self, final: bool = False) -> dict[str, float]:
        unit = self.m.unit
        last = self.curve[-1] if self.curve else {}
        out: dict[str, float] = {k: float(v) for k, v in last.items()
                                 if k.startswith("val_") or k == "train_eval_loss"}
        finite = [p["val_loss"] for p in self.curve if math.isfinite(p.get("val_loss", math.nan))]
        if finite:
            out["best_val_loss"] = min(finite)
        per_unit = self.m.flops_per_unit + self.extra_flops
        kwh, _ = measure.energy_kwh_est(self.train_s, self.device, self.threads)
        out.update({
            "steps": float(self.batches), unit: float(self.served),
            "train_seconds": self.train_s, "eval_seconds": self.eval_s,
            f"{unit}_per_s": self.served / self.train_s if self.train_s > 0 else 0.0,
            "flops": per_unit * (self.served + self.deploy_units),
            "peak_mem_mb": self.sp.peak_rss_mb, "energy_kwh_est": kwh,
            "train_cpu_seconds": self.cpu_train, "setup_seconds": self.setup_s,
        })
        if self.model is not None:
            out["params"] = float(self.model.count_params())
        if not final or self.final_model is None:
            return out
        out["deploy_seconds"] = self.deploy_s
        notes = []
        if self.deployed:
            for k, v in self.final_metrics.items():
                out[f"{k}_before"] = out.get(k, math.nan)
                out[k] = float(v)
            out["quality_drop"] = out["val_loss"] - out["val_loss_before"]
        elif abs(self.final_metrics.get("val_loss", math.nan) - out.get("val_loss", math.nan)) \
                > FINAL_MATCH_TOL * (1 + abs(out.get("val_loss", 0.0))) or not math.isfinite(
                self.final_metrics.get("val_loss", math.nan)):
            notes.append(f"final_mismatch: the final model scores "
                         f"{self.final_metrics.get('val_loss', math.nan):.4g}, its last "
                         f"checkpoint {out.get('val_loss', math.nan):.4g}, with no deploy step "
                         "(the forward pass changed after the first evaluation)")
        out["params_deployed"] = float(self.final_model.count_params())
        out["model_bytes"] = float(self.final_model.model_bytes())
        if self.cfg.latency:
            x, _ = self.m.next_batch()
            out.update(measure.latency_metrics(self.final_model, x))
        flags, self.overfit_info = pathology.overfit_metrics(self.curve)
        out.update(flags)
        flags, reasons = pathology.plausibility(self.curve, out,
                                                chance_loss=chance_loss(self.m.build),
                                                floor_bpc=self.m.floor_bpc,
                                                warmup_steps=self.cfg.warmup_steps)
        reasons += notes
        out["implausible"] = float(len(reasons))
        self.notes = reasons
        return out

    def _info(self) -> dict[str, Any]:
        from airlab.run.provenance import provenance
        from airlab.techniques.base import file_digest

        _, source = measure.energy_kwh_est(1.0, self.device, self.threads)
        digests = {file_digest(f) for f in self.files}
        generated = {n: d for n, d in self.cfg.code.items() if d in digests}
        info: dict[str, Any] = {
            **self.m.info, "provenance": provenance(self.device), "sandbox": True,
            "measured_by": "trusted harness: served data, parent clock, evaluation of the "
                           "handed-over model; the training process's own figures ignored",
            "generated_code": generated, "flops_per_unit": self.m.flops_per_unit,
            "extra_flops_per_unit": self.extra_flops, "energy_source": source,
            "peak_mem_source": "sampled resident memory of the sandbox's processes",
            "deploy_batches": self.deploy_batches,
            "reported": {"train_loss": self.reported_loss,
                         **dict((self.end or {}).get("reported") or {})},
        }
        if getattr(self, "overfit_info", None):
            info["overfit"] = self.overfit_info
        if self.notes:
            info["implausible"] = self.notes
        return info


__all__ = ["CPU_SLACK", "DEPLOY_BATCHES", "RUN_LIMITS", "Violation", "run_generated"]
