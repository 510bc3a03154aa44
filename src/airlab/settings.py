"""Where the lab keeps things: lab folder, database URL, data and cache folders.

Read once, at the edge (the CLI, or the library call that was given none), then passed down as
a plain value: a worker process gets it with its job, so ``--home`` reaches every cache.
Precedence: explicit arguments, then the AIRLAB_* environment, then defaults.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    data_dir: Path | None  # a folder holding local copies (e.g. ../shared/data); optional
    cache_dir: Path  # downloads and prepared data land here, verified by sha256
    # Extra technique modules (*.py) loaded into the one registry, in the parent and in workers.
    techniques_dir: Path | None = None
    # Run generated technique code where no sandbox isolation exists (only limits apply): the
    # user's explicit choice (`--unsafe-no-sandbox`, env AIRLAB_UNSAFE_NO_SANDBOX=1).
    unsafe_no_sandbox: bool = False

    @property
    def artifacts_dir(self) -> Path:
        """Per-run files (a teacher's weights), one folder per run key."""
        return self.home / "artifacts"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a worker process (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Settings:
        return cls(home=Path(d["home"]), db_url=d["db_url"],
                   data_dir=Path(d["data_dir"]) if d.get("data_dir") else None,
                   cache_dir=Path(d["cache_dir"]),
                   techniques_dir=(Path(d["techniques_dir"]) if d.get("techniques_dir")
                                   else None),
                   unsafe_no_sandbox=bool(d.get("unsafe_no_sandbox", False)))


def get_settings(db: str | None = None, home: str | os.PathLike[str] | None = None) -> Settings:
    """Resolve settings: explicit arguments, then AIRLAB_* environment, then defaults."""
    home_path = Path(home or os.environ.get("AIRLAB_HOME") or ".airlab").expanduser()
    db_url = db or os.environ.get("AIRLAB_DB") or f"sqlite:///{home_path / 'airlab.db'}"
    data = os.environ.get("AIRLAB_DATA_DIR")
    techniques = os.environ.get("AIRLAB_TECHNIQUES_DIR")
    # An explicit home wins over an inherited cache location: --home reaches every cache.
    cache = None if home else os.environ.get("AIRLAB_CACHE_DIR")
    return Settings(
        home=home_path,
        db_url=db_url,
        data_dir=Path(data).expanduser() if data else None,
        cache_dir=Path(cache).expanduser() if cache else home_path / "cache",
        techniques_dir=Path(techniques).expanduser() if techniques else None,
        unsafe_no_sandbox=os.environ.get("AIRLAB_UNSAFE_NO_SANDBOX", "") in ("1", "yes", "true"),
    )
