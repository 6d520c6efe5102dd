# The GPU image: `rn50 train` (horovodrun over NCCL + Gloo, one or many nodes), the
# MPIJob worker (sshd), and the Airflow Celery worker of the `gpu` queue (train, evaluate).
# CUDA TensorFlow 2.21, Horovod 0.28.1 built from source with NCCL, OpenSSH for multi-node horovodrun.
# Build from the repository root:  docker build -f docker/trainer.Dockerfile -t rn50-trainer:0.1.0 .
ARG TF_IMAGE=tensorflow/tensorflow:2.21.0-gpu

# ---- build stage: Horovod with NCCL needs nvcc and the NCCL headers, which the runtime image lacks.
FROM ${TF_IMAGE} AS build
# The CUDA toolkit release TensorFlow 2.21 was built with (apt package suffix).
ARG CUDA_PKG=12-5
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl g++ git make \
    && . /etc/os-release \
    && curl -fsSL -o /tmp/cuda-keyring.deb \
       "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu${VERSION_ID//./}/x86_64/cuda-keyring_1.1-1_all.deb" \
    && dpkg -i /tmp/cuda-keyring.deb \
    && apt-get update \
    && apt-get install -y --no-install-recommends "cuda-nvcc-${CUDA_PKG}" "cuda-cudart-dev-${CUDA_PKG}" \
       "cuda-nvml-dev-${CUDA_PKG}" libnccl-dev libnccl2 \
    && rm -rf /var/lib/apt/lists/* /tmp/cuda-keyring.deb
RUN python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), f"rn50 needs Python 3.11, the base has {sys.version}"'
# A venv over the base image's site-packages: TensorFlow stays the base's own CUDA build (and the
# base's pip serves the venv, so no ensurepip is needed).
RUN python3 -m venv --without-pip --system-site-packages /opt/venv \
    && /opt/venv/bin/python -m pip install --no-cache-dir "cffi==1.17.1" "cloudpickle==3.1.1" "psutil==7.0.0" \
       "pyyaml==6.0.2" "packaging==25.0" "cmake==3.31.6"
WORKDIR /src
COPY scripts/build_horovod.sh scripts/
ENV HOROVOD_GPU_OPERATIONS=NCCL \
    HOROVOD_CUDA_HOME=/usr/local/cuda \
    HOROVOD_NCCL_LINK=SHARED
# The same build as `make setup` (sdist, minus xla_mpi_ops.cc), into a wheel; --check-build must list NCCL.
RUN scripts/build_horovod.sh /opt/venv /wheels \
    && /opt/venv/bin/horovodrun --check-build | grep -E '\[X\] NCCL'
COPY pyproject.toml setup.py README.md ./
COPY pipeline pipeline
COPY tasks tasks
RUN /opt/venv/bin/python -m pip wheel --no-cache-dir --no-deps . -w /wheels/project

# ---- runtime stage
FROM ${TF_IMAGE}
ARG CUDA_PKG=12-5
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# openssh: horovodrun starts the ranks of other nodes over ssh (MPIJob workers run sshd);
# procps: the worker entry point passes SIGTERM on to the ranks; git: fetch_data on the gpu worker.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git openssh-client openssh-server procps \
    && . /etc/os-release \
    && curl -fsSL -o /tmp/cuda-keyring.deb \
       "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu${VERSION_ID//./}/x86_64/cuda-keyring_1.1-1_all.deb" \
    && dpkg -i /tmp/cuda-keyring.deb \
    && apt-get update \
    && apt-get install -y --no-install-recommends libnccl2 \
    && rm -rf /var/lib/apt/lists/* /tmp/cuda-keyring.deb \
    && mkdir -p /run/sshd
# Pods of one MPIJob trust each other: the mpi-operator mounts one generated key pair into all of them.
RUN printf 'Host *\n    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n    LogLevel ERROR\n' \
        > /etc/ssh/ssh_config.d/rn50.conf \
    && printf 'StrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n' \
        > /etc/ssh/sshd_config.d/rn50.conf \
    && ssh-keygen -A
COPY --from=build /opt/venv /opt/venv
COPY --from=build /wheels/project /wheels/project
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /opt/rn50
# [gpu] resolves to the base image's tensorflow[and-cuda] 2.21.0; the project's Celery and Postgres
# providers let the same image serve as the `gpu` queue's worker.
RUN python -m pip install --no-cache-dir --find-links /wheels/project "rn50-pipeline[gpu]==0.1.0" \
    && python -c "import horovod.tensorflow, pipeline.data._scan, tasks.train, airflow.providers.celery, psycopg2" \
    && rn50 --help >/dev/null
COPY dags dags
COPY --chmod=0755 docker/rn50-worker.sh /usr/local/bin/rn50-worker

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/rn50/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    RN50_WORKSPACE_ROOT=/opt/rn50/runs/workspaces \
    DVC_NO_ANALYTICS=1 \
    GX_ANALYTICS_ENABLED=false \
    TF_CPP_MIN_LOG_LEVEL=2
# The commit the image is built from (docker/compose.yaml passes it: see docs/deployment.md): the image has
# no .git, so this is the code version manifests record and check_changes compares. Unset, it is unknown:
# manifests say null and every run trains. Declared last: its value invalidates no layer above.
ARG RN50_CODE_VERSION=
ENV RN50_CODE_VERSION=${RN50_CODE_VERSION}
ENTRYPOINT ["rn50"]
CMD ["--help"]
