"""The ideas tracker: where each knowledge-base idea stands, and how good the team's forecasts are.

An experiment tests an idea when its spec names it (``idea: NAME``; ``idea_spec`` sets it).
From the store this module derives, per idea:

* its **status**: ``untested`` (no experiment), ``running`` (its latest experiment still has
  pending or running runs), else the decision on the idea's arm in its latest experiment:
  ``better`` when the rubric counts the arm as an improvement (better on quality, or a credited
  cost ratio with quality kept: ``validate.score_arm``), ``worse`` when the paired test calls
  it worse (on the primary metric or on quality), ``equivalent`` when TOST shows it within the
  margin, ``undecided`` otherwise;
* its **scored prediction** per experiment: the observed effect in the prediction's metric and
  kind, scored by ``Prediction.score`` (hit, direction right, missed by how far).

Each rule lives in one function: :func:`arm_status` (the status of an analysed arm) and
:func:`observed_effect` (what the prediction is scored against). The Validator calls
:func:`score_experiment` after rating; experiments that test an idea without a stored score
are scored on the fly (not saved) when the tracker reads them.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from airlab.agents.knowledge import Idea, load_ideas
from airlab.analysis.compare import CREDIT_COSTS, Analysis, ArmRow, analyze, is_quick
from airlab.store import Store, latest_verdicts
from airlab.store.predictions import load_predictions, save_prediction
from airlab.validate import score_arm

STATUSES = ("untested", "running", "better", "worse", "equivalent", "undecided")
RUNNING_STATES = ("pending", "running")  # runs still to come: the experiment is not decided
MIN_PAIRS = 2  # seed pairs (idea arm and reference both finished) for an observation


@dataclass(frozen=True)
class IdeaStatus:
    """Where one idea stands (see the module docstring for the status rule)."""

    name: str
    area: str
    aspect: str
    tier: int
    needs_code: bool
    status: str  # untested | running | better | worse | equivalent | undecided
    experiments: list[str]  # names, oldest first
    effect: float | None  # last observed effect in the prediction's metric and kind
    ratio: float | None  # last time-to-target ratio of the idea's arm (x faster)
    rating: int | None  # last verdict's rating
    scores: list[dict[str, Any]] = field(default_factory=list)  # oldest first

    def to_dict(self) -> dict[str, Any]:
        return _finite_or_none(asdict(self))


# --------------------------------------------------------------------------- the rules


def idea_row(a: Analysis, idea: Idea) -> ArmRow | None:
    """The idea's arm in an analysis: the arm named after the idea, else the first arm that is
    not the baseline or the idea's ablation (a spec the Architect named differently)."""
    arms = a.rows[1:]
    for r in arms:
        if r.arm == idea.name:
            return r
    abl = idea.ablation.name if idea.ablation is not None else None
    return next((r for r in arms if r.arm != abl), None)


def _reference_row(a: Analysis, idea: Idea) -> ArmRow | None:
    if idea.prediction.against == "baseline":
        return a.baseline
    abl = idea.ablation
    return next((r for r in a.rows[1:] if abl is not None and r.arm == abl.name), None)


def arm_status(a: Analysis, row: ArmRow) -> str:
    """The status of one analysed arm against the baseline, from the rubric's and the decision
    rules' own calls (nothing is re-derived here)."""
    if row.decision is None or row.decision.n < 2:
        return "undecided"
    if score_arm(row, a.baseline, a).improved:
        return "better"
    if row.verdict == "worse" or (row.quality is not None and row.quality.label == "worse"):
        return "worse"
    if row.verdict == "equivalent":
        return "equivalent"
    return "undecided"


def time_to_target_ratio(a: Analysis, row: ArmRow) -> float | None:
    """The arm's time-to-target speed-up over the baseline in the credited cost (x faster)."""
    eff = row.efficiency
    if eff is None:
        return None
    r = eff.ratio.get(CREDIT_COSTS.get(a.credit, "train_seconds"))
    return float(r[0]) if r is not None and r[0] is not None and math.isfinite(r[0]) else None


def observed_effect(store: Store, a: Analysis, idea: Idea) -> float | None:
    """What the idea's prediction is scored against, from the analysis (None: not usable).

    ``kind: delta``: mean over seed pairs of idea arm - reference (baseline or ablation) in the
    prediction's metric. ``kind: ratio``: for ``time_to_target`` the arm's speed-up over the
    baseline (baseline cost / arm cost, the credited cost; against the ablation, the arm's
    speed-up divided by the ablation's); for any other metric arm mean / reference mean over
    the same pairs. At least :data:`MIN_PAIRS` finished pairs are needed.
    """
    p = idea.prediction
    row, ref = idea_row(a, idea), _reference_row(a, idea)
    if row is None or ref is None:
        return None
    if p.kind == "ratio" and p.metric == "time_to_target":
        arm_x = time_to_target_ratio(a, row)
        if ref is a.baseline:
            return arm_x
        ref_x = time_to_target_ratio(a, ref)
        return None if arm_x is None or not ref_x else arm_x / ref_x
    seeds = sorted(set(row.run_ids) & set(ref.run_ids))
    mets = store.metrics([row.run_ids[s] for s in seeds] + [ref.run_ids[s] for s in seeds])
    pairs = []
    for s in seeds:
        x, y = mets[row.run_ids[s]].get(p.metric), mets[ref.run_ids[s]].get(p.metric)
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y):
            pairs.append((float(x), float(y)))
    if len(pairs) < MIN_PAIRS:
        return None
    if p.kind == "delta":
        return sum(x - y for x, y in pairs) / len(pairs)
    ref_mean = sum(y for _, y in pairs) / len(pairs)
    return None if ref_mean <= 0 else sum(x for x, _ in pairs) / len(pairs) / ref_mean


# --------------------------------------------------------------------------- scoring


def _score(store: Store, exp: dict[str, Any], idea: Idea, a: Analysis, at: float
           ) -> dict[str, Any] | None:
    """The scored prediction of one analysed experiment (not stored), or None."""
    if a.quick:
        return None
    observed = observed_effect(store, a, idea)
    if observed is None or not math.isfinite(observed):
        return None
    row = idea_row(a, idea)
    p = idea.prediction
    spec_budget = {k: float(v) for k, v in (exp["spec"].get("budget") or {}).items()}
    return {**p.score(observed).to_dict(), "experiment": exp["name"], "idea": idea.name,
            "observed": observed, "at": at, "metric": p.metric, "kind": p.kind,
            "against": p.against, "expected": p.expected, "low": p.low, "high": p.high,
            "decided": arm_status(a, row) if row is not None else "undecided",
            # The prediction holds for its stated budget; a score at another one is weaker.
            "budget_match": spec_budget == dict(p.budget or {}),
            "prediction": p.model_dump()}


def score_experiment(store: Store, experiment: str, analysis: Analysis | None = None, *,
                     ideas: Mapping[str, Idea] | None = None, save: bool = True
                     ) -> dict[str, Any] | None:
    """Score the prediction of the idea an experiment tests and store it (``save``, when the
    store is writable; a later score of the same experiment replaces it).

    Returns the score (``PredictionScore.to_dict()`` plus experiment, idea, observed, at,
    decided, budget_match and the prediction), or None when the experiment tests no known idea
    or has no usable result (a smoke test, too few finished seed pairs, no target reached).
    """
    exp = store.experiment(experiment)
    if exp is None:
        return None
    idea = _idea_of(exp, ideas)
    if idea is None:
        return None
    a = analysis if analysis is not None else analyze(store, experiment)
    out = _score(store, exp, idea, a, time.time())
    if out is not None and save and not store.readonly:
        save_prediction(store, experiment=experiment, idea=idea.name,
                        prediction=out["prediction"], observed=out["observed"],
                        score=_stored_score(out), decided=out["decided"], created_at=out["at"])
    return _finite_or_none(out) if out is not None else None


def _stored_score(out: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in out.items()
            if k not in ("experiment", "idea", "observed", "at", "prediction", "decided")}


def _from_row(r: Mapping[str, Any]) -> dict[str, Any]:
    """A stored prediction row in the shape :func:`score_experiment` returns."""
    return {**(r["score"] or {}), "experiment": r["experiment"], "idea": r["idea"],
            "observed": r["observed"], "at": r["created_at"], "decided": r["decided"],
            "prediction": r["prediction"]}


# --------------------------------------------------------------------------- statuses


def _idea_of(exp: Mapping[str, Any], ideas: Mapping[str, Idea] | None) -> Idea | None:
    name = (exp.get("spec") or {}).get("idea")
    if not name:
        return None
    return (load_ideas() if ideas is None else ideas).get(name)


def _as_mapping(ideas: Mapping[str, Idea] | Iterable[Idea] | None) -> dict[str, Idea]:
    if ideas is None:
        return dict(load_ideas())
    if isinstance(ideas, Mapping):
        return dict(ideas)
    return {i.name: i for i in ideas}


def idea_statuses(store: Store, ideas: Mapping[str, Idea] | Iterable[Idea] | None = None
                  ) -> dict[str, IdeaStatus]:
    """Every idea's status (name order), read from the store. Writes nothing: experiments
    without a stored score are scored on the fly. Works on an empty store (all untested)."""
    known = _as_mapping(ideas)
    by_idea: dict[str, list[dict[str, Any]]] = {}
    for exp in store.experiments(kind="experiment"):  # oldest first
        idea = _idea_of(exp, known)
        if idea is not None:
            by_idea.setdefault(idea.name, []).append(exp)
    stored = {r["experiment"]: r for r in load_predictions(store)} if by_idea else {}
    verdicts = latest_verdicts(store) if by_idea else {}
    out: dict[str, IdeaStatus] = {}
    for name in sorted(known):
        idea = known[name]
        exps = by_idea.get(name, [])
        # The latest experiment decides the status; a smoke test (--quick) only when alone.
        real = [i for i, e in enumerate(exps) if not is_quick(e["name"], e["spec"])]
        decider = real[-1] if real else len(exps) - 1
        status, effect, ratio, rating = "untested", None, None, None
        scores: list[dict[str, Any]] = []
        for i, exp in enumerate(exps):
            last = i == decider
            runs = store.runs(exp["id"])
            running = any(r["state"] in RUNNING_STATES for r in runs)
            finished = any(r["state"] == "finished" for r in runs)
            v = verdicts.get(exp["id"])
            if v is not None and v["rating"] >= 1:
                rating = int(v["rating"])
            a: Analysis | None = None
            if finished and not is_quick(exp["name"], exp["spec"]) and (
                    last or exp["name"] not in stored):
                a = analyze(store, exp["name"])
            if exp["name"] in stored:
                scores.append(_from_row(stored[exp["name"]]))
            elif a is not None and not running:
                at = v["created_at"] if v is not None else exp["updated_at"]
                s = _score(store, exp, idea, a, at)
                if s is not None:
                    scores.append(s)
            if last:
                row = idea_row(a, idea) if a is not None else None
                if running:
                    status = "running"
                elif a is None or row is None:
                    status = "undecided"
                else:
                    status = arm_status(a, row)
                if row is not None:
                    ratio = time_to_target_ratio(a, row)  # type: ignore[arg-type]
        if scores:
            effect = scores[-1]["observed"]
        out[name] = IdeaStatus(name=name, area=idea.area, aspect=idea.aspect, tier=idea.tier,
                               needs_code=idea.needs_code, status=status,
                               experiments=[e["name"] for e in exps], effect=effect,
                               ratio=ratio, rating=rating,
                               scores=[_finite_or_none(s) for s in scores])
    return out


def prediction_record(store: Store, ideas: Mapping[str, Idea] | Iterable[Idea] | None = None,
                      *, statuses: Mapping[str, IdeaStatus] | None = None
                      ) -> list[dict[str, Any]]:
    """Every scored prediction over time (oldest first), each with the running record so far:
    ``hits``, ``scored``, ``hit_rate`` and ``direction_right`` (count of right directions)."""
    st = statuses if statuses is not None else idea_statuses(store, ideas)
    every = sorted((s for x in st.values() for s in x.scores),
                   key=lambda s: (s.get("at") or 0.0, s["experiment"]))
    out, hits, right = [], 0, 0
    for k, s in enumerate(every, 1):
        hits += bool(s.get("hit"))
        right += bool(s.get("direction_right"))
        out.append({**s, "hits": hits, "scored": k, "hit_rate": hits / k,
                    "direction_right_so_far": right})
    return out


def record_summary(record: list[dict[str, Any]]) -> dict[str, Any]:
    """The record in numbers: hits / scored, hit rate, direction right, and the median miss
    (distance outside the predicted range, over the misses)."""
    misses = [float(s["miss_by"]) for s in record if not s.get("hit")
              and s.get("miss_by") is not None and math.isfinite(float(s["miss_by"]))]
    n = len(record)
    hits = sum(bool(s.get("hit")) for s in record)
    return {"scored": n, "hits": hits, "hit_rate": hits / n if n else None,
            "direction_right": sum(bool(s.get("direction_right")) for s in record),
            "median_miss": statistics.median(misses) if misses else None}


def _finite_or_none(v: Any) -> Any:
    """NaN and infinities as None, so the result is JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite_or_none(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite_or_none(x) for x in v]
    return v
