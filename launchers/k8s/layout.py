"""One deployment's numbers, in one place: nodes, ranks and GPUs per node, CPUs / memory / shared
memory per pod, the shared volume, the image, the entry point with its overrides, the environment
and Ray's ports.

`launchers/k8s/render.py` renders the Kubernetes manifests from a `Deployment`, and
`launchers/nemo_run/grpo.py --executor kuberay` builds NeMo-Run's KubeRayExecutor from the same one,
so the two cannot disagree.

    deployment = plan("configs/grpo_qwen2.5_32b.yaml", ["actor_rollout_ref.model.path=/shared/..."], nodes=4)
    deployment.head_command    # the `ray start --head ...` line the head pod runs

The config is loaded and validated with the harness's own loader (a typo in an override fails here,
not in a pod an hour later), and layouts a cluster cannot run are refused: tensor-parallel groups and
SGLang servers must fit in one node, and the world must divide by the model-parallel size.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import yaml

REPO = Path(__file__).resolve().parents[2]
RAY_VERSION = "2.60.0"
# Ray's ports inside a pod: KubeRay's defaults, which its probes and its head service expect. The
# commands read them from the environment (set in the manifest), so the same command line also runs
# outside a pod with other values (tests/launchers run it on loopback addresses).
RAY_PORTS = {
    "RAY_PORT": 6379,  # GCS (KubeRay's own name for it)
    "RAY_DASHBOARD_PORT": 8265,  # job submission: the RayJob submitter talks to it
    "RAY_CLIENT_PORT": 10001,
    "RAY_DASHBOARD_AGENT_PORT": 52365,  # KubeRay's readiness and liveness probes
    "RAY_METRICS_PORT": 8080,
    "RAY_MIN_WORKER_PORT": 10002,
    "RAY_MAX_WORKER_PORT": 19999,
}
TORCHRUN_PORT = 29500
# NCCL / CUDA settings of GPU pods. eth0 is the pod network in every common CNI; Megatron's tensor
# and sequence parallel overlap needs one CUDA connection per device.
NCCL_ENV = {
    "NCCL_DEBUG": "WARN",
    "NCCL_SOCKET_IFNAME": "eth0",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",
}
# Token authentication off inside the cluster network, the same in every process (a driver that
# creates a token while the cluster has none fails to connect; notes/cluster.md).
RAY_ENV = {"RAY_AUTH_MODE": "disabled"}
MAX_RAYJOB_NAME = 47  # KubeRay v1.7 refuses longer RayJob names (its RayCluster gets a suffix)


class LayoutError(ValueError):
    """A config or a setting the manifests cannot be built from (the message names it, in one line)."""


@dataclass(frozen=True)
class PodShape:
    """What one pod (one node) gets; requests equal limits (Guaranteed QoS: no CPU throttling surprises,
    no eviction before best-effort pods)."""

    gpus: int
    cpus: int
    memory: str  # a Kubernetes quantity, e.g. "800Gi"
    shm: str  # /dev/shm (a memory-backed emptyDir; counts against `memory`)

    @property
    def resources(self) -> Dict[str, Dict[str, object]]:
        amounts = {"cpu": str(self.cpus), "memory": self.memory}
        if self.gpus:
            amounts["nvidia.com/gpu"] = str(self.gpus)
        return {"requests": dict(amounts), "limits": dict(amounts)}

    @property
    def memory_bytes(self) -> int:
        return quantity_bytes(self.memory, "--memory-per-node")

    @property
    def object_store_bytes(self) -> int:
        """Ray's object store lives in /dev/shm: half of it, the rest is left to NCCL and torch."""
        return quantity_bytes(self.shm, "--shm-size") // 2


@dataclass(frozen=True)
class Deployment:
    workload: str  # "ppo": python -m harness.main_ppo on a Ray cluster | "sft": torchrun ranks
    config_file: str
    name: str
    namespace: str
    image: str
    workdir: str  # the harness checkout inside the image (entry points and configs are relative to it)
    nodes: int
    ranks_per_node: int  # GPUs per node, or CPU ranks on CPU-only pods
    pod: PodShape
    volume_claim: str  # a ReadWriteMany PersistentVolumeClaim: models, data, checkpoints
    mount_path: str
    entrypoint: str  # one shell command line
    env: Dict[str, str] = field(default_factory=dict)
    ttl_seconds: int = 3600

    @property
    def worker_replicas(self) -> int:
        """Ray worker pods: the head is one of the training nodes (it has the same GPUs), as on Slurm.
        A CPU-only head would also receive the rollout engine (a zero-CPU actor lands beside the driver)
        without a GPU to run SGLang on."""
        return self.nodes - 1

    @property
    def head_command(self) -> str:
        return self._ray_start(["--head", "--port=${RAY_PORT}", "--dashboard-host=0.0.0.0",
                                "--dashboard-port=${RAY_DASHBOARD_PORT}", "--include-dashboard=true",
                                "--ray-client-server-port=${RAY_CLIENT_PORT}"])

    @property
    def worker_command(self) -> str:
        # FQ_RAY_IP (the head service's name) is set by KubeRay in every worker pod.
        return self._ray_start(["--address=${FQ_RAY_IP}:${RAY_PORT}"])

    def _ray_start(self, role_flags: List[str]) -> str:
        flags = role_flags + [
            "--block", "--node-ip-address=${POD_IP}", f"--num-cpus={self.pod.cpus}", f"--num-gpus={self.pod.gpus}",
            f"--memory={self.pod.memory_bytes}", f"--object-store-memory={self.pod.object_store_bytes}",
            "--dashboard-agent-listen-port=${RAY_DASHBOARD_AGENT_PORT}", "--metrics-export-port=${RAY_METRICS_PORT}",
            "--min-worker-port=${RAY_MIN_WORKER_PORT}", "--max-worker-port=${RAY_MAX_WORKER_PORT}",
            "--disable-usage-stats",
        ]
        # KubeRay keeps a container command that contains `ray start` as it is (it generates one otherwise).
        return "ulimit -n 65536; exec ray start " + " ".join(flags)

    @property
    def training_command(self) -> str:
        """What each SFT pod runs: one torchrun per node; JOB_COMPLETION_INDEX comes from the Indexed Job."""
        return f"exec {self.entrypoint}"


def quantity_bytes(quantity: str, flag: str) -> int:
    from kubernetes.utils import parse_quantity

    try:
        value = int(parse_quantity(quantity))
    except ValueError:
        raise LayoutError(f"{flag} {quantity!r}: not a Kubernetes quantity (e.g. 800Gi)") from None
    if value <= 0:
        raise LayoutError(f"{flag} {quantity!r}: must be positive")
    return value


def workload_of(config_file: str) -> str:
    """ppo for main_ppo configs (they have an `actor_rollout_ref` or `algorithm` block), sft otherwise."""
    path = Path(config_file)
    if not path.is_file():
        raise LayoutError(f"{config_file}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise LayoutError(f"{config_file}: not YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise LayoutError(f"{config_file}: not a mapping of config keys")
    return "ppo" if {"actor_rollout_ref", "algorithm", "critic"} & set(data) else "sft"


def image_path(config_file: str) -> str:
    """The config as the pods see it: relative to the checkout (--workdir) when it is one of the repo's
    files, as given otherwise (then it must be at that path in the pods, e.g. on the shared volume)."""
    path = Path(config_file).resolve()
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else config_file


def default_name(config_file: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", Path(config_file).stem.lower()).strip("-")


def command_line(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(part) for part in argv)


def plan(config_file: str, overrides: Sequence[str] = (), *, nodes: Optional[int] = None,
         ranks_per_node: Optional[int] = None, device: str = "cuda", cpus_per_node: int = 64,
         memory_per_node: str = "800Gi", shm_size: str = "256Gi", image: str = "harness:latest",
         workdir: str = "/workspace/harness", namespace: str = "default", name: Optional[str] = None,
         volume_claim: str = "harness-shared", mount_path: str = "/shared", ttl_seconds: int = 3600) -> Deployment:
    """The deployment of `config_file` + `overrides` on `nodes` pods; `ranks_per_node` defaults to the
    config's `trainer.n_gpus_per_node` (main_ppo) or 8 (SFT). `device=cpu` gives CPU-only pods
    (`ranks_per_node` CPU ranks each)."""
    workload = workload_of(config_file)
    config_file = image_path(config_file)
    if device not in ("cuda", "cpu"):
        raise LayoutError(f"--device {device!r}: choose cuda or cpu")
    for flag, value in (("--nodes", nodes), ("--gpus-per-node", ranks_per_node), ("--cpus-per-node", cpus_per_node)):
        if value is not None and value < 1:
            raise LayoutError(f"{flag} {value}: must be at least 1")
    name = name or default_name(config_file)
    if workload == "ppo" and (len(name) > MAX_RAYJOB_NAME or not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)):
        raise LayoutError(f"--name {name!r}: a RayJob name is a DNS-1035 label of at most {MAX_RAYJOB_NAME} characters")
    planner = _plan_ppo if workload == "ppo" else _plan_sft
    nodes, ranks_per_node, entrypoint = planner(config_file, list(overrides), nodes, ranks_per_node, device)
    pod = PodShape(gpus=ranks_per_node if device == "cuda" else 0, cpus=cpus_per_node, memory=memory_per_node,
                   shm=shm_size)
    if pod.object_store_bytes >= pod.memory_bytes:
        raise LayoutError(f"--shm-size {shm_size}: /dev/shm counts against the pod's memory ({memory_per_node})")
    env = {"PYTHONUNBUFFERED": "1", **(NCCL_ENV if pod.gpus else {})}
    if workload == "sft":
        env.update(MASTER_ADDR=f"{name}-0.{name}", MASTER_PORT=str(TORCHRUN_PORT))
    else:
        env.update(RAY_ENV)
        env.update({key: str(port) for key, port in RAY_PORTS.items()})
    return Deployment(workload=workload, config_file=config_file, name=name, namespace=namespace, image=image,
                      workdir=workdir, nodes=nodes, ranks_per_node=ranks_per_node, pod=pod, volume_claim=volume_claim,
                      mount_path=mount_path, entrypoint=entrypoint, env=env, ttl_seconds=ttl_seconds)


def _load(schema, config_file: str, overrides: List[str]):
    from harness.config.loader import ConfigError, load_config

    readable = config_file if Path(config_file).is_file() else str(REPO / config_file)
    try:
        return load_config(schema, readable, overrides)
    except (ConfigError, ValueError, TypeError) as error:
        raise LayoutError(f"{config_file}: {error}") from None


def _fits_node(config_file: str, key: str, size: int, ranks_per_node: int, what: str) -> None:
    if size > ranks_per_node or ranks_per_node % size:
        raise LayoutError(f"{config_file}: {key}={size} does not divide the {ranks_per_node} ranks per node "
                          f"(--gpus-per-node): {what} must not span nodes")


def _plan_ppo(config_file, overrides, nodes, ranks_per_node, device):
    from harness.config.rl import RLConfig

    base = _load(RLConfig, config_file, overrides)
    nodes = nodes or base.trainer.nnodes
    ranks_per_node = ranks_per_node or base.trainer.n_gpus_per_node
    arr = base.actor_rollout_ref
    models = [("actor_rollout_ref.actor.megatron", arr.actor.megatron)]
    if base.critic.enable:
        models.append(("critic.megatron", base.critic.megatron))
    if base.reward_model.enable:
        models.append(("reward_model.megatron", base.reward_model.megatron))
    for key, parallel in models:
        _fits_node(config_file, f"{key}.tensor_model_parallel_size", parallel.tensor_model_parallel_size,
                   ranks_per_node, "tensor-parallel groups")
    if arr.rollout.name == "sglang":
        _fits_node(config_file, "actor_rollout_ref.rollout.tensor_model_parallel_size",
                   arr.rollout.tensor_model_parallel_size, ranks_per_node, "an SGLang server")
    # The manifest's numbers win over the file's, so the two cannot disagree; the driver joins the
    # pods' Ray cluster (RAY_ADDRESS is set for it by the job server). Loading again checks the world.
    overrides = overrides + [f"trainer.nnodes={nodes}", f"trainer.n_gpus_per_node={ranks_per_node}",
                             f"trainer.device={device}", "ray_init.address=auto"]
    _load(RLConfig, config_file, overrides)
    return nodes, ranks_per_node, command_line(["python", "-m", "harness.main_ppo", "--config", config_file,
                                                *overrides])


def _plan_sft(config_file, overrides, nodes, ranks_per_node, device):
    from harness.config.sft import SFTConfig

    config = _load(SFTConfig, config_file, overrides)
    nodes, ranks_per_node = nodes or 1, ranks_per_node or 8
    parallel = config.megatron
    _fits_node(config_file, "megatron.tensor_model_parallel_size", parallel.tensor_model_parallel_size, ranks_per_node,
               "tensor-parallel groups")
    try:
        parallel.data_parallel_size(nodes * ranks_per_node)
    except ValueError as error:
        raise LayoutError(f"{config_file}: megatron: {error} ({nodes} nodes x {ranks_per_node} ranks)") from None
    launcher = (f"torchrun --nnodes={nodes} --nproc-per-node={ranks_per_node} --node-rank=${{JOB_COMPLETION_INDEX}} "
                "--master-addr=${MASTER_ADDR} --master-port=${MASTER_PORT}")
    return nodes, ranks_per_node, f"{launcher} {command_line(['-m', 'harness.main_sft', '--config', config_file, *overrides])}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The deployment's flags (render.py and launchers/nemo_run share them); each defaults to an
    environment variable, then to the value shown."""
    env = os.environ.get
    add = parser.add_argument
    add("--config", default=env("HARNESS_CONFIG"), help="a configs/*.yaml file (main_ppo or main_sft) [$HARNESS_CONFIG]")
    add("--nodes", type=int, default=_int_env("HARNESS_NODES"),
        help="nodes (pods) [$HARNESS_NODES; default: trainer.nnodes, or 1 for SFT]")
    add("--gpus-per-node", type=int, default=_int_env("HARNESS_GPUS_PER_NODE"),
        help="GPUs per node, or CPU ranks with --device cpu [$HARNESS_GPUS_PER_NODE; default: "
             "trainer.n_gpus_per_node, or 8 for SFT]")
    add("--device", default=env("HARNESS_DEVICE", "cuda"), help="cuda or cpu (CPU-only nodes) [$HARNESS_DEVICE; cuda]")
    add("--cpus-per-node", type=int, default=_int_env("HARNESS_CPUS_PER_NODE", 64),
        help="CPUs per pod [$HARNESS_CPUS_PER_NODE; 64]")
    add("--memory-per-node", default=env("HARNESS_MEMORY_PER_NODE", "800Gi"), help="memory per pod [800Gi]")
    add("--shm-size", default=env("HARNESS_SHM_SIZE", "256Gi"), help="/dev/shm per pod, part of its memory [256Gi]")
    add("--image", default=env("HARNESS_IMAGE"),
        help="container image with the harness at --workdir [$HARNESS_IMAGE; Kubernetes: harness:latest; "
             "Slurm: none (plain Slurm), else pyxis/enroot]")
    add("--workdir", default=env("HARNESS_WORKDIR", "/workspace/harness"), help="the harness checkout in the image")
    add("--namespace", default=env("HARNESS_NAMESPACE", "default"), help="Kubernetes namespace [default]")
    add("--name", default=None, help="job name [default: from the config file name]")
    add("--volume-claim", default=env("HARNESS_VOLUME_CLAIM", "harness-shared"),
        help="a ReadWriteMany PersistentVolumeClaim [$HARNESS_VOLUME_CLAIM; harness-shared]")
    add("--mount-path", default=env("HARNESS_MOUNT_PATH", "/shared"), help="where it is mounted [/shared]")
    add("--ttl-seconds", type=int, default=3600, help="how long a finished job's pods stay [3600]")


def _int_env(name: str, default: Optional[int] = None) -> Optional[int]:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise LayoutError(f"${name}={value!r}: not an integer") from None


def plan_from_arguments(args: argparse.Namespace, overrides: Sequence[str]) -> Deployment:
    if not args.config:
        raise LayoutError("--config is required (or $HARNESS_CONFIG)")
    return plan(args.config, overrides, nodes=args.nodes, ranks_per_node=args.gpus_per_node, device=args.device,
                cpus_per_node=args.cpus_per_node, memory_per_node=args.memory_per_node, shm_size=args.shm_size,
                image=args.image or "harness:latest", workdir=args.workdir, namespace=args.namespace, name=args.name,
                volume_claim=args.volume_claim, mount_path=args.mount_path, ttl_seconds=args.ttl_seconds)
