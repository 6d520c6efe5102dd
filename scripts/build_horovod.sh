#!/usr/bin/env bash
# Build Horovod 0.28.1 from its sdist against the TensorFlow in the venv, with Gloo, and install it.
#
# Horovod is only published as an sdist, and its last release predates TF 2.21, so it needs two
# changes: cmake 4.x needs CMAKE_POLICY_VERSION_MINIMUM for gloo's old
# cmake_minimum_required, and xla_mpi_ops.cc no longer compiles against TF 2.21's headers (we never
# run allreduce inside an XLA cluster, so it is dropped). The built wheel is cached per TensorFlow
# version, because its ops link against that exact libtensorflow_framework.
#
# Usage: scripts/build_horovod.sh VENV_DIR CACHE_DIR   (GPU images: HOROVOD_GPU_OPERATIONS=NCCL)
set -euo pipefail

venv=${1:?venv dir}
cache=${2:?cache dir}
version=0.28.1
py="$venv/bin/python"

tf_version=$("$py" -c 'import importlib.metadata as m
for d in ("tensorflow", "tensorflow-cpu"):
    try:
        print(m.version(d)); break
    except m.PackageNotFoundError:
        pass')
[ -n "$tf_version" ] || { echo "build_horovod: TensorFlow is not installed in $venv" >&2; exit 1; }

flavour=${HOROVOD_GPU_OPERATIONS:+-$(echo "$HOROVOD_GPU_OPERATIONS" | tr '[:upper:]' '[:lower:]')}
wheel_dir="$cache/horovod-$version-tf$tf_version$flavour"
wheel=$(ls "$wheel_dir"/horovod-"$version"-*.whl 2>/dev/null | head -n 1 || true)

if [ -z "$wheel" ]; then
    echo "build_horovod: compiling Horovod $version for TensorFlow $tf_version (about 3 minutes)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$py" -m pip download --quiet --no-deps --no-binary :all: "horovod==$version" -d "$work"
    tar -xzf "$work/horovod-$version.tar.gz" -C "$work"
    src="$work/horovod-$version"
    cmakelists="$src/horovod/tensorflow/CMakeLists.txt"
    grep -q 'xla_mpi_ops.cc' "$cmakelists" || { echo "build_horovod: xla_mpi_ops.cc not in $cmakelists" >&2; exit 1; }
    sed -i '/xla_mpi_ops\.cc/d' "$cmakelists"
    # The pip cmake is used when the system has none; both work with the policy override.
    command -v cmake >/dev/null 2>&1 || "$py" -m pip install --quiet "cmake<5"
    mkdir -p "$wheel_dir"
    PATH="$venv/bin:$PATH" \
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
    HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 CMAKE_POLICY_VERSION_MINIMUM=3.5 \
    MAKEFLAGS="-j$(nproc)" \
        "$py" -m pip wheel --quiet --no-build-isolation --no-deps "$src" -w "$wheel_dir"
    wheel=$(ls "$wheel_dir"/horovod-"$version"-*.whl | head -n 1)
else
    echo "build_horovod: using cached $wheel"
fi

"$py" -m pip install --quiet "$wheel"
PATH="$venv/bin:$PATH" "$venv/bin/horovodrun" --check-build
