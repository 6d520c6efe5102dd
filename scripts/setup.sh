#!/usr/bin/env bash
# Create the project's virtual environment with everything in it: the project (editable), Airflow,
# TensorFlow (CPU or CUDA build), Great Expectations, DVC, boto3, the test tools, and Horovod built
# from source with Gloo. Safe to run again: it only adds what is missing.
# TF_FLAVOUR none: the Airflow image's package set instead (docker/airflow.Dockerfile: the project and
# its Airflow, no TensorFlow, Horovod or test tools), for the `make stack` processes of that image.
#
# Usage: scripts/setup.sh PYTHON VENV_DIR TF_FLAVOUR(cpu|gpu|none) CACHE_DIR
set -euo pipefail

python=${1:?python interpreter}
venv=${2:?venv dir}
flavour=${3:?cpu or gpu}
cache=${4:?cache dir}

case "$flavour" in cpu|gpu|none) ;; *) echo "setup: TF must be cpu, gpu or none, not '$flavour'" >&2; exit 2 ;; esac

if ! command -v "$python" >/dev/null 2>&1; then
    echo "setup: $python not found; install Python 3.11 (Debian: apt-get install python3.11)" >&2
    exit 2
fi
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
    echo "setup: $python is $("$python" -V 2>&1), the project needs Python 3.11" >&2; exit 2; }

# Debian packages a bare machine may lack: venv/ensurepip and the headers for Horovod's build, a
# C++ compiler, and ssh and sshd (the multi-host test starts ranks over a real sshd, as horovodrun does
# on a cluster); for .venv's tests, chromium (the browser test drives Debian's chromium with Playwright,
# whose own browser download needs a CDN). Installed only when missing, and only where we can (root with
# apt-get).
need=()
"$python" -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=("python3.11-venv")
include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$include/Python.h" ] || need+=("python3.11-dev")
command -v g++ >/dev/null 2>&1 || need+=("g++")
command -v make >/dev/null 2>&1 || need+=("make")
command -v ssh-keygen >/dev/null 2>&1 || need+=("openssh-client")
[ -x /usr/sbin/sshd ] || need+=("openssh-server")
[ "$flavour" = none ] || command -v chromium >/dev/null 2>&1 || need+=("chromium")
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing Debian packages: ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    else
        echo "setup: missing Debian packages: ${need[*]} (run: sudo apt-get install ${need[*]})" >&2
        exit 2
    fi
fi

if [ "$flavour" = none ]; then
    # uv, one of .venv's dev tools: its parallel downloads take seconds where pip takes minutes, and
    # its cache (~/.cache/uv) serves a rebuild. (pip's HTTP cache stays empty behind a registry proxy
    # that sends no caching headers.)
    command -v uv >/dev/null 2>&1 || { echo "setup: no uv on PATH; make setup installs it into .venv" >&2; exit 2; }
    echo "setup: installing the project without TensorFlow into $venv"
    [ -x "$venv/bin/python" ] || uv venv --quiet --python "$python" "$venv"
    uv pip install --quiet --python "$venv/bin/python" -e .
    # What the image's build asserts.
    "$venv/bin/python" -c "import pipeline.data._scan"
    if "$venv/bin/python" -c "import tensorflow" >/dev/null 2>&1; then
        echo "setup: $venv has TensorFlow; the Airflow image's environment must not" >&2; exit 1
    fi
    exit 0
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
echo "setup: installing the project with TensorFlow ($flavour) into $venv"
"$venv/bin/python" -m pip install --quiet --progress-bar off -e ".[$flavour,dev,horovod-build]"

if "$venv/bin/python" -c 'import horovod.tensorflow' >/dev/null 2>&1; then
    echo "setup: Horovod already installed"
else
    if [ "$flavour" = gpu ]; then export HOROVOD_GPU_OPERATIONS=NCCL; fi
    "$(dirname "$0")/build_horovod.sh" "$venv" "$cache"
fi
