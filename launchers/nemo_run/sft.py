"""SFT as a NeMo-Run experiment: `python -m harness.main_sft` on one machine or a Slurm allocation.

    python launchers/nemo_run/sft.py --executor local --config configs/sft_tiny_cpu.yaml --gpus-per-node 2 \\
        data.train_files=... data.val_files=... model.partial_pretrain=...
    python launchers/nemo_run/sft.py --executor slurm --config configs/sft_qwen2.5_32b.yaml --nodes 4 \\
        --gpus-per-node 8 [--partition P] [--account A] [--tunnel-host LOGIN --job-dir DIR] key=value ...

One torchrun per node (NeMo-Run's torchrun launcher: `srun` starts them on Slurm, with the first
node as the rendezvous). `--help` lists every setting and its environment variable.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from launchers.k8s.layout import command_line  # noqa: E402
from launchers.nemo_run.experiments import entry_config, local_executor, main, run_experiment, slurm_executor  # noqa: E402

EXECUTORS = ("local", "slurm")


def build(args) -> int:
    ranks = args.gpus_per_node or (1 if args.device == "cpu" else 8)
    entry = ["-m", "harness.main_sft", "--config", entry_config(args), *args.overrides]
    if args.executor == "local":
        executor = local_executor(args)
    else:
        # One torchrun per node; NeMo-Run's torchrun launcher has srun start them, node 0 the rendezvous.
        executor = slurm_executor(args, nodes=args.nodes or 1, tasks_per_node=1,
                                  gpus_per_node=ranks if args.device == "cuda" else None, launcher="torchrun",
                                  torchrun_nproc_per_node=ranks)
    import nemo_run as run

    if args.executor == "local":
        # torchrun in the task itself: NeMo-Run 0.11.1's local torchrun launcher hands shell-quoted
        # arguments to a process without a shell (`trainer.logger=[console]` arrives with its quotes).
        task = run.Script(inline=f"exec torchrun --standalone --nproc-per-node {ranks} {command_line(entry)}")
    else:
        task = run.Script(path="harness.main_sft", m=True, entrypoint="python", args=entry[2:])
    return run_experiment(args, task, executor, "sft")


if __name__ == "__main__":
    sys.exit(main(build, "sft", EXECUTORS))
