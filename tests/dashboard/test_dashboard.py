"""`airlab dashboard` in a real browser: headless Chromium (Debian's, driven by its own
chromedriver through Selenium) on a real server on 127.0.0.1, over real training.

The page is never reloaded by a test: a marker set in the page at the start must still be
there at the end. Tests skip, saying why, where Chromium, chromedriver or Selenium is missing
(.ci/run installs them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import MICRO

from airlab.store import LiveWriter, Store

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-dev-shm-usage", "--window-size=1500,1000"]
TRACES = """
const d = document.getElementById('curves').data || [];
return d.filter(t => t.meta && !t.meta.target)
        .map(t => [t.meta.run_id, t.meta.arm, t.meta.state, t.x.length]);
"""


def _airlab() -> list[str]:
    """The installed console script, as a user runs it."""
    found = shutil.which("airlab", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("the airlab console script is not installed in this environment")
    return [found]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = next((p for n in ("chromium", "chromium-browser")
                     if (p := shutil.which(n))), None)
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("headless Chromium and chromedriver not found: apt-get install -y "
                    "chromium chromium-driver (.ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="selenium is not installed (the dev extra has it)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors, read below
    b = webdriver.Chrome(options=opts, service=Service(driver))  # never a browser download
    b.set_script_timeout(30)
    try:
        yield b
    finally:
        b.quit()


@contextmanager
def dashboard(*args: str) -> Iterator[str]:
    """`airlab dashboard --port 0` in its own process; yields its URL; Ctrl-C at the end."""
    p = subprocess.Popen([*_airlab(), *args, "dashboard", "--port", "0", "--poll", "0.5"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert m, f"no URL in {line!r}; stderr: {p.stderr.read() if p.stderr else ''}"
        yield m.group(1)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    assert p.returncode == 0, p.stderr.read() if p.stderr else p.returncode


def _spec(tmp_path: Path, name: str, tokens: float) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "hypothesis": "rotary positions change the loss of a tiny model",
        "workload": "charlm", "dataset": "shakespeare", "budget": {"tokens": tokens},
        "options": {**MICRO, "eval_points": 12}, "baseline": {"name": "base"},
        "arms": [{"name": "rope", "use": ["rope"]}], "seeds": [1, 2]}))
    return path


def _until(what: str, fn: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _watch_a_running_arm_grow(b: Any, procs: list[subprocess.Popen[str]]) -> tuple[int, int]:
    """The plotted points of one running run, read from Plotly's own data twice while that
    run is still running: the second count is larger. Returns (first, second)."""
    first: tuple[int, int] | None = None  # (run id, points)
    deadline = time.monotonic() + 240
    seen: list[Any] = []
    while time.monotonic() < deadline:
        rows = b.execute_script(TRACES) if b.execute_script(
            "return !!(document.getElementById('curves').data)") else []
        if not seen or seen[-1] != rows:
            seen.append(rows)
        running = {r[0]: r[3] for r in rows if r[2] == "running" and r[3] >= 1}
        if first is not None and first[0] in running and running[first[0]] > first[1]:
            return first[1], running[first[0]]
        if first is None or first[0] not in running:
            first = next(iter(running.items()), None)
        for p in procs:
            if p.poll() not in (None, 0):
                raise AssertionError(f"a lab process failed: {p.stderr.read() if p.stderr else ''}")
        time.sleep(0.2)
    status = b.execute_script("return document.getElementById('status').textContent")
    raise AssertionError(f"never saw a running run's plotted points grow; page: {status}; "
                         f"traces seen (run, arm, state, points): {seen[-12:]}")


def _verdict(b: Any) -> dict[str, Any] | None:
    return b.execute_script("""
        const v = document.getElementById('verdict');
        if (!v.dataset.rating) return null;
        const rows = Array.from(document.querySelectorAll('#results tbody tr'))
                          .map(r => r.cells[0].textContent);
        return {rating: v.dataset.rating, text: v.textContent, arms: rows,
                marker: window.__airlabTestMarker || null,
                updates: Number(document.documentElement.dataset.updates)};""")


def _open(b: Any, url: str) -> None:
    b.get(url)
    _until("the page's first update", lambda: b.execute_script(
        "return Number(document.documentElement.dataset.updates || 0) >= 1"), 60)
    b.execute_script("window.__airlabTestMarker = 'same page';")  # gone if it ever reloads


def _finish(p: subprocess.Popen[str], timeout: float = 300) -> str:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-3000:]
    return out


def test_a_running_experiment_grows_on_the_page_then_its_verdict_appears(
        browser: Any, shared_data: Path, tmp_path: Path) -> None:
    # Runs of several seconds each: several flushes and page updates within one run even when
    # the run, the dashboard, Chromium and pytest share one core (at 1.6e5 tokens, about 3 s a
    # run there, the page once saw a run only at 5 points and then finished).
    spec = _spec(tmp_path, "live_sqlite", 3.2e5)
    with dashboard() as url:
        _open(browser, url)
        # One worker: a core stays free for the dashboard and the browser, whose updates must
        # come several times within one run even on a loaded machine (with two workers they
        # were once starved until the runs ended).
        run = subprocess.Popen([*_airlab(), "run", str(spec), "--workers", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=_env())
        try:
            n1, n2 = _watch_a_running_arm_grow(browser, [run])
            assert n2 > n1 >= 1
            got = _until("the verdict on the page", lambda: _verdict(browser), 240, 0.5)
        finally:
            if run.poll() is None:
                _finish(run)
        assert run.returncode == 0
        assert got["marker"] == "same page"  # no reload: the script redrew the same page
        assert got["arms"] == ["base", "rope"] and 1 <= int(got["rating"]) <= 10
        assert "/10" in got["text"]
        assert browser.find_element("id", "exp-name").text == "live_sqlite"
        runs = browser.execute_script(
            "return Array.from(document.querySelectorAll('#runs tbody tr'))"
            ".map(r => r.cells[2].textContent)")
        assert len(runs) == 4 and all(r.startswith("finished") for r in runs), runs
        logs = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert not logs, logs  # no script error, no refused request (CSP included)


@pytest.mark.slow
def test_the_same_on_postgresql_with_two_workers(browser: Any, shared_data: Path,
                                                 tmp_path: Path, pg_url: str) -> None:
    spec = _spec(tmp_path, "live_pg", 3.2e5)  # runs of several seconds (as above)
    db = ["--db", pg_url]
    _finish(subprocess.Popen([*_airlab(), *db, "run", str(spec), "--enqueue"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env()), 120)
    with dashboard(*db) as url:
        _open(browser, url + "#exp=live_pg")
        # One torch thread each: two processes of cores / workers threads each would share
        # the 2 cores four ways (many times slower on a loaded machine).
        workers = [subprocess.Popen([*_airlab(), *db, "worker", "--threads", "1"],
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=_env())
                   for _ in range(2)]
        try:
            n1, n2 = _watch_a_running_arm_grow(browser, workers)
            assert n2 > n1 >= 1
            outs = [_finish(w) for w in workers]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
        executed = [int(re.search(r"executed (\d+) run", o).group(1))  # type: ignore[union-attr]
                    for o in outs]
        assert sum(executed) == 4 and all(n >= 1 for n in executed), outs
        # The result table and verdict come with the analysis: `airlab run` on the same store
        # finds every run finished and rates the experiment; the open page shows it.
        _finish(subprocess.Popen([*_airlab(), *db, "run", str(spec)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=_env()), 300)
        got = _until("the verdict on the page", lambda: _verdict(browser), 120, 0.5)
        assert got["marker"] == "same page" and got["arms"] == ["base", "rope"]
        assert 1 <= int(got["rating"]) <= 10


HOSTILE_EXP = '<img src=x onerror="window.__pwned=1">exp'
HOSTILE_ARM = "<script>window.__pwned=2</script>"
HOSTILE_TEXT = '<b onmouseover="window.__pwned=3">bold</b> & <a href="javascript:alert(1)">x</a>'


def test_names_from_the_store_are_shown_as_text(browser: Any, tmp_path: Path) -> None:
    """Experiment and arm names come from specs and from a model: markup in them is text."""
    url_db = f"sqlite:///{os.environ['AIRLAB_HOME']}/airlab.db"
    s = Store(url_db)
    spec = {"name": HOSTILE_EXP, "hypothesis": HOSTILE_TEXT, "metric": "val_loss",
            "baseline": {"name": HOSTILE_ARM}, "arms": [], "seeds": [1],
            "budget": {"tokens": 1000}}
    eid = s.upsert_experiment(HOSTILE_EXP, spec, workload="charlm", hypothesis=HOSTILE_TEXT)
    [row] = s.ensure_runs(eid, [(HOSTILE_ARM, 1, "k1", {"device": "cpu"})])
    s.claim(row["id"])
    with LiveWriter(s) as w:
        for i in range(3):
            w.event(row["id"], 1, {"type": "eval", "step": i * 10, "tokens": i * 100,
                                   "train_seconds": i, "flops": 0, "val_loss": 4.0 - i})
        w.event(row["id"], 1, {"type": "step", "step": 25, "progress": 0.5, "loss": 2.5,
                               "lr": 1e-3, "tokens": 250, "train_seconds": 2.5})
    s.close()
    with dashboard() as url:
        with urllib.request.urlopen(url) as r:  # the page's own headers
            csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-eval" not in csp
        _open(browser, url)
        _until("the hostile experiment drawn", lambda: browser.execute_script(
            "return (document.getElementById('curves').dataset.points || '') === '3'"), 60)
        got = browser.execute_script("""return {
            pwned: window.__pwned || null,
            name: document.getElementById('exp-name').textContent,
            hyp: document.getElementById('exp-hypothesis').textContent,
            list: document.querySelector('#experiments li .name').textContent,
            arm: document.querySelector('#runs tbody td').textContent,
            legend: (document.querySelector('#curves .legend') || {}).textContent || '',
            imgs: document.querySelectorAll('img').length,
            scripts: Array.from(document.scripts).map(s => s.src),
            bolds: document.querySelectorAll('main b, main a').length};""")
    assert got["pwned"] is None
    assert got["name"] == HOSTILE_EXP and got["hyp"] == HOSTILE_TEXT
    assert got["list"].startswith(HOSTILE_EXP) and got["arm"] == HOSTILE_ARM
    assert HOSTILE_ARM in got["legend"]  # Plotly shows the tags as text, too
    assert got["imgs"] == 0 and got["bolds"] == 0
    assert all(src.endswith(("/static/plotly.min.js", "/static/dashboard.js"))
               for src in got["scripts"]), got["scripts"]


def _get(url: str, host: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
            return r.status, json.loads(body) if r.headers.get_content_type() == \
                "application/json" else body
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_reads_an_empty_lab_without_writing_and_sees_it_appear(tmp_path: Path) -> None:
    db_file = Path(os.environ["AIRLAB_HOME"]) / "airlab.db"
    with dashboard() as url:
        code, body = _get(url + "api/overview")
        assert code == 200 and body["experiments"] == []
        code, team = _get(url + "api/team")
        assert code == 200 and team["sprints"]["current"] is None
        assert len(team["ideas"]["ideas"]) >= 50 and team["optuna"]["studies"] == []
        assert not db_file.exists()  # read-only: the dashboard created nothing
        s = Store(f"sqlite:///{db_file}")
        s.upsert_experiment("later", {"x": 1}, workload="charlm")
        s.close()
        code, body = _until("the new experiment", lambda: (b := _get(url + "api/overview"))[1]
                            ["experiments"] and b, 30)
        assert [e["name"] for e in body["experiments"]] == ["later"]
        assert _get(url + "api/experiment?name=nope")[0] == 404
        assert _get(url + "api/overview", host="attacker.example:80")[0] == 400  # rebinding
        assert _get(url + "static/../../etc/passwd")[0] == 404
        with urllib.request.urlopen(url + "static/plotly.min.js") as r:
            assert r.status == 200 and len(r.read()) > 1_000_000  # the bundled plotly.js
        req = urllib.request.Request(url + "api/overview", method="POST", data=b"x")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        assert e.value.code == 405  # nothing but reads


@pytest.mark.parametrize("args, says", [
    (["--port", "70000"], "--port"),
    (["--poll", "0"], "--poll"),
    (["--host", "no-such-host.invalid", "--port", "0"], "--host 'no-such-host.invalid'"),
    (["--nope"], "--nope"),
])
def test_bad_flags_are_one_line(args: list[str], says: str) -> None:
    r = subprocess.run([*_airlab(), "dashboard", *args], capture_output=True, text=True,
                       timeout=60, env=_env())
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_a_busy_port_and_a_wide_host_are_said_in_one_line() -> None:
    with dashboard() as url:
        port = url.rsplit(":", 1)[1].strip("/")
        r = subprocess.run([*_airlab(), "dashboard", "--port", port], capture_output=True,
                           text=True, timeout=60, env=_env())
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines() == [
            f"error: --port {port} is already in use on 127.0.0.1 (choose another with --port, "
            "or --port 0 for a free one)"], r.stderr
    p = subprocess.Popen([*_airlab(), "dashboard", "--host", "0.0.0.0", "--port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert p.stdout is not None and "http://0.0.0.0:" in p.stdout.readline()
    finally:
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    assert p.returncode == 0
    assert err.startswith("warning: --host 0.0.0.0 shows the lab") and "Traceback" not in err
