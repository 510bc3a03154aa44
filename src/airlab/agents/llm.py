"""The LLM backend: any OpenAI-compatible chat-completions server, answers checked by schema.

``LLMClient.ask(role, system, user, schema)`` sends one chat request asking for a JSON object
that matches a pydantic schema (the JSON schema is in the system prompt; the server is also
asked for JSON mode where it accepts it), pulls the JSON out of whatever came back (code
fences, leading prose, ``<think>`` blocks, trailing commas, Python-style literals), validates it,
and on failure sends the error back for up to ``repair_rounds`` more tries: small local models
return broken JSON often. Transient HTTP failures (429, 5xx, timeouts, dropped connections) are
retried with exponential backoff and jitter, honouring ``Retry-After``. Every HTTP call becomes
one :class:`CallRecord` handed to the recorder (the caller stores it, see
``airlab.store.calls``). When no usable answer can be had (server gone, token budget spent,
repairs failed, key refused) ``ask`` raises :class:`LLMUnavailable` with a one-line reason and
the team falls back to its offline roles.

:class:`ReplayClient` answers the same ``ask`` calls from stored records, with no server.

The ``openai`` package is an optional extra (``airlab[llm]``) and is imported only when the
first request is made.
"""

from __future__ import annotations

import email.utils
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from airlab.agents.answers import AnswerError, parse_answer, repair_prompt, schema_prompt
from airlab.errors import AirlabError
from airlab.store.calls import CallRecord

M = TypeVar("M", bound=BaseModel)

RESPONSE_FORMATS = ("json_schema", "json_object", "none")  # most to least constrained
_MAX_ERROR_CHARS = 1500  # a repair prompt carries the error; keep it short for small contexts


class LLMUnavailable(Exception):
    """No usable answer from the model: server gone, budget spent, repairs failed, key refused.

    ``reason`` is one line, shown as the team's warning when it falls back to offline roles.
    """

    def __init__(self, reason: str) -> None:
        self.reason = " ".join(str(reason).split())
        super().__init__(self.reason)


# -- settings -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LLMSettings:
    """Where the model is and how to call it.

    ``base_url`` is the server's OpenAI-compatible root, e.g. ``http://127.0.0.1:8080/v1``
    (a URL with no path gets ``/v1``; a pasted ``.../chat/completions`` is cut back to its
    root). ``response_format`` is the first JSON mode tried; a server that rejects it with 400
    is asked again with the next one (``json_schema`` -> ``json_object`` -> ``none``).
    """

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)  # never printed or stored
    timeout_s: float = 60.0
    max_retries: int = 3  # per request, after the first try (429, 5xx, timeouts, drops)
    repair_rounds: int = 2  # extra requests after an answer fails the schema
    temperature: float = 0.2
    seed: int | None = 0
    backoff_s: float = 1.0  # first retry delay; doubles each retry, with jitter
    max_backoff_s: float = 30.0  # cap on any one wait, Retry-After included
    # Completion cap for every role (None: each role's own, sized to its answer schema).
    max_tokens: int | None = None
    response_format: str = "json_object"

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", normalize_base_url(self.base_url))
        if not str(self.model).strip():
            raise AirlabError("LLM model name is empty",
                              "set AIRLAB_LLM_MODEL to the model the server serves")
        for name in ("timeout_s", "backoff_s", "max_backoff_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0) or \
                    (name == "timeout_s" and v == 0):
                raise AirlabError(f"LLM setting {name}={v!r} is not a positive number",
                                  "use seconds, e.g. 60")
        t = self.temperature
        if not (isinstance(t, (int, float)) and math.isfinite(t) and 0 <= t <= 2):
            raise AirlabError(f"LLM setting temperature={t!r} is not a number from 0 to 2",
                              "e.g. 0.2 (0: the most likely answer)")
        for name in ("max_retries", "repair_rounds"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise AirlabError(f"LLM setting {name}={v!r} is not a count >= 0",
                                  "use 0, 1, 2 ...")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise AirlabError(f"LLM setting max_tokens={self.max_tokens!r} is below 1",
                              "leave it unset for the server's default")
        if self.response_format not in RESPONSE_FORMATS:
            raise AirlabError(f"LLM setting response_format={self.response_format!r} is unknown",
                              f"choose from: {', '.join(RESPONSE_FORMATS)}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any
                 ) -> LLMSettings | None:
        """Settings from ``AIRLAB_LLM_BASE_URL``, ``AIRLAB_LLM_MODEL``, ``AIRLAB_LLM_API_KEY``
        and the tuning variables of :data:`ENV_SETTINGS` (timeout, temperature, completion cap,
        JSON mode); ``overrides`` (the command line's, None: not given) win over them. None
        when no base URL is set (offline team)."""
        env = os.environ if env is None else env
        base = (env.get("AIRLAB_LLM_BASE_URL") or "").strip()
        if not base:
            return None
        model = (env.get("AIRLAB_LLM_MODEL") or "").strip()
        if not model:
            raise AirlabError("AIRLAB_LLM_MODEL is not set (AIRLAB_LLM_BASE_URL is)",
                              "set it to the model the server serves, e.g. qwen2.5:0.5b "
                              "for Ollama; see docs/llm.md")
        kw: dict[str, Any] = {}
        for name, (var, kind, example) in ENV_SETTINGS.items():
            raw = (env.get(var) or "").strip()
            if raw:
                try:
                    kw[name] = kind(raw)
                except ValueError:
                    raise AirlabError(f"{var} '{raw}' is not {example}",
                                      f"e.g. {var}={EXAMPLES[name]}") from None
        given = {k: ENV_SETTINGS[k][0] for k in kw}
        for k, v in overrides.items():
            if v is not None:
                kw[k], given[k] = v, FLAGS[k]
        try:
            return cls(base_url=base, model=model,
                       api_key=(env.get("AIRLAB_LLM_API_KEY") or None), **kw)
        except AirlabError as e:  # name what the person set, not the field
            bad = next((k for k in given if f"setting {k}=" in str(e.message)), None)
            if bad is None:
                raise
            var, _, example = ENV_SETTINGS[bad]
            raise AirlabError(f"{given[bad]} '{kw[bad]}' is not {example}",
                              f"e.g. {var}={EXAMPLES[bad]}") from None


# The settings a person tunes from the environment (the command line has a flag for each):
# field -> (variable, type, what it must be).
ENV_SETTINGS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "timeout_s": ("AIRLAB_LLM_TIMEOUT", float, "a positive number of seconds"),
    "temperature": ("AIRLAB_LLM_TEMPERATURE", float, "a number from 0 to 2"),
    "max_tokens": ("AIRLAB_LLM_MAX_TOKENS", int, "a whole number of tokens >= 1"),
    "response_format": ("AIRLAB_LLM_RESPONSE_FORMAT", str,
                        f"one of {', '.join(RESPONSE_FORMATS)}"),
}
FLAGS = {"timeout_s": "--llm-timeout", "temperature": "--llm-temperature",
         "max_tokens": "--llm-cap", "response_format": "--llm-format"}
EXAMPLES = {"timeout_s": "120", "temperature": "0.2", "max_tokens": "800",
            "response_format": "json_schema"}


def normalize_base_url(url: str) -> str:
    """``http://host:port`` -> ``http://host:port/v1``; ``.../v1/chat/completions`` -> ``.../v1``;
    anything not http(s) is an AirlabError."""
    u = str(url).strip().rstrip("/")
    m = re.match(r"^(https?://[^/\s]+)(/\S*)?$", u)
    if not m:
        raise AirlabError(f"LLM base URL '{url}' is not an http(s) URL",
                          "set AIRLAB_LLM_BASE_URL like http://127.0.0.1:8080/v1")
    path = m.group(2) or ""
    for tail in ("/chat/completions", "/completions"):
        if path.endswith(tail):
            path = path[: -len(tail)]
    return m.group(1) + (path or "/v1")


# -- records and budget -------------------------------------------------------------------------

@dataclass
class TokenBudget:
    """Tokens (prompt + completion) one sprint or ``auto`` session may spend; ``total=None`` is
    no limit. A call that starts within the budget is finished; the next one is refused."""

    total: int | None = None
    used: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def charge(self, n: int) -> None:
        with self._lock:
            self.used += max(0, int(n))

    def left(self) -> int | None:
        """Tokens left (never below 0), or None without a limit."""
        with self._lock:
            return None if self.total is None else max(0, self.total - self.used)


# -- clients ------------------------------------------------------------------------------------

class LLMBackend(Protocol):
    """What the team needs from a model: :class:`LLMClient` or :class:`ReplayClient`."""

    model: str

    def ask(self, role: str, system: str, user: str, schema: type[M], *,
            max_tokens: int | None = None, time_limit: float | None = None) -> M: ...


class _Limit:
    """Seconds a question may take in all (None: no limit beyond each request's timeout)."""

    def __init__(self, total: float | None) -> None:
        self.total = total
        self.end = None if total is None else time.monotonic() + max(0.0, total)

    def left(self) -> float:
        return math.inf if self.end is None else self.end - time.monotonic()

    def timeout(self, per_request: float) -> float:
        """The next request's timeout: the setting's, or what is left when that is less."""
        return min(per_request, self.left())


class _Transient(Exception):
    """A failed HTTP call worth retrying (``wait``: the server's Retry-After, if any)."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


class LLMClient:
    """Asks an OpenAI-compatible server for schema-checked answers (see the module text)."""

    def __init__(self, settings: LLMSettings, *, budget: TokenBudget | None = None,
                 recorder: Callable[[CallRecord], None] | None = None) -> None:
        self.settings = settings
        self.model = settings.model
        self.budget = budget if budget is not None else TokenBudget()
        self.recorder = recorder
        self._format = settings.response_format  # moves down RESPONSE_FORMATS on a 400
        self._api: Any = None
        self._rng = random.Random()

    def ask(self, role: str, system: str, user: str, schema: type[M], *,
            max_tokens: int | None = None, time_limit: float | None = None) -> M:
        """The model's answer to ``user`` as a validated ``schema`` instance.

        ``max_tokens``: the completion cap of this question (the settings' ``max_tokens``,
        when set, wins); ``time_limit``: seconds for the whole question, repairs and retries
        included (no request starts after it, and each waits at most what is left).
        Raises LLMUnavailable (one-line ``reason``) when none can be had."""
        cap = self.settings.max_tokens if self.settings.max_tokens is not None else max_tokens
        limit = _Limit(time_limit)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": f"{system.rstrip()}\n\n{schema_prompt(schema)}"},
            {"role": "user", "content": user}]
        counter = [0]  # HTTP calls made by this ask
        error = ""
        for _ in range(self.settings.repair_rounds + 1):
            text, rec, refused = self._request(role, messages, schema, counter, cap, limit)
            try:
                if refused:
                    raise AnswerError(f"the model refused: {_one_line(text)}")
                answer = parse_answer(text, schema)
            except AnswerError as e:
                error = str(e)
                self._record(rec, parsed_ok=False, error=error)
                messages = [*messages, {"role": "assistant", "content": text},
                            {"role": "user", "content": repair_prompt(error)}]
                continue
            self._record(rec, parsed_ok=True, error=None)
            return answer
        raise LLMUnavailable(f"{role}: no valid answer after {self.settings.repair_rounds} "
                             f"repair round(s): {error}")

    def close(self) -> None:
        """Close the HTTP connection pool (a later ``ask`` opens a new one)."""
        if self._api is not None:
            self._api.close()
            self._api = None

    # -- one request with retries -------------------------------------------------------------

    def _request(self, role: str, messages: list[dict[str, Any]], schema: type[BaseModel],
                 counter: list[int], cap: int | None = None, limit: _Limit | None = None
                 ) -> tuple[str, dict[str, Any], bool]:
        """One answer's text (retrying transient failures), its record fields so far, and
        whether it is a refusal."""
        s = self.settings
        limit = limit or _Limit(None)
        retries = 0
        while True:
            timeout = limit.timeout(s.timeout_s)
            if timeout <= 0:
                raise LLMUnavailable(f"{role}: no usable answer within its {limit.total:.0f} s "
                                     "share of the time box")
            left = self.budget.left()
            if left is not None and left <= 0:
                raise LLMUnavailable(f"{role}: the token budget of {self.budget.total} tokens "
                                     f"is spent ({self.budget.used} used)")
            counter[0] += 1
            rec: dict[str, Any] = {"role": role, "model": s.model, "temperature": s.temperature,
                                   "seed": s.seed, "messages": [dict(m) for m in messages],
                                   "attempt": counter[0], "at": time.time()}
            t0 = time.monotonic()
            fmt = self._format
            try:
                text, pt, ct, refused = self._call(messages, schema, fmt, cap, timeout)
            except _Transient as e:
                rec.update(latency_s=time.monotonic() - t0, response=None, prompt_tokens=0,
                           completion_tokens=0)
                self._record(rec, parsed_ok=False, error=str(e))
                if retries >= s.max_retries:
                    raise LLMUnavailable(f"{role}: the model server at {s.base_url} failed "
                                         f"{retries + 1} time(s): {e}") from None
                time.sleep(min(self._delay(retries, e.wait), max(0.0, limit.left())))
                retries += 1
                continue
            except LLMUnavailable as e:
                rec.update(latency_s=time.monotonic() - t0, response=None, prompt_tokens=0,
                           completion_tokens=0)
                self._record(rec, parsed_ok=False, error=e.reason)
                if fmt != self._format:  # the server rejected the JSON mode: ask again now
                    continue
                raise LLMUnavailable(f"{role}: {e.reason}") from None
            self.budget.charge(pt + ct)
            rec.update(latency_s=time.monotonic() - t0, response=text, prompt_tokens=pt,
                       completion_tokens=ct)
            return text, rec, refused

    def _delay(self, retry: int, wait: float | None) -> float:
        """Exponential backoff with jitter (half fixed, half random); the server's Retry-After
        wins when given. Both capped at max_backoff_s."""
        s = self.settings
        if wait is not None:
            return min(s.max_backoff_s, max(0.0, wait))
        d = min(s.max_backoff_s, s.backoff_s * 2 ** retry)
        return d / 2 + self._rng.uniform(0, d / 2)

    def _client(self) -> Any:
        if self._api is None:
            try:
                import openai
            except ImportError:
                raise LLMUnavailable("the openai package is not installed "
                                     "(pip install 'airlab[llm]')") from None
            # Our own retry loop records every call; the client's would hide them.
            self._api = openai.OpenAI(base_url=self.settings.base_url,
                                      api_key=self.settings.api_key or "not-needed",
                                      timeout=self.settings.timeout_s, max_retries=0)
        return self._api

    def _call(self, messages: list[dict[str, Any]], schema: type[BaseModel],
              fmt: str, cap: int | None = None, timeout: float | None = None
              ) -> tuple[str, int, int, bool]:
        """One HTTP call: (answer text, prompt tokens, completion tokens, refused). Raises
        _Transient (worth a retry) or LLMUnavailable (not)."""
        api = self._client()
        import openai

        s = self.settings
        kw: dict[str, Any] = {"model": s.model, "messages": messages,
                              "temperature": s.temperature}
        if s.seed is not None:
            kw["seed"] = s.seed
        if cap is not None:
            kw["max_tokens"] = cap
        wait = s.timeout_s if timeout is None else timeout
        if fmt == "json_object":
            kw["response_format"] = {"type": "json_object"}
        elif fmt == "json_schema":
            kw["response_format"] = {"type": "json_schema", "json_schema": {
                "name": schema.__name__, "schema": schema.model_json_schema()}}
        try:
            resp = api.chat.completions.create(**kw, timeout=wait)
        except openai.APITimeoutError:
            raise _Transient(f"no answer within {round(wait, 1):g} s") from None
        except openai.APIConnectionError as e:
            cause = e.__cause__ or e.__context__
            raise _Transient(f"connection failed ({_one_line(cause or e)})") from None
        except openai.APIStatusError as e:
            code = e.status_code
            detail = _one_line(e.message)
            if code in (408, 409, 425, 429) or code >= 500:
                raise _Transient(f"HTTP {code}: {detail}",
                                 _retry_after(e.response.headers)) from None
            if code in (400, 422) and fmt != "none":
                self._format = RESPONSE_FORMATS[RESPONSE_FORMATS.index(fmt) + 1]
                raise LLMUnavailable(f"HTTP {code} with response_format {fmt}: {detail}") \
                    from None
            if code in (401, 403):
                raise LLMUnavailable(f"the server refused the key (HTTP {code}): check "
                                     "AIRLAB_LLM_API_KEY") from None
            if code == 404:
                raise LLMUnavailable(f"HTTP 404 from {s.base_url} for model '{s.model}': "
                                     "check AIRLAB_LLM_BASE_URL (usually ends in /v1) and "
                                     "AIRLAB_LLM_MODEL") from None
            raise LLMUnavailable(f"HTTP {code}: {detail}") from None
        except openai.APIError as e:  # e.g. a body that is not a chat completion
            raise _Transient(f"bad response ({_one_line(e)})") from None
        text, refused, usage = _content(resp)
        pt = getattr(usage, "prompt_tokens", None)
        ct = getattr(usage, "completion_tokens", None)
        if pt is None:  # no usage from the server: estimate, so the budget still holds
            pt = math.ceil(sum(len(str(m.get("content") or "")) for m in messages) / 4)
        if ct is None:
            ct = math.ceil(len(text) / 4)
        return text, int(pt), int(ct), refused

    def _record(self, rec: dict[str, Any], *, parsed_ok: bool, error: str | None) -> None:
        if self.recorder is not None:
            self.recorder(CallRecord(**{**rec, "parsed_ok": parsed_ok, "error": error}))


def _content(resp: Any) -> tuple[str, bool, Any]:
    """(answer text, whether it is the ``refusal`` field, usage) of a chat completion. A
    refusal or an empty answer goes through the repair rounds like any unusable answer."""
    usage = getattr(resp, "usage", None)
    choices = getattr(resp, "choices", None) or []
    if not choices:
        return "", False, usage
    msg = choices[0].message
    if msg.content is None and getattr(msg, "refusal", None):
        return str(msg.refusal), True, usage
    return str(msg.content or ""), False, usage


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return float(ms) / 1000
        v = headers.get("retry-after")
    except (AttributeError, ValueError):
        return None
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _one_line(x: object) -> str:
    s = " ".join(str(x).split())
    return s[:300] + ("..." if len(s) > 300 else "")
