"""Commands that list what the lab has: datasets and techniques."""

from __future__ import annotations

from rich.table import Table

from airlab.cli.common import console, settings


def data() -> None:
    """List the datasets and where each comes from."""
    from airlab.data import describe_datasets

    s = settings()
    t = Table(title="datasets")
    rows = describe_datasets(data_dir=s.data_dir, cache_dir=s.cache_dir)
    for c in rows[0].keys() if rows else ("name",):
        t.add_column(str(c))
    for r in rows:
        t.add_row(*[str(v) for v in r.values()])
    console.print(t)


def techniques() -> None:
    """List the registered techniques (--use_<name> switches)."""
    from airlab.techniques import TECHNIQUES

    t = Table(title="techniques")
    for c in ("flag", "area", "workloads", "options", "what it does"):
        t.add_column(c)
    for name, tech in sorted(TECHNIQUES.items()):
        t.add_row(f"--use_{name}", tech.area, ", ".join(tech.workloads),
                  ", ".join(f"{k}={v}" for k, v in tech.params.items()), tech.help)
    console.print(t)
