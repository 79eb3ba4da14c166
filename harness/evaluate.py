"""Evaluate a model on RL-format prompts, optionally against a base model, and decide if it is ready for RL.

    python -m harness.evaluate --checkpoint-path DIR --data FILE [--compare-with BASE] [--out DIR]

DIR / BASE: an HF model directory or a harness checkpoint (exported to HF first). Each prompt is
answered greedily, scored by the rule scorer of its row's `data_source`; a table (accuracy, mean
reward, mean response length) is printed and written to `evaluation.json` and `evaluation.md`, with
every prompt's answer and reward (`per_prompt`). With BASE, the accuracy difference is also given
with its paired standard error (both models answer the same prompts).
Ready for RL: accuracy at least `--min-accuracy` (GRPO learns from groups that are sometimes right)
and at most `--max-accuracy` (a solved task leaves nothing to learn).
"""
import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

BATCH_SIZE = 256  # sequences per generation batch


def as_hf_directory(path: str, scratch: str) -> str:
    """An HF model directory for `path`: itself, or its export when it is a harness checkpoint."""
    from harness.checkpoint.torch_dist import MARKER

    if not (Path(path) / MARKER).exists():
        return path
    from harness.checkpoint.convert import mcore_to_hf

    target = Path(scratch) / (Path(path).name + "_hf")
    mcore_to_hf(path, target, force=True)
    return str(target)


def evaluate_model(
    model_dir: str,
    data_file: str,
    max_new_tokens: int = 32,
    limit: Optional[int] = None,
    engine: str = "embedded",
    max_prompt_length: int = 1024,
    samples_per_prompt: int = 0,
    temperature: float = 1.0,
) -> dict:
    """Greedy accuracy; with `samples_per_prompt` also the sampled accuracy at `temperature` (mean@k:
    the policy's own success rate, what RL optimises)."""
    from transformers import AutoTokenizer

    from harness.data import load_rl_dataset
    from harness.reward import score
    from harness.rollout import RolloutConfig, SamplingParams, make_engine

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = load_rl_dataset(data_file, tokenizer, max_prompt_length=max_prompt_length).prompts[:limit]
    greedy = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    with make_engine(RolloutConfig(name=engine, model_path=model_dir, dtype="float32", batch_size=BATCH_SIZE)) as rollout:
        completions = rollout.generate([p.prompt_ids for p in prompts], greedy, n=1)
        sampled = []
        if samples_per_prompt:
            sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=0)
            sampled = rollout.generate([p.prompt_ids for p in prompts], sampling, n=samples_per_prompt)
    sampled_rewards = [score(prompts[c.prompt_index].data_source, tokenizer.decode(c.token_ids, skip_special_tokens=True),
                             prompts[c.prompt_index].ground_truth, prompts[c.prompt_index].extra_info) for c in sampled]
    rewards, lengths, per_prompt = [], [], []
    for prompt, completion in zip(prompts, completions):
        answer = tokenizer.decode(completion.token_ids, skip_special_tokens=True)
        reward = score(prompt.data_source, answer, prompt.ground_truth, prompt.extra_info)
        rewards.append(reward)
        lengths.append(len(completion.token_ids))
        per_prompt.append({"row": prompt.row, "answer": answer, "ground_truth": prompt.ground_truth, "reward": reward})
    if not rewards:
        raise ValueError(f"{data_file}: no prompt to evaluate")
    count = len(rewards)
    return {
        "model": model_dir,
        "prompts": len(rewards),
        "accuracy": sum(r >= 1.0 for r in rewards) / count,
        "mean_reward": sum(rewards) / count,
        "mean_response_length": sum(lengths) / count,
        **({"sampled_accuracy": sum(r >= 1.0 for r in sampled_rewards) / len(sampled_rewards),
            "sampled": f"mean@{samples_per_prompt}, temperature {temperature}"} if sampled_rewards else {}),
        "per_prompt": per_prompt,
    }


def correct(result: dict) -> dict:
    """{row: 1.0 if the greedy answer is right else 0.0} of one evaluation."""
    return {item["row"]: float(item["reward"] >= 1.0) for item in result["per_prompt"]}


def paired_difference(result: dict, reference: dict) -> dict:
    """Accuracy of `result` minus `reference` on the prompts both answered, with the standard error
    of that mean difference taken from the per-prompt differences (a paired test: the prompts' own
    difficulty cancels, so the error is smaller than that of two independent accuracies)."""
    ours, theirs = correct(result), correct(reference)
    rows = sorted(ours.keys() & theirs.keys())
    if len(rows) < 2:
        raise ValueError(f"paired difference needs at least 2 shared prompts, got {len(rows)}")
    differences = [ours[row] - theirs[row] for row in rows]
    mean = sum(differences) / len(rows)
    variance = sum((d - mean) ** 2 for d in differences) / (len(rows) - 1)
    return {"accuracy": mean, "se": math.sqrt(variance / len(rows)), "prompts": len(rows)}


def verdict(result: dict, min_accuracy: float, max_accuracy: float) -> str:
    accuracy = result["accuracy"]
    if accuracy < min_accuracy:
        return f"not ready for RL: accuracy {accuracy:.3f} < {min_accuracy} (too few rewarded samples to learn from)"
    if accuracy > max_accuracy:
        return f"not ready for RL: accuracy {accuracy:.3f} > {max_accuracy} (little left to learn)"
    return f"ready for RL: accuracy {accuracy:.3f} within [{min_accuracy}, {max_accuracy}]"


def markdown_table(results: List[dict]) -> str:
    sampled = "sampled" in results[0]
    extra = f" sampled accuracy ({results[0]['sampled']}) |" if sampled else ""
    lines = ["| model | prompts | accuracy (greedy) |" + extra + " mean reward | mean response length |",
             "|---|---|---|" + ("---|" if sampled else "") + "---|---|"]
    for r in results:
        cell = f" {r['sampled_accuracy']:.3f} |" if sampled else ""
        lines.append(f"| {r['name']} | {r['prompts']} | {r['accuracy']:.3f} |{cell} {r['mean_reward']:.3f} | "
                     f"{r['mean_response_length']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-path", required=True)
    parser.add_argument("--data", required=True, help="RL-format parquet (data_source, prompt, reward_model)")
    parser.add_argument("--compare-with", help="a base model to evaluate the same way")
    parser.add_argument("--out", default=None, help="directory for evaluation.json / evaluation.md")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N prompts only")
    parser.add_argument("--engine", default="embedded", choices=["embedded", "sglang"])
    parser.add_argument("--samples", type=int, default=0,
                        help="also report the sampled accuracy: N samples per prompt at --temperature (mean@N)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--min-accuracy", type=float, default=0.05)
    parser.add_argument("--max-accuracy", type=float, default=0.95)
    args = parser.parse_args(argv)
    from harness.config.refusal import refuse
    from harness.data import DataError
    from harness.trainer import preflight

    if preflight.refused(preflight.check_evaluate, args):
        return 2
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, path in (("base", args.compare_with), ("checkpoint", args.checkpoint_path)):
            if path:
                try:
                    result = evaluate_model(
                        as_hf_directory(path, scratch), args.data, args.max_new_tokens, args.limit, args.engine,
                        samples_per_prompt=args.samples, temperature=args.temperature,
                    )
                except DataError as error:
                    return refuse(f"data error: {error}")
                results.append({"name": name, **result})
    report = {r["name"]: r for r in results}
    report["verdict"] = verdict(report["checkpoint"], args.min_accuracy, args.max_accuracy)
    table = markdown_table(results)
    if "base" in report:
        report["checkpoint_minus_base"] = paired_difference(report["checkpoint"], report["base"])
        difference = report["checkpoint_minus_base"]
        table += (f"\n\ncheckpoint - base accuracy: {difference['accuracy']:+.3f} ± {difference['se']:.3f} "
                  f"(paired standard error over {difference['prompts']} prompts)")
    print(table)
    print(report["verdict"])
    out = Path(args.out or Path(args.checkpoint_path).parent / "evaluation")
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "evaluation.md").write_text(f"{table}\n\n{report['verdict']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
