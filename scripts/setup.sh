#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine: FFmpeg (audio decoding by
# torchcodec), espeak-ng and sox (synthetic speakers), then a virtual environment in .venv with
# the package and its test tools. Safe to re-run: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in ffmpeg espeak-ng sox; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($python --version)"
    "$python" -m venv .venv
fi
echo "setup: installing pyannote-wavlm-prune and its dependencies into .venv"
# the machine-wide pip.conf names local indexes that warn for every package they lack
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
touch .venv/.installed
echo "setup: done"
