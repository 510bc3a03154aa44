"""A model's answer as a validated schema instance: find the JSON in whatever came back, check
it, and say briefly what is wrong (the repair prompt carries it back to the model).

Small local models return broken JSON often: the answer may sit in a code fence, after prose,
behind a ``<think>`` block, with trailing commas or Python-style literals. :func:`extract_json`
accepts all of these; :func:`parse_answer` validates against the schema.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

_MAX_ERROR_CHARS = 1500  # a repair prompt carries the error; keep it short for small contexts


class AnswerError(ValueError):
    """An answer that is not a JSON object matching the schema (the message goes back to the
    model in a repair round)."""


_THINK = re.compile(r"<think>.*?(</think>|$)", re.S | re.I)
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.S)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def schema_prompt(schema: type[BaseModel]) -> str:
    """The instruction appended to a role's system prompt: answer with JSON of this schema."""
    js = json.dumps(schema.model_json_schema(), separators=(",", ":"))
    return ("Answer with one JSON object and nothing else (no prose, no code fences). "
            f"It must match this JSON schema:\n{js}")


def extract_json(text: str) -> Any:
    """The JSON object in a model's answer: the whole text, a fenced block, or the first
    ``{...}`` in it; ``<think>`` blocks are skipped; trailing commas and Python-style literals
    (single quotes, True/None) are accepted as a last resort. Raises AnswerError."""
    t = _THINK.sub("", text or "").strip()
    if not t:
        raise AnswerError("the answer is empty")
    candidates = [t, *(m.group(1).strip() for m in _FENCE.finditer(t))]
    for c in candidates:
        try:
            obj = json.loads(c)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    dec = json.JSONDecoder()
    first_err: str | None = None
    starts = _object_starts(t)
    for i in starts:
        try:
            obj, _ = dec.raw_decode(t, i)
        except ValueError as e:
            first_err = first_err or str(e)
            continue
        if isinstance(obj, dict):
            return obj
    if starts:  # lenient last resort over the outermost braces
        blob = t[starts[0]: t.rfind("}") + 1]
        for fix in (lambda s: _TRAILING_COMMA.sub(r"\1", s), _python_literal):
            try:
                obj = fix(blob)
                obj = json.loads(obj) if isinstance(obj, str) else obj
            except Exception:  # noqa: BLE001 (any failure here just means "not parseable")
                continue
            if isinstance(obj, dict):
                return obj
        raise AnswerError(f"the answer's JSON is invalid: {first_err or 'unbalanced braces'}")
    raise AnswerError("no JSON object found in the answer")


def _object_starts(t: str, limit: int = 200) -> list[int]:
    """Where top-level ``{`` open in ``t``: braces inside an object (and inside its strings) are
    skipped, so a broken outer object is not mistaken for one of its inner objects. Quotes in
    the prose around objects do not count."""
    starts: list[int] = []
    depth, in_str, esc = 0, False, False
    for i, ch in enumerate(t):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"' and depth > 0:
            in_str = True
        elif ch == "{":
            if depth == 0:
                starts.append(i)
                if len(starts) >= limit:
                    break
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
    return starts


def _python_literal(s: str) -> Any:
    s = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", s)))
    return ast.literal_eval(_TRAILING_COMMA.sub(r"\1", s))


def parse_answer(text: str, schema: type[M]) -> M:
    """The validated answer: :func:`extract_json` then ``schema.model_validate``. An object
    wrapped in one key (``{"idea": {...}}``) is unwrapped when only the inner one fits.
    Raises AnswerError with a short list of what is wrong."""
    obj = extract_json(text)
    try:
        return schema.model_validate(obj)
    except ValidationError as e:
        if len(obj) == 1:
            (inner,) = obj.values()
            if isinstance(inner, dict):
                try:
                    return schema.model_validate(inner)
                except ValidationError:
                    pass
        raise AnswerError(f"the answer does not match the schema: {_errors(e)}") from None


def _errors(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:8]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(top level)"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = e.error_count() - len(parts)
    out = "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
    return out[:_MAX_ERROR_CHARS]


def repair_prompt(error: str) -> str:
    return (f"That answer could not be used: {error[:_MAX_ERROR_CHARS]}\n"
            "Reply again with only the corrected JSON object, matching the schema.")
