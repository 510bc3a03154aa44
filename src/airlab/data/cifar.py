"""CIFAR-10, the official "python version": where the files are, and reading them safely.

CIFAR-10 (Krizhevsky, 2009: *Learning Multiple Layers of Features from Tiny Images*) holds
60,000 32x32 colour images in 10 classes: five training batches of 10,000 (``data_batch_1`` ..
``data_batch_5``) and one test batch (``test_batch``). The python version ships them as pickled
dicts inside ``cifar-10-python.tar.gz``, under ``cifar-10-batches-py/``; each dict has
``b"data"`` (uint8 ``(N, 3072)``: 1,024 red, then green, then blue values of a 32x32 image in
row-major order) and ``b"labels"`` (N ints in 0..9).

Where the files come from (:func:`load_cifar10`), first match wins, each root ``data_dir`` then
``cache_dir``:

1. an unpacked folder: ``<root>/cifar10/`` holding the batch files, or
   ``<root>/cifar10/cifar-10-batches-py/``, or ``<root>/cifar-10-batches-py/`` (where the
   archive unpacks when extracted in the root);
2. the archive itself: ``<root>/cifar10/cifar-10-python.tar.gz`` (read in place, never
   extracted to disk);
3. with none of these and a ``cache_dir``: a download of the archive into
   ``<cache_dir>/cifar10/`` from :data:`CIFAR10_URL` (env ``AIRLAB_CIFAR10_URL`` overrides),
   renamed into place only after its sha256 AND the md5 the dataset's author publishes both
   matched (:func:`airlab.data.download.fetch`).

Local files are checked by structure, not by hash (as the IDX sets are): what they may contain
is limited by the restricted unpickler, whatever their origin.

After the first read, the uint8 arrays are kept in ``<cache_dir>/cifar10/cifar10-uint8.npz``
(uncompressed, about 184 MB; read back with ``allow_pickle=False``) together with the identity
of the files they came from (path, size, modification time); a changed or different source
rebuilds it. Reading it back skips decompressing 170 MB of gzip and unpickling six batches.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import posixpath
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from airlab.data.download import fetch
from airlab.errors import AirlabError

NAME = "cifar10"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_URL_ENV = "AIRLAB_CIFAR10_URL"
ARCHIVE = "cifar-10-python.tar.gz"
BATCH_DIR = "cifar-10-batches-py"  # the folder the archive unpacks into
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
CACHE_FILE = "cifar10-uint8.npz"
N_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)
_CACHE_FORMAT = "airlab-cifar10-uint8-v1"  # bump when the cached arrays' layout changes

# The archive's published checksums, as {file name: hex digest}. Tests pin their own served
# archive here (as the MNIST tests do); a name left out is refused unless AIRLAB_ALLOW_UNVERIFIED=1.
# - sha256 (the lab's policy): the value Keras pins for this exact URL in
#   keras/src/datasets/cifar10.py (get_file(..., file_hash=...)),
#   https://github.com/keras-team/keras/blob/7e4b17c57b00de45bf099fef18b8f05037ebf3c9/keras/src/datasets/cifar10.py
# - md5: the one the dataset's author publishes on https://www.cs.toronto.edu/~kriz/cifar.html
#   (torchvision's CIFAR10.tgz_md5 holds the same value). The sha256 comes from a third party;
#   checking the author's own md5 too means a wrong pin in either place refuses the download
#   instead of trusting it. 170,498,071 bytes.
CIFAR10_SHA256 = {ARCHIVE: "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"}
CIFAR10_MD5 = {ARCHIVE: "c58f30108f718f92721af3b95e74349a"}


@dataclass(frozen=True, eq=False)
class CifarArrays:
    """The raw dataset: uint8 images ``(N, 3, 32, 32)``, uint8 labels ``(N,)``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # the files read and how they were split


# --------------------------------------------------------------------------- safe unpickling


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """What numpy's own ``_frombuffer`` does for protocol-5 pickles, without numpy internals."""
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def _numpy_reconstruct() -> Callable[..., Any]:
    # numpy >= 2 keeps it in numpy._core; importing numpy.core there only warns and forwards.
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    raise ImportError("numpy has no multiarray._reconstruct")  # pragma: no cover


# Every global a CIFAR-10 batch may name. The batches are pickles, and unpickling runs any
# callable a pickle names (os.system included), so a plain pickle.load of a downloaded or
# placed file would execute whatever it was made to hold. The genuine batches (Python 2
# cPickle, protocol 2) only build dicts, lists, ints and byte strings, which need no global,
# plus one numpy array each, rebuilt through the names below. A pickle written by Python 3
# names numpy._core instead of numpy.core, or _frombuffer at protocol 5. Nothing else loads.
_RECONSTRUCT = _numpy_reconstruct()
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
}


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in :data:`_SAFE_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which a CIFAR-10 batch never does"
            ) from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def read_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` uint8 from one pickled batch.

    ``where`` names the file in errors. Anything but a dict with uint8 ``data`` of 3,072
    columns and as many labels in 0..9 raises AirlabError; so does a pickle that names any
    global outside the few that rebuild a numpy array (it is never called).
    """
    try:
        # encoding="bytes": the batches are Python 2 pickles; their str keys load as bytes.
        obj = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - damaged or hostile bytes fail in many ways
        raise AirlabError(
            f"{where} is not a CIFAR-10 python batch: {type(exc).__name__}: {_one_line(exc)}",
            "the file is damaged or of another format; fetch it again",
        ) from None
    if not isinstance(obj, dict):
        raise AirlabError(f"{where} holds a {type(obj).__name__}, not a CIFAR-10 batch dict")
    batch = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or (
        data.shape[1] != int(np.prod(IMAGE_SHAPE))
    ):
        got = (f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray)
               else type(data).__name__)
        raise AirlabError(f"{where}: 'data' must be uint8 (N, 3072) images, got {got}")
    if not isinstance(labels, (list, np.ndarray)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels
    ):
        raise AirlabError(f"{where}: 'labels' must be a list of ints")
    y = np.asarray(labels, dtype=np.int64)
    if len(y) != len(data):
        raise AirlabError(f"{where} has {len(data):,} images but {len(y):,} labels")
    if y.size and (y.min() < 0 or y.max() >= N_CLASSES):
        raise AirlabError(f"{where} has labels outside 0..{N_CLASSES - 1}")
    return data.reshape(-1, *IMAGE_SHAPE), y.astype(np.uint8)


def _assemble(batches: dict[str, tuple[np.ndarray, np.ndarray]], where: str) -> CifarArrays:
    train = [batches[name] for name in TRAIN_BATCHES]
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    x_test, y_test = batches[TEST_BATCH]
    return CifarArrays(
        x_train=x_train,
        y_train=y_train,
        x_test=np.ascontiguousarray(x_test),
        y_test=y_test,
        source=(
            f"{where}: {', '.join(TRAIN_BATCHES)} ({len(y_train):,} train); "
            f"{TEST_BATCH} ({len(y_test):,} val)"
        ),
    )


# --------------------------------------------------------------------------- the two layouts


def read_folder(folder: Path) -> CifarArrays:
    """The six batches from an unpacked ``cifar-10-batches-py`` folder."""
    batches = {}
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        path = folder / name
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise AirlabError(
                f"cannot read CIFAR-10 batch {path}: {exc.strerror or exc}",
                "the folder needs data_batch_1..5 and test_batch from cifar-10-python.tar.gz",
            ) from None
        batches[name] = read_batch(raw, str(path))
    return _assemble(batches, str(folder))


def read_archive(path: Path) -> CifarArrays:
    """The six batches read straight out of ``cifar-10-python.tar.gz`` (nothing extracted).

    Members are matched by name (``cifar-10-batches-py/<batch>``, an optional leading ``./``);
    only regular files are read, so links and odd paths in an archive are never followed.
    """
    wanted = {*TRAIN_BATCHES, TEST_BATCH}
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        # "r|gz": one forward pass over the stream, each wanted member read as it passes.
        with tarfile.open(path, mode="r|gz") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                folder, base = posixpath.split(name)
                if folder != BATCH_DIR or base not in wanted or base in batches:
                    continue
                if not member.isfile():
                    continue
                stream = tar.extractfile(member)
                if stream is None:  # pragma: no cover - isfile() members always have data
                    continue
                batches[base] = read_batch(stream.read(), f"{path}:{name}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise AirlabError(
            f"cannot read CIFAR-10 archive {path}: {type(exc).__name__}: {_one_line(exc)}",
            f"the file is damaged or not {ARCHIVE}; delete it and fetch it again",
        ) from None
    missing = [name for name in (*TRAIN_BATCHES, TEST_BATCH) if name not in batches]
    if missing:
        raise AirlabError(
            f"{path} lacks {', '.join(f'{BATCH_DIR}/{m}' for m in missing)}",
            f"it is not the python version of CIFAR-10 ({ARCHIVE})",
        )
    return _assemble(batches, str(path))


# --------------------------------------------------------------------------- where it is


def _is_batch_folder(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (*TRAIN_BATCHES, TEST_BATCH))


def candidates(root: Path) -> list[Path]:
    """Where a local copy may sit under ``root``, in the order they are tried: three
    folders of batches, then the archive."""
    return [root / NAME, root / NAME / BATCH_DIR, root / BATCH_DIR, root / NAME / ARCHIVE]


def find_local(roots: list[Path]) -> Path | None:
    """The first usable local copy (a batch folder or the archive) under ``roots``."""
    for root in roots:
        for path in candidates(root):
            if path.name == ARCHIVE and path.is_file():
                return path
            if path.name != ARCHIVE and _is_batch_folder(path):
                return path
    return None


def identity(source: Path) -> str:
    """Path, size and modification time of each file a source reads: what the tensor cache
    and the in-process memo are keyed by (an edited or replaced file loads again)."""
    files = [source] if source.is_file() else [source / n for n in (*TRAIN_BATCHES, TEST_BATCH)]
    parts = []
    for f in files:
        st = f.stat()
        parts.append(f"{f}|{st.st_size}|{st.st_mtime_ns}")
    return "\n".join(parts)


def download(cache_dir: Path) -> Path:
    """The verified archive in ``<cache_dir>/cifar10/``, downloaded if it is not there."""
    url = os.environ.get(CIFAR10_URL_ENV) or CIFAR10_URL
    if url.endswith("/"):
        url += ARCHIVE
    sha = CIFAR10_SHA256.get(ARCHIVE)
    if sha is None and os.environ.get("AIRLAB_ALLOW_UNVERIFIED") != "1":
        raise AirlabError(
            f"no known sha256 for {ARCHIVE}, so it is not downloaded unverified",
            "set AIRLAB_ALLOW_UNVERIFIED=1 to accept an unverified download",
        )
    return fetch(url, sha, cache_dir / NAME / ARCHIVE, md5=CIFAR10_MD5.get(ARCHIVE))


def missing_error(roots: list[Path], exc: AirlabError | None) -> AirlabError:
    """One line: where it was looked for, why no download, where to put it."""
    looked = ", ".join(f"{root / NAME}, {root / BATCH_DIR}" for root in roots) or (
        "no folder (no data_dir or cache_dir)"
    )
    why = f"; download refused or failed: {exc.message}" if exc is not None else ""
    hint = (
        f"put {ARCHIVE}, or the {BATCH_DIR}/ folder it unpacks to, in <data_dir>/{NAME}/ and "
        f"pass --data-dir or set AIRLAB_DATA_DIR, or make {CIFAR10_URL_ENV} point at a "
        "reachable copy"
    )
    if exc is not None and exc.hint:
        hint += f"; {exc.hint}"
    return AirlabError(
        f"{NAME} not found (looked in: {looked}; need the python-version batches "
        f"data_batch_1..5 and test_batch, or {ARCHIVE}){why}",
        hint,
    )


def locate(data_dir: Path | None, cache_dir: Path | None) -> Path:
    """The local copy to read, downloading into the cache when there is none."""
    roots = [d for d in (data_dir, cache_dir) if d is not None]
    found = find_local(roots)
    if found is not None:
        return found
    if cache_dir is None:
        raise missing_error(roots, None)
    try:
        return download(cache_dir)
    except AirlabError as exc:
        raise missing_error(roots, exc) from None


# --------------------------------------------------------------------------- tensor cache


def _read_cache(path: Path, key: str) -> CifarArrays | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != _CACHE_FORMAT or str(z["key"]) != key:
                return None
            arrays = CifarArrays(
                x_train=z["x_train"], y_train=z["y_train"], x_test=z["x_test"],
                y_test=z["y_test"], source=str(z["source"]),
            )
    except (OSError, ValueError, KeyError, EOFError, zlib.error):
        return None  # absent, damaged or of an older layout: rebuilt from the source
    ok = (
        arrays.x_train.shape[1:] == IMAGE_SHAPE == arrays.x_test.shape[1:]
        and arrays.x_train.dtype == np.uint8 == arrays.x_test.dtype
        and len(arrays.x_train) == len(arrays.y_train)
        and len(arrays.x_test) == len(arrays.y_test)
    )
    return arrays if ok else None


def _write_cache(path: Path, key: str, arrays: CifarArrays) -> None:
    """Atomically (temporary file, then rename); a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(
                out, format=np.array(_CACHE_FORMAT), key=np.array(key),
                source=np.array(arrays.source), x_train=arrays.x_train,
                y_train=arrays.y_train, x_test=arrays.x_test, y_test=arrays.y_test,
            )
        os.replace(tmp, path)
    except OSError:
        pass
    finally:
        Path(tmp).unlink(missing_ok=True)


def read_source(source: Path, key: str, cache_dir: Path | None) -> CifarArrays:
    """The arrays of ``source`` (a batch folder or the archive), through the tensor cache in
    ``<cache_dir>/cifar10/`` when there is one."""
    cache = cache_dir / NAME / CACHE_FILE if cache_dir is not None else None
    if cache is not None and (hit := _read_cache(cache, key)) is not None:
        return hit
    arrays = read_archive(source) if source.is_file() else read_folder(source)
    if cache is not None:
        _write_cache(cache, key, arrays)
    return arrays

