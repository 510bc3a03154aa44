"""Character-level text corpora for language-model experiments.

Every corpus is a :class:`TextCorpus`: 1-D ``int64`` tensors of character ids for the train
and validation parts, the id → character table, and the sha256 of the source for provenance.
Ids are int64 so a trainer can slice and feed them directly (``.long()`` is a no-op); the
largest corpus here (3 MB) costs 24 MB, which is not worth a narrower dtype.

Corpora (``load_text(name)``):

``pycode``
    Offline default: the running interpreter's standard-library ``.py`` files (from
    ``sysconfig.get_paths()["stdlib"]``), leaving out ``site-packages``/``dist-packages`` and
    the ``test``, ``tests``, ``idlelib`` and ``lib2to3`` folders and any file that is not valid
    UTF-8. Files are taken in sorted relative-path order until about 3,000,000 characters
    (the file crossing the cap is the last one taken). Each file is preceded by a header line
    ``# ==== <relative path> ====``. The split is BY FILE: the file at sorted index ``i`` is
    validation when ``i % 10 == 9`` (every 10th file), train otherwise, so no file is on both
    sides. The vocabulary is built from the train part only: id 0 is ``"\\ufffd"`` (the
    replacement id) and ids 1.. are the characters seen at least ``PYCODE_MIN_COUNT`` (5)
    times in train, sorted by code point; every other character (rare or only in validation)
    encodes to id 0. The text depends on the Python version; ``sha256`` tells corpora apart.
    Building it takes a fraction of a second, so nothing is cached on disk.

``pydoc``
    Offline, English prose: the reference text of this Python's documentation that ships
    with every interpreter in ``pydoc_data.topics`` (what ``help("assert")`` prints: about
    80 topics of the language reference, ~465,000 characters). Topics are taken in sorted
    order, each preceded by a header line ``# ==== <topic> ====``. The split is BY TOPIC: the
    last topics in that order whose text makes up at least ``PYDOC_VAL_FRACTION`` (10 %) of
    the characters are validation, the rest train, so no topic is on both sides. The
    vocabulary is built as for ``pycode`` (train only, characters seen at least 5 times, the
    rest encode to the replacement id). The text depends on the Python version; ``sha256``
    tells corpora apart.

``shakespeare``
    Tiny Shakespeare (1,115,394 characters). Looked up in order: ``<data_dir>/tinyshakespeare/
    input.txt`` (``data_dir``: --data-dir / AIRLAB_DATA_DIR via Settings), then ``<cache_dir>/
    tinyshakespeare/input.txt``, else downloaded into that cache path from
    ``SHAKESPEARE_URL`` (override with env ``AIRLAB_SHAKESPEARE_URL``) and verified against
    ``SHAKESPEARE_SHA256``. First 90% of characters train, last 10% validation (nanoGPT);
    vocabulary = sorted set of all characters (65).

``file:PATH``
    Any UTF-8 text file (at least ``MIN_FILE_CHARS`` characters): 90/10 split, vocabulary =
    sorted set of its characters.

For corpora whose vocabulary is the full character set, ``encode`` refuses characters outside
it; ``pycode`` maps them to its replacement id instead (``TextCorpus.unknown``).

Loads are memoised per process, keyed by the resolved source (path, size, mtime): a worker
loads a corpus once. Treat the returned tensors as read-only; they are shared.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import sysconfig
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from airlab.data.download import fetch, resolve_dirs
from airlab.errors import AirlabError, did_you_mean

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_URL_ENV = "AIRLAB_SHAKESPEARE_URL"

PYCODE_MAX_CHARS = 3_000_000
PYCODE_VAL_EVERY = 10
PYCODE_MIN_COUNT = 5
PYCODE_EXCLUDED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}
)
PYDOC_VAL_FRACTION = 0.1
REPLACEMENT_CHAR = "\ufffd"
TRAIN_FRACTION = 0.9
MIN_FILE_CHARS = 1_000
FILE_PREFIX = "file:"


@dataclass(frozen=True, eq=False, repr=False)
class TextCorpus:
    """A character-level corpus. Compare corpora with ``sha256`` and ``torch.equal``."""

    name: str
    train: torch.Tensor  # 1-D int64 character ids
    val: torch.Tensor  # 1-D int64 held-out ids
    vocab: tuple[str, ...]  # id -> character
    sha256: str  # of the source text, for provenance
    unknown: str | None = None  # vocab entry unknown characters encode to; None: refuse them
    source: str = ""  # where the text came from (path, URL or description)

    def __post_init__(self) -> None:
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocab has duplicate characters")
        if self.unknown is not None and self.unknown not in self.vocab:
            raise ValueError("unknown must be a vocab entry")

    @functools.cached_property
    def _lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted code points of the vocab, their ids), for vectorised encoding."""
        points = np.fromiter((ord(ch) for ch in self.vocab), dtype=np.int64, count=len(self.vocab))
        order = np.argsort(points, kind="stable")
        return points[order], order.astype(np.int64)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, s: str) -> torch.Tensor:
        """1-D int64 ids of ``s``; unknown characters → ``unknown``'s id, or AirlabError."""
        return torch.from_numpy(self._encode_np(s))

    def decode(self, ids: torch.Tensor | np.ndarray | Iterable[int]) -> str:
        """The string for a sequence of ids (a tensor, array or list of ints)."""
        size = len(self.vocab)
        seq: list[int]
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        if isinstance(ids, np.ndarray):
            flat = ids.reshape(-1)
            bad = flat[(flat < 0) | (flat >= size)].tolist()
            seq = flat.tolist()
        else:
            seq = [int(i) for i in ids]
            bad = [i for i in seq if not 0 <= i < size]
        if bad:
            raise AirlabError(
                f"id {int(bad[0])} is outside the vocabulary of '{self.name}' (size {size})"
            )
        vocab = self.vocab
        return "".join([vocab[i] for i in seq])

    def __repr__(self) -> str:
        return (
            f"TextCorpus(name={self.name!r}, train={self.train.numel():,} ids, "
            f"val={self.val.numel():,} ids, vocab_size={self.vocab_size}, "
            f"sha256={self.sha256[:12]}...)"
        )

    def _encode_np(self, s: str) -> np.ndarray:
        if not s:
            return np.zeros(0, dtype=np.int64)
        points = _code_points(s)
        keys, ids = self._lookup
        if len(keys) == 0:
            keys, ids = np.array([-1], dtype=np.int64), np.array([0], dtype=np.int64)
        pos = np.searchsorted(keys, points).clip(0, len(keys) - 1)
        found = keys[pos] == points
        out = ids[pos]
        if not found.all():
            if self.unknown is None:
                first = chr(int(points[np.argmin(found)]))
                raise AirlabError(
                    f"character {first!r} is not in the vocabulary of '{self.name}'",
                    "this corpus has a closed character set; encode only text made of it",
                )
            out = np.where(found, out, self.vocab.index(self.unknown))
        return out.astype(np.int64, copy=False)


def _code_points(s: str) -> np.ndarray:
    return np.frombuffer(s.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)


# --------------------------------------------------------------------------- building


def _split_corpus(name: str, text: str, sha: str, source: str) -> TextCorpus:
    """90/10 character split with vocab = sorted set of characters (nanoGPT convention)."""
    n_train = int(len(text) * TRAIN_FRACTION)
    vocab = tuple(sorted(set(text)))
    probe = TextCorpus(name, _EMPTY, _EMPTY, vocab, sha, None, source)
    ids = probe._encode_np(text)
    return TextCorpus(
        name=name,
        train=torch.from_numpy(ids[:n_train].copy()),
        val=torch.from_numpy(ids[n_train:].copy()),
        vocab=vocab,
        sha256=sha,
        unknown=None,
        source=source,
    )


_EMPTY = torch.zeros(0, dtype=torch.int64)


def _read_utf8(path: Path, what: str) -> tuple[str, str]:
    """(text, sha256 of the bytes) of a UTF-8 file, or AirlabError naming the path."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AirlabError(f"{what} not found: {path}", "check the path") from None
    except IsADirectoryError:
        raise AirlabError(f"{what} is a folder, not a file: {path}") from None
    except OSError as exc:
        raise AirlabError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AirlabError(
            f"{what} {path} is not UTF-8 text (bad byte at offset {exc.start})",
            "convert it to UTF-8 first",
        ) from None
    return text, hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=16)
def _load_split_file(name: str, path: Path, size: int, mtime_ns: int) -> TextCorpus:
    # size and mtime_ns are only part of the memo key, so an edited file is read again.
    text, sha = _read_utf8(path, "text file")
    if len(text) < MIN_FILE_CHARS:
        raise AirlabError(
            f"text file {path} has {len(text):,} characters; a corpus needs at least "
            f"{MIN_FILE_CHARS:,}",
            "use a longer text file",
        )
    return _split_corpus(name, text, sha, str(path))


def _load_file_corpus(name: str, path: Path) -> TextCorpus:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AirlabError(f"text file not found: {path}", "check the path after 'file:'") from None
    except OSError as exc:
        raise AirlabError(f"cannot read text file {path}: {exc.strerror or exc}") from None
    return _load_split_file(name, path, st.st_size, st.st_mtime_ns)


# ---- pycode


def pycode_files(root: Path | None = None) -> list[str]:
    """Sorted relative paths (posix) of the candidate stdlib ``.py`` files, before the cap."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in PYCODE_EXCLUDED_DIRS]
        rel = Path(dirpath).relative_to(root)
        found.extend((rel / f).as_posix() for f in filenames if f.endswith(".py"))
    return sorted(found)


@functools.lru_cache(maxsize=4)
def _load_pycode(root: Path, max_chars: int) -> TextCorpus:
    train_parts: list[str] = []
    val_parts: list[str] = []
    total = 0
    index = 0
    for rel in pycode_files(root):
        if total >= max_chars:
            break
        try:
            body = (root / rel).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # unreadable or not UTF-8: left out, does not take an index
        chunk = f"# ==== {rel} ====\n{body}"
        if not chunk.endswith("\n"):
            chunk += "\n"
        (val_parts if index % PYCODE_VAL_EVERY == PYCODE_VAL_EVERY - 1 else train_parts).append(
            chunk
        )
        total += len(chunk)
        index += 1
    if not train_parts or not val_parts:
        raise AirlabError(
            f"found too few standard-library .py files under {root} for the pycode corpus",
            "use 'shakespeare' or 'file:PATH' instead",
        )
    source = (
        f"Python {_python()} stdlib {root}: {len(train_parts)} train + {len(val_parts)} val files"
    )
    return _embedded("pycode", "".join(train_parts), "".join(val_parts), source)


def _python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"


def _embedded(name: str, train_text: str, val_text: str, source: str) -> TextCorpus:
    """An embedded corpus split by document: sha256 of train, NUL, val; the vocabulary of the
    characters seen at least ``PYCODE_MIN_COUNT`` times in train (sorted by code point) after
    the replacement id 0, which every other character encodes to."""
    digest = hashlib.sha256()
    digest.update(train_text.encode("utf-8"))
    digest.update(b"\0")
    digest.update(val_text.encode("utf-8"))
    points, counts = np.unique(_code_points(train_text), return_counts=True)
    kept = [chr(p) for p in points[counts >= PYCODE_MIN_COUNT].tolist()]  # sorted by code point
    kept = [ch for ch in kept if ch != REPLACEMENT_CHAR]
    vocab = (REPLACEMENT_CHAR, *kept)
    probe = TextCorpus(name, _EMPTY, _EMPTY, vocab, "", REPLACEMENT_CHAR, source)
    return TextCorpus(
        name=name,
        train=torch.from_numpy(probe._encode_np(train_text)),
        val=torch.from_numpy(probe._encode_np(val_text)),
        vocab=vocab,
        sha256=digest.hexdigest(),
        unknown=REPLACEMENT_CHAR,
        source=source,
    )


def _pycode(data_dir: Path | None, cache_dir: Path | None) -> TextCorpus:
    return _load_pycode(Path(sysconfig.get_paths()["stdlib"]), PYCODE_MAX_CHARS)


# ---- pydoc


@functools.lru_cache(maxsize=1)
def _load_pydoc() -> TextCorpus:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # a stripped interpreter without its documentation data
        raise AirlabError(
            "this Python has no pydoc_data.topics (its documentation text) for the pydoc corpus",
            "use 'pycode', 'shakespeare' or 'file:PATH' instead",
        ) from None
    chunks = [f"# ==== {k} ====\n{v}" + ("" if v.endswith("\n") else "\n")
              for k, v in sorted(topics.items())]
    total = sum(len(c) for c in chunks)
    # Validation: the last topics in sorted order that hold at least PYDOC_VAL_FRACTION of
    # the characters (whole topics: none on both sides).
    cut, tail = len(chunks), 0
    while cut > 1 and tail < PYDOC_VAL_FRACTION * total:
        cut -= 1
        tail += len(chunks[cut])
    source = (f"Python {_python()} pydoc_data.topics: {cut} train + {len(chunks) - cut} val "
              "topics")
    return _embedded("pydoc", "".join(chunks[:cut]), "".join(chunks[cut:]), source)


def _pydoc(data_dir: Path | None, cache_dir: Path | None) -> TextCorpus:
    return _load_pydoc()


# ---- shakespeare


def shakespeare_url() -> str:
    return os.environ.get(SHAKESPEARE_URL_ENV) or SHAKESPEARE_URL


def _shakespeare(data_dir: Path | None, cache_dir: Path | None) -> TextCorpus:
    rel = Path("tinyshakespeare") / "input.txt"
    looked: list[Path] = []
    if data_dir is not None:
        local = data_dir / rel
        if local.is_file():
            return _load_file_corpus("shakespeare", local)
        looked.append(local)
    if cache_dir is None:
        raise AirlabError(
            f"tinyshakespeare not found (looked at: {', '.join(map(str, looked)) or 'nothing'})",
            "pass --data-dir / set AIRLAB_DATA_DIR to a folder with tinyshakespeare/input.txt",
        )
    cached = cache_dir / rel
    looked.append(cached)
    url = shakespeare_url()
    try:
        path = fetch(url, SHAKESPEARE_SHA256, cached)
    except AirlabError as exc:
        raise AirlabError(
            f"tinyshakespeare not found locally (looked at: {', '.join(map(str, looked))}) "
            f"and {exc.message}",
            "put input.txt (sha256 "
            f"{SHAKESPEARE_SHA256[:12]}...) in <data_dir>/tinyshakespeare/ and pass --data-dir "
            f"or set AIRLAB_DATA_DIR; or set {SHAKESPEARE_URL_ENV} to a reachable copy",
        ) from None
    return _load_file_corpus("shakespeare", path)


# --------------------------------------------------------------------------- registry

TextLoader = Callable[[Path | None, Path | None], TextCorpus]

TEXT_CORPORA: dict[str, TextLoader] = {
    "pycode": _pycode,
    "pydoc": _pydoc,
    "shakespeare": _shakespeare,
}


def load_text(
    name: str, *, data_dir: Path | None = None, cache_dir: Path | None = None
) -> TextCorpus:
    """Load a text corpus by name: ``pycode``, ``pydoc``, ``shakespeare`` or ``file:PATH``.

    ``data_dir`` (local copies) and ``cache_dir`` (downloads) come from the caller's Settings;
    None means no such folder. Raises AirlabError for unknown names, missing files and failed
    downloads.
    """
    if name.startswith(FILE_PREFIX):
        raw = name[len(FILE_PREFIX) :]
        if not raw:
            raise AirlabError("'file:' needs a path, e.g. file:notes.txt")
        path = Path(raw).expanduser().resolve()
        return _load_file_corpus(f"file:{path}", path)
    loader = TEXT_CORPORA.get(name)
    if loader is None:
        raise AirlabError(
            f"unknown text corpus '{name}'", did_you_mean(name, [*TEXT_CORPORA, "file:PATH"])
        )
    return loader(*resolve_dirs(data_dir, cache_dir))


def clear_text_cache() -> None:
    """Forget memoised corpora (tests; or after files changed in place without an mtime)."""
    _load_split_file.cache_clear()
    _load_pycode.cache_clear()
    _load_pydoc.cache_clear()


__all__ = [
    "TEXT_CORPORA",
    "TextCorpus",
    "clear_text_cache",
    "load_text",
]
