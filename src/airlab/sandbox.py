"""Run untrusted code (a generated technique) in a separate, locked-down process.

Layers of protection, each used where the host offers it (``protections()`` says which):

- **bubblewrap** (``bwrap``): new user, pid, network, ipc and uts namespaces (no network but a
  private loopback; the process cannot see or signal anything outside its pid namespace), a
  read-only view of only what Python needs (the system libraries, the Python installation and
  venv, the airlab source, and the ``read_only`` paths a run needs such as a dataset file), a
  private writable folder mounted at :data:`WORKDIR` (also the working directory and $HOME), a
  tmpfs /tmp, fresh /proc and /dev, a new session (no terminal injection) and
  ``--die-with-parent``. No shell or system binaries are mounted (/usr/bin is not there).
- **an unprivileged user**: when airlab runs as root the child drops to ``nobody`` before
  bubblewrap starts, so it cannot raise its own limits, and the process-count limit (counted
  per real uid; root is exempt from it) actually binds.
- **resource limits** (setrlimit, inherited by everything the child starts): address space,
  CPU seconds, processes, file size, no core dumps; a wall-clock timeout kills the whole
  process group (and with it the sandbox: its pid namespace dies with bubblewrap).
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


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed process tree."""

    address_space_mb: int = 4096
    cpu_s: int = 600
    processes: int = 64
    file_size_mb: int = 256
    wall_s: float = 900.0


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
    killed_by: str | None  # "timeout", "cpu", "memory", "file size", "processes", "signal N"
    reason: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


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


def _bwrap_argv(bwrap: str, workdir: Path, ro: Sequence[str], limits: Limits,
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
    # A private /tmp first: read-only paths under /tmp (a dataset, a test's file) go on top.
    cmd += ["--perms", "1777", "--tmpfs", "/tmp"]
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
    cmd += ["--bind", str(workdir), WORKDIR, "--chdir", WORKDIR,
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
    with tempfile.TemporaryDirectory(prefix="airlab-probe-") as tmp:
        user = _drop_user()
        if user is not None:
            os.chown(tmp, *user)
        try:
            r = _spawn(bwrap, [sys.executable, "-c", "pass"], Path(tmp), (), Limits(wall_s=60),
                       {"PATH": "/usr/bin:/bin"}, None)
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


def _spawn(bwrap: str | None, argv: Sequence[str], workdir: Path, read_only: Sequence[Path],
           limits: Limits, env: dict[str, str], stdin: str | None) -> SandboxResult:
    user = _drop_user()
    if bwrap is not None:
        binds = [src for src, _ in _system_binds()] + [str(p) for p in _python_roots()]
        binds += [str(Path(p).resolve()) for p in read_only]
        ro = sorted({b for b in binds if os.path.exists(b)})
        cmd = _bwrap_argv(bwrap, workdir, ro, limits, user, argv)
        cwd, pre_user = "/", None  # the stub inside drops the user, after bwrap's setup
    else:
        cmd, cwd, pre_user = list(argv), str(workdir), _unsafe_user(user)
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdin=subprocess.PIPE if stdin is not None else
        subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, close_fds=True,
        preexec_fn=functools.partial(_preexec, limits, pre_user, _prctl(), bwrap is None),
    )
    timed_out = False
    try:
        out, err = proc.communicate(stdin.encode() if stdin is not None else None,
                                    timeout=limits.wall_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        out, err = proc.communicate()
    stdout = out[-_MAX_OUTPUT:].decode("utf-8", "replace")
    stderr = err[-_MAX_OUTPUT:].decode("utf-8", "replace")
    rc = proc.returncode
    if bwrap is not None and 128 < rc < 128 + 65:
        rc = 128 - rc  # bubblewrap reports a child killed by signal N as exit code 128 + N
    killed_by, reason = _explain(rc, stderr, timed_out, limits)
    return SandboxResult(rc, stdout, stderr, timed_out, killed_by, reason)


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
    for needle, what in _STDERR_LIMITS:
        if needle in stderr:
            limit = {"memory": f"address-space limit of {limits.address_space_mb} MB",
                     "file size": f"file size limit of {limits.file_size_mb} MB",
                     "processes": f"process limit of {limits.processes}"}[what]
            return what, f"sandbox: {limit} reached: {last}"
    return None, f"exited with code {rc}: {last or 'no message'}"


def run_sandboxed(argv: Sequence[str], *, workdir: Path, read_only: Sequence[Path] = (),
                  limits: Limits = Limits(), env: Mapping[str, str] | None = None,
                  allow_unsafe: bool = False, stdin: str | None = None,
                  threads: int = 1) -> SandboxResult:
    """Run ``argv`` sandboxed; never raises for what the code does (that is the result).

    ``workdir`` is the private writable folder: the working directory of the child (use
    relative paths to reach files written there) and its $HOME; inside bubblewrap it is
    mounted at :data:`WORKDIR`. ``read_only`` paths are visible at their own paths.
    Raises AirlabError when no isolation is available and ``allow_unsafe`` is False.
    """
    bwrap, why = _probe()
    if bwrap is None and not allow_unsafe:
        raise AirlabError(f"refusing to run generated code without a sandbox: {why}",
                          "install bubblewrap (apt-get install bubblewrap), or pass "
                          f"{UNSAFE_FLAG} to run it anyway")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    user = _drop_user()
    if user is not None:  # the sandbox user must be able to write its own folder
        for root, dirs, files in os.walk(workdir):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, user[0], user[1])
    home = WORKDIR if bwrap is not None else str(workdir)
    child_env = clean_env(env, home=home, threads=threads)
    return _spawn(bwrap, argv, workdir, read_only, limits, child_env, stdin)


__all__ = ["UNSAFE_FLAG", "WORKDIR", "Limits", "Protections", "SandboxResult", "clean_env",
           "protections", "run_sandboxed", "why_unsandboxed"]
