"""A throw-away single-node SLURM cluster on this machine, for tests (munged + slurmctld + slurmd).

Everything lives in one temporary directory: a munge key and socket, ``slurm.conf``, state, spool, logs
and pid files; the daemons listen on free ports, so the cluster neither touches nor collides with a
system SLURM or another test session's cluster. The daemons run in the foreground (``-F``/``-D``) as
children of the test process and are stopped by PID, never by name. Client commands (sbatch, sinfo,
scontrol, and submitit through them) find the cluster through ``SLURM_CONF`` in :attr:`LocalSlurm.env`.

Hand-written because no library starts a real slurmctld/slurmd pair for tests (pyslurm and friends talk
to an existing cluster).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scontrol", "scancel", "srun")
PARTITION = "debug"
# Job credential lifetime. SLURM holds a requeued job for cred_expire + 1 s before it may start again, so
# that its new credential is not created in the same second as the revocation of the old one (slurmd
# kills such a launch: "Job credential revoked"). The default, 120 s, would make the preemption test
# wait two minutes; 10 s keeps the same guarantee and still covers a slow step launch on a busy machine.
# A job whose begin time has passed only starts at the next pass of the main scheduling loop, every
# sched_interval seconds (default 60; 2 in this cluster's slurm.conf).
CRED_EXPIRE_S = 10


class ClusterError(RuntimeError):
    """The local cluster did not come up (the message carries the daemon logs)."""


def missing_binaries() -> list[str]:
    """Names of the SLURM/munge executables not on PATH (sbin included)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    return [b for b in BINARIES if shutil.which(b, path=path) is None]


def _which(name: str) -> str:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        raise ClusterError(f"{name} not found on PATH")
    return found


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def node_hardware() -> dict[str, str]:
    """``slurmd -C``'s view of this machine (CPUs, Boards, SocketsPerBoard, CoresPerSocket, ...)."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
    first = out.splitlines()[0] if out else ""
    return dict(kv.split("=", 1) for kv in first.split() if "=" in kv)


@dataclass
class LocalSlurm:
    """A running cluster. ``env`` is the environment for client commands (``SLURM_CONF`` set)."""

    root: Path
    conf: Path
    node: str
    cpus: int
    real_memory_mb: int
    partition: str = PARTITION
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _log_files: list = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        res = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}\n{self.logs()}")
        return res

    def logs(self, tail: int = 40) -> str:
        """The last lines of every daemon log, for failure messages."""
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {log.name} (last {len(lines)} lines) ---\n" + "\n".join(lines))
        return "\n".join(parts) if parts else "(no daemon logs)"

    def node_state(self) -> str:
        res = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%T", check=False, timeout=10)
        return res.stdout.strip().lower() if res.returncode == 0 else f"sinfo failed: {res.stderr.strip()}"

    def job_state(self, job_id: str) -> str:
        """State of a job (array element ids like ``12_0`` allowed), or '' once slurmctld forgot it."""
        res = self.run("squeue", "-h", "-j", job_id, "-o", "%T", check=False, timeout=10)
        if res.returncode == 0 and res.stdout.strip():
            return res.stdout.split()[0]
        res = self.run("scontrol", "show", "job", job_id, check=False, timeout=10)
        for token in res.stdout.split():
            if token.startswith("JobState="):
                return token.split("=", 1)[1]
        return ""

    def job_field(self, job_id: str, key: str) -> str:
        res = self.run("scontrol", "show", "job", job_id, check=False, timeout=10)
        for token in res.stdout.split():
            if token.startswith(f"{key}="):
                return token.split("=", 1)[1]
        return ""


def _write_conf(c: LocalSlurm, hw: dict[str, str], ctld_port: int, slurmd_port: int) -> None:
    r = c.root
    node_hw = " ".join(
        f"{k}={hw[k]}" for k in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore") if k in hw
    )
    c.conf.write_text(
        f"""# written by tests/slurm_cluster.py: a single-node test cluster
ClusterName=test{os.getpid()}
SlurmctldHost={c.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={r / 'munge' / 'munge.socket'},cred_expire={CRED_EXPIRE_S}
CredType=cred/munge
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}
SlurmdPidFile={r / 'run' / 'slurmd.pid'}
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={r / 'plugstack.conf'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MailProg=/bin/true
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobRequeue=1
SlurmctldTimeout=10
SlurmdTimeout=10
MessageTimeout=10
InactiveLimit=0
KillWait=5
Waittime=0
MinJobAge=600
NodeName={c.node} NodeAddr=127.0.0.1 {node_hw} RealMemory={c.real_memory_mb} State=UNKNOWN
PartitionName={c.partition} Nodes={c.node} Default=YES MaxTime=INFINITE State=UP
"""
    )
    (r / "plugstack.conf").write_text("")


def start_cluster(root: Path, timeout_s: float = 60) -> LocalSlurm:
    """Start munged, slurmctld and slurmd under ``root`` and wait until the node is idle.

    Raises :class:`ClusterError` (with the daemon logs) when the cluster does not come up in time; the
    daemons already started are stopped first.
    """
    root = Path(root)
    for sub in ("munge", "state", "spool", "log", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(root / sub, 0o700)
    os.chmod(root, 0o700)
    hw = node_hardware()
    node = socket.gethostname().split(".")[0]
    cpus = int(hw.get("CPUs", os.cpu_count() or 1))
    mem = int(hw.get("RealMemory", 1024))
    c = LocalSlurm(root=root, conf=root / "slurm.conf", node=node, cpus=cpus, real_memory_mb=mem)
    ctld_port, slurmd_port = _free_ports(2)
    _write_conf(c, hw, ctld_port, slurmd_port)
    c.env = {**os.environ, "SLURM_CONF": str(c.conf)}
    for var in [k for k in c.env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and k != "SLURM_CONF"]:
        del c.env[var]  # a test started inside a SLURM job must not leak that job's settings

    try:
        key = root / "munge" / "munge.key"
        subprocess.run([_which("mungekey"), "--create", f"--keyfile={key}", "--force"], check=True,
                       capture_output=True, timeout=30)
        os.chmod(key, 0o600)
        m = root / "munge"
        _spawn(c, "munged", [_which("munged"), "--foreground", "--force", f"--socket={m / 'munge.socket'}",
                             f"--key-file={key}", f"--pid-file={m / 'munged.pid'}", f"--seed-file={m / 'munged.seed'}",
                             f"--log-file={m / 'munged.log'}"])
        _wait_for(lambda: (m / "munge.socket").exists(), timeout_s, c, "munged socket")
        _spawn(c, "slurmctld", [_which("slurmctld"), "-D", "-c", "-i", "-f", str(c.conf)])
        _wait_for(lambda: c.run("scontrol", "ping", check=False, timeout=10).stdout.count("UP") > 0,
                  timeout_s, c, "slurmctld")
        _spawn(c, "slurmd", [_which("slurmd"), "-D", "-N", node, "-f", str(c.conf)])
        _wait_for(lambda: c.node_state() == "idle", timeout_s, c, "node idle")
    except BaseException:
        stop_cluster(c)
        raise
    return c


def _spawn(c: LocalSlurm, name: str, cmd: list[str]) -> None:
    # Foreground daemons log to stderr: one file per daemon, read back by LocalSlurm.logs().
    out = open(c.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (closed by stop_cluster)
    c._log_files.append(out)
    c.procs[name] = subprocess.Popen(cmd, env=c.env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, so a killed session leaks no daemon."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def _wait_for(cond, timeout_s: float, c: LocalSlurm, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, proc in c.procs.items():
            if proc.poll() is not None:
                raise ClusterError(f"{name} exited with {proc.returncode} while waiting for {what}\n{c.logs()}")
        if cond():
            return
        time.sleep(0.25)
    raise ClusterError(f"local SLURM cluster: timed out after {timeout_s:.0f}s waiting for {what} "
                       f"(node state: {c.node_state()})\n{c.logs()}")


def stop_cluster(c: LocalSlurm, grace_s: float = 10) -> None:
    """Cancel what is left in the queue, then stop the daemons by PID (slurmd, slurmctld, munged)."""
    if "slurmctld" in c.procs and c.procs["slurmctld"].poll() is None:
        deadline = time.monotonic() + grace_s  # let finishing jobs complete before cancelling them
        while time.monotonic() < deadline and c.run("squeue", "-h", check=False, timeout=10).stdout.strip():
            time.sleep(0.5)
        c.run("scancel", "--full", "--user", getpass.getuser(), check=False, timeout=10)
        while time.monotonic() < deadline + grace_s and c.run("squeue", "-h", check=False, timeout=10).stdout.strip():
            time.sleep(0.5)
    for name in ("slurmd", "slurmctld", "munged"):
        proc = c.procs.get(name)
        if proc is None or proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace_s)
    for f in c._log_files:
        f.close()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running :class:`LocalSlurm` for the session; skipped only when the binaries are absent."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"SLURM/munge not installed (missing {', '.join(missing)}; apt-get install slurm-wlm munge)")
    root = tmp_path_factory.mktemp("slurm")
    try:
        cluster = start_cluster(root)
    except ClusterError as err:
        pytest.fail(f"local SLURM cluster did not come up: {err}", pytrace=False)
    yield cluster
    stop_cluster(cluster)
    shutil.rmtree(root, ignore_errors=True)
