"""An append-only JSON-lines journal of results the store could not write.

When the database refuses a finished result (disk full, read-only, locked too long, damaged),
the result is appended here with everything needed to store it later; the next writable open
of the store replays it (idempotent, by run key) and removes what it stored. Appends and replays
hold an exclusive ``flock`` on the file, so two processes never lose each other's lines.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class Journal:
    """Journal files, most preferred first: appends go to the first one that accepts the line,
    replays read all of them (a fallback may have taken lines while the first was unwritable)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in dict.fromkeys(paths)]

    def append(self, entry: dict[str, Any]) -> Path:
        """Append one entry durably (fsync); return the file it went to.

        Raises the last OSError when no file accepts it.
        """
        line = (json.dumps(entry, default=str) + "\n").encode()
        err: OSError | None = None
        for path in self.paths:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with _locked(path, "ab") as f:
                    end = f.seek(0, os.SEEK_END)
                    try:
                        # A line torn by a crash stays a line of its own.
                        torn = end and _last_byte(path, end) != b"\n"
                        _write_all(f, b"\n" + line if torn else line)
                        os.fsync(f.fileno())
                    except OSError:
                        _truncate(f, end)  # no torn line left behind for the next append
                        raise
                return path
            except OSError as e:
                err = e
        assert err is not None
        raise err

    def pending(self) -> int:
        """How many entries wait to be stored."""
        n = 0
        for path in self.paths:
            try:
                n += sum(1 for ln in path.read_text().splitlines() if ln.strip())
            except OSError:
                continue
        return n

    def replay(self, apply: Callable[[dict[str, Any]], bool]) -> int:
        """Offer every entry to ``apply``; keep those it returns False for. Return how many it
        took. An exception from ``apply`` stops the replay, keeps every line not yet taken and
        propagates."""
        done = 0
        for path in self.paths:
            if not path.exists():
                continue
            try:
                ctx = _locked(path, "r+b")
                f = ctx.__enter__()
            except OSError:
                continue  # unreadable or read-only: try again on a later open
            try:
                lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
                keep: list[str] = []
                pos = 0
                try:
                    while pos < len(lines):
                        if _take(lines[pos], apply):
                            done += 1
                        else:
                            keep.append(lines[pos])
                        pos += 1
                finally:
                    keep.extend(lines[pos:])
                    if not keep:
                        path.unlink()  # under the lock: a waiting appender sees a new inode
                    elif len(keep) != len(lines):
                        f.seek(0)
                        f.truncate()
                        _write_all(f, "".join(k + "\n" for k in keep).encode())
                        os.fsync(f.fileno())
            finally:
                ctx.__exit__(None, None, None)
        return done


def _write_all(f: IO[bytes], data: bytes) -> None:
    """Unbuffered, so a short or failed write is seen here rather than at close."""
    view = memoryview(data)
    while view:
        view = view[os.write(f.fileno(), view):]


def _last_byte(path: Path, end: int) -> bytes:
    with open(path, "rb") as r:
        r.seek(end - 1)
        return r.read(1)


def _truncate(f: IO[bytes], size: int) -> None:
    try:
        f.truncate(size)
    except OSError:
        pass


def _take(line: str, apply: Callable[[dict[str, Any]], bool]) -> bool:
    try:
        entry = json.loads(line)
    except ValueError:
        return False  # a torn line is kept for a person to read
    return isinstance(entry, dict) and apply(entry)


@contextmanager
def _locked(path: Path, mode: str) -> Iterator[IO[bytes]]:
    """Open and lock ``path``; if a replay removed it while we waited, open the new file."""
    while True:
        f = open(path, mode, buffering=0)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
        except BaseException:
            f.close()
            raise
        f.close()
        if "r" in mode and not path.exists():
            raise FileNotFoundError(path)
    try:
        yield f
    finally:
        f.close()  # closing releases the lock
