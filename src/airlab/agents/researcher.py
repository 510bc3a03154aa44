"""The offline Researcher: proposes three ideas across aspects, picks one by expected value,
tunes its options with Optuna, and checks each proposal for novelty.

How it chooses (no LLM):

* **Which ideas may be proposed.** Runnable ideas only (a ``needs_code`` idea waits for the
  Coder), never one whose experiment is running, and never a finished one (better, worse or
  equivalent) while an open idea (untested or undecided) is left in scope; then finished ones
  are re-checked (``recheck``). ``idea=`` names one (a finished idea is then re-checked),
  ``area=`` restricts, ``topic=`` keeps the ideas whose text is nearest the topic.
* **Expected value.** A seeded Thompson-sampling bandit. Each idea's chance of coming out
  better is a Beta belief: a prior from its tier (:data:`TIER_PRIOR`, worth :data:`PRIOR_WEIGHT`
  observations), plus the outcomes of the other ideas of its area (an area-level prior they
  share, each worth :data:`AREA_WEIGHT`), plus its own outcome. A draw from that belief times
  the idea's gain (:func:`gain`: its predicted effect in one unit, the log of a training
  speed-up, blended with what was observed) is its expected value. The draws come from
  ``seed`` and the number of stored experiments, so the same seed and the same store give the
  same proposal, and each new result gives fresh draws. An idea whose win did not transfer
  (``discount``: the loop's transfer sprints) has its expected value discounted
  (:data:`TRANSFER_DISCOUNT`), and the reasons say so.
* **Three candidates** from three different aspects when the scope has them: the best idea,
  then the best of another aspect, then of a third. The best is chosen, unless its declared
  experiment duplicates a stored one (then the next; a re-check may repeat on purpose).
* **Options.** One Optuna study per idea (``airlab.idea.NAME``) in the lab's own database;
  its first trial is the idea as written (declared values inside the ranges), later ones come
  from a seeded TPE sampler inside the idea's declared ``search`` ranges. The sprint reports the
  arm's time-to-target ratio back with :meth:`Researcher.tell`. A trial left running by a
  process that is gone (a crashed sprint) is resumed with the same options, so the restarted
  sprint plans the same runs; a running trial of a live process is left to it.

Novelty: ``agents.novelty`` (the duplicate check and "a known technique under a new name");
tuning: ``agents.tuning`` (one Optuna study per idea).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airlab.agents.knowledge import (
    AREAS,
    Idea,
    Prediction,
    filter_ideas,
    idea_spec,
    load_ideas,
    search_space,
    similar_ideas,
)
from airlab.agents.novelty import Novelty, check_novelty
from airlab.agents.tuning import Tuner
from airlab.errors import AirlabError, did_you_mean

if TYPE_CHECKING:
    from airlab.agents.status import IdeaStatus
    from airlab.settings import Settings
    from airlab.spec import ExperimentSpec
    from airlab.store import Store

log = logging.getLogger(__name__)

FINISHED = ("better", "worse", "equivalent")  # decided: proposed again only as a re-check
# Prior chance that an idea of each tier comes out better (tier 1: likely, large, cheap), and
# how many observations that prior is worth.
TIER_PRIOR = {1: 0.6, 2: 0.45, 3: 0.3}
PRIOR_WEIGHT = 2.0
AREA_WEIGHT = 0.5  # each outcome of another idea of the same area, as part of an observation
# Outcome of an idea's latest experiment as (successes, failures) of "it came out better".
# An equivalent result is a failure to gain; an undecided one is half an observation.
OUTCOMES = {"better": (1.0, 0.0), "worse": (0.0, 1.0), "equivalent": (0.0, 1.0),
            "undecided": (0.25, 0.25)}
# Gains are in ln(training speed-up). On charlm tiny the baseline's loss curve is flat enough
# late in training that ending 0.1 nats lower is roughly reaching its final loss 1.35x sooner
# (ln 1.35 = 0.3): 3 per nat. Only the order of ideas depends on it.
LOSS_PER_NAT = 3.0
# Cost metrics: a ratio arm / reference; lower is cheaper. Time and compute count fully,
# memory and model size (cheaper to keep, not to train) at a tenth.
COST_WEIGHT = {"train_seconds": 1.0, "flops": 1.0, "energy_kwh_est": 1.0,
               "peak_mem_mb": 0.1, "model_bytes": 0.1}
QUALITY = {"val_loss": -LOSS_PER_NAT, "train_loss": -LOSS_PER_NAT,
           "val_bpc": -LOSS_PER_NAT * math.log(2), "val_acc": LOSS_PER_NAT}
# An idea whose win did not hold beyond where it was selected (its recipe failed a transfer:
# 4x the budget, another dataset) keeps this share of a positive expected value (a negative
# one is divided by it): it can still be chosen, after the ideas that did not fail one.
TRANSFER_DISCOUNT = 0.5
TOPIC_KEEP = 0.6  # --topic keeps ideas at least this share of the best match's similarity
TOPIC_MIN, TOPIC_MAX = 3, 8  # ... and at least / at most this many


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Candidate:
    idea: str
    aspect: str
    area: str
    expected_value: float  # posterior draw x gain (ln speed-up)
    reasons: list[str]
    novelty: Novelty

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["novelty"] = self.novelty.to_dict()
        d["expected_value"] = _num(self.expected_value)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Candidate:
        return cls(d["idea"], d["aspect"], d["area"], float(d["expected_value"] or 0.0),
                   list(d.get("reasons", [])), Novelty.from_dict(d.get("novelty", {})))


@dataclass(frozen=True)
class Proposal:
    candidates: list[Candidate]  # three, from three aspects when the scope has them
    chosen: Candidate
    reasons: str  # why the chosen one over the others
    options: dict[str, Any]  # the idea arm's tuned option values ({} when nothing to tune)
    trial: int | None  # Optuna trial number (None when nothing to tune)
    recheck: bool  # the chosen idea was already decided: this re-checks it
    seed: int = 0
    resumed: bool = False  # the trial was left running by a stopped process and is reused
    extra: dict[str, Any] = field(default_factory=dict)  # bandit facts, for the record

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (the sprint stores it)."""
        return {"candidates": [c.to_dict() for c in self.candidates],
                "chosen": self.chosen.idea, "reasons": self.reasons,
                "options": dict(self.options), "trial": self.trial, "recheck": self.recheck,
                "seed": self.seed, "resumed": self.resumed, "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Proposal:
        cands = [Candidate.from_dict(c) for c in d["candidates"]]
        chosen = next(c for c in cands if c.idea == d["chosen"])
        return cls(cands, chosen, d["reasons"], dict(d.get("options") or {}), d.get("trial"),
                   bool(d.get("recheck")), int(d.get("seed", 0)), bool(d.get("resumed")),
                   dict(d.get("extra") or {}))


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


# ---------------------------------------------------------------------------------------------
# Gains and beliefs


def gain(prediction: Prediction, value: float | None = None) -> float:
    """An effect in the prediction's metric and kind (default: its expected value) as a gain in
    ln(training speed-up): positive helps, negative hurts, 0 for a metric that is neither
    quality nor cost."""
    v = prediction.expected if value is None else float(value)
    if not math.isfinite(v):
        return 0.0
    m = prediction.metric
    if prediction.kind == "ratio":
        if v <= 0:
            return 0.0
        if m == "time_to_target":
            return math.log(v)  # the speed-up itself
        if m in COST_WEIGHT:
            return -COST_WEIGHT[m] * math.log(v)
        if m in QUALITY:  # arm / reference of a quality metric
            return QUALITY[m] * (v - 1.0)
        return 0.0
    return QUALITY.get(m, 0.0) * v


@dataclass(frozen=True)
class Belief:
    """What the bandit believes about one idea."""

    alpha: float  # Beta belief that the idea comes out better
    beta: float
    gain: float  # predicted gain blended with observed ones (ln speed-up)
    predicted_gain: float
    observed_gain: float | None
    area_better: float  # outcomes of the area's other ideas: successes / observations
    area_seen: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


def beliefs(ideas: Mapping[str, Idea], statuses: Mapping[str, IdeaStatus]
            ) -> dict[str, Belief]:
    """Each idea's belief from its tier, its area's outcomes and its own (name order)."""
    own: dict[str, tuple[float, float]] = {}
    area_sum: dict[str, list[float]] = {}
    for name, idea in ideas.items():
        st = statuses.get(name)
        s, f = OUTCOMES.get(st.status, (0.0, 0.0)) if st is not None else (0.0, 0.0)
        own[name] = (s, f)
        acc = area_sum.setdefault(idea.area, [0.0, 0.0])
        acc[0] += s
        acc[1] += f
    out = {}
    for name in sorted(ideas):
        idea = ideas[name]
        s, f = own[name]
        area_s, area_f = area_sum[idea.area][0] - s, area_sum[idea.area][1] - f
        p = TIER_PRIOR.get(idea.tier, 0.3)
        alpha = PRIOR_WEIGHT * p + AREA_WEIGHT * area_s + s
        beta = PRIOR_WEIGHT * (1 - p) + AREA_WEIGHT * area_f + f
        predicted = gain(idea.prediction)
        observed, n = _observed_gain(idea, statuses.get(name))
        blended = predicted if observed is None else (predicted + n * observed) / (1 + n)
        out[name] = Belief(alpha, beta, blended, predicted, observed, area_s, area_s + area_f)
    return out


def _observed_gain(idea: Idea, st: IdeaStatus | None) -> tuple[float | None, int]:
    """The gain the idea's experiments showed (mean over scored ones), and how many."""
    if st is None:
        return None, 0
    seen = [gain(idea.prediction, s["observed"]) for s in st.scores
            if s.get("observed") is not None and math.isfinite(float(s["observed"]))]
    if not seen and st.ratio is not None and st.ratio > 0:
        seen = [math.log(st.ratio)]
    return (sum(seen) / len(seen), len(seen)) if seen else (None, 0)


# ---------------------------------------------------------------------------------------------
# Scope


def runnable(ideas: Mapping[str, Idea], statuses: Mapping[str, IdeaStatus], *,
             area: str | None = None, exclude: Collection[str] = ()) -> list[str]:
    """Ideas that could run now: no code needed, not running, not excluded (name order)."""
    return [i.name for i in filter_ideas(ideas, area=area, runnable=True)
            if i.name not in exclude and _status(statuses, i.name) != "running"]


def scope(ideas: Mapping[str, Idea], statuses: Mapping[str, IdeaStatus], *,
          area: str | None = None, idea: str | None = None, exclude: Collection[str] = ()
          ) -> tuple[list[str], bool, list[str]]:
    """The ideas that may be proposed, whether they are re-checks, and notes on why.

    Open ideas (untested, undecided) first; decided ones (better, worse, equivalent) only when
    no open one is left in scope, or when ``idea`` names one."""
    if idea is not None:
        if idea not in ideas:
            raise AirlabError(f"unknown idea '{idea}'", did_you_mean(idea, ideas))
        it, status = ideas[idea], _status(statuses, idea)
        if it.needs_code:
            raise AirlabError(f"idea '{idea}' needs code: no switch implements it yet",
                              f"the Coder writes --use_{it.implementation.switch} first")
        if status == "running":
            raise AirlabError(f"idea '{idea}' is running (experiment "
                              f"{statuses[idea].experiments[-1]})",
                              "resume that sprint or wait for it")
        return [idea], status in FINISHED, []
    can = runnable(ideas, statuses, area=area, exclude=exclude)
    if not can:
        where = f"area '{area}'" if area else "the knowledge base"
        raise AirlabError(f"no idea of {where} can be proposed: each needs code, is running "
                          "or was excluded", "try another --area, or let the Coder implement one")
    open_ = [n for n in can if _status(statuses, n) not in FINISHED]
    if open_:
        return open_, False, []
    return can, True, ["every runnable idea in scope is decided: re-checking one"]


def _status(statuses: Mapping[str, IdeaStatus], name: str) -> str:
    st = statuses.get(name)
    return st.status if st is not None else "untested"


# ---------------------------------------------------------------------------------------------
# The Researcher


class Researcher:
    """Proposes the next idea to test (see the module docstring for how it chooses)."""

    def __init__(self, store: Store, settings: Settings | None, *, seed: int,
                 ideas: Mapping[str, Idea] | None = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise AirlabError(f"seed {seed!r} must be a whole number >= 0", "e.g. --seed 0")
        self.store = store
        self.settings = settings
        self.seed = seed
        self.ideas: Mapping[str, Idea] = load_ideas() if ideas is None else ideas
        self.tuner = Tuner(store, settings, seed=seed, ideas=self.ideas)

    # -- choosing ------------------------------------------------------------------------------

    def propose(self, *, topic: str | None = None, area: str | None = None,
                idea: str | None = None, exclude: Collection[str] = (),
                is_base: Callable[[str, Mapping[str, Any]], bool] | None = None,
                discount: Mapping[str, str] | None = None, retune: bool = False) -> Proposal:
        """Three candidates from different aspects and the chosen one, with its options.

        ``retune``: the ideas in scope were all tested on the current recipe; a decided one
        gets a new sampled trial of its study rather than its best trial again.

        ``discount``: idea -> why its win did not transfer; its expected value is discounted.

        ``is_base(idea, options)``: whether the idea with these options is the configuration it
        is tested against (a tuned idea on a recipe that already holds its values); such a
        suggestion is told to its study as ratio 1, which it is by definition, and not run."""
        from airlab.agents.status import idea_statuses

        if idea is not None and idea not in self.ideas:
            raise AirlabError(f"unknown idea '{idea}'", did_you_mean(idea, self.ideas))
        if area is not None and area not in AREAS:
            raise AirlabError(f"unknown area '{area}'", did_you_mean(area, AREAS))
        if topic is not None and not topic.strip():
            raise AirlabError("--topic is empty", "describe what to work on, e.g. 'attention'")
        statuses = idea_statuses(self.store, self.ideas)
        belief = beliefs(self.ideas, statuses)
        n_seen = sum(len(s.experiments) for s in statuses.values())
        rng = _rng(self.seed, n_seen)
        # One draw per idea in name order, whatever the scope: a filter does not shift draws.
        draws = {n: float(rng.beta(belief[n].alpha, belief[n].beta)) for n in sorted(belief)}
        ev = {n: draws[n] * belief[n].gain for n in draws}
        for n in discount or {}:
            if n in ev:
                ev[n] = ev[n] * TRANSFER_DISCOUNT if ev[n] > 0 else ev[n] / TRANSFER_DISCOUNT

        pool, recheck, notes = scope(self.ideas, statuses, area=area, idea=idea,
                                     exclude=exclude)
        if retune:
            notes.append("every idea was tested on the current recipe: another trial of one "
                         "with search ranges")
        discounted = {n: why for n, why in (discount or {}).items() if n in pool}
        notes += [f"discounted {n} (expected value x{TRANSFER_DISCOUNT:g}): its win did not "
                  f"transfer ({why})" for n, why in sorted(discounted.items())]
        topic_sim: dict[str, float] = {}
        if topic is not None:
            pool, topic_sim = self._steer(pool, topic)
            notes.append(f"topic '{topic.strip()}' kept {', '.join(pool)}")
        ranked = sorted(pool, key=lambda n: (-ev[n], n))
        if idea is not None:  # named: it is chosen; the others are the best of the rest
            rest = runnable(self.ideas, statuses, area=area, exclude=exclude)
            others = sorted((n for n in rest if n != idea and _status(statuses, n) not in FINISHED),
                            key=lambda n: (-ev[n], n))
            ranked = [idea, *others]

        chosen_name, skipped = ranked[0], []
        novelty: dict[str, Novelty] = {}
        if idea is None and not recheck:
            # Never spend a sprint on runs already stored for another experiment: take the next
            # idea. (An idea with search ranges gets new options; an undecided idea's own runs
            # are where more seeds are added.)
            for n in ranked[:6]:
                novelty[n] = self._novelty(n)
                if (novelty[n].duplicate_of is None or search_space(self.ideas[n])
                        or _status(statuses, n) != "untested"):
                    chosen_name = n
                    break
                skipped.append(n)
            else:  # all of them are stored: the best one is chosen, and said to be a repeat
                chosen_name, skipped = ranked[0], []
        picked = _three(ranked, chosen_name, self.ideas)
        options, trial, resumed, tuned_note = self.tuner.tune(
            chosen_name, recheck and not retune, is_base)
        cands = []
        for n in picked:
            nov = novelty.get(n) if n != chosen_name or not options else None
            if nov is None:
                nov = self._novelty(n, options if n == chosen_name else None)
            cands.append(self._candidate(n, statuses[n], belief[n], draws[n], ev[n], nov,
                                         topic_sim.get(n)))
        chosen = next(c for c in cands if c.idea == chosen_name)
        recheck = recheck or statuses[chosen_name].status in FINISHED
        reasons = self._why(chosen, [c for c in cands if c is not chosen], idea=idea,
                            recheck=recheck, skipped=skipped, novelty=novelty,
                            tuned=tuned_note, notes=notes)
        extra = {"experiments_seen": n_seen, "discounted": discounted,
                 "beliefs": {n: {"mean": round(belief[n].mean, 4), "draw": round(draws[n], 4),
                                 "gain": round(belief[n].gain, 4),
                                 "expected_value": round(ev[n], 4)} for n in picked}}
        return Proposal(cands, chosen, reasons, options, trial, recheck, self.seed, resumed,
                        extra)

    def _steer(self, pool: list[str], topic: str) -> tuple[list[str], dict[str, float]]:
        sims = dict(similar_ideas(topic, k=len(self.ideas), ideas=self.ideas))
        order = sorted(pool, key=lambda n: (-sims.get(n, 0.0), n))
        best = sims.get(order[0], 0.0)
        keep = [n for i, n in enumerate(order)
                if i < TOPIC_MIN or (i < TOPIC_MAX and sims.get(n, 0.0) >= TOPIC_KEEP * best)]
        return keep, {n: sims.get(n, 0.0) for n in keep}

    def _spec(self, name: str, options: Mapping[str, Any] | None = None) -> ExperimentSpec:
        """The idea's declared experiment, its arm with the tuned options."""
        spec = idea_spec(self.ideas[name])
        if not options:
            return spec
        arms = [a.model_copy(update={"options": {**a.options, **options}}) if a.name == name
                else a for a in spec.arms]
        return spec.model_copy(update={"arms": arms})

    def _novelty(self, name: str, options: Mapping[str, Any] | None = None) -> Novelty:
        text = self.ideas[name].text()
        try:
            return check_novelty(self.store, self.settings, text=text,
                                 spec=self._spec(name, options), arm=name, ideas=self.ideas)
        except AirlabError as e:  # an idea whose experiment does not plan: text only
            log.warning("idea %s: no duplicate check: %s", name, e)
            return check_novelty(self.store, self.settings, text=text, arm=name,
                                 ideas=self.ideas)

    def _candidate(self, name: str, st: IdeaStatus, b: Belief, draw: float, ev: float,
                   nov: Novelty, topic_sim: float | None) -> Candidate:
        idea = self.ideas[name]
        why = [f"{idea.title} (tier {idea.tier}, aspect {idea.aspect}, area {idea.area})",
               f"status {st.status}" + (f" after {len(st.experiments)} experiment(s)"
                                        if st.experiments else ""),
               f"predicted: {idea.prediction.text()} = gain {b.predicted_gain:+.3f} ln speed-up"
               f" (x{math.exp(b.predicted_gain):.2f})"]
        if b.observed_gain is not None:
            why.append(f"observed gain {b.observed_gain:+.3f}; blended gain {b.gain:+.3f}")
        why.append(f"P(better) belief mean {b.mean:.2f} (tier prior {TIER_PRIOR.get(idea.tier)}"
                   f", area {b.area_better:g} better of {b.area_seen:g} observed); "
                   f"draw {draw:.2f} x gain {b.gain:+.3f} = expected value {ev:+.3f}")
        if topic_sim is not None:
            why.append(f"topic similarity {topic_sim:.2f}")
        if nov.duplicate_of:
            why.append(f"its declared experiment is already stored as '{nov.duplicate_of}'")
        if nov.known_as:
            why.append(f"text reads as known idea '{nov.known_as}'")
        if nov.similar:
            why.append("nearest ideas: " + ", ".join(f"{n} {s:.2f}" for n, s in nov.similar[:3]))
        return Candidate(name, idea.aspect, idea.area, ev, why, nov)

    def _why(self, chosen: Candidate, others: list[Candidate], *, idea: str | None,
             recheck: bool, skipped: list[str], novelty: Mapping[str, Novelty], tuned: str,
             notes: list[str]) -> str:
        parts = []
        if idea is not None:
            parts.append(f"'{idea}' was named (--idea)")
        else:
            vs = "; ".join(f"{c.idea} ({c.aspect}) {c.expected_value:+.3f}" for c in others)
            parts.append(f"'{chosen.idea}' ({chosen.aspect}) has the highest expected value, "
                         f"{chosen.expected_value:+.3f} ln speed-up"
                         + (f", over {vs}" if vs else ""))
        for n in skipped:
            parts.append(f"passed over '{n}': its experiment is already stored as "
                         f"'{novelty[n].duplicate_of}'")
        if recheck:
            parts.append("this re-checks an idea already decided (allowed: said so)")
        if chosen.novelty.duplicate_of and not skipped:
            parts.append(f"identical runs are stored in '{chosen.novelty.duplicate_of}'")
        parts.extend(notes)
        parts.append(tuned)
        return ". ".join(p[0].upper() + p[1:] for p in parts if p) + "."

    def tell(self, proposal: Proposal, value: float | None) -> None:
        """The sprint's outcome back to the proposal's Optuna trial (``Tuner.tell``)."""
        self.tuner.tell(proposal.chosen.idea, proposal.trial, value)


# ---------------------------------------------------------------------------------------------
# Helpers


def _rng(seed: int, n_seen: int) -> Any:
    import numpy as np

    return np.random.default_rng([seed, n_seen])


def _three(ranked: list[str], chosen: str, ideas: Mapping[str, Idea]) -> list[str]:
    """The chosen idea, then the best of other aspects, then the best of the rest."""
    picked = [chosen]
    for n in ranked:
        if len(picked) == 3:
            break
        if n not in picked and ideas[n].aspect not in {ideas[p].aspect for p in picked}:
            picked.append(n)
    for n in ranked:
        if len(picked) == 3:
            break
        if n not in picked:
            picked.append(n)
    return picked
