"""`airlab dashboard`: a local, read-only web page that watches the lab while it works.

It reads the store (SQLite or PostgreSQL; nothing is written) and shows every experiment with
its arms, live evaluation curves per arm and seed with the time-to-target line, each run's
state and progress, the result table and verdict once analysed, and the research team: the
current sprint and its phase, the leaderboard, the ideas with their statuses and the prediction
record, and the Researcher's Optuna studies. The page redraws itself as new data arrives.

Parts: Starlette (the app), uvicorn (the server) and the plotly.js bundled in the ``plotly``
package (so the page needs no network): ``pip install 'airlab[dashboard]'``. They are imported
only when the dashboard starts.
"""

from __future__ import annotations

import errno
import importlib.util
import ipaddress
import socket
from collections.abc import Callable

from airlab.errors import AirlabError

PARTS = ("starlette", "uvicorn", "plotly")
DEFAULT_PORT = 8765


def check_parts() -> None:
    """One line naming what is missing, if the dashboard's parts are not installed."""
    missing = [p for p in PARTS if importlib.util.find_spec(p) is None]
    if missing:
        raise AirlabError(f"airlab dashboard needs {', '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed",
                          "pip install 'airlab[dashboard]'")


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address (127.0.0.0/8, ::1)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    addrs = {str(i[4][0]).split("%")[0] for i in infos}
    return bool(addrs) and all(ipaddress.ip_address(a).is_loopback for a in addrs)


def open_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: a free port), or one AirlabError line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as e:
        raise AirlabError(f"--host '{host}' is not an address or a name of this machine "
                          f"({getattr(e, 'strerror', None) or e})",
                          "use 127.0.0.1 (the default), localhost, or an address this "
                          "machine has") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise AirlabError(f"--port {port} is already in use on {host}",
                              "choose another with --port, or --port 0 for a free one"
                              ) from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise AirlabError(f"--port {port}: not allowed to listen there ({e.strerror})",
                              "use a port above 1023, e.g. the default 8765") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise AirlabError(f"--host '{host}' is not an address of this machine",
                              "use 127.0.0.1 (the default) or an address this machine has"
                              ) from None
        raise AirlabError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                          "check --host and --port") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in str(host) else str(host)
    return f"http://{shown}:{port}/"


def serve(db_url: str, sock: socket.socket, *, poll_s: float = 2.0, wide: bool = False,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the dashboard of the store at ``db_url`` on the listening ``sock`` until
    Ctrl-C (or SIGTERM). ``wide``: answer any Host header (a non-loopback ``--host``)."""
    import uvicorn

    from airlab.dashboard.app import create_app

    host = str(sock.getsockname()[0])
    hosts = ["*"] if wide else sorted({"127.0.0.1", "localhost", "::1", host})
    app = create_app(db_url, poll_s=poll_s, allowed_hosts=hosts)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=3)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            # Said once the server listens with its own Ctrl-C handling in place: a Ctrl-C
            # that came between an earlier "ready" and uvicorn's handlers was once lost (the
            # server then ran on).
            if on_ready is not None and not self.should_exit:
                on_ready(url_of(sock))

    Server(config).run(sockets=[sock])


__all__ = ["DEFAULT_PORT", "check_parts", "is_loopback", "open_socket", "serve", "url_of"]
