"""The store contract on a real PostgreSQL server (tests/pg_fixture.py starts it).

The contract tests written for SQLite (claims with leases, round trip, archive) run here again,
unchanged, on a fresh PostgreSQL database each; then what only a server shows: row locks under
concurrent claimers, lengths the spec allows fit the columns, and the error for a lost server.
"""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from airlab.store import Store

TESTS = Path(__file__).resolve().parents[1]


def _load(rel: str) -> ModuleType:
    """A contract test module by path (test folders are not packages)."""
    path = TESTS / rel
    spec = importlib.util.spec_from_file_location(f"_pg_contract_{path.stem}", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _contract() -> list[Callable[..., None]]:
    out = []
    for rel in ("store/test_claims.py", "engine/test_store.py", "store/test_live.py"):
        mod = _load(rel)
        for name, fn in sorted(vars(mod).items()):
            if name.startswith("test_") and "db_url" in inspect.signature(fn).parameters:
                out.append(fn)
    return out


CONTRACT = _contract()


@pytest.mark.parametrize("test", CONTRACT, ids=[f.__name__[5:] for f in CONTRACT])
def test_store_contract_on_postgresql(test: Callable[..., None], pg_url: str,
                                      tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"db_url": pg_url}
    if "tmp_path" in inspect.signature(test).parameters:
        kwargs["tmp_path"] = tmp_path
    test(**kwargs)


def test_contract_covers_claims_and_round_trip() -> None:
    names = {f.__name__ for f in CONTRACT}
    assert "test_processes_sharing_a_store_claim_every_run_exactly_once" in names
    assert "test_round_trip_and_atomic_finish" in names
    assert "test_points_and_heartbeats_are_stored_while_a_run_goes" in names  # live data
    assert len(names) >= 7


def test_claims_take_row_locks_that_skip_locked_rows(pg_url: str) -> None:
    """A claim in flight (its row locked, not yet committed) is skipped by the next claimer,
    which takes another run instead of waiting or taking the same one."""
    from sqlalchemy import select

    from airlab.store.tables import runs

    s = Store(pg_url)
    eid = s.upsert_experiment("e", {}, workload="charlm")
    s.ensure_runs(eid, [(f"a{i}", 42, f"k{i}", {}) for i in range(2)])
    with s.engine.connect() as c, c.begin():
        locked = c.execute(select(runs.c.id).where(runs.c.experiment_id == eid)
                           .order_by(runs.c.id).limit(1).with_for_update()).scalar_one()
        row = s.claim_next(eid, "other:1", 30)  # another connection, while the lock is held
        assert row is not None and row["id"] != locked
        assert s.claim_next(eid, "other:1", 30) is None  # the locked one is skipped, not waited
    again = s.claim_next(eid, "other:1", 30)
    assert again is not None and again["id"] == locked


def test_names_the_spec_allows_fit_the_columns(pg_url: str) -> None:
    """String lengths are checked at the spec: the longest names it allows, with the suffixes
    the lab adds (".teacher", "-quick", ".archived-TIME", "teacher.<arm>"), store without a
    database error, and so does the largest seed."""
    from airlab.spec import ARM_NAME_MAX, EXPERIMENT_NAME_MAX, INT64_MAX

    s = Store(pg_url)
    name = "n" * EXPERIMENT_NAME_MAX
    for exp in (name, f"{name}.teacher", f"{name}-quick"):
        eid = s.upsert_experiment(exp, {}, workload="charlm")
        s.ensure_runs(eid, [("a" * ARM_NAME_MAX, 42, "k" * 16, {}),
                            ("teacher." + "a" * ARM_NAME_MAX, INT64_MAX, "k" * 16, {})])
        assert len(s.runs(eid)) == 2
        assert s.archive_experiment(exp) is not None


def test_a_server_that_goes_away_is_one_line(pg_server: Any) -> None:
    url = pg_server.create_db("gone")
    s = Store(url)
    subprocess.run([sys.executable, "-c", f"""
import psycopg
with psycopg.connect("host=127.0.0.1 port={pg_server.port} user=postgres dbname=postgres",
                     autocommit=True) as c:
    c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname='gone'")
    c.execute('DROP DATABASE gone')
"""], check=True, timeout=60)
    from airlab.errors import AirlabError

    with pytest.raises(AirlabError) as e:
        s.upsert_experiment("e", {}, workload="charlm")
    assert "\n" not in str(e.value)
