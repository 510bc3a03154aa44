"""Where the lab keeps things: lab folder, database URL, data folders. Env AIRLAB_* override."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    data_dir: Path | None  # a folder holding local copies (e.g. ../shared/data); optional
    cache_dir: Path  # downloads land here, verified by sha256


def get_settings(db: str | None = None, home: str | os.PathLike[str] | None = None) -> Settings:
    """Resolve settings: explicit arguments, then AIRLAB_* environment, then defaults."""
    home_path = Path(home or os.environ.get("AIRLAB_HOME") or ".airlab").expanduser()
    db_url = db or os.environ.get("AIRLAB_DB") or f"sqlite:///{home_path / 'airlab.db'}"
    data = os.environ.get("AIRLAB_DATA_DIR")
    cache = os.environ.get("AIRLAB_CACHE_DIR")
    return Settings(
        home=home_path,
        db_url=db_url,
        data_dir=Path(data).expanduser() if data else None,
        cache_dir=Path(cache).expanduser() if cache else home_path / "cache",
    )
