"""Small image-classification datasets as ready tensors.

Every dataset is a :class:`VisionData`: float32 ``(N, C, H, W)`` images normalised with the
TRAIN part's mean and standard deviation (one scalar pair per channel), int64 labels, and a
``source`` string recording exactly which files (or which bundled data) were used.

Datasets (``load_vision(name)``):

``digits``
    scikit-learn's bundled ``load_digits``: 1,797 real 8x8 digits (values 0-16), no download.
    Fixed split: ``numpy.random.RandomState(0).permutation(1797)``, first 1,437 (80%) train,
    remaining 360 validation. This split is part of the data, not of an experiment's seed.

``mnist`` / ``fashion-mnist``
    IDX files (``.gz`` or raw) in ``<dir>/mnist/`` resp. ``<dir>/fashion-mnist/``. Folders are
    tried in order ``data_dir`` (--data-dir / AIRLAB_DATA_DIR via Settings), then
    ``cache_dir``; the first folder with a usable set wins, so an explicit data folder is never
    overridden by a cache:

    - train (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``) and test (``t10k-*``)
      files: train = the 60,000 training images, validation = the 10,000 test images;
    - only the ``t10k-*`` files: the 10,000 test images are split by
      ``RandomState(0).permutation(10000)`` into 8,000 train / 2,000 validation (the test
      file's halves come from different writer populations, so a contiguous cut would be
      biased). ``source`` says so.

    With no local set, the four ``.gz`` files are downloaded into ``<cache_dir>/<name>/`` from
    the base URL (env ``AIRLAB_MNIST_URL`` / ``AIRLAB_FASHION_MNIST_URL`` override the
    defaults) and each is verified against the sha256 table below before use. A file with no
    known sha256 is refused unless env ``AIRLAB_ALLOW_UNVERIFIED=1`` (then it is used
    unverified). The tables hold the published sha256 of the canonical gzip files (the same
    values TensorFlow Datasets and torchvision pin); note that other mirrors may recompress
    the same data, e.g. the t10k copies in a shared data folder can hash differently as
    ``.gz`` while decompressing to identical bytes, which is why local files are checked by
    structure (``read_idx``), not by their gzip hash.

``cifar10``
    CIFAR-10 (Krizhevsky 2009), the official python version: 3x32x32 colour images, 10
    classes. train = the 50,000 images of ``data_batch_1..5``, validation = the 10,000 of
    ``test_batch`` (as mnist: the dataset's own train/test split; ``select`` runs hold part
    of the training set out, see ``vision_select_split``). A local folder (``cifar10/``,
    ``cifar10/cifar-10-batches-py/``, ``cifar-10-batches-py/``) or
    ``cifar10/cifar-10-python.tar.gz`` under ``data_dir``, then ``cache_dir``; else a download
    verified by sha256 and md5 (env ``AIRLAB_CIFAR10_URL`` overrides the URL). The pickled
    batches are read with a restricted unpickler, and kept as uint8 arrays in
    ``<cache_dir>/cifar10/cifar10-uint8.npz`` after the first read: see
    :mod:`airlab.data.cifar`. Normalised per channel by the 50,000 training images' exact
    mean and standard deviation; on the real set these are about (125.3, 123.0, 113.9) and
    (63.0, 62.1, 66.7) in 0..255 pixel units, i.e. the usual (0.4914, 0.4822, 0.4465) and
    (0.2470, 0.2435, 0.2616) on a 0..1 scale.

Loads are memoised per process, keyed by the files used (path, size, mtime). Treat the
returned tensors as read-only; they are shared.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from airlab.data import cifar
from airlab.data.download import fetch, resolve_dirs
from airlab.errors import AirlabError, did_you_mean

ALLOW_UNVERIFIED_ENV = "AIRLAB_ALLOW_UNVERIFIED"

MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


def _sha256_table(text: str) -> dict[str, str]:
    """Parse ``sha256sum`` output lines ("<hash>  <file name>") into {file name: hash}."""
    return {name: digest for digest, name in (line.split() for line in text.strip().splitlines())}


# sha256 of the canonical gzip files, in `sha256sum -c` format (the values TensorFlow Datasets
# and torchvision pin). Leave a file out rather than guess: unknown files are not downloaded.
MNIST_SHA256 = _sha256_table(
    """
440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609  train-images-idx3-ubyte.gz
3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c  train-labels-idx1-ubyte.gz
8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6  t10k-images-idx3-ubyte.gz
f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6  t10k-labels-idx1-ubyte.gz
"""
)
FASHION_MNIST_SHA256 = _sha256_table(
    """
3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84  train-images-idx3-ubyte.gz
a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845  train-labels-idx1-ubyte.gz
346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073  t10k-images-idx3-ubyte.gz
67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5  t10k-labels-idx1-ubyte.gz
"""
)

DIGITS_TRAIN_FRACTION = 0.8
T10K_TRAIN = 8_000  # t10k-only fallback: 8,000 train / 2,000 validation
SPLIT_SEED = 0  # the data split's own fixed seed, independent of experiment seeds


@dataclass(frozen=True, eq=False, repr=False)
class VisionData:
    name: str
    x_train: torch.Tensor  # float32 (N, C, H, W), normalised with train mean/std
    y_train: torch.Tensor  # int64 (N,)
    x_val: torch.Tensor  # float32 (M, C, H, W), same normalisation
    y_val: torch.Tensor  # int64 (M,)
    n_classes: int
    source: str  # the files (or bundled data) used, and how they were split

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def __repr__(self) -> str:
        return (
            f"VisionData(name={self.name!r}, train={len(self.y_train):,}, "
            f"val={len(self.y_val):,}, input_shape={self.input_shape}, "
            f"n_classes={self.n_classes})"
        )


# --------------------------------------------------------------------------- IDX files

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw; detected from the content) into an array.

    The header is ``0x00 0x00 <type> <ndim>`` then ``ndim`` big-endian uint32 sizes, e.g.
    magic 0x00000801 for a 1-D uint8 label file and 0x00000803 for 3-D uint8 images. A wrong
    magic, an unknown type, or a payload whose length does not match the sizes raises
    AirlabError naming the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise AirlabError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise AirlabError(
            f"cannot read IDX file {path}: {exc}", "the file is damaged; fetch it again"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        magic = raw[:4].hex() if len(raw) >= 4 else f"only {len(raw)} bytes"
        raise AirlabError(
            f"{path} is not an IDX file (magic {magic}; expected 00000801 for labels or "
            "00000803 for images)",
            "the file is damaged or of another format; fetch it again",
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise AirlabError(f"IDX file {path} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise AirlabError(
            f"IDX file {path} holds {len(raw) - header:,} data bytes but its header "
            f"{shape} needs {expected:,}",
            "the file is truncated or damaged; fetch it again",
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="), copy=True)
    )


# --------------------------------------------------------------------------- helpers


def _normalise(x_train: np.ndarray, x_val: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 tensors scaled by the train part's per-channel mean and std."""
    x_train = x_train.astype(np.float32)
    x_val = x_val.astype(np.float32)
    axes = (0, 2, 3)
    mean = x_train.mean(axis=axes, dtype=np.float64, keepdims=True)
    std = x_train.std(axis=axes, dtype=np.float64, keepdims=True)
    std = np.where(std > 0, std, 1.0)
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    return (
        torch.from_numpy((x_train - mean) / std),
        torch.from_numpy((x_val - mean) / std),
    )


def _normalise_uint8(
    x_train: np.ndarray, x_val: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`_normalise` does, for uint8 images too large for its temporaries.

    The per-channel mean and (population) standard deviation are exact: computed from each
    channel's histogram of the 256 pixel values, in chunks, so no float64 copy of the images
    is made (``_normalise`` on CIFAR-10 would hold about 2 GB at once). The scaling runs in
    float32 in place, the same arithmetic as ``_normalise``: ``(x - mean) / std``.
    """
    values = np.arange(256, dtype=np.float64)
    n_ch = x_train.shape[1]
    mean = np.zeros(n_ch, dtype=np.float64)
    std = np.ones(n_ch, dtype=np.float64)
    chunk = 4096
    for c in range(n_ch):
        hist = np.zeros(256, dtype=np.int64)
        for i in range(0, len(x_train), chunk):
            hist += np.bincount(x_train[i : i + chunk, c].ravel(), minlength=256)
        n = int(hist.sum())
        if n:
            m = float(hist @ values) / n
            var = float(hist @ (values - m) ** 2) / n
            mean[c] = m
            std[c] = np.sqrt(var) if var > 0 else 1.0
    shape = (1, n_ch) + (1,) * (x_train.ndim - 2)
    mean32 = mean.astype(np.float32).reshape(shape)
    std32 = std.astype(np.float32).reshape(shape)
    out = []
    for x in (x_train, x_val):
        f = x.astype(np.float32)
        f -= mean32
        f /= std32
        out.append(torch.from_numpy(f))
    return out[0], out[1]


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(y.astype(np.int64))


# --------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _load_digits_cached() -> VisionData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float32)[:, None, :, :]  # (1797, 1, 8, 8), 0..16
    y = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.RandomState(SPLIT_SEED).permutation(len(y))
    n_train = int(len(y) * DIGITS_TRAIN_FRACTION)
    tr, va = order[:n_train], order[n_train:]
    x_train, x_val = _normalise(x[tr], x[va])
    return VisionData(
        name="digits",
        x_train=x_train,
        y_train=_labels(y[tr]),
        x_val=x_val,
        y_val=_labels(y[va]),
        n_classes=10,
        source=(
            f"sklearn load_digits ({len(y)} 8x8 images); split RandomState({SPLIT_SEED}) "
            f"permutation, {len(tr)} train / {len(va)} val"
        ),
    )


def _digits(data_dir: Path | None, cache_dir: Path | None) -> VisionData:
    return _load_digits_cached()


# --------------------------------------------------------------------------- IDX datasets

_STEMS = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class _IdxSpec:
    name: str  # dataset name and folder name
    url_env: str
    default_url: str
    sha256: dict[str, str]
    n_classes: int = 10


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _local_set(folder: Path) -> dict[str, Path] | None:
    """The usable file set in ``folder``: all four files, else the two t10k ones, else None."""
    found = {key: _find(folder, stem) for key, stem in _STEMS.items()}
    if all(found.values()):
        return {k: v for k, v in found.items() if v is not None}
    if found["test_x"] and found["test_y"]:
        return {"test_x": found["test_x"], "test_y": found["test_y"]}
    return None


def _download_set(spec: _IdxSpec, folder: Path) -> dict[str, Path]:
    base = os.environ.get(spec.url_env) or spec.default_url
    if not base.endswith("/"):
        base += "/"
    allow_unverified = os.environ.get(ALLOW_UNVERIFIED_ENV) == "1"
    files: dict[str, Path] = {}
    for key, stem in _STEMS.items():
        fname = f"{stem}.gz"
        sha = spec.sha256.get(fname)
        if sha is None and not allow_unverified:
            raise AirlabError(
                f"no known sha256 for {spec.name} file {fname}, so it is not downloaded unverified",
                f"place the files in <data_dir>/{spec.name}/ and pass --data-dir or set "
                f"AIRLAB_DATA_DIR; or set {ALLOW_UNVERIFIED_ENV}=1 to accept an unverified "
                "download",
            )
        files[key] = fetch(base + fname, sha, folder / fname)
    return files


def _check_pair(
    images: np.ndarray, labels: np.ndarray, paths: tuple[Path, Path], n_classes: int
) -> None:
    img_path, lbl_path = paths
    if images.ndim != 3:
        raise AirlabError(f"{img_path} holds an array of shape {images.shape}, not images (N,H,W)")
    if labels.ndim != 1:
        raise AirlabError(f"{lbl_path} holds an array of shape {labels.shape}, not labels (N,)")
    if len(images) != len(labels):
        raise AirlabError(
            f"{img_path} has {len(images):,} images but {lbl_path} has {len(labels):,} labels",
            "the two files do not belong together",
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise AirlabError(f"{lbl_path} has labels outside 0..{n_classes - 1}")


@functools.lru_cache(maxsize=4)
def _load_idx_cached(
    name: str, n_classes: int, files: tuple[tuple[str, Path, int, int], ...]
) -> VisionData:
    # (key, path, size, mtime_ns): size and mtime only make an edited file load again.
    paths = {key: path for key, path, _, _ in files}
    arrays = {key: read_idx(path) for key, path in paths.items()}
    _check_pair(arrays["test_x"], arrays["test_y"], (paths["test_x"], paths["test_y"]), n_classes)
    if "train_x" in arrays:
        _check_pair(
            arrays["train_x"], arrays["train_y"], (paths["train_x"], paths["train_y"]), n_classes
        )
        x_tr, y_tr = arrays["train_x"], arrays["train_y"]
        x_va, y_va = arrays["test_x"], arrays["test_y"]
        source = (
            f"{paths['train_x']}, {paths['train_y']} (train); "
            f"{paths['test_x']}, {paths['test_y']} (val)"
        )
    else:
        x, y = arrays["test_x"], arrays["test_y"]
        if len(y) <= T10K_TRAIN:
            raise AirlabError(
                f"{paths['test_y']} has {len(y):,} examples; the t10k-only split needs more "
                f"than {T10K_TRAIN:,}"
            )
        order = np.random.RandomState(SPLIT_SEED).permutation(len(y))
        tr, va = order[:T10K_TRAIN], order[T10K_TRAIN:]
        x_tr, y_tr, x_va, y_va = x[tr], y[tr], x[va], y[va]
        source = (
            f"{paths['test_x']}, {paths['test_y']}: t10k only, split RandomState({SPLIT_SEED}) "
            f"permutation into {len(tr):,} train / {len(va):,} val"
        )
    if x_tr.shape[1:] != x_va.shape[1:]:
        raise AirlabError(
            f"{name}: train images are {x_tr.shape[1:]} but validation images {x_va.shape[1:]}"
        )
    x_train, x_val = _normalise(x_tr[:, None], x_va[:, None])
    return VisionData(
        name=name,
        x_train=x_train,
        y_train=_labels(y_tr),
        x_val=x_val,
        y_val=_labels(y_va),
        n_classes=n_classes,
        source=source,
    )


def _idx_loader(spec: _IdxSpec) -> Callable[[Path | None, Path | None], VisionData]:
    def load(data_dir: Path | None, cache_dir: Path | None) -> VisionData:
        folders = [d / spec.name for d in (data_dir, cache_dir) if d is not None]
        files = next((s for s in map(_local_set, folders) if s is not None), None)
        if files is None:
            if cache_dir is None:
                raise _missing(spec, folders, None)
            try:
                files = _download_set(spec, cache_dir / spec.name)
            except AirlabError as exc:
                raise _missing(spec, folders, exc) from None
        key = []
        for k, path in sorted(files.items()):
            st = path.stat()
            key.append((k, path, st.st_size, st.st_mtime_ns))
        return _load_idx_cached(spec.name, spec.n_classes, tuple(key))

    load.__doc__ = f"Load {spec.name} from local IDX files or a verified download."
    return load


def _missing(spec: _IdxSpec, folders: list[Path], exc: AirlabError | None) -> AirlabError:
    looked = ", ".join(str(f) for f in folders) or "no folder (no data_dir or cache_dir)"
    why = f"; download refused or failed: {exc.message}" if exc is not None else ""
    hint = (
        f"put the IDX files in <data_dir>/{spec.name}/ and pass --data-dir or set "
        f"AIRLAB_DATA_DIR, or make {spec.url_env} point at a reachable copy"
    )
    if exc is not None and exc.hint:
        hint += f"; {exc.hint}"
    return AirlabError(
        f"{spec.name} files not found (looked in: {looked}; need t10k-images-idx3-ubyte[.gz] "
        f"and t10k-labels-idx1-ubyte[.gz], plus the train-* pair for the full set){why}",
        hint,
    )


MNIST = _IdxSpec("mnist", "AIRLAB_MNIST_URL", MNIST_URL, MNIST_SHA256)
FASHION_MNIST = _IdxSpec(
    "fashion-mnist", "AIRLAB_FASHION_MNIST_URL", FASHION_MNIST_URL, FASHION_MNIST_SHA256
)

# --------------------------------------------------------------------------- cifar10


@functools.lru_cache(maxsize=1)  # about 740 MB of float32: one copy at most
def _load_cifar_cached(source: Path, key: str, cache_dir: Path | None) -> VisionData:
    # key: the source files' path, size and mtime, so an edited file loads again.
    arrays = cifar.read_source(source, key, cache_dir)
    x_train, x_val = _normalise_uint8(arrays.x_train, arrays.x_test)
    return VisionData(
        name=cifar.NAME,
        x_train=x_train,
        y_train=_labels(arrays.y_train),
        x_val=x_val,
        y_val=_labels(arrays.y_test),
        n_classes=cifar.N_CLASSES,
        source=arrays.source,
    )


def _cifar10(data_dir: Path | None, cache_dir: Path | None) -> VisionData:
    source = cifar.locate(data_dir, cache_dir)
    return _load_cifar_cached(source, cifar.identity(source), cache_dir)


# --------------------------------------------------------------------------- registry

VisionLoader = Callable[[Path | None, Path | None], VisionData]

VISION_DATASETS: dict[str, VisionLoader] = {
    "digits": _digits,
    "mnist": _idx_loader(MNIST),
    "fashion-mnist": _idx_loader(FASHION_MNIST),
    "cifar10": _cifar10,
}


def load_vision(
    name: str, *, data_dir: Path | None = None, cache_dir: Path | None = None
) -> VisionData:
    """Load an image dataset by name: ``digits``, ``mnist``, ``fashion-mnist`` or ``cifar10``.

    ``data_dir`` (local copies) and ``cache_dir`` (downloads) come from the caller's Settings;
    None means no such folder. Raises AirlabError for unknown names, missing or damaged files
    and failed downloads.
    """
    loader = VISION_DATASETS.get(name)
    if loader is None:
        raise AirlabError(f"unknown vision dataset '{name}'", did_you_mean(name, VISION_DATASETS))
    return loader(*resolve_dirs(data_dir, cache_dir))


def clear_vision_cache() -> None:
    """Forget memoised datasets."""
    _load_digits_cached.cache_clear()
    _load_idx_cached.cache_clear()
    _load_cifar_cached.cache_clear()
