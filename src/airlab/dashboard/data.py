"""What the dashboard shows, as plain JSON-ready data, read from the store (never written).

* :func:`overview`: every experiment with its runs by state, the mean progress of its running
  runs and its latest rating.
* :func:`experiment_view`: one experiment: its spec in brief, each run's state and heartbeat,
  every run's evaluation curve (the stored curve once a run has a result, else its live points),
  the time-to-target line, and once analysed the result table and the stored verdict.

The analysis (scipy, the decision rules) is computed only when the experiment has no run left
to go or has a stored verdict, and is cached until its runs or verdicts change.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from airlab.store import latest_verdicts, list_verdicts, load_live_points, load_live_progress
from airlab.store.tables import curves as curves_table
from airlab.store.tables import runs as runs_table

if TYPE_CHECKING:
    from airlab.analysis.compare import Analysis
    from airlab.store import Store

CURVE_KEYS = ("units", "train_seconds", "flops", "val_loss", "val_acc", "train_loss")
GOING = ("pending", "running")


def finite(v: Any) -> Any:
    """NaN and infinities as None, recursively: the answer is strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [finite(x) for x in v]
    return v


class Cache:
    """Values computed from the store, kept while their signature is unchanged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[Any, Any]] = {}

    def get(self, key: str, signature: Any, compute: Callable[[], Any]) -> Any:
        with self._lock:
            have = self._values.get(key)
        if have is not None and have[0] == signature:
            return have[1]
        value = compute()
        with self._lock:
            self._values[key] = (signature, value)
        return value


def store_signature(store: Store) -> tuple[Any, ...]:
    """Changes whenever a run is planned or ends, an experiment is added or a verdict is
    stored (not when a run starts: what the team view analyses is unchanged by that)."""
    with store.reading() as c:
        r = c.execute(select(func.count(), func.max(runs_table.c.finished_at))).one()
    verdicts = len(list_verdicts(store))
    return (*tuple(r), verdicts, len(store.experiments()))


# --------------------------------------------------------------------------- overview


def overview(store: Store) -> dict[str, Any]:
    exps = [e for e in store.experiments() if e["kind"] != "archive"]
    verdicts = latest_verdicts(store)
    out = []
    for e in exps:
        rows = store.runs(e["id"])
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        running = [r["id"] for r in rows if r["state"] == "running"]
        beats = load_live_progress(store, running)
        progress = [b["progress"] for b in beats.values() if b.get("progress") is not None]
        v = verdicts.get(e["id"])
        out.append({"id": e["id"], "name": e["name"], "kind": e["kind"], "area": e["area"],
                    "workload": e["workload"], "created_at": e["created_at"],
                    "updated_at": max([e["updated_at"], *[r["started_at"] or 0 for r in rows],
                                       *[r["finished_at"] or 0 for r in rows]]),
                    "runs": counts, "total": len(rows),
                    "progress": sum(progress) / len(progress) if progress else None,
                    "rating": None if v is None else v["rating"],
                    "band": None if v is None else v["band"]})
    return finite({"experiments": out})


# --------------------------------------------------------------------------- one experiment


def _curves(store: Store, run_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """Stored (final) curves of many runs in one read."""
    out: dict[int, list[dict[str, Any]]] = {int(i): [] for i in run_ids}
    if not run_ids:
        return out
    with store.reading() as c:
        for r in c.execute(select(curves_table).where(curves_table.c.run_id.in_(list(out)))
                           .order_by(curves_table.c.run_id, curves_table.c.idx)):
            d = {k: v for k, v in r._mapping.items() if k not in ("run_id", "idx", "extra")}
            d.update(r.extra or {})
            out[r.run_id].append(d)
    return out


def _columns(points: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    return {k: [p.get(k) for p in points] for k in CURVE_KEYS if any(
        p.get(k) is not None for p in points)}


def curve_metric(spec: dict[str, Any]) -> tuple[str, str]:
    """The metric the curves plot and its direction (as time-to-target uses them)."""
    metric, direction = spec.get("metric", "val_loss"), spec.get("direction", "minimize")
    if metric in ("val_loss", "val_acc"):
        return metric, direction
    return "val_loss", "minimize"


def _target(spec: dict[str, Any], a: Analysis | None, base_curves: list[list[dict[str, Any]]],
            metric: str, direction: str) -> dict[str, Any] | None:
    """The time-to-target line: the analysis's per-seed-pair targets once analysed; before,
    the same leave-one-seed-out rule over the baseline runs finished so far (no noise floor:
    provisional); a target the spec declares is used as it is."""
    import numpy as np

    from airlab.analysis.efficiency import loo_targets

    if spec.get("target") is not None and metric == spec.get("metric", "val_loss"):
        t = float(spec["target"])
        return {"value": t, "low": t, "high": t, "source": "declared in the spec"}
    if a is not None:
        ts = [t for r in a.rows[1:] if r.efficiency is not None
              for t in r.efficiency.targets if t is not None and math.isfinite(t)]
        if ts:
            return {"value": sum(ts) / len(ts), "low": min(ts), "high": max(ts),
                    "source": "analysis (leave-one-seed-out, per seed pair)"}
    finals = [v for c in base_curves if c and (v := c[-1].get(metric)) is not None
              and math.isfinite(v)]
    if len(finals) < 2:
        return None
    ts = [float(t) for t in loo_targets(np.array(finals), direction)]
    return {"value": sum(ts) / len(ts), "low": min(ts), "high": max(ts),
            "source": f"provisional: {len(finals)} finished baseline runs"}


def analysis_json(a: Analysis) -> dict[str, Any]:
    """The result table as the terminal prints it (report.table's formatting), per arm."""
    from airlab.report.table import fmt, fmt_p, size, speedup

    rows = []
    for r in a.rows:
        s, c = r.summary, r.comparison
        speed = r.means.get("tokens_per_s") or r.means.get("samples_per_s")
        unit = "tok/s" if "tokens_per_s" in r.means else "samp/s"
        rows.append({
            "arm": r.arm, "baseline": r.is_baseline, "verdict": r.verdict,
            "n": f"{r.finished}/{r.planned}" + (f" ({r.failed} failed)" if r.failed else "")
                 + (f" ({r.incomplete} cut)" if r.incomplete else ""),
            "mean_sd": f"{fmt(s.mean)} ± {fmt(s.sd, 2)}",
            "ci": f"[{fmt(s.ci_low)}, {fmt(s.ci_high)}]",
            "delta": "" if c is None else f"{c.delta:+.4g} ({100 * c.rel_delta:+.1f}%)",
            "p_holm": "" if c is None else fmt_p(r.p_holm),
            "dz": "" if r.decision is None else fmt(r.decision.dz, 3),
            "train_s": fmt(r.means.get("train_seconds"), 3),
            "throughput": f"{fmt(speed, 4)} {unit}" if speed else "—",
            "time_to_target": speedup(r), "size": "" if r.is_baseline else size(r),
            "flags": sorted(r.pathologies), "failures": r.failures + r.incomplete_runs})
    return {"metric": a.metric, "direction": a.direction, "rows": rows,
            "margin": a.margin.describe(), "quick": a.quick,
            "quality": None if a.quality_is_primary else
            f"quality on {a.quality_metric}, margin {a.quality_margin.describe()}"}


def experiment_view(store: Store, name: str, cache: Cache) -> dict[str, Any] | None:
    exp = store.experiment(name)
    if exp is None:
        return None
    from airlab.analysis.compare import current_runs

    spec = exp["spec"] or {}
    all_rows = store.runs(exp["id"])
    # An experiment (or sweep) is analysed arm against baseline; a teacher or a single
    # `airlab train` run is shown as its runs alone.
    compared = exp["kind"] in ("experiment", "sweep") and bool(spec.get("baseline"))
    rows = (current_runs(all_rows, spec) if compared else all_rows) or all_rows
    ids = [r["id"] for r in rows]
    metric, direction = curve_metric(spec)
    stored = _curves(store, ids)
    live = load_live_points(store, ids)
    beats = load_live_progress(store, ids)
    mets = store.metrics(ids)
    base_name = (spec.get("baseline") or {}).get("name") if compared else None
    arms = [base_name, *[a["name"] for a in spec.get("arms", [])]] if base_name else \
        sorted({r["arm"] for r in rows})

    runs, curves, base_curves = [], [], []
    for r in rows:
        # The stored curve is the run's result; live points are what a run still going (or
        # killed before its result) has reported.
        pts = stored[r["id"]] if r["state"] not in GOING and stored[r["id"]] else live[r["id"]]
        beat = beats.get(r["id"])
        if beat is not None and beat["attempt"] != r["attempts"]:
            beat = None  # a heartbeat of an earlier attempt
        m = mets.get(r["id"], {})
        runs.append({"id": r["id"], "arm": r["arm"], "seed": r["seed"], "state": r["state"],
                     "reason": r["reason"], "attempts": r["attempts"], "owner": r["owner"],
                     "started_at": r["started_at"], "finished_at": r["finished_at"],
                     "progress": 1.0 if r["state"] == "finished" else
                     None if beat is None else beat.get("progress"),
                     # No heartbeat (a run stored before live data, or adopted from another
                     # experiment): its final figures.
                     "step": (beat or {}).get("step") if beat else m.get("steps"),
                     "unit": (beat or {}).get("unit"),
                     "units": (beat or {}).get("units") if beat else m.get("tokens",
                                                                           m.get("samples")),
                     "loss": (beat or {}).get("loss") if beat else m.get("train_loss"),
                     "units_per_s": (beat or {}).get("units_per_s") or
                     m.get("tokens_per_s", m.get("samples_per_s")),
                     "eta_s": None if r["state"] != "running" else (beat or {}).get("eta_s"),
                     "heartbeat_at": (beat or {}).get("updated_at"),
                     "final": m.get(spec.get("metric", "val_loss"))})
        curves.append({"run_id": r["id"], "arm": r["arm"], "seed": r["seed"],
                       "state": r["state"], "points": _columns(pts)})
        if r["arm"] == base_name and r["state"] == "finished":
            base_curves.append(pts)

    going = any(r["state"] in GOING for r in rows)
    exp_verdicts = [v for v in list_verdicts(store, exp["id"])]
    verdict = exp_verdicts[-1] if exp_verdicts else None
    analysis = None
    a: Analysis | None = None
    finished = any(r["state"] == "finished" for r in rows)
    if finished and compared and (verdict is not None or not going):
        sig = (tuple((r["id"], r["state"], r["finished_at"]) for r in rows),
               None if verdict is None else verdict["id"])
        try:
            a = cache.get(f"analysis:{exp['id']}", sig, lambda: _analyze(store, name, rows))
        except Exception as e:  # noqa: BLE001 - a spec that no longer analyses: say so
            analysis = {"error": f"{type(e).__name__}: {e}"[:300]}
        if a is not None:
            analysis = analysis_json(a)
    return finite({
        "experiment": {"id": exp["id"], "name": exp["name"], "kind": exp["kind"],
                       "area": exp["area"], "workload": exp["workload"],
                       "hypothesis": exp["hypothesis"], "metric": metric,
                       "direction": direction, "arms": arms, "baseline": base_name,
                       "seeds": spec.get("seeds", []), "budget": spec.get("budget", {}),
                       "unit": next((b["unit"] for b in beats.values() if b.get("unit")),
                                    "samples" if exp["workload"] == "vision" else "tokens"),
                       "going": going},
        "runs": runs, "curves": curves,
        "target": _target(spec, a, base_curves, metric, direction),
        "analysis": analysis,
        "verdict": None if verdict is None else {
            "rating": verdict["rating"], "band": verdict["band"],
            "best_arm": verdict["best_arm"], "critique": verdict["critique"],
            "breakdown": verdict["breakdown"], "rubric_version": verdict["rubric_version"],
            "created_at": verdict["created_at"]},
    })


def _analyze(store: Store, name: str, rows: list[dict[str, Any]]) -> Analysis:
    from airlab.analysis.compare import analyze

    return analyze(store, name, runs=rows)


__all__ = ["Cache", "analysis_json", "curve_metric", "experiment_view", "finite", "overview",
           "store_signature"]
