#!/usr/bin/env bash
# `make airflow`: Airflow on SQLite with this project's DAGs, ready for the UI's Trigger button: what
# `airflow standalone` runs (api-server and UI, scheduler with the LocalExecutor, dag-processor,
# triggerer), started one by one so that no log server listens on every interface (standalone starts
# two), and what `make demo` runs against: a local S3 server with the bucket and the sample dataset
# pushed to the DVC remote, and a new model-registry repo (scripts/local_s3.sh; both start afresh each
# time). Every port is on 127.0.0.1 (RN50_BIND_ADDRESS=0.0.0.0 serves the UI to other machines).
# A playground: the DAG has no schedule and trains the smoke profile on one GPU slot unless RN50_SCHEDULE,
# RN50_PROFILE, RN50_NUM_GPUS say otherwise, so unpausing it starts no production run.
# The login is admin with a password generated on first start and kept, readable only by you, in the
# Airflow home's passwords.json. It prints the export lines that `rn50 pull` and `dvc pull` need in
# another terminal while it runs. Ctrl-C or SIGTERM stops all it started: SIGTERM, then SIGKILL for
# what is left after RN50_AIRFLOW_GRACE_S (15) seconds (a scheduler was seen ignoring SIGTERM for 40 s).
# State: the Airflow home (RN50_AIRFLOW_HOME, airflow-home/): DB, passwords, logs/ (one per process),
# registry/; run workspaces in RN50_WORKSPACE_ROOT (runs/workspaces/).
# Usage: scripts/airflow.sh VENV
set -euo pipefail
# One compound command, read whole before it runs: editing this file meanwhile (a git pull) cannot
# change what a running one does.
{

VENV=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$VENV/bin
GRACE_S=${RN50_AIRFLOW_GRACE_S:-15}
export PATH="$BIN:$PATH"
AIRFLOW_HOME=$(realpath -m "${RN50_AIRFLOW_HOME:-$ROOT/airflow-home}")
export AIRFLOW_HOME
export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
# The LocalExecutor forks all of its workers when the scheduler starts (32 by default: a few GB of
# idle processes); one run's tasks rarely need more than 2 at once here.
export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-4}
export AIRFLOW__CORE__AUTH_MANAGER=airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$AIRFLOW_HOME/airflow.db
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=$AIRFLOW_HOME/passwords.json
export AIRFLOW__API__HOST=${RN50_BIND_ADDRESS:-127.0.0.1}
export AIRFLOW__API__PORT=${AIRFLOW_PORT:-8080}
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$AIRFLOW__API__PORT/execution/
export RN50_WORKSPACE_ROOT=${RN50_WORKSPACE_ROOT:-$ROOT/runs/workspaces}
export RN50_SCHEDULE=${RN50_SCHEDULE:-none} RN50_PROFILE=${RN50_PROFILE:-smoke} RN50_NUM_GPUS=${RN50_NUM_GPUS:-1}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false TF_CPP_MIN_LOG_LEVEL=2
LOGS=$AIRFLOW_HOME/logs
# In the environment of every process started here (not of this script's own commands), so that the
# stop finds one whose parent died first. Processes that rewrite their title may lose it: sessions and
# descendants find those.
MEMBER="$AIRFLOW_HOME $$"
# shellcheck source=scripts/local_s3.sh
. "$ROOT/scripts/local_s3.sh"
# shellcheck source=scripts/processes.sh
. "$ROOT/scripts/processes.sh"

die() { echo "airflow.sh: $*" >&2; exit 1; }

# ---- the processes it starts: each in a session of its own, recorded as "name pid start-time" ----
NAMES=() PIDS=() STARTS=()
record() { start_time "$2"; NAMES+=("$1") PIDS+=("$2") STARTS+=("${START:-gone}"); }  # gone: exited already

start() {  # NAME COMMAND...: output to logs/NAME.log
  setsid env "RN50_AIRFLOW_MEMBER=$MEMBER" "${@:2}" >> "$LOGS/$1.log" 2>&1 < /dev/null &
  record "$1" $!
  disown $!   # watched through /proc, not as a job: no "Killed" report from bash when the stop kills it
}

# The pids of every process it started: the recorded sessions (processes.sh's rule; this script watches
# them, so a session outlives its leader), their descendants (task processes start process groups,
# Horovod's ranks sessions, of their own), and whatever carries the marker.
members() {
  local sessions=() i
  for i in "${!PIDS[@]}"; do
    recorded_session "${PIDS[i]}" "${STARTS[i]}" "$BOOT_ID" watched
    [ -z "$SESSION" ] || sessions+=("$SESSION")
  done
  {
    in_sessions "${sessions[@]}"
    grep -lzxF -- "RN50_AIRFLOW_MEMBER=$MEMBER" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3
  } | grep -vx "$$" | sort -un || true
}

signal_all() {  # SIG: to all of them at once (a parent that dies first would orphan its children)
  local left
  left=$(members | xargs)
  # shellcheck disable=SC2086
  [ -z "$left" ] || kill -"$1" $left 2>/dev/null || true
}

wait_gone() {  # SECONDS: 1 if some are left at the deadline
  local deadline=$((SECONDS + $1))
  while [ -n "$(members)" ]; do
    [ $SECONDS -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

stop() {
  trap '' INT TERM   # a second Ctrl-C must not leave half of it running
  [ ${#PIDS[@]} -gt 0 ] || return 0
  echo "airflow.sh: stopping"
  signal_all TERM
  if ! wait_gone "$GRACE_S"; then
    echo "airflow.sh: still running after $GRACE_S s, killed: $(members | xargs)" >&2
    signal_all KILL
    wait_gone 5 || echo "airflow.sh: processes survive SIGKILL: $(members | xargs)" >&2
  fi
  PIDS=()
}

# ---- start ----
mkdir -p "$AIRFLOW_HOME" "$LOGS"
"$BIN/python" -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))' "$AIRFLOW__API__HOST" "$AIRFLOW__API__PORT" 2>/dev/null \
  || die "port $AIRFLOW__API__PORT on $AIRFLOW__API__HOST is in use (another make airflow or make stack?); choose another with AIRFLOW_PORT=PORT"
# The admin password: generated on first start (or in place of the admin / admin that earlier versions
# wrote), mode 0600 whatever the umask; other users in the file stay as they are.
PASSWORD=$("$BIN/python" - "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" <<'EOF'
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
trap stop EXIT
trap 'exit 0' INT TERM
# With the marker: moto_server is one of the processes the stop ends.
RN50_AIRFLOW_MEMBER=$MEMBER local_s3_up "$AIRFLOW_HOME/registry" "$LOGS/moto_server.log" "$AIRFLOW__API__PORT" \
  || die "the local S3 server or the registry repo did not start; see above"
[ -z "$S3_PID" ] || record moto_server "$S3_PID"
airflow db migrate > "$LOGS/migrate.log" 2>&1 || die "airflow db migrate failed; see $LOGS/migrate.log"
airflow pools set gpu "$RN50_NUM_GPUS" "GPU slots: one per GPU of the cluster (RN50_NUM_GPUS)" > /dev/null
start api-server airflow api-server
start scheduler airflow scheduler --skip-serve-logs
start dag-processor airflow dag-processor
start triggerer airflow triggerer --skip-serve-logs

cat <<EOT
Airflow UI: http://localhost:$AIRFLOW__API__PORT  (login admin / $PASSWORD); DAG resnet50_retrain
  Trigger it from the UI (the play button); the form's defaults run profile $RN50_PROFILE on $RN50_NUM_GPUS GPU slot(s).
  S3: $AWS_ENDPOINT_URL, bucket $RN50_BUCKET (the sample dataset pushed); registry repo: $RN50_DVC_REPO
  logs: $LOGS/<process>.log; Ctrl-C stops it all.
Fetch a published version from another terminal while this runs:
$(local_s3_exports | sed 's/^/  /')
  rn50 list --bucket $RN50_BUCKET
  rn50 pull --bucket $RN50_BUCKET --version latest DEST
  git clone $RN50_DVC_REPO DEST && cd DEST && dvc pull models/resnet50.dvc
EOT

# Until Ctrl-C, SIGTERM, or one of them exits.
while true; do
  for i in "${!PIDS[@]}"; do
    start_time "${PIDS[i]}"
    if [ "$START" != "${STARTS[i]}" ]; then
      echo "airflow.sh: ${NAMES[i]} exited; stopping the rest. Its last lines ($LOGS/${NAMES[i]}.log):" >&2
      tail -n 5 "$LOGS/${NAMES[i]}.log" >&2 || true
      exit 1
    fi
  done
  sleep 2 & wait $!
done
exit
}
