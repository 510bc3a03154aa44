"""A scripted OpenAI-compatible chat server for tests: a real HTTP server in its own process.

It speaks ``POST /v1/chat/completions`` on 127.0.0.1 (a free port) and answers each request with
the next *behaviour* from a queue the test sets. No model is involved. Use it through the
``chat_server`` fixture (tests/agents/conftest.py) or directly::

    from chat_server import ChatServer, json_reply, status

    with ChatServer() as srv:
        srv.script(status(429, retry_after=0.2), json_reply({"title": "x"}))
        settings = LLMSettings(base_url=srv.url, model="scripted")
        ...
        srv.requests()          # every chat request received, oldest first

Behaviours (plain dicts, built by these helpers):

* ``reply(text)``: a normal answer whose message content is ``text`` (any text: malformed
  JSON, prose, JSON in a code fence ...). ``json_reply(obj)``: the same with ``json.dumps(obj)``.
  Both take ``prompt_tokens`` / ``completion_tokens`` for the ``usage`` field (default: about
  one token per 4 characters) or ``usage=False`` for no ``usage`` at all.
* ``refusal(text)``: an answer with no content and the ``refusal`` field set (what OpenAI
  sends); ``reply("I can't help with that")`` is the plain-text refusal small models send.
* ``slow(seconds, then)``: wait, then behave as ``then`` (a client with a shorter timeout has
  given up by then).
* ``drop()``: close the connection without a response.
* ``status(code, retry_after=None, body=None)``: an error status (429, 500, 503, 400 ...), with
  a ``Retry-After`` header when given.

``script(*behaviours, when=TEXT)`` queues behaviours used only for requests whose messages
contain TEXT (e.g. a role's name in its system prompt); requests matching no ``when`` queue use
the plain queue. ``default(behaviour)`` answers when the matching queue is empty (otherwise the
server answers 500 "script exhausted", which a test can see in ``requests()``).
``json_mode=False`` makes the server reject ``response_format`` with a 400, as some local
servers do. ``stop()`` ends the process: later requests get "connection refused".

Run alone (``python tests/agents/chat_server.py``) it prints its port and serves until killed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Behaviour = dict[str, Any]


# -- behaviours ---------------------------------------------------------------------------------

def reply(text: str, *, prompt_tokens: int | None = None, completion_tokens: int | None = None,
          usage: bool = True) -> Behaviour:
    """A normal answer with ``text`` as the message content."""
    return {"kind": "reply", "text": text, "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens, "usage": usage}


def json_reply(obj: Any, **kw: Any) -> Behaviour:
    """A normal answer whose content is ``obj`` as JSON."""
    return reply(json.dumps(obj), **kw)


def refusal(text: str = "I can't help with that.") -> Behaviour:
    """An answer with ``content: null`` and ``refusal`` set."""
    return {"kind": "refusal", "text": text}


def slow(seconds: float, then: Behaviour) -> Behaviour:
    """Wait ``seconds`` before behaving as ``then``."""
    return {"kind": "slow", "seconds": float(seconds), "then": then}


def drop() -> Behaviour:
    """Close the connection without sending a response."""
    return {"kind": "drop"}


def status(code: int, *, retry_after: float | None = None, body: Any = None) -> Behaviour:
    """An HTTP error status (JSON error body unless ``body`` is given)."""
    return {"kind": "status", "code": int(code), "retry_after": retry_after, "body": body}


# -- the server (runs in the child process) -----------------------------------------------------

class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queues: dict[str, list[Behaviour]] = {"": []}
        self.default: Behaviour | None = None
        self.json_mode = True
        self.requests: list[dict[str, Any]] = []

    def next_for(self, body: dict[str, Any]) -> Behaviour | None:
        text = json.dumps(body.get("messages", []))
        with self.lock:
            for when, q in self.queues.items():
                if when and when in text and q:
                    return q.pop(0)
            matched = any(when and when in text for when in self.queues)
            q = self.queues[""]
            if q and not matched:
                return q.pop(0)
            return self.default


def _serve(port: int = 0) -> None:
    state = _State()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up (timeout): nothing to answer

        def _body(self) -> Any:
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n) or b"null")

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/_requests":
                with state.lock:
                    self._send(200, state.requests)
            elif self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": "scripted",
                                                             "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            body = self._body()
            if self.path == "/_script":
                with state.lock:
                    state.queues.setdefault(body.get("when") or "", []).extend(
                        body["behaviours"])
                    if "default" in body:
                        state.default = body["default"]
                    if "json_mode" in body:
                        state.json_mode = bool(body["json_mode"])
                self._send(200, {"ok": True})
            elif self.path == "/_reset":
                with state.lock:
                    state.queues, state.default, state.json_mode = {"": []}, None, True
                    state.requests.clear()
                self._send(200, {"ok": True})
            elif self.path.rstrip("/").endswith("/chat/completions"):
                self._chat(body)
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def _chat(self, body: dict[str, Any]) -> None:
            with state.lock:
                state.requests.append({"at": time.time(), "body": body,
                                       "auth": self.headers.get("Authorization")})
                json_mode = state.json_mode
            if "response_format" in body and not json_mode:
                self._send(400, {"error": {"message": "response_format is not supported",
                                           "type": "invalid_request_error"}})
                return
            b = state.next_for(body)
            if b is None:
                self._send(500, {"error": {"message": "script exhausted"}})
                return
            while b["kind"] == "slow":
                time.sleep(b["seconds"])
                b = b["then"]
            if b["kind"] == "drop":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if b["kind"] == "status":
                headers = {}
                if b.get("retry_after") is not None:
                    headers["Retry-After"] = f"{b['retry_after']:g}"
                err = b.get("body") or {"error": {"message": f"scripted status {b['code']}",
                                                  "type": "server_error"}}
                self._send(b["code"], err, headers)
                return
            self._send(200, _completion(body, b))

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


def _completion(body: dict[str, Any], b: Behaviour) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": b["text"], "refusal": None}
    if b["kind"] == "refusal":
        msg = {"role": "assistant", "content": None, "refusal": b["text"]}
    prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))
    pt = b.get("prompt_tokens")
    ct = b.get("completion_tokens")
    pt = max(1, prompt_chars // 4) if pt is None else pt
    ct = max(1, len(b["text"]) // 4) if ct is None else ct
    out: dict[str, Any] = {
        "id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion",
        "created": int(time.time()), "model": body.get("model") or "scripted",
        "choices": [{"index": 0, "message": msg, "finish_reason": "stop", "logprobs": None}],
    }
    if b.get("usage", True):
        out["usage"] = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
    return out


# -- the test side ------------------------------------------------------------------------------

class ChatServer:
    """Starts the server in a child process; ``url`` is the base URL (``.../v1``)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)],
                                     stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"chat server did not start: {line!r}")
        self.port = int(line)
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.root}/v1"

    def _post(self, path: str, obj: Any) -> Any:
        req = urllib.request.Request(self.root + path, data=json.dumps(obj).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def script(self, *behaviours: Behaviour, when: str | None = None) -> None:
        """Queue behaviours (for requests whose messages contain ``when``, if given)."""
        self._post("/_script", {"behaviours": list(behaviours), "when": when})

    def default(self, behaviour: Behaviour | None) -> None:
        """What to answer when the matching queue is empty (None: 500 "script exhausted")."""
        self._post("/_script", {"behaviours": [], "default": behaviour})

    def json_mode(self, accepted: bool) -> None:
        """Whether requests with ``response_format`` are accepted (else 400)."""
        self._post("/_script", {"behaviours": [], "json_mode": accepted})

    def reset(self) -> None:
        """Empty every queue, forget requests, accept json mode again."""
        self._post("/_reset", {})

    def requests(self) -> list[dict[str, Any]]:
        """Every chat request so far: ``{"at": unix time, "body": request JSON, "auth": ...}``."""
        with urllib.request.urlopen(self.root + "/_requests", timeout=10) as r:
            return list(json.loads(r.read()))

    def stop(self) -> None:
        """End the server process (idempotent)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ChatServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0)


# ------------------------------------------------------------------ pytest fixtures
# (here, not in a tests/agents/conftest.py: two conftest modules would shadow each other)
from collections.abc import Callable, Iterator  # noqa: E402

import pytest  # noqa: E402

from airlab.agents.llm import LLMSettings  # noqa: E402


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    """A scripted chat server in its own process on 127.0.0.1; stopped after the test.

    ``chat_server.url`` is the base URL for ``LLMSettings``; ``script(...)`` queues answers
    (see chat_server.py for the behaviours)."""
    srv = ChatServer()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def llm_settings(chat_server: ChatServer) -> Callable[..., LLMSettings]:
    """``llm_settings(**overrides)``: settings pointing at ``chat_server`` with test-sized
    timeouts and backoff (a retry waits milliseconds, a slow reply gives up after 1 s)."""

    def make(**kw: Any) -> LLMSettings:
        base: dict[str, Any] = {"base_url": chat_server.url, "model": "scripted-model",
                                "api_key": "test-key", "timeout_s": 1.0, "max_retries": 2,
                                "repair_rounds": 2, "backoff_s": 0.01, "max_backoff_s": 0.5}
        return LLMSettings(**{**base, **kw})

    return make
