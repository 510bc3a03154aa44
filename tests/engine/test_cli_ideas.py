"""`airlab ideas` and `airlab ideas show` as a user runs them: the installed console script in a
subprocess, on a missing store and on a real one with a tiny experiment that tests an idea."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from airlab.agents.knowledge import get_idea, idea_spec, load_ideas
from airlab.executors.inprocess import InProcessExecutor
from airlab.experiment import run_experiment
from airlab.store import Store

# The installed console script, as test_cli.py runs it. (Its helpers are not imported: that
# module imports `conftest`, a name tests/agents/conftest.py takes over when collected first.)
_SCRIPT = shutil.which("airlab", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(_SCRIPT is None, reason="the airlab console script is not "
                                "installed (pip install -e .)")
IDEA = "rope"


def airlab(*args: str, db: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(_SCRIPT), "--db", db, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def one_line_error(p: subprocess.CompletedProcess, *parts: str) -> None:
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def test_missing_store_lists_every_idea_untested(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'never.db'}"
    p = airlab("ideas", "--json", db=db)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert len(out["ideas"]) == len(load_ideas()) >= 40
    assert {i["status"] for i in out["ideas"]} == {"untested"}
    assert out["record"]["scored"] == 0 and out["history"] == []
    assert not (tmp_path / "never.db").exists()  # a reading command creates nothing

    table = airlab("ideas", "--area", "optimizers", db=db)
    assert table.returncode == 0, table.stderr
    assert "muon" in table.stdout and "rope " not in table.stdout
    assert "prediction record: nothing scored yet" in table.stdout
    code = json.loads(airlab("ideas", "--status", "untested", "--json", db=db).stdout)
    assert {i["needs_code"] for i in code["ideas"]} == {True, False}


@pytest.mark.parametrize("args,parts", [
    (["ideas", "--area", "optimizer"], ["--area", "'optimizer'", "optimizers"]),
    (["ideas", "--status", "beter"], ["--status", "'beter'", "better"]),
    (["ideas", "show", "muonn"], ["unknown idea 'muonn'", "muon"]),
])
def test_bad_flags_and_names_are_one_line(args: list[str], parts: list[str],
                                          tmp_path: Path) -> None:
    one_line_error(airlab(*args, db=f"sqlite:///{tmp_path / 'lab.db'}"), *parts)


@pytest.mark.slow  # ~20-40 s on 2 cores; `make test-all` runs it
def test_a_tested_idea_shows_its_status_and_scored_prediction(db_url: str, shared_data: Path
                                                              ) -> None:
    store = Store(db_url)
    spec = idea_spec(IDEA, seeds=[42, 137], budget={"tokens": 12_000})
    run_experiment(spec, store, InProcessExecutor())
    store.close()

    p = airlab("ideas", "--json", db=db_url)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    st = next(i for i in out["ideas"] if i["name"] == IDEA)
    assert st["status"] in ("better", "worse", "equivalent", "undecided")
    assert st["experiments"] == [spec.name] and st["rating"] >= 1
    (score,) = st["scores"]
    pred = get_idea(IDEA).prediction
    assert score["hit"] == (pred.low <= score["observed"] <= pred.high)
    assert out["record"]["scored"] == 1 and out["record"]["hits"] == int(score["hit"])
    assert sum(i["status"] != "untested" for i in out["ideas"]) == 1

    only = json.loads(airlab("ideas", "--status", st["status"], "--json", db=db_url).stdout)
    assert IDEA in [i["name"] for i in only["ideas"]]

    table = airlab("ideas", "--area", "positions", db=db_url)
    assert table.returncode == 0, table.stderr
    line = next(ln for ln in table.stdout.splitlines() if f" {IDEA} " in ln)
    assert st["status"] in line and ("hit" in line or "miss by" in line)
    assert f"prediction record: {int(score['hit'])}/1 hits" in table.stdout

    show = airlab("ideas", "show", IDEA, db=db_url)
    assert show.returncode == 0, show.stderr
    assert spec.name in show.stdout and pred.text() in show.stdout
    assert "--use_rope" in show.stdout
    shown = json.loads(airlab("ideas", "show", IDEA, "--json", db=db_url).stdout)
    assert shown["idea"]["name"] == IDEA and shown["status"]["status"] == st["status"]
    assert shown["ratings"][spec.name] == st["rating"]
