"""One error type for everything a user can fix: it names the problem and suggests a fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AirlabError(Exception):
    """A user-facing error: the CLI prints it as one line, never a traceback."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean X?' for a close match, or a list of what exists."""
    choices = sorted(set(choices))
    if not choices:
        return "there are none yet"
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    shown = ", ".join(choices[:20]) + (" ..." if len(choices) > 20 else "")
    return f"choose from: {shown}"


def lookup(registry: dict, name: str, what: str):  # type: ignore[no-untyped-def]
    """Registry access with a helpful error listing what exists."""
    try:
        return registry[name]
    except KeyError:
        raise AirlabError(f"unknown {what} '{name}'", did_you_mean(name, registry)) from None
