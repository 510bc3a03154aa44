"""CIFAR-10: archives in the official python-version format, served from 127.0.0.1.

The real archive (170 MB) cannot be fetched here, so each test builds a small one in the
exact official layout: ``cifar-10-batches-py/data_batch_1..5``, ``test_batch`` and
``batches.meta`` in a tar.gz, each batch a Python 2 protocol-2 pickle of a dict with
``b"data"`` (uint8 (N, 3072)) and ``b"labels"``, 60 images per batch. The expected hashes of
the served archive are pinned the way the MNIST tests pin theirs; nothing fakes the real
archive's hash, which stays what the module publishes.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from airlab_data_fixtures import (  # noqa: F401  (pytest fixtures)
    LoopbackServer,
    fixture_closed_url,
    fixture_http_server,
    fixture_isolated_data_env,
)

from airlab.data import VISION_DATASETS, cifar, describe_datasets, load_vision
from airlab.data import vision as vision_mod
from airlab.errors import AirlabError

N_PER_BATCH = 60
NAMES = (*cifar.TRAIN_BATCHES, cifar.TEST_BATCH)
_SCRIPT = shutil.which("airlab", path=str(Path(sys.executable).parent))


# ---------------------------------------------------------------- building the official format


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the real batches: byte strings as
    (SHORT_)BINSTRING, numpy globals under ``numpy.core`` (pure-Python pickler, so that the
    opcodes can be chosen)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else (
            pickle.BINSTRING + struct.pack("<i", n))
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj: object, name: str | None = None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[types.FunctionType] = save_global


def dumps(obj: object, protocol: int | None = None) -> bytes:
    """Python 2 style (the real files) by default; a Python 3 protocol when given."""
    if protocol is not None:
        return pickle.dumps(obj, protocol=protocol)
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def make_batches(seed: int = 0, n: int = N_PER_BATCH) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.RandomState(seed)
    out = {}
    for i, name in enumerate(NAMES):
        data = rng.randint(0, 256, (n, 3072)).astype(np.uint8)
        data[:, :1024] //= 2  # channels with different statistics
        data[:, 2048:] = 255 - data[:, 2048:] // 3
        labels = [int(v) for v in (np.arange(n) + i) % 10]
        out[name] = (data, labels)
    return out


def batch_files(batches, protocol: int | None = None) -> dict[str, bytes]:
    files = {}
    for i, (name, (data, labels)) in enumerate(batches.items()):
        label = (b"testing batch 1 of 1" if name == cifar.TEST_BATCH
                 else f"training batch {i + 1} of 5".encode())
        files[name] = dumps({b"batch_label": label, b"labels": labels, b"data": data,
                             b"filenames": [f"img_{j}.png".encode() for j in range(len(labels))]},
                            protocol)
    files["batches.meta"] = dumps({b"num_cases_per_batch": N_PER_BATCH, b"num_vis": 3072,
                                   b"label_names": [b"airplane", b"automobile", b"bird", b"cat",
                                                    b"deer", b"dog", b"frog", b"horse", b"ship",
                                                    b"truck"]}, protocol)
    files["readme.html"] = b"<html>CIFAR-10</html>\n"
    return files


def write_archive(path: Path, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        folder = tarfile.TarInfo(cifar.BATCH_DIR)
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, raw in files.items():
            info = tarfile.TarInfo(f"{cifar.BATCH_DIR}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder


def expected_raw(batches) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x_tr = np.concatenate([batches[n][0] for n in cifar.TRAIN_BATCHES]).reshape(-1, 3, 32, 32)
    y_tr = np.concatenate([batches[n][1] for n in cifar.TRAIN_BATCHES])
    x_te, y_te = batches[cifar.TEST_BATCH]
    return x_tr, y_tr, x_te.reshape(-1, 3, 32, 32), np.asarray(y_te)


def check_data(data, batches) -> None:
    x_tr, y_tr, x_te, y_te = expected_raw(batches)
    assert data.name == "cifar10" and data.n_classes == 10 and data.input_shape == (3, 32, 32)
    assert data.x_train.shape == (5 * N_PER_BATCH, 3, 32, 32)
    assert data.x_val.shape == (N_PER_BATCH, 3, 32, 32)
    assert data.x_train.dtype == data.x_val.dtype == torch.float32
    assert data.y_train.dtype == data.y_val.dtype == torch.int64
    assert data.y_train.tolist() == y_tr.tolist() and data.y_val.tolist() == y_te.tolist()
    # per channel: the training part's mean and std, exactly what _normalise computes
    want_tr, want_va = vision_mod._normalise(x_tr, x_te)
    assert torch.allclose(data.x_train, want_tr, atol=1e-5)
    assert torch.allclose(data.x_val, want_va, atol=1e-5)
    per_channel = data.x_train.transpose(0, 1).reshape(3, -1)
    assert per_channel.mean(1).abs().max() < 1e-4
    assert (per_channel.std(1, unbiased=False) - 1).abs().max() < 1e-4
    assert "(300 train)" in data.source and "test_batch (60 val)" in data.source


def serve(server: LoopbackServer, monkeypatch, files, *, pin: bool = True) -> str:
    """Serve an archive of ``files``; pin its sha256 and md5 (as the MNIST tests pin theirs)."""
    archive = write_archive(server.root / cifar.ARCHIVE, files)
    raw = archive.read_bytes()
    if pin:
        monkeypatch.setitem(cifar.CIFAR10_SHA256, cifar.ARCHIVE, hashlib.sha256(raw).hexdigest())
        monkeypatch.setitem(cifar.CIFAR10_MD5, cifar.ARCHIVE, hashlib.md5(raw).hexdigest())
    url = server.url + cifar.ARCHIVE
    monkeypatch.setenv(cifar.CIFAR10_URL_ENV, url)
    return url


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- the published checksums


def test_published_checksums_are_the_real_archives():
    # Keras pins this sha256 for the canonical URL; the author's page publishes this md5.
    assert cifar.CIFAR10_SHA256[cifar.ARCHIVE] == (
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce")
    assert cifar.CIFAR10_MD5[cifar.ARCHIVE] == "c58f30108f718f92721af3b95e74349a"
    assert cifar.CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert "cifar10" in VISION_DATASETS


# ---------------------------------------------------------------- verified download


def test_download_verified_then_offline_from_cache(http_server, monkeypatch, tmp_path):
    batches = make_batches()
    serve(http_server, monkeypatch, batch_files(batches))
    cache = tmp_path / "dl"
    data = load_vision("cifar10", data_dir=tmp_path / "empty", cache_dir=cache)
    check_data(data, batches)
    assert str(cache / "cifar10" / cifar.ARCHIVE) in data.source
    assert sorted(p.name for p in (cache / "cifar10").iterdir()) == [
        cifar.ARCHIVE, cifar.CACHE_FILE]
    assert load_vision("cifar10", data_dir=tmp_path / "empty", cache_dir=cache) is data

    # Offline: the server is gone; the verified archive and its tensor file serve on.
    http_server.stop()
    vision_mod.clear_vision_cache()
    again = load_vision("cifar10", cache_dir=cache)
    assert again is not data and again.source == data.source
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_val, data.y_val)


def test_raw_pixels_keep_the_official_layout(tmp_path):
    # each row: 1,024 red, then green, then blue values, each a 32x32 image row by row
    batches = make_batches()
    data, _ = batches["data_batch_1"]
    data[0, :] = 0
    data[0, 0 * 1024 + 1 * 32 + 2] = 200  # red, row 1, column 2
    data[0, 2 * 1024 + 31 * 32 + 0] = 77  # blue, row 31, column 0
    arrays = cifar.read_archive(write_archive(tmp_path / cifar.ARCHIVE, batch_files(batches)))
    assert arrays.x_train.dtype == np.uint8 and arrays.x_train.shape == (300, 3, 32, 32)
    assert arrays.x_train[0, 0, 1, 2] == 200 and arrays.x_train[0, 2, 31, 0] == 77
    assert int(arrays.x_train[0].sum()) == 277
    assert arrays.y_train[:3].tolist() == [0, 1, 2] and arrays.y_test[:2].tolist() == [5, 6]


def test_sha256_mismatch_is_refused_and_leaves_nothing(http_server, monkeypatch, tmp_path):
    # the real archive's published hashes: the small served archive must not pass them
    url = serve(http_server, monkeypatch, batch_files(make_batches()), pin=False)
    cache = tmp_path / "dl"
    with pytest.raises(AirlabError) as info:
        load_vision("cifar10", data_dir=tmp_path / "empty", cache_dir=cache)
    msg = one_line(info)
    assert "sha256 mismatch" in msg and url in msg
    assert cifar.CIFAR10_SHA256[cifar.ARCHIVE] in msg
    assert "<data_dir>/cifar10/" in msg and "AIRLAB_CIFAR10_URL" in msg
    assert list((cache / "cifar10").iterdir()) == []


def test_corrupted_download_is_refused(http_server, monkeypatch, tmp_path):
    serve(http_server, monkeypatch, batch_files(make_batches()))  # pins the good archive
    archive = http_server.root / cifar.ARCHIVE
    archive.write_bytes(archive.read_bytes()[:-100])  # the server now sends a truncated copy
    cache = tmp_path / "dl"
    with pytest.raises(AirlabError, match="sha256 mismatch") as info:
        load_vision("cifar10", cache_dir=cache)
    one_line(info)
    assert list((cache / "cifar10").iterdir()) == []


def test_md5_from_the_authors_page_is_checked_too(http_server, monkeypatch, tmp_path):
    serve(http_server, monkeypatch, batch_files(make_batches()))
    monkeypatch.setitem(cifar.CIFAR10_MD5, cifar.ARCHIVE, "0" * 32)
    cache = tmp_path / "dl"
    with pytest.raises(AirlabError, match="md5 mismatch") as info:
        load_vision("cifar10", cache_dir=cache)
    assert "0" * 32 in one_line(info)
    assert list((cache / "cifar10").iterdir()) == []


def test_url_env_may_name_a_folder(http_server, monkeypatch, tmp_path):
    batches = make_batches()
    serve(http_server, monkeypatch, batch_files(batches))
    monkeypatch.setenv(cifar.CIFAR10_URL_ENV, http_server.url)  # ends in "/": + archive name
    check_data(load_vision("cifar10", cache_dir=tmp_path / "dl"), batches)


def test_unknown_hash_needs_explicit_opt_in(http_server, monkeypatch, tmp_path):
    batches = make_batches()
    serve(http_server, monkeypatch, batch_files(batches))
    monkeypatch.delitem(cifar.CIFAR10_SHA256, cifar.ARCHIVE)
    monkeypatch.delitem(cifar.CIFAR10_MD5, cifar.ARCHIVE)
    with pytest.raises(AirlabError, match="no known sha256") as info:
        load_vision("cifar10", cache_dir=tmp_path / "dl")
    assert "AIRLAB_ALLOW_UNVERIFIED=1" in one_line(info)
    monkeypatch.setenv("AIRLAB_ALLOW_UNVERIFIED", "1")
    check_data(load_vision("cifar10", cache_dir=tmp_path / "dl"), batches)


def test_missing_offline_names_the_folders_and_the_env(tmp_path):
    # the autouse fixture points AIRLAB_CIFAR10_URL at a closed port
    with pytest.raises(AirlabError) as info:
        load_vision("cifar10", data_dir=tmp_path / "d", cache_dir=tmp_path / "c")
    msg = one_line(info)
    assert str(tmp_path / "d" / "cifar10") in msg and str(tmp_path / "c" / "cifar10") in msg
    assert "could not download" in msg and "<data_dir>/cifar10/" in msg
    assert "AIRLAB_DATA_DIR" in msg and "AIRLAB_CIFAR10_URL" in msg
    with pytest.raises(AirlabError, match="no data_dir or cache_dir"):
        load_vision("cifar10")


# ---------------------------------------------------------------- local copies


@pytest.mark.parametrize("where", ["cifar10", "cifar10/cifar-10-batches-py",
                                   "cifar-10-batches-py", "cifar10/cifar-10-python.tar.gz"])
def test_local_copy_in_data_dir(where, tmp_path):
    batches = make_batches(seed=3)
    files = batch_files(batches)
    target = tmp_path / "data" / where
    if where.endswith(".tar.gz"):
        write_archive(target, files)
    else:
        write_folder(target, files)
    data = load_vision("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    check_data(data, batches)
    assert data.source.startswith(str(target))
    rows = {r["name"]: r for r in describe_datasets(tmp_path / "data", tmp_path / "cache")}
    assert rows["cifar10"]["local"] == str(target)


def test_data_dir_wins_over_the_cache_and_python3_pickles_load(tmp_path):
    ours, cached = make_batches(seed=1), make_batches(seed=2)
    write_archive(tmp_path / "cache" / "cifar10" / cifar.ARCHIVE, batch_files(cached))
    write_folder(tmp_path / "data" / "cifar10", batch_files(ours, protocol=5))
    check_data(load_vision("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache"),
               ours)
    vision_mod.clear_vision_cache()
    check_data(load_vision("cifar10", data_dir=tmp_path / "nodata", cache_dir=tmp_path / "cache"),
               cached)


def test_tensor_cache_follows_its_source(tmp_path):
    batches = make_batches(seed=4)
    folder = write_folder(tmp_path / "data" / "cifar10", batch_files(batches))
    cache = tmp_path / "cache"
    load_vision("cifar10", data_dir=tmp_path / "data", cache_dir=cache)
    npz = cache / "cifar10" / cifar.CACHE_FILE
    assert npz.is_file()
    with np.load(npz, allow_pickle=False) as z:  # plain arrays: no pickle needed to read it
        assert z["x_train"].dtype == np.uint8 and z["x_train"].shape == (300, 3, 32, 32)

    # a changed source file is read again (and the cache rewritten), not served stale
    changed = make_batches(seed=5)
    write_folder(folder, {"test_batch": batch_files(changed)["test_batch"]})
    os.utime(folder / "test_batch", ns=(1, 1))
    vision_mod.clear_vision_cache()
    data = load_vision("cifar10", data_dir=tmp_path / "data", cache_dir=cache)
    assert data.y_val.tolist() == changed["test_batch"][1]
    with np.load(npz, allow_pickle=False) as z:
        assert z["y_test"].tolist() == changed["test_batch"][1]

    # a damaged cache file is rebuilt silently from the source
    npz.write_bytes(b"not a zip file")
    vision_mod.clear_vision_cache()
    assert load_vision("cifar10", data_dir=tmp_path / "data", cache_dir=cache).y_val.tolist() == (
        changed["test_batch"][1])
    assert npz.stat().st_size > 300 * 3072


# ---------------------------------------------------------------- damaged and hostile files


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_naming_other_globals_never_runs(tmp_path):
    batches = make_batches()
    files = batch_files(batches)
    marker = tmp_path / "pwned"
    files["data_batch_3"] = pickle.dumps({b"data": _Exploit(marker), b"labels": [0]})
    folder = write_folder(tmp_path / "data" / "cifar10", files)
    with pytest.raises(AirlabError) as info:
        load_vision("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    msg = one_line(info)
    assert str(folder / "data_batch_3") in msg and ".system" in msg
    assert "a CIFAR-10 batch never does" in msg
    assert not marker.exists()
    with pytest.raises(AirlabError, match="builtins.eval"):
        cifar.read_batch(b"\x80\x02cbuiltins\neval\nq\x00.", "x")
    assert not (tmp_path / "cache" / "cifar10" / cifar.CACHE_FILE).exists()


@pytest.mark.parametrize("change,match", [
    (lambda d: {**d, b"data": d[b"data"].astype(np.int16)}, "must be uint8"),
    (lambda d: {**d, b"data": d[b"data"][:, :3000]}, r"\(N, 3072\)"),
    (lambda d: {**d, b"labels": d[b"labels"][:-1]}, "60 images but 59 labels"),
    (lambda d: {**d, b"labels": [10] * len(d[b"labels"])}, r"labels outside 0\.\.9"),
    (lambda d: {**d, b"labels": [1.0] * len(d[b"labels"])}, "list of ints"),
    (lambda d: [d[b"data"]], "holds a list"),
])
def test_batch_structure_is_checked(change, match, tmp_path):
    data, labels = make_batches()["test_batch"]
    raw = dumps(change({b"data": data, b"labels": labels}))
    with pytest.raises(AirlabError, match=match) as info:
        cifar.read_batch(raw, str(tmp_path / "test_batch"))
    assert str(tmp_path / "test_batch") in one_line(info)


def test_damaged_or_incomplete_archive_is_refused(tmp_path):
    files = batch_files(make_batches())
    archive = write_archive(tmp_path / "data" / "cifar10" / cifar.ARCHIVE, files)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(AirlabError, match="cannot read CIFAR-10 archive") as info:
        load_vision("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    assert str(archive) in one_line(info)
    write_archive(archive, {k: v for k, v in files.items() if k != "data_batch_4"})
    vision_mod.clear_vision_cache()
    with pytest.raises(AirlabError, match="lacks cifar-10-batches-py/data_batch_4") as info:
        load_vision("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    one_line(info)


def test_a_folder_missing_a_batch_is_not_a_copy(tmp_path):
    files = batch_files(make_batches())
    del files["test_batch"]
    write_folder(tmp_path / "data" / "cifar10", files)
    with pytest.raises(AirlabError, match="cifar10 not found"):
        load_vision("cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------- training on it


def test_vision_workload_trains_on_the_served_archive(http_server, monkeypatch, tmp_path):
    from airlab.plan import resolve
    from airlab.run.trainer import train
    from airlab.settings import get_settings

    serve(http_server, monkeypatch, batch_files(make_batches()))
    settings = get_settings(home=str(tmp_path / "lab"))  # AIRLAB_CACHE_DIR: the test's cache
    for preset, flops in (("mlp", 3 * 2 * (3072 * 256 + 256 * 128 + 128 * 10)), ("cnn", None)):
        cfg = resolve(workload="vision", preset=preset, dataset="cifar10",
                      budget={"samples": 128}, options={"batch_size": 32, "warmup_steps": 2},
                      settings=settings)
        r = train(cfg, settings=settings)
        assert r.state == "finished", r.reason
        assert r.metrics["samples"] == 128 and np.isfinite(r.metrics["val_loss"])
        assert r.info["dataset_source"].startswith(str(settings.cache_dir / "cifar10"))
        assert r.info["val_samples"] == N_PER_BATCH
        if flops is not None:
            assert r.metrics["flops"] == pytest.approx(flops * 128)


# ---------------------------------------------------------------- the airlab command


def _airlab(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(_SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "400", **env})


@pytest.mark.skipif(_SCRIPT is None, reason="the airlab console script is not installed")
def test_cli_lists_it_and_a_missing_copy_is_one_line(tmp_path, closed_url):
    env = {"AIRLAB_HOME": str(tmp_path / "lab"), "AIRLAB_CACHE_DIR": str(tmp_path / "cache"),
           "AIRLAB_DATA_DIR": str(tmp_path / "data"), "AIRLAB_CIFAR10_URL": closed_url}
    p = _airlab("train", "vision", "--dataset", "cifar10", "--samples", "64", env=env)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert str(tmp_path / "data" / "cifar10") in lines[0]
    assert "<data_dir>/cifar10/" in lines[0] and "AIRLAB_CIFAR10_URL" in lines[0]

    write_folder(tmp_path / "data" / "cifar-10-batches-py", batch_files(make_batches()))
    p = _airlab("data", env=env)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("│ cifar10 "))
    cells = [ln.split("│")[1:-1] for ln in lines[start:] if ln.startswith("│")]
    cells = cells[: 1 + next((i for i, c in enumerate(cells[1:]) if c[0].strip()), len(cells))]
    source = " ".join(c[2].strip() for c in cells)  # a cell Rich wrapped, joined again
    local = "".join(c[3].strip() for c in cells)
    assert "AIRLAB_CIFAR10_URL" in source and cifar.CIFAR10_URL in source
    assert local == str(tmp_path / "data" / "cifar-10-batches-py")
