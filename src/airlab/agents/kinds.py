"""Sprint kinds: what a sprint proposes and designs, and what the loop learns from it.

A kind is one object in :data:`KINDS` with four methods:

* ``propose(ctx, roles)``: the ideas phase (an idea from the Researcher, or recipe parts);
* ``design(ctx, roles, proposal)``: the arms, handed to the Architect to size;
* ``update(state, row)``: the loop's state after a stored sprint of this kind;
* ``wants(state, plan)``: the request the loop runs next, or None.

The loop (``agents.loop``) asks the kinds in :data:`POLICY` order and runs the first that wants
a sprint; it never names a kind. Adding a kind is one class and one entry in each table.

* **explore** (``agents.explore``): one idea on top of the current recipe (the default
  configuration at first);
* **stack**, **confirm**, **transfer** (``agents.recipes``): the winners together against the
  default configuration; a candidate recipe on fresh seeds beside the current one (a paired
  comparison decides replacement); the current recipe at 4x the budget and on another dataset.

The state, the plan and the rules the kinds share are in ``agents.loopstate``.
"""

from __future__ import annotations

from airlab.agents.explore import Explore, idea_amount, is_base, not_applying, winner_part
from airlab.agents.loopstate import (
    CONFIRM_SEED_BASE,
    DEFAULT_AMOUNT,
    MAX_STACK_PARTS,
    SINGLE_WINNER_WAIT,
    SPEED_AREAS,
    TRANSFER_SCALE,
    LoopPlan,
    LoopState,
    RecipeEntry,
    SprintKind,
    adds_nothing,
    applies,
    default_target,
    holds,
    run_key,
    speed_ideas,
    transfer_label,
)
from airlab.agents.recipes import Confirm, Stack, Transfer

KINDS: dict[str, SprintKind] = {k.name: k for k in (Explore(), Stack(), Confirm(), Transfer())}
# The loop runs the first kind that wants a sprint: a candidate is confirmed first, then the
# current recipe's transfer is measured, then winners are stacked, else an idea is explored.
POLICY = ("confirm", "transfer", "stack", "explore")


def kind_of(name: str) -> SprintKind:
    from airlab.errors import lookup

    return lookup(KINDS, name, "sprint kind")  # type: ignore[no-any-return]


__all__ = ["CONFIRM_SEED_BASE", "DEFAULT_AMOUNT", "KINDS", "MAX_STACK_PARTS", "POLICY",
           "SINGLE_WINNER_WAIT", "SPEED_AREAS", "TRANSFER_SCALE", "LoopPlan", "LoopState",
           "RecipeEntry", "SprintKind", "adds_nothing", "applies", "default_target", "holds",
           "idea_amount", "is_base", "kind_of", "not_applying", "run_key", "speed_ideas",
           "transfer_label", "winner_part"]
