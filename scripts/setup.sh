#!/usr/bin/env bash
# Set up AutoSpace on a fresh machine: system data set and chromium (when apt is there), a
# virtual environment in .venv, torch pinned first (an unpinned resolve would
# fetch a multi-GB CUDA build), then the package with its test extras.
# Safe to re-run: every step is skipped or quick when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  APT_UPDATED=
  apt_install() {  # best effort: what is missing only degrades the run or skips tests
    [ -n "$APT_UPDATED" ] || { apt-get update -qq && APT_UPDATED=1; } \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  }
  if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    echo "[setup] installing the dataset-fashion-mnist system package"
    apt_install dataset-fashion-mnist \
      || echo "[setup] dataset-fashion-mnist unavailable: the embedded default falls back to scikit-learn's digits"
  fi
  if ! command -v chromium >/dev/null 2>&1; then
    echo "[setup] installing chromium (headless, for the report's browser test)"
    apt_install chromium || echo "[setup] chromium unavailable: the report's browser test is skipped"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  echo "[setup] installing torch==$TORCH_VERSION"
  .venv/bin/pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch" || { echo "[setup] torch==$TORCH_VERSION failed to install" >&2; exit 1; }
fi
echo "[setup] installing autospace and its dependencies"
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, ray, mlflow, optuna, onnxruntime, pyarrow, spaces, pipeline" \
  || { echo "[setup] import check failed" >&2; exit 1; }
echo "[setup] ready: .venv/bin/autospace --help"
