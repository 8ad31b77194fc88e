"""A one-node SLURM cluster on this machine for the tests: munged, slurmctld and slurmd,
started from a private configuration in a temporary folder and stopped by their process ids.

Debian's slurm-wlm and munge (CI installs them in .ci/run); the daemons run as root, which
CI is. Nothing outside the folder is written: the munge socket, key, state and spool
directories, pid and log files all live in it, and clients find the cluster through
SLURM_CONF. A real cluster keeps slurm.conf in /etc/slurm, where every client finds it;
the executor's job step drops SLURM_* variables (SLURM_CONF too) before its nested `srun`,
so `bin/srun` in the folder, first on the jobs' PATH, hands the real srun this cluster's
configuration.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "srun")


def missing_reason() -> str | None:
    """Why a SLURM cluster cannot be started here, or None."""
    absent = [name for name in DAEMONS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]
    if absent:
        return f"SLURM/munge binaries absent ({', '.join(absent)}): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the one-node SLURM cluster runs its daemons as root"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop the daemons this cluster started, by their process ids, newest first."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def start_cluster(root: Path, cpus: int = 2) -> Cluster:
    """Start munged, slurmctld and slurmd for a one-node cluster of ``cpus`` CPUs in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)  # munged refuses a socket folder that others may write
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    key, sock = root / "munge.key", root / "munge.socket"
    subprocess.run([_binary("mungekey"), "--create", "--force", f"--keyfile={key}"], check=True, capture_output=True)
    os.chmod(key, 0o600)
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=seglabtest",
        f"SlurmctldHost={host}(127.0.0.1)",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={sock}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        # Finished jobs stay visible to squeue for this long: the executor's status source.
        "MinJobAge=300",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_memory_mb() - 512} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        "",
    ]))
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    srun = bin_dir / "srun"
    srun.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {_binary("srun")} "$@"\n')
    srun.chmod(0o755)
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    cluster = Cluster(root, env)
    daemon_out = (root / "daemons.out").open("a")
    try:
        cluster.processes.append(subprocess.Popen(
            [_binary("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
             f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'munged.log'}", f"--seed-file={root / 'munge.seed'}"],
            stdout=daemon_out, stderr=subprocess.STDOUT, env=env))
        _wait(lambda: sock.exists(), "munged's socket", cluster)
        cluster.processes.append(subprocess.Popen([_binary("slurmctld"), "-D", "-i", "-f", str(conf)],
                                                  stdout=daemon_out, stderr=subprocess.STDOUT, env=env))
        cluster.processes.append(subprocess.Popen([_binary("slurmd"), "-D", "-f", str(conf)],
                                                  stdout=daemon_out, stderr=subprocess.STDOUT, env=env))

        def node_idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True)
            return out.returncode == 0 and out.stdout.strip() in ("idle", "mixed")

        _wait(node_idle, "the node to come up idle", cluster, timeout=60)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait(ready, what: str, cluster: Cluster, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        dead = [p.args[0] for p in cluster.processes if p.poll() is not None]
        if dead:
            break
        time.sleep(0.5)
    raise RuntimeError(f"SLURM test cluster: no {what} (exited: {dead or 'none'}).\n"
                       + "\n".join(f"--- {n}\n{cluster.log(n)[-2000:]}" for n in ("munged", "slurmctld", "slurmd", "daemons")))
