"""Vision datasets: digits (bundled), MNIST from shared data, IDX parsing, verified downloads."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from airlab_data_fixtures import (  # noqa: F401  (pytest fixtures)
    fixture_closed_url,
    fixture_http_server,
    fixture_isolated_data_env,
    fixture_shared_data,
)

from airlab.data import VISION_DATASETS, VisionData, describe_datasets, load_vision, read_idx
from airlab.data import vision as vision_mod
from airlab.errors import AirlabError

STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
T10K = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    raw = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    raw += struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def fake_set(folder: Path, *, n_train: int | None, n_test: int, compress: bool) -> None:
    rng = np.random.RandomState(1)
    ext = ".gz" if compress else ""
    pairs = [(T10K, n_test)] + ([(STEMS, n_train)] if n_train else [])
    for (images, labels), n in pairs:
        write_idx(folder / f"{images}{ext}", rng.randint(0, 256, (n, 28, 28)), compress=compress)
        write_idx(folder / f"{labels}{ext}", np.arange(n) % 10, compress=compress)


def check_shapes(data: VisionData, n_train: int, n_val: int, shape=(1, 28, 28)) -> None:
    assert data.input_shape == shape
    assert data.x_train.shape == (n_train, *shape) and data.x_val.shape == (n_val, *shape)
    assert data.x_train.dtype == torch.float32 and data.x_val.dtype == torch.float32
    assert data.y_train.shape == (n_train,) and data.y_val.shape == (n_val,)
    assert data.y_train.dtype == torch.int64 and data.y_val.dtype == torch.int64
    assert data.n_classes == 10


# ---------------------------------------------------------------- digits


def test_digits():
    data = load_vision("digits")
    check_shapes(data, 1_437, 360, (1, 8, 8))
    assert set(data.y_train.tolist()) == set(range(10)) == set(data.y_val.tolist())
    assert abs(float(data.x_train.mean())) < 1e-4
    assert abs(float(data.x_train.std()) - 1.0) < 1e-3
    assert "load_digits" in data.source
    vision_mod.clear_vision_cache()
    again = load_vision("digits")
    assert again is not data
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_val, data.y_val)


# ---------------------------------------------------------------- mnist, real files


def test_mnist_t10k_from_shared_data(shared_data, tmp_path):
    data = load_vision("mnist", data_dir=shared_data, cache_dir=tmp_path / "nocache")
    check_shapes(data, 8_000, 2_000)
    assert int(data.y_train.min()) == 0 and int(data.y_train.max()) == 9
    assert set(data.y_val.tolist()) == set(range(10))
    assert abs(float(data.x_train.mean())) < 1e-4
    assert abs(float(data.x_train.std()) - 1.0) < 1e-3
    assert "t10k" in data.source and "8,000 train / 2,000 val" in data.source
    assert str(shared_data / "mnist") in data.source
    labels = read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz")
    both = torch.cat([data.y_train, data.y_val]).bincount(minlength=10)
    assert torch.equal(both, torch.from_numpy(np.bincount(labels, minlength=10)))
    assert load_vision("mnist", data_dir=shared_data, cache_dir=tmp_path / "nocache") is data


def test_read_idx_real_files(shared_data):
    images = read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and set(np.unique(labels)) == set(range(10))


# ---------------------------------------------------------------- read_idx errors


def _corrupt_magic_checks(raw: bytes, folder: Path) -> None:
    bad = folder / "t10k-labels-idx1-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x01" + raw[4:])
    with pytest.raises(AirlabError, match="not an IDX file") as info:
        read_idx(bad)
    assert str(bad) in str(info.value)
    bad_gz = folder / "t10k-labels-idx1-ubyte.gz"
    bad_gz.write_bytes(gzip.compress(b"\x00\x00\x99\x01" + raw[4:]))
    with pytest.raises(AirlabError, match="not an IDX file") as info:
        read_idx(bad_gz)
    assert str(bad_gz) in str(info.value)


def test_read_idx_refuses_bad_magic(tmp_path):
    good = write_idx(tmp_path / "good", np.arange(100) % 10)
    _corrupt_magic_checks(good.read_bytes(), tmp_path)


def test_read_idx_refuses_bad_magic_in_real_file(tmp_path, shared_data):
    raw = gzip.decompress((shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    _corrupt_magic_checks(raw, tmp_path)


def test_read_idx_refuses_wrong_sizes_and_damage(tmp_path):
    path = write_idx(tmp_path / "x.idx", np.zeros((5, 4, 4)))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(AirlabError, match="needs 80") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 100)[:-12])
    with pytest.raises(AirlabError, match="cannot read IDX") as info:
        read_idx(broken)
    assert str(broken) in str(info.value)
    assert read_idx(write_idx(tmp_path / "ok", np.arange(6).reshape(2, 3))).tolist() == [
        [0, 1, 2],
        [3, 4, 5],
    ]


# ---------------------------------------------------------------- local full set / cache


def test_mnist_full_set_uses_train_and_test(tmp_path):
    fake_set(tmp_path / "data" / "mnist", n_train=30, n_test=20, compress=False)
    data = load_vision("mnist", data_dir=tmp_path / "data")
    check_shapes(data, 30, 20)
    assert "(train)" in data.source and "(val)" in data.source


def test_fashion_mnist_t10k_only_from_cache(tmp_path):
    fake_set(tmp_path / "cache" / "fashion-mnist", n_train=None, n_test=10_000, compress=True)
    data = load_vision("fashion-mnist", data_dir=tmp_path / "empty", cache_dir=tmp_path / "cache")
    check_shapes(data, 8_000, 2_000)


def test_mnist_mismatched_pair_refused(tmp_path):
    folder = tmp_path / "data" / "mnist"
    write_idx(folder / T10K[0], np.zeros((10, 28, 28)))
    write_idx(folder / T10K[1], np.zeros(9))
    with pytest.raises(AirlabError, match="10 images but") as info:
        load_vision("mnist", data_dir=tmp_path / "data")
    assert str(folder / T10K[1]) in str(info.value)


# ---------------------------------------------------------------- downloads


def _serve_fake(http_server, monkeypatch, spec, *, n_train=30, n_test=20) -> dict[str, str]:
    fake_set(http_server.root, n_train=n_train, n_test=n_test, compress=True)
    hashes = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in http_server.root.iterdir()
    }
    monkeypatch.setenv(spec.url_env, http_server.url.rstrip("/"))
    return hashes


def test_mnist_download_verified(http_server, monkeypatch, tmp_path):
    hashes = _serve_fake(http_server, monkeypatch, vision_mod.MNIST)
    for name, digest in hashes.items():  # the table pins the served (synthetic) files
        monkeypatch.setitem(vision_mod.MNIST.sha256, name, digest)
    cache = tmp_path / "dl"
    data = load_vision("mnist", data_dir=tmp_path / "empty", cache_dir=cache)
    check_shapes(data, 30, 20)
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(hashes)


def test_mnist_download_with_canonical_hashes_refuses_other_bytes(
    http_server, monkeypatch, tmp_path
):
    _serve_fake(http_server, monkeypatch, vision_mod.MNIST)
    with pytest.raises(AirlabError, match="sha256 mismatch") as info:
        load_vision("mnist", cache_dir=tmp_path / "dl")
    assert vision_mod.MNIST_SHA256["train-images-idx3-ubyte.gz"] in str(info.value)
    assert not list((tmp_path / "dl" / "mnist").iterdir())


def test_unknown_hash_needs_explicit_opt_in(http_server, monkeypatch, tmp_path):
    hashes = _serve_fake(http_server, monkeypatch, vision_mod.FASHION_MNIST)
    for name, digest in hashes.items():
        monkeypatch.setitem(vision_mod.FASHION_MNIST.sha256, name, digest)
    monkeypatch.delitem(vision_mod.FASHION_MNIST.sha256, "train-images-idx3-ubyte.gz")
    with pytest.raises(AirlabError, match="no known sha256") as info:
        load_vision("fashion-mnist", cache_dir=tmp_path / "dl")
    assert "AIRLAB_ALLOW_UNVERIFIED=1" in str(info.value)
    monkeypatch.setenv("AIRLAB_ALLOW_UNVERIFIED", "1")
    check_shapes(load_vision("fashion-mnist", cache_dir=tmp_path / "dl"), 30, 20)


def test_missing_everywhere_names_paths(tmp_path):
    # the autouse fixture points AIRLAB_MNIST_URL at a closed port
    data_dir, cache = tmp_path / "nodata", tmp_path / "nocache"
    with pytest.raises(AirlabError) as info:
        load_vision("mnist", data_dir=data_dir, cache_dir=cache)
    msg = str(info.value)
    assert str(data_dir / "mnist") in msg and str(cache / "mnist") in msg
    assert "--data-dir" in msg and "AIRLAB_DATA_DIR" in msg


# ---------------------------------------------------------------- names


def test_unknown_vision_name():
    with pytest.raises(AirlabError, match="did you mean 'mnist'"):
        load_vision("mnsit")
    with pytest.raises(AirlabError, match="text corpus"):
        load_vision("shakespeare")
    assert set(VISION_DATASETS) == {"digits", "mnist", "fashion-mnist", "cifar10"}


def test_describe_datasets(tmp_path):
    fake_set(tmp_path / "data" / "mnist", n_train=None, n_test=20, compress=True)
    rows = describe_datasets(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {
        "pycode",
        "pydoc",
        "shakespeare",
        "file:PATH",
        "digits",
        "mnist",
        "fashion-mnist",
        "cifar10",
    }
    assert {row["kind"] for row in rows} == {"text", "vision"}
    assert all(row["source"] for row in rows)
    assert by_name["mnist"]["local"] == str(tmp_path / "data" / "mnist")
    assert by_name["fashion-mnist"]["local"] is None
    assert by_name["cifar10"]["local"] is None
    assert by_name["shakespeare"]["local"] is None
