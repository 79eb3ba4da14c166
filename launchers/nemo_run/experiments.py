"""NeMo-Run experiments of the harness: what launchers/nemo_run/sft.py and grpo.py share.

Each experiment's task is a harness entry point (`python -m harness.main_sft` / `harness.main_ppo`
as a `run.Script`), so NeMo-Run gives status, logs and `Experiment.from_id` for free. Executors:
- local: this machine (torchrun for several SFT ranks; main_ppo starts a private Ray cluster);
- slurm: `sbatch` through a LocalTunnel when this is the login node (sbatch on PATH), else an
  SSHTunnel to --tunnel-host. Plain Slurm works (no pyxis needed; --image turns pyxis on). The GRPO
  task brings Ray up with launchers/slurm/ray_cluster.sh, the script launchers/grpo_32b.sbatch runs;
- kuberay (GRPO): a RayJob built by NeMo-Run's KubeRayExecutor from the numbers of
  launchers/k8s/layout.py, the same as the rendered manifests.
Settings come from flags, each defaulting to an environment variable, then to a documented value
(`--help`). Bad settings get one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import getpass
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # runnable from a checkout without installing

from launchers.k8s.layout import LayoutError, add_arguments  # noqa: E402

RAY_ON_SLURM = "launchers/slurm/ray_cluster.sh"  # Ray over the current allocation, then COMMAND on the head


class LaunchError(ValueError):
    """A setting the experiment cannot be built from (one line, naming the flag and its variable)."""


def parser(entry: str, executors: Sequence[str]) -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog=f"launchers/nemo_run/{entry}.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--executor", default=env("HARNESS_EXECUTOR", "local"),
                   help=f"{' | '.join(executors)} [$HARNESS_EXECUTOR; local]")
    p.add_argument("--experiment", default=None, help=f"experiment title [harness-{entry}]")
    p.add_argument("--detach", action="store_true", help="return once submitted (default: wait and report)")
    p.add_argument("--dryrun", action="store_true", help="print what would be submitted, submit nothing")
    add_arguments(p)
    slurm = p.add_argument_group("slurm")
    slurm.add_argument("--partition", default=env("HARNESS_SLURM_PARTITION"),
                       help="[$HARNESS_SLURM_PARTITION; the cluster's default partition]")
    slurm.add_argument("--account", default=env("HARNESS_SLURM_ACCOUNT"),
                       help="[$HARNESS_SLURM_ACCOUNT; your default account]")
    slurm.add_argument("--time", default=env("HARNESS_SLURM_TIME", "04:00:00"), help="[$HARNESS_SLURM_TIME; 04:00:00]")
    slurm.add_argument("--tunnel-host", default=env("HARNESS_TUNNEL_HOST"),
                       help="the login node to sbatch through over SSH [$HARNESS_TUNNEL_HOST; none: this machine "
                            "is the login node]")
    slurm.add_argument("--tunnel-user", default=env("HARNESS_TUNNEL_USER", getpass.getuser()),
                       help="[$HARNESS_TUNNEL_USER; $USER]")
    slurm.add_argument("--tunnel-identity", default=env("HARNESS_TUNNEL_IDENTITY"),
                       help="SSH private key [$HARNESS_TUNNEL_IDENTITY; the SSH agent's]")
    slurm.add_argument("--job-dir", default=env("HARNESS_JOB_DIR"),
                       help="experiments folder on the cluster's shared filesystem [$HARNESS_JOB_DIR; required "
                            "with --tunnel-host; $NEMORUN_HOME/experiments on the login node]")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value (verl style)")
    return p


def parse(entry: str, executors: Sequence[str], argv: Optional[List[str]]) -> argparse.Namespace:
    args = parser(entry, executors).parse_args(argv)
    if args.executor not in executors:
        raise LaunchError(f"--executor {args.executor!r} ($HARNESS_EXECUTOR): unknown; choose from "
                          f"{', '.join(executors)}")
    if not args.config:
        raise LaunchError("--config is required (or $HARNESS_CONFIG)")
    if not Path(args.config).is_file():
        raise LaunchError(f"--config {args.config}: file not found")
    args.experiment = args.experiment or f"harness-{entry}"
    return args


def local_executor(args):
    if (args.nodes or 1) > 1:
        raise LaunchError(f"--nodes {args.nodes}: the local executor runs on this machine only (one node)")
    import nemo_run as run

    # The task runs in its job folder; torchrun / python are this environment's.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return run.LocalExecutor(env_vars={"PYTHONUNBUFFERED": "1"})


def tunnel(args):
    """LocalTunnel on the login node (sbatch here), SSHTunnel to --tunnel-host otherwise."""
    if args.tunnel_host and not args.job_dir:
        raise LaunchError("slurm executor: --job-dir ($HARNESS_JOB_DIR) is required with --tunnel-host: the "
                          "experiments folder on the cluster's shared filesystem")
    if not args.tunnel_host and shutil.which("sbatch") is None:
        raise LaunchError("slurm executor: no sbatch on this machine and no --tunnel-host ($HARNESS_TUNNEL_HOST): "
                          "run on the cluster's login node, or name it to submit over SSH")
    import nemo_run as run

    if args.tunnel_host:
        return run.SSHTunnel(host=args.tunnel_host, user=args.tunnel_user, job_dir=args.job_dir,
                             identity=args.tunnel_identity)
    home = Path(os.environ.get("NEMORUN_HOME", Path.home() / ".nemo_run"))
    # LocalTunnel copies nothing: its job folder must be the experiments root NeMo-Run writes to.
    return run.LocalTunnel(job_dir=args.job_dir or str(home / "experiments"))


def slurm_executor(args, nodes: int, tasks_per_node: int, gpus_per_node: Optional[int], **extra):
    submit_through = tunnel(args)
    import nemo_run as run

    return run.SlurmExecutor(
        account=args.account, partition=args.partition, time=args.time, nodes=nodes, ntasks_per_node=tasks_per_node,
        job_name_prefix="harness-",  # NeMo-Run 0.11.1 otherwise derives it from the account (which may be unset)
        gpus_per_node=gpus_per_node, container_image=args.image, tunnel=submit_through,
        # The job runs the checkout it was submitted from (its committed HEAD), unpacked on the cluster.
        packager=run.GitArchivePackager(), env_vars={"PYTHONUNBUFFERED": "1"}, **extra)


def entry_config(args) -> str:
    """The config as the task sees it: absolute on this machine (local), the checkout's path otherwise."""
    path = Path(args.config).resolve()
    if args.executor == "local" or not path.is_relative_to(ROOT):
        return str(path)
    return path.relative_to(ROOT).as_posix()


def run_experiment(args, task, executor, task_name: str) -> int:
    """Runs `task` as one experiment; waits (unless --detach) and exits 0 only if it SUCCEEDED."""
    import nemo_run as run

    with run.Experiment(args.experiment) as experiment:
        experiment.add(task, executor=executor, name=task_name)
        if args.dryrun:
            experiment.dryrun(delete_exp_dir=True)
            return 0
        experiment.run(sequential=True, detach=args.detach, tail_logs=False)
        experiment_id = experiment._id
    if args.detach:
        print(f"submitted: experiment {experiment_id}")
        return 0
    status = run.Experiment.from_id(experiment_id).status(return_dict=True) or {}
    state = str(status.get(task_name, {}).get("status", "UNKNOWN")).split(" ")[0]
    print(f"experiment {experiment_id}: {task_name} {state}")
    print(f"logs: nemo experiment logs {experiment_id} 0")
    return 0 if state == "SUCCEEDED" else 1


def main(build, entry: str, executors: Sequence[str], argv=None) -> int:
    """`build(args) -> exit code`, with bad settings turned into one line and exit code 2."""
    try:
        return build(parse(entry, executors, argv))
    except (LaunchError, LayoutError) as error:
        print(f"{entry}: {error}", file=sys.stderr)
        return 2
