"""Techniques: named switches (`--use_<name>`) that change a run.

The contract (``Option``, ``Hooks``, ``Technique``, ``HookContext``) and the one registry
(``TECHNIQUES``, ``register``, ``load_techniques``) live in ``airlab.techniques.base`` and are
re-exported here; read its docstring for what a technique must follow. The built-in research
areas below register their techniques on import; ``load_techniques(settings.techniques_dir)``
adds modules from a folder, in the parent and in the worker alike.
"""

from __future__ import annotations

# The built-in research areas register their techniques on import.
from airlab.techniques import (  # noqa: E402,F401
    architecture,
    batch_size,
    checkpointing,
    distillation,
    optimizers,
    precision,
    pruning,
    quantization,
)
from airlab.techniques.base import (
    TECHNIQUES,
    HookContext,
    Hooks,
    Option,
    Technique,
    check_compatible,
    excluded,
    get_technique,
    known_options,
    load_techniques,
    register,
    suggest_option,
    technique_hashes,
)

__all__ = [
    "TECHNIQUES",
    "HookContext",
    "Hooks",
    "Option",
    "Technique",
    "check_compatible",
    "excluded",
    "get_technique",
    "known_options",
    "load_techniques",
    "register",
    "suggest_option",
    "technique_hashes",
]
