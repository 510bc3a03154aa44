"""Faults: damaged files, full disks, read-only folders, older databases. Real SQLite files and
real processes; nothing is mocked."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import text

from airlab.errors import AirlabError
from airlab.store import (
    Store,
    StoreCorruptError,
    StoreError,
    latest_verdicts,
    list_verdicts,
    owner_id,
    save_verdict,
)

CURVE = [{"step": i, "tokens": 64 * i, "train_seconds": 0.1 * i, "flops": 1e6 * i,
          "val_loss": 4.0 - 0.1 * i} for i in range(10)]


def _lab(db_url: str, n: int = 2, pad: int = 0) -> tuple[Store, int]:
    s = Store(db_url)
    eid = s.upsert_experiment("e", {"x": 1}, workload="charlm")
    s.ensure_runs(eid, [(f"arm{i}", 42, f"k{i}", {"i": i, "pad": "x" * pad}) for i in range(n)])
    return s, eid


def _one_line(e: BaseException, *names: str) -> None:
    msg = str(e)
    assert "\n" not in msg and "Traceback" not in msg
    for n in names:
        assert n in msg, msg


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


# -- damaged files ------------------------------------------------------------------------------

def test_a_file_that_is_not_a_database_is_one_line_naming_it(tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    db.write_bytes(b"this is not sqlite at all\n" * 200)
    for ro in (False, True):
        with pytest.raises(StoreCorruptError) as e:
            Store(f"sqlite:///{db}", readonly=ro)
        _one_line(e.value, str(db), "not a database", "move it aside", "journal")


def test_a_truncated_or_damaged_file_is_one_line_on_open_or_first_use(db_url: str,
                                                                      tmp_path: Path) -> None:
    s, eid = _lab(db_url, 40, pad=3000)
    s.close()
    db = tmp_path / "lab.db"
    good = db.read_bytes()
    # Damaged data pages: the schema still reads, so the error comes at the first real read.
    db.write_bytes(good[:-8 * 4096] + b"\xff" * (8 * 4096))
    for ro in (False, True):
        store = Store(db_url, readonly=ro)
        with pytest.raises(StoreCorruptError) as e:
            store.runs(eid)
        _one_line(e.value, str(db), "malformed")
        store.close()
    # Cut in half: the error comes on open.
    db.write_bytes(good[: len(good) // 2])
    with pytest.raises(AirlabError) as e2:
        Store(db_url).runs(eid)
    _one_line(e2.value, str(db), "malformed")


# -- read-only ----------------------------------------------------------------------------------

def test_readonly_open_reads_everything_and_writes_nothing(db_url: str, tmp_path: Path) -> None:
    s, eid = _lab(db_url)
    rid = s.runs(eid)[0]["id"]
    s.claim(rid)
    s.finish(rid, "finished", None, {"val_loss": 3.1}, CURVE, {"host": "h"}, 1.0)
    save_verdict(s, eid, rating=7, band="good", breakdown={}, critique=["ok"],
                 rubric_version="1")
    s.close()
    before = _files(tmp_path)
    r = Store(db_url, readonly=True)
    assert [e["name"] for e in r.experiments()] == ["e"]
    assert r.experiment("e")["id"] == eid  # type: ignore[index]
    assert r.counts() == {"finished": 1, "pending": 1} and r.counts(eid)["pending"] == 1
    assert r.metrics([rid]) == {rid: {"val_loss": 3.1}} and len(r.curve(rid)) == len(CURVE)
    assert [v["rating"] for v in list_verdicts(r)] == [7] and eid in latest_verdicts(r)
    with pytest.raises(AirlabError, match="read-only") as e:
        r.upsert_experiment("new", {})
    _one_line(e.value)
    with pytest.raises(AirlabError, match="read-only"):
        r.claim_next(eid, owner_id(), 30)
    r.close()
    after = _files(tmp_path)
    assert after["lab.db"] == before["lab.db"]  # not a byte of the database written
    # A WAL reader needs SQLite's shared-memory index beside a writable database; its log
    # stays empty. (In a read-only folder the store opens the file as immutable instead.)
    assert set(after) - set(before) <= {"lab.db-shm", "lab.db-wal"}
    assert after.get("lab.db-wal", "") in ("", hashlib.sha256(b"").hexdigest())
    # A lab with no database yet reads as empty and stays without one.
    empty = Store(f"sqlite:///{tmp_path / 'none' / 'lab.db'}", readonly=True)
    assert empty.experiments() == [] and empty.counts() == {} and list_verdicts(empty) == []
    assert not (tmp_path / "none").exists()


READONLY_CHILD = """
import json, subprocess, sys
from airlab.errors import AirlabError
from airlab.store import Store, owner_id, list_verdicts
url, eid, folder, how = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
out = {}
if how == "mount":  # the lab folder becomes read-only under a running airlab
    s = Store(url)
    row = s.claim_next(eid, owner_id(), 60)
    subprocess.run(["mount", "--bind", folder, folder], check=True)
    subprocess.run(["mount", "-o", "remount,ro,bind", folder, folder], check=True)
    s.close()  # open files would still write to the folder underneath the new mount
    try:
        s.finish(row["id"], "finished", None, {"val_loss": 2.5}, [], {"by": "child"},
                 owner=owner_id())
    except AirlabError as e:
        out["finish"] = str(e)
r = Store(url, readonly=True)
out["experiments"] = [e["name"] for e in r.experiments()]
out["counts"] = r.counts()
out["verdicts"] = len(list_verdicts(r))
try:
    Store(url).upsert_experiment("new", {})
except AirlabError as e:
    out["writable"] = str(e)
print(json.dumps(out))
"""


def _can_mount_readonly(folder: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount --bind '{folder}' '{folder}' "
                            f"&& mount -o remount,ro,bind '{folder}' '{folder}'"],
                           capture_output=True)
    return probe.returncode == 0


def test_a_read_only_lab_folder(db_url: str, tmp_path: Path) -> None:
    """The folder turns read-only while a run is in flight: its result goes to the journal,
    reading works, writing is one line; back to writable, the result is stored."""
    s, eid = _lab(db_url)
    s.close()
    folder = str(tmp_path)
    child = [sys.executable, "-c", textwrap.dedent(READONLY_CHILD), db_url, str(eid), folder]
    if _can_mount_readonly(tmp_path):
        # A private mount namespace: a read-only bind that even root cannot write through.
        cmd = ["unshare", "-rm"] + child + ["mount"]
    elif os.geteuid() != 0:
        os.chmod(folder, 0o555)
        os.chmod(tmp_path / "lab.db", 0o444)
        cmd = child + ["chmod"]
    else:
        pytest.skip("running as root (chmod does not stop root) and no mount namespace here")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(folder, 0o755)
        os.chmod(tmp_path / "lab.db", 0o644)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["experiments"] == ["e"] and got["verdicts"] == 0
    assert sum(got["counts"].values()) == 2
    _one_line(AirlabError(got["writable"]), "lab.db", "read-only")
    mid_run = cmd[-1] == "mount"
    if mid_run:  # the folder turned read-only mid-run: journaled in the temp folder
        _one_line(AirlabError(got["finish"]), "kept in", "airlab-journal-", "read-only")
    back = Store(db_url)
    assert back.journal_pending() == 0
    rows = {r["arm"]: r for r in back.runs(eid)}
    if mid_run:
        assert rows["arm0"]["state"] == "finished" and rows["arm0"]["info"] == {"by": "child"}
        assert back.metrics([rows["arm0"]["id"]])[rows["arm0"]["id"]] == {"val_loss": 2.5}


# -- write errors: the journal ------------------------------------------------------------------

FULL_DISK_CHILD = """
import json, resource, sys
from airlab.errors import AirlabError
from airlab.store import Store, owner_id
url, eid = sys.argv[1], int(sys.argv[2])
curve = json.loads(sys.argv[3])
s = Store(url)
row = s.claim_next(eid, owner_id(), 60)
# The disk is full from here on: no file of this process may grow past 4 KiB (the database's
# write-ahead log needs more for one page; a one-line journal entry needs less).
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    s.finish(row["id"], "finished", None, {"val_loss": 2.5, "nan": float("nan")}, curve,
             {"by": "child"}, 3.0, owner=owner_id())
    print("stored")
except AirlabError as e:
    print(str(e))
"""


def _finish_on_a_full_disk(db_url: str, eid: int) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(FULL_DISK_CHILD), db_url,
                          str(eid), json.dumps(CURVE)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_full_disk_keeps_the_result_in_the_journal_and_the_next_open_stores_it(
        db_url: str, tmp_path: Path) -> None:
    s, eid = _lab(db_url)
    s.close()
    msg = _finish_on_a_full_disk(db_url, eid)
    journal = tmp_path / "lab.db.journal.jsonl"
    _one_line(AirlabError(msg), f"kept in {journal}", "next start")
    entry = json.loads(journal.read_text())
    assert entry["experiment"] == "e" and entry["run_key"] == "k0" and entry["curve"] == CURVE
    # Reading does not replay (it writes nothing); the next writable open does, once.
    assert Store(db_url, readonly=True).runs(eid)[0]["state"] == "running"
    s2 = Store(db_url)
    assert not journal.exists() and s2.journal_pending() == 0
    run = s2.runs(eid)[0]
    assert run["state"] == "finished" and run["info"] == {"by": "child"}
    assert run["wall_seconds"] == 3.0 and run["attempts"] == 1
    assert s2.metrics([run["id"]])[run["id"]] == {"val_loss": 2.5, "nan": None}
    assert [p["val_loss"] for p in s2.curve(run["id"])] == [p["val_loss"] for p in CURVE]


def test_journaled_results_wait_for_their_experiment_in_a_new_database(
        db_url: str, tmp_path: Path) -> None:
    s, eid = _lab(db_url)
    plan = [(r["arm"], r["seed"], r["run_key"], r["config"]) for r in s.runs(eid)]
    s.close()
    assert "kept in" in _finish_on_a_full_disk(db_url, eid)
    # The database is moved aside (as the damaged-file message says): a new one is made, and
    # the journaled result waits until the same experiment is planned there again.
    (tmp_path / "lab.db").rename(tmp_path / "lab.db.corrupt")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"lab.db{suffix}").unlink(missing_ok=True)
    fresh = Store(db_url)
    assert fresh.journal_pending() == 1 and fresh.experiments() == []
    eid2 = fresh.upsert_experiment("e", {"x": 1}, workload="charlm")
    rows = {r["arm"]: r for r in fresh.ensure_runs(eid2, plan)}
    assert fresh.journal_pending() == 0
    assert rows["arm0"]["state"] == "finished" and rows["arm1"]["state"] == "pending"
    assert fresh.metrics([rows["arm0"]["id"]])[rows["arm0"]["id"]]["val_loss"] == 2.5
    # Replaying is idempotent: a finished run is never overwritten by a journaled result.
    fresh.journal.append({"experiment": "e", "arm": "arm0", "run_key": "k0", "state": "failed",
                          "reason": "late", "metrics": {}, "curve": [], "info": {}})
    assert fresh.replay_journal() == 1
    assert fresh.run(rows["arm0"]["id"])["state"] == "finished"  # type: ignore[index]


def test_the_journal_falls_back_when_its_first_file_cannot_be_written(db_url: str,
                                                                     tmp_path: Path) -> None:
    s, eid = _lab(db_url)
    s.close()
    (tmp_path / "lab.db.journal.jsonl").mkdir()  # the file beside the database cannot be made
    msg = _finish_on_a_full_disk(db_url, eid)
    assert "kept in" in msg and "airlab-journal-" in msg
    s2 = Store(db_url)
    assert s2.runs(eid)[0]["state"] == "finished" and s2.journal_pending() == 0


# -- older databases ----------------------------------------------------------------------------

def test_a_database_of_the_previous_version_opens_and_is_migrated(db_url: str,
                                                                  tmp_path: Path) -> None:
    s, eid = _lab(db_url)
    rid = s.runs(eid)[0]["id"]
    s.claim(rid)
    s.finish(rid, "finished", None, {"val_loss": 3.0}, CURVE, {})
    # What the previous version wrote: no lease or infra columns, no verdicts table.
    with s.writing() as c:
        for col in ("lease_until", "heartbeat_at", "infra"):
            c.execute(text(f"ALTER TABLE runs DROP COLUMN {col}"))
        c.execute(text("DROP TABLE verdicts"))
    s.close()
    r = Store(db_url, readonly=True)
    run = r.runs(eid)[0]
    assert run["state"] == "finished" and run["lease_until"] is None and run["infra"] is None
    assert list_verdicts(r) == [] and r.metrics([rid])[rid] == {"val_loss": 3.0}
    r.close()
    w = Store(db_url)  # writable: the columns and the table are added, every row kept
    assert w.has_table("verdicts") and {"lease_until", "infra"} <= w._columns["runs"]
    assert w.counts() == {"finished": 1, "pending": 1}
    nxt = w.claim_next(eid, owner_id(), 30)
    assert nxt is not None and nxt["lease_until"] is not None
    save_verdict(w, eid, rating=5, band="mixed", breakdown={}, critique=[], rubric_version="1")
    assert len(list_verdicts(w)) == 1


def test_store_and_verdicts_do_not_import_each_other() -> None:
    import ast

    import airlab.store.store as store_mod
    import airlab.store.verdicts as verdicts_mod

    def runtime_imports(mod: object) -> set[str]:
        tree = ast.parse(Path(mod.__file__).read_text())  # type: ignore[attr-defined]
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return names

    assert "airlab.store.verdicts" not in runtime_imports(store_mod)
    assert "airlab.store.store" not in runtime_imports(verdicts_mod)


def test_store_errors_are_airlab_errors() -> None:
    assert issubclass(StoreCorruptError, StoreError) and issubclass(StoreError, AirlabError)


JOURNAL_CHILD = """
import json, resource, sys
from pathlib import Path
from airlab.store.journal import Journal
j = Journal([Path(p) for p in sys.argv[1:]])
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    j.append({"big": "x" * 8000})  # cannot fit in either file
    print("appended")
except OSError as e:
    print("refused", e.errno)
print(j.append({"small": 1}))
"""


def test_a_journal_append_that_fails_leaves_no_torn_line(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text('{"earlier": 1}\n')
    second.write_text('{"torn by a crash": ')  # no newline: the next entry starts a new line
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(JOURNAL_CHILD), str(first),
                          str(second)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["refused 27", str(first)]
    assert first.read_text() == '{"earlier": 1}\n{"small": 1}\n'
    assert second.read_text() == '{"torn by a crash": '  # the failed append was undone
    from airlab.store.journal import Journal

    Journal([second]).append({"after": 2})
    assert second.read_text() == '{"torn by a crash": \n{"after": 2}\n'
    seen: list[dict] = []
    assert Journal([first, second]).replay(lambda e: seen.append(e) or True) == 3
    assert seen == [{"earlier": 1}, {"small": 1}, {"after": 2}]
    assert not first.exists() and second.read_text() == '{"torn by a crash": \n'  # kept
