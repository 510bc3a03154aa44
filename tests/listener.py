"""A TCP listener on 127.0.0.1 that records every connection it accepts: the witness that
sandboxed code reached no local server."""

from __future__ import annotations

import socket
import threading
from typing import Any


class Listener:
    """``with Listener() as lsn:`` gives ``lsn.port``; ``lsn.close()`` stops accepting and
    returns the connections seen (it waits for the accept loop, so none is missed)."""

    def __init__(self) -> None:
        self.hits: list[Any] = []
        self._sock = socket.socket()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Listener:
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(5)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                self.hits.append(self._sock.accept())
            except OSError:
                continue

    def close(self) -> list[Any]:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(2)
            self._sock.close()
        return self.hits

    def __exit__(self, *exc: object) -> None:
        self.close()
