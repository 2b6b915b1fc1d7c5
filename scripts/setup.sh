#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine (idempotent, safe to re-run):
#  1. system OpenGL libraries so MuJoCo renders headless on the CPU (Mesa EGL + OSMesa),
#     and tcmalloc, which `curlrl train` preloads when present (faster updates on CPU);
#  2. a virtual environment .venv with curlrl installed (editable), its test tools and
#     the optional Stable-Baselines3 extra (so the SB3 extractor test runs).
# torch is pinned to 2.13.0 (the CPU wheel here); for CUDA see README "GPU".
set -euo pipefail
cd "$(dirname "$0")/.."

have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }
# Each library on its own: a machine may ship EGL but not OSMesa (seen 2026-11-25).
if ! have_lib 'libEGL_mesa\.so' || ! have_lib 'libOSMesa\.so' || ! have_lib 'libtcmalloc_minimal\.so'; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "setup: installing headless OpenGL (Mesa EGL + OSMesa) and tcmalloc with apt-get"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 libtcmalloc-minimal4 >/dev/null
  else
    echo "setup: no apt-get: install EGL (Mesa) or OSMesa (needed) and tcmalloc (faster updates)" \
         "with your package manager" >&2
  fi
fi

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test,sb3,atari]"
echo "setup: ready ($(.venv/bin/python -c 'import torch, curlrl; print("curlrl", curlrl.__version__, "torch", torch.__version__)'))"
