"""Datasets: character-level text corpora and small image-classification sets.

``load_text(name)`` → :class:`TextCorpus`; ``load_vision(name)`` → :class:`VisionData`.
Local copies are looked up under ``data_dir`` (``--data-dir`` / AIRLAB_DATA_DIR), then in the
cache (AIRLAB_CACHE_DIR); anything downloaded is verified by sha256 (:func:`fetch`).
"""

from __future__ import annotations

from pathlib import Path

from airlab.data.download import fetch, sha256_file
from airlab.data.text import (
    MIN_FILE_CHARS,
    PYCODE_MAX_CHARS,
    SHAKESPEARE_SHA256,
    SHAKESPEARE_URL_ENV,
    TEXT_CORPORA,
    TextCorpus,
    clear_text_cache,
    load_text,
    shakespeare_url,
)
from airlab.data.vision import (
    ALLOW_UNVERIFIED_ENV,
    FASHION_MNIST,
    MNIST,
    VISION_DATASETS,
    VisionData,
    clear_vision_cache,
    load_vision,
    read_idx,
)
from airlab.settings import get_settings

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
    """
    settings = get_settings()
    data_dir = Path(data_dir) if data_dir is not None else settings.data_dir
    cache_dir = Path(cache_dir) if cache_dir is not None else settings.cache_dir
    roots = [d for d in (data_dir, cache_dir) if d is not None]

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
    return rows
