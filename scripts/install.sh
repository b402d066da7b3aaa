#!/usr/bin/env bash
# Install everything the workbench needs into .venv. Safe to run again: what is there is kept.
#   TORCH='torch==2.13.0'  the torch requirement installed first (default); set another for your GPU/CUDA
#   SKIP_APT=1             do not apt-get (you installed ffmpeg, espeak-ng, chromium yourself)
#   APT_LOCK_WAIT=300      seconds to wait for another apt/dpkg (unattended upgrades) to release its lock
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
  # A freshly booted machine often runs unattended upgrades: wait for its dpkg/apt lock (bounded) instead of failing.
  LOCK_WAIT="${APT_LOCK_WAIT:-300}"
  apt_wait() {  # apt-get "$@", retried while another apt/dpkg holds a lock, for up to LOCK_WAIT seconds
    local start=$SECONDS out told=""
    while :; do
      if out=$($SUDO apt-get -o "DPkg::Lock::Timeout=${LOCK_WAIT}" "$@" 2>&1); then return 0; fi
      if grep -qE 'Could not get lock|Unable to acquire|is held by process' <<<"$out" && ((SECONDS - start < LOCK_WAIT)); then
        [ -n "$told" ] || echo "install.sh: another apt/dpkg (unattended upgrades?) holds the lock; waiting up to ${LOCK_WAIT} s"
        told=1
        sleep "${APT_LOCK_POLL:-5}"
        continue
      fi
      echo "$out" >&2
      return 1
    done
  }
  apt_wait update -qq
  apt_wait install -y -qq --no-install-recommends ffmpeg espeak-ng chromium fonts-dejavu-core
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first and pinned, so no dependency drags in a multi-GB CUDA build on a CPU machine.
.venv/bin/pip install -q "$TORCH"
.venv/bin/pip install -q -e ".[$EXTRAS]"
echo "installed: $(.venv/bin/python -c 'import torch, diffusers, gradio; print("torch", torch.__version__, "diffusers", diffusers.__version__, "gradio", gradio.__version__)')"
