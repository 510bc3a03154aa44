"""The dashboard's web application: one static page and three JSON reads, all GET.

``create_app(url)`` opens the store read-only (nothing is created or written; a SQLite file
that does not exist yet is looked for again on each request) and serves:

* ``/``: the page (``static/index.html``; its script polls the reads below and redraws in
  place, so it follows the lab with no reload);
* ``/static/...``: the page's script and style, and ``plotly.min.js`` from the installed
  ``plotly`` package (the page needs no network);
* ``/api/overview``, ``/api/experiment?name=NAME``, ``/api/team``: JSON.

Every name on the page comes from the store (specs, a language model's ideas) and is written
into the page as text by the script, never as markup. The server adds a strict Content
Security Policy and answers only requests whose Host header names a loopback address (or the
``--host`` it was given), so a web page of another site cannot read the lab through a name it
points at 127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airlab.dashboard.data import Cache, experiment_view, finite, overview, store_signature

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from airlab.store import Store

STATIC = Path(__file__).with_name("static")
REOPEN_S = 5.0  # how often a store without data yet is opened again
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")


def plotly_js() -> Path:
    """plotly.min.js as the installed ``plotly`` package ships it (found without importing)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the plotly package is not installed")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    raise FileNotFoundError("plotly.min.js not found in the plotly package")


class Lab:
    """The read-only store behind the dashboard, opened again while it has no data yet."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._opened = 0.0
        self.cache = Cache()

    def store(self) -> Store:
        from airlab.store import Store

        with self._lock:
            s = self._store
            # A SQLite file that did not exist has been created; or an older database whose
            # live tables a writer may have added since (looked at again now and then).
            stale = s is None or (s.missing and s.path is not None and s.path.exists()) or (
                not s.missing and not s.has_table("live_points")
                and time.monotonic() - self._opened > REOPEN_S)
            if stale:
                if s is not None:
                    s.close()
                s = self._store = Store(self.url, readonly=True)
                self._opened = time.monotonic()
            assert s is not None
            return s

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()


def _json(data: Any, status: int = 200) -> Response:
    from starlette.responses import Response

    body = json.dumps(finite(data), separators=(",", ":"), allow_nan=False)
    return Response(body, status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def create_app(url: str, *, poll_s: float = 2.0, allowed_hosts: list[str] | None = None
               ) -> Starlette:
    """The ASGI app over the store at ``url`` (read-only). ``allowed_hosts``: Host header
    names accepted (default: the loopback names); ``["*"]`` accepts any."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
    from starlette.routing import Route

    from airlab.dashboard.team_view import team_view
    from airlab.errors import AirlabError

    lab = Lab(url)
    page = (STATIC / "index.html").read_text().replace("__POLL_S__", f"{float(poll_s):g}")
    files = {"dashboard.js": STATIC / "dashboard.js", "dashboard.css": STATIC / "dashboard.css",
             "plotly.min.js": plotly_js()}
    types = {".js": "text/javascript", ".css": "text/css"}

    hosts = {h.lower() for h in (allowed_hosts or ["127.0.0.1", "localhost", "::1"])}

    def host_ok(request: Request) -> bool:
        """The Host header names a host we serve on (a page of another site that resolves
        its own name to 127.0.0.1 must not read the lab)."""
        if "*" in hosts:
            return True
        host = request.headers.get("host", "").strip().lower()
        if host.startswith("["):  # [::1]:8765
            host = host[1:].partition("]")[0]
        else:
            host = host.rpartition(":")[0] if host.count(":") == 1 else host
        return host in hosts

    def checked(fn: Any) -> Any:
        def endpoint(request: Request) -> Response:
            if not host_ok(request):
                return security(PlainTextResponse("invalid host header", status_code=400))
            return fn(request)
        return endpoint

    def security(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    def index(request: Request) -> Response:
        return security(HTMLResponse(page, headers={"Cache-Control": "no-store"}))

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        path = files.get(name)
        if path is None:
            return security(Response("not found", status_code=404))
        return security(FileResponse(path, media_type=types[path.suffix],
                                     headers={"Cache-Control": "max-age=3600"}))

    def guarded(fn: Any) -> Any:
        """A read that fails is a JSON error (the page shows it and keeps polling)."""
        def endpoint(request: Request) -> Response:
            try:
                return security(fn(request))
            except AirlabError as e:
                return security(_json({"error": str(e)}, 503))
            except Exception as e:  # noqa: BLE001 - the page must keep going: report it
                return security(_json({"error": f"{type(e).__name__}: {e}"[:500]}, 500))
        return endpoint

    def api_overview(request: Request) -> Response:
        store = lab.store()
        return _json({"store": _safe(url), "now": time.time(), "poll_s": poll_s,
                      **overview(store)})

    def api_experiment(request: Request) -> Response:
        name = request.query_params.get("name", "")
        view = experiment_view(lab.store(), name, lab.cache)
        if view is None:
            return _json({"error": "no such experiment"}, 404)
        return _json(view)

    def api_team(request: Request) -> Response:
        store = lab.store()
        sig = store_signature(store)
        # The ideas tracker analyses every experiment that tests an idea: once per change.
        view = lab.cache.get("team", sig, lambda: team_view(store))
        from airlab.dashboard.team_view import sprints_view

        return _json({**view, "sprints": sprints_view(store)})  # phases move without runs

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        lab.close()

    return Starlette(routes=[Route("/", checked(index)), Route("/static/{name}", checked(static)),
                             Route("/api/overview", checked(guarded(api_overview))),
                             Route("/api/experiment", checked(guarded(api_experiment))),
                             Route("/api/team", checked(guarded(api_team)))],
                     lifespan=lifespan)


def _safe(url: str) -> str:
    from airlab.store.store import _safe as hide

    return hide(url)


__all__ = ["create_app", "plotly_js", "CSP"]
