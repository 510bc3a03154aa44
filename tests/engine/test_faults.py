"""Faults through the installed `airlab` script: workers killed by SIGKILL, a damaged database,
a full disk (a file-size limit) and a read-only lab folder. Real processes, real SQLite."""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

_SCRIPT = shutil.which("airlab", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(_SCRIPT is None, reason="the airlab console script is not "
                                "installed (pip install -e .)")
AIRLAB = [str(_SCRIPT)]
ENV = {**os.environ, "COLUMNS": "200"}

SPEC = """\
name: faulttest
hypothesis: faults lose nothing and run nothing twice
dataset: pycode
budget: {{tokens: {tokens}}}
options: {{n_layer: 1, n_head: 2, n_embd: 32, block_size: 32, batch_size: 8, warmup_steps: 5,
          eval_points: 2, eval_tokens: 512}}
arms:
  - name: rope
    use: [rope]
seeds: {seeds}
"""


def write_spec(folder: Path, seeds: list[int], tokens: int = 2500) -> Path:
    path = folder / "fault.yaml"
    path.write_text(SPEC.format(tokens=tokens, seeds=seeds))
    return path


def airlab(*args: str, home: Path, timeout: float = 600,
           preexec_fn: object = None) -> subprocess.CompletedProcess:
    cmd = AIRLAB + ["--home", str(home), "--db", f"sqlite:///{home / 'lab.db'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV,
                          preexec_fn=preexec_fn)  # type: ignore[arg-type]


def one_line_error(p: subprocess.CompletedProcess, *parts: str) -> str:
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert "Traceback" not in p.stderr + p.stdout
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def rows(db: Path) -> list[tuple[str, str, str, int]]:
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute("select arm, run_key, state, attempts from runs r join experiments e "
                           "on e.id = r.experiment_id where e.name = 'faulttest'").fetchall()
    finally:
        con.close()


def finished_states(db: Path) -> int:
    try:
        return sum(r[2] == "finished" for r in rows(db))
    except sqlite3.Error:
        return 0


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def run_workers(pid: int) -> list[int]:
    """The processes that train: children of the warm zygote, itself a child of airlab."""
    return [g for c in _children(pid) for g in _children(c)]


# -- SIGKILL of the worker that trains -----------------------------------------------------------

def _kill_workers_at_random(tmp_path: Path, kills: int, seeds: list[int]) -> None:
    home = tmp_path / "lab"
    spec = write_spec(tmp_path, seeds, tokens=12000)  # long enough to be killed mid-run
    total = 2 * len(seeds)
    rng = random.Random(kills)
    proc = subprocess.Popen(AIRLAB + ["--home", str(home), "--db", f"sqlite:///{home / 'lab.db'}",
                                      "run", str(spec), "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    killed = 0
    deadline = time.time() + 900
    try:
        while killed < kills and proc.poll() is None and time.time() < deadline:
            time.sleep(rng.uniform(0.2, 1.5))
            workers = run_workers(proc.pid)
            while not workers and proc.poll() is None and time.time() < deadline:
                time.sleep(0.02)  # between runs: wait for the next worker, do not skip a kill
                workers = run_workers(proc.pid)
            if not workers:
                break
            try:
                os.kill(rng.choice(workers), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed > 0, "no worker was ever seen running; the test is void"
    # Infrastructure failures are retried by the same `airlab run` (up to 3 attempts each).
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    assert "Traceback" not in out + err
    # A run killed 3 times stays failed: --retry-failed runs it again.
    again = airlab("run", str(spec), "--retry-failed", home=home)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    got = rows(home / "lab.db")
    assert len(got) == total and len({(a, k) for a, k, _, _ in got}) == total  # none duplicated
    assert all(state == "finished" for _, _, state, _ in got), got
    attempts = sum(a for *_, a in got)
    # Each kill that hit a training worker cost one extra attempt; nothing else did.
    assert total <= attempts <= total + killed, (attempts, killed)
    con = sqlite3.connect(home / "lab.db")
    n = con.execute("select count(*) from runs r where state='finished' and exists (select 1 "
                    "from metrics m where m.run_id=r.id and m.name='val_loss')").fetchone()[0]
    con.close()
    assert n == total  # every finished run has its metrics


def test_sigkill_of_workers_at_3_moments_loses_and_repeats_nothing(tmp_path: Path) -> None:
    _kill_workers_at_random(tmp_path, kills=3, seeds=[1, 2])


@pytest.mark.slow
def test_sigkill_of_workers_at_20_moments_loses_and_repeats_nothing(tmp_path: Path) -> None:
    _kill_workers_at_random(tmp_path, kills=20, seeds=[1, 2, 3, 4])


# -- damaged database, full disk, read-only folder ----------------------------------------------

@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lab with one small experiment run for real (2 arms x 2 seeds)."""
    folder = tmp_path_factory.mktemp("faults")
    home = folder / "lab"
    p = airlab("run", str(write_spec(folder, [1, 2])), home=home)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return home


def test_damaged_database_is_one_line_naming_it(lab: Path, tmp_path: Path) -> None:
    home = tmp_path / "lab"
    home.mkdir()
    (home / "lab.db").write_bytes(b"not a database at all\n" * 300)
    for args in (["status"], ["show", "faulttest"], ["run", str(write_spec(tmp_path, [1]))]):
        one_line_error(airlab(*args, home=home), str(home / "lab.db"), "damaged")


def _readonly_cmd(folder: Path, args: list[str]) -> list[str]:
    inner = " ".join(f"'{a}'" for a in args)
    return ["unshare", "-rm", "sh", "-c", f"mount --bind '{folder}' '{folder}' && mount -o "
            f"remount,ro,bind '{folder}' '{folder}' && exec {inner}"]


def _can_mount_readonly(folder: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(_readonly_cmd(folder, ["true"]), capture_output=True).returncode == 0


@pytest.mark.slow  # ~10 s; CI keeps the full disk below (a write refused, nothing lost)
def test_reading_commands_work_on_a_read_only_lab_folder(lab: Path, tmp_path: Path) -> None:
    home = tmp_path / "ro"
    shutil.copytree(lab, home)
    before = {p.name: p.read_bytes() for p in home.iterdir() if p.is_file()}
    if _can_mount_readonly(home):
        def run(*args: str) -> subprocess.CompletedProcess:
            cmd = AIRLAB + ["--home", str(home), "--db", f"sqlite:///{home / 'lab.db'}", *args]
            return subprocess.run(_readonly_cmd(home, cmd), capture_output=True, text=True,
                                  timeout=300, env=ENV)
    elif os.geteuid() != 0:
        os.chmod(home, 0o555)

        def run(*args: str) -> subprocess.CompletedProcess:
            return airlab(*args, home=home)
    else:
        pytest.skip("running as root (chmod does not stop root) and no mount namespace here")
    try:
        shown = run("show", "faulttest", "--runs")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.count("finished") >= 4
        status = run("status")
        assert status.returncode == 0, status.stderr
        assert "faulttest" in status.stdout
        out = tmp_path / "export"
        exported = run("export", "--out", str(out))
        assert exported.returncode == 0, exported.stderr
        assert (out / "runs.csv").read_text().count("faulttest") >= 4
        # Writing is refused in one line naming the database; nothing is lost.
        ran = run("run", str(write_spec(tmp_path, [1, 2, 3])))
        one_line_error(ran, "lab.db")
    finally:
        os.chmod(home, 0o755)
    assert {p.name: p.read_bytes() for p in home.iterdir() if p.is_file()} == before


def test_full_disk_keeps_every_finished_result(lab: Path, tmp_path: Path) -> None:
    home = tmp_path / "full"
    shutil.copytree(lab, home)
    spec = write_spec(tmp_path, [1, 2, 3])  # two more runs than the lab has
    done = {(a, k) for a, k, s, _ in rows(home / "lab.db") if s == "finished"}
    assert len(done) == 4
    limit = 48 * 1024  # bytes a file may grow to: the WAL fills after a few transactions

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    p = airlab("run", str(spec), home=home, preexec_fn=small_disk)
    line = one_line_error(p)  # the limit was hit: one line that says what to do
    assert "file size limit" in line or "free disk space" in line, line
    journal = home / "results-journal.jsonl"
    journaled = ([json.loads(s) for s in journal.read_text().splitlines() if s.strip()]
                 if journal.exists() else [])
    # Without the limit, the next run stores journaled results first and runs only the rest.
    again = airlab("run", str(spec), home=home)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    got = {(a, k): (s, n) for a, k, s, n in rows(home / "lab.db")}
    assert len(got) == 6 and all(s == "finished" for s, _ in got.values()), got
    for a, k in done:
        assert got[(a, k)] == ("finished", 1)  # finished before: never run again
    for e in journaled:
        if e.get("state") == "finished" and e.get("run_key"):
            assert got[(e["arm"], e["run_key"])] == ("finished", 1)  # stored, not re-run
    m = re.search(r"6 runs planned, (\d+) reused", again.stdout)
    assert m and int(m[1]) >= 4, again.stdout
