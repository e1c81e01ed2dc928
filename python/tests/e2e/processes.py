"""The processes the suite starts: bounded waits, free loopback ports, the user PostgreSQL runs
as, and stopping, killing and reaping what a run started."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, TypeVar

HOST = "127.0.0.1"

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], Optional[T]], timeout: float,
             interval: float = 0.2) -> T:
    """Polls `probe` until it returns something other than None (or False), at most `timeout`
    seconds; a probe that raises counts as not yet. Fails naming `what` and the last answer."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value is not None and value is not False:
                return value
            last = value
        except Exception as e:  # a probe of a cluster in motion may fail
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; "
                                 f"last answer: {last!r}")
        time.sleep(interval)


def scratch_dir() -> Optional[str]:
    """Where the cluster's files go: CITUS_HA_E2E_TMP, else /dev/shm when it is a large
    tmpfs (initdb, base backups and removing five data directories are several times faster
    there than on a disk with online discard), else the system's temporary directory."""
    chosen = os.environ.get("CITUS_HA_E2E_TMP")
    if chosen:
        return chosen
    with contextlib.suppress(OSError):
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize >= 2 << 30:
            return "/dev/shm"
    return None


def orphan_guard() -> List[str]:
    """A prefix for the commands of long-lived processes: they get SIGTERM when the test
    process dies, however it dies (a finalizer does not run on SIGTERM or SIGKILL), so no
    Patroni or etcd outlives a killed run. Must be used from the thread that stays (the
    signal fires when the forking thread exits)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


OWNER_FILE = "owner.pid"
RUN_PREFIX = "citus-ha-e2e-"


def new_run_dir() -> Path:
    """A fresh directory for one run's files, naming the test process that owns it; what
    killed runs left behind is reaped first."""
    scratch = scratch_dir()
    reap_stale_runs(Path(scratch or tempfile.gettempdir()))
    base = Path(tempfile.mkdtemp(prefix=RUN_PREFIX, dir=scratch))
    os.chmod(base, 0o755)
    (base / OWNER_FILE).write_text(str(os.getpid()))
    return base


def reap_stale_runs(scratch: Path) -> None:
    """Kills what a killed run left behind: a Patroni that was mid-switchover when its etcd
    went away does not exit on SIGTERM, so `orphan_guard` is not always enough. A run's
    directory names the test process that owns it; when that process is gone, every process
    whose command line names the directory is SIGKILLed and its data directories removed
    (the logs stay)."""
    for base in scratch.glob(RUN_PREFIX + "*"):
        try:
            owner = int((base / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{owner}").exists():
            continue
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(base).encode() in cmdline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(proc.name), signal.SIGKILL)
        for data in [base / "etcd", *base.glob("*/data")]:
            shutil.rmtree(data, ignore_errors=True)
        (base / OWNER_FILE).unlink()


def free_ports(n: int) -> List[int]:
    """`n` distinct loopback ports that were free a moment ago (all held open while picking)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]


class RunAs:
    """Who runs Patroni and PostgreSQL: `postgres` when the tests run as root, else the caller."""

    def __init__(self) -> None:
        self.user: Optional[str] = None
        self.uid, self.gid = os.getuid(), os.getgid()
        if os.getuid() == 0:
            pw = pwd.getpwnam("postgres")
            self.user, self.uid, self.gid = "postgres", pw.pw_uid, pw.pw_gid

    def popen_kwargs(self) -> Dict[str, object]:
        if self.user is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def own(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.uid, self.gid)


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL of the whole process group after `timeout` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def kill_postmaster(data_dir: Path) -> None:
    """SIGKILLs a postmaster still running in `data_dir` (its children exit with it)."""
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
