"""The `airlab` command as a user runs it: a real subprocess, a real store."""

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MICRO

# The installed console script, as a user runs it (not `python -m`, not an in-process runner).
_SCRIPT = shutil.which("airlab", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(_SCRIPT is None, reason="the airlab console script is not "
                                "installed (pip install -e .)")
AIRLAB = [str(_SCRIPT)]


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


# Slow (about 20 s on one core): CI keeps tests/engine/test_faults.py's SIGKILL of workers at
# three moments and tests/engine/test_executor.py's runs dying with a SIGKILLed airlab.
@pytest.mark.slow
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
    con = sqlite3.connect(db)
    done_before = dict(con.execute("select id, finished_at from runs where state='finished'"))
    con.close()
    p = airlab("run", str(spec), db=url)
    assert p.returncode == 0, p.stderr
    after = _states(db)
    assert len(after) == 6 and after.count("finished") == 6
    # The summary's counts are the store's: the runs finished before the kill were reused
    # (not executed again: same finish time, one attempt), the others were executed now.
    m = re.search(r"6 runs planned, (\d+) reused, (\d+) run \((\d+) failed\)", p.stdout)
    assert m, p.stdout
    assert (int(m[1]), int(m[2]), int(m[3])) == (len(done_before), 6 - len(done_before), 0)
    con = sqlite3.connect(db)
    for run_id, finished_at in done_before.items():
        assert con.execute("select finished_at, attempts from runs where id=?",
                           (run_id,)).fetchone() == (finished_at, 1)
    # No run is duplicated and finished runs were not run again.
    assert con.execute("select count(distinct arm || run_key) from runs").fetchone()[0] == 6
    assert con.execute("select max(attempts) from runs where state='finished'").fetchone()[0] <= 2
    # Every finished run has its curve and metrics (writes were all-or-nothing).
    n = con.execute("select count(*) from runs r where state='finished' and exists "
                    "(select 1 from metrics m where m.run_id=r.id and m.name='val_loss') and "
                    "exists (select 1 from curves c where c.run_id=r.id)").fetchone()[0]
    assert n == 6
    finished_at = dict(con.execute("select id, finished_at from runs"))
    con.close()
    again = airlab("run", str(spec), db=url)
    assert "6 runs planned, 6 reused, 0 run (0 failed)" in again.stdout
    con = sqlite3.connect(db)
    assert dict(con.execute("select id, finished_at from runs")) == finished_at  # none ran
    assert "better" in again.stdout or "no difference" in again.stdout or "worse" in again.stdout


SLOW_SPEC = """\
name: retrytest
hypothesis: a run that timed out is run again by --retry-failed
dataset: pycode
budget: {seconds: 3}
options: {n_layer: 1, n_head: 2, n_embd: 32, block_size: 32, batch_size: 8, warmup_steps: 5,
          eval_points: 2, eval_tokens: 1024}
seeds: [1]
"""


@pytest.mark.slow  # ~20-40 s on 2 cores; `make test-all` runs it
def test_retry_failed_reruns_a_failed_run(tmp_path: Path) -> None:
    spec = tmp_path / "retry.yaml"
    # A real failure: a one-second time limit on a run that trains for three seconds.
    spec.write_text(SLOW_SPEC)
    url = f"sqlite:///{tmp_path / 'retry.db'}"
    first = airlab("run", str(spec), "--timeout", "1", db=url)
    assert first.returncode == 0, first.stderr
    con = sqlite3.connect(tmp_path / "retry.db")
    assert con.execute("select state, attempts from runs").fetchall() == [("failed", 1)]
    con.close()
    assert "--retry-failed" in first.stdout  # the critique says what to do
    plain = airlab("run", str(spec), db=url)  # without the flag a failed run stays failed
    assert plain.returncode == 0 and "1 runs planned, 1 reused, 0 run" in plain.stdout
    retried = airlab("run", str(spec), "--retry-failed", db=url)
    assert retried.returncode == 0, retried.stderr
    assert "1 runs planned, 0 reused, 1 run (0 failed)" in retried.stdout
    con = sqlite3.connect(tmp_path / "retry.db")
    assert con.execute("select state, attempts from runs").fetchall() == [("finished", 2)]


def test_check_plans_without_training(tmp_path: Path, db_url: str) -> None:
    spec = tmp_path / "kill.yaml"
    spec.write_text(SPEC)
    p = airlab("check", str(spec), db=db_url)
    assert p.returncode == 0, p.stderr
    assert "killtest: 2 arms x 3 seeds = 6 runs" in p.stdout
    assert "arm rope [rope]: model.positions: None -> rope" in p.stdout
    assert not (tmp_path / "lab.db").exists()  # nothing stored, nothing trained
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("use: [rope]", "use: [ropee]"))
    one_line_error(airlab("check", str(bad), db=db_url), "bad.yaml:9", "'ropee'", "'rope'")


def test_home_decides_the_cache_over_an_inherited_one(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The rule the end-to-end test below checks through a worker, here in the settings alone.
    from airlab.settings import Settings, get_settings

    monkeypatch.setenv("AIRLAB_CACHE_DIR", str(tmp_path / "elsewhere"))
    s = get_settings(home=tmp_path / "lab2")
    assert s.cache_dir == tmp_path / "lab2" / "cache"
    assert Settings.from_dict(s.to_dict()) == s  # what a worker process receives
    assert get_settings().cache_dir == tmp_path / "elsewhere"  # no --home: the environment's


@pytest.mark.slow  # ~8 s; CI keeps the settings-level test above
def test_home_reaches_the_data_cache(tmp_path: Path, shared_data: Path) -> None:
    # --home decides the cache, in the parent and in the worker, even with an inherited
    # AIRLAB_CACHE_DIR: Tiny Shakespeare placed only in <home>/cache is found there, offline.
    home = tmp_path / "lab2"
    (home / "cache" / "tinyshakespeare").mkdir(parents=True)
    shutil.copyfile(shared_data / "tinyshakespeare" / "input.txt",
                    home / "cache" / "tinyshakespeare" / "input.txt")
    env = {k: v for k, v in os.environ.items() if k != "AIRLAB_DATA_DIR"}
    env.update(AIRLAB_CACHE_DIR=str(tmp_path / "elsewhere"),
               AIRLAB_SHAKESPEARE_URL="http://127.0.0.1:9/input.txt")  # nothing listens there
    args = ["train", "charlm", "--dataset", "shakespeare", "--tokens", "2000", *MICRO_FLAGS]
    p = subprocess.run(AIRLAB + ["--home", str(home), *args], capture_output=True, text=True,
                       timeout=300, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "state: finished" in p.stdout
    assert not (tmp_path / "elsewhere").exists()
    # Without --home the same command looks in AIRLAB_CACHE_DIR, finds nothing and says where.
    q = subprocess.run(AIRLAB + ["--db", f"sqlite:///{tmp_path / 'other.db'}", *args],
                       capture_output=True, text=True, timeout=300, env=env)
    assert q.returncode != 0 and str(tmp_path / "elsewhere") in q.stdout + q.stderr


HOSTILE_EXP = "../../escaped/<img src=x onerror=alert(1)>[x](http://evil)"
HOSTILE_ARM = "../../arm|**bold**<b>`"


def test_hostile_names_stay_inside_the_lab_and_are_escaped(tmp_path: Path) -> None:
    # Names from a store (or a Python-built spec) are never trusted: the loader refuses these,
    # so they are written into a real experiment's rows directly.
    from airlab.check import load_checked
    from airlab.executors.inprocess import InProcessExecutor
    from airlab.experiment import execute_runs
    from airlab.settings import get_settings
    from airlab.store import Store

    spec_file = tmp_path / "h.yaml"
    spec_file.write_text(SPEC.replace("seeds: [1, 2, 3]", "seeds: [1]")
                         .replace("name: killtest", "name: hostile")
                         .replace("hypothesis: resume after SIGKILL",
                                  "hypothesis: '# heading <script>x</script> [a](http://e)'"))
    root = tmp_path / "root"
    home = root / "lab"
    db = f"sqlite:///{home / 'lab.db'}"
    settings = get_settings(db=db, home=str(home))
    store = Store(db)
    execute_runs(load_checked(str(spec_file), settings), store,
                 InProcessExecutor(settings=settings), settings=settings)
    con = sqlite3.connect(home / "lab.db")
    con.execute("update experiments set name=?", (HOSTILE_EXP,))
    con.execute("update runs set arm=? where arm='rope'", (HOSTILE_ARM,))
    con.commit()
    con.close()
    store.close()
    out = root / "export"
    p = airlab("--home", str(home), "export", "--out", str(out), db=db)
    assert p.returncode == 0, p.stderr
    v = airlab("--home", str(home), "verdict", HOSTILE_EXP, db=db)
    assert v.returncode == 0, v.stderr
    written = {q for q in root.rglob("*") if q.is_file()}
    assert written and all(q.is_relative_to(home) or q.is_relative_to(out) for q in written)
    assert not (tmp_path / "escaped").exists() and not list(tmp_path.glob("*arm*"))
    docs = [out / "report.md", *(home / "experiments").rglob("*.md")]
    assert len(docs) >= 5
    for doc in docs:
        # Code spans show their text literally (the critique quotes commands in them).
        text = re.sub(r"`[^`\n]*`", "", doc.read_text())
        for bad in ("<img", "<script", "<b>", "](http", "**bold**", "\n# heading"):
            assert bad not in text, (doc, bad)
    assert "<img src=x" not in (out / "report.html").read_text()  # its own plots are <img>s


def test_usage_errors_are_one_line_without_click(tmp_path: Path) -> None:
    # typer vendors click: nothing of ours may import it. Make sure `import click` fails.
    blocker = tmp_path / "noclick"
    blocker.mkdir()
    (blocker / "click.py").write_text("raise ModuleNotFoundError(\"No module named 'click'\", "
                                      "name='click')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker), "COLUMNS": "200"}
    for args, parts in ((["run", "--bogus"], ["--bogus"]),
                        (["train", "charlm", "--tokens", "abc"], ["--tokens", "number"]),
                        (["show"], ["Missing argument"]), (["--bogus-global"], ["--bogus-global"])):
        p = subprocess.run(AIRLAB + args, capture_output=True, text=True, timeout=120, env=env)
        one_line_error(p, *parts)


def test_an_internal_error_is_one_line_with_a_log_of_the_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import airlab.report.tracker as tracker
    from airlab.cli import main

    def broken(*_: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(tracker, "print_status", broken)
    home = tmp_path / "lab"
    monkeypatch.setattr(sys, "argv", ["airlab", "--home", str(home), "status"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "internal error: RuntimeError: boom" in err[0], err
    m = re.search(r"traceback in (\S+\.log)", err[0])
    assert m and Path(m[1]).is_relative_to(home / "logs"), err[0]
    log = Path(m[1]).read_text()
    assert "Traceback" in log and "RuntimeError: boom" in log and "in broken" in log
