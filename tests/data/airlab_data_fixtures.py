"""Fixtures for the data tests: isolated settings, a loopback HTTP server, shared data.

Not a conftest.py: tests elsewhere do ``from conftest import ...``, and a second conftest
module on sys.path would shadow the top-level one. Each data test module imports these
fixtures explicitly (``fixture_<name>`` functions registered as ``<name>``).
"""

from __future__ import annotations

import functools
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlab.data import clear_caches

# ../shared/data beside the checkout; read-only, never copied into the repo.
# Resolved: ../shared may be a symbolic link, and loaders report resolved paths.
SHARED_DATA = (Path(__file__).resolve().parents[2].parent / "shared" / "data").resolve()

URL_ENVS = (
    "AIRLAB_SHAKESPEARE_URL",
    "AIRLAB_MNIST_URL",
    "AIRLAB_FASHION_MNIST_URL",
    "AIRLAB_CIFAR10_URL",
)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(name="closed_url")
def fixture_closed_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connection refused at once."""
    return f"http://127.0.0.1:{_closed_port()}/"


@pytest.fixture(autouse=True, name="isolated_data_env")
def fixture_isolated_data_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the user's settings or reaches the internet; memo caches start empty."""
    monkeypatch.setenv("AIRLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("AIRLAB_DATA_DIR", raising=False)
    monkeypatch.delenv("AIRLAB_ALLOW_UNVERIFIED", raising=False)
    nowhere = f"http://127.0.0.1:{_closed_port()}/"
    for env in URL_ENVS:  # a test that forgets to point a loader somewhere fails fast, offline
        monkeypatch.setenv(env, nowhere + ("input.txt" if "SHAKESPEARE" in env else ""))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    clear_caches()
    yield
    clear_caches()


@pytest.fixture(name="shared_data")
def fixture_shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA} (../shared/data)")
    return SHARED_DATA


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class LoopbackServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(name="http_server")
def fixture_http_server(tmp_path: Path) -> Iterator[LoopbackServer]:
    """A real http.server on 127.0.0.1 serving ``server.root`` (a fresh tmp folder)."""
    root = tmp_path / "served"
    root.mkdir()
    server = LoopbackServer(root)
    try:
        yield server
    finally:
        server.stop()
