"""A plan as text (a table per GPU) or as one JSON object."""
from typing import List, Optional

from harness.planning.cluster import GB, Cluster
from harness.planning.plan import Plan
from harness.planning.proposals import Proposals
from harness.planning.step_time import Assumptions


def layout_line(plan: Plan) -> str:
    layout = plan.layout
    parts = []
    for role in ("model", "actor", "critic"):
        if role in layout:
            p = layout[role]
            text = f"{role} TP={p['tp']} PP={p['pp']}" + (f" VPP={p['vpp']}" if p["vpp"] else "") + f" DP={p['dp']}"
            text += " SP" if p["sequence_parallel"] else ""
            text += f", recompute {p['recompute'] or 'none'}"
            text += ", distributed optimizer" if p["distributed_optimizer"] else ", plain optimizer"
            text += f", micro-batch {p['micro_batch']}"
            parts.append(text)
    rollout = layout.get("rollout")
    if rollout and rollout["mem_fraction_static"] is not None:
        parts.append(f"rollout TP={rollout['tp']} x {rollout['servers']} server(s), mem_fraction_static "
                     f"{rollout['mem_fraction_static']:.2f} ({rollout['kv_tokens_per_server']} KV tokens per server)")
    elif rollout:
        parts.append(f"rollout {rollout['engine']} engine")
    if layout.get("placement"):
        parts.append(f"{layout['placement']}: {layout['train_gpus']} training GPUs"
                     + (f" + {layout['rollout_gpus']} rollout GPUs" if layout.get("rollout_gpus") else ""))
    return "; ".join(parts)


def memory_table(plan: Plan) -> List[str]:
    lines = [f"  {'role':<13} {'kind':<17} {'GB':>8}"]
    for role, kinds in plan.per_gpu.by_role().items():
        for kind, value in kinds.items():
            lines.append(f"  {role:<13} {kind.replace('_', ' '):<17} {value / GB:>8.2f}")
    lines.append(f"  {'total':<31} {plan.per_gpu_gb:>8.2f}  of {plan.gpu_mem_gb:g}")
    return lines


def step_line(plan: Plan) -> Optional[str]:
    step = plan.step
    if not step:
        return None
    phases = ", ".join(f"{key[:-2].replace('_', ' ')} {value:.0f} s" for key, value in step.items()
                       if key.endswith("_s") and key != "step_s")
    text = f"predicted step (a model, not a measurement): {step['step_s']:.0f} s"
    if phases:
        text += f" ({phases})"
    return text + f", {step['tokens_per_s_per_gpu']:.0f} tokens/s/GPU"


def plan_text(plan: Plan, title: str) -> List[str]:
    lines = [title, f"layout: {layout_line(plan)}"]
    verdict = "fits" if plan.fits else "does NOT fit"
    lines.append(f"{verdict}: fullest GPU {plan.per_gpu_gb:.1f} GB of {plan.gpu_mem_gb:g} GB")
    lines += memory_table(plan)
    lines += [f"  ({note})" for note in plan.per_gpu.notes]
    step = step_line(plan)
    if step:
        lines.append(step)
    lines += [f"reason: {reason}" for reason in plan.reasons]
    return lines


def proposals_text(proposals: Proposals) -> List[str]:
    lines = []
    for rank, plan in enumerate(proposals.ranked, 1):
        lines += [""] + plan_text(plan, f"proposal {rank}")
    if not proposals.ranked:
        lines.append("no layout fits")
    if proposals.rejected:
        lines += ["", "rejected layouts (their smallest variant):"]
        lines += [f"  {layout}: {why}" for layout, why in proposals.rejected]
    return lines


def plan_json(plan: Plan) -> dict:
    return {
        "fits": plan.fits,
        "layout": plan.layout,
        "per_gpu_gb": {role: {kind: round(v / GB, 3) for kind, v in kinds.items()}
                       for role, kinds in plan.per_gpu.by_role().items()},
        "per_gpu_total_gb": round(plan.per_gpu_gb, 3),
        "gpu_mem_gb": plan.gpu_mem_gb,
        "reasons": plan.reasons,
        "notes": plan.per_gpu.notes,
        "step": {k: round(v, 3) for k, v in plan.step.items()},
    }


def header(model: str, parameters: float, cluster: Cluster) -> str:
    size = f"{parameters / 1e9:.2f}B" if parameters >= 1e8 else f"{parameters / 1e6:.2f}M"
    devices = (f"{cluster.num_gpus} CPU ranks x {cluster.gpu_mem_gb:g} GB" if cluster.device == "cpu" else
               f"{cluster.num_gpus} x {cluster.gpu_mem_gb:g} GB ({cluster.gpu.name})")
    return (f"model {model} ({size} parameters) on {devices}, {cluster.gpus_per_node} per node; kernels: attention "
            f"{cluster.kernels.attention}, norm {cluster.kernels.norm}, adam {cluster.kernels.adam}")


def assumptions_json(assumptions: Assumptions, cluster: Cluster) -> dict:
    return {**assumptions.as_dict(), "process_overhead_gb": cluster.process_overhead_gb,
            "fragmentation": cluster.fragmentation, "gpu": cluster.gpu.name,
            "gpu_bf16_tflops": cluster.gpu.bf16_tflops, "gpu_hbm_tb_s": cluster.gpu.hbm_tb_s}
