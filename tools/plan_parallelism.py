"""Memory and throughput planner: does a layout fit, and which layouts fit best.

    python tools/plan_parallelism.py --model HF_DIR|NAME [--config CONFIG.yaml] --gpus 32 --gpu-mem 80
        [--gpus-per-node 8] [--placement colocate|split] [--json]
        [--workload grpo|ppo|sft|CONFIG.yaml] [--gpu H100|H200|A100|B200] [--device cuda|cpu] [key=value ...]

With --config, that config's layout, batch sizes and lengths are evaluated: exit 0 when it fits,
1 when it does not (the reasons are printed). Without it, layouts are proposed for the workload
(default: GRPO with the batch sizes and lengths of configs/grpo_qwen2.5_32b.yaml; --workload FILE
for another config's) and ranked by
predicted step time; exit 0 when one fits. NAME is one of the published configs the planner ships
(harness/planning/catalog.py). Bad input gets one line and exit 2.
"""
import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.config.loader import ConfigError, load_config  # noqa: E402
from harness.config.rl import RLConfig  # noqa: E402
from harness.config.sft import SFTConfig  # noqa: E402
from harness.models.hf_config import UnsupportedModelError, load_model_spec  # noqa: E402
from harness.planning import catalog, cluster as clusters, plan as planner, proposals as proposer, report  # noqa: E402
from harness.planning.parameters import total_parameters  # noqa: E402
from harness.planning.step_time import Assumptions  # noqa: E402

DEFAULT_WORKLOADS = {
    "grpo": REPO / "configs" / "grpo_qwen2.5_32b.yaml",
    "ppo": REPO / "configs" / "ppo_qwen2.5_32b.yaml",
    "sft": REPO / "configs" / "sft_qwen2.5_32b.yaml",
}


class BadInput(ValueError):
    pass


def read_model(model: str):
    """An HF directory (or config.json), else a catalogue name."""
    if os.path.exists(model):
        try:
            return load_model_spec(model), model
        except (FileNotFoundError, ValueError) as error:  # includes UnsupportedModelError
            raise BadInput(str(error)) from None
    config = catalog.known_model_config(model)
    if config is None:
        raise BadInput(f"--model {model}: no such directory, and not a known model name "
                       f"(known: {', '.join(catalog.KNOWN_MODELS)})")
    return load_model_spec(config), model


def read_config(path: str, model: str, overrides_given=()):
    """(RLConfig or SFTConfig) from `path` and `key=value` overrides; the model and data paths are
    filled in (never opened)."""
    if not os.path.isfile(path):
        raise BadInput(f"{path}: config file not found")
    from omegaconf import OmegaConf

    keys = set(OmegaConf.load(path).keys())
    if "actor_rollout_ref" in keys:
        overrides = ["data.train_files=planner-unused"]
        if OmegaConf.select(OmegaConf.load(path), "actor_rollout_ref.model.path") is None:
            overrides.append(f"actor_rollout_ref.model.path={model}")
        schema = RLConfig
    else:
        overrides = ["data.train_files=planner-unused", f"model.partial_pretrain={model}"]
        schema = SFTConfig
    try:
        return load_config(schema, path, overrides + list(overrides_given))
    except ConfigError as error:
        raise BadInput(str(error)) from None


def build_cluster(args) -> clusters.Cluster:
    problem = clusters.check_cluster_sizes(args.gpus, args.gpu_mem, args.gpus_per_node)
    if problem:
        raise BadInput(problem)
    if args.device == "cpu":
        return clusters.Cluster(num_gpus=args.gpus, gpu_mem_gb=args.gpu_mem, gpus_per_node=args.gpus_per_node,
                                kernels=clusters.CPU_KERNELS, process_overhead_gb=0.0, fragmentation=0.0,
                                device="cpu")
    gpu = clusters.gpu_type_for(args.gpu, args.gpu_mem)
    return clusters.Cluster(num_gpus=args.gpus, gpu_mem_gb=args.gpu_mem, gpus_per_node=args.gpus_per_node, gpu=gpu)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an HF model directory or a known model name")
    parser.add_argument("--config", help="evaluate this config's layout (exit 0 fits, 1 does not)")
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("--gpu-mem", type=float, default=80.0, help="GB per GPU")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--placement", choices=("colocate", "split"), help="default: the config's, else colocate")
    parser.add_argument("--workload", default="grpo",
                        help="without --config: grpo, ppo, sft (the 32B configs' batch sizes and lengths) or a "
                             "config file whose batch sizes and lengths to plan for (its layout is not used)")
    parser.add_argument("--gpu", default="H100", help="GPU type for the step-time model (H100, H200, A100, B200)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: plan for gloo ranks with the CPU kernels (--gpu-mem is RAM per rank)")
    defaults = Assumptions()
    parser.add_argument("--mfu", type=float, default=defaults.train_mfu, help="training MFU of the step-time model")
    parser.add_argument("--prompt-fill", type=float, default=defaults.prompt_fill,
                        help="mean prompt length / data.max_prompt_length")
    parser.add_argument("--response-fill", type=float, default=defaults.response_fill,
                        help="mean response length / data.max_response_length")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the config, as the trainers take them")
    args = parser.parse_args(argv)
    try:
        spec, model = read_model(args.model)
        cluster = build_cluster(args)
        config = read_config(args.config or str(DEFAULT_WORKLOADS.get(args.workload, args.workload)), model,
                             args.overrides)
    except BadInput as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name in ("mfu", "prompt_fill", "response_fill"):
        value = getattr(args, name)
        if not 0 < value <= 1:
            print(f"error: --{name.replace('_', '-')} {value}: must be within (0, 1]", file=sys.stderr)
            return 2
    assumptions = Assumptions(train_mfu=args.mfu, prompt_fill=args.prompt_fill, response_fill=args.response_fill)
    is_rl = isinstance(config, RLConfig)
    placement = args.placement or (config.trainer.placement if is_rl else None)
    if is_rl and args.placement and args.config and args.placement != config.trainer.placement:
        print(f"error: --placement {args.placement} but {args.config} sets trainer.placement="
              f"{config.trainer.placement}", file=sys.stderr)
        return 2
    title = report.header(model, total_parameters(spec), cluster)
    if args.config:
        plan = (planner.evaluate_rl if is_rl else planner.evaluate_sft)(config, spec, cluster, assumptions)
        if args.json:
            print(json.dumps({"model": model, **report.plan_json(plan),
                              "assumptions": report.assumptions_json(assumptions, cluster)}, indent=1))
        else:
            print("\n".join(report.plan_text(plan, f"{title}\nconfig {args.config}")))
        return 0 if plan.fits else 1
    proposals = (proposer.propose_rl(config, spec, cluster, placement, assumptions) if is_rl
                 else proposer.propose_sft(config, spec, cluster, assumptions))
    best = proposals.ranked[0] if proposals.ranked else None
    if args.json:
        summary = report.plan_json(best) if best else {"fits": False, "layout": None, "per_gpu_gb": {},
                                                       "reasons": [why for _, why in proposals.rejected]}
        print(json.dumps({"model": model, **summary,
                          "proposals": [report.plan_json(p) for p in proposals.ranked],
                          "rejected": [{"layout": k, "reason": why} for k, why in proposals.rejected],
                          "assumptions": report.assumptions_json(assumptions, cluster)}, indent=1))
    else:
        workload = DEFAULT_WORKLOADS.get(args.workload, args.workload)
        print(f"{title}\nworkload: batch sizes and lengths of {workload}"
              + (f", placement {placement}" if is_rl else ""))
        print("\n".join(report.proposals_text(proposals)))
    return 0 if best else 1


if __name__ == "__main__":
    sys.exit(main())
