import pytest

from airlab.errors import AirlabError
from airlab.store import Store


def test_round_trip_and_atomic_finish(any_db_url: str) -> None:
    s = Store(any_db_url)
    eid = s.upsert_experiment("e", {"x": 1}, workload="charlm")
    assert s.upsert_experiment("e", {"x": 2}, workload="charlm") == eid
    rows = s.ensure_runs(eid, [("base", 1, "k1", {"a": 1}), ("arm", 1, "k2", {"a": 2})])
    assert [r["state"] for r in rows] == ["pending", "pending"]
    # Planning again inserts nothing new.
    assert len(s.ensure_runs(eid, [("base", 1, "k1", {"a": 1})])) == 1
    assert len(s.runs(eid)) == 2
    rid = rows[0]["id"]
    s.claim(rid)
    curve = [{"step": 0, "tokens": 0, "train_seconds": 0, "flops": 0, "val_loss": 4.0},
             {"step": 5, "tokens": 100, "train_seconds": 1, "flops": 10, "val_loss": 3.0,
              "val_bpc": 4.3}]
    s.finish(rid, "finished", None, {"val_loss": 3.0, "bad": float("nan")}, curve, {"i": 1}, 2.0)
    assert s.metrics([rid])[rid] == {"val_loss": 3.0, "bad": None}
    got = s.curve(rid)
    assert got[1]["val_bpc"] == 4.3 and got[1]["units"] == 100
    # A write that fails half-way leaves the run as it was: no partial curve or metrics.
    rid2 = rows[1]["id"]
    s.claim(rid2)
    with pytest.raises(ValueError):
        s.finish(rid2, "finished", None, {"val_loss": 1.0}, [{"step": "not a number"}], {})
    assert s.metrics([rid2])[rid2] == {} and s.curve(rid2) == []
    assert next(r for r in s.runs(eid) if r["id"] == rid2)["state"] == "running"
    # The run's owner (this process) is gone when the next `airlab run` starts: back to pending.
    assert s.recover_interrupted(eid) == 1
    assert s.counts() == {"finished": 1, "pending": 1}


def test_unreachable_database_is_a_one_line_error() -> None:
    with pytest.raises(AirlabError, match="cannot open database 'postgresql\\+psycopg://lab:"
                                          "\\*\\*\\*@127.0.0.1:9/x'") as e:
        Store("postgresql+psycopg://lab:secret@127.0.0.1:9/x")
    assert "secret" not in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(AirlabError, match="bad database URL"):
        Store("notadb://x")


def test_archive_keeps_runs_under_a_new_name(any_db_url: str) -> None:
    s = Store(any_db_url)
    eid = s.upsert_experiment("e", {"x": 1}, workload="charlm")
    s.ensure_runs(eid, [("base", 1, "k1", {"a": 1})])
    new = s.archive_experiment("e")
    assert new and new.startswith("e.archived-")
    assert s.experiment("e") is None
    old = s.experiment(new)
    assert old["kind"] == "archive" and len(s.runs(old["id"])) == 1
    assert s.archive_experiment("missing") is None
