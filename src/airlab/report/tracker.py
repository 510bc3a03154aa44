"""The research tracker behind `airlab status`: where the lab stands against its roadmap.

Everything is read from the store: experiments by area and state, runs and failures, the
latest stored verdict of each experiment (ratings by band), research velocity, the best
speed-up, compression and energy saving, and the roadmap's first-phase checklist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from airlab.analysis.compare import Analysis, analyze, is_quick
from airlab.errors import AirlabError
from airlab.store import Store

ROADMAP_AREAS = ("quantization", "pruning", "optimizers", "batch_size", "mixed_precision",
                 "distillation", "checkpointing", "efficient_arch")
BAND_ORDER = ("publishable", "good progress", "needs work")
TARGET_AVERAGE = 6.0  # roadmap phase 1: average rating >= 6
TARGET_PUBLISHABLE = 2  # and at least two experiments rated >= 7
DAY = 86400.0


@dataclass(frozen=True)
class Best:
    """The best value of one efficiency figure and where it comes from."""

    ratio: float
    experiment: str
    arm: str
    source: str  # "time to target", "per budget (means)", ...


@dataclass
class ExperimentLine:
    name: str
    area: str
    state: str
    runs: int
    finished: int
    failed: int
    best_arm: str = "—"
    verdict: str = "—"
    rating: int | None = None
    band: str | None = None


@dataclass
class LabStatus:
    store_url: str
    experiments: list[ExperimentLine]
    single_runs: int
    runs: dict[str, int]
    by_area: dict[str, dict[str, int]]
    bands: dict[str, int]
    ratings: list[int]
    velocity: float | None  # experiments per day over the active period
    active_days: float
    best_speedup: Best | None = None
    best_compression: Best | None = None
    best_energy: Best | None = None
    checklist: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def average_rating(self) -> float | None:
        return sum(self.ratings) / len(self.ratings) if self.ratings else None

    @property
    def rated_publishable(self) -> int:
        return sum(r >= 7 for r in self.ratings)


def _state(runs: list[dict[str, Any]]) -> str:
    states = {r["state"] for r in runs}
    if not runs:
        return "planned"
    if "running" in states:
        return "running"
    if "pending" in states or "incomplete" in states:  # unstarted, or cut by a time box
        return "incomplete"
    if states == {"failed"}:
        return "failed"
    return "done"


def _better(best: Best | None, ratio: float | None) -> bool:
    return ratio is not None and math.isfinite(ratio) and ratio > 0 and (
        best is None or ratio > best.ratio)


def _energy_means(store: Store, exp_id: int) -> dict[str, float]:
    """Mean estimated energy per arm over finished runs (not among analyze()'s means)."""
    runs = [r for r in store.runs(exp_id) if r["state"] == "finished"]
    mets = store.metrics([r["id"] for r in runs])
    acc: dict[str, list[float]] = {}
    for r in runs:
        v = mets[r["id"]].get("energy_kwh_est")
        if v is not None:
            acc.setdefault(r["arm"], []).append(float(v))
    return {a: sum(v) / len(v) for a, v in acc.items() if v}


def _update_bests(st: LabStatus, store: Store, exp: dict[str, Any], a: Analysis) -> None:
    base = a.baseline
    energy = _energy_means(store, exp["id"])
    for row in a.rows[1:]:
        if row.verdict == "worse" or row.finished == 0:
            continue  # a saving bought with worse quality is not a saving
        eff = getattr(row, "efficiency", None)
        ratios = (getattr(eff, "ratio", None) or {}) if eff is not None else {}

        def first(key: str, ratios: dict[str, Any] = ratios) -> float | None:
            r = ratios.get(key)
            return None if r is None or r[0] is None else float(r[0])

        def of_means(b: float | None, v: float | None) -> float | None:
            return b / v if b and v and b > 0 and v > 0 else None

        speed, speed_src = first("train_seconds"), "time to target"
        if speed is None:
            speed = of_means(base.means.get("train_seconds"), row.means.get("train_seconds"))
            speed_src = "train_seconds per budget"
        size = getattr(eff, "size_ratio", None) if eff is not None else None
        size_src = "model size"
        if size is None:
            size = of_means(base.means.get("model_bytes"), row.means.get("model_bytes"))
            size_src = "model_bytes"
        en, en_src = first("energy_kwh_est"), "energy to target (estimate)"
        if en is None:
            en = of_means(energy.get(base.arm), energy.get(row.arm))
            en_src = "energy per budget (estimate)"
        if _better(st.best_speedup, speed):
            assert speed is not None
            st.best_speedup = Best(speed, exp["name"], row.arm, speed_src)
        if _better(st.best_compression, size):
            assert size is not None
            st.best_compression = Best(float(size), exp["name"], row.arm, size_src)
        if _better(st.best_energy, en):
            assert en is not None
            st.best_energy = Best(en, exp["name"], row.arm, en_src)


def lab_status(store: Store) -> LabStatus:
    """Collect the tracker's figures from the store (read only)."""
    from airlab.store.verdicts import latest_verdicts

    all_exps = store.experiments()
    exps = [e for e in all_exps if e["kind"] == "experiment"]
    verdicts = latest_verdicts(store)
    st = LabStatus(store.url, [], sum(e["kind"] == "train" for e in all_exps), store.counts(),
                   {}, {b: 0 for b in BAND_ORDER}, [], None, 0.0)
    last_activity = 0.0
    for e in exps:
        runs = store.runs(e["id"])
        line = ExperimentLine(e["name"], e["area"], _state(runs), len(runs),
                              sum(r["state"] == "finished" for r in runs),
                              sum(r["state"] == "failed" for r in runs))
        last_activity = max([last_activity, e["updated_at"] or 0.0,
                             *[r["finished_at"] or 0.0 for r in runs]])
        area = st.by_area.setdefault(e["area"], {})
        area[line.state] = area.get(line.state, 0) + 1
        v = verdicts.get(e["id"])
        smoke = is_quick(e["name"], e.get("spec") or {})
        if v is not None:
            line.rating, line.band = int(v["rating"]), str(v["band"])
            if not smoke and line.rating >= 1:  # a smoke test earns no publication rating
                st.ratings.append(line.rating)
                st.bands[line.band] = st.bands.get(line.band, 0) + 1
        try:
            a = analyze(store, e["name"])
        except AirlabError:
            a = None
        if a is not None and len(a.rows) > 1:
            sign = 1.0 if a.direction == "minimize" else -1.0
            ranked = sorted(a.rows[1:], key=lambda r: sign * r.summary.mean
                            if not math.isnan(r.summary.mean) else math.inf)
            line.best_arm, line.verdict = ranked[0].arm, ranked[0].verdict
            if not smoke:  # smoke tests are listed, not counted among the lab's results
                _update_bests(st, store, e, a)
        st.experiments.append(line)
    if exps:
        first = min(e["created_at"] for e in exps)
        # A lab active for an hour has done a day's work, not 24 days' worth.
        st.active_days = max(1.0, (last_activity - first) / DAY)
        st.velocity = len(exps) / st.active_days
    st.checklist = _checklist(st)
    return st


def _checklist(st: LabStatus) -> list[tuple[str, bool, str]]:
    ran = {line.area for line in st.experiments
           if line.finished > 0 and not is_quick(line.name, {})}
    items = [(f"{area} experiment run", area in ran,
              ", ".join(x.name for x in st.experiments if x.area == area) or "not yet")
             for area in ROADMAP_AREAS]
    avg = st.average_rating
    items.append((f"average rating >= {TARGET_AVERAGE:g}", avg is not None and
                  avg >= TARGET_AVERAGE, "no verdicts yet" if avg is None else f"{avg:.1f}"))
    items.append((f"at least {TARGET_PUBLISHABLE} experiments rated >= 7",
                  st.rated_publishable >= TARGET_PUBLISHABLE, f"{st.rated_publishable}"))
    best = st.best_speedup
    items.append(("an efficiency gain >= 2x", bool(
        (best and best.ratio >= 2) or (st.best_energy and st.best_energy.ratio >= 2)
        or (st.best_compression and st.best_compression.ratio >= 2)),
        "best speed-up " + (f"{best.ratio:.2f}x" if best else "—")))
    return items


# --------------------------------------------------------------------------- rendering


def _best(label: str, b: Best | None) -> str:
    if b is None:
        return f"{label}: —"
    return f"{label}: {b.ratio:.2f}x ({b.source}) — {b.experiment} / {b.arm}"


def render_status(st: LabStatus) -> Group:
    """The Rich view of :func:`lab_status`."""
    parts: list[Any] = []
    runs = ", ".join(f"{v} {k}" for k, v in sorted(st.runs.items())) or "none"
    parts.append(Text(f"store: {st.store_url}"))
    parts.append(Text(f"experiments: {len(st.experiments)}, single runs: {st.single_runs}; "
                      f"runs: {runs}; failures: {st.runs.get('failed', 0)}"))
    if not st.experiments:
        parts.append(Text("no experiments yet: try `airlab run demo`", style="yellow"))
    states = sorted({s for d in st.by_area.values() for s in d})
    if st.by_area:
        t = Table(title="experiments by area and state", title_justify="left")
        t.add_column("area")
        for s in states:
            t.add_column(s, justify="right")
        for area, d in sorted(st.by_area.items()):
            t.add_row(area, *[str(d.get(s, 0)) for s in states])
        parts.append(t)
        t = Table(title="experiments", title_justify="left")
        for c in ("name", "area", "state", "runs", "finished", "failed", "best arm", "verdict",
                  "rating"):
            t.add_column(c)
        for x in st.experiments:
            t.add_row(x.name, x.area, x.state, str(x.runs), str(x.finished), str(x.failed),
                      x.best_arm, x.verdict, f"{x.rating}/10" if x.rating else "not rated")
        parts.append(t)
    avg = st.average_rating
    bands = ", ".join(f"{b} {st.bands.get(b, 0)}" for b in BAND_ORDER)
    parts.append(Text(f"ratings (latest verdict per experiment): {bands}; average "
                      + (f"{avg:.1f}" if avg is not None else "—")
                      + f"; rated >= 7: {st.rated_publishable}"))
    vel = "—" if st.velocity is None else f"{st.velocity:.2f} experiments/day"
    parts.append(Text(f"research velocity: {vel} over {st.active_days:.1f} active day(s)"))
    for label, b in (("best speed-up", st.best_speedup),
                     ("best compression", st.best_compression),
                     ("best energy saving", st.best_energy)):
        parts.append(Text(_best(label, b)))
    t = Table(title="roadmap checklist (phase 1)", title_justify="left")
    t.add_column("")
    t.add_column("goal")
    t.add_column("now")
    for label, ok, now in st.checklist:
        t.add_row(Text("✓", style="green") if ok else Text("✗", style="red"), label, now)
    parts.append(t)
    return Group(*parts)


def print_status(store: Store, console: Console) -> LabStatus:
    st = lab_status(store)
    console.print(render_status(st))
    return st
