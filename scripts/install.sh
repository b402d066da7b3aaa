#!/usr/bin/env bash
# Install everything the workbench needs into .venv. Safe to run again: what is there is kept.
#   TORCH='torch==2.13.0'  the torch requirement installed first (default); set another for your GPU/CUDA
#   SKIP_APT=1             do not apt-get (you installed ffmpeg, espeak-ng, chromium yourself)
#   EXTRAS='dev,ray,agents' the optional extras installed (default; CI needs all: ray runs the distributed eval test,
#                          agents the LiveKit and Pipecat integration tests)
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH="${TORCH:-torch==2.13.0}"
EXTRAS="${EXTRAS:-dev,ray,agents}"

need=()
for cmd in ffmpeg espeak-ng chromium; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
if [ ${#need[@]} -gt 0 ] && [ -z "${SKIP_APT:-}" ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends ffmpeg espeak-ng chromium fonts-dejavu-core >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first and pinned, so no dependency drags in a multi-GB CUDA build on a CPU machine.
.venv/bin/pip install -q "$TORCH"
.venv/bin/pip install -q -e ".[$EXTRAS]"
echo "installed: $(.venv/bin/python -c 'import torch, diffusers, gradio; print("torch", torch.__version__, "diffusers", diffusers.__version__, "gradio", gradio.__version__)')"
