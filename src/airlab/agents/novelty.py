"""Novelty: is a proposal new? A stored experiment with the identical resolved configs (the same
run keys) for the proposed arm; the nearest knowledge-base ideas by text; and "a known
technique under a new name" when the text is at least :func:`novelty_calibration`'s threshold
similar to an idea of another name (the threshold is calibrated on the ideas' aliases).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airlab.agents.knowledge import Idea, load_ideas, similar_ideas
from airlab.errors import AirlabError, did_you_mean

if TYPE_CHECKING:
    from airlab.settings import Settings
    from airlab.spec import ExperimentSpec
    from airlab.store import Store


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
