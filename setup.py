"""Installs the harness. The base install is light (configs, launch helpers); training needs `[train]`.

On a GPU cluster, install into the existing container (which brings CUDA torch, Transformer Engine and
apex): `pip install -e .[train]`. On a CPU dev machine use `bash tools/setup_env.sh`.
"""
from setuptools import find_packages, setup

setup(
    name="harness",
    version="0.1.0",
    description="Megatron + SGLang post-training harness: SFT and RL (PPO, GRPO and relatives)",
    python_requires=">=3.11",
    packages=find_packages(include=["harness", "harness.*"]),
    install_requires=["pyyaml>=6", "omegaconf>=2.3"],
    extras_require={
        # megatron-core 0.16.1 is the newest for Python 3.11; clusters run 0.19.x on Python 3.12.
        "train": [
            "torch>=2.6",
            "megatron-core>=0.16.1,<0.20",
            "numpy>=1.26",
            "psutil>=5.9",
            "transformers>=4.51",
            "tokenizers>=0.21",
            "safetensors>=0.4",
            "ray>=2.49",  # RL workers (python -m harness.main_ppo); node labels place multi-node pools
            "matplotlib>=3.8",  # report plots
        ],
        # Slurm / Kubernetes / NeMo-Run launchers and their manifest checks. nemo-run is exact: the
        # launchers build on its 0.11 executors; leptonai 0.47 breaks `import nemo_run`.
        "launch": ["ray[default]>=2.49", "nemo-run==0.11.1", "leptonai<0.28", "kubernetes>=30",
                   "kubernetes-validate>=1.31", "jsonschema>=4.18"],
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100"],
    },
)
