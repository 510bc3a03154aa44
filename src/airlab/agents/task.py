"""The problem a session studies: a base experiment, and where its recipes are transferred.

``airlab sprint|auto --spec BASE.yaml`` (or the short forms ``--workload --preset --dataset
--tokens/--samples``) gives the team a base experiment: a workload, its preset or model
fields, a dataset (``file:`` included), a budget, shared options and seeds. Its configuration
is the session's *default configuration*: every ratio of the session is measured against it.
A base is checked by the same checker as ``airlab check`` (``check.check_spec``), so a bad one
gets the same one-line errors, plus the few a base adds (it has no arms: the team designs
them; its budget counts the workload's unit).

Without a base the team studies charlm tiny on ``pycode``, the corpus embedded in every
Python: it runs offline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airlab.errors import AirlabError
from airlab.store.records import Task

if TYPE_CHECKING:
    from airlab.settings import Settings

# What a base experiment may say: the problem. Arms, sweeps, targets and technique files are
# the team's to design.
BASE_FIELDS = ("name", "hypothesis", "area", "workload", "preset", "dataset", "budget",
               "baseline", "seeds", "options")
# Where a recipe is transferred by default (`--transfer`): another embedded corpus for text
# (offline, always there); for vision, digits (embedded) from any other set, and MNIST (the
# same task at 28x28: a local copy or a verified download) from digits.
TRANSFER = {"shakespeare": "pycode", "pycode": "pydoc", "pydoc": "pycode",
            "digits": "mnist"}
TRANSFER_DEFAULT = {"charlm": "pycode", "vision": "digits"}


@dataclass(frozen=True)
class Base:
    """A base experiment as the team uses it: the task, the budget per run in the task's unit
    (None: not given), the options every arm shares and the selection seeds (None: the
    team's)."""

    task: Task
    amount: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None
    source: str = "default"  # the spec file, "command line" or "default"


def default_transfer(task: Task) -> str:
    """The dataset a recipe of ``task`` is transferred to unless ``--transfer`` names one."""
    got = TRANSFER.get(task.dataset) or TRANSFER_DEFAULT.get(task.workload, "pycode")
    return got if got != task.dataset else "pydoc"


def base_experiment(spec: str | Path | None = None, *, workload: str | None = None,
                    preset: str | None = None, dataset: str | None = None,
                    budget: Mapping[str, float] | None = None,
                    options: Mapping[str, Any] | None = None,
                    settings: Settings | None = None) -> Base:
    """The base from a spec file and/or the short forms (which replace the file's fields).
    Raises the first problem as a one-line AirlabError, as ``airlab check`` words it."""
    from airlab.check import check_spec
    from airlab.spec import FILE_PREFIX, check_file_dataset, read_spec, spec_problems

    if spec is None and not any((workload, preset, dataset, budget, options)):
        return Base(Task())
    data: dict[str, Any] = {}
    lines: dict[tuple[Any, ...], int] = {}
    source, folder = "command line", Path.cwd()
    if spec is not None:
        raw, lines, path = read_spec(spec)
        if not isinstance(raw, dict):
            kind = "nothing" if raw is None else f"a {type(raw).__name__}"
            raise AirlabError(f"{path}: a base experiment is a mapping of fields, got {kind}",
                              "e.g. workload: charlm / dataset: pycode / budget: {tokens: "
                              "400000}")
        data, source, folder = dict(raw), str(path), path.parent
    given = {"workload": workload, "preset": preset, "dataset": dataset, "budget": budget}
    for key, value in given.items():
        if value is not None:
            data[key] = dict(value) if isinstance(value, Mapping) else value
            lines = {k: v for k, v in lines.items() if not k or k[0] != key}
    if options:
        data["options"] = {**(data.get("options") or {}), **options}
    data.setdefault("name", "base")
    explicit_budget = "budget" in data
    if not explicit_budget:  # checked with a placeholder; the session gives the amount
        data["budget"] = {_unit(str(data.get("workload") or "charlm")): 1.0}
    from airlab.spec import ExperimentSpec

    for key in data:  # a field no spec knows gets check's own error, with a suggestion
        if key in ExperimentSpec.model_fields and key not in BASE_FIELDS:
            where = f"{source}:{lines[(key,)]}" if (key,) in lines else source
            raise AirlabError(f"{where}: {key}: a base experiment gives the team its problem "
                              f"(workload, preset, dataset, budget, options, seeds); the team "
                              f"designs the {key}", f"remove {key}, or run the experiment "
                              "with `airlab run`")
    got, problems = spec_problems(data, source, lines)
    if got is not None and got.dataset and got.dataset.startswith(FILE_PREFIX):
        try:
            got.dataset = FILE_PREFIX + str(check_file_dataset(
                got.dataset[len(FILE_PREFIX):], folder))
        except AirlabError as e:
            problems.append(AirlabError(f"{got.where('dataset')}: dataset: {e.message}",
                                        e.hint))
    if got is not None and not problems:
        problems = check_spec(got, settings=settings)
    if problems:
        raise problems[0]
    assert got is not None
    if got.baseline.use:
        raise AirlabError(f"{got.where('baseline', 'use')}: baseline.use: the base is the "
                          "default configuration: its switches would have to be in every arm",
                          "give the base options only; the team tries switches as ideas")
    (unit, amount), = got.budget.items()
    want = _unit(got.workload)
    if unit != want:
        raise AirlabError(f"{got.where('budget')}: budget: the team compares runs by the "
                          f"{want} they train on; {unit} is not counted here",
                          f"give budget: {{{want}: N}}")
    from airlab.plan import resolve

    shared = {**got.options, **got.baseline.options}
    cfg = resolve(workload=got.workload, preset=got.preset, dataset=got.dataset,
                  budget={unit: amount}, seed=0, options=shared, settings=settings)
    seeds = tuple(got.seeds) if "seeds" in data else None
    return Base(Task(cfg.workload, cfg.preset, cfg.dataset, unit),
                float(amount) if explicit_budget else None, shared, seeds, source)


def _unit(workload: str) -> str:
    from airlab.check import workload_unit

    try:
        return workload_unit(workload)
    except AirlabError:
        return "tokens"  # an unknown workload: check_spec names it


def check_transfer(dataset: str, task: Task, settings: Settings | None = None) -> str:
    """``--transfer DATASET`` checked against the task's workload (as `airlab check` checks a
    dataset): the dataset, made absolute for ``file:``."""
    base = base_experiment(workload=task.workload, preset=task.preset, dataset=dataset,
                           budget={task.unit: 1000.0}, settings=settings)
    if base.task.dataset == task.dataset:
        raise AirlabError(f"--transfer: {dataset} is the session's own dataset",
                          f"name another one, e.g. --transfer {default_transfer(task)}")
    return base.task.dataset


def seeds_of(base: Base, default: Sequence[int]) -> tuple[int, ...]:
    return base.seeds if base.seeds is not None else tuple(default)
