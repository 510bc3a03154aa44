"""Benchmark: the lab's cost next to training.

1. Trainer throughput against a bare PyTorch loop of the same model, batches and optimizer, in
   the same process (target ratio >= 0.95). Repeats alternate the two so drift hits both.
2. Overhead of one stored run through the whole lab (worker start, data loading, evaluation,
   store) as a share of its wall time, for the `tiny` preset (target <= 10%).

    python benchmarks/bench_trainer.py [--tokens 2e5] [--run-tokens 1e6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch


def bare_loop(cfg, steps: int) -> float:  # type: ignore[no-untyped-def]
    """The loop a researcher would write by hand: returns tokens/s."""
    from airlab.data import load_text
    from airlab.models import build_gpt

    torch.manual_seed(cfg.seed)
    corpus = load_text(cfg.dataset)
    model = build_gpt(corpus.vocab_size, cfg.preset, **cfg.model)
    T, B = model.config.block_size, cfg.batch_size
    data = corpus.train.long()
    gen = torch.Generator().manual_seed(cfg.seed)
    offsets = torch.arange(T)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr,
                            betas=(cfg.beta1, cfg.beta2))
    model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        ix = torch.randint(len(data) - T - 1, (B,), generator=gen)
        idx = ix[:, None] + offsets
        _, loss = model(data[idx], data[idx + 1])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())
    return steps * B * T / (time.perf_counter() - t0)


def trainer_loop(cfg) -> float:  # type: ignore[no-untyped-def]
    from airlab.run.trainer import train

    r = train(cfg)
    return r.metrics["tokens_per_s"]


def overhead(tokens: float, threads: int) -> dict[str, float]:
    """One tiny run through spec -> plan -> worker process -> store; wall vs training time."""
    from airlab.executors.local import LocalExecutor
    from airlab.experiment import run_experiment
    from airlab.spec import ExperimentSpec
    from airlab.store import Store

    with tempfile.TemporaryDirectory() as d:
        os.environ["AIRLAB_HOME"] = d
        store = Store(f"sqlite:///{d}/bench.db")
        spec = ExperimentSpec(name="bench", workload="charlm", preset="tiny", dataset="pycode",
                              budget={"tokens": tokens}, arms=[], seeds=[42])
        t0 = time.perf_counter()
        run_experiment(spec, store, LocalExecutor(1, threads=threads))
        wall = time.perf_counter() - t0
        run = store.runs(store.experiment("bench")["id"])[0]
        m = store.metrics([run["id"]])[run["id"]]
    train_s = float(m["train_seconds"])
    return {"wall_s": wall, "train_s": train_s, "eval_s": float(m["eval_seconds"]),
            "setup_s": float(run["info"]["setup_seconds"]),
            "overhead_s": wall - train_s, "overhead_share": (wall - train_s) / wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=float, default=2e5, help="tokens per throughput repeat")
    ap.add_argument("--run-tokens", type=float, default=1e6,
                    help="budget of the stored tiny run for the overhead share (the issue's 1M)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from airlab.plan import resolve

    # Evaluation is excluded from tokens_per_s; one eval point keeps the run close to the bare one.
    cfg = resolve(budget={"tokens": args.tokens}, options={"eval_points": 1})
    steps = int(args.tokens // (cfg.batch_size * cfg.model.get("block_size", 64)))
    bare, lab = [], []
    bare_loop(cfg, 20)  # warm-up: first-call allocations and kernel selection
    for _ in range(args.repeats):
        bare.append(bare_loop(cfg, steps))
        lab.append(trainer_loop(cfg))
    ratio = statistics.median(lab) / statistics.median(bare)
    ov = overhead(args.run_tokens, args.threads)
    out = {"threads": args.threads, "tokens": args.tokens, "run_tokens": args.run_tokens,
           "bare_tokens_per_s": bare, "trainer_tokens_per_s": lab, "throughput_ratio": ratio,
           **{f"run_{k}": v for k, v in ov.items()}}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"bare loop   tokens/s: {', '.join(f'{x:,.0f}' for x in bare)}")
        print(f"trainer     tokens/s: {', '.join(f'{x:,.0f}' for x in lab)}")
        print(f"throughput ratio (median trainer / median bare): {ratio:.3f}  (target >= 0.95)")
        print(f"one stored tiny run: wall {ov['wall_s']:.1f} s, training {ov['train_s']:.1f} s, "
              f"eval {ov['eval_s']:.1f} s, setup {ov['setup_s']:.2f} s")
        print(f"lab overhead share of wall time: {100 * ov['overhead_share']:.1f}%  "
              "(target <= 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
