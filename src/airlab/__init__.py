"""airlab: an automated AI research lab. Specs in, statistics out.

The public API is plain data and small functions so agents, scripts and the CLI share it.
Names load lazily: a worker process that only trains never pays for scipy or SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AirlabError": "airlab.errors",
    "Settings": "airlab.settings",
    "get_settings": "airlab.settings",
    "Arm": "airlab.spec",
    "ExperimentSpec": "airlab.spec",
    "load_spec": "airlab.spec",
    "TrainConfig": "airlab.config",
    "RunPlan": "airlab.plan",
    "plan_runs": "airlab.plan",
    "resolve": "airlab.plan",
    "RunResult": "airlab.run.result",
    "train": "airlab.run.trainer",
    "LocalExecutor": "airlab.executors.local",
    "InProcessExecutor": "airlab.executors.inprocess",
    "Store": "airlab.store",
    "analyze": "airlab.analysis.compare",
    "rate": "airlab.validate",
    "Verdict": "airlab.validate",
    "ExperimentOutcome": "airlab.experiment",
    "run_experiment": "airlab.experiment",
    "finish_experiment": "airlab.experiment",
    "run_until_decisive": "airlab.decide",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'airlab' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
