"""GRPO (any main_ppo config) as a NeMo-Run experiment: `python -m harness.main_ppo` on Ray.

    python launchers/nemo_run/grpo.py --executor local --config configs/grpo_tiny_cpu.yaml key=value ...
    python launchers/nemo_run/grpo.py --executor slurm --config configs/grpo_qwen2.5_32b.yaml --nodes 4 \\
        [--partition P] [--account A] [--tunnel-host LOGIN --job-dir DIR] key=value ...
    python launchers/nemo_run/grpo.py --executor kuberay --config configs/grpo_qwen2.5_32b.yaml --nodes 4 \\
        [--namespace NS] [--image IMAGE] [--volume-claim PVC] [--dryrun] key=value ...

- local: main_ppo starts a private Ray cluster on this machine.
- slurm: one task on the allocation's first node runs launchers/slurm/ray_cluster.sh, which starts
  Ray on every node of the allocation and then main_ppo on the head (the same bring-up as
  launchers/grpo_32b.sbatch; NeMo-Run's own Ray template needs pyxis and --mpi=pmix).
- kuberay: a RayJob from NeMo-Run's KubeRayExecutor, built from launchers/k8s/layout.py's numbers (the
  rendered manifests' numbers). NeMo-Run 0.11.1 gives the head no GPUs, while the harness's head is a
  training node (see layout.Deployment.worker_replicas): the body is completed with the head's GPUs
  before it is created; `--dryrun` prints it. Status and logs: NeMo-Run's KubeRayJob (`kubectl`).
"""
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from launchers.k8s.layout import RAY_VERSION, plan_from_arguments  # noqa: E402
from launchers.nemo_run.experiments import (RAY_ON_SLURM, ROOT, LaunchError, entry_config,  # noqa: E402
                                            local_executor, main, run_experiment, slurm_executor)

EXECUTORS = ("local", "slurm", "kuberay")


def build(args) -> int:
    if args.executor == "kuberay":
        return submit_rayjob(args)
    if args.executor == "local":
        executor = local_executor(args)
        import nemo_run as run

        task = run.Script(path="harness.main_ppo", m=True, entrypoint="python",
                          args=["--config", entry_config(args), *args.overrides])
        return run_experiment(args, task, executor, "grpo")
    deployment = plan_from_arguments(args, args.overrides)  # the layout checked against the allocation
    if not (ROOT / RAY_ON_SLURM).is_file():
        raise LaunchError(f"{RAY_ON_SLURM}: not in this checkout (the Ray-on-Slurm bring-up the task runs)")
    executor = slurm_executor(args, nodes=deployment.nodes, tasks_per_node=1, gpus_per_node=deployment.pod.gpus or None,
                              # NeMo-Run wraps every task in srun: one task on the first node runs the script,
                              # which starts Ray on every node of the allocation itself.
                              srun_args=["--nodes=1", "--ntasks=1", "--overlap"])
    import nemo_run as run

    task = run.Script(path=RAY_ON_SLURM, entrypoint="bash", args=["--", *shlex.split(deployment.entrypoint)])
    return run_experiment(args, task, executor, "grpo")


def kuberay_executor(deployment):
    """NeMo-Run's KubeRayExecutor with the deployment's numbers (requests == limits everywhere)."""
    from nemo_run.core.execution.kuberay import KubeRayExecutor, KubeRayWorkerGroup

    pod = deployment.pod
    start = {"num-cpus": str(pod.cpus), "num-gpus": str(pod.gpus), "memory": str(pod.memory_bytes),
             "object-store-memory": str(pod.object_store_bytes)}
    volumes = [{"name": "shared", "persistentVolumeClaim": {"claimName": deployment.volume_claim}},
               {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": pod.shm}}]
    mounts = [{"name": "shared", "mountPath": deployment.mount_path}, {"name": "dshm", "mountPath": "/dev/shm"}]
    workers = KubeRayWorkerGroup(group_name="workers", replicas=deployment.worker_replicas,
                                 gpus_per_worker=pod.gpus or None, cpu_requests=str(pod.cpus),
                                 cpu_limits=str(pod.cpus), memory_requests=pod.memory, memory_limits=pod.memory)
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}] if pod.gpus else []
    return KubeRayExecutor(namespace=deployment.namespace, ray_version=RAY_VERSION, image=deployment.image,
                           head_cpu=str(pod.cpus), head_memory=pod.memory, ray_head_start_params=dict(start),
                           ray_worker_start_params=dict(start), worker_groups=[workers], volumes=volumes,
                           volume_mounts=mounts, env_vars=dict(deployment.env),
                           spec_kwargs={"tolerations": tolerations} if tolerations else {})


def rayjob_body(deployment, job) -> dict:
    """The RayJob NeMo-Run builds for `deployment`, completed with what its executor cannot say: GPUs
    for the head (it trains too), the image's checkout as working directory (NeMo-Run sets /workspace),
    the TTL, and no null fields (runtimeEnvYAML)."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # its dry run prints the body too
        body = job.start(command=deployment.entrypoint, dryrun=True)
    cluster = body["spec"]["rayClusterSpec"]
    cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"] = deployment.pod.resources
    for group in [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]:
        for container in group["template"]["spec"]["containers"]:
            container["workingDir"] = deployment.workdir
    body["spec"] = {key: value for key, value in body["spec"].items() if value is not None}
    body["spec"]["ttlSecondsAfterFinished"] = deployment.ttl_seconds
    return body


def submit_rayjob(args) -> int:
    import yaml
    from nemo_run.run.ray.kuberay import KubeRayJob

    deployment = plan_from_arguments(args, args.overrides)
    job = KubeRayJob(name=deployment.name, executor=kuberay_executor(deployment))
    body = rayjob_body(deployment, job)
    if args.dryrun:
        sys.stdout.write(yaml.safe_dump(body, sort_keys=False))
        return 0
    job.api.create_namespaced_custom_object(group="ray.io", version="v1", plural="rayjobs", body=body,
                                            namespace=deployment.namespace)
    print(f"submitted: RayJob {job.job_name} in {deployment.namespace}")
    if args.detach:
        return 0
    job.follow_logs_until_completion(delete_on_finish=False)
    state = job.status(display=False).get("jobStatus", "UNKNOWN")
    print(f"RayJob {job.job_name}: {state}")
    return 0 if state == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main(build, "grpo", EXECUTORS))
