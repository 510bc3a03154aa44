"""The model-backed roles: each wraps an offline role, asks the language model first, and falls
back to the wrapped role when the model gives nothing usable (one warning line; the rest of the
sprint then runs offline). Each role's module owns its answer schema, its prompt and its
fallback rule; :mod:`airlab.agents.model.seat` holds what they share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airlab.agents.llm import LLMBackend
    from airlab.agents.roles import Lab, Roles


def model_roles(offline: Roles, llm: LLMBackend, lab: Lab, *, allow_unsafe: bool = False
                ) -> Roles:
    """The four roles backed by ``llm``, each around its offline role in ``offline``."""
    from airlab.agents.model.architect import ModelArchitect
    from airlab.agents.model.coder import ModelCoder
    from airlab.agents.model.researcher import ModelResearcher
    from airlab.agents.model.seat import ModelSeat
    from airlab.agents.model.validator import ModelValidator
    from airlab.agents.roles import Roles

    seat = ModelSeat(llm, lab, allow_unsafe=allow_unsafe)
    return Roles(ModelResearcher(offline.researcher, seat),
                 ModelArchitect(offline.architect, seat), ModelCoder(offline.coder, seat),
                 ModelValidator(offline.validator, seat), source=llm.model)
