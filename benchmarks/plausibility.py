"""Where honest runs sit against the plausibility checks (airlab.run.pathology): the figures
behind their thresholds, measured on real runs.

For each configuration (real data, real training, one thread) it prints the ratios each check
compares against its threshold:

- ``val/train``: held-out loss / ``train_eval_loss`` (flagged below VAL_TRAIN_RATIO);
- ``step0/chance``: the untrained model's loss / ln(vocabulary or classes) (STEP0_RATIO);
- ``bpc/floor``: bits per character / the text's floor (flagged below 1);
- ``drop/before``: a deploy step's quality_drop / the trained loss (flagged below
  -COMPRESSION_GAIN);
- ``jump``: the largest one-interval gain / everything gained since the first evaluation
  (CURVE_JUMP), over the intervals the check reads.

    python benchmarks/plausibility.py            # the set below (~10-20 min on 2 cores)
    python benchmarks/plausibility.py --quick    # three runs
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from airlab.plan import resolve
from airlab.run import pathology
from airlab.run.execute import execute
from airlab.settings import get_settings

TINY = {"eval_points": 8}
CASES: list[tuple[str, dict[str, Any]]] = [
    ("charlm tiny shakespeare 150k cosine", dict(dataset="shakespeare",
                                                 budget={"tokens": 150_000})),
    ("charlm tiny shakespeare 150k wsd", dict(dataset="shakespeare", budget={"tokens": 150_000},
                                              options={"schedule": "wsd"})),
    ("charlm tiny shakespeare 150k horizon 0.3", dict(dataset="shakespeare",
                                                      budget={"tokens": 150_000},
                                                      options={"horizon": 0.3})),
    ("charlm tiny pycode 150k", dict(dataset="pycode", budget={"tokens": 150_000})),
    ("charlm tiny pycode 150k dropout 0.3", dict(dataset="pycode", budget={"tokens": 150_000},
                                                 options={"dropout": 0.3})),
    ("charlm tiny shakespeare 400k rope+rmsnorm", dict(dataset="shakespeare",
                                                       budget={"tokens": 400_000},
                                                       use=["rope", "rmsnorm"])),
    ("charlm tiny shakespeare 150k ptq_int8", dict(dataset="shakespeare",
                                                   budget={"tokens": 150_000},
                                                   use=["ptq_int8"])),
    ("charlm tiny shakespeare 150k prune_oneshot", dict(dataset="shakespeare",
                                                        budget={"tokens": 150_000},
                                                        use=["prune_oneshot"])),
    ("charlm tiny shakespeare 150k wq_int4", dict(dataset="shakespeare",
                                                  budget={"tokens": 150_000}, use=["wq_int4"])),
    # Short budgets, where the warmup (100 steps by default) is most of the run.
    ("charlm tiny pycode 100k (130 steps)", dict(dataset="pycode", budget={"tokens": 100_000})),
    ("charlm tiny shakespeare 60k (78 steps)", dict(dataset="shakespeare",
                                                    budget={"tokens": 60_000})),
    ("charlm micro pycode 12k warmup 5", dict(dataset="pycode", budget={"tokens": 12_000},
                                              options={"n_layer": 1, "n_head": 2, "n_embd": 32,
                                                       "block_size": 32, "batch_size": 8,
                                                       "warmup_steps": 5})),
    ("vision mlp digits 2 epochs", dict(workload="vision", preset="mlp", dataset="digits",
                                        budget={"epochs": 2})),
    ("vision mlp digits 20 epochs", dict(workload="vision", preset="mlp", dataset="digits",
                                         budget={"epochs": 20})),
    ("vision cnn digits 10 epochs", dict(workload="vision", preset="cnn", dataset="digits",
                                         budget={"epochs": 10})),
]
QUICK = [CASES[0], CASES[6], CASES[9]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 137])
    ap.add_argument("--only", default="", help="run the cases whose name contains this")
    args = ap.parse_args(argv)
    import torch

    from airlab.run.workloads import chance_loss

    torch.set_num_threads(1)
    settings = get_settings()
    print(f"{'run':44} {'seed':>4} {'val/train':>9} {'step0/chance':>12} {'bpc/floor':>9} "
          f"{'drop/before':>11} {'jump':>6} {'flags':>5}")
    for name, kw in (QUICK if args.quick else CASES):
        if args.only not in name:
            continue
        for seed in args.seeds:
            kw2 = {**kw, "options": {**TINY, **kw.get("options", {})}}
            cfg = resolve(**kw2).model_copy(update={"seed": seed})
            t0 = time.perf_counter()
            r = execute(cfg.to_dict(), settings=settings)
            if r.state != "finished":
                print(f"{name:44} {seed:>4} {r.state}: {r.reason}")
                continue
            m = r.metrics
            if cfg.workload == "charlm":
                build = {"vocab_size": r.info.get("vocab_size")}
            else:
                from airlab.data import load_vision

                build = {"n_classes": load_vision(cfg.dataset, data_dir=settings.data_dir,
                                                  cache_dir=settings.cache_dir).n_classes}
            chance = chance_loss(build) or math.nan
            val = m.get("val_loss_before", m["val_loss"])
            floor = None
            if cfg.workload == "charlm":
                from airlab.data import load_text
                from airlab.run.workloads import text_floor_bpc

                floor = text_floor_bpc(load_text(cfg.dataset, data_dir=settings.data_dir,
                                                 cache_dir=settings.cache_dir), settings)
            bpc = m.get("val_bpc", math.nan)
            drop = m.get("quality_drop", math.nan) / m.get("val_loss_before", math.nan) \
                if "quality_drop" in m else math.nan
            print(f"{name:44} {seed:>4} {val / m['train_eval_loss']:>9.3f} "
                  f"{r.curve[0]['val_loss'] / chance:>12.3f} "
                  f"{(bpc / floor) if floor else math.nan:>9.2f} {drop:>11.4f} "
                  f"{pathology.curve_jump(r.curve, cfg.warmup_steps)[0]:>6.3f} "
                  f"{int(m.get('implausible', 0)):>5}"
                  f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
