"""The sandbox stops every escape and says why: network, the lab database, keys in the
environment, writing outside its folder, an endless loop, a fork bomb, a memory balloon,
running binaries and signalling its parent. Each case runs real code in a real sandbox."""

from __future__ import annotations

import os
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest
from listener import Listener

import airlab.sandbox as sandbox
from airlab.errors import AirlabError
from airlab.sandbox import Limits, SandboxResult, protections, run_sandboxed, why_unsandboxed

needs_bwrap = pytest.mark.skipif(not protections().bubblewrap,
                                 reason=f"no usable bubblewrap here: {why_unsandboxed()}")
FAST = Limits(address_space_mb=1024, cpu_s=20, processes=32, file_size_mb=16, wall_s=30)


def run(code: str, tmp_path: Path, limits: Limits = FAST, **kw: object) -> SandboxResult:
    return run_sandboxed([sys.executable, "-c", textwrap.dedent(code)], limits=limits,
                         **kw)  # type: ignore[arg-type]


def test_protections_say_what_is_in_force() -> None:
    p = protections()
    lines = p.lines()
    assert len(lines) == 7 and all(line[:3] in ("yes", "NO ") for line in lines)
    assert p.env_scrubbed and p.rlimits
    assert lines[1].startswith("yes" if p.network_isolated else "NO ")
    if os.geteuid() == 0:
        assert p.unprivileged_user == "nobody"


@needs_bwrap
def test_a_plain_run_works_in_its_private_folder(tmp_path: Path) -> None:
    """It reads its input on stdin, writes in its private folder, and hands its result back
    through the result pipe (the parent reads no file the code could have written)."""
    r = run("""
        import os, sys
        open("out.txt", "w").write(sys.stdin.read())
        print(os.getcwd(), os.getuid(), os.environ["HOME"])
        os.write(int(os.environ["SANDBOX_RESULT_FD"]), open("out.txt", "rb").read())
    """, tmp_path, stdin="written")
    assert r.ok, r.reason
    cwd, uid, home = r.stdout.split()
    assert cwd == home == sandbox.WORKDIR
    if os.geteuid() == 0:
        assert uid != "0"  # dropped to the unprivileged user
    assert r.output == b"written"


@needs_bwrap
def test_the_writable_folders_have_a_disk_quota(tmp_path: Path) -> None:
    """The private folder and /tmp are tmpfs mounts of ``disk_mb``: however many files the
    code writes, the total stops there (once 800 MB went to the folder, 400 MB to /tmp)."""
    for folder in (".", "/tmp"):
        r = run(f"""
            for i in range(64):
                with open("{folder}/fill-%d" % i, "wb") as f:
                    f.write(b"x" * (4 << 20))
        """, tmp_path, Limits(disk_mb=32, wall_s=60))
        assert r.killed_by == "disk", (folder, r.reason)
        assert "disk quota of 32 MB reached" in r.reason


@needs_bwrap
def test_memory_and_cpu_limits_hold_for_the_whole_process_tree(tmp_path: Path) -> None:
    """Per-process limits do not stop four processes of 150 MB each; the parent's watch over
    the tree's resident memory does."""
    r = run("""
        import os, time
        for _ in range(4):
            if os.fork() == 0:
                block = bytearray(150 << 20)
                block[::4096] = b"x" * len(block[::4096])  # touch every page
                time.sleep(60)
        time.sleep(60)
    """, tmp_path, Limits(address_space_mb=1024, memory_mb=400, wall_s=90))
    assert r.killed_by == "memory", r.reason
    assert "memory limit of 400 MB for the sandbox's processes" in r.reason


@needs_bwrap
def test_a_frozen_tree_computes_nothing(tmp_path: Path) -> None:
    """freeze() stops every process of the tree (threads and children included): its CPU time
    stands still until thaw()."""
    import time

    from airlab.sandbox import start_sandboxed

    sp = start_sandboxed([sys.executable, "-c", textwrap.dedent("""
        import os, threading
        def spin():
            while True:
                pass
        threading.Thread(target=spin, daemon=True).start()
        if os.fork() == 0:
            spin()
        spin()
    """)], limits=Limits(wall_s=60))
    try:
        time.sleep(1.5)
        sp.freeze()
        frozen_at = sp.cpu_seconds()
        time.sleep(1.0)
        assert sp.cpu_seconds() - frozen_at < 0.05
        sp.thaw()
        time.sleep(1.0)
        assert sp.cpu_seconds() - frozen_at > 0.5
    finally:
        sp.kill("test", "done")
        sp.finish()


@needs_bwrap
def test_network_to_a_local_server_is_refused(tmp_path: Path) -> None:
    with Listener() as server:
        r = run(f"""
            import socket
            socket.create_connection(("127.0.0.1", {server.port}), timeout=3).sendall(b"stolen")
        """, tmp_path)
        accepted = server.close()
    assert not r.ok and not accepted  # the server never saw a connection
    assert "Connection refused" in r.reason, r.reason


@needs_bwrap
def test_network_to_an_outside_address_is_refused(tmp_path: Path) -> None:
    r = run("""
        import socket
        socket.create_connection(("1.1.1.1", 53), timeout=3)
    """, tmp_path)
    assert not r.ok
    assert "Network is unreachable" in r.reason, r.reason


@needs_bwrap
def test_the_lab_database_is_not_visible(tmp_path: Path) -> None:
    home = Path(os.environ["AIRLAB_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    db = home / "airlab.db"
    with sqlite3.connect(db) as con:
        con.execute("create table secrets (x text)")
        con.execute("insert into secrets values ('crown jewels')")
    os.chmod(db, 0o644)  # readable by anyone: only the sandbox's mount table hides it
    r = run(f"""
        print(open({str(db)!r}, "rb").read())
    """, tmp_path)
    assert not r.ok and "crown jewels" not in r.stdout
    assert "No such file or directory" in r.reason, r.reason


@needs_bwrap
def test_keys_in_the_environment_do_not_reach_the_code(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRLAB_LLM_API_KEY", "secret")
    monkeypatch.setenv("OPENAI_API_KEY", "secret")
    monkeypatch.setenv("GITHUB_TOKEN", "secret")
    code = """
        import os
        print(sorted(os.environ))
        print(os.environ["AIRLAB_LLM_API_KEY"])
    """
    for env in (None, dict(os.environ)):  # even a caller passing its whole environment
        r = run(code, tmp_path, env=env)
        assert not r.ok and "secret" not in r.stdout + r.stderr
        assert "KeyError: 'AIRLAB_LLM_API_KEY'" in r.reason, r.reason
        assert "AIRLAB_" not in r.stdout and "TOKEN" not in r.stdout


@needs_bwrap
def test_writing_outside_the_private_folder_fails(tmp_path: Path) -> None:
    import airlab

    src = Path(airlab.__file__).parent
    targets = [tmp_path / "escaped.txt", src / "escaped.py", Path(sys.prefix) / "escaped",
               Path("/usr/lib/escaped")]
    r = run(f"""
        import os
        errors = []
        for path in {[str(t) for t in targets]!r}:
            try:
                open(path, "w").write("x")
                print("WROTE", path)
            except OSError as e:
                errors.append(f"{{type(e).__name__}}: {{e.strerror}}")
        open("/tmp/private", "w").write("fine")  # a private tmpfs, gone afterwards
        raise SystemExit("; ".join(errors))
    """, tmp_path)
    assert "WROTE" not in r.stdout
    assert not any(t.exists() for t in targets)
    assert "Read-only file system" in r.reason or "No such file" in r.reason, r.reason


@needs_bwrap
def test_an_endless_loop_is_stopped_by_the_cpu_limit(tmp_path: Path) -> None:
    r = run("while True: pass", tmp_path, Limits(cpu_s=1, wall_s=30))
    assert r.killed_by == "cpu" and not r.ok
    assert "CPU time limit of 1 s" in r.reason


@needs_bwrap
def test_a_sleeping_loop_is_stopped_by_the_wall_clock(tmp_path: Path) -> None:
    r = run("import time\nwhile True: time.sleep(0.1)", tmp_path, Limits(wall_s=1.5))
    assert r.timed_out and r.killed_by == "timeout"
    assert "wall-clock limit of 1.5 s" in r.reason


@needs_bwrap
def test_a_fork_bomb_hits_the_process_limit(tmp_path: Path) -> None:
    r = run("""
        import os, time
        kids = 0
        try:
            while kids < 1000:
                if os.fork() == 0:
                    time.sleep(20)
                    os._exit(0)
                kids += 1
        except OSError:
            print("forked", kids)
            raise
    """, tmp_path, Limits(processes=16, wall_s=60))
    assert r.killed_by == "processes", r.reason
    assert "process limit of 16" in r.reason
    assert int(r.stdout.split()[-1]) < 16


@needs_bwrap
def test_a_memory_balloon_hits_the_address_space_limit(tmp_path: Path) -> None:
    r = run("""
        blocks = []
        while True:
            blocks.append(bytearray(64 * 2**20))
    """, tmp_path, Limits(address_space_mb=512, wall_s=60))
    assert r.killed_by == "memory", r.reason
    assert "address-space limit of 512 MB" in r.reason


@needs_bwrap
def test_no_binaries_are_reachable(tmp_path: Path) -> None:
    """os.system and subprocess find no shell and no system binaries: only this Python."""
    r = run("""
        import os, subprocess
        print("system", os.system("echo hi > /sandbox/shell.txt"))
        for argv in (["ls", "/"], ["/bin/sh", "-c", "true"], ["/usr/bin/curl", "x"]):
            try:
                subprocess.run(argv)
                print("RAN", argv)
            except FileNotFoundError as e:
                print("missing", argv[0])
        subprocess.run(["ls"])
    """, tmp_path)
    assert "RAN" not in r.stdout and "system 32512" in r.stdout  # 127 << 8: no /bin/sh
    assert r.stdout.count("missing") == 3
    assert "FileNotFoundError" in r.reason, r.reason


@needs_bwrap
def test_signalling_the_parent_cannot_reach_airlab(tmp_path: Path) -> None:
    me = os.getpid()
    r = run(f"""
        import os, signal
        for pid in ({me}, os.getppid(), -1):
            try:
                os.kill(pid, signal.SIGKILL)
                print(f"{{pid}}: sent", flush=True)
            except OSError as e:
                print(f"{{pid}}: {{type(e).__name__}}", flush=True)
        raise SystemExit("signals refused")
    """, tmp_path)
    # Still here: airlab's pid is not in the sandbox's pid namespace. The sandbox's own init
    # (its parent) belongs to root when airlab is root; otherwise killing it ends the sandbox.
    os.kill(me, 0)
    assert f"{me}: ProcessLookupError" in r.stdout, r.stdout
    assert not r.ok and r.reason


def test_without_isolation_generated_code_is_refused(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "_probe", lambda: (None, "bubblewrap (bwrap) is not installed"))
    with pytest.raises(AirlabError, match="--unsafe-no-sandbox") as e:
        run("print('hi')", tmp_path)
    assert "\n" not in str(e.value)
    r = run("print('hi')", tmp_path, allow_unsafe=True)  # the explicit flag: limits only
    assert r.ok and r.stdout.strip() == "hi", r.reason
