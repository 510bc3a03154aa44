"""A real PostgreSQL server for the tests: Debian's package, started once per session.

``initdb`` refuses to run as root, so as root the server runs as the unprivileged ``postgres``
user (``runuser``) from a temp folder it owns; as any other user it runs as that user. It listens
on 127.0.0.1 on a free port with trust auth and fsync off (tests need speed, not durability) and
is stopped at the end of the session. Each test that asks for ``pg_url`` gets a fresh database.
Tests skip, saying why, only when the server binaries are missing (.ci/run installs them).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_GLOB = "/usr/lib/postgresql/*/bin"


def pg_bin() -> Path | None:
    """The newest installed server's bin folder (or one with initdb on PATH)."""
    env = os.environ.get("AIRLAB_PG_BIN")
    if env and (Path(env) / "initdb").exists():
        return Path(env)
    found = sorted(glob.glob(PG_GLOB), key=lambda p: int(p.split("/")[-2].split(".")[0]))
    if found:
        return Path(found[-1])
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """A running server: ``url(db)`` is a SQLAlchemy URL of one of its databases."""

    port: int
    bin: Path
    folder: Path
    as_user: list[str]

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_server() -> PgServer:
    """initdb + pg_ctl start; raises RuntimeError with the server's log if it does not start."""
    bindir = pg_bin()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb) not found")
    root = os.geteuid() == 0
    as_user = ["runuser", "-u", "postgres", "--"] if root else []
    folder = Path(tempfile.mkdtemp(prefix="airlab-pg-"))
    data = folder / "data"
    if root:
        shutil.chown(folder, "postgres", "postgres")
    port = _free_port()
    log = folder / "server.log"
    # initdb makes the superuser the OS user's name; -U postgres keeps the URL the same either way.
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True, timeout=120)
    opts = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200")
    r = subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log),
                        "-o", opts, "-w", "-t", "60", "start"],
                       capture_output=True, text=True, timeout=90)
    if r.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else r.stderr
        raise RuntimeError(f"PostgreSQL did not start: {tail}")
    return PgServer(port, bindir, folder, as_user)


def stop_server(server: PgServer) -> None:
    subprocess.run([*server.as_user, str(server.bin / "pg_ctl"), "-D",
                    str(server.folder / "data"), "-m", "immediate", "-w", "stop"],
                   capture_output=True, timeout=60)
    shutil.rmtree(server.folder, ignore_errors=True)


_count = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole session (skips only when it is not installed)."""
    if pg_bin() is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql; "
                    ".ci/run does)")
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run initdb as "
                        "(Debian's postgresql package creates it)")
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database on the session's server."""
    return pg_server.create_db(f"t{os.getpid()}_{next(_count)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite and on PostgreSQL (store contract tests)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lab.db'}"
    return str(request.getfixturevalue("pg_url"))
