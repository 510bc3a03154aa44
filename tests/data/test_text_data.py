"""Text corpora: pycode (offline), shakespeare (shared data or loopback download), file:PATH."""

from __future__ import annotations

import re
import shutil
import time

import pytest
import torch
from airlab_data_fixtures import (  # noqa: F401  (pytest fixtures)
    fixture_closed_url,
    fixture_http_server,
    fixture_isolated_data_env,
    fixture_shared_data,
)

from airlab.data import TEXT_CORPORA, TextCorpus, clear_caches, load_text
from airlab.data.text import SHAKESPEARE_SHA256
from airlab.errors import AirlabError

HEADER = re.compile(r"^# ==== (.+) ====$", re.MULTILINE)


# ---------------------------------------------------------------- shakespeare


def test_shakespeare_from_shared_data(shared_data):
    corpus = load_text("shakespeare", data_dir=shared_data)
    assert isinstance(corpus, TextCorpus)
    assert corpus.name == "shakespeare"
    assert corpus.vocab_size == 65
    assert corpus.vocab == tuple(sorted(corpus.vocab))
    assert corpus.train.numel() == 1_003_854
    assert corpus.val.numel() == 111_540
    assert corpus.train.dtype == torch.int64 and corpus.train.ndim == 1
    assert corpus.sha256 == SHAKESPEARE_SHA256
    assert str(shared_data / "tinyshakespeare" / "input.txt") == corpus.source
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text("utf-8")
    assert corpus.decode(corpus.train[:500]) == text[:500]
    assert corpus.decode(corpus.val) == text[1_003_854:]
    sample = "First Citizen:\nBefore we proceed any further, hear me speak."
    assert corpus.decode(corpus.encode(sample)) == sample
    assert corpus.decode(corpus.encode(sample).tolist()) == sample
    with pytest.raises(AirlabError, match="not in the vocabulary"):
        corpus.encode("caf\u00e9")
    with pytest.raises(AirlabError, match="outside the vocabulary"):
        corpus.decode([0, 65])


def test_shakespeare_data_dir_from_settings_not_from_env(shared_data, monkeypatch, tmp_path):
    # The loader never reads the environment: AIRLAB_DATA_DIR reaches it through Settings,
    # resolved once by the caller, so --home / --data-dir decide every folder.
    from airlab.settings import get_settings

    monkeypatch.setenv("AIRLAB_DATA_DIR", str(shared_data))
    with pytest.raises(AirlabError, match="tinyshakespeare not found"):
        load_text("shakespeare")
    s = get_settings(home=tmp_path / "lab")
    assert s.data_dir == shared_data and s.cache_dir == tmp_path / "lab" / "cache"
    corpus = load_text("shakespeare", data_dir=s.data_dir, cache_dir=s.cache_dir)
    assert corpus.sha256 == SHAKESPEARE_SHA256
    assert not s.cache_dir.exists()  # found locally: nothing downloaded or cached


def test_shakespeare_memoised(shared_data):
    assert load_text("shakespeare", data_dir=shared_data) is load_text(
        "shakespeare", data_dir=shared_data
    )


def test_shakespeare_download_from_loopback(shared_data, http_server, tmp_path, monkeypatch):
    # A copy in tmp (never in the repo) is served by a real HTTP server on 127.0.0.1.
    shutil.copyfile(shared_data / "tinyshakespeare" / "input.txt", http_server.root / "input.txt")
    monkeypatch.setenv("AIRLAB_SHAKESPEARE_URL", http_server.url + "input.txt")
    cache = tmp_path / "dlcache"
    corpus = load_text("shakespeare", data_dir=tmp_path / "empty", cache_dir=cache)
    cached = cache / "tinyshakespeare" / "input.txt"
    assert cached.is_file()
    assert corpus.sha256 == SHAKESPEARE_SHA256
    assert corpus.source == str(cached)
    assert (corpus.vocab_size, corpus.train.numel(), corpus.val.numel()) == (65, 1_003_854, 111_540)
    # the verified cache copy is used with the server gone
    http_server.stop()
    clear_caches()
    again = load_text("shakespeare", cache_dir=cache)
    assert torch.equal(again.train, corpus.train)


def test_shakespeare_download_wrong_bytes_refused(http_server, tmp_path, monkeypatch):
    (http_server.root / "input.txt").write_text("not shakespeare\n" * 100)
    monkeypatch.setenv("AIRLAB_SHAKESPEARE_URL", http_server.url + "input.txt")
    cache = tmp_path / "dlcache"
    with pytest.raises(AirlabError, match="sha256 mismatch") as info:
        load_text("shakespeare", cache_dir=cache)
    assert SHAKESPEARE_SHA256 in str(info.value)
    assert not (cache / "tinyshakespeare" / "input.txt").exists()


def test_shakespeare_missing_offline(tmp_path):
    # the autouse fixture points AIRLAB_SHAKESPEARE_URL at a closed port
    data_dir, cache = tmp_path / "nodata", tmp_path / "nocache"
    with pytest.raises(AirlabError) as info:
        load_text("shakespeare", data_dir=data_dir, cache_dir=cache)
    msg = str(info.value)
    assert str(data_dir / "tinyshakespeare" / "input.txt") in msg
    assert str(cache / "tinyshakespeare" / "input.txt") in msg
    assert "AIRLAB_DATA_DIR" in msg


# ---------------------------------------------------------------- pycode


def _files(corpus: TextCorpus, ids: torch.Tensor) -> list[str]:
    return HEADER.findall(corpus.decode(ids))


def test_pycode_offline_deterministic_and_split_by_file():
    start = time.perf_counter()
    corpus = load_text("pycode")
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"pycode took {elapsed:.2f} s"
    assert corpus.train.dtype == torch.int64 and corpus.val.dtype == torch.int64
    assert 2_000_000 < corpus.train.numel() + corpus.val.numel() < 4_000_000
    assert corpus.val.numel() > 10_000
    assert 60 < corpus.vocab_size < 400
    assert corpus.vocab[0] == corpus.unknown == "\ufffd"
    assert int(corpus.train.max()) < corpus.vocab_size and int(corpus.train.min()) >= 0

    train_files, val_files = _files(corpus, corpus.train), _files(corpus, corpus.val)
    assert train_files and val_files
    assert not set(train_files) & set(val_files)
    assert all(f.endswith(".py") for f in train_files + val_files)
    assert not any(
        part in {"test", "tests", "idlelib", "lib2to3", "site-packages"}
        for f in train_files + val_files
        for part in f.split("/")
    )
    everything = sorted(train_files + val_files)
    assert val_files == everything[9::10]  # every 10th file (by sorted index) is validation

    clear_caches()
    again = load_text("pycode")
    assert again is not corpus
    assert again.sha256 == corpus.sha256 and again.vocab == corpus.vocab
    assert torch.equal(again.train, corpus.train) and torch.equal(again.val, corpus.val)


def test_pycode_encode_maps_rare_characters_to_replacement():
    corpus = load_text("pycode")
    ids = corpus.encode("def f():\n    return '\u65e5\u672c'\n")
    assert ids.dtype == torch.int64
    assert corpus.decode(ids) == "def f():\n    return '\ufffd\ufffd'\n"
    assert load_text("pycode") is corpus  # memoised within the process


def test_pydoc_offline_english_split_by_topic_and_stable():
    from pydoc_data.topics import topics

    corpus = load_text("pydoc")
    assert corpus.name == "pydoc" and corpus.vocab[0] == corpus.unknown == "\ufffd"
    n = corpus.train.numel() + corpus.val.numel()
    assert 300_000 < n < 700_000
    assert 0.09 < corpus.val.numel() / n < 0.3  # whole topics, at least 10 %
    train, val = _files(corpus, corpus.train), _files(corpus, corpus.val)
    assert sorted(train + val) == sorted(topics) and not set(train) & set(val)
    assert val == sorted(topics)[len(train):]  # the last topics in sorted order
    assert "statement" in corpus.decode(corpus.train[:5000])  # English prose, not code
    assert "pydoc_data.topics" in corpus.source
    clear_caches()
    again = load_text("pydoc")
    assert again.sha256 == corpus.sha256 and torch.equal(again.val, corpus.val)
    assert load_text("pycode").sha256 != corpus.sha256


# ---------------------------------------------------------------- file:PATH


def test_file_corpus(tmp_path):
    text = "".join(f"line {i}: the quick brown fox\n" for i in range(100))
    path = tmp_path / "notes.txt"
    path.write_text(text, "utf-8")
    corpus = load_text(f"file:{path}")
    n_train = int(len(text) * 0.9)
    assert corpus.train.numel() == n_train
    assert corpus.val.numel() == len(text) - n_train
    assert corpus.vocab == tuple(sorted(set(text)))
    assert corpus.decode(torch.cat([corpus.train, corpus.val])) == text
    assert corpus.unknown is None
    # an edited file is read again, not served from the memo
    path.write_text(text + "more text\n", "utf-8")
    assert load_text(f"file:{path}").val.numel() > corpus.val.numel()


def test_file_corpus_errors(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(AirlabError, match="not found") as info:
        load_text(f"file:{missing}")
    assert str(missing) in str(info.value)

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(AirlabError, match="at least") as info:
        load_text(f"file:{empty}")
    assert str(empty) in str(info.value)

    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hello\n")
    with pytest.raises(AirlabError, match="at least"):
        load_text(f"file:{tiny}")

    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\xff\xfe" + b"x" * 2000)
    with pytest.raises(AirlabError, match="not UTF-8") as info:
        load_text(f"file:{binary}")
    assert str(binary) in str(info.value)

    with pytest.raises(AirlabError, match="needs a path"):
        load_text("file:")


# ---------------------------------------------------------------- names


def test_unknown_name_suggests_close_match():
    with pytest.raises(AirlabError, match="did you mean 'shakespeare'"):
        load_text("shakspeare")
    with pytest.raises(AirlabError) as info:
        load_text("zzz")
    assert "file:PATH" in str(info.value)
    with pytest.raises(AirlabError, match="vision dataset"):
        load_text("mnist")
    assert set(TEXT_CORPORA) == {"pycode", "pydoc", "shakespeare"}
