"""Renders the harness's Kubernetes manifests from one template (manifests.yaml.j2):

    python launchers/k8s/render.py --config configs/grpo_qwen2.5_32b.yaml --nodes 4 \\
        [--gpus-per-node 8] [--device cuda|cpu] [--cpus-per-node 64] [--memory-per-node 800Gi] \\
        [--shm-size 256Gi] [--image IMAGE] [--namespace NS] [--name NAME] [--volume-claim PVC] \\
        [--mount-path /shared] [--out FILE] [key=value ...]
    python launchers/k8s/render.py --shipped     # every file in launchers/k8s/rendered/, again

A main_ppo config (GRPO, PPO, ...) gives a KubeRay RayJob; an SFT config gives an Indexed Job with a
headless Service for torchrun's rendezvous. `key=value` overrides go into the entry point and are
checked here with the harness's own config loader. The numbers come from launchers/k8s/layout.py
(shared with launchers/nemo_run). Exit codes: 0 written, 2 a config or setting that cannot be mapped
(one line on stderr, naming it).
"""
import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # runnable from a checkout without installing

from launchers.k8s.layout import (RAY_PORTS, RAY_VERSION, Deployment, LayoutError, add_arguments,  # noqa: E402
                                  plan_from_arguments)

HERE = Path(__file__).resolve().parent
RENDERED = HERE / "rendered"
SUFFIX = {"ppo": "rayjob.yaml", "sft": "job.yaml"}

# The committed manifests: the render arguments of each shipped config. Paths are on the shared
# volume (--mount-path, /shared): models/, data/, checkpoints/.
_32B = ["--nodes", "4", "--gpus-per-node", "8"]
_7B = ["--nodes", "1", "--gpus-per-node", "8"]
_CPU = ["--device", "cpu", "--cpus-per-node", "2", "--memory-per-node", "8Gi", "--shm-size", "2Gi"]
_QWEN32 = "/shared/models/Qwen2.5-32B-Instruct"
_QWEN7 = "/shared/models/Qwen2.5-7B-Instruct"


def _rl(data: str, model: str, stem: str):
    return [f"data.train_files=/shared/data/{data}/train.parquet", f"data.val_files=/shared/data/{data}/test.parquet",
            f"actor_rollout_ref.model.path={model}", f"trainer.default_local_dir=/shared/checkpoints/{stem}"]


def _sft(data: str, model: str, stem: str):
    return [f"data.train_files=/shared/data/{data}/sft_train.parquet",
            f"data.val_files=/shared/data/{data}/sft_val.parquet", f"model.partial_pretrain={model}",
            f"trainer.default_local_dir=/shared/checkpoints/{stem}"]


SHIPPED = {
    "grpo_qwen2.5_32b": _32B + _rl("math", _QWEN32, "grpo_qwen2.5_32b"),
    "ppo_qwen2.5_32b": _32B + _rl("math", _QWEN32, "ppo_qwen2.5_32b"),
    "sft_qwen2.5_32b": _32B + _sft("math", "/shared/models/Qwen2.5-32B", "sft_qwen2.5_32b"),
    "grpo_qwen2.5_7b": _7B + _rl("gsm8k", _QWEN7, "grpo_qwen2.5_7b"),
    "ppo_qwen2.5_7b": _7B + _rl("gsm8k", _QWEN7, "ppo_qwen2.5_7b"),
    "sft_qwen2.5_7b": _7B + _sft("gsm8k", "/shared/models/Qwen2.5-7B", "sft_qwen2.5_7b"),
    # CPU-only pods (a kind / minikube cluster): data from `tools/prepare_data.py char_count`, the
    # models from the quickstart.
    "grpo_tiny_cpu": ["--nodes", "2", "--gpus-per-node", "1", *_CPU,
                      "data.train_files=/shared/data/char_count/rl_train.parquet",
                      "data.val_files=/shared/data/char_count/rl_val.parquet",
                      "actor_rollout_ref.model.path=/shared/models/tiny_sft",
                      "trainer.default_local_dir=/shared/checkpoints/grpo_tiny_cpu"],
    "sft_tiny_cpu": ["--nodes", "2", "--gpus-per-node", "2", *_CPU, *_sft("char_count", "/shared/models/tiny",
                                                                           "sft_tiny_cpu")],
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--shipped", action="store_true", help="render every committed manifest into launchers/k8s/rendered/")
    p.add_argument("--out", help="write here (default: stdout)")
    p.add_argument("overrides", nargs="*", help="config overrides for the entry point, key=value")
    return p


def render(deployment: Deployment, argv) -> str:
    import jinja2

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE), undefined=jinja2.StrictUndefined,
                                     keep_trailing_newline=True)
    environment.filters["q"] = lambda value: json.dumps(value, ensure_ascii=False)
    template = environment.get_template("manifests.yaml.j2")
    text = template.render(d=deployment, args=" ".join(shlex.quote(a) for a in argv), ray_version=RAY_VERSION,
                           ports=RAY_PORTS)
    return text.lstrip("\n")


def shipped() -> dict:
    """{committed file: its text as the generator writes it now}."""
    files = {}
    for stem, arguments in SHIPPED.items():
        argv = ["--config", f"configs/{stem}.yaml", *arguments]
        args = parser().parse_args(argv)
        deployment = plan_from_arguments(args, args.overrides)
        files[RENDERED / f"{stem}.{SUFFIX[deployment.workload]}"] = render(deployment, argv)
    return files


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser().parse_args(argv)
        if args.shipped:
            for path, text in shipped().items():
                write(path, text)
                print(f"wrote {path.relative_to(ROOT)}")
            return 0
        text = render(plan_from_arguments(args, args.overrides), argv)
    except LayoutError as error:
        print(f"render: {error}", file=sys.stderr)
        return 2
    if args.out:
        write(Path(args.out), text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
