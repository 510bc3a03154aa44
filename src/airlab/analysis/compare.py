"""Arm-versus-baseline analysis of a stored experiment: one row per arm, Holm across arms.

Reads only the store: the experiment's current runs are the rows the pipeline stored for the
spec's arms and seeds (never planned again here), and :func:`run_facts` gives the rubric the
provenance, budgets and datasets of those runs.

Decisions come from :func:`airlab.analysis.decisions.decide` (docs/decision_rules.md):
"equivalent" by TOST against a margin (first: an interval wholly inside it is equivalent,
negligible when also significant), better/worse by the paired t test with Holm across arms;
quality is kept when better or equivalent without a significant worsening. The margin: the
spec's ``margin`` (or its ``tolerance``), else 1 sd (its lower 80 % bound) of the noise floor
stored by ``airlab calibrate`` for this workload, preset, dataset and budget, else a
provisional one from the experiment's own baseline (labelled provisional). When the primary
metric is not a quality metric (checkpointing's ``peak_mem_mb``) quality is judged on the
validation loss by equivalence, and the primary metric is the saving.

An experiment decided by ``airlab decide`` has a sequential state in the store; its stored
labels, and the tests and alpha of the looks that decided them, replace the fixed-n ones
(a fixed-n test at a data-dependent n is not the test that controlled the error). A run the
trusted measuring side flagged ``implausible`` keeps its arm (and, for the baseline, every
arm) from being better or quality kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from airlab.analysis import decisions, stats
from airlab.analysis.decisions import ArmDecision, NoiseFloor
from airlab.analysis.efficiency import ArmEfficiency, arm_efficiency
from airlab.config import BUDGET_UNITS
from airlab.errors import AirlabError, did_you_mean
from airlab.store import Store, floor_key, load_noise_floor, load_sequential_state

# Secondary metrics shown beside the primary one (means over finished seeds).
COST_METRICS = ("train_seconds", "tokens_per_s", "samples_per_s", "flops", "peak_mem_mb",
                "params", "model_bytes", "energy_kwh_est", "latency_ms_b1", "latency_ms_batch",
                "sparsity", "quality_drop")
# Metrics that measure a model's quality (the rest are costs or savings), with their direction.
QUALITY_METRICS = {"val_loss": "minimize", "best_val_loss": "minimize", "val_bpc": "minimize",
                   "val_acc": "maximize"}
# Pathologies a run reports (text workloads): 0/1 flags, and the sample diversity beside them.
PATHOLOGY_FLAGS = ("collapsed", "overfit")
# A run the trusted measuring side flagged (issue 21): a count >= 1 in this metric, one-line
# reasons in the run's info under the same key.
IMPLAUSIBLE = "implausible"
DIVERSITY_METRICS = ("sample_distinct_2", "sample_entropy_ratio")
CREDIT_COSTS = {"time": "train_seconds", "flops": "flops", "energy": "energy_kwh_est"}


@dataclass(frozen=True)
class Margin:
    """The equivalence margin of one metric and where it came from.

    ``value`` is the margin the equivalence test uses: a declared one as it is, a measured one
    at the lower confidence bound of the sd (so its own error cannot widen it); ``upper`` is
    the same margin at the sd's upper bound, which a gain must be shown to exceed."""

    value: float  # nan: none (equivalence cannot be shown)
    source: str  # "spec margin" | "spec tolerance" | "noise floor" | "provisional" | "none"
    upper: float = math.nan  # nan: as value
    df: float = math.inf  # degrees of freedom of the sd it came from (inf: declared)

    @property
    def provisional(self) -> bool:
        return self.source == "provisional"

    @property
    def beyond(self) -> float:
        """The margin a gain must be shown to exceed."""
        return self.value if math.isnan(self.upper) else self.upper

    def describe(self, unit: str = "") -> str:
        if math.isnan(self.value):
            return "no margin (declare one in the spec or run `airlab calibrate`)"
        k = f"{decisions.MARGIN_SIGMAS:g} sd"
        bound = f"lower {100 * decisions.SD_CONFIDENCE:.0f}% bound, df {self.df:g}"
        what = {"provisional": f"provisional: {k} of this experiment's baseline, {bound}; run "
                               "`airlab calibrate` to measure the noise floor",
                "noise floor": f"{k} of the measured noise floor, {bound}"}.get(
                    self.source, self.source)
        return f"±{self.value:.3g}{unit} ({what})"


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
    decision: ArmDecision | None = None  # the primary metric (decisions.decide)
    quality: ArmDecision | None = None  # the quality metric (the same when primary is one)
    quality_values: list[float] = field(default_factory=list)
    pathologies: dict[str, int] = field(default_factory=dict)  # flag -> runs flagged
    mde: float = math.nan  # primary metric, paired, at alpha / arms and power 0.8
    mde_source: str = ""  # "noise floor" | "paired differences"
    # Undecided arms: pairs a design needs to find an effect the size of the margin (the
    # smallest that matters), never the observed difference (decisions.design_pairs).
    seeds_needed: int | None = None
    seeds_effect: float = math.nan  # the effect seeds_needed is sized for
    # Runs cut by a time box ("seed 137: time box: stopped at ..."): like failed runs they are
    # left out of the statistics (values NaN), but counted and listed; the next run finishes them.
    incomplete: int = 0
    incomplete_runs: list[str] = field(default_factory=list)
    # Runs the trusted measuring side flagged implausible, and its one-line reasons.
    implausible_runs: int = 0
    implausible: list[str] = field(default_factory=list)


@dataclass
class Analysis:
    name: str
    metric: str
    direction: str
    spec: dict[str, Any]
    rows: list[ArmRow]
    quality_metric: str = "val_loss"
    quality_direction: str = "minimize"
    margin: Margin = Margin(math.nan, "none")  # of the primary metric
    quality_margin: Margin = Margin(math.nan, "none")  # of the quality metric
    floors: dict[str, NoiseFloor] = field(default_factory=dict)  # metric -> stored floor
    floor_key: dict[str, str] | None = None
    credit: str = "time"  # the spec's credited cost ratio
    quick: bool = False  # a --quick smoke test (not rated)
    # The sequential-decision state (airlab decide), when the experiment has one: its labels
    # are the verdict's (apply_decisions).
    sequential: dict[str, Any] | None = None

    @property
    def baseline(self) -> ArmRow:
        return self.rows[0]

    @property
    def quality_is_primary(self) -> bool:
        return self.quality_metric == self.metric


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
    qmetric, qdir = (metric, direction) if metric in QUALITY_METRICS else ("val_loss", "minimize")
    seeds = list(spec.get("seeds", []))
    arm_names = [spec["baseline"]["name"], *[a["name"] for a in spec.get("arms", [])]]
    current = list(runs) if runs is not None else current_runs(store.runs(exp["id"]), spec)
    all_metrics = store.metrics([r["id"] for r in current])

    rows: list[ArmRow] = []
    for arm in arm_names:
        arm_runs = {r["seed"]: r for r in current if r["arm"] == arm}
        values, qvalues, failures, finished, cut = [], [], [], [], []
        run_ids: dict[int, int] = {}
        for s in seeds:
            r = arm_runs.get(s)
            v = q = math.nan
            if r is not None and r["state"] == "finished":
                got, qgot = all_metrics[r["id"]].get(metric), all_metrics[r["id"]].get(qmetric)
                v = math.nan if got is None else float(got)
                q = math.nan if qgot is None else float(qgot)
                finished.append(r["id"])
                run_ids[s] = r["id"]
            elif r is not None and r["state"] == "failed":
                failures.append(f"seed {s}: {r['reason']}")
            elif r is not None and r["state"] == "incomplete":
                cut.append(f"seed {s}: {r['reason']}")
            values.append(v)
            qvalues.append(q)
        means: dict[str, float] = {}
        for m in COST_METRICS + DIVERSITY_METRICS + (metric, qmetric):
            xs = [float(x) for i in finished if (x := all_metrics[i].get(m)) is not None
                  and math.isfinite(float(x))]
            if xs:
                means[m] = sum(xs) / len(xs)
        flags = {f: sum(1 for i in finished if (all_metrics[i].get(f) or 0) >= 0.5)
                 for f in PATHOLOGY_FLAGS}
        flagged, reasons = read_implausible(
            [(s, all_metrics[r["id"]], r.get("info")) for s in seeds
             if (r := arm_runs.get(s)) is not None])
        rows.append(ArmRow(arm=arm, is_baseline=not rows, seeds=seeds, values=values,
                           planned=len(seeds), finished=len(finished), failed=len(failures),
                           failures=failures, summary=stats.summarize(values), means=means,
                           run_ids=run_ids, quality_values=qvalues,
                           pathologies={f: k for f, k in flags.items() if k},
                           incomplete=len(cut), incomplete_runs=cut,
                           implausible_runs=flagged, implausible=reasons))

    base = rows[0]
    key = _floor_key(current, base, spec)
    floors: dict[str, NoiseFloor] = {}
    if key is not None:
        for m in {metric, qmetric}:
            stored = load_noise_floor(store, key, m)
            if stored is not None:
                floors[m] = NoiseFloor.from_dict(stored)
    a = Analysis(name, metric, direction, spec, rows, qmetric, qdir, floors=floors,
                 floor_key=key, credit=str(spec.get("credit") or "time"),
                 quick=is_quick(name, spec), sequential=load_sequential_state(store, name))
    apply_decisions(a)
    _attach_efficiency(store, a)
    return a


def apply_decisions(a: Analysis) -> None:
    """Margins, decisions (TOST + Holm, paired t + Holm), MDE and verdict labels of every arm,
    from the rows' per-seed values, the spec, the stored floors (``a.floors``) and, when the
    experiment was decided sequentially, its state (``a.sequential``): then the labels, and
    the tests and alpha behind them, are the sequential procedure's. Last, an arm with a run
    flagged implausible (or any arm, when the baseline has one) loses "better" and
    "equivalent" (:func:`demote_implausible`)."""
    spec, rows = a.spec, a.rows
    base = rows[0]
    a.margin = _margin(spec, a.metric, base.values, a.floors.get(a.metric), declared=True)
    a.quality_margin = a.margin if a.quality_is_primary else _margin(
        spec, a.quality_metric, base.quality_values, a.floors.get(a.quality_metric),
        declared=False)
    arms = rows[1:]
    if arms:
        dec = _decide(base.values, arms, [r.values for r in arms], a.direction, a.margin,
                      a.floors.get(a.metric))
        if a.sequential is not None:
            # The sequential procedure decided the primary metric only; a separate quality
            # metric (a saving's val_loss) stays decided at fixed n.
            dec = {k: decisions.sequential_decision(d, a.sequential) for k, d in dec.items()}
        qdec = dec if a.quality_is_primary else _decide(
            base.quality_values, arms, [r.quality_values for r in arms], a.quality_direction,
            a.quality_margin, a.floors.get(a.quality_metric))
        for row in arms:
            row.decision, row.quality = dec[row.arm], qdec[row.arm]
            row.comparison = stats.compare(base.values, row.values, direction=a.direction,
                                           paired=True)
        demote_implausible(a)
        for row in arms:
            assert row.decision is not None
            row.p_holm = row.decision.p_holm
            row.verdict = row.decision.label
            _power(row, len(arms), a.floors.get(a.metric), a.margin)
    base.verdict = "baseline"


def read_implausible(runs: Sequence[tuple[int, Mapping[str, Any], Mapping[str, Any] | None]]
                     ) -> tuple[int, list[str]]:
    """How many of an arm's runs (seed, metrics, info) the measuring side flagged implausible,
    and its reasons, one line each ("seed 42: val_loss 0.28 far below train loss 2.1").

    Flagged: the ``implausible`` metric is present and not <= 0 (a NaN count counts: a flag
    that cannot be read is not a clean run)."""
    count = 0
    reasons: list[str] = []
    for seed, mets, info in runs:
        v = mets.get(IMPLAUSIBLE)
        if v is None or float(v) <= 0:
            continue
        count += 1
        why = (info or {}).get(IMPLAUSIBLE) or []
        why = [why] if isinstance(why, str) else [str(x) for x in why]
        reasons += [f"seed {seed}: {w}" for w in why] or [
            f"seed {seed}: flagged implausible by the measuring side (no reason given)"]
    return count, reasons


def demote_implausible(a: Analysis) -> None:
    """A result measured on a run flagged implausible is not believed: an arm with such a run
    (every arm, when the baseline has one) is never "better" nor "equivalent" (hence never
    quality kept nor credited); "worse" and "undecided" stand. Its note gives the reasons."""
    base = a.baseline
    for row in a.rows[1:]:
        who = [r for r in (base, row) if r.implausible_runs]
        if not who:
            continue
        why = "; ".join(f"{r.arm}: {x}" for r in who for x in r.implausible)
        note = f"not believed: run(s) flagged implausible ({why})"
        for attr in ("decision", "quality"):
            d: ArmDecision | None = getattr(row, attr)
            if d is not None and d.label in ("better", "equivalent"):
                setattr(row, attr, replace(d, label="undecided", equivalent=False, note=note))
        if a.quality_is_primary:
            row.quality = row.decision


def is_quick(name: str, spec: dict[str, Any]) -> bool:
    """A ``--quick`` smoke test: stored as NAME-quick (or flagged ``quick`` in the spec)."""
    return name.endswith("-quick") or bool(spec.get("quick"))


def _floor_key(current: Sequence[dict[str, Any]], base: ArmRow, spec: dict[str, Any]
               ) -> dict[str, str] | None:
    """The noise-floor key of the baseline's resolved config (workload, preset, dataset) and
    the experiment's budget; None when no baseline run is stored."""
    cfg = next((r["config"] for r in current if r["arm"] == base.arm and r.get("config")),
               None)
    budget = spec.get("budget")
    if cfg is None or not budget or len(budget) != 1:
        return None
    return floor_key(cfg, budget)


def _margin(spec: dict[str, Any], metric: str, base_values: Sequence[float],
            floor: NoiseFloor | None, *, declared: bool) -> Margin:
    """The equivalence margin: declared (primary metric only; the smallest effect that matters,
    exact), else from the noise floor, else provisional from the baseline's own sd; a measured
    one at the sd's lower confidence bound (``upper``: at its upper bound)."""
    if declared and spec.get("margin"):
        return Margin(float(spec["margin"]), "spec margin")
    if declared and float(spec.get("tolerance") or 0.0) > 0:
        return Margin(float(spec["tolerance"]), "spec tolerance")
    if floor is not None and math.isfinite(floor.sd) and floor.sd > 0 and floor.df >= 1:
        df = float(floor.df)
        return Margin(decisions.default_margin(floor.sd, df), "noise floor",
                      decisions.margin_upper(floor.sd, df), df)
    s = stats.summarize(base_values)
    if math.isfinite(s.sd) and s.sd > 0:
        df = float(s.n - 1)
        return Margin(decisions.default_margin(s.sd, df), "provisional",
                      decisions.margin_upper(s.sd, df), df)
    return Margin(math.nan, "none")


def _decide(base: list[float], arms: list[ArmRow], values: list[list[float]], direction: str,
            margin: Margin, floor: NoiseFloor | None) -> dict[str, ArmDecision]:
    """decisions.decide without a floor; when some arm's differences have no spread and a
    floor is stored, again with the floor's sd of differences (conservative for every arm)."""
    named = {r.arm: v for r, v in zip(arms, values, strict=True)}
    out = decisions.decide(base, named, direction, margin.value, margin_upper=margin.beyond)
    no_spread = any(d.n >= 2 and math.isnan(d.sd_diff) for d in out.values())
    if no_spread and floor is not None and math.isfinite(floor.sd_diff):
        out = decisions.decide(base, named, direction, margin.value, sd_floor=floor.sd_diff,
                               margin_upper=margin.beyond)
    return out


def _power(row: ArmRow, arms: int, floor: NoiseFloor | None, margin: Margin) -> None:
    """MDE and, for an undecided arm, seeds-needed from the sd of paired differences (the
    floor's when stored). Seeds-needed is sized for an effect the size of the margin (the
    smallest that matters), never the observed difference: sized on an A/A arm's noise it
    said "41-128 seeds" or "treat it as no effect" (decisions.design_pairs)."""
    d = row.decision
    if d is None or d.n < 2:
        return
    if floor is not None and math.isfinite(floor.sd_diff) and floor.df >= 1:
        sd, df, row.mde_source = floor.sd_diff, float(floor.df), "noise floor"
    elif math.isfinite(d.sd_diff):
        sd, df, row.mde_source = d.sd_diff, float(d.n - 1), "paired differences"
    else:
        return
    row.mde = decisions.mde_paired(sd, d.n, arms, sd_df=df)
    if d.label == "undecided" and margin.value > 0:
        row.seeds_effect = margin.value
        row.seeds_needed = decisions.design_pairs(sd, margin.value, arms, sd_df=df)


def _efficiency_inputs(store: Store, a: Analysis
                       ) -> tuple[str, str, Any, Any]:
    """The curve metric and direction time-to-target reads, and each row's runs as
    ``arm_efficiency`` takes them (seed -> curve and metrics)."""
    all_ids = [i for r in a.rows for i in r.run_ids.values()]
    mets = store.metrics(all_ids)
    curves = {i: store.curve(i) for i in all_ids}
    # Curves carry val_loss/val_acc; a primary metric off the curve uses val_loss.
    cmetric = a.metric if a.metric in ("val_loss", "val_acc") else "val_loss"
    cdir = a.direction if cmetric == a.metric else "minimize"

    def runs(row: ArmRow) -> dict[int, dict[str, Any]]:
        return {s: {"curve": curves[i], "metrics": mets[i]} for s, i in row.run_ids.items()}

    return cmetric, cdir, runs, mets


def _attach_efficiency(store: Store, a: Analysis) -> None:
    """Time-to-target of every arm on the quality metric's curve (val_loss/val_acc), with the
    spec's declared target or leave-one-seed-out targets, slack from the floor when stored."""
    cmetric, cdir, runs, _ = _efficiency_inputs(store, a)
    target = a.spec.get("target") if cmetric == a.metric else None
    floor = a.floors.get(cmetric)
    floor_sd = floor.sd if floor is not None else math.nan
    base = a.rows[0]
    for row in a.rows[1:]:
        row.efficiency = arm_efficiency(row.arm, cmetric, cdir, runs(base), runs(row),
                                        base.means, row.means,
                                        None if target is None else float(target), floor_sd)


def versus(store: Store, a: Analysis, arm: str, reference: str) -> ArmEfficiency:
    """Time-to-target of ``arm`` against ``reference`` (two arms of the experiment), paired by
    seed, at the baseline's quality: the declared target is the baseline's mean final value
    (curve metric) over the seeds where the baseline finished. The rule is
    :func:`~airlab.analysis.efficiency.time_to_target`'s with a declared target, as on a
    recipe (the team's explore sprints); reference cost / arm cost > 1: ``arm`` is faster."""
    rows = {r.arm: r for r in a.rows}
    for name in (arm, reference):
        if name not in rows:
            raise AirlabError(f"experiment {a.name} has no arm '{name}'",
                              did_you_mean(name, rows))
    cmetric, cdir, runs, mets = _efficiency_inputs(store, a)
    finals = [float(v) for i in a.baseline.run_ids.values()
              if (v := mets[i].get(cmetric)) is not None and math.isfinite(float(v))]
    target = sum(finals) / len(finals) if finals else math.nan
    ref, row = rows[reference], rows[arm]
    if not finals:
        return ArmEfficiency(arm, 0, 0, {}, {}, notes=["the baseline has no finished run: "
                                                      "no target"])
    return arm_efficiency(arm, cmetric, cdir, runs(ref), runs(row), ref.means, row.means,
                          target)


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
