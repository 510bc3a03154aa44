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
  same proposal, and each new result gives fresh draws.
* **Three candidates** from three different aspects when the scope has them: the best idea,
  then the best of another aspect, then of a third. The best is chosen, unless its declared
  experiment duplicates a stored one (then the next; a re-check may repeat on purpose).
* **Options.** One Optuna study per idea (``airlab.idea.NAME``) in the lab's own database;
  its first trial is the idea as written (declared values inside the ranges), later ones come
  from a seeded TPE sampler inside the idea's declared ``search`` ranges. The sprint reports the
  arm's time-to-target ratio back with :meth:`Researcher.tell`. A trial left running by a
  process that is gone (a crashed sprint) is resumed with the same options, so the restarted
  sprint plans the same runs; a running trial of a live process is left to it.

Novelty (:func:`check_novelty`): a stored experiment with the identical resolved configs (the
same run keys) for the proposed arm; the nearest knowledge-base ideas by text; and "a known
technique under a new name" when the text is at least :func:`novelty_calibration`'s threshold
similar to an idea of another name (the threshold is calibrated on the ideas' aliases).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airlab.agents.knowledge import (
    AREAS,
    Idea,
    Prediction,
    SearchDim,
    filter_ideas,
    idea_spec,
    load_ideas,
    search_space,
    similar_ideas,
)
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
TOPIC_KEEP = 0.6  # --topic keeps ideas at least this share of the best match's similarity
TOPIC_MIN, TOPIC_MAX = 3, 8  # ... and at least / at most this many
MAX_BASE_SKIPS = 5  # suggestions equal to the base told ratio 1 before one is run anyway
STARTUP_TRIALS = 4  # TPE samples at random until an idea has this many finished trials
FOREIGN_STALE_S = 6 * 3600  # a running trial of another host is abandoned after this long
OWNER_ATTR = "airlab_owner"


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Novelty:
    """How new a proposal is: a stored duplicate, the nearest ideas, a known technique."""

    duplicate_of: str | None  # experiment with the identical resolved configs for the arm
    similar: list[tuple[str, float]]  # nearest knowledge-base ideas by text, best first
    known_as: str | None  # a known idea this text describes under another name
    novel: bool

    def to_dict(self) -> dict[str, Any]:
        return {"duplicate_of": self.duplicate_of,
                "similar": [[n, round(float(s), 4)] for n, s in self.similar],
                "known_as": self.known_as, "novel": self.novel}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Novelty:
        return cls(d.get("duplicate_of"), [(str(n), float(s)) for n, s in d.get("similar", [])],
                   d.get("known_as"), bool(d.get("novel")))


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
# Novelty


@dataclass(frozen=True)
class Calibration:
    """The "known technique under a new name" threshold and how it was chosen."""

    threshold: float
    balanced_accuracy: float
    positives: int
    method: str


_CALIBRATIONS: dict[str, Calibration] = {}


def novelty_calibration(ideas: Mapping[str, Idea] | None = None) -> Calibration:
    """Calibrate the similarity above which a text is a known idea under a new name.

    For every alias of every idea, the query is the alias followed by the idea's
    ``why_it_might_not`` (a description of the technique in words that are not part of the
    indexed text, under another of its names). Its similarity to its own idea is a positive;
    its best similarity to any *other* idea is a negative (what a merely related idea scores).
    The threshold is the value with the best balanced accuracy over both (the highest of
    equals). Computed once per knowledge base and process.
    """
    ideas = load_ideas() if ideas is None else ideas
    key = hashlib.sha256(repr(sorted((n, i.text(), i.why_it_might_not)
                                     for n, i in ideas.items())).encode()).hexdigest()
    if key not in _CALIBRATIONS:
        _CALIBRATIONS[key] = _calibration(ideas)
    return _CALIBRATIONS[key]


def _calibration(ideas: Mapping[str, Idea]) -> Calibration:
    pos: list[float] = []
    neg: list[float] = []
    for name in sorted(ideas):
        idea = ideas[name]
        for alias in idea.aliases:
            sims = dict(similar_ideas(f"{alias}. {idea.why_it_might_not}", k=len(ideas),
                                      ideas=ideas))
            pos.append(sims.pop(name, 0.0))
            if sims:
                neg.append(max(sims.values()))
    method = ("alias + why_it_might_not queries: similarity to their own idea (positive) vs "
              "best other idea (negative); threshold of best balanced accuracy")
    if not pos or not neg:  # a knowledge base without aliases: a conservative default
        return Calibration(0.35, math.nan, len(pos), "default (no aliases to calibrate on)")
    best = (-1.0, 0.0)
    for t in sorted(set(pos) | set(neg)):
        acc = 0.5 * (sum(p >= t for p in pos) / len(pos) + sum(n < t for n in neg) / len(neg))
        if acc >= best[0]:
            best = (acc, t)
    return Calibration(round(best[1], 4), round(best[0], 4), len(pos), method)


def find_duplicate(store: Store, spec: ExperimentSpec, arm: str,
                   settings: Settings | None = None) -> str | None:
    """The oldest stored experiment holding a run with every resolved config (run key) that
    ``arm`` of ``spec`` would run, or None. Run keys hash the whole config, seed included, so
    only the same settings at the same seeds match (the arm's name does not matter)."""
    from airlab.plan import plan_runs
    from airlab.store.team import experiments_with_runs

    if arm not in {a.name for a in spec.all_arms}:
        raise AirlabError(f"spec '{spec.name}' has no arm '{arm}'",
                          did_you_mean(arm, [a.name for a in spec.all_arms]))
    keys = {p.run_key for p in plan_runs(spec, settings) if p.arm == arm}
    if not keys:
        return None
    have = experiments_with_runs(store, sorted(keys))
    full = sorted((when, n) for n, (when, k) in have.items() if k >= keys)
    return full[0][1] if full else None


def check_novelty(store: Store, settings: Settings | None, *, text: str,
                  spec: ExperimentSpec | None = None, arm: str | None = None,
                  ideas: Mapping[str, Idea] | None = None) -> Novelty:
    """Is a proposal new? ``text`` describes it; ``spec`` and ``arm`` (default: the spec's first
    arm) are what it would run, checked against the store's runs; ``arm`` also names it, so a
    text nearest its own idea is not "another name".

    ``known_as`` is the most similar idea when its similarity reaches the calibrated threshold
    (:func:`novelty_calibration`) and its name is not ``arm``. ``similar`` leaves ``arm`` out.
    """
    ideas = load_ideas() if ideas is None else ideas
    duplicate = None
    if spec is not None:
        if arm is None and not spec.arms:
            raise AirlabError(f"spec '{spec.name}' has no arm to check", "add an arm or name one")
        name = arm if arm is not None else spec.arms[0].name
        duplicate = find_duplicate(store, spec, name, settings)
    sims = similar_ideas(text, k=6, ideas=ideas)
    similar = [(n, round(s, 4)) for n, s in sims if n != arm][:5]
    cal = novelty_calibration(ideas)
    known = sims[0][0] if sims and sims[0][1] >= cal.threshold and sims[0][0] != arm else None
    return Novelty(duplicate, similar, known, duplicate is None and known is None)


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


def _mix(*parts: Any) -> int:
    """A stable 32-bit seed from parts (Python's hash() changes between processes; Optuna's
    samplers take seeds below 2**32)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def study_name(idea: str) -> str:
    return f"airlab.idea.{idea}"


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
        self._storage: Any = None

    # -- choosing ------------------------------------------------------------------------------

    def propose(self, *, topic: str | None = None, area: str | None = None,
                idea: str | None = None, exclude: Collection[str] = (),
                is_base: Callable[[str, Mapping[str, Any]], bool] | None = None) -> Proposal:
        """Three candidates from different aspects and the chosen one, with its options.

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

        pool, recheck, notes = scope(self.ideas, statuses, area=area, idea=idea,
                                     exclude=exclude)
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
        options, trial, resumed, tuned_note = self._tune(chosen_name, recheck, is_base)
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
        extra = {"experiments_seen": n_seen,
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

    # -- tuning ----------------------------------------------------------------------------------

    def _study(self, name: str, seed: int | None = None) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if self._storage is None:
            url = getattr(self.store, "url", None) or (self.settings.db_url if self.settings
                                                       else None)
            if not url:
                raise AirlabError("the Researcher needs the lab's database URL to keep its "
                                  "Optuna trials", "pass a Store opened on a URL")
            kwargs: dict[str, Any] = {}
            if url.startswith("sqlite"):
                kwargs = {"connect_args": {"timeout": 30}}  # wait for the store's writers
            try:
                self._storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            except Exception as e:  # noqa: BLE001 - any database error is one user message
                raise AirlabError(f"cannot keep Optuna trials in '{_safe(url)}': "
                                  f"{str(e).splitlines()[0]}",
                                  "check the database is writable") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS,
                                                 constant_liar=True)
        return optuna.create_study(study_name=study_name(name), storage=self._storage,
                                   direction="maximize", sampler=sampler, load_if_exists=True)

    def _tune(self, name: str, recheck: bool,
              is_base: Callable[[str, Mapping[str, Any]], bool] | None = None
              ) -> tuple[dict[str, Any], int | None, bool, str]:
        """Options for the idea's arm: (options, trial number, resumed, a sentence)."""
        space = search_space(self.ideas[name])
        if not space:
            return {}, None, False, "nothing to tune: the idea declares no search ranges"
        if getattr(self.store, "readonly", False):
            return {}, None, False, "not tuned: the store is read-only"
        from optuna.trial import TrialState

        study = self._study(name)
        trials = study.get_trials(deepcopy=False)
        me = _owner()
        running = [t for t in trials if t.state == TrialState.RUNNING]
        stale = [t for t in running if _abandoned(t, me)]
        resumable = [t for t in stale if set(t.params) == set(space)]
        for t in stale:
            if not resumable or t is not resumable[0]:
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        if resumable:
            t = resumable[0]
            _set_owner(study, t, me)
            return (dict(t.params), t.number, True,
                    f"resumed Optuna trial {t.number} of {study_name(name)} (left running, never "
                    f"told a result) with the same options {_show(t.params)}")
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        how = "sampled by TPE (seeded) inside the declared ranges"
        if recheck and done:
            best = max(done, key=lambda t: t.value if t.value is not None else -math.inf)
            study.enqueue_trial(dict(best.params))
            how = f"the best trial so far (#{best.number}, ratio {best.value:.3g}) again"
        elif not trials:
            first = self._declared(name, space)
            if first:
                study.enqueue_trial(first)
                how = "the idea's declared values (the first trial tests it as written)"
        skipped = 0
        while True:
            # Reseeded per trial: the same seed and store give the same suggestion, and each
            # new trial of a study gets a fresh stream rather than the first trial's values.
            study = self._study(name, seed=_mix(self.seed, name, len(trials) + skipped))
            trial = study.ask()
            options = {opt: dim.suggest(trial, opt) for opt, dim in sorted(space.items())}
            if is_base is None or recheck or skipped >= MAX_BASE_SKIPS \
                    or not is_base(name, options):
                break
            trial.set_user_attr("airlab_note", "the configuration tested against: ratio 1")
            study.tell(trial, 1.0)
            skipped += 1
        if skipped:
            how += (f"; {skipped} suggestion(s) equal to the configuration it is tested against "
                    f"were told ratio 1 and not run")
        trial.set_user_attr(OWNER_ATTR, me)
        trial.set_user_attr("airlab_seed", self.seed)
        trial.set_user_attr("airlab_started", time.time())
        return (options, trial.number, False,
                f"Optuna trial {trial.number} of {study_name(name)}: {_show(options)}, {how}")

    def _declared(self, name: str, space: Mapping[str, SearchDim]) -> dict[str, Any]:
        """The arm's values of the searched options as the idea declares them, where inside
        the ranges (an option the idea leaves at its default is read from the resolved run)."""
        from airlab.plan import resolve

        idea = self.ideas[name]
        spec = idea_spec(idea)
        arm = idea.arm
        try:
            cfg = resolve(workload=spec.workload, preset=spec.preset, dataset=spec.dataset,
                          budget=spec.budget, seed=spec.seeds[0], use=arm.use,
                          options={**spec.options, **arm.options}, settings=self.settings)
        except AirlabError:
            return {}
        from airlab.run.workloads import get_workload

        model = {**get_workload(cfg.workload).model_defaults(cfg.preset), **cfg.model}
        out: dict[str, Any] = {}
        for opt, dim in space.items():
            v: Any = arm.options.get(opt)
            if v is None:
                v = cfg.options.get(opt, getattr(cfg, opt, model.get(opt)))
            if v is not None and _inside(dim, v):
                out[opt] = int(v) if dim.is_int else v
        return out if len(out) == len(space) else {}

    def tell(self, proposal: Proposal, value: float | None) -> None:
        """Report the sprint's outcome for the proposal's trial: the arm's time-to-target ratio
        (higher is better), or None when the sprint failed (the trial is marked FAIL). Telling
        a trial that is already finished changes nothing."""
        if proposal.trial is None:
            return
        from optuna.trial import TrialState

        study = self._study(proposal.chosen.idea)
        if value is None or not math.isfinite(float(value)):
            study.tell(proposal.trial, state=TrialState.FAIL, skip_if_finished=True)
        else:
            study.tell(proposal.trial, float(value), skip_if_finished=True)


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


def _inside(dim: SearchDim, v: Any) -> bool:
    if dim.choices is not None:
        return any(v == c for c in dim.choices)
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    if dim.is_int and float(v) != int(v):
        return False
    return float(dim.low) <= float(v) <= float(dim.high)  # type: ignore[arg-type]


def _owner() -> str:
    from airlab.store import owner_id

    return owner_id()


def _abandoned(trial: Any, me: str) -> bool:
    """A running trial is abandoned when its process is gone (or is this one: a sprint of this
    process that never told its result); another host's trial only after a long time."""
    from airlab.store.team import owner_gone

    owner = trial.user_attrs.get(OWNER_ATTR)
    if not owner:
        return True  # the process stopped between asking and recording itself
    if owner == me:
        return True
    gone = owner_gone(owner)
    if gone is not None:
        return gone
    started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return time.time() - started > FOREIGN_STALE_S


def _set_owner(study: Any, trial: Any, owner: str) -> None:
    import optuna

    optuna.trial.Trial(study, trial._trial_id).set_user_attr(OWNER_ATTR, owner)


def _show(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in sorted(options.items()))


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for a message
        return "<database>"
