"""fetch(): verified, atomic downloads against a real loopback HTTP server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from airlab_data_fixtures import (  # noqa: F401  (pytest fixtures)
    fixture_closed_url,
    fixture_http_server,
    fixture_isolated_data_env,
)

from airlab.data import fetch, sha256_file
from airlab.errors import AirlabError

PAYLOAD = b"airlab test payload\n" * 1000
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_sha256_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    assert sha256_file(path) == PAYLOAD_SHA


def test_fetch_downloads_and_verifies(http_server, tmp_path, closed_url):
    (http_server.root / "blob.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "dl" / "sub" / "blob.bin"
    got = fetch(http_server.url + "blob.bin", PAYLOAD_SHA, dest)
    assert got == dest
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == []
    # already there with the right hash: no network at all (this URL refuses connections)
    assert fetch(closed_url + "blob.bin", PAYLOAD_SHA, dest) == dest


def test_fetch_replaces_a_damaged_file(http_server, tmp_path):
    (http_server.root / "blob.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"half a file")
    fetch(http_server.url + "blob.bin", PAYLOAD_SHA, dest)
    assert dest.read_bytes() == PAYLOAD


def test_fetch_refuses_sha_mismatch_and_deletes(http_server, tmp_path):
    (http_server.root / "blob.bin").write_bytes(PAYLOAD + b"tampered")
    dest = tmp_path / "dl" / "blob.bin"
    url = http_server.url + "blob.bin"
    with pytest.raises(AirlabError) as info:
        fetch(url, PAYLOAD_SHA, dest)
    msg = str(info.value)
    assert url in msg
    assert PAYLOAD_SHA in msg
    assert hashlib.sha256(PAYLOAD + b"tampered").hexdigest() in msg
    assert not dest.exists()
    assert _leftovers(dest.parent) == []


def test_fetch_server_down(tmp_path, closed_url):
    dest = tmp_path / "dl" / "blob.bin"
    url = closed_url + "blob.bin"
    with pytest.raises(AirlabError) as info:
        fetch(url, PAYLOAD_SHA, dest, timeout=5)
    msg = str(info.value)
    assert url in msg
    assert str(dest) in msg and "AIRLAB_DATA_DIR" in msg
    assert not dest.exists()
    assert _leftovers(dest.parent) == []


def test_fetch_http_error(http_server, tmp_path):
    dest = tmp_path / "blob.bin"
    with pytest.raises(AirlabError, match="HTTP 404"):
        fetch(http_server.url + "missing.bin", PAYLOAD_SHA, dest)
    assert not dest.exists()


def test_fetch_unverified_when_no_hash(http_server, tmp_path):
    (http_server.root / "blob.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "blob.bin"
    assert fetch(http_server.url + "blob.bin", None, dest).read_bytes() == PAYLOAD


def test_fetch_checks_an_md5_too(http_server, tmp_path):
    (http_server.root / "blob.bin").write_bytes(PAYLOAD)
    url = http_server.url + "blob.bin"
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    dest = tmp_path / "dl" / "blob.bin"
    with pytest.raises(AirlabError, match="md5 mismatch") as info:
        fetch(url, PAYLOAD_SHA, dest, md5="0" * 32)
    assert md5 in str(info.value) and url in str(info.value)
    assert not dest.exists() and _leftovers(dest.parent) == []
    assert fetch(url, PAYLOAD_SHA, dest, md5=md5.upper()).read_bytes() == PAYLOAD
