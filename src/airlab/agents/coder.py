"""The Coder: builds each arm of a design from techniques and checks that it runs.

Offline it composes registered techniques (the `--use_` switches and their options): it
stacks the parts of a recipe, leaves out a part that a declared exclusion forbids (and says
so), and plans every arm through the same resolver as `airlab run`, recording each switch's
source hash (part of the run key). Ideas marked "needs code" are refused here: writing a new
technique is the LLM-backed Coder's work (generated code, run in the sandbox).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airlab.errors import AirlabError
from airlab.spec import Arm
from airlab.store.records import ImplementationRecord

if TYPE_CHECKING:
    from airlab.settings import Settings
    from airlab.spec import ExperimentSpec


def merge(name: str, parts: Sequence[Arm], description: str = "") -> tuple[Arm, list[str]]:
    """One arm with the switches and options of every part, in order. A later part's option
    overrides an earlier one's (noted); a part whose switch excludes one already in the stack
    is left out whole (noted), so the stack always plans."""
    from airlab.techniques import excluded

    use: list[str] = []
    options: dict[str, Any] = {}
    notes: list[str] = []
    for part in parts:
        clash = [(a, b) for b in part.use if b not in use for a in use if excluded(a, b)]
        if clash:
            a, b = clash[0]
            notes.append(f"left {part.name} out of {name}: '{b}' excludes '{a}'")
            continue
        for k, v in part.options.items():
            if k in options and options[k] != v:
                notes.append(f"{name}: {part.name} sets {k}={v!r} over {options[k]!r}")
            options[k] = v
        use += [u for u in part.use if u not in use]
    return Arm(name=name, use=use, options=options, description=description), notes


class Coder:
    """The offline Coder (registered techniques only)."""

    source = "registered techniques"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def check_idea(self, idea: Any) -> None:
        if getattr(idea, "needs_code", False):
            raise AirlabError(f"idea '{idea.name}' needs code: no switch implements it yet",
                              "the LLM-backed Coder writes it (`AIRLAB_LLM_BASE_URL`); the "
                              "offline team picks another idea")

    def implement(self, spec: ExperimentSpec) -> ImplementationRecord:
        """Plan every arm (the same resolver as `airlab run`); AirlabError when one cannot."""
        from airlab.plan import plan_runs
        from airlab.techniques import technique_hashes

        plans = plan_runs(spec, self.settings)
        arms = []
        for arm in spec.all_arms:
            arms.append({"arm": arm.name, "use": list(arm.use), "options": dict(arm.options),
                         "code": technique_hashes(arm.use)})
        return ImplementationRecord(self.source, arms, len(plans))

    @staticmethod
    def describe(arm: Arm, base: Arm | None = None) -> str:
        """The arm as flags, relative to ``base`` when given."""
        base_use = set(base.use) if base else set()
        base_opts: Mapping[str, Any] = base.options if base else {}
        flags = [f"--use_{u}" for u in arm.use if u not in base_use]
        flags += [f"--{k}={v}" for k, v in arm.options.items() if base_opts.get(k) != v]
        return " ".join(flags) or "(same as the base)"
