#!/usr/bin/env bash
# `make stack`: docker/compose.yaml's production topology on this machine, without Docker. Postgres (a
# private cluster) and Redis from Debian, moto_server standing in for MinIO (the S3 API is what
# matters), and Airflow with the CeleryExecutor: api-server, scheduler, dag-processor, triggerer, and
# two Celery workers as in compose: worker-default (queue `default`) from .venv-airflow, the Airflow
# image's package set (no TensorFlow), and worker-gpu (queue `gpu`) from the training environment .venv.
# The Airflow processes get compose's settings (scripts/stack.env) and nothing else of your shell's.
#
# Usage: scripts/stack.sh up | run | down | status | exec COMMAND...
#   up      start it all (creating what a first start needs), wait until it is healthy, print the login
#   run     up, then stay in the foreground until Ctrl-C or SIGTERM, which stop it all   (make stack)
#   down    stop everything the stack started, its tasks' processes too: SIGTERM, then SIGKILL after
#           RN50_STACK_GRACE_S (15) seconds; within 30 s in all               (make stack-down)
#           A pid file that names no process the stack started (of another boot, its pid another
#           process's now, or its process exited unwatched) is stale: said so, and nothing signalled by it.
#   status  which processes run, and the health checks
#   exec    COMMAND with the stack's environment and Airflow, e.g. `scripts/stack.sh exec airflow dags list`
#
# Everything lives in RN50_STACK_DIR (.stack in the checkout; git ignores it): secrets.env (generated on
# first start, mode 0600), postgres/, airflow/ (AIRFLOW_HOME, task logs), runs/, registry/, and logs/
# with one log per process. Every port is on 127.0.0.1: the UI on AIRFLOW_PORT (8080), S3 on
# RN50_S3_PORT (9000); Postgres, Redis and the scheduler's health check on free ports picked at start.
# S3 is moto's in-memory store: it starts empty each time, with the bucket, the sample dataset pushed
# (data/imagenet, made first as `make sample` makes it if missing) and a new registry repo; the Airflow
# DB and runs are kept.
# compose's RN50_* settings (RN50_PROFILE, RN50_SCHEDULE, RN50_NUM_GPUS, ...) are read as compose does.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/processes.sh
. "$ROOT/scripts/processes.sh"
STACK=$(realpath -m "${RN50_STACK_DIR:-$ROOT/.stack}")
VENV=$(realpath -m "${VENV:-$ROOT/.venv}")
AIRFLOW_VENV=$(realpath -m "${AIRFLOW_VENV:-$ROOT/.venv-airflow}")
GRACE_S=${RN50_STACK_GRACE_S:-15}
WAIT_S=${RN50_STACK_WAIT_S:-600}
RUN=$STACK/run
LOGS=$STACK/logs
# Stopped first, all at once, before the services they use.
AIRFLOW_PROCESSES=(worker-gpu worker-default triggerer dag-processor scheduler api-server moto)
SERVICES=(postgres redis)
# The Celery workers: node name = queue. (Node names, not queues, are what a ping reaches.)
WORKERS=("worker-default@$(hostname)=default" "worker-gpu@$(hostname)=gpu")
umask 077   # secrets, logs, the database: this user's only

die() { echo "stack: $*" >&2; exit 1; }

# ---- the stack's processes ----
# Each is started in a session of its own, and recorded in run/NAME.pid as "pid start-time boot-id"
# (scripts/processes.sh: which records still name the stack's sessions). Its processes are that
# session's, their descendants (horovodrun's ranks start sessions of their own), and whatever carries
# the stack's marker in its environment (an orphan whose parent died first). The environment alone
# would not do: Redis, Postgres and Celery rewrite /proc/PID/environ with their process titles.
# The names this process started, and so watches (`run`; `up` until it is up): when one of them exits,
# this process stops the rest at once, and the processes left in its session are still the stack's.
declare -A WATCHED=()

# start NAME [VAR=value...] COMMAND...: NAME in a session of its own, in a clean environment of the
# given variables and the stack's marker; output appended to logs/NAME.log.
start() {
  local name=$1; shift
  setsid env -i PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 HOME="$HOME" RN50_STACK_MEMBER="$STACK" \
    "$@" >> "$LOGS/$name.log" 2>&1 < /dev/null &
  start_time $!
  echo "$! ${START:-gone} $BOOT_ID" > "$RUN/$name.pid"   # gone: it exited already
  WATCHED[$name]=1
}

# recorded NAME: recorded_session for run/NAME.pid (1 if there is none).
recorded() {
  local pid start boot
  { read -r pid start boot < "$RUN/$1.pid"; } 2>/dev/null || return 1
  recorded_session "$pid" "$start" "$boot" ${WATCHED[$1]:+watched}
}

# pid NAME: NAME's pid, if it still runs (and is the process the stack started, not a reuse of its pid).
pid() {
  local pid start boot
  { read -r pid start boot < "$RUN/$1.pid"; } 2>/dev/null || return 1
  recorded_session "$pid" "$start" "$boot"
  [ -n "$SESSION" ] && echo "$SESSION"
}

# members [NAME...]: the pids of the stack's processes (of those NAMEs; by default of all).
members() {
  local names=("$@") sessions=() name
  [ $# -gt 0 ] || names=("${AIRFLOW_PROCESSES[@]}" "${SERVICES[@]}")
  for name in "${names[@]}"; do
    recorded "$name" || continue
    [ -z "$SESSION" ] || sessions+=("$SESSION")
  done
  {
    in_sessions "${sessions[@]}"
    [ $# -gt 0 ] || grep -lzxF -- "RN50_STACK_MEMBER=$STACK" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3
  } | grep -vx "$$" | sort -un || true
}

# wait_gone SECONDS [NAME...]: until no process of those NAMEs is left; 1 if some are at the deadline.
wait_gone() {
  local deadline=$((SECONDS + $1)); shift
  while [ -n "$(members "$@")" ]; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

# signal_all SIG [NAME...]: SIG to every process of those NAMEs, all at once (a parent that died first
# would orphan its children out of reach of the descendants rule), as systemd stops a service.
signal_all() {
  local sig=$1 left; shift
  left=$(members "$@" | xargs)
  # shellcheck disable=SC2086
  [ -z "$left" ] || kill -"$sig" $left 2>/dev/null || true
}

down() {
  trap '' INT TERM   # a second Ctrl-C must not leave half of it running
  local p name
  [ ! -d "$RUN" ] || touch "$RUN/stopping"   # tells `run` that its processes are going on purpose
  for name in "${AIRFLOW_PROCESSES[@]}" "${SERVICES[@]}"; do
    if recorded "$name" && [ -n "$STALE" ]; then echo "stack: $RUN/$name.pid is stale ($STALE): not signalled" >&2; fi
  done
  # Airflow first, while the database and the broker are there for its last writes. SIGTERM to the
  # tasks too (training saves a checkpoint), or Celery's warm shutdown waits for them; a scheduler has
  # been seen ignoring SIGTERM for 40 s: SIGKILL after the grace period.
  signal_all TERM "${AIRFLOW_PROCESSES[@]}"
  if ! wait_gone "$GRACE_S" "${AIRFLOW_PROCESSES[@]}"; then
    echo "stack: still running after ${GRACE_S} s, killed: $(members "${AIRFLOW_PROCESSES[@]}" | xargs)" >&2
    signal_all KILL "${AIRFLOW_PROCESSES[@]}"
  fi
  # Postgres: SIGINT to the postmaster alone is its fast shutdown (it ends its backends itself).
  if p=$(pid postgres); then kill -INT "$p" 2>/dev/null || true; fi
  signal_all TERM redis
  wait_gone 5 "${SERVICES[@]}" || true
  # Whatever is left, the marked orphans included.
  signal_all KILL
  wait_gone 3 || die "processes of $STACK survive SIGKILL: $(members | xargs)"
  rm -f "$RUN"/*.pid "$RUN/stopping"
}

# ---- what a start needs ----

pg_bin() {  # the newest PostgreSQL's bin directory (Debian: /usr/lib/postgresql/VERSION/bin)
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/postgres" ] && echo "$d"; done | sort -V | tail -n 1
}

install_missing() {
  local need=()
  [ -n "$(pg_bin)" ] || need+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  [ ${#need[@]} -eq 0 ] && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "stack: installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > "$LOGS/apt-get.log" 2>&1 \
      || die "apt-get install ${need[*]} failed; see $LOGS/apt-get.log"
  else
    die "missing Debian packages: ${need[*]} (run: sudo apt-get install ${need[*]})"
  fi
}

free_ports() {  # N TAKEN...: N distinct free ports on 127.0.0.1, none of the TAKEN ones
  # All held open while picking: a port picked and closed may be picked again.
  "$VENV/bin/python" - "$@" <<'PY'
import socket
import sys

n, taken, held = int(sys.argv[1]), {int(port) for port in sys.argv[2:]}, []
picked = []
while len(picked) < n:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
    if s.getsockname()[1] not in taken:
        picked.append(s.getsockname()[1])
print(*picked)
PY
}

check_port_free() {  # PORT SETTING. SO_REUSEADDR, as the servers bind: a closed connection's TIME_WAIT is no user.
  "$VENV/bin/python" -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null \
    || die "port $1 on 127.0.0.1 is in use (make airflow? another stack?); choose another with $2=PORT"
}

secret() { sed -n "s/^$1=//p" "$STACK/secrets.env" | tail -n 1; }

init_secrets() {
  # compose's secrets, generated and checked by compose's own script (refuses weak or published ones).
  sh "$ROOT/docker/secrets.sh" init "$STACK/secrets.env" || die "$STACK/secrets.env: see above"
  if [ -z "$(secret REDIS_PASSWORD)" ]; then
    echo "REDIS_PASSWORD=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >> "$STACK/secrets.env"
  fi
}

# Fill STACK_ENV with NAME=value for every setting in scripts/stack.env (as plain shell variables, so
# nothing of it leaks into the commands this script runs itself).
load_env() {
  local key
  # shellcheck disable=SC1091
  . "$RUN/ports"
  # shellcheck disable=SC2034  # read by stack.env
  POSTGRES_PASSWORD=$(secret POSTGRES_PASSWORD) MINIO_ROOT_PASSWORD=$(secret MINIO_ROOT_PASSWORD) \
    AIRFLOW_JWT_SECRET=$(secret AIRFLOW_JWT_SECRET) AIRFLOW_FERNET_KEY=$(secret AIRFLOW_FERNET_KEY) \
    REDIS_PASSWORD=$(secret REDIS_PASSWORD)
  # shellcheck disable=SC1091
  . "$ROOT/scripts/stack.env"
  STACK_ENV=()
  for key in $(sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' "$ROOT/scripts/stack.env"); do
    STACK_ENV+=("$key=${!key}")
  done
}

# PostgreSQL refuses to run as root; as root, it runs as the postgres user.
AS_POSTGRES=()
[ "$(id -u)" != 0 ] || AS_POSTGRES=(setpriv --reuid=postgres --regid=postgres --init-groups --)
as_postgres() { "${AS_POSTGRES[@]}" "$@"; }

start_postgres() {
  local bin dir=$STACK/postgres pw
  bin=$(pg_bin)
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "no user postgres to run PostgreSQL as (Debian's postgresql package creates it)"
    chown postgres: "$dir"
    chmod 711 "$STACK"   # postgres may pass through to its own directory, and see nothing else
    as_postgres test -w "$dir" || die "user postgres cannot reach $dir; put the stack where it can (RN50_STACK_DIR)"
  fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    # compose's postgres image: superuser airflow with the generated password, database airflow.
    pw=$dir/pwfile
    secret POSTGRES_PASSWORD > "$pw"
    [ "$(id -u)" != 0 ] || chown postgres: "$pw"
    as_postgres "$bin/initdb" -D "$dir/data" -U airflow --pwfile="$pw" --auth=scram-sha-256 --encoding=UTF8 \
      --locale=C > "$LOGS/initdb.log" 2>&1 || { rm -f "$pw"; die "initdb failed; see $LOGS/initdb.log"; }
    rm -f "$pw"
  fi
  # TCP on 127.0.0.1 only, no Unix socket (Debian's default directory is not ours).
  start postgres "${AS_POSTGRES[@]}" "$bin/postgres" -D "$dir/data" -p "$STACK_PG_PORT" \
    -c listen_addresses=127.0.0.1 -c unix_socket_directories=
  for _ in $(seq 60); do
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$STACK_PG_PORT" && break
    pid postgres >/dev/null || die "postgres exited; see $LOGS/postgres.log"
    sleep 0.5
  done
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$STACK_PG_PORT" || die "postgres is not ready; see $LOGS/postgres.log"
  PGPASSWORD=$(secret POSTGRES_PASSWORD) "$bin/psql" -qAt -h 127.0.0.1 -p "$STACK_PG_PORT" -U airflow -d postgres \
    -c "SELECT 1 FROM pg_database WHERE datname = 'airflow'" | grep -q 1 \
    || PGPASSWORD=$(secret POSTGRES_PASSWORD) "$bin/createdb" -h 127.0.0.1 -p "$STACK_PG_PORT" -U airflow airflow
}

start_redis() {
  local conf=$STACK/redis/redis.conf
  mkdir -p "$STACK/redis"
  # The password in a file of mode 0600, not on a command line that `ps` shows. No persistence, as
  # compose's redis has no volume.
  printf '%s\n' "bind 127.0.0.1" "port $STACK_REDIS_PORT" "protected-mode yes" "dir $STACK/redis" \
    "save \"\"" "appendonly no" "daemonize no" "requirepass $(secret REDIS_PASSWORD)" > "$conf"
  start redis redis-server "$conf"
  for _ in $(seq 60); do
    [ "$(REDISCLI_AUTH=$(secret REDIS_PASSWORD) redis-cli -h 127.0.0.1 -p "$STACK_REDIS_PORT" ping 2>/dev/null)" = PONG ] \
      && return
    pid redis >/dev/null || die "redis exited; see $LOGS/redis.log"
    sleep 0.5
  done
  die "redis is not ready; see $LOGS/redis.log"
}

start_s3() {
  start moto "$VENV/bin/moto_server" -H 127.0.0.1 -p "$STACK_S3_PORT"
  for _ in $(seq 100); do
    "$VENV/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$STACK_S3_PORT/moto-api/', timeout=1)" \
      2>/dev/null && break
    pid moto >/dev/null || die "moto_server exited; see $LOGS/moto.log"
    sleep 0.3
  done
  # compose's minio-init: the bucket of the DVC remote and the registry, versioned.
  env "${STACK_ENV[@]}" "$AIRFLOW_VENV/bin/python" - <<'PY' || die "could not create the bucket on moto_server"
import os

import boto3

s3, bucket = boto3.client("s3"), os.environ["RN50_BUCKET"]
s3.create_bucket(Bucket=bucket)
s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
PY
}

# compose's airflow-init: the metadata DB schema, the `gpu` pool, the git repo publish writes DVC
# pointers to (new each start, like the S3 store it points into), and the sample in the DVC remote.
init_airflow() {
  local registry=$STACK/registry
  mkdir -p "$STACK/airflow" "$STACK/runs/workspaces"
  (
    export "${STACK_ENV[@]}" PATH="$AIRFLOW_VENV/bin:$PATH"
    airflow db migrate > "$LOGS/migrate.log" 2>&1 || die "airflow db migrate failed; see $LOGS/migrate.log"
    airflow pools set gpu "$RN50_NUM_GPUS" "GPUs of the gpu queue's worker" > /dev/null
    rm -rf "$registry"
    git init -q "$registry"
    (cd "$registry" && dvc init -q && cp "$ROOT/.dvc/config" .dvc/config && git add .dvc \
      && git -c user.name=rn50 -c user.email=rn50@localhost commit -qm "model registry")
    if [ ! -d "$ROOT/data/imagenet" ]; then  # what `make sample` (a prerequisite of make stack) does
      echo "stack: no data/imagenet: making the sample dataset (make sample)"
      (cd "$ROOT" && "$VENV/bin/rn50" make-sample data/imagenet > "$LOGS/sample.log" 2>&1 && dvc commit --quiet data.dvc) \
        || die "could not make the sample dataset data/imagenet; see $LOGS/sample.log"
    fi
    (cd "$ROOT" && dvc push --quiet data.dvc) || die "dvc push data.dvc to the stack's S3 failed"
  )
}

start_airflow() {
  local run=("${STACK_ENV[@]}" PATH="$AIRFLOW_VENV/bin:/usr/local/bin:/usr/bin:/bin")
  local gpu=("${STACK_ENV[@]}" PATH="$VENV/bin:/usr/local/bin:/usr/bin:/bin")
  # Each worker records its name in the task instances it runs (tasks/hostname.py): both run here.
  local named=(AIRFLOW__CORE__HOSTNAME_CALLABLE=tasks.hostname.hostname)
  start api-server "${run[@]}" airflow api-server
  start scheduler "${run[@]}" airflow scheduler
  start dag-processor "${run[@]}" airflow dag-processor
  # No log servers: they listen on every interface; the workers write the task logs into the one
  # AIRFLOW_HOME/logs that the api-server reads (compose's shared airflow-logs volume).
  start triggerer "${run[@]}" airflow triggerer --skip-serve-logs
  # worker-default: this machine has 2 cores; compose's airflow-worker takes Celery's default.
  start worker-default "${run[@]}" "${named[@]}" RN50_WORKER_NAME=worker-default \
    airflow celery worker --queues default --concurrency 2 --skip-serve-logs --celery-hostname "worker-default@%h"
  start worker-gpu "${gpu[@]}" "${named[@]}" RN50_WORKER_NAME=worker-gpu \
    airflow celery worker --queues gpu --concurrency 1 --skip-serve-logs --celery-hostname "worker-gpu@%h"
}

health() {  # WAIT_S: scripts/stack_health.py with the stack's environment
  env "${STACK_ENV[@]}" "$AIRFLOW_VENV/bin/python" "$ROOT/scripts/stack_health.py" "$1" "$RUN" "${WORKERS[@]}"
}

login() {
  "$VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' \
    "$STACK/airflow/simple_auth_manager_passwords.json.generated"
}

up() {
  [ -x "$VENV/bin/airflow" ] || die "$VENV has no Airflow: make setup"
  [ -x "$AIRFLOW_VENV/bin/airflow" ] || die "$AIRFLOW_VENV has no Airflow: make stack builds it"
  [ -z "$(members)" ] || die "already running (scripts/stack.sh status); stop it with make stack-down"
  mkdir -p "$STACK" "$RUN" "$LOGS"
  rm -f "$RUN"/*.pid "$RUN/stopping"
  install_missing
  init_secrets
  local api=${AIRFLOW_PORT:-8080} s3=${RN50_S3_PORT:-9000}
  check_port_free "$api" AIRFLOW_PORT
  check_port_free "$s3" RN50_S3_PORT
  [ "$api" != "$s3" ] || die "AIRFLOW_PORT and RN50_S3_PORT are both $api"
  local ports pg redis health
  ports=$(free_ports 3 "$api" "$s3")
  read -r pg redis health <<< "$ports"
  printf '%s\n' "STACK_API_PORT=$api" "STACK_S3_PORT=$s3" "STACK_PG_PORT=$pg" "STACK_REDIS_PORT=$redis" \
    "STACK_HEALTH_PORT=$health" > "$RUN/ports"
  load_env
  # From here on, a failure stops what has started.
  trap 'down' EXIT
  echo "stack: starting in $STACK (logs in $LOGS)"
  start_postgres
  start_redis
  start_s3
  init_airflow
  start_airflow
  health "$WAIT_S"
  trap - EXIT
  chmod 600 "$STACK/airflow/simple_auth_manager_passwords.json.generated"
  cat <<EOT
Airflow UI: http://127.0.0.1:$STACK_API_PORT  (login admin / $(login)); DAG resnet50_retrain
  workers: worker-default@$(hostname) (queue default, $AIRFLOW_VENV: no TensorFlow),
           worker-gpu@$(hostname) (queue gpu, $VENV)
  S3 (moto_server): $AWS_ENDPOINT_URL, bucket $RN50_BUCKET; the registry repo: $RN50_DVC_REPO
  the stack's environment for a command: scripts/stack.sh exec COMMAND (e.g. airflow dags list)
EOT
}

run() {
  up
  trap 'echo "stack: stopping"; down; exit 0' INT TERM
  echo "Ctrl-C (or make stack-down) stops it all."
  local name
  while true; do
    # `make stack-down` from elsewhere is stopping it.
    if [ -e "$RUN/stopping" ] || [ ! -f "$RUN/api-server.pid" ]; then echo "stack: stopped by stack-down"; exit 0; fi
    for name in "${AIRFLOW_PROCESSES[@]}" "${SERVICES[@]}"; do
      if ! pid "$name" >/dev/null && [ -f "$RUN/$name.pid" ]; then
        echo "stack: $name exited; see $LOGS/$name.log. Stopping the rest." >&2
        tail -n 5 "$LOGS/$name.log" >&2 || true
        down
        exit 1
      fi
    done
    sleep 2 & wait $!
  done
}

status() {
  local name p bad=0
  for name in "${SERVICES[@]}" "${AIRFLOW_PROCESSES[@]}"; do
    if p=$(pid "$name"); then echo "$name: running (pid $p)"; else echo "$name: not running"; bad=1; fi
  done
  [ $bad = 0 ] || return 1
  load_env
  health 0 && echo "healthy: api-server, metadata DB, scheduler, dag-processor, triggerer, both workers"
}

main() {
  case ${1-} in
    up) up ;;
    run) run ;;
    down) down ;;
    status) status ;;
    exec)
      shift
      [ $# -gt 0 ] || die "usage: $0 exec COMMAND..."
      [ -f "$RUN/ports" ] || die "not started yet (make stack)"
      load_env
      export "${STACK_ENV[@]}" PATH="$AIRFLOW_VENV/bin:$PATH"
      exec "$@"
      ;;
    *) echo "usage: $0 up | run | down | status | exec COMMAND..." >&2; exit 2 ;;
  esac
}
# Bash reads a script as it runs it: a script edited meanwhile (a git pull while `make stack` runs) must
# not be read on from the old offset when a command returns. This line is read whole before it runs.
main "$@"; exit
