"""The knowledge base: research ideas as data, their schema, loader and queries.

Each idea lives in ``airlab/agents/knowledge/<area>.yaml`` (one file per research area, a list
under ``ideas:``; the file's ``area`` is every idea's default). An idea states what it is (pitch,
mathematics, why it might work and why not), how to run it (``implementation``: the registered
switches and options, with the ranges a tuner may search, or ``needs_code`` with a sketch for
the Coder), the smallest experiment that tests it, and a falsifiable ``prediction`` scored
after the runs.

Conventions the roles rely on:

* The idea's arm is the baseline plus the idea: ``baseline.use + implementation.use`` with
  ``{**baseline.options, **implementation.options}``. An ablation arm is a delta over the
  baseline too; when none is declared and the idea sets both switches and options, the
  ablation is the switches alone (their defaults), so a win can be told from the tuning.
* A prediction is about ``metric`` of the idea's arm against the baseline (or the ablation,
  ``against: ablation``). ``kind: delta`` is arm - reference in the metric's units;
  ``kind: ratio`` is arm / reference, except for ``time_to_target`` where the ratio is the
  speed-up, reference cost / arm cost (as ``airlab.analysis.efficiency`` reports it).
  ``direction`` is the predicted direction of the change, and ``expected`` must lie on that
  side of no change, inside ``[low, high]``.
* Every idea has one of the innovator's five aspects. Ideas outside them are filed by their
  mechanism: MLP shapes and numerics under normalization_stability (gradient flow, numerical
  range), compression, batch size and training-time procedures under training_dynamics.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from airlab.agents.ideas import (
    AREAS,
    ASPECTS,
    TIERS,
    ArmDelta,
    Idea,
    Implementation,
    MinimumExperiment,
    Prediction,
    SearchDim,
)
from airlab.errors import AirlabError, did_you_mean
from airlab.spec import line_for, parse_yaml, printable

if TYPE_CHECKING:
    from airlab.plan import RunPlan
    from airlab.settings import Settings
    from airlab.spec import ExperimentSpec

__all__ = ["AREAS", "ASPECTS", "TIERS", "ArmDelta", "Idea", "Implementation",
           "MinimumExperiment", "Prediction", "SearchDim", "check_idea", "filter_ideas",
           "get_idea", "idea_spec", "knowledge_dir", "lab_ideas", "load_ideas", "read_idea_files",
           "read_ideas", "search_space", "similar_ideas", "write_idea"]


# ---------------------------------------------------------------------------------------------
# Loading


def knowledge_dir() -> Path:
    return Path(str(resources.files("airlab") / "agents" / "knowledge"))


def _where(source: str, lines: dict[tuple[Any, ...], int], loc: Sequence[Any]) -> str:
    line = line_for(lines, loc)
    return f"{source}:{line}" if line else source


def _field(loc: Sequence[Any]) -> str:
    return "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc).lstrip(".")


def _read_file(path: Path) -> list[tuple[Idea, str]]:
    source = f"knowledge/{path.name}" if path.parent == knowledge_dir() else str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise AirlabError(f"{source}: cannot read: {e}", "save the file as UTF-8 YAML") from None
    data, lines = parse_yaml(text, source)
    if not isinstance(data, dict) or not isinstance(data.get("ideas"), list):
        raise AirlabError(f"{source}: an ideas file is a mapping with a list under 'ideas'",
                          "e.g. area: optimizers / ideas: [- name: muon ...]")
    extra = sorted(set(data) - {"area", "ideas"})
    if extra:
        raise AirlabError(f"{_where(source, lines, (extra[0],))}: unknown field '{extra[0]}'",
                          "an ideas file has only area and ideas")
    area = data.get("area")
    out = []
    for i, raw in enumerate(data["ideas"]):
        if not isinstance(raw, dict):
            raise AirlabError(f"{_where(source, lines, ('ideas', i))}: ideas[{i}] is not a "
                              f"mapping", "each idea is a mapping of fields (name, title, ...)")
        if area is not None:
            raw = {"area": area, **raw}
        try:
            idea = Idea.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ["ideas", i, *err["loc"]]
            name = raw.get("name", f"#{i}")
            if err["type"] == "extra_forbidden":
                bad = str(loc[-1])
                fields = _fields_at(loc[2:-1])
                raise AirlabError(f"{_where(source, lines, loc)}: idea '{printable(name)}': "
                                  f"unknown field '{_field(loc[2:])}'",
                                  did_you_mean(bad, fields)) from None
            msg = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
            raise AirlabError(f"{_where(source, lines, loc)}: idea '{printable(name)}': "
                              f"{_field(loc[2:]) or 'idea'}: {msg}",
                              "see the schema in airlab/agents/knowledge.py") from None
        out.append((idea, f"{_where(source, lines, ('ideas', i))}"))
    return out


def _fields_at(loc: Sequence[Any]) -> list[str]:
    models: dict[str, type[BaseModel]] = {
        "implementation": Implementation, "minimum_experiment": MinimumExperiment,
        "prediction": Prediction, "baseline": ArmDelta, "ablation": ArmDelta}
    model: type[BaseModel] = Idea
    for part in loc:
        if isinstance(part, str) and part in models:
            model = models[part]
        elif isinstance(part, str) and model is Implementation and part == "search":
            model = SearchDim
    return list(model.model_fields)


def read_idea_files(folder: Path | str) -> dict[str, tuple[Idea, str]]:
    """Every ``*.yaml`` ideas file in ``folder`` (sorted): {name: (Idea, file:line)}. Checks
    each idea's schema and that names are unique; errors are one AirlabError naming the file,
    line and field."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AirlabError(f"ideas folder '{folder}' does not exist",
                          "give a folder of ideas files (*.yaml)")
    out: dict[str, tuple[Idea, str]] = {}
    for path in sorted(folder.glob("*.yaml")):
        for idea, at in _read_file(path):
            if idea.name in out:
                raise AirlabError(f"{at}: idea name '{idea.name}' is used twice (first at "
                                  f"{out[idea.name][1]})", "give each idea its own name")
            out[idea.name] = (idea, at)
    return out


def _check_related(found: Mapping[str, tuple[Idea, str]]) -> None:
    for name, (idea, at) in found.items():
        for other in idea.related:
            if other not in found:
                raise AirlabError(f"{at}: idea '{name}': related: no idea '{other}'",
                                  did_you_mean(other, found))


def read_ideas(folder: Path | str) -> dict[str, Idea]:
    """Load every ``*.yaml`` ideas file in ``folder`` (sorted): {name: Idea}.

    Checks each idea's schema, that names are unique across files and that ``related`` names
    ideas that exist. Errors are one AirlabError naming the file, line and field.
    """
    found = read_idea_files(folder)
    _check_related(found)
    return {n: i for n, (i, _) in found.items()}


@functools.cache
def _builtin() -> dict[str, tuple[Idea, str]]:
    found = read_idea_files(knowledge_dir())
    _check_related(found)
    return found


@functools.cache
def load_ideas() -> dict[str, Idea]:
    """The package's knowledge base, {name: Idea} (read once per process).

    Callers must not mutate the returned ideas: the same objects are shared."""
    return {n: i for n, (i, _) in _builtin().items()}


MODEL_IDEAS = "model"  # <home>/ideas/model/: the ideas the language model proposed


def lab_ideas(home: Path | None = None, extra: Sequence[Path | str] = (), *,
              model: bool = True) -> tuple[dict[str, Idea], dict[str, str]]:
    """The ideas a lab works from and where each was read: the knowledge base, the lab's own
    (``<home>/ideas/*.yaml``), the ones the language model proposed
    (``<home>/ideas/model/*.yaml``, unless ``model`` is False) and those of each ``extra``
    folder (``--ideas DIR``), all in the knowledge base's schema. A name may be used once
    across all of them; ``related`` may name any of them. Returns ({name: Idea},
    {name: file:line})."""
    found = dict(_builtin())
    folders: list[Path] = []
    if home is not None:
        own = Path(home) / "ideas"
        folders += [f for f in (own, own / MODEL_IDEAS) if f.is_dir()
                    and (model or f.name != MODEL_IDEAS)]
    for f in extra:
        if not Path(f).is_dir():
            raise AirlabError(f"--ideas: folder '{f}' does not exist",
                              "give a folder of ideas files (*.yaml)")
        folders.append(Path(f))
    for folder in folders:
        for name, (idea, at) in read_idea_files(folder).items():
            if name in found:
                raise AirlabError(f"{at}: idea name '{name}' is already an idea (at "
                                  f"{found[name][1]})", "give your idea its own name")
            found[name] = (idea, at)
    _check_related(found)
    return {n: i for n, (i, _) in found.items()}, {n: at for n, (_, at) in found.items()}


def write_idea(folder: Path, idea: Idea, note: str) -> Path:
    """Write ``idea`` as an ideas file ``<folder>/<name>.yaml`` (a person may read and edit
    it; the lab reads it back with :func:`lab_ideas`), with ``note`` as a comment above."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{idea.name}.yaml"
    data = idea.model_dump(mode="json", exclude_defaults=True)
    data.setdefault("prediction", {}).pop("budget", None)
    body = yaml.safe_dump({"ideas": [data]}, sort_keys=False, allow_unicode=True, width=100)
    path.write_text("".join(f"# {line}\n" for line in note.splitlines()) + body,
                    encoding="utf-8")
    return path


def get_idea(name: str) -> Idea:
    ideas = load_ideas()
    if name not in ideas:
        raise AirlabError(f"unknown idea '{printable(name)}'", did_you_mean(name, ideas))
    return ideas[name]


def filter_ideas(ideas: Mapping[str, Idea] | None = None, *, area: str | None = None,
                 aspect: str | None = None, tier: int | None = None,
                 runnable: bool | None = None) -> list[Idea]:
    """Ideas matching every given filter (runnable: no code needed), in name order."""
    ideas = load_ideas() if ideas is None else ideas
    if area is not None and area not in AREAS:
        raise AirlabError(f"unknown area '{printable(area)}'", did_you_mean(area, AREAS))
    if aspect is not None and aspect not in ASPECTS:
        raise AirlabError(f"unknown aspect '{printable(aspect)}'", did_you_mean(aspect, ASPECTS))
    return [i for _, i in sorted(ideas.items())
            if (area is None or i.area == area) and (aspect is None or i.aspect == aspect)
            and (tier is None or i.tier == tier)
            and (runnable is None or runnable != i.needs_code)]


# ---------------------------------------------------------------------------------------------
# Experiments and search spaces


def idea_spec(idea: Idea | str, *, seeds: Iterable[int] | None = None,
              budget: Mapping[str, float] | None = None) -> ExperimentSpec:
    """The idea's minimum experiment as a spec: baseline, the idea's arm and its ablation
    (when it has one). ``seeds`` / ``budget`` replace the minimum experiment's (the Architect
    sizes them); the prediction keeps the budget it was made for."""
    from airlab.spec import ExperimentSpec

    if isinstance(idea, str):
        idea = get_idea(idea)
    if idea.needs_code:
        raise AirlabError(f"idea '{idea.name}' needs code: no switch implements it yet",
                          f"the Coder writes --use_{idea.implementation.switch} first")
    me = idea.minimum_experiment
    arms = [idea.arm] + ([idea.ablation] if idea.ablation is not None else [])
    data = {
        "name": f"idea.{idea.name}",
        "hypothesis": f"{idea.pitch} Prediction: {idea.prediction.text()}.",
        "area": idea.area,
        "workload": me.workload,
        "preset": me.preset,
        "dataset": me.dataset,
        "budget": dict(budget) if budget is not None else dict(me.budget),
        "baseline": {"name": me.baseline.name, "use": list(me.baseline.use),
                     "options": dict(me.baseline.options)},
        "arms": [{"name": a.name, "use": list(a.use), "options": dict(a.options)} for a in arms],
        "seeds": list(seeds) if seeds is not None else list(me.seeds),
        "options": dict(me.options),
        "metric": me.metric,
        "direction": me.direction,
        "tolerance": me.tolerance,
        "idea": idea.name,  # the tracker finds the experiments that test an idea by it
    }
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        msg = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
        raise AirlabError(f"idea '{idea.name}': its experiment is not a valid spec: "
                          f"{_field(err['loc']) or 'spec'}: {msg}",
                          "fix minimum_experiment in the idea's file") from None


def search_space(idea: Idea | str) -> dict[str, SearchDim]:
    """The option ranges a tuner may search for the idea's arm (empty: nothing to tune)."""
    if isinstance(idea, str):
        idea = get_idea(idea)
    return dict(idea.implementation.search)


def check_idea(idea: Idea | str, settings: Settings | None = None) -> list[RunPlan]:
    """Check an idea against the registries: its spec plans, and every end of every search
    range (each choice) resolves as a run. Returns the plans; AirlabError names the idea."""
    from airlab.plan import plan_runs, resolve

    if isinstance(idea, str):
        idea = get_idea(idea)
    spec = idea_spec(idea)
    try:
        plans = plan_runs(spec, settings)
    except AirlabError as e:
        raise AirlabError(f"idea '{idea.name}': {e.message}", e.hint) from None
    arm = idea.arm
    for opt, dim in idea.implementation.search.items():
        for value in dim.points:
            try:
                resolve(workload=spec.workload, preset=spec.preset, dataset=spec.dataset,
                        budget=spec.budget, seed=spec.seeds[0], use=arm.use,
                        options={**spec.options, **arm.options, opt: value}, settings=settings)
            except AirlabError as e:
                raise AirlabError(f"idea '{idea.name}': search {opt}={value!r}: {e.message}",
                                  e.hint or "narrow the range") from None
    return plans


# ---------------------------------------------------------------------------------------------
# Text similarity (the novelty check)


@functools.cache
def _index(names: tuple[str, ...], texts: tuple[str, ...]) -> tuple[Any, Any, Any, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    # Words catch shared terms; character n-grams within words catch inflections and
    # compounds ("rotary"/"rotation", "normalise"/"normalization") a paraphrase changes.
    words = TfidfVectorizer(stop_words="english", sublinear_tf=True, ngram_range=(1, 2))
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)
    return words, words.fit_transform(texts), chars, chars.fit_transform(texts)


def similar_ideas(text: str, k: int = 5, ideas: Mapping[str, Idea] | None = None
                  ) -> list[tuple[str, float]]:
    """The ``k`` ideas most similar to ``text``: [(name, cosine similarity in [0, 1])], best
    first (TF-IDF over words and character n-grams, averaged)."""
    if not isinstance(text, str) or not text.strip():
        raise AirlabError("similar_ideas needs some text", "describe the idea in a sentence")
    ideas = load_ideas() if ideas is None else ideas
    if k < 1 or not ideas:
        return []
    names = tuple(sorted(ideas))
    words, wm, chars, cm = _index(names, tuple(ideas[n].text() for n in names))
    sim = 0.5 * (wm @ words.transform([text]).T).toarray().ravel() \
        + 0.5 * (cm @ chars.transform([text]).T).toarray().ravel()
    order = sorted(range(len(names)), key=lambda i: (-sim[i], names[i]))[:k]
    return [(names[i], float(sim[i])) for i in order]
