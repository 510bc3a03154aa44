"""Arm-versus-baseline analysis of a stored experiment: one row per arm, Holm across arms.

Reads only the store: the experiment's current runs are the rows the pipeline stored for the
spec's arms and seeds (never planned again here), and :func:`run_facts` gives the rubric the
provenance, budgets and datasets of those runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from airlab.analysis import stats
from airlab.analysis.efficiency import ArmEfficiency, arm_efficiency
from airlab.config import BUDGET_UNITS
from airlab.errors import AirlabError, did_you_mean
from airlab.store import Store

# Secondary metrics shown beside the primary one (means over finished seeds).
COST_METRICS = ("train_seconds", "tokens_per_s", "samples_per_s", "flops", "peak_mem_mb",
                "params", "model_bytes", "energy_kwh_est", "latency_ms_b1", "latency_ms_batch",
                "sparsity", "quality_drop")


@dataclass
class ArmRow:
    arm: str
    is_baseline: bool
    seeds: list[int]
    values: list[float]  # primary metric per seed (NaN where the run failed or is missing)
    planned: int
    finished: int
    failed: int
    failures: list[str]  # "seed 137: diverged at step 812"
    summary: stats.Summary
    comparison: stats.Comparison | None = None
    p_holm: float | None = None
    verdict: str = ""
    means: dict[str, float] = field(default_factory=dict)
    efficiency: ArmEfficiency | None = None
    run_ids: dict[int, int] = field(default_factory=dict)  # seed -> run id (finished runs)


@dataclass
class Analysis:
    name: str
    metric: str
    direction: str
    spec: dict[str, Any]
    rows: list[ArmRow]

    @property
    def baseline(self) -> ArmRow:
        return self.rows[0]


@dataclass(frozen=True)
class RunFacts:
    """What the rubric's rigor checks need from the stored runs (provenance, resolved configs)."""

    hardware: frozenset[tuple[str, str, str]]  # (host, cpu, device) of every finished run
    budgets: frozenset[tuple[str, float]]  # (unit, amount) of every run
    datasets: frozenset[str]
    missing_provenance: int = 0
    identical_arms: frozenset[str] = frozenset()  # arms whose configs equal the baseline's


def _experiment(store: Store, name: str) -> dict[str, Any]:
    exp = store.experiment(name)
    if exp is None:
        known = [e["name"] for e in store.experiments()]
        raise AirlabError(f"no experiment named '{name}' in {store.url}", did_you_mean(name, known))
    return exp


def current_runs(rows: Sequence[dict[str, Any]], spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The stored rows that belong to the spec as it is now, without planning it again.

    Rows of arms or seeds the spec no longer has are left out. When an edited spec left an
    older row of the same (arm, seed) behind, the newest row (highest id: the pipeline inserts
    a row when a run key first appears) is the current one. Pass the rows the pipeline just
    ensured to :func:`analyze` to skip this guess.
    """
    arms = {spec["baseline"]["name"], *(a["name"] for a in spec.get("arms", []))}
    seeds = set(spec.get("seeds", []))
    newest: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        key = (r["arm"], r["seed"])
        if r["arm"] in arms and r["seed"] in seeds and (
                key not in newest or r["id"] > newest[key]["id"]):
            newest[key] = r
    return sorted(newest.values(), key=lambda r: r["id"])


def analyze(store: Store, name: str, *, runs: Sequence[dict[str, Any]] | None = None
            ) -> Analysis:
    """Analyse a stored experiment. ``runs``: its current rows when the caller knows them (the
    pipeline does: the rows it ensured); else :func:`current_runs` picks them from the store."""
    exp = _experiment(store, name)
    spec = exp["spec"]
    metric = spec.get("metric", "val_loss")
    direction = spec.get("direction", "minimize")
    seeds = list(spec.get("seeds", []))
    arm_names = [spec["baseline"]["name"], *[a["name"] for a in spec.get("arms", [])]]
    current = list(runs) if runs is not None else current_runs(store.runs(exp["id"]), spec)
    all_metrics = store.metrics([r["id"] for r in current])

    rows: list[ArmRow] = []
    for arm in arm_names:
        arm_runs = {r["seed"]: r for r in current if r["arm"] == arm}
        values, failures, finished = [], [], []
        run_ids: dict[int, int] = {}
        for s in seeds:
            r = arm_runs.get(s)
            v = math.nan
            if r is not None and r["state"] == "finished":
                got = all_metrics[r["id"]].get(metric)
                v = math.nan if got is None else float(got)
                finished.append(r["id"])
                run_ids[s] = r["id"]
            elif r is not None and r["state"] == "failed":
                failures.append(f"seed {s}: {r['reason']}")
            values.append(v)
        means: dict[str, float] = {}
        for m in COST_METRICS + (metric,):
            xs = [float(x) for i in finished if (x := all_metrics[i].get(m)) is not None]
            if xs:
                means[m] = sum(xs) / len(xs)
        rows.append(ArmRow(arm=arm, is_baseline=not rows, seeds=seeds, values=values,
                           planned=len(seeds), finished=len(finished), failed=len(failures),
                           failures=failures, summary=stats.summarize(values), means=means,
                           run_ids=run_ids))

    base = rows[0]
    for row in rows[1:]:
        row.comparison = stats.compare(base.values, row.values, direction=direction, paired=True)
    adjusted = stats.holm([r.comparison.p_value for r in rows[1:] if r.comparison])
    for row, p in zip(rows[1:], adjusted, strict=True):
        row.p_holm = p
        assert row.comparison is not None
        row.verdict = stats.verdict(row.comparison, adjusted_p=p)
    base.verdict = "baseline"
    _attach_efficiency(store, rows, metric, direction)
    return Analysis(name, metric, direction, spec, rows)


def _attach_efficiency(store: Store, rows: list[ArmRow], metric: str, direction: str) -> None:
    curves: dict[int, list[dict[str, Any]]] = {}
    all_ids = [i for r in rows for i in r.run_ids.values()]
    mets = store.metrics(all_ids)
    for i in all_ids:
        curves[i] = store.curve(i)
    # Curves carry val_loss/val_acc; other primary metrics fall back to val_loss for the target.
    cmetric = metric if metric in ("val_loss", "val_acc") else "val_loss"
    cdir = direction if cmetric == metric else "minimize"

    def runs(row: ArmRow) -> dict[int, dict[str, Any]]:
        return {s: {"curve": curves[i], "metrics": mets[i]} for s, i in row.run_ids.items()}

    base = rows[0]
    for row in rows[1:]:
        row.efficiency = arm_efficiency(row.arm, cmetric, cdir, runs(base), runs(row),
                                        base.means, row.means)


def run_facts(store: Store, name: str, *, runs: Sequence[dict[str, Any]] | None = None
              ) -> RunFacts:
    """Provenance, budgets and datasets of an experiment's current runs (see :func:`analyze`)."""
    exp = _experiment(store, name)
    spec = exp["spec"]
    rows = list(runs) if runs is not None else current_runs(store.runs(exp["id"]), spec)
    hw: set[tuple[str, str, str]] = set()
    budgets: set[tuple[str, float]] = set()
    datasets: set[str] = set()
    missing = 0
    keys: dict[str, set[str]] = {}
    for r in rows:
        keys.setdefault(r["arm"], set()).add(r["run_key"])
        cfg = r["config"] or {}
        for unit in BUDGET_UNITS:
            if cfg.get(unit) is not None:
                budgets.add((unit, float(cfg[unit])))
        if cfg.get("dataset"):
            datasets.add(str(cfg["dataset"]))
        if r["state"] != "finished":
            continue
        prov = (r["info"] or {}).get("provenance")
        if not prov:
            missing += 1
            continue
        hw.add((str(prov.get("host", "?")), str(prov.get("cpu", "?")),
                str(prov.get("gpu") or prov.get("device", "?"))))
    base = spec["baseline"]["name"]
    base_keys = keys.get(base, set())
    same = frozenset(a for a, k in keys.items() if k == base_keys and a != base)
    return RunFacts(frozenset(hw), frozenset(budgets), frozenset(datasets), missing, same)
