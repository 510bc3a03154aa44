"""Verified downloads: a file is only ever placed at its destination after its sha256 matched.

``fetch`` streams the URL to a temporary file in the destination folder, hashes it while
writing, and renames it into place atomically (``os.replace``), so a crash or a bad download
never leaves a half-written or unverified file where a loader would pick it up.
Decompression (``.gz``) is the loaders' business, not this module's.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from airlab.errors import AirlabError

_CHUNK = 1 << 20
USER_AGENT = "airlab-data/0.1 (+urllib)"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, sha256: str | None, dest: Path, *, timeout: float = 30,
          md5: str | None = None) -> Path:
    """Return ``dest``, downloading ``url`` there first unless it already holds the right bytes.

    - ``dest`` exists and its sha256 equals ``sha256`` → returned untouched, no network.
    - otherwise the URL is streamed into ``dest.parent/.<name>.*.part``, hashed, and renamed
      onto ``dest`` only if the hash matches. A mismatch deletes the temporary file and raises
      AirlabError naming the URL and both hashes (an existing ``dest`` is left as it was).
    - network failures (refused, DNS, timeout, HTTP error status) raise AirlabError naming the
      URL and suggesting to place the file at ``dest`` by hand or to set AIRLAB_DATA_DIR.

    - ``md5``, when given, is checked too, on the same bytes and before the rename: for files
      whose authors publish only an md5, beside a sha256 pinned elsewhere (CIFAR-10).

    ``sha256=None`` downloads WITHOUT verification; only callers that the user explicitly
    allowed to do so (AIRLAB_ALLOW_UNVERIFIED=1) may pass it. An existing ``dest`` is then
    returned as is.
    """
    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    if dest.is_file() and (expected is None or sha256_file(dest) == expected):
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AirlabError(
            f"cannot create download folder {dest.parent}: {exc.strerror or exc}",
            "set AIRLAB_CACHE_DIR to a writable folder",
        ) from None

    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    md5_digest = hashlib.md5(usedforsecurity=False) if md5 else None
    try:
        try:
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(request, timeout=timeout) as response,
            ):
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    if md5_digest is not None:
                        md5_digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            raise AirlabError(
                f"could not download {url}: {_reason(exc)}",
                f"place the file by hand at {dest}, or set AIRLAB_DATA_DIR (--data-dir) "
                "to a folder that already holds the data",
            ) from None
        got = digest.hexdigest()
        if expected is not None and got != expected:
            raise AirlabError(
                f"sha256 mismatch for {url}: expected {expected}, got {got}; "
                "the download was deleted",
                "the server sent different bytes; check the URL (or its AIRLAB_*_URL "
                f"override), or place a correct copy at {dest}",
            )
        if md5 and md5_digest is not None and md5_digest.hexdigest() != md5.lower():
            raise AirlabError(
                f"md5 mismatch for {url}: expected {md5.lower()}, got "
                f"{md5_digest.hexdigest()}; the download was deleted",
                "the server sent different bytes; check the URL (or its AIRLAB_*_URL "
                f"override), or place a correct copy at {dest}",
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def resolve_dirs(data_dir: Path | str | None, cache_dir: Path | str | None
                 ) -> tuple[Path | None, Path | None]:
    """Absolute data and cache folders; None stays None (no such folder is looked at).

    Loaders never read settings themselves: the caller (a workload, given the Settings resolved
    once at the edge) passes the folders, so ``--home`` decides where the cache is.
    """
    return (Path(data_dir).expanduser().resolve() if data_dir is not None else None,
            Path(cache_dir).expanduser().resolve() if cache_dir is not None else None)
