#!/usr/bin/env bash
# Builds SGLang's own virtual environment (.venv-sglang at the repo root): sglang 0.5.23 pins
# torch 2.14.1 and CUDA wheels, so it cannot share the trainer's venv; the harness runs it as a
# server subprocess from this venv's python. Idempotent: returns in seconds when already built.
# Prints the python path on its last line.
#
#   bash tools/setup_sglang_env.sh              # creates ./.venv-sglang (~11 GB, ~3 min)
#   SGLANG_VENV=/path bash tools/setup_sglang_env.sh
#
# On CPU machines the server also needs tests/support/sglang_cpu on PYTHONPATH (a stand-in for the
# CUDA-only sgl_kernel package); the harness adds it for device=cpu, nothing is installed for it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SGLANG_VENV:-$root/.venv-sglang}"
python="${HARNESS_PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

pins=("sglang==0.5.23" "sglang-router==0.3.2")
stamp="$venv/.sglang-env-$(printf '%s\n' "${pins[@]}" | sha1sum | cut -c1-12)"

if [ -f "$stamp" ] && "$venv/bin/python" -c "import sglang, sglang_router" 2>/dev/null; then
  echo "$venv/bin/python"
  exit 0
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# The machine-wide constraint file caps torch for the trainer venv; sglang pins its own torch.
PIP_CONSTRAINT= "$venv/bin/python" -m pip install -q "${pins[@]}"
rm -f "$venv"/.sglang-env-*
touch "$stamp"
echo "$venv/bin/python"
