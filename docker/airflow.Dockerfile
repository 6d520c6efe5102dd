# The Airflow image: api-server, scheduler, dag-processor, triggerer and the Celery worker of the
# default queue. It runs fetch_data (git + DVC), validate_data (header scan + Great Expectations),
# check_accuracy and publish (boto3), and submits MPIJobs; it never trains, so no TensorFlow here.
# Build from the repository root:  docker build -f docker/airflow.Dockerfile -t rn50-airflow:0.1.0 .
FROM apache/airflow:3.3.2-python3.11

# root (0) for apt, then the image's own airflow user (50000).
USER 0
# git: fetch_data clones the project at the run's data revision; gcc: the scanner's C extension.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git gcc libc6-dev \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

USER 50000
WORKDIR /opt/rn50
COPY --chown=50000:0 pyproject.toml setup.py README.md ./
COPY --chown=50000:0 pipeline pipeline
COPY --chown=50000:0 tasks tasks
COPY --chown=50000:0 dags dags
# Pinning apache-airflow keeps pip from moving the image's Airflow; the project pins the providers it
# uses (Amazon, cncf.kubernetes, Celery, Postgres), DVC, GX and boto3. No extra: TensorFlow comes only
# with [cpu]/[gpu]. `make stack` builds .venv-airflow from the same (scripts/setup.sh ... none).
RUN pip install --no-cache-dir "apache-airflow==3.3.2" . \
    && python -c "import pipeline.data._scan" \
    && ! python -c "import tensorflow" 2>/dev/null

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/rn50/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    RN50_WORKSPACE_ROOT=/opt/rn50/runs/workspaces \
    DVC_NO_ANALYTICS=1 \
    GX_ANALYTICS_ENABLED=false
# The commit the image is built from (docker/compose.yaml passes it: see docs/deployment.md): the image has
# no .git, so this is the code version manifests record and check_changes compares. Unset, it is unknown:
# manifests say null and every run trains. Declared last: its value invalidates no layer above.
ARG RN50_CODE_VERSION=
ENV RN50_CODE_VERSION=${RN50_CODE_VERSION}
