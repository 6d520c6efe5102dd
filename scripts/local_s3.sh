# shellcheck shell=bash
# Sourced by scripts/demo.sh (make demo) and scripts/airflow.sh (make airflow): the local S3 server and
# the model-registry repo both run against (scripts/stack.sh does the same for make stack).
#
# Both start afresh each time: moto_server keeps its objects in memory, so every start has an empty
# store that gets the bucket and the sample dataset (`dvc push data.dvc`, where fetch_data pulls it
# from; made first if data/imagenet is missing, as `make sample` makes it), and a new registry repo:
# a tag resnet50@v0001 kept from an earlier start would name a version the new store does not have,
# and publish would refuse the new v0001.
# A server the caller names with AWS_ENDPOINT_URL is the caller's: no server is started and nothing is
# pushed; only a missing bucket is created. Likewise a caller's RN50_DVC_REPO is kept, created if
# missing, never replaced.
#
# local_s3_up REGISTRY LOG [PORT...]: needs ROOT (the checkout) and BIN (the venv's bin). REGISTRY:
#   where the registry repo goes unless RN50_DVC_REPO names one; LOG: the server's log; PORTs: not for
#   the server (the caller's own, not listening yet). Exports AWS_*, RN50_BUCKET and RN50_DVC_REPO;
#   sets S3_PID to the server's pid (empty for the caller's server). The server runs in a
#   session of its own with the caller's environment (a marker in it reaches the server too).
# local_s3_exports: the export lines a command in another terminal needs to reach that S3.
# local_s3_down: stops the server local_s3_up started (SIGTERM, SIGKILL after 5 s).

local_s3_up() {
  local registry=$1 log=$2 port
  shift 2
  export RN50_BUCKET=${RN50_BUCKET:-rn50-artifacts}
  S3_PID=
  LOCAL_S3_CREDENTIALS=
  mkdir -p "$(dirname "$log")"
  if [ -z "${AWS_ENDPOINT_URL:-}" ]; then
    # Throwaway credentials for a throwaway server, in place of any of the user's own.
    unset AWS_PROFILE AWS_SESSION_TOKEN
    export AWS_ACCESS_KEY_ID=rn50-local AWS_SECRET_ACCESS_KEY=rn50-local-secret AWS_DEFAULT_REGION=us-east-1
    LOCAL_S3_CREDENTIALS=1
    port=${RN50_S3_PORT:-}
    [ -n "$port" ] || port=$("$BIN/python" - "$@" <<'PY'
import socket
import sys

held = []  # all open while picking, so that none is picked twice
while True:
    held.append(socket.socket())
    held[-1].bind(("127.0.0.1", 0))
    if str(held[-1].getsockname()[1]) not in sys.argv[1:]:
        break
print(held[-1].getsockname()[1])
PY
)
    export AWS_ENDPOINT_URL=http://127.0.0.1:$port
    setsid "$BIN/moto_server" -H 127.0.0.1 -p "$port" > "$log" 2>&1 < /dev/null &
    S3_PID=$!
    for _ in $(seq 100); do
      "$BIN/python" -c "import urllib.request; urllib.request.urlopen('$AWS_ENDPOINT_URL/moto-api/', timeout=1)" \
        2>/dev/null && break
      kill -0 "$S3_PID" 2>/dev/null || { echo "moto_server exited; see $log" >&2; return 1; }
      sleep 0.3
    done
  fi
  export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
  # The bucket of the DVC remote and the registry, versioned as compose's minio-init makes it.
  "$BIN/python" - <<'PY' || { echo "could not create bucket $RN50_BUCKET on $AWS_ENDPOINT_URL" >&2; return 1; }
import os

import boto3
import botocore.exceptions

s3, bucket = boto3.client("s3"), os.environ["RN50_BUCKET"]
try:
    s3.head_bucket(Bucket=bucket)
except botocore.exceptions.ClientError:
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
PY
  if [ -n "$S3_PID" ]; then
    if [ ! -d "$ROOT/data/imagenet" ]; then  # what `make sample` (a prerequisite of both targets) does
      (cd "$ROOT" && "$BIN/rn50" make-sample data/imagenet > /dev/null && "$BIN/dvc" commit --quiet data.dvc) \
        || { echo "could not make the sample dataset data/imagenet (make sample)" >&2; return 1; }
    fi
    (cd "$ROOT" && "$BIN/dvc" push --quiet data.dvc) || { echo "dvc push data.dvc to $AWS_ENDPOINT_URL failed" >&2; return 1; }
  fi
  if [ -z "${RN50_DVC_REPO:-}" ]; then
    export RN50_DVC_REPO=$registry
    rm -rf "$RN50_DVC_REPO"
  fi
  if [ ! -d "$RN50_DVC_REPO/.git" ]; then
    mkdir -p "$RN50_DVC_REPO"
    git -C "$RN50_DVC_REPO" init -q
    (cd "$RN50_DVC_REPO" && "$BIN/dvc" init -q && cp "$ROOT/.dvc/config" .dvc/config && git add .dvc \
      && git -c user.name=rn50 -c user.email=rn50@localhost commit -qm "model registry") \
      || { echo "could not create the registry repo $RN50_DVC_REPO" >&2; return 1; }
  fi
}

local_s3_exports() {
  local name
  echo "export PATH=\"$BIN:\$PATH\""
  for name in AWS_ENDPOINT_URL AWS_DEFAULT_REGION ${LOCAL_S3_CREDENTIALS:+AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY}; do
    printf 'export %s=%q\n' "$name" "${!name}"
  done
  [ -n "$LOCAL_S3_CREDENTIALS" ] || echo "# and your credentials for $AWS_ENDPOINT_URL (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
}

local_s3_down() {
  [ -n "${S3_PID:-}" ] || return 0
  kill -TERM "$S3_PID" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$S3_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$S3_PID" 2>/dev/null || true
  wait "$S3_PID" 2>/dev/null || true
}
