"""The store contract on a real PostgreSQL server (tests/pg_fixture.py starts it).

The contract tests (claims with leases, round trip, archive, the team's tables) take the shared
``any_db_url`` fixture and so run on SQLite and on a fresh PostgreSQL database each; this module
holds what only a server shows: row locks under concurrent claimers, lengths the spec allows fit
the columns, and the error for a lost server.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airlab.store import Store

CONTRACT_MODULES = ("store/test_claims.py", "engine/test_store.py", "store/test_team_store.py",
                    "store/test_live.py")


def test_the_contract_tests_run_on_both_backends() -> None:
    """The store contract (claims with leases, round trip, archive, the team's tables) runs on
    SQLite and PostgreSQL through the shared ``any_db_url`` fixture: every test there that
    takes a database takes that one."""
    tests = Path(__file__).resolve().parents[1]
    found = 0
    for rel in CONTRACT_MODULES:
        text = (tests / rel).read_text()
        assert not re.search(r"def test_\w+\([^)]*\bdb_url\b", text), rel
        found += len(re.findall(r"def test_\w+\([^)]*\bany_db_url\b", text, re.S))
    assert found >= 10


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
