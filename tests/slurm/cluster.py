"""A one-node SLURM cluster on localhost, started and stopped by the tests (or by hand).

    python tests/slurm/cluster.py          # start, print the environment to use, wait for Ctrl-C, stop

Writes slurm.conf into a temp folder, starts munged, slurmctld and slurmd as root without systemd
(`ProctrackType=proctrack/linuxproc`, `TaskPlugin=task/none`: no cgroups needed), one node with this
machine's CPUs and memory, waits until `sinfo` shows it idle, and stops exactly the PIDs it started.
Needs Debian's packages: `apt-get install -y slurmctld slurmd slurm-client munge` (`make slurm`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "srun", "scontrol", "scancel", "squeue")
SBIN = ("/usr/sbin", "/usr/bin")


def which(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def missing() -> str | None:
    """Why a local cluster cannot start here (None when it can)."""
    if os.geteuid() != 0:
        return "the local SLURM cluster runs its daemons as root"
    absent = [b for b in BINARIES if which(b) is None]
    if absent:
        return f"SLURM/munge not installed ({', '.join(absent)} missing): make slurm, or apt-get install -y slurmctld slurmd slurm-client munge"
    return None


def slurm_conf(folder: Path, host: str, cpus: int, mem_mb: int, munge_socket: str) -> str:
    # cred_expire=10: a requeued job may start again 10 s after it stopped (SLURM's default: 120 s).
    return f"""ClusterName=robablate
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
AuthInfo=socket={munge_socket},cred_expire=10
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
KillWait=30
UnkillableStepTimeout=180
OverTimeLimit=0
InactiveLimit=0
MinJobAge=300
JobRequeue=1
SchedulerParameters=sched_interval=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


class LocalCluster:
    """Start with .start(), stop with .stop(); `env` is what SLURM clients (sbatch, submitit) need."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder or tempfile.mkdtemp(prefix="robablate-slurm-"))
        self.host = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        # Leave 10% for the OS: slurmd refuses a node whose RealMemory exceeds what it measures.
        self.mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.9)
        self.procs: list[subprocess.Popen] = []
        self.env = {**os.environ, "SLURM_CONF": str(self.folder / "slurm.conf")}

    def start(self, timeout: float = 60) -> "LocalCluster":
        f = self.folder
        for d in ("state", "spool", "munge"):
            (f / d).mkdir(parents=True, exist_ok=True)
        key = f / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = str(f / "munge" / "munge.socket")
        (f / "slurm.conf").write_text(slurm_conf(f, self.host, self.cpus, self.mem_mb, sock))
        munge = [which("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
                 f"--pid-file={f / 'munge' / 'munged.pid'}", f"--log-file={f / 'munge' / 'munged.log'}",
                 f"--seed-file={f / 'munge' / 'munged.seed'}"]
        self._spawn(munge, "munged")
        self._wait(lambda: Path(sock).exists(), timeout, "munged socket")
        self._spawn([which("slurmctld"), "-D", "-i", "-f", str(f / "slurm.conf")], "slurmctld")
        self._spawn([which("slurmd"), "-D", "-f", str(f / "slurm.conf")], "slurmd")
        self._wait(self.idle, timeout, "the node to be idle in sinfo")
        return self

    def _spawn(self, cmd: list[str], name: str) -> None:
        log = open(self.folder / f"{name}.out", "w")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def _wait(self, ready, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                break
            if ready():
                return
            time.sleep(0.5)
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.folder.glob("*.out"))
                         + sorted(self.folder.glob("*.log")))
        self.stop()
        raise RuntimeError(f"local SLURM cluster: gave up waiting for {what} ({self.folder})\n{logs}")

    def run(self, *cmd: str, check: bool = True) -> str:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=check, timeout=30).stdout

    def idle(self) -> bool:
        out = subprocess.run([which("sinfo"), "-h", "-N", "-o", "%T"], env=self.env, capture_output=True,
                             text=True, timeout=10).stdout.split()
        return out == ["idle"]

    def stop(self) -> None:
        """Cancel the jobs, stop the daemons this object started, then the job processes they left.
        slurmstepd detaches into its own session, so the daemons' process groups do not hold it: the
        leftovers are found as the processes whose environment names this cluster's slurm.conf."""
        if self.procs and all(p.poll() is None for p in self.procs):
            subprocess.run([which("scancel"), "--full", "--user=root"], env=self.env, capture_output=True, timeout=30)
            self._settle(lambda: not self.run(which("squeue"), "-h", check=False).strip(), 30)
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def leftovers(self) -> list[int]:
        """PIDs whose environment has this cluster's SLURM_CONF (slurmstepd, srun, the jobs)."""
        mark = f"SLURM_CONF={self.env['SLURM_CONF']}".encode()
        found = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                try:
                    if mark in (d / "environ").read_bytes().split(b"\0"):
                        found.append(int(d.name))
                except OSError:
                    pass
        return found

    @staticmethod
    def _settle(done, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not done():
            time.sleep(1)

if __name__ == "__main__":
    reason = missing()
    if reason:
        raise SystemExit(f"cannot start: {reason}")
    cluster = LocalCluster().start()
    print(f"local SLURM cluster up: export SLURM_CONF={cluster.env['SLURM_CONF']}  (Ctrl-C stops it)", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
