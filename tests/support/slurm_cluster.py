"""A real Slurm 22.05 cluster of two nodes on loopback, owned by a pytest fixture.

    def test_job(slurm_cluster):                       # session-scoped: started once, stopped at the end
        job = slurm_cluster.sbatch(["--nodes=2", "--wrap", "srun hostname"])
        info = slurm_cluster.wait_for_end(job, timeout_s=60)
        assert info["JobState"] == "COMPLETED"

Everything lives in one temporary directory: a private munged (its own key and socket), MariaDB and
slurmdbd (accounting: `sacct` works), slurmctld on 127.0.0.1 and one slurmd per node, `node1` on
127.0.0.2 and `node2` on 127.0.0.3 (Slurm's NodeAddr; the nodes share this machine's CPUs). Ports come
from one block of 20 in 26800-26999 (the first free block, or `HARNESS_SLURM_PORT_BASE`). Every daemon
is stopped by the pid it wrote; jobs still running are cancelled first.

Without Slurm installed the fixture skips, saying how to install it (`bash tools/install_slurm.sh`);
under CI (`CI=true` or `HARNESS_REQUIRE_SLURM=1`) a missing Slurm fails instead.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import pytest

DAEMONS = ("munged", "mungekey", "mariadbd", "mariadb-install-db", "mariadb", "slurmdbd", "slurmctld", "slurmd",
           "sbatch", "srun", "scontrol", "scancel", "sinfo", "sacctmgr")
NODES = {"node1": "127.0.0.2", "node2": "127.0.0.3"}
PORT_BLOCK, PORT_RANGE = 20, range(26800, 27000, 20)
# Offsets in a port block: controller, one slurmd per node, slurmdbd, MariaDB, then srun's own ports.
CTLD, SLURMD, DBD, MARIADB, SRUN_FIRST = 0, 1, 4, 5, 8
END_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
              "PREEMPTED"}
START_TIMEOUT_S = 90


class SlurmError(RuntimeError):
    pass


def missing_binaries() -> List[str]:
    return [name for name in DAEMONS if shutil.which(name) is None
            and not Path("/usr/sbin", name).exists() and not Path("/usr/bin", name).exists()]


def _binary(name: str) -> str:
    for path in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if path and Path(path).exists():
            return path
    raise SlurmError(f"{name} is not installed")


def _port_free(port: int, hosts: Iterable[str]) -> bool:
    for host in hosts:
        with socket.socket() as probe:
            # As the daemons do: connections of an earlier cluster still in TIME_WAIT do not block the port.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


def free_port_block(hosts=("0.0.0.0",)) -> int:
    """The first block of PORT_BLOCK ports in 26800-26999 where every port is free."""
    for base in PORT_RANGE:
        if all(_port_free(base + i, hosts) for i in range(PORT_BLOCK)):
            return base
    raise SlurmError(f"no free block of {PORT_BLOCK} ports in {PORT_RANGE.start}-{PORT_RANGE.stop - 1}; "
                     "set HARNESS_SLURM_PORT_BASE")


class SlurmCluster:
    """The daemons, the files they read and the client environment (`env`) for sbatch, scontrol, srun."""

    def __init__(self, base_dir: Path, port_base: Optional[int] = None, accounting: bool = True,
                 cpus_per_node: int = 2, memory_mb: int = 4000, cluster_name: str = "harness"):
        self.base = Path(base_dir)
        self.port_base = port_base if port_base is not None else free_port_block()
        self.accounting, self.cluster_name = accounting, cluster_name
        self.cpus_per_node, self.memory_mb = cpus_per_node, memory_mb
        self.nodes = dict(NODES)
        for name in ("run", "log", "state", "spool", "etc", "munge"):
            (self.base / name).mkdir(parents=True, exist_ok=True)
        # munged insists that everyone may traverse the path to its socket, and no one else may read the key.
        os.chmod(self.base, 0o711)
        os.chmod(self.base / "run", 0o755)
        os.chmod(self.base / "munge", 0o700)
        self.conf = self.base / "etc" / "slurm.conf"
        self.munge_socket = self.base / "run" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for key in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and k != "SLURM_CONF"]:
            del self.env[key]  # a test run inside an allocation must not leak it into this cluster's jobs
        self._pid_files: List[Path] = []

    # ---- ports and files -----------------------------------------------------------------------
    def port(self, offset: int) -> int:
        return self.port_base + offset

    @property
    def slurmd_ports(self) -> Dict[str, int]:
        return {name: self.port(SLURMD + i) for i, name in enumerate(self.nodes)}

    def _write_configs(self) -> None:
        b = self.base
        nodes = "\n".join(
            f"NodeName={name} NodeHostname=localhost NodeAddr={address} Port={self.slurmd_ports[name]} "
            f"CPUs={self.cpus_per_node} Boards=1 SocketsPerBoard=1 CoresPerSocket={self.cpus_per_node} "
            f"ThreadsPerCore=1 RealMemory={self.memory_mb} State=UNKNOWN"
            for name, address in self.nodes.items())
        # AccountingStoragePass names the munge socket for slurmdbd connections (AuthInfo does not apply).
        accounting = (f"AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1\n"
                      f"AccountingStoragePort={self.port(DBD)}\nAccountingStoragePass={self.munge_socket}\n"
                      "JobAcctGatherType=jobacct_gather/none\n"
                      if self.accounting else "AccountingStorageType=accounting_storage/none\n")
        self.conf.write_text(f"""\
ClusterName={self.cluster_name}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={self.port(CTLD)}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
# No cgroup controllers exist here: processes are tracked by parent pid, tasks are not confined.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MpiDefault=none
ReturnToService=2
MinJobAge=300
KillWait=10
InactiveLimit=0
SrunPortRange={self.port(SRUN_FIRST)}-{self.port(PORT_BLOCK - 1)}
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool/%n
SlurmctldPidFile={b}/run/slurmctld.pid
SlurmdPidFile={b}/run/slurmd-%n.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd-%n.log
{accounting}{nodes}
PartitionName=debug Nodes={','.join(self.nodes)} Default=YES MaxTime=INFINITE State=UP
""")
        if self.accounting:
            dbd = self.conf.with_name("slurmdbd.conf")
            dbd.write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.port(DBD)}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.port(MARIADB)}
StorageUser=slurm
StoragePass=harness-test
StorageLoc=slurm_acct_db
PidFile={b}/run/slurmdbd.pid
LogFile={b}/log/slurmdbd.log
""")
            os.chmod(dbd, 0o600)

    # ---- start and stop ------------------------------------------------------------------------
    def start(self) -> "SlurmCluster":
        try:
            self._write_configs()
            self._start_munge()
            if self.accounting:
                self._start_accounting()
            self._daemon([_binary("slurmctld"), "-f", str(self.conf)], self.base / "run" / "slurmctld.pid")
            for name in self.nodes:
                self._daemon([_binary("slurmd"), "-f", str(self.conf), "-N", name],
                             self.base / "run" / f"slurmd-{name}.pid")
            self._wait_for_nodes()
        except BaseException:
            self.stop()
            raise
        return self

    def _daemon(self, command: List[str], pid_file: Path, log: Optional[Path] = None) -> None:
        """Starts a daemon that forks itself and writes `pid_file`; waits (bounded) for the file."""
        self._pid_files.append(pid_file)
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        if result.returncode:
            raise SlurmError(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()[-2000:]}"
                             f"{self._log_tail(log)}")
        self._wait(lambda: _read_pid(pid_file) is not None, f"{pid_file.name} to appear", log)

    def _start_munge(self) -> None:
        key = self.base / "munge" / "munge.key"
        subprocess.run([_binary("mungekey"), "-c", "-k", str(key)], check=True, capture_output=True, timeout=30)
        pid_file, log = self.base / "run" / "munged.pid", self.base / "log" / "munged.log"
        self._daemon([_binary("munged"), f"--socket={self.munge_socket}", f"--key-file={key}",
                      f"--pid-file={pid_file}", f"--seed-file={self.base / 'munge' / 'munged.seed'}",
                      f"--log-file={log}"], pid_file, log)

    def _start_accounting(self) -> None:
        datadir, sock = self.base / "mysql", self.base / "run" / "mysqld.sock"
        log = self.base / "log" / "mysqld.log"
        init = subprocess.run([_binary("mariadb-install-db"), "--no-defaults", f"--datadir={datadir}", "--user=root",
                               "--auth-root-authentication-method=socket", "--skip-test-db"],
                              capture_output=True, text=True, timeout=120)
        if init.returncode:
            raise SlurmError(f"mariadb-install-db exited {init.returncode}: {init.stderr[-2000:]}")
        pid_file = self.base / "run" / "mysqld.pid"
        self._pid_files.append(pid_file)
        # mariadbd does not fork: it runs in the background and writes its own pid file.
        subprocess.Popen([_binary("mariadbd"), "--no-defaults", f"--datadir={datadir}", f"--socket={sock}",
                          f"--port={self.port(MARIADB)}", "--bind-address=127.0.0.1", "--user=root",
                          f"--pid-file={pid_file}", f"--log-error={log}", "--innodb-buffer-pool-size=16M",
                          "--skip-log-bin", "--performance-schema=off"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        self._wait(lambda: sock.exists() and _read_pid(pid_file) is not None, "MariaDB to accept connections", log)
        sql = ("CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'harness-test';"
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")
        subprocess.run([_binary("mariadb"), "--no-defaults", "-S", str(sock), "-u", "root", "-e", sql], check=True,
                       capture_output=True, timeout=60)
        dbd_log = self.base / "log" / "slurmdbd.log"
        self._daemon([_binary("slurmdbd")], self.base / "run" / "slurmdbd.pid", dbd_log)
        # slurmdbd creates its tables on first start; the cluster can be added once it answers.
        self._wait(lambda: self.command("sacctmgr", "-i", "add", "cluster", self.cluster_name, check=False).returncode == 0,
                   "slurmdbd to accept the cluster", dbd_log, interval_s=1.0)

    def _wait_for_nodes(self) -> None:
        def idle() -> bool:
            result = self.command("sinfo", "-h", "-N", "-o", "%N %t", check=False)
            states = dict(line.split() for line in result.stdout.splitlines() if line.strip())
            return len(states) == len(self.nodes) and all(s in ("idle", "mix", "alloc") for s in states.values())

        self._wait(idle, "both nodes to be idle", self.base / "log" / "slurmctld.log")

    def _wait(self, condition, what: str, log: Optional[Path] = None, interval_s: float = 0.2) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not condition():
            if time.monotonic() > deadline:
                raise SlurmError(f"timed out after {START_TIMEOUT_S} s waiting for {what}{self._log_tail(log)}")
            time.sleep(interval_s)

    @staticmethod
    def _log_tail(log: Optional[Path]) -> str:
        if log is None or not log.exists():
            return ""
        return f"\n--- {log} (tail) ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])

    def stop(self) -> None:
        """Cancels jobs, shuts the controller down, then stops every daemon left by its pid file."""
        if _read_pid(self.base / "run" / "slurmctld.pid") is not None:
            self.command("scancel", "--full", "--user=root", check=False)
            deadline = time.monotonic() + 60
            while self.command("squeue", "-h", check=False).stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.5)
            self.command("scontrol", "shutdown", check=False)
        for pid_file in reversed(self._pid_files):
            _stop_pid(pid_file)
        self._pid_files = []

    # ---- clients -------------------------------------------------------------------------------
    def command(self, *args: str, check: bool = True, timeout_s: float = 60, env: Optional[dict] = None,
                cwd=None) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster (SLURM_CONF set)."""
        result = subprocess.run(list(args), env={**self.env, **(env or {})}, cwd=cwd, capture_output=True, text=True,
                                timeout=timeout_s)
        if check and result.returncode:
            raise SlurmError(f"{' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def sbatch(self, args: List[str], env: Optional[dict] = None, cwd=None) -> int:
        """Submits a job (`sbatch --parsable ARGS...`) and returns its id."""
        out = self.command("sbatch", "--parsable", *args, env=env, cwd=cwd).stdout.strip()
        return int(out.split(";")[0])

    def show_job(self, job_id: int) -> Dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, NodeList, ...)."""
        text = self.command("scontrol", "show", "job", "-o", str(job_id)).stdout
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def wait_for(self, job_id: int, condition, timeout_s: float, what: str) -> Dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.show_job(job_id)
            if condition(info):
                return info
            if time.monotonic() > deadline:
                raise SlurmError(f"job {job_id}: timed out after {timeout_s:.0f} s waiting for {what}; now {info}")
            time.sleep(0.5)

    def wait_for_end(self, job_id: int, timeout_s: float) -> Dict[str, str]:
        return self.wait_for(job_id, lambda info: info.get("JobState") in END_STATES, timeout_s, "the job to end")


def _read_pid(pid_file: Path) -> Optional[int]:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of this process counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _stop_pid(pid_file: Path, grace_s: float = 15.0) -> None:
    pid = _read_pid(pid_file)
    if pid is None or not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def slurm_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("HARNESS_REQUIRE_SLURM") == "1"


@pytest.fixture(scope="session")
def slurm_cluster():
    """The session's two-node Slurm cluster (a `SlurmCluster`, started); stopped after the last test."""
    missing = missing_binaries()
    if missing:
        message = (f"Slurm is not installed ({', '.join(missing)} not found): `bash tools/install_slurm.sh` "
                   "installs it from Debian's packages (as root)")
        if slurm_required():
            pytest.fail(f"{message}; CI must run the Slurm tests", pytrace=False)
        pytest.skip(message)
    base = Path(tempfile.mkdtemp(prefix="harness-slurm-", dir=os.environ.get("HARNESS_SLURM_TMP", "/tmp")))
    port_base = os.environ.get("HARNESS_SLURM_PORT_BASE")
    cluster = SlurmCluster(base, port_base=int(port_base) if port_base else None)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
