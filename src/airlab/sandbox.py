"""Run untrusted code (a generated technique) in a separate, locked-down process.

Layers of protection, each used where the host offers it (``protections()`` says which):

- **bubblewrap** (``bwrap``): new user, pid, network, ipc and uts namespaces (no network but a
  private loopback; the process cannot see or signal anything outside its pid namespace), a
  read-only view of only what Python needs (the system libraries, the Python installation and
  venv, the airlab source, and the ``read_only`` paths a run needs such as a technique file),
  a private writable folder at :data:`WORKDIR` (also the working directory and $HOME) and a
  private /tmp, each a tmpfs of at most ``Limits.disk_mb`` (a disk quota), fresh /proc and
  /dev, a new session (no terminal injection) and ``--die-with-parent``. No shell or system
  binaries are mounted (/usr/bin is not there). What the child hands back travels through a
  pipe (:data:`RESULT_FD_ENV` names its descriptor), never through a file the parent reads.
- **an unprivileged user**: when airlab runs as root the child drops to ``nobody`` before
  bubblewrap starts, so it cannot raise its own limits, and the process-count limit (counted
  per real uid; root is exempt from it) actually binds.
- **resource limits** (setrlimit, inherited by everything the child starts): address space,
  CPU seconds, processes, file size, no core dumps. Limits of the whole process tree are
  watched by the parent (:class:`SandboxProcess`, from /proc): resident memory, CPU seconds and
  the wall clock; past one, the tree is killed (its pid namespace dies with bubblewrap). The
  parent can also freeze the tree (SIGSTOP to every process in it) while it measures.
- **a scrubbed environment**, built from scratch: no AIRLAB_* setting and nothing that looks
  like a key, token, secret or password.

Where neither network nor filesystem isolation is available, :func:`run_sandboxed` refuses
unless the caller passes ``allow_unsafe=True`` (the ``--unsafe-no-sandbox`` flag).
Standard library only (layer 0): no torch, no airlab module but the errors.
"""

from __future__ import annotations

import functools
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airlab.errors import AirlabError

WORKDIR = "/sandbox"  # where the private writable folder is mounted inside bubblewrap
UNSAFE_FLAG = "--unsafe-no-sandbox"
SANDBOX_USER = "nobody"
# Environment keys never passed in, whatever the caller gives: settings and anything secret.
_SECRET = re.compile(r"^AIRLAB_|API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|_KEY$", re.I)
_MAX_OUTPUT = 1 << 20  # bytes of stdout/stderr kept (a child printing forever is cut)
# The child's end of the result pipe (what it hands back) and of the reply pipe (what the
# parent answers, for a conversation such as a training run's): descriptor numbers in these
# variables of its environment.
RESULT_FD_ENV = "SANDBOX_RESULT_FD"
REPLY_FD_ENV = "SANDBOX_REPLY_FD"
MAX_RESULT_BYTES = 64 << 20  # run_sandboxed keeps at most this much of the result pipe
WATCH_S = 0.5  # how often the parent samples the process tree against its limits


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed process tree."""

    address_space_mb: int = 4096  # per process (RLIMIT_AS)
    cpu_s: int = 600  # per process (RLIMIT_CPU) and for the whole tree together (watched)
    processes: int = 64
    file_size_mb: int = 256
    wall_s: float = 900.0
    disk_mb: int = 256  # each writable folder (the private folder, /tmp): a tmpfs this size
    memory_mb: int = 8192  # resident memory of the whole process tree together (watched)


@dataclass(frozen=True)
class Protections:
    """What this host lets the sandbox enforce."""

    bubblewrap: bool
    network_isolated: bool
    filesystem_isolated: bool
    unprivileged_user: str | None  # the user the code runs as, when not root
    rlimits: bool
    env_scrubbed: bool
    dies_with_parent: bool

    @property
    def isolated(self) -> bool:
        """Whether at least network or filesystem isolation is in force."""
        return self.network_isolated or self.filesystem_isolated

    def lines(self) -> list[str]:
        """One line per protection, in force or not (for `airlab techniques check`)."""

        def mark(ok: bool) -> str:
            return "yes" if ok else "NO "

        return [
            f"{mark(self.bubblewrap)} bubblewrap namespaces (pid, ipc, uts, user)",
            f"{mark(self.network_isolated)} network isolated (private loopback only)",
            f"{mark(self.filesystem_isolated)} filesystem isolated (read-only system, private "
            "writable folder, no lab database, no $HOME, no shell binaries)",
            f"{mark(self.unprivileged_user is not None)} unprivileged user"
            + (f" ({self.unprivileged_user})" if self.unprivileged_user else ""),
            f"{mark(self.rlimits)} resource limits (address space, CPU time, processes, "
            "file size, wall clock)",
            f"{mark(self.env_scrubbed)} environment without keys or AIRLAB_* settings",
            f"{mark(self.dies_with_parent)} dies with its parent",
        ]


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed process did. ``reason`` is one line for a stored failure."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    # "timeout", "cpu", "memory", "disk", "file size", "processes", "signal N", or None
    killed_by: str | None
    reason: str
    output: bytes = b""  # what the child wrote to its result pipe (run_sandboxed)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.killed_by is None


def _drop_user() -> tuple[int, int] | None:
    """(uid, gid) to run as when we are root, else None (we are unprivileged already)."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    import pwd

    try:
        pw = pwd.getpwnam(SANDBOX_USER)
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def _python_roots() -> list[Path]:
    """Folders the sandboxed Python needs: installation, venv and the airlab source."""
    import airlab

    roots = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(),
             Path(sys.prefix), Path(airlab.__file__).resolve().parent.parent}
    exe = Path(sys.executable)
    roots.add(exe.resolve().parent.parent)
    return sorted(roots)


def _system_binds() -> list[tuple[str, str]]:
    """(source, destination) read-only binds of the system libraries (not /usr/bin)."""
    out = []
    for d in ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/local/lib", "/etc/ld.so.cache",
              "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/usr/share/zoneinfo"):
        if os.path.exists(d):
            out.append((d, d))
    return out


# Runs first inside the sandbox (our code, not the generated one): sets the process limit,
# which counts per real uid in the sandbox's own user namespace, and, when airlab is root,
# drops to the sandbox user, so the real uid outside is unprivileged and cannot undo limits.
_STUB = ("import os,sys,resource\n"
         "n=int(sys.argv[1]);resource.setrlimit(resource.RLIMIT_NPROC,(n,n))\n"
         "if sys.argv[2]!='-':\n"
         " os.setgroups([]);os.setgid(int(sys.argv[3]));os.setuid(int(sys.argv[2]))\n"
         "os.execv(sys.argv[4],sys.argv[4:])")


def _bwrap_argv(bwrap: str, ro: Sequence[str], limits: Limits,
                user: tuple[int, int] | None, argv: Sequence[str]) -> list[str]:
    """The bubblewrap command line around ``argv``."""
    cmd = [bwrap, "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid",
           "--unshare-net", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
    if user is not None:
        # bwrap as root sets the sandbox up (it can reach a Python under a private /root);
        # the stub then drops to the sandbox user with these two capabilities and loses them.
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        cmd += ["--unshare-user", "--disable-userns"]
    # The writable places are tmpfs mounts of a fixed size: a disk quota that holds however
    # many files the code writes. /tmp first: read-only paths under /tmp go on top of it.
    size = str(int(limits.disk_mb) << 20)
    cmd += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp"]
    # Every folder above a mount point is made world-readable: bwrap copies a private mode
    # (e.g. /root 0700) that the dropped user could not traverse.
    parents: set[str] = set()
    for dest in [*ro, WORKDIR]:
        for parent in reversed(Path(dest).parents):
            if str(parent) != "/" and str(parent) not in parents:
                parents.add(str(parent))
    for d in sorted(parents, key=lambda x: x.count("/")):
        if d not in ro:
            cmd += ["--perms", "0755", "--dir", d]
    # Merged /usr: /lib and /lib64 are links into /usr on every current distribution.
    for link in ("lib", "lib64", "lib32"):  # (not bin: no binaries in the sandbox)
        target = Path("/") / link
        if target.is_symlink():
            cmd += ["--symlink", os.readlink(target), f"/{link}"]
    for path in sorted(ro, key=lambda x: x.count("/")):
        cmd += ["--ro-bind", path, path]
    cmd += ["--perms", "1777", "--size", size, "--tmpfs", WORKDIR, "--chdir", WORKDIR,
            "--proc", "/proc", "--dev", "/dev"]
    uid, gid = (str(user[0]), str(user[1])) if user is not None else ("-", "-")
    return cmd + ["--", sys.executable, "-I", "-S", "-c", _STUB, str(int(limits.processes)),
                  uid, gid, *argv]


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[str | None, str]:
    """(bwrap path or None, why not usable): bubblewrap runs a trivial sandbox here?"""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, "bubblewrap (bwrap) is not installed"
    try:
        r = _run(start_sandboxed([sys.executable, "-c", "pass"], limits=Limits(wall_s=60),
                                 _bwrap=bwrap), b"")
    except OSError as e:
        return None, f"bubblewrap failed to start: {e}"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no message"])[-1]
        return None, f"bubblewrap is installed but cannot create a sandbox here: {last[:200]}"
    return bwrap, ""


def protections() -> Protections:
    """What this host offers (probed once per process)."""
    bwrap, _ = _probe()
    user = _drop_user()
    if user is not None:
        name: str | None = SANDBOX_USER
    elif os.name == "posix" and os.geteuid() != 0:
        import pwd

        try:
            name = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            name = str(os.geteuid())
    else:
        name = None
    posix = os.name == "posix"
    return Protections(bubblewrap=bwrap is not None, network_isolated=bwrap is not None,
                       filesystem_isolated=bwrap is not None, unprivileged_user=name,
                       rlimits=posix, env_scrubbed=True,
                       dies_with_parent=sys.platform.startswith("linux"))


def why_unsandboxed() -> str:
    """Why bubblewrap is not in force here ('' when it is)."""
    return _probe()[1]


def clean_env(env: Mapping[str, str] | None = None, *, home: str, threads: int = 1
              ) -> dict[str, str]:
    """The child's environment built from scratch: only what Python and torch need, plus the
    caller's ``env`` minus anything secret (AIRLAB_*, *KEY*, *TOKEN*, *SECRET*, *PASSWORD*);
    the caller's values never replace ours (HOME stays the private folder)."""
    import airlab

    src = str(Path(airlab.__file__).resolve().parent.parent)
    out = {"PATH": str(Path(sys.executable).parent), "HOME": home, "USER": SANDBOX_USER,
           "LOGNAME": SANDBOX_USER, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "PYTHONPATH": src, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
           "TMPDIR": "/tmp", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TORCHINDUCTOR_CACHE_DIR": f"{home}/.inductor", "MPLCONFIGDIR": f"{home}/.mpl"}
    extra = {k: v for k, v in (env or {}).items() if not _SECRET.search(k)}
    return {**extra, **out}  # the caller may add variables, never move HOME, PATH or PYTHONPATH


def _prctl() -> Any:
    """libc's prctl, looked up in the parent: after dropping to `nobody` the child may not be
    able to import anything (the Python installation can live under a private /root)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None


def _preexec(limits: Limits, user: tuple[int, int] | None, prctl: Any, nproc: bool) -> None:
    """In the child before exec: limits first (as root we may still set them), then the user.
    Imports nothing: everything it uses was imported by the parent."""

    def cap(what: int, value: int) -> None:
        resource.setrlimit(what, (value, value))

    mb = 1 << 20
    cap(resource.RLIMIT_AS, int(limits.address_space_mb) * mb)
    resource.setrlimit(resource.RLIMIT_CPU, (int(limits.cpu_s), int(limits.cpu_s) + 1))
    cap(resource.RLIMIT_FSIZE, int(limits.file_size_mb) * mb)
    cap(resource.RLIMIT_CORE, 0)
    if user is not None:
        os.setgroups([])
        os.setgid(user[1])
        os.setuid(user[0])
    if nproc:  # without bubblewrap; inside it, the stub sets it in the sandbox's namespace
        cap(resource.RLIMIT_NPROC, int(limits.processes))
    if prctl is not None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with airlab, even on SIGKILL


# ------------------------------------------------------------------ the process tree, from /proc

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, CPU ticks of it and its waited-for children, resident pages)."""
    out: dict[int, tuple[int, int, int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses; fields follow the
        # last ')'. utime, stime, cutime, cstime are fields 14-17 and rss field 24 (1-based).
        rest = raw[raw.rfind(b")") + 2:].split()
        try:
            ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
            out[int(name)] = (int(rest[1]), ticks, int(rest[21]))
        except (IndexError, ValueError):
            continue
    return out


def _tree(root: int, table: dict[int, tuple[int, int, int]]) -> list[int]:
    """``root`` and every process below it. Inside bubblewrap's pid namespace an orphan is
    adopted by the sandbox's own init, which is below ``root``: nothing escapes the tree."""
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root] if root in table else []
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


class SandboxProcess:
    """A started sandboxed process tree: its pipes, and the parent's watch over it.

    ``results`` is the parent's end of the child's result pipe (read it), ``replies`` the end
    of the reply pipe (write to it; None unless asked for). :meth:`check` samples the whole
    tree against the limits and kills it past one; :meth:`freeze` stops every process in it
    (SIGSTOP, which cannot be caught), :meth:`thaw` lets it go on; :meth:`cpu_seconds` is the
    tree's CPU time. :meth:`finish` waits for the end and explains it.
    """

    def __init__(self, proc: subprocess.Popen[bytes], limits: Limits, results: int,
                 replies: int | None, workdir: Path | None) -> None:
        self.proc, self.limits = proc, limits
        self.results, self.replies = results, replies
        self.workdir = workdir  # the private folder on the host (no bubblewrap), else None
        self.started = time.monotonic()
        self.killed_by: str | None = None
        self.kill_reason = ""
        self.peak_rss_mb = 0.0
        self._frozen: list[int] = []
        self._tails: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._readers = [threading.Thread(target=self._drain, args=(s, k), daemon=True)
                         for s, k in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
        for t in self._readers:
            t.start()

    def _drain(self, stream: Any, key: str) -> None:
        """Keep the last _MAX_OUTPUT bytes of a stream: a child printing forever never blocks."""
        buf = self._tails[key]
        while chunk := stream.read1(65536) if stream is not None else b"":
            buf += chunk
            if len(buf) > 2 * _MAX_OUTPUT:
                del buf[:-_MAX_OUTPUT]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        return _tree(self.proc.pid, _proc_table())

    def usage(self) -> tuple[float, float]:
        """(CPU seconds, resident MB) of the whole tree now."""
        table = _proc_table()
        tree = _tree(self.proc.pid, table)
        cpu = sum(table[p][1] for p in tree) / _TICK
        rss = sum(table[p][2] for p in tree) * _PAGE / 2**20
        return cpu, rss

    def cpu_seconds(self) -> float:
        return self.usage()[0]

    def check(self) -> str | None:
        """Sample the tree against its limits; past one, kill it and return the reason."""
        if self.killed_by is not None:
            return self.kill_reason
        cpu, rss = self.usage()
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        lim = self.limits
        if time.monotonic() - self.started > lim.wall_s:
            return self.kill("timeout", f"sandbox: wall-clock limit of {lim.wall_s:g} s reached; "
                                        "killed")
        if rss > lim.memory_mb:
            return self.kill("memory", f"sandbox: memory limit of {lim.memory_mb} MB for the "
                                       f"sandbox's processes reached ({rss:,.0f} MB); killed")
        if cpu > lim.cpu_s:
            return self.kill("cpu", f"sandbox: CPU time limit of {lim.cpu_s} s reached; killed")
        if self.workdir is not None:  # no tmpfs without bubblewrap: measure the folder
            used = _folder_mb(self.workdir)
            if used > lim.disk_mb:
                return self.kill("disk", f"sandbox: disk quota of {lim.disk_mb} MB reached "
                                         f"({used:,.0f} MB written); killed")
        return None

    def kill(self, why: str, reason: str) -> str:
        if self.killed_by is None:
            self.killed_by, self.kill_reason = why, reason
        _kill_group(self.proc.pid)
        for p in self.pids():  # a process that left the group (setsid) is still in the tree
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        return self.kill_reason

    def freeze(self) -> None:
        """Stop every process of the tree. A process forked between two scans is caught by the
        next one (its stopped parent can fork no more), so a few rounds settle it."""
        done: set[int] = set()
        for _ in range(20):
            new = [p for p in self.pids() if p not in done]
            if not new:
                break
            for p in new:
                try:
                    os.kill(p, signal.SIGSTOP)
                except OSError:
                    pass
            done.update(new)
        self._frozen = sorted(done)

    def thaw(self) -> None:
        for p in set(self._frozen) | set(self.pids()):
            try:
                os.kill(p, signal.SIGCONT)
            except OSError:
                pass
        self._frozen = []

    def finish(self, timeout: float | None = None) -> SandboxResult:
        """Wait for the end (killing the tree after ``timeout`` s) and explain it."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill("timeout", f"sandbox: wall-clock limit of {self.limits.wall_s:g} s "
                                 "reached; killed")
            self.proc.wait()
        for t in self._readers:
            t.join(timeout=5)
        for fd in (self.results, self.replies):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        stdout = bytes(self._tails["stdout"][-_MAX_OUTPUT:]).decode("utf-8", "replace")
        stderr = bytes(self._tails["stderr"][-_MAX_OUTPUT:]).decode("utf-8", "replace")
        rc = self.proc.returncode
        if 128 < rc < 128 + 65:
            rc = 128 - rc  # bubblewrap reports a child killed by signal N as exit code 128 + N
        if self.killed_by is not None:
            return SandboxResult(rc, stdout, stderr, self.killed_by == "timeout",
                                 self.killed_by, self.kill_reason)
        killed_by, reason = _explain(rc, stderr, False, self.limits)
        return SandboxResult(rc, stdout, stderr, False, killed_by, reason)


def _folder_mb(folder: Path) -> float:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total / 2**20


def start_sandboxed(argv: Sequence[str], *, read_only: Sequence[Path] = (),
                    limits: Limits = Limits(), env: Mapping[str, str] | None = None,
                    allow_unsafe: bool = False, threads: int = 1, replies: bool = False,
                    _bwrap: str | None = None) -> SandboxProcess:
    """Start ``argv`` sandboxed and return at once (see :class:`SandboxProcess`).

    The child's working directory and $HOME is its private folder (:data:`WORKDIR` inside
    bubblewrap, a tmpfs of ``limits.disk_mb``); ``read_only`` paths are visible at their own
    paths. It writes what it hands back to the descriptor in ``$SANDBOX_RESULT_FD`` and, with
    ``replies``, reads the parent's answers from ``$SANDBOX_REPLY_FD``. Its stdin is a pipe the
    caller may write to (``proc.stdin``). Raises AirlabError when no isolation is available
    and ``allow_unsafe`` is False, OSError when the process cannot start.
    """
    bwrap = _bwrap
    if bwrap is None:
        bwrap, why = _probe()
        if bwrap is None and not allow_unsafe:
            raise AirlabError(f"refusing to run generated code without a sandbox: {why}",
                              "install bubblewrap (apt-get install bubblewrap), or pass "
                              f"{UNSAFE_FLAG} to run it anyway")
    user = _drop_user()
    workdir: Path | None = None
    if bwrap is not None:
        binds = [src for src, _ in _system_binds()] + [str(p) for p in _python_roots()]
        binds += [str(Path(p).resolve()) for p in read_only]
        ro = sorted({b for b in binds if os.path.exists(b)})
        cmd = _bwrap_argv(bwrap, ro, limits, user, argv)
        cwd, pre_user, home = "/", None, WORKDIR  # the stub inside drops the user
    else:
        workdir = Path(tempfile.mkdtemp(prefix="airlab-unsafe-"))
        (workdir / "tmp").mkdir()
        pre_user = _unsafe_user(user)
        if pre_user is not None:
            for d in (workdir, workdir / "tmp"):
                os.chown(d, *pre_user)
        cmd, cwd, home = list(argv), str(workdir), str(workdir)
    out_r, out_w = os.pipe()
    in_r, in_w = os.pipe() if replies else (None, None)
    child_env = clean_env(env, home=home, threads=threads)
    child_env[RESULT_FD_ENV] = str(out_w)
    if in_r is not None:
        child_env[REPLY_FD_ENV] = str(in_r)
    if workdir is not None:
        child_env["TMPDIR"] = str(workdir / "tmp")
    keep = tuple(fd for fd in (out_w, in_r) if fd is not None)
    try:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=child_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, close_fds=True, pass_fds=keep,
            preexec_fn=functools.partial(_preexec, limits, pre_user, _prctl(), bwrap is None))
    except BaseException:
        for fd in (out_r, out_w, in_r, in_w):
            if fd is not None:
                os.close(fd)
        raise
    for fd in keep:  # the child's ends: ours closed, so EOF means the child is gone
        os.close(fd)
    return SandboxProcess(proc, limits, out_r, in_w, workdir)


def _run(sp: SandboxProcess, stdin: bytes) -> SandboxResult:
    """Feed ``stdin``, read the result pipe to its end while watching the limits, finish."""
    import select

    try:
        assert sp.proc.stdin is not None
        sp.proc.stdin.write(stdin)
        sp.proc.stdin.close()
    except OSError:  # the child exited before reading: its exit explains it
        pass
    out = bytearray()
    try:
        while True:
            ready, _, _ = select.select([sp.results], [], [], WATCH_S)
            if ready:
                chunk = os.read(sp.results, 1 << 20)
                if not chunk:
                    break
                if len(out) < MAX_RESULT_BYTES:
                    out += chunk
            elif sp.check() is not None:
                break
    finally:
        result = sp.finish(timeout=5 if sp.killed_by is None else None)
        if sp.workdir is not None:
            shutil.rmtree(sp.workdir, ignore_errors=True)
    return SandboxResult(result.returncode, result.stdout, result.stderr, result.timed_out,
                         result.killed_by, result.reason, bytes(out[:MAX_RESULT_BYTES]))


def _unsafe_user(user: tuple[int, int] | None) -> tuple[int, int] | None:
    """Without bubblewrap, drop to the sandbox user only if it can reach the Python we run."""
    if user is None:
        return None
    for parent in Path(sys.executable).resolve().parents:
        if not os.stat(parent).st_mode & 0o001:
            return None
    return user


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# Messages a limit leaves on stderr when Python turns it into an exception rather than a signal.
_STDERR_LIMITS = (
    ("MemoryError", "memory"),
    ("Cannot allocate memory", "memory"),
    ("can't allocate memory", "memory"),
    ("File too large", "file size"),
    ("No space left on device", "disk"),
    ("Resource temporarily unavailable", "processes"),
)


def _explain(rc: int, stderr: str, timed_out: bool, limits: Limits) -> tuple[str | None, str]:
    """(killed_by, one-line reason) for a finished sandboxed process."""
    last = next((ln.strip() for ln in reversed(stderr.splitlines()) if ln.strip()), "")
    last = last[:300]
    if timed_out:
        return "timeout", f"sandbox: wall-clock limit of {limits.wall_s:g} s reached; killed"
    if rc < 0:
        sig = -rc
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and "cpu" in last.lower()):
            return "cpu", f"sandbox: CPU time limit of {limits.cpu_s} s reached; killed"
        if sig == signal.SIGXFSZ:
            return "file size", f"sandbox: file size limit of {limits.file_size_mb} MB reached"
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else "?"
        return f"signal {sig}", f"sandbox: killed by signal {sig} ({name})" + (
            f"; last message: {last}" if last else "")
    if rc == 0:
        return None, ""
    return limit_reason(stderr, limits) or (None, f"exited with code {rc}: {last or 'no message'}")


def limit_reason(text: str, limits: Limits) -> tuple[str, str] | None:
    """(what, one-line reason) when ``text`` (a child's message) shows it hit a limit."""
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")[:300]
    for needle, what in _STDERR_LIMITS:
        if needle in text:
            limit = {"memory": f"address-space limit of {limits.address_space_mb} MB",
                     "file size": f"file size limit of {limits.file_size_mb} MB",
                     "disk": f"disk quota of {limits.disk_mb} MB",
                     "processes": f"process limit of {limits.processes}"}[what]
            return what, f"sandbox: {limit} reached: {last}"
    return None


def run_sandboxed(argv: Sequence[str], *, limits: Limits = Limits(),
                  read_only: Sequence[Path] = (), env: Mapping[str, str] | None = None,
                  allow_unsafe: bool = False, stdin: str | bytes | None = None,
                  threads: int = 1) -> SandboxResult:
    """Run ``argv`` sandboxed to its end; never raises for what the code does (that is the
    result). ``stdin`` is fed to the child; what it writes to ``$SANDBOX_RESULT_FD`` comes back
    as ``SandboxResult.output``. Raises AirlabError when no isolation is available and
    ``allow_unsafe`` is False.
    """
    sp = start_sandboxed(argv, read_only=read_only, limits=limits, env=env,
                         allow_unsafe=allow_unsafe, threads=threads)
    data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
    return _run(sp, data)


def write_result(data: bytes) -> None:
    """Child side: hand ``data`` back through the result pipe (once, then close it)."""
    fd = int(os.environ[RESULT_FD_ENV])
    with os.fdopen(fd, "wb", closefd=True) as f:
        f.write(data)


__all__ = ["MAX_RESULT_BYTES", "REPLY_FD_ENV", "RESULT_FD_ENV", "UNSAFE_FLAG", "WORKDIR",
           "Limits", "Protections", "SandboxProcess", "SandboxResult", "clean_env",
           "limit_reason", "protections", "run_sandboxed", "start_sandboxed",
           "why_unsandboxed", "write_result"]
