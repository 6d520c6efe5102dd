#!/usr/bin/env bash
# `make airflow`: `airflow standalone` (api-server + UI, scheduler, dag-processor, triggerer) on SQLite,
# with this project's DAGs, a fixed login (admin / admin) and the `gpu` pool. Ctrl-C stops all of it.
# Usage: scripts/airflow.sh VENV
set -euo pipefail

VENV=$(cd "$1" && pwd)
ROOT=$(pwd)
export PATH="$VENV/bin:$PATH"   # standalone spawns `airflow` subprocesses
export AIRFLOW_HOME=${RN50_AIRFLOW_HOME:-$ROOT/airflow-home}
export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$AIRFLOW_HOME/airflow.db
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=$AIRFLOW_HOME/passwords.json
export AIRFLOW__API__PORT=${AIRFLOW_PORT:-8080}
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:$AIRFLOW__API__PORT/execution/
export RN50_WORKSPACE_ROOT=${RN50_WORKSPACE_ROOT:-$ROOT/runs/workspaces}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false TF_CPP_MIN_LOG_LEVEL=2

mkdir -p "$AIRFLOW_HOME"
[ -f "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" ] \
  || echo '{"admin": "admin"}' > "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
airflow db migrate > "$AIRFLOW_HOME/migrate.log" 2>&1
airflow pools set gpu "${RN50_GPU_SLOTS:-1}" "GPU slots: one per GPU of the cluster" > /dev/null
echo "Airflow UI: http://localhost:$AIRFLOW__API__PORT  (login admin / admin); DAG resnet50_retrain"
echo "Trigger it from the UI's form (the play button, 'Trigger DAG w/ config'), e.g. profile=smoke."
# In its own process group: SIGTERM to `airflow standalone` alone would orphan its children, so
# stopping this script (Ctrl-C, SIGTERM) stops the whole group.
setsid airflow standalone &
GROUP=$!
trap 'kill -TERM -- -$GROUP 2>/dev/null; wait $GROUP 2>/dev/null; exit 0' INT TERM
wait $GROUP
