"""Shared fixtures: real data from ../shared/data, a private lab folder per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from chat_server import chat_server, llm_settings  # noqa: F401 (a scripted LLM server)
from pg_fixture import any_db_url, pg_server, pg_url  # noqa: F401 (PostgreSQL)

# Resolved: ../shared may be a symbolic link, and loaders report resolved paths.
SHARED_DATA = (Path(__file__).resolve().parents[1].parent / "shared" / "data").resolve()

# A transformer small enough that a run takes about a second on one core.
MICRO = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
         "warmup_steps": 5, "eval_points": 2, "eval_tokens": 1024}


@pytest.fixture(autouse=True)
def _lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own lab folder and database; data is read from ../shared/data."""
    home = tmp_path / "lab"
    monkeypatch.setenv("AIRLAB_HOME", str(home))
    monkeypatch.delenv("AIRLAB_DB", raising=False)
    monkeypatch.setenv("AIRLAB_CACHE_DIR", str(tmp_path / "cache"))
    if SHARED_DATA.exists():
        monkeypatch.setenv("AIRLAB_DATA_DIR", str(SHARED_DATA))
    return home


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tests train tiny models: a second intra-op thread only adds contention on 2 cores
    (a spinning OpenMP thread can make a step many times slower on a loaded machine)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "tinyshakespeare" / "input.txt").exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'lab.db'}"


os.environ.setdefault("OMP_NUM_THREADS", "1")
