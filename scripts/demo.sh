#!/usr/bin/env bash
# `make demo`: the whole DAG, end to end, on this machine: a local S3 server, a SQLite Airflow home,
# `airflow dags test resnet50_retrain` with the smoke profile, then the published version fetched back
# and verified twice, as its consumers fetch it: `rn50 pull`, and `dvc pull` of the DVC pointer in a
# fresh clone of the registry repo, in a shell with only the export lines it prints, while the server
# still runs. Run it again and again: each run starts afresh with a new S3 server (moto, in memory) with
# the bucket and the sample dataset, and a new registry repo (scripts/local_s3.sh); the Airflow home
# (airflow-home/) and the run workspaces (runs/workspaces/) are kept.
# Usage: scripts/demo.sh VENV [CONF_JSON]
set -euo pipefail
# One compound command, read whole before it runs: editing this file meanwhile (a git pull) cannot
# change what a running one does.
{

VENV=$(cd "$1" && pwd)
CONF=${2:-'{"profile": "smoke", "num_gpus": 1}'}
FINETUNE_STEPS=60  # run 2: smoke's recipe squeezed into 60 steps (2 epochs of the sample on one rank)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$VENV/bin
export PATH="$BIN:$PATH"
cd "$ROOT"

export AIRFLOW_HOME=$ROOT/airflow-home
export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$AIRFLOW_HOME/airflow.db
export RN50_WORKSPACE_ROOT=$ROOT/runs/workspaces
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false TF_CPP_MIN_LOG_LEVEL=2
# shellcheck source=scripts/local_s3.sh
. "$ROOT/scripts/local_s3.sh"

fail() { echo "make demo: $*" >&2; exit 1; }

mkdir -p "$AIRFLOW_HOME" runs
trap local_s3_down EXIT
local_s3_up "$ROOT/runs/registry" "$ROOT/runs/moto_server.log" || fail "see above"
echo "== S3 server on $AWS_ENDPOINT_URL${S3_PID:+ (moto_server, pid $S3_PID)}; bucket $RN50_BUCKET${S3_PID:+, the sample dataset pushed}"
echo "== model registry repo for the DVC pointer: $RN50_DVC_REPO"

echo "== Airflow home: $AIRFLOW_HOME (SQLite)"
"$BIN/airflow" db migrate > runs/airflow-migrate.log 2>&1 || fail "airflow db migrate failed; see runs/airflow-migrate.log"
"$BIN/airflow" pools set gpu 1 "GPU slots" > /dev/null

# One `airflow dags test` run; sets WORKSPACE (the run's new workspace) and prints the gate's decision.
dag_run() {
  local conf=$1 log=$2 before
  before=$(ls -d "$RN50_WORKSPACE_ROOT"/manual__* 2>/dev/null || true)
  echo "== airflow dags test resnet50_retrain with conf $conf"
  "$BIN/airflow" dags test resnet50_retrain --conf "$conf" 2>&1 | tee "$log" \
    | grep --line-buffered -E "^(\[0\]<stdout>:)?(data |running: |step [0-9]|training |resumed |weights from |top-1|PASS|FAIL|OVERRIDE|published |run report: |baseline )|Task failed|failed \(try" \
    || true
  WORKSPACE=$(comm -13 <(echo "$before") <(ls -d "$RN50_WORKSPACE_ROOT"/manual__* 2>/dev/null || true) | tail -1)
  [ -n "$WORKSPACE" ] || fail "the run made no workspace in $RN50_WORKSPACE_ROOT; see $log"
  echo "== run workspace: $WORKSPACE"
  [ -f "$WORKSPACE/gate/decision.json" ] || fail "the run did not reach the gate; see $log"
  "$BIN/python" -c "import json,sys; d=json.load(open(sys.argv[1])); print('gate:', d['verdict'], *d['reasons'], sep='\n  ')" \
    "$WORKSPACE/gate/decision.json"
}

latest_version() { "$BIN/rn50" list --bucket "$RN50_BUCKET" | awk '/^v[0-9]+/ {v=$1} END {print v}'; }
passed() { "$BIN/python" -c 'import json,sys; sys.exit(not json.load(open(sys.argv[1]))["publish"])' "$WORKSPACE/gate/decision.json"; }

# Run 1: a model trained from scratch; into an empty registry, so only NVIDIA's floor (for smoke, a
# sanity floor) gates it.
dag_run "$CONF" runs/demo-dag.log
passed || fail "run 1's model did not pass the gate (the reasons above); see runs/demo-dag.log"
CHAMPION=$(latest_version)
[ -n "$CHAMPION" ] || fail "run 1 passed the gate but published nothing; see runs/demo-dag.log"
echo "== run 1 published $CHAMPION"
# Run 2, as a monthly refresh would: a short fine-tune from the champion, gated against the champion
# evaluated again in this run, on the same images as the candidate. Either verdict is a result: a pass
# publishes a new version, a fail keeps the champion as `latest`.
REFRESH=$("$BIN/python" -c 'import json,sys; c=json.loads(sys.argv[1]); c.update(init_from="champion", steps=int(sys.argv[2])); print(json.dumps(c))' \
  "$CONF" "$FINETUNE_STEPS")
dag_run "$REFRESH" runs/demo-refresh.log
if passed; then
  VERSION=$(latest_version)
  [ "$VERSION" != "$CHAMPION" ] || fail "run 2 passed the gate but published nothing; see runs/demo-refresh.log"
  echo "== run 2 passed the gate and published $VERSION, the new champion"
else
  VERSION=$CHAMPION
  echo "== run 2 did not pass the gate: nothing published, $CHAMPION stays the champion (the gate at work, not an error)"
  echo "   its run report, with the gate's reasons: $(realpath -m "$WORKSPACE/report/index.html")"
fi
rm -rf runs/demo/pulled
"$BIN/rn50" pull --bucket "$RN50_BUCKET" --version latest runs/demo/pulled
echo
echo "== published s3://$RN50_BUCKET/models/resnet50/$VERSION/ (verified by rn50 pull into runs/demo/pulled)"
"$BIN/python" -c "import json; m=json.load(open('runs/demo/pulled/manifest.json')); print('top-1', m['metrics']['top1_accuracy'], '%')"

# The consumer's path: a fresh clone of the registry repo and `dvc pull` of the pointer, in a shell with
# nothing of this one's environment but the export lines printed here.
CONSUMER=$ROOT/runs/demo/consumer
rm -rf "$CONSUMER"
COMMANDS="$(local_s3_exports)
git clone -q $(printf %q "$RN50_DVC_REPO") $(printf %q "$CONSUMER")
cd $(printf %q "$CONSUMER") && dvc pull models/resnet50.dvc"
echo "== the consumer's path, in a new shell:"
echo "$COMMANDS" | sed 's/^/  /'
CREDENTIALS=()  # the caller's own, for the caller's S3 server: the export lines do not show them
[ -n "$LOCAL_S3_CREDENTIALS" ] || for name in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE; do
  [ -z "${!name:-}" ] || CREDENTIALS+=("$name=${!name}")
done
env -i HOME="$HOME" PATH=/usr/local/bin:/usr/bin:/bin "${CREDENTIALS[@]}" bash -euo pipefail -c "$COMMANDS" \
  > runs/demo/consumer.log 2>&1 \
  || { tail -n 5 runs/demo/consumer.log >&2; fail "the consumer's dvc pull failed; see runs/demo/consumer.log"; }
# The pulled bytes against the manifest rn50 pull verified: the same files, the same sha256.
"$BIN/python" - "$CONSUMER" runs/demo/pulled/manifest.json <<'PY' || exit 1
import hashlib
import json
import sys
from pathlib import Path

import yaml

clone, manifest = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
pulled = clone / "models" / yaml.safe_load((clone / "models" / "resnet50.dvc").read_text())["outs"][0]["path"]
files = {p.relative_to(pulled).as_posix() for p in pulled.rglob("*") if p.is_file()}
if files != set(manifest["files"]):
    sys.exit(f"make demo: {pulled}: dvc pull brought other files than the manifest names: "
             f"{sorted(files ^ set(manifest['files']))}")
for name, entry in sorted(manifest["files"].items()):
    if hashlib.sha256((pulled / name).read_bytes()).hexdigest() != entry["sha256"]:
        sys.exit(f"make demo: {pulled / name}: its sha256 differs from the manifest of {manifest['version']}")
print(f"dvc pull in a fresh clone: {len(files)} files, every sha256 as in the manifest of {manifest['version']}")
PY
cat <<EOT
The S3 server stops now (its objects were in memory); \`make airflow\` keeps one running and prints the
same commands for it.
EOT
# Last: the run report the version carries (report/index.html: figures beside it, works offline), and how to open it.
REPORT=$(realpath -m runs/demo/pulled/report/index.html)
[ -f "$REPORT" ] || fail "runs/demo/pulled holds no report/index.html: the report task made none"
echo "== the run report of $VERSION (s3://$RN50_BUCKET/models/resnet50/$VERSION/report/index.html): $REPORT"
echo "   open it: xdg-open $(printf %q "$REPORT")   or: python3 -m webbrowser $(printf %q "file://$REPORT")"
exit
}
