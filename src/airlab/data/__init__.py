"""Datasets: character-level text corpora and small image-classification sets.

``load_text(name, data_dir=..., cache_dir=...)`` → :class:`TextCorpus`;
``load_vision(name, data_dir=..., cache_dir=...)`` → :class:`VisionData`. Local copies are looked
up under ``data_dir``, then in ``cache_dir``; anything downloaded is verified by sha256
(:func:`fetch`). The folders come from the caller's Settings (``--data-dir``, ``--home``):
nothing here reads settings. ``text`` and ``vision`` do not know each other; this package is
where a name given to the wrong loader is recognised.
"""

from __future__ import annotations

from pathlib import Path

from airlab.data import cifar as _cifar
from airlab.data import text as _text
from airlab.data import vision as _vision
from airlab.data.download import fetch, sha256_file
from airlab.data.text import (
    MIN_FILE_CHARS,
    PYCODE_MAX_CHARS,
    SHAKESPEARE_SHA256,
    SHAKESPEARE_URL_ENV,
    TEXT_CORPORA,
    TextCorpus,
    clear_text_cache,
    shakespeare_url,
)
from airlab.data.vision import (
    ALLOW_UNVERIFIED_ENV,
    FASHION_MNIST,
    MNIST,
    VISION_DATASETS,
    VisionData,
    clear_vision_cache,
    read_idx,
)
from airlab.errors import AirlabError

__all__ = [
    "TEXT_CORPORA",
    "VISION_DATASETS",
    "TextCorpus",
    "VisionData",
    "clear_caches",
    "describe_datasets",
    "fetch",
    "load_text",
    "load_vision",
    "read_idx",
    "sha256_file",
]


def load_text(name: str, *, data_dir: Path | None = None, cache_dir: Path | None = None
              ) -> TextCorpus:
    """A text corpus by name (see :func:`airlab.data.text.load_text`)."""
    if name in VISION_DATASETS:
        raise AirlabError(f"'{name}' is a vision dataset, not a text corpus", "use load_vision")
    return _text.load_text(name, data_dir=data_dir, cache_dir=cache_dir)


def load_vision(name: str, *, data_dir: Path | None = None, cache_dir: Path | None = None
                ) -> VisionData:
    """An image dataset by name (see :func:`airlab.data.vision.load_vision`)."""
    if name in TEXT_CORPORA or name.startswith("file:"):
        raise AirlabError(f"'{name}' is a text corpus, not a vision dataset", "use load_text")
    return _vision.load_vision(name, data_dir=data_dir, cache_dir=cache_dir)


def clear_caches() -> None:
    """Forget every memoised dataset in this process."""
    clear_text_cache()
    clear_vision_cache()


def describe_datasets(
    data_dir: Path | None = None, cache_dir: Path | None = None
) -> list[dict[str, str | None]]:
    """One dict per dataset: ``name``, ``kind`` (text/vision), ``source`` (where it comes
    from) and ``local`` (the local file or folder that would be used now, or None when it
    would be downloaded or must be supplied). Only checks whether files exist; reads nothing.
    The folders are the caller's (Settings); None means that folder is not looked at.
    """
    roots = [Path(d) for d in (data_dir, cache_dir) if d is not None]

    def first(rel: str, *names: str) -> str | None:
        for root in roots:
            for name in names:
                if (root / rel / name).is_file():
                    return str(root / rel)
        return None

    shakespeare_local = first("tinyshakespeare", "input.txt")
    rows: list[dict[str, str | None]] = [
        {
            "name": "pycode",
            "kind": "text",
            "source": "this Python's standard-library .py files (embedded, offline; "
            f"~{PYCODE_MAX_CHARS:,} characters, split by file)",
            "local": "stdlib",
        },
        {
            "name": "pydoc",
            "kind": "text",
            "source": "this Python's documentation text, pydoc_data.topics (embedded, offline; "
            "~465,000 characters of English prose, split by topic)",
            "local": "stdlib",
        },
        {
            "name": "shakespeare",
            "kind": "text",
            "source": "<data_dir>/tinyshakespeare/input.txt, else download "
            f"{shakespeare_url()} (sha256 {SHAKESPEARE_SHA256[:12]}...; "
            f"override with {SHAKESPEARE_URL_ENV})",
            "local": str(Path(shakespeare_local) / "input.txt") if shakespeare_local else None,
        },
        {
            "name": "file:PATH",
            "kind": "text",
            "source": f"any UTF-8 text file of at least {MIN_FILE_CHARS:,} characters "
            "(90/10 split)",
            "local": None,
        },
        {
            "name": "digits",
            "kind": "vision",
            "source": "scikit-learn load_digits (1,797 8x8 images, bundled, offline)",
            "local": "sklearn",
        },
    ]
    for spec in (MNIST, FASHION_MNIST):
        rows.append(
            {
                "name": spec.name,
                "kind": "vision",
                "source": f"<data_dir>/{spec.name}/ IDX files (t10k only: 8,000/2,000 split), "
                f"else verified download from {spec.default_url} (override with "
                f"{spec.url_env}; unknown hashes need {ALLOW_UNVERIFIED_ENV}=1)",
                "local": first(spec.name, "t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"),
            }
        )
    cifar_local = _cifar.find_local(roots)
    rows.append(
        {
            "name": _cifar.NAME,
            "kind": "vision",
            "source": f"<data_dir>/{_cifar.NAME}/ python-version batches ({_cifar.BATCH_DIR}/) "
            f"or {_cifar.ARCHIVE} (50,000/10,000 train/val), else verified download from "
            f"{_cifar.CIFAR10_URL} (sha256 {_cifar.CIFAR10_SHA256[_cifar.ARCHIVE][:12]}... and "
            f"md5; override with {_cifar.CIFAR10_URL_ENV})",
            "local": str(cifar_local) if cifar_local else None,
        }
    )
    return rows
