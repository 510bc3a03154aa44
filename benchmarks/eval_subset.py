"""Benchmark: how large must the fixed held-out subset be? One run, printed table.

Every run is evaluated on the same fixed subset of validation windows (``eval_tokens``, default
16,384 tokens). That subset is a sample of the validation text: its error is shared by every
arm and seed, so more seeds do not shrink it, and it is not in any interval. This measures it
for an arm difference: train a baseline and the rope arm on 3 seeds (tiny preset, Tiny
Shakespeare, 150k tokens, as the demo-sized experiment of bench_trainer.py), compute each
model's loss on every validation window, and take the standard deviation, over random subsets
of a given size, of the subset's mean arm difference around the whole text's. Beside it: the
seed-to-seed standard deviation of the same difference.

    python benchmarks/eval_subset.py [--dataset shakespeare] [--tokens 150000] [--subsets 400]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZES = (2048, 4096, 8192, 16384, 32768)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="shakespeare")
    ap.add_argument("--tokens", type=float, default=1.5e5)
    ap.add_argument("--subsets", type=int, default=400, help="random subsets per size")
    args = ap.parse_args()
    if SHARED_DATA.exists():
        os.environ.setdefault("AIRLAB_DATA_DIR", str(SHARED_DATA))
    from airlab.data import load_text
    from airlab.models.io import load_trained
    from airlab.plan import resolve
    from airlab.run.trainer import train
    from airlab.settings import get_settings

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    seeds = (0, 1, 2)
    with tempfile.TemporaryDirectory() as home:
        settings = get_settings(home=home)
        models = {}
        for arm, use in (("base", []), ("rope", ["rope"])):
            for seed in seeds:
                cfg = resolve(dataset=args.dataset, preset="tiny", budget={"tokens": args.tokens},
                              seed=seed, use=use, options={"eval_points": 1, "warmup_steps": 20},
                              settings=settings).model_copy(update={"save_model": True})
                r = train(cfg, settings=settings)
                assert r.state == "finished", r.reason
                models[arm, seed], _ = load_trained(settings.artifacts_dir / cfg.run_key)
        corpus = load_text(args.dataset, data_dir=settings.data_dir, cache_dir=settings.cache_dir)
    val = corpus.val.long()
    T = next(iter(models.values())).config.block_size
    starts = torch.arange(0, len(val) - T - 1, T)  # every non-overlapping window
    per_window = {}
    with torch.no_grad():
        for key, m in models.items():
            m.eval()
            parts = []
            for i in range(0, len(starts), 64):
                idx = starts[i:i + 64, None] + torch.arange(T)
                logits, _ = m(val[idx], val[idx + 1])
                nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1),
                                                        val[idx + 1].flatten(), reduction="none")
                parts.append(nll.view(len(idx), T).mean(1))
            per_window[key] = torch.cat(parts)
    diff = {s: per_window["rope", s] - per_window["base", s] for s in seeds}
    whole = [float(d.mean()) for d in diff.values()]
    n = len(starts)
    print(f"{args.dataset}: {len(val):,} validation tokens, {n} windows of {T}; rope - baseline "
          f"over the whole text per seed: {', '.join(f'{x:+.4f}' for x in whole)} "
          f"(seed-to-seed sd {statistics.stdev(whole):.4f})")
    print("| subset tokens | sd of the arm difference's subset error | sd of one run's loss "
          "subset error |")
    print("|---:|---:|---:|")
    rnd = random.Random(0)
    base = per_window["base", 0]
    for size in SIZES:
        k = min(n, size // T)
        err_d, err_1 = [], []
        for _ in range(args.subsets):
            idx = torch.tensor(rnd.sample(range(n), k))
            err_d.append(float(diff[0][idx].mean() - diff[0].mean()))
            err_1.append(float(base[idx].mean() - base.mean()))
        print(f"| {k * T:,} | {statistics.pstdev(err_d):.4f} | {statistics.pstdev(err_1):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
