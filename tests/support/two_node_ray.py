"""A two-node Ray cluster on one machine: a head on 127.0.0.2 and a worker on 127.0.0.3, each its own
`ray start --block` process group (tests/launchers/local_pods.py runs them and stops them by pid),
each with `--num-cpus` of its own so placement is real, no dashboard, ports from free blocks.

    cluster = TwoNodeRay(log_dir, cpus_per_node=1)
    ... ray_init.address=cluster.address ...
    cluster.node_of(pid)     # "127.0.0.2" / "127.0.0.3": whose process tree holds the process
    cluster.stop()
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import psutil

from tests.launchers.local_pods import LocalPod, free_port_block, wait_for

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
WORKER_PORTS = 40  # Ray worker processes per node: a range of its own for each node
STARTED = "Ray runtime started"


def _ray_start(ip: str, ports: int, flags: List[str], cpus: int) -> dict:
    """A container-shaped command (what LocalPod runs): `ray start` for one node."""
    flags = flags + [
        "--block", f"--node-ip-address={ip}", f"--num-cpus={cpus}", "--num-gpus=0",
        "--object-store-memory=200000000", "--disable-usage-stats",
        f"--dashboard-agent-listen-port={ports}", f"--metrics-export-port={ports + 1}",
        f"--runtime-env-agent-port={ports + 2}", f"--min-worker-port={ports + 10}",
        f"--max-worker-port={ports + 10 + WORKER_PORTS - 1}"]
    return {"command": ["/bin/bash", "-c", "--"], "args": ["exec ray start " + " ".join(flags)]}


class TwoNodeRay:
    def __init__(self, log_dir: Path, cpus_per_node: int = 1, timeout_s: float = 120):
        head_ports, worker_ports = free_port_block(60), free_port_block(60)
        self.address = f"{HEAD_IP}:{head_ports + 5}"
        env = {"RAY_AUTH_MODE": "disabled"}
        self.pods: Dict[str, LocalPod] = {}
        try:
            self.pods[HEAD_IP] = LocalPod("ray-head", _ray_start(
                HEAD_IP, head_ports, ["--head", f"--port={head_ports + 5}", "--include-dashboard=false",
                                      f"--ray-client-server-port={head_ports + 6}"], cpus_per_node), env, log_dir)
            wait_for(lambda: STARTED in self.pods[HEAD_IP].tail(), timeout_s, "the Ray head", self.pods.values())
            self.pods[WORKER_IP] = LocalPod("ray-worker", _ray_start(
                WORKER_IP, worker_ports, [f"--address={self.address}"], cpus_per_node), env, log_dir)
            wait_for(lambda: STARTED in self.pods[WORKER_IP].tail(), timeout_s, "the Ray worker node",
                     self.pods.values())
        except BaseException:
            self.stop()
            raise

    def _trees(self) -> Dict[str, List[psutil.Process]]:
        """{node address: every process its `ray start` started, recursively}."""
        trees: Dict[str, List[psutil.Process]] = {}
        for ip, pod in self.pods.items():
            try:
                trees[ip] = psutil.Process(pod.process.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                trees[ip] = []
        return trees

    def node_of(self, pid: int) -> Optional[str]:
        """The node address whose `ray start` process tree holds `pid` (None: neither)."""
        return next((ip for ip, tree in self._trees().items() if pid in {child.pid for child in tree}), None)

    def processes(self, needle: str) -> Dict[str, List[psutil.Process]]:
        """{node address: its processes whose command line contains `needle`}."""
        found: Dict[str, List[psutil.Process]] = {}
        for ip, tree in self._trees().items():
            found[ip] = []
            for child in tree:
                try:
                    if needle in " ".join(child.cmdline()):
                        found[ip].append(child)
                except psutil.NoSuchProcess:
                    pass
        return found

    def stop(self) -> None:
        for pod in reversed(list(self.pods.values())):
            pod.stop(grace_s=5)
