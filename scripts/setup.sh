#!/usr/bin/env bash
# Set up napari-tomoseg in ./.venv and run it:
#   bash scripts/setup.sh launch   # install, open napari with the plugin and a sample tomogram
#   bash scripts/setup.sh test     # install, run the whole test suite under Xvfb
# On Debian/Ubuntu as root the X server and Qt/OpenGL libraries are installed with apt.
# TORCH_SPEC chooses the PyTorch build (default: the CPU wheel pinned for CI,
# torch==2.13.0); e.g. TORCH_SPEC=torch for the newest build with CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-test}"
shift || true
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

SYSTEM_PACKAGES="xvfb xauth libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-cursor0
libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0
libxcb-xfixes0 libxcb-shape0 libdbus-1-3 libfontconfig1"

install_system_packages() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: no apt-get here; make sure an X server (Xvfb) and OpenGL libraries exist." >&2
        return
    fi
    # shellcheck disable=SC2086
    if dpkg -s $SYSTEM_PACKAGES >/dev/null 2>&1; then
        return
    fi
    local sudo=""
    if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    # --no-upgrade: naming libgl1-mesa-dri must not upgrade the whole Mesa stack
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        --no-upgrade $SYSTEM_PACKAGES >/dev/null
}

install_python_packages() {
    if [ ! -x .venv/bin/python ]; then
        "$PYTHON" -m venv .venv
    fi
    local pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
    # torch first and pinned by TORCH_SPEC, so nothing later pulls a multi-GB CUDA build
    if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
        "${pip[@]}" install "$TORCH_SPEC"
    fi
    # the rest with uv when it can be had (about 15 s instead of 2.5 min with pip, which
    # resolves one package at a time and byte-compiles everything); torch, installed
    # above, satisfies the package's own torch requirement, so uv fetches no other build
    if ! { "${pip[@]}" install uv >/dev/null 2>&1 &&
           .venv/bin/python -m uv pip install --python .venv/bin/python -q -e ".[testing]"; }; then
        echo "setup: uv not available or failed; installing with pip (a few minutes)" >&2
        "${pip[@]}" install -e ".[testing]"
    fi
}

install_system_packages
install_python_packages
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/runtime-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

case "$MODE" in
    launch)
        exec .venv/bin/tomoseg launch "$@"
        ;;
    test)
        # one worker per CPU this process may use (pytest-xdist's own "auto" counts physical
        # cores); each worker's torch on one thread (tests/conftest.py); -n 0: one process.
        # worksteal: an idle worker takes queued tests from a busy one, so a few long tests
        # at the end of one worker's share do not leave the other core idle
        export PYTEST_XDIST_AUTO_NUM_WORKERS="${PYTEST_XDIST_AUTO_NUM_WORKERS:-$(nproc)}"
        exec xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python -m pytest -ra -n auto \
            --dist worksteal "$@"
        ;;
    *)
        echo "usage: bash scripts/setup.sh [launch|test] [arguments]" >&2
        exit 2
        ;;
esac
