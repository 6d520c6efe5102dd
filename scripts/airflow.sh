#!/usr/bin/env bash
# `make airflow`: `airflow standalone` (api-server + UI, scheduler, dag-processor, triggerer) on SQLite,
# with this project's DAGs and the `gpu` pool, on 127.0.0.1 only (RN50_BIND_ADDRESS=0.0.0.0 serves other
# machines). The login is admin with a password generated on first start and kept, readable only by
# you, in the Airflow home's passwords.json. Ctrl-C stops all of it.
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
export AIRFLOW__API__HOST=${RN50_BIND_ADDRESS:-127.0.0.1}
export AIRFLOW__API__PORT=${AIRFLOW_PORT:-8080}
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:$AIRFLOW__API__PORT/execution/
export RN50_WORKSPACE_ROOT=${RN50_WORKSPACE_ROOT:-$ROOT/runs/workspaces}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false TF_CPP_MIN_LOG_LEVEL=2

mkdir -p "$AIRFLOW_HOME"
# The admin password: generated on first start (or in place of the admin / admin that earlier versions
# wrote), mode 0600 whatever the umask; other users in the file stay as they are.
PASSWORD=$(python - "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" <<'EOF'
import json, os, secrets, sys

path = sys.argv[1]
try:
    with open(path) as f:
        logins = json.load(f)
except FileNotFoundError:
    logins = {}
except ValueError:
    logins = None
if not isinstance(logins, dict):
    sys.exit(f"{path}: not a JSON object of user: password; delete it to generate a new login")
if logins.get("admin") in (None, "", "admin"):
    logins["admin"] = secrets.token_urlsafe(18)
    fd = os.open(f"{path}.new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(logins, f)
    os.replace(f"{path}.new", path)
os.chmod(path, 0o600)
print(logins["admin"])
EOF
)
airflow db migrate > "$AIRFLOW_HOME/migrate.log" 2>&1
airflow pools set gpu "${RN50_GPU_SLOTS:-1}" "GPU slots: one per GPU of the cluster" > /dev/null
echo "Airflow UI: http://localhost:$AIRFLOW__API__PORT  (login admin / $PASSWORD); DAG resnet50_retrain"
echo "Trigger it from the UI's form (the play button, 'Trigger DAG w/ config'), e.g. profile=smoke."
# In its own process group: SIGTERM to `airflow standalone` alone would orphan its children, so
# stopping this script (Ctrl-C, SIGTERM) stops the whole group.
setsid airflow standalone &
GROUP=$!
trap 'kill -TERM -- -$GROUP 2>/dev/null; wait $GROUP 2>/dev/null; exit 0' INT TERM
wait $GROUP
