"""The planner's verdict before a run starts (harness/planning): on CUDA a config that cannot fit on
the GPUs this process sees is refused, with the planner's explanation, before any model or process
group exists; on CPU the plan is only shown. `trainer.skip_memory_check=true` skips it."""
import os
import sys


def memory_check(config) -> bool:
    """True when the run may start; otherwise the refusal has been printed (exit with 2)."""
    from harness.config.rl import RLConfig
    from harness.models.hf_config import load_model_spec
    from harness.parallel import platform
    from harness.planning import cluster as clusters
    from harness.planning import evaluate_rl, evaluate_sft
    from harness.planning.cluster import GB

    if config.trainer.skip_memory_check:
        _say("memory check skipped (trainer.skip_memory_check=true)")
        return True
    rl = isinstance(config, RLConfig)
    model_path = config.actor_rollout_ref.model.path if rl else config.model.partial_pretrain
    try:
        spec = load_model_spec(model_path)
    except (OSError, ValueError) as error:  # the run's own loading reports it
        _say(f"memory check skipped: {error}")
        return True
    evaluate = evaluate_rl if rl else evaluate_sft
    world = _world_size(config, rl)
    gpus = platform.visible_gpus()
    if not gpus:
        plan = evaluate(config, spec, clusters.cpu_cluster(world))
        _say(f"memory plan (CPU, not enforced): {plan.per_gpu_gb:.2f} GB per rank at the peak "
             f"({'; '.join(plan.per_gpu.notes)})")
        return True
    name, memory = min(gpus, key=lambda gpu: gpu[1])
    kernels = clusters.TE_KERNELS if platform.has_transformer_engine() else clusters.Kernels(
        attention="unfused", norm="torch", adam="fused" if platform.has_apex_or_te_adam() else "foreach")
    per_node = config.trainer.n_gpus_per_node if rl else int(os.environ.get("LOCAL_WORLD_SIZE") or len(gpus))
    cluster = clusters.Cluster(num_gpus=world, gpu_mem_gb=memory / GB, gpus_per_node=per_node,
                               gpu=clusters.gpu_type_for(name, memory / GB), kernels=kernels)
    plan = evaluate(config, spec, cluster)
    if plan.fits:
        _say(f"memory check: the fullest GPU needs {plan.per_gpu_gb:.1f} of {cluster.gpu_mem_gb:.1f} GB")
        return True
    print("error: memory check: this config does not fit on these GPUs: " + "; ".join(plan.reasons)
          + " (tools/plan_parallelism.py proposes layouts that fit; trainer.skip_memory_check=true runs it anyway)",
          file=sys.stderr)
    return False


def _world_size(config, rl: bool) -> int:
    if rl:
        trainer = config.trainer
        split = trainer.rollout_gpus_per_node if trainer.placement == "split" else 0
        return trainer.nnodes * trainer.n_gpus_per_node + split
    return int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)


def _say(line: str) -> None:
    if os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr)
