"""The `airlab` command as a user runs it: a real subprocess, a real store."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MICRO

AIRLAB = [sys.executable, "-m", "airlab"]


def airlab(*args: str, db: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = AIRLAB + (["--db", db] if db else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


def one_line_error(p: subprocess.CompletedProcess, *parts: str) -> None:
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    for part in parts:
        assert part in lines[0], lines[0]


MICRO_FLAGS = [x for k, v in MICRO.items() for x in (f"--{k}", str(v))]


def test_train_prints_a_summary_and_stores_the_run(db_url: str) -> None:
    p = airlab("train", "charlm", "--tokens", "4000", "--seed", "7", "--use_rope", *MICRO_FLAGS,
               db=db_url)
    assert p.returncode == 0, p.stderr
    out = dict(line.split(": ", 1) for line in p.stdout.splitlines() if ": " in line)
    assert out["state"] == "finished"
    assert float(out["val_loss"]) > 0 and float(out["tokens"]) >= 4000
    run_name = out["run"]
    shown = airlab("show", run_name, db=db_url)
    assert shown.returncode == 0 and "finished" in shown.stdout
    con = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    (cfg,) = con.execute("select config from runs").fetchone()
    assert '"positions": "rope"' in cfg and '"seed": 7' in cfg


@pytest.mark.parametrize("args,parts", [
    (["train", "charlm", "--use_ropee"], ["unknown flag --use_ropee", "--use_rope"]),
    (["train", "charlm", "--n_layr", "2"], ["unknown option 'n_layr'", "n_layer"]),
    (["train", "charlm", "--lr"], ["option --lr needs a value"]),
    (["train", "charlm", "--dataset", "file:/no/such/file.txt", "--tokens", "1000"],
     ["/no/such/file.txt"]),
    (["train", "charlm", "--dataset", "shakspeare"], ["shakspeare", "shakespeare"]),
    (["run", "no_such_spec.yaml"], ["spec file not found: no_such_spec.yaml"]),
    (["show", "nothing-here"], ["no experiment named 'nothing-here'"]),
])
def test_bad_input_is_one_line_naming_the_problem(args: list[str], parts: list[str],
                                                   db_url: str) -> None:
    one_line_error(airlab(*args, db=db_url), *parts)


def test_unreachable_database_is_one_line() -> None:
    p = airlab("status", db="postgresql+psycopg://lab:pw@127.0.0.1:9/lab")
    one_line_error(p, "cannot open database", "127.0.0.1:9")


def test_malformed_spec_is_one_line(tmp_path: Path, db_url: str) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nbudget: {tokens: 100}\narms:\n  - name: a\n    use: [rmsnrm]\n")
    one_line_error(airlab("run", str(spec), db=db_url), "bad.yaml:5", "rmsnrm", "rmsnorm")


SPEC = """\
name: killtest
hypothesis: resume after SIGKILL
dataset: pycode
budget: {tokens: 6000}
options: {n_layer: 1, n_head: 2, n_embd: 32, block_size: 32, batch_size: 8, warmup_steps: 5,
          eval_points: 2, eval_tokens: 1024}
arms:
  - name: rope
    use: [rope]
seeds: [1, 2, 3]
"""


def _states(db: Path) -> list[str]:
    try:
        con = sqlite3.connect(db, timeout=30)
        rows = [r[0] for r in con.execute("select state from runs")]
        con.close()
        return rows
    except sqlite3.OperationalError:
        return []


def test_sigkill_mid_experiment_then_rerun_finishes_exactly_once(tmp_path: Path) -> None:
    spec = tmp_path / "kill.yaml"
    spec.write_text(SPEC)
    db = tmp_path / "kill.db"
    url = f"sqlite:///{db}"
    proc = subprocess.Popen(AIRLAB + ["--db", url, "run", str(spec)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and _states(db).count("finished") < 2:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # no cleanup at all: the hardest stop
    proc.wait()
    before = _states(db)
    assert before.count("finished") >= 2 and len(before) == 6
    assert before.count("finished") < 6, "the experiment finished before the kill; test is void"
    p = airlab("run", str(spec), db=url)
    assert p.returncode == 0, p.stderr
    after = _states(db)
    assert len(after) == 6 and after.count("finished") == 6
    assert "reused" in p.stdout
    con = sqlite3.connect(db)
    # No run is duplicated and finished runs were not run again.
    assert con.execute("select count(distinct arm || run_key) from runs").fetchone()[0] == 6
    assert con.execute("select max(attempts) from runs where state='finished'").fetchone()[0] <= 2
    # Every finished run has its curve and metrics (writes were all-or-nothing).
    n = con.execute("select count(*) from runs r where state='finished' and exists "
                    "(select 1 from metrics m where m.run_id=r.id and m.name='val_loss') and "
                    "exists (select 1 from curves c where c.run_id=r.id)").fetchone()[0]
    assert n == 6
    again = airlab("run", str(spec), db=url)
    assert "6 reused, 0 run" in again.stdout
    assert "better" in again.stdout or "no difference" in again.stdout or "worse" in again.stdout
