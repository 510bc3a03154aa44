"""Benchmark: what the lab costs next to the training it runs. Prints its ratios, one run.

1. Throughput ratio = median trainer tokens/s / median plain-loop tokens/s, at nanoGPT's CPU
   recipe (the ``tiny`` preset: 4 layers, 4 heads, width 128, context 64, batch 12, fp32, Tiny
   Shakespeare). The plain loop below is what a researcher writes by hand: the same model class,
   the same batches (same sampler and seed), the same AdamW groups, schedule and clipping. Both
   run in this process with the same threads, repeats interleaved (plain, trainer, plain, ...)
   so machine drift hits both; evaluation is outside both timers. Target: >= 1.
2. Lab overhead of an experiment = 1 - (sum over runs of train_seconds) / (workers x wall), where
   wall is the time of ``run_experiment`` (spec -> plan -> worker pool -> store -> analysis ->
   rating -> artifacts) for a demo-sized experiment: the tiny preset, 2 arms x 2 seeds at 150k
   tokens on 2 workers (1 thread each). Everything that is not a training step counts as
   overhead: starting the worker pool, data loading, model setup, evaluation, storing, analysing,
   and idle workers (a worker with no run left). Target: <= 5%. Printed with its parts:
   the evaluation the spec asks for, the start-up (the workers' one torch import), the time
   after the last run (analysis, rating, artifacts) and the rest. Evaluation and start-up are
   nearly fixed per run and per experiment, so the share falls as runs grow: ``--run-tokens
   1e6`` measures 1M-token runs (~4 min). docs/performance.md has the figures.
3. Live writes (``airlab.store.live``: evaluation points and heartbeats written while runs
   train) = CPU seconds of the writer (its thread's CPU time while writing, plus the time spent
   handing it events) / training seconds of the runs written about. Measured twice: in one
   training run of the tiny preset whose live writes are switched on and off in alternating
   windows (a LiveWriter on a real SQLite store in the training process itself, the worst
   case), which also gives the throughput ratio with / without over adjacent window pairs;
   and in the experiment of 2 (the writer in the parent of the worker pool, as `airlab run`
   has it). Target: < 1%.
4. Generated code: the same run with and without a technique file that changes nothing, the
   first trained in the sandbox and measured by the harness (airlab/run/harness.py), the second
   an ordinary run; ratios of train_seconds and of the whole run's wall time.

    python benchmarks/bench_trainer.py [--tokens 5e4] [--repeats 5] [--quality 1e6]
        [--run-tokens 1.5e5] [--skip-throughput] [--skip-overhead] [--skip-generated]

``--quality N`` also trains the plain loop and the trainer to N tokens each with evaluation at
the end and prints both validation losses (the issue's 1M-token check; ~2 x 90 s on 2 threads).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _lr(cfg: Any, step: int, total_steps: int) -> float:
    """nanoGPT's schedule: linear warmup, then cosine to min_lr over the rest."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))


def plain_loop(cfg: Any, settings: Any, *, evaluate: bool = False) -> dict[str, float]:
    """The loop a researcher would write by hand; returns tokens/s (and val_loss)."""
    from airlab.data import load_text
    from airlab.models import build_gpt

    torch.manual_seed(cfg.seed)
    corpus = load_text(cfg.dataset, data_dir=settings.data_dir, cache_dir=settings.cache_dir)
    model = build_gpt(corpus.vocab_size, cfg.preset, **cfg.model)
    T, B = model.config.block_size, cfg.batch_size
    data, val = corpus.train.long(), corpus.val.long()
    gen = torch.Generator().manual_seed(cfg.seed)
    offsets = torch.arange(T)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr,
                            betas=(cfg.beta1, cfg.beta2))
    steps = math.ceil(cfg.tokens / (B * T))
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step, steps)
        ix = torch.randint(len(data) - T - 1, (B,), generator=gen)
        idx = ix[:, None] + offsets
        _, loss = model(data[idx], data[idx + 1])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())  # what a hand-written loop logs
    out = {"tokens_per_s": steps * B * T / (time.perf_counter() - t0)}
    if evaluate:  # the same fixed held-out subset the trainer uses
        n_seq = max(1, min(cfg.eval_tokens // T, (len(val) - 1) // T))
        starts = torch.linspace(0, len(val) - T - 1, n_seq).long()
        vidx = starts[:, None] + offsets
        model.eval()
        with torch.no_grad():
            losses = [float(model(val[vidx[i:i + 256]], val[vidx[i:i + 256] + 1])[1])
                      * vidx[i:i + 256].numel() for i in range(0, n_seq, 256)]
        out["val_loss"] = sum(losses) / vidx.numel()
    return out


def trainer_run(cfg: Any, settings: Any, on_event: Any = None) -> dict[str, float]:
    from airlab.run.trainer import train

    r = train(cfg, on_event, settings=settings)
    assert r.state == "finished", r.reason
    return {"tokens_per_s": r.metrics["tokens_per_s"], "val_loss": r.metrics["val_loss"],
            "train_seconds": r.metrics["train_seconds"]}


def trainer_windows(seconds: float, window_s: float, settings: Any) -> dict[str, Any]:
    """Live writes on and off in alternating windows of ONE training run, in the training
    process itself (the worst case: the writer's thread shares the process and its GIL with
    the loop). Every event goes to a LiveWriter on a real SQLite store during "on" windows and
    nowhere during "off" ones; each window's throughput is the tokens / training seconds its
    heartbeats report. Adjacent on/off windows are paired, so a change in the machine's load
    between windows mostly cancels; the writer's CPU time is divided by the on windows'
    training seconds."""
    from airlab.plan import resolve
    from airlab.run.trainer import train
    from airlab.store import LiveWriter, Store
    from airlab.store.live import live_totals

    store = Store(f"sqlite:///{settings.home}/live-bench.db")
    eid = store.upsert_experiment("live-bench", {}, workload="charlm")
    [row] = store.ensure_runs(eid, [("trainer", 0, "k", {})])
    cfg = resolve(dataset="shakespeare", preset="tiny", budget={"seconds": seconds},
                  options={"eval_points": 1}, settings=settings)
    writer = LiveWriter(store)
    windows: list[tuple[bool, float, float]] = []  # (live on, tokens, training seconds)
    at = {"on": False, "t": time.perf_counter(), "tokens": 0.0, "ts": 0.0}

    def sink(ev: dict[str, Any]) -> None:
        if at["on"]:
            writer.event(row["id"], 1, ev)
        if ev.get("type") != "step" or time.perf_counter() - at["t"] < window_s:
            return
        windows.append((bool(at["on"]), ev["tokens"] - at["tokens"],
                        ev["train_seconds"] - at["ts"]))
        if at["on"]:
            writer.flush()  # between steps (outside training time): off windows write nothing
        at.update(on=not at["on"], t=time.perf_counter(), tokens=ev["tokens"],
                  ts=ev["train_seconds"])

    before = live_totals()
    r = train(cfg, sink, settings=settings)
    writer.close()
    after = live_totals()
    assert r.state == "finished", r.reason
    pairs = [(windows[i + 1], windows[i]) for i in range(len(windows) - 1)
             if not windows[i][0] and windows[i + 1][0]]  # (on, the off window before it)
    logs = [math.log((on[1] / on[2]) / (off[1] / off[2])) for on, off in pairs]
    mean = statistics.fmean(logs)
    half = (2.0 * statistics.stdev(logs) / math.sqrt(len(logs))) if len(logs) > 1 else math.nan
    on_s = sum(w[2] for w in windows if w[0])
    cpu = (after.event_seconds - before.event_seconds
           + after.flush_cpu_seconds - before.flush_cpu_seconds)
    return {"live_window_s": window_s, "live_pairs": len(pairs),
            "live_tokens_per_s_on": [w[1] / w[2] for w in windows if w[0]],
            "live_tokens_per_s_off": [w[1] / w[2] for w in windows if not w[0]],
            "live_throughput_ratio": math.exp(mean),
            "live_throughput_ci": (math.exp(mean - half), math.exp(mean + half)),
            "live_events": after.events - before.events,
            "live_flushes": after.flushes - before.flushes,
            "live_rows": after.points - before.points + after.heartbeats - before.heartbeats,
            "live_cpu_s": cpu, "live_train_s": on_s, "live_cost": cpu / on_s}


def throughput(tokens: float, repeats: int, settings: Any) -> dict[str, Any]:
    from airlab.plan import resolve

    # One evaluation at the end (outside train_seconds) keeps the trainer close to the plain loop.
    cfg = resolve(dataset="shakespeare", preset="tiny", budget={"tokens": tokens},
                  options={"eval_points": 1}, settings=settings)
    plain_loop(cfg.model_copy(update={"tokens": 20 * 768.0}), settings)  # warm-up allocations
    plain: list[float] = []
    lab: list[float] = []
    for i in range(repeats):  # alternate which goes first, so drift in the load hits both
        for which in ((plain, lab) if i % 2 == 0 else (lab, plain)):
            run = plain_loop if which is plain else trainer_run
            which.append(run(cfg, settings)["tokens_per_s"])
            name = "plain loop" if which is plain else "trainer"
            print(f"  repeat {i + 1}: {name} {which[-1]:,.0f} tokens/s", file=sys.stderr,
                  flush=True)
    return {"plain_tokens_per_s": plain, "trainer_tokens_per_s": lab,
            "throughput_ratio": statistics.median(lab) / statistics.median(plain)}


def quality(tokens: float, settings: Any) -> dict[str, float]:
    from airlab.plan import resolve

    cfg = resolve(dataset="shakespeare", preset="tiny", budget={"tokens": tokens},
                  options={"eval_points": 1}, settings=settings)
    t0 = time.perf_counter()
    plain = plain_loop(cfg, settings, evaluate=True)
    t1 = time.perf_counter()
    lab = trainer_run(cfg, settings)
    t2 = time.perf_counter()
    return {"plain_val_loss": plain["val_loss"], "trainer_val_loss": lab["val_loss"],
            "plain_tokens_per_s_1m": plain["tokens_per_s"],
            "trainer_tokens_per_s_1m": lab["tokens_per_s"],
            "plain_wall_s": t1 - t0, "trainer_wall_s": t2 - t1}


def overhead(tokens: float, workers: int, settings: Any) -> dict[str, float]:
    """A demo-sized experiment through the whole pipeline; training time vs wall time."""
    from airlab.executors.local import LocalExecutor
    from airlab.experiment import SilentReporter, run_experiment
    from airlab.spec import ExperimentSpec
    from airlab.store import Store

    spec = ExperimentSpec(name="bench", workload="charlm", preset="tiny", dataset="shakespeare",
                          budget={"tokens": tokens}, options={"warmup_steps": 20,
                                                              "eval_points": 5},
                          baseline={"name": "learned_pos"},
                          arms=[{"name": "rope", "use": ["rope"]}], seeds=[42, 137])
    from airlab.store.live import live_totals

    store = Store(settings.db_url)
    last_result = [0.0]
    first_start = [math.nan]

    def on_result(run: Any, result: Any) -> None:
        last_result[0] = time.perf_counter()

    class FirstStart(SilentReporter):
        """Notes when the first run started in a worker (the pool's start-up is before it)."""

        def event(self, run: dict[str, Any], event: dict[str, Any]) -> None:
            if event.get("type") == "started" and math.isnan(first_start[0]):
                first_start[0] = time.perf_counter()

    t0 = time.perf_counter()
    live0 = live_totals()
    ex = LocalExecutor(workers, threads=max(1, (os.cpu_count() or 1) // workers),
                       settings=settings)
    run_experiment(spec, store, ex, settings=settings, on_result=on_result,
                   reporter=FirstStart())
    wall = time.perf_counter() - t0
    live1 = live_totals()
    runs = store.runs(store.experiment("bench")["id"])
    metrics = store.metrics([r["id"] for r in runs])
    states = [r["state"] for r in runs]
    assert states == ["finished"] * len(runs), states
    train_s = sum(float(metrics[r["id"]]["train_seconds"]) for r in runs)
    eval_s = sum(float(metrics[r["id"]]["eval_seconds"]) for r in runs)
    setup_s = sum(float(r["info"].get("setup_seconds", 0.0)) for r in runs)
    sample_s = sum(float((r["info"].get("sample") or {}).get("seconds", 0.0)) for r in runs)
    worker_s = sum(float(r.get("wall_seconds") or r["info"].get("worker_wall_seconds") or 0)
                   for r in runs)
    return {"runs": len(runs), "workers": workers, "wall_s": wall, "sum_train_s": train_s,
            "sum_eval_s": eval_s, "sum_setup_s": setup_s, "sum_sample_s": sample_s,
            "sum_worker_wall_s": worker_s, "first_run_start_s": first_start[0] - t0,
            "after_last_run_s": wall - (last_result[0] - t0),
            "eval_tokens_per_run": (runs[0]["config"]["eval_points"] + 1)
            * runs[0]["config"]["eval_tokens"],
            "overhead": 1 - train_s / (workers * wall),
            "overhead_eval": eval_s / (workers * wall),
            # Every worker waits for these two spans (shares of workers x wall = of wall).
            # Until the first run starts, the pool imports torch: the import any PyTorch script
            # pays (one process here, not one per run); after the last run, the parent analyses.
            "overhead_start": (first_start[0] - t0) / wall,
            "overhead_after": (wall - (last_result[0] - t0)) / wall,
            "overhead_rest": 1 - (train_s + eval_s) / (workers * wall),
            # Live writes (store.live) in the parent: CPU seconds of the writer's thread and of
            # the event hand-off, next to the training seconds of the runs they describe.
            "live_events": live1.events - live0.events,
            "live_flushes": live1.flushes - live0.flushes,
            "live_cpu_s": live1.event_seconds - live0.event_seconds
            + live1.flush_cpu_seconds - live0.flush_cpu_seconds,
            "live_cost": (live1.event_seconds - live0.event_seconds + live1.flush_cpu_seconds
                          - live0.flush_cpu_seconds) / train_s}


NOOP_TECHNIQUE = """
from airlab.techniques import Hooks, Technique, register


class Nothing(Hooks):
    def after_step(self, model, step, progress):
        pass


register(Technique("bench_noop", "general", "changes nothing", hooks=Nothing,
                   workloads=("charlm",)))
"""


def generated(tokens: float, repeats: int, settings: Any) -> dict[str, Any]:
    """The cost of measuring generated code: one run with a technique file that changes nothing
    (trained in the sandbox, measured by the harness) against the same run without it (an
    ordinary run of the pool), interleaved, one worker of one thread. Ratios of train_seconds
    (the clock both report) and of each run's whole wall time in its worker."""
    from airlab.executors.base import Job
    from airlab.executors.sandboxed import SandboxedExecutor
    from airlab.plan import resolve
    from airlab.techniques.contract import register_technique_files

    noop = Path(settings.home) / "bench_noop.py"
    noop.write_text(NOOP_TECHNIQUE)
    register_technique_files([noop])
    opts = {"warmup_steps": 20, "eval_points": 5}
    clean = resolve(dataset="shakespeare", preset="tiny", budget={"tokens": tokens},
                    options=opts, settings=settings).to_dict()
    gen = resolve(dataset="shakespeare", preset="tiny", budget={"tokens": tokens},
                  use=["bench_noop"], options=opts, settings=settings).to_dict()
    ex = SandboxedExecutor(settings, [noop], threads=1)
    out: dict[str, list[float]] = {k: [] for k in ("clean_train_s", "gen_train_s",
                                                   "clean_wall_s", "gen_wall_s",
                                                   "clean_val", "gen_val", "gen_eval_s",
                                                   "gen_setup_s", "gen_deploy_s")}
    for i in range(repeats):
        for which in (("clean", "gen") if i % 2 == 0 else ("gen", "clean")):
            cfg = clean if which == "clean" else gen
            (_, r), = list(ex.run([Job(i, cfg)]))
            assert r.state == "finished", r.reason
            out[f"{which}_train_s"].append(r.metrics["train_seconds"])
            out[f"{which}_wall_s"].append(r.info["worker_wall_seconds"])
            out[f"{which}_val"].append(r.metrics["val_loss"])
            if which == "gen":
                out["gen_eval_s"].append(r.metrics["eval_seconds"])
                out["gen_setup_s"].append(r.metrics["setup_seconds"])
                out["gen_deploy_s"].append(r.metrics["deploy_seconds"])
            print(f"  repeat {i + 1}: {which} train {r.metrics['train_seconds']:.1f} s, wall "
                  f"{r.info['worker_wall_seconds']:.1f} s", file=sys.stderr, flush=True)
    med = statistics.median
    return {**out, "gen_train_ratio": med(out["gen_train_s"]) / med(out["clean_train_s"]),
            "gen_wall_ratio": med(out["gen_wall_s"]) / med(out["clean_wall_s"]),
            "gen_val_diff": max(abs(a - b) for a, b in zip(out["gen_val"], out["clean_val"],
                                                           strict=True))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=float, default=5e4, help="tokens per throughput repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--run-tokens", type=float, default=1.5e5, help="budget of each run in the "
                    "overhead experiment (2 arms x 2 seeds)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quality", type=float, default=0.0, metavar="TOKENS",
                    help="also compare validation losses after TOKENS tokens (e.g. 1e6)")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--live-seconds", type=float, default=60.0,
                    help="training seconds of the live-writes run (0: skip it)")
    ap.add_argument("--live-window", type=float, default=3.0,
                    help="seconds of each live-on / live-off window")
    ap.add_argument("--skip-generated", action="store_true")
    ap.add_argument("--generated-repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    from airlab.settings import get_settings

    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as home:
        if SHARED_DATA.exists():
            os.environ.setdefault("AIRLAB_DATA_DIR", str(SHARED_DATA))
        settings = get_settings(home=home)  # the edge: read once, passed down
        torch.set_num_threads(args.threads)
        out: dict[str, Any] = {"threads": args.threads, "tokens": args.tokens,
                               "loadavg_before": load}
        if not args.skip_throughput:
            out.update(throughput(args.tokens, args.repeats, settings))
        if args.live_seconds:
            out.update(trainer_windows(args.live_seconds, args.live_window, settings))
        if args.quality:
            out.update(quality(args.quality, settings))
        if not args.skip_overhead:
            out.update({f"exp_{k}": v for k, v in
                        overhead(args.run_tokens, args.workers, settings).items()})
        if not args.skip_generated:
            out.update(generated(args.run_tokens, args.generated_repeats, settings))
    out["loadavg_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"machine: {os.cpu_count()} cores, load average before {load[0]:.2f}, "
          f"after {out['loadavg_after'][0]:.2f}")
    if not args.skip_throughput:
        plain = ", ".join(f"{x:,.0f}" for x in out["plain_tokens_per_s"])
        lab = ", ".join(f"{x:,.0f}" for x in out["trainer_tokens_per_s"])
        print(f"plain loop tokens/s: {plain}")
        print(f"trainer    tokens/s: {lab}")
        print(f"throughput ratio (median trainer / median plain loop, {args.threads} threads): "
              f"{out['throughput_ratio']:.3f}  (target >= 1)")
    if "live_cost" in out:
        on = ", ".join(f"{x:,.0f}" for x in out["live_tokens_per_s_on"])
        off = ", ".join(f"{x:,.0f}" for x in out["live_tokens_per_s_off"])
        lo, hi = out["live_throughput_ci"]
        print(f"live writes, in the training process (worst case), {out['live_window_s']:g} s "
              f"windows of one run: tokens/s with {on}; without {off}")
        print(f"  {out['live_events']} events, {out['live_flushes']} transactions, "
              f"{out['live_rows']} rows; writer CPU {out['live_cpu_s'] * 1000:.1f} ms over "
              f"{out['live_train_s']:.1f} s of training with live writes = "
              f"{100 * out['live_cost']:.3f}% (target < 1%)")
        print(f"  throughput with / without, {out['live_pairs']} adjacent window pairs: "
              f"{out['live_throughput_ratio']:.4f} [95% CI {lo:.4f}, {hi:.4f}]")
    if args.quality:
        print(f"val_loss at {args.quality:g} tokens: plain loop {out['plain_val_loss']:.4f}, "
              f"trainer {out['trainer_val_loss']:.4f} (target: within 0.02)")
    if not args.skip_overhead:
        print(f"experiment: {out['exp_runs']} runs on {out['exp_workers']} workers, wall "
              f"{out['exp_wall_s']:.1f} s, training {out['exp_sum_train_s']:.1f} s, eval "
              f"{out['exp_sum_eval_s']:.1f} s, setup {out['exp_sum_setup_s']:.1f} s, text sample "
              f"{out['exp_sum_sample_s']:.1f} s, worker wall {out['exp_sum_worker_wall_s']:.1f} s "
              f"(sums); first run started after {out['exp_first_run_start_s']:.1f} s (pool "
              f"start-up, planning); after the last run {out['exp_after_last_run_s']:.1f} s "
              f"(analysis, rating, artifacts)")
        other = (out["exp_overhead_rest"] - out["exp_overhead_start"]
                 - out["exp_overhead_after"])
        print(f"lab overhead: {100 * out['exp_overhead']:.1f}% of workers x wall "
              f"(target <= 5%), of which:")
        print(f"  evaluation ({out['exp_eval_tokens_per_run']:,} held-out tokens per run, as "
              f"the spec asks)  {100 * out['exp_overhead_eval']:.1f}%")
        print(f"  start-up (the workers' one torch import, before the first run)  "
              f"{100 * out['exp_overhead_start']:.1f}%")
        print(f"  after the last run (analysis, rating, artifacts)  "
              f"{100 * out['exp_overhead_after']:.1f}%")
        print(f"  the rest (per-run set-up and data, storing, a slot left idle)  "
              f"{100 * other:.1f}%")
        print(f"live writes during the experiment: {out['exp_live_events']} events, "
              f"{out['exp_live_flushes']} transactions, writer CPU "
              f"{out['exp_live_cpu_s'] * 1000:.1f} ms = {100 * out['exp_live_cost']:.3f}% of "
              f"the runs' training time (target < 1%)")
    if not args.skip_generated:
        med = statistics.median
        print(f"generated code ({args.run_tokens:g}-token run with a technique file that "
              f"changes nothing, trained in the sandbox and measured by the harness, against "
              f"the same run without it; {args.generated_repeats} interleaved repeats, 1 thread):")
        print(f"  train_seconds ratio {out['gen_train_ratio']:.3f} (median "
              f"{med(out['gen_train_s']):.1f} s against {med(out['clean_train_s']):.1f} s)")
        print(f"  whole run in its worker: ratio {out['gen_wall_ratio']:.3f} (median "
              f"{med(out['gen_wall_s']):.1f} s against {med(out['clean_wall_s']):.1f} s), of "
              f"which sandbox start and graph export {med(out['gen_setup_s']):.1f} s, trusted "
              f"evaluation {med(out['gen_eval_s']):.1f} s, final hand-over "
              f"{med(out['gen_deploy_s']):.1f} s")
        print(f"  largest val_loss difference between the two: {out['gen_val_diff']:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
