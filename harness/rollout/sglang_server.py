"""SGLang server processes: launched from SGLang's own Python, watched by pid, logged to files.

Every wait is bounded: start-up polls /health until ``startup_timeout_s`` and fails with the log's
tail; stop sends SIGTERM to the server's own process group, then SIGKILL after a grace period.
"""
from __future__ import annotations

import atexit
import os
import signal
import sys
import socket
import subprocess
import tempfile
import time
from typing import List, Optional

from harness.rollout.base import RolloutError
from harness.config.rollout import REPO_ROOT, RolloutConfig
from harness.rollout.sglang_client import SGLangClient, SGLangHTTPError, SGLangUnreachable

# Test support for CPU machines: a stand-in for the CUDA-only sgl_kernel package (see its README).
CPU_KERNEL_STAND_IN = os.path.join(REPO_ROOT, "tests", "support", "sglang_cpu")
STOP_GRACE_S = 10
LOG_TAIL_LINES = 40


class ServerStartError(RolloutError):
    pass


def _parent_death_signal():
    """A pre-exec hook that has the child SIGKILLed when its parent dies, even by SIGKILL (atexit does
    not run then; SGLang's own subprocesses follow their server the same way). libc is loaded here,
    in the parent: the forked child only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl, pr_set_pdeathsig = ctypes.CDLL("libc.so.6", use_errno=True).prctl, 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGKILL)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def sglang_flags(options: dict) -> List[str]:
    """``{"chunked_prefill_size": 512, "enable_metrics": True}`` -> command-line flags."""
    flags = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not False and value is not None:
            flags += [flag] + ([str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)])
    return flags


class SGLangServer:
    """One ``sglang.launch_server`` subprocess (a new session, so stopping it stops its children)."""

    def __init__(self, config: RolloutConfig, index: int = 0, port: Optional[int] = None):
        self.config = config
        self.index = index
        self.port = port or free_port(config.host)
        self.url = f"http://{config.host}:{self.port}"
        log_dir = config.log_dir or tempfile.mkdtemp(prefix="sglang-logs-")
        os.makedirs(log_dir, exist_ok=True)
        self.log_path = os.path.join(log_dir, f"server{index}-{self.port}.log")
        self.process: Optional[subprocess.Popen] = None
        self.client = SGLangClient(self.url, config.request_timeout_s, config.max_retries)

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process else None

    def command(self) -> List[str]:
        c = self.config
        options = {"model_path": c.model_path, "host": c.host, "port": self.port, "dtype": c.dtype,
                   "tp_size": c.tensor_model_parallel_size, "mem_fraction_static": c.gpu_memory_utilization,
                   "context_length": c.max_model_len, "skip_tokenizer_init": c.skip_tokenizer_init}
        if c.resolved_device() == "cuda" and self.index:  # servers of one node on disjoint GPUs
            options["base_gpu_id"] = self.index * c.tensor_model_parallel_size
        if c.resolved_device() == "cpu":
            # SGLang's CPU route without its AMX kernels (notes/sglang.md). An idle scheduler busy-polls a
            # core by default, which halves training speed on a small machine: sleep_on_idle waits on
            # its sockets instead.
            options.update(device="cpu", attention_backend="torch_native", disable_overlap_schedule=True,
                           max_total_tokens=16384, sleep_on_idle=True)
        options.update(c.sglang)
        return [c.python, "-m", "sglang.launch_server"] + sglang_flags(options)

    def environment(self) -> dict:
        env = dict(os.environ)
        if self.config.resolved_device() == "cpu":
            env["SGLANG_USE_CPU_ENGINE"] = "1"
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [CPU_KERNEL_STAND_IN, env.get("PYTHONPATH")]))
        return env

    def start(self) -> None:
        if not os.path.exists(self.config.python):
            raise ServerStartError(f"SGLang python {self.config.python!r} does not exist: build it with "
                                   "`bash tools/setup_sglang_env.sh` or set actor_rollout_ref.rollout.python")
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.environment(),
                                            start_new_session=True, preexec_fn=_parent_death_signal())
        atexit.register(self.stop)  # a trainer that dies without shutdown() leaves no server behind

    def wait_healthy(self, timeout_s: Optional[float] = None) -> None:
        timeout_s = self.config.startup_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerStartError(f"SGLang server {self.index} (pid {self.pid}) exited with code "
                                       f"{self.process.returncode} during start-up; log {self.log_path}:\n"
                                       f"{self.log_tail()}")
            if self.healthy(timeout_s=5):
                return
            time.sleep(1.0)
        raise ServerStartError(f"SGLang server {self.index} (pid {self.pid}, {self.url}) was not healthy "
                               f"after {timeout_s:.0f} s; log {self.log_path}:\n{self.log_tail()}")

    health_path = "/health"

    def healthy(self, timeout_s: float = 10) -> bool:
        try:
            self.client._once("GET", self.health_path, None, timeout_s)
            return True
        except (SGLangHTTPError, SGLangUnreachable, OSError):
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def describe_failure(self) -> str:
        """Why this server may have failed a request: exit code and log tail, for error messages."""
        state = "running" if self.alive() else f"exited with code {self.process and self.process.returncode}"
        return f"server {self.index} (pid {self.pid}, {self.url}) {state}; log {self.log_path}:\n{self.log_tail()}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))
                return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])
        except OSError as error:
            return f"(no log: {error})"

    def stop(self) -> None:
        """SIGTERM to the server's own process group (it started it: a new session), SIGKILL after a
        grace period; its scheduler processes outlive a killed leader, so the group is always hit."""
        if self.process is None:
            return
        signals = ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S))
        if self.process.poll() is not None:
            signals = ((signal.SIGKILL, 0),)
        for sig, wait_s in signals:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait_s)
                if sig == signal.SIGKILL or not self._group_alive():
                    return
            except subprocess.TimeoutExpired:
                continue

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def restart(self) -> None:
        self.stop()
        self.start()
        self.wait_healthy()


class RouterProcess(SGLangServer):
    """``sglang_router.launch_router`` in front of the launched servers (generation only)."""

    # The router answers /health before it has registered its workers (it does that in the
    # background); /health_generate is answered by a worker through it.
    health_path = "/health_generate"

    def __init__(self, config: RolloutConfig, worker_urls: List[str]):
        super().__init__(config, index=-1)
        self.worker_urls = worker_urls
        self.log_path = self.log_path.replace("server-1-", "router-")

    def command(self) -> List[str]:
        return [self.config.python, "-m", "sglang_router.launch_router", "--host", self.config.host,
                "--port", str(self.port), "--policy", self.config.router_policy,
                "--worker-urls", *self.worker_urls]

    def environment(self) -> dict:
        return dict(os.environ)
