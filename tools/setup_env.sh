#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment: Python 3.11, torch 2.13.0 (CPU wheel on
# dev machines), megatron-core 0.16.1 and the test tools. Idempotent: when the pinned set is already
# installed it only checks and returns (a few seconds).
#
#   bash tools/setup_env.sh            # creates ./.venv
#   HARNESS_VENV=/path bash tools/setup_env.sh
#
# On a GPU cluster install into the existing container instead: `pip install -e .[train]`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${HARNESS_VENV:-$root/.venv}"
python="${HARNESS_PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

# The pins CI needs; change them here only (setup.py's extras carry the looser ranges users get).
pins=(
  "torch==2.13.0"
  "megatron-core==0.16.1"
  "numpy>=1.26,<3"
  "psutil==7.2.2"
  "transformers==5.24.0"
  "tokenizers==0.23.3"
  "safetensors==0.8.0"
  "omegaconf==2.4.0"
  "pyarrow==26.0.1"
  "tensorboard==2.21.0"
  "rich==15.0.0"
  "wandb==0.31.0"
  "ray[default]==2.60.0"  # [default]: the dashboard and job server (RayJob submission, `ray job submit`)
  "matplotlib==3.11.2"
  "pyyaml>=6"
  "pytest==9.0.3"
  "pytest-timeout==2.4.0"
  "hypothesis==6.155.2"
  # launchers (setup.py's `launch` extra): NeMo-Run experiments, manifest validation. leptonai 0.47
  # breaks `import nemo_run`; nemo-run's torchx holds urllib3 below 1.27, which kubernetes accepts
  # only when resolved here together (notes/cluster.md).
  "nemo-run==0.11.1"
  "leptonai<0.28"
  "kubernetes==36.0.3"
  "kubernetes-validate==1.37.0"
  "jsonschema==4.26.0"
)
stamp="$venv/.harness-env-$(printf '%s\n' "${pins[@]}" | cat - "$root/setup.py" | sha1sum | cut -c1-12)"

if [ -f "$stamp" ] && "$venv/bin/python" -c "import torch, megatron.core, harness" 2>/dev/null; then
  echo "environment ready: $venv"
  exit 0
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# torch first, alone: on these machines `torch==2.13.0` resolves to the CPU wheel on local disk,
# while a looser requirement pulled in later could select a multi-GB CUDA build.
"$venv/bin/python" -m pip install -q "torch==2.13.0"
"$venv/bin/python" -m pip install -q "${pins[@]}"
"$venv/bin/python" -m pip install -q --no-deps -e "$root"
rm -f "$venv"/.harness-env-*
touch "$stamp"
echo "environment ready: $venv"
