"""A one-node Slurm on the loopback interface, for the tests of cluster execution.

:class:`LocalSlurm` installs Debian's ``slurm-wlm`` and ``munge`` when they are missing (as root),
writes a ``slurm.conf`` into a temporary folder and starts its own ``munged``, ``slurmctld`` and
``slurmd`` in the foreground, as children of this process: no systemd, no cgroups
(``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``), ``SelectType=select/cons_tres``,
free ports picked at start, a private munge socket and key. :meth:`LocalSlurm.stop` ends exactly the
daemons it started, by PID, and each daemon gets SIGTERM if the test process dies first (even by
SIGKILL). Clients (``sbatch``, ``squeue``, dask-jobqueue) find it through
``SLURM_CONF``, set by :meth:`LocalSlurm.env`.

Run by hand (``python tests/slurm_local.py``) it starts the cluster, runs one job and stops it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")


try:  # prctl(PR_SET_PDEATHSIG): loaded here, so that the forked child calls it without importing
    _LIBC = ctypes.CDLL(None, use_errno=True)
    _LIBC.prctl  # noqa: B018 - Linux only
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _LIBC = None


def die_with_parent() -> None:
    """``preexec_fn`` for daemons started by tests: SIGTERM them when the test process dies, even by
    SIGKILL (Linux ``PR_SET_PDEATHSIG``), so a killed test session leaves no daemon behind."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed or started here (the message says why)."""


def _which_all() -> bool:
    return all(shutil.which(d) or Path("/usr/sbin", d).exists() for d in (*DAEMONS, "mungekey", "sbatch", "squeue"))


def ensure_installed(timeout: float = 600) -> None:
    """Install ``slurm-wlm`` and ``munge`` with apt when missing (needs root); SlurmUnavailable otherwise."""
    if _which_all():
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"Slurm is not installed and installing {' '.join(PACKAGES)} needs root")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable("Slurm is not installed and there is no apt-get to install it with")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:  # stale package lists: update once and retry
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, timeout=timeout)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0 or not _which_all():
        raise SlurmUnavailable(f"apt-get install {' '.join(PACKAGES)} failed: {out.stderr.strip()[-500:]}")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _daemon(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class LocalSlurm:
    """A single-node Slurm cluster in ``folder`` (a new temporary folder by default).

    Parameters
    ----------
    cpus : int
        CPUs of the node (default: the usable cores of this machine).
    memory_mb : int
        Memory of the node in MB (jobs may ask for at most this much).
    """

    NODE = "fwnode"
    PARTITION = "debug"

    def __init__(self, folder: str | Path | None = None, *, cpus: int | None = None, memory_mb: int = 4000):
        self.folder = Path(folder or tempfile.mkdtemp(prefix="finwidth-slurm-"))
        self.cpus = cpus or len(os.sched_getaffinity(0))
        self.memory_mb = memory_mb
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = self.folder / "slurm.conf"

    def env(self) -> dict[str, str]:
        """Environment variables that point Slurm's clients at this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def write_conf(self) -> str:
        ctld_port, slurmd_port = _free_ports(2)
        munge = self.folder / "munge"
        text = "\n".join([
            "ClusterName=finwidthtest",
            f"SlurmctldHost={socket.gethostname()}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge / 'munge.socket'}",
            f"StateSaveLocation={self.folder / 'state'}",
            f"SlurmdSpoolDir={self.folder / 'spool'}",
            f"SlurmctldPidFile={self.folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.folder / 'slurmctld.log'}",
            f"SlurmdLogFile={self.folder / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "MpiDefault=none",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",
            "SchedulerParameters=sched_interval=1",  # start queued jobs within a second, not a minute
            f"NodeName={self.NODE} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 "
            f"CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN",
            f"PartitionName={self.PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ])
        self.conf.write_text(text)
        return text

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.folder / f"{name}.out", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen([_daemon(name), *args], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=dict(os.environ, **self.env()),
                                            preexec_fn=die_with_parent)  # noqa: PLW1509 - async-signal-safe call only
        log.close()

    def start(self, timeout: float = 60) -> LocalSlurm:
        """Start munged, slurmctld and slurmd; return when the node accepts jobs (SlurmUnavailable if not)."""
        ensure_installed()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)  # munged wants its socket's folders searchable by everyone
        munge = self.folder / "munge"
        for sub in (munge, self.folder / "state", self.folder / "spool"):
            sub.mkdir(exist_ok=True)
        munge.chmod(0o755)
        key = munge / "munge.key"
        subprocess.run([_daemon("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        key.chmod(0o600)
        self.write_conf()
        try:
            self._spawn("munged", ["--foreground", "--force", f"--socket={munge / 'munge.socket'}", f"--key-file={key}",
                                   f"--log-file={munge / 'munged.log'}", f"--pid-file={munge / 'munged.pid'}",
                                   f"--seed-file={munge / 'munged.seed'}"])
            self._wait(lambda: (munge / "munge.socket").exists(), timeout, "munged to create its socket")
            self._spawn("slurmctld", ["-D", "-f", str(self.conf)])
            self._spawn("slurmd", ["-D", "-N", self.NODE, "-f", str(self.conf)])
            self._wait(self._node_idle, timeout, "the Slurm node to become idle")
        except BaseException:
            self.stop()
            raise
        return self

    def _node_idle(self) -> bool:
        out = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False)
        return out.returncode == 0 and out.stdout.strip() in {"idle", "mixed", "allocated"}

    def _wait(self, ok, timeout: float, what: str) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
            if ok():
                return
            time.sleep(0.1)
        raise SlurmUnavailable(f"timed out after {timeout:.0f} s waiting for {what}: {self.log_tail('slurmctld')}")

    def log_tail(self, name: str, n: int = 800) -> str:
        parts = []
        for path in (self.folder / f"{name}.out", self.folder / f"{name}.log"):
            if path.exists():
                parts.append(path.read_text(errors="replace")[-n:])
        return "\n".join(parts)

    def run(self, args: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster."""
        return subprocess.run(args, env=dict(os.environ, **self.env()), capture_output=True, text=True,
                              check=check, timeout=timeout)

    def jobs(self) -> list[str]:
        """IDs of the jobs that are pending or running."""
        out = self.run(["squeue", "-h", "-o", "%i"], check=False)
        return out.stdout.split()

    def stop(self, timeout: float = 20) -> None:
        """Cancel the remaining jobs and end the daemons this object started (by PID), slurmd first."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run(["scancel", "--full", "-p", self.PARTITION], check=False)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
        self.procs.clear()

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # pragma: no cover - a manual check
    with LocalSlurm() as slurm:
        print(slurm.conf.read_text())
        out = slurm.run(["sbatch", "--wait", "--mem=100M", "-o", str(slurm.folder / "job.out"), "--wrap", "hostname"])
        print(out.stdout, (slurm.folder / "job.out").read_text())
    sys.exit(0)
