"""Runs a rendered manifest's container commands as local processes, one loopback address per "pod".

No API server can run here, so the pods' commands run as they are written in the manifest (`bash -c
ARGS` in the container's working directory, with the container's environment). What a pod would get
from its cluster is supplied the way the cluster supplies it, and nothing else is changed:
- the pod's address (`POD_IP`, the downward API), 127.0.0.2 / 127.0.0.3 here;
- what KubeRay injects (`FQ_RAY_IP`, the head service's address, in worker pods) or an Indexed Job
  injects (`JOB_COMPLETION_INDEX`), and the rank-0 pod's DNS name (`MASTER_ADDR`);
- port numbers: each pod has its own network namespace, these processes share one machine, so the
  port variables the commands read get free ports;
- the working directory (the image's checkout) is this checkout, and `python` is this venv's.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)


def load_manifest(path: Path) -> List[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def container_env(container: dict) -> Dict[str, str]:
    """The container's literal env values (valueFrom entries are the cluster's to fill)."""
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def shell_command(container: dict) -> str:
    assert container["command"] == ["/bin/bash", "-c", "--"], container["command"]
    (script,) = container["args"]
    return script


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_block(count: int, low: int = 30000, high: int = 60000, tries: int = 200) -> int:
    """The first of `count` consecutive ports free on every address (Ray binds some on 0.0.0.0)."""
    for _ in range(tries):
        base = random.randrange(low, high - count)
        if all(_bindable("0.0.0.0", port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no block of {count} free ports found")


class LocalPod:
    """One pod's container command as a process group of its own (stopped by its pid)."""

    def __init__(self, name: str, container: dict, env: Dict[str, str], log_dir: Path):
        self.name = name
        self.log = log_dir / f"{name}.log"
        full_env = {**os.environ, **container_env(container), **env,
                    "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(["/bin/bash", "-c", "--", shell_command(container)], cwd=ROOT,
                                            env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the pod's process group (a pod's shutdown), SIGKILL after `grace_s`."""
        if self.process.poll() is not None:
            return
        pgid = self.process.pid  # start_new_session: the group id is the pid of our own child
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=10)


def wait_for(predicate, timeout_s: float, what: str, pods=(), interval_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        for pod in pods:
            if pod.process.poll() is not None:
                raise AssertionError(f"{pod.name} exited ({pod.process.returncode}) while waiting for {what}:\n"
                                     f"{pod.tail()}")
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n" + "\n".join(p.tail() for p in pods))
