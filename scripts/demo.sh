#!/usr/bin/env bash
# `make demo`: the whole DAG, end to end, on this machine: a local S3 server, a SQLite Airflow home,
# `airflow dags test resnet50_retrain` with the smoke profile, then the published version fetched back
# and verified. Usage: scripts/demo.sh VENV [CONF_JSON]
set -euo pipefail

VENV=$(cd "$1" && pwd)
CONF=${2:-'{"profile": "smoke", "num_gpus": 1}'}
ROOT=$(pwd)
BIN=$VENV/bin
BUCKET=${RN50_BUCKET:-rn50-artifacts}
export PATH="$BIN:$PATH"

export AIRFLOW_HOME=$ROOT/airflow-home
export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$AIRFLOW_HOME/airflow.db
export RN50_WORKSPACE_ROOT=$ROOT/runs/workspaces
export RN50_DVC_REPO=$ROOT/runs/registry
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
# Throwaway credentials for the throwaway server; a real deployment uses its own.
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo-secret AWS_DEFAULT_REGION=us-east-1
export DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false TF_CPP_MIN_LOG_LEVEL=2

PORT=$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
mkdir -p "$AIRFLOW_HOME" runs
"$BIN/moto_server" -H 127.0.0.1 -p "$PORT" > runs/moto_server.log 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null || true; wait $MOTO 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  "$BIN/python" -c "import urllib.request; urllib.request.urlopen('$AWS_ENDPOINT_URL/moto-api/', timeout=1)" \
    2>/dev/null && break
  sleep 0.2
done
echo "== local S3 server on $AWS_ENDPOINT_URL (pid $MOTO); bucket $BUCKET"
"$BIN/python" -c "import boto3; boto3.client('s3').create_bucket(Bucket='$BUCKET')"

echo "== dvc push: the sample dataset to s3://$BUCKET/dvc, where fetch_data will pull it from"
"$BIN/dvc" push --quiet data.dvc

echo "== model registry repo for the DVC pointer: $RN50_DVC_REPO"
if [ ! -d "$RN50_DVC_REPO/.git" ]; then
  mkdir -p "$RN50_DVC_REPO"
  git -C "$RN50_DVC_REPO" init -q
  (cd "$RN50_DVC_REPO" && "$BIN/dvc" init -q && cp "$ROOT/.dvc/config" .dvc/config \
    && git add .dvc && git -c user.name=rn50 -c user.email=rn50@localhost commit -qm "model registry")
fi

echo "== Airflow home: $AIRFLOW_HOME (SQLite)"
"$BIN/airflow" db migrate > runs/airflow-migrate.log 2>&1
"$BIN/airflow" pools set gpu 1 "GPU slots" > /dev/null

echo "== airflow dags test resnet50_retrain with conf $CONF"
"$BIN/airflow" dags test resnet50_retrain --conf "$CONF" 2>&1 | tee runs/demo-dag.log \
  | grep --line-buffered -E "^(\[0\]<stdout>:)?(data |running: |step [0-9]|training |resumed |top-1|PASS|FAIL|OVERRIDE|published )|Task failed|failed \(try" \
  || true
WORKSPACE=$(ls -td "$RN50_WORKSPACE_ROOT"/manual__* | head -1)
echo "== run workspace: $WORKSPACE"
if [ ! -f "$WORKSPACE/model/decision.json" ]; then
  echo "the run did not reach the gate; see runs/demo-dag.log" >&2; exit 1
fi
"$BIN/python" -c "import json,sys; d=json.load(open(sys.argv[1])); print('gate:', d['verdict'], *d['reasons'], sep='\n  ')" \
  "$WORKSPACE/model/decision.json"
VERSION=$("$BIN/rn50" list --bucket "$BUCKET" | awk '/^v[0-9]+/ {v=$1} END {print v}')
if [ -z "$VERSION" ]; then echo "no version was published; see runs/demo-dag.log" >&2; exit 1; fi
rm -rf runs/demo/pulled
"$BIN/rn50" pull --bucket "$BUCKET" --version latest runs/demo/pulled
echo
echo "== published s3://$BUCKET/models/resnet50/$VERSION/ (verified by rn50 pull into runs/demo/pulled)"
"$BIN/python" -c "import json; m=json.load(open('runs/demo/pulled/manifest.json')); print('top-1', m['metrics']['top1_accuracy'], '%')"
cat <<EOT
Fetch it (with the server running and the same AWS_* settings):
  rn50 pull --bucket $BUCKET --version $VERSION DEST
  cd $RN50_DVC_REPO && dvc pull models/resnet50.dvc
EOT
