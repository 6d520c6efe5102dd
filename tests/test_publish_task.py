"""The publish task as the default queue's worker runs it: without TensorFlow (docker/airflow.Dockerfile
asserts it is absent there), so it only uploads, and the `.keras` export is evaluate's job on the gpu queue.

The subprocess blocks TensorFlow and Keras with an import hook that also records every attempt, so an
import that is tried and its ImportError caught still fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from publish_support import BUCKET, keys, make_model_dir, make_run_outputs, s3
from support import REPO, rn50, sha256

from pipeline.workspace import RunWorkspace

RUN_ID = "manual__2026-12-01T00:00:00+00:00"

WITHOUT_TENSORFLOW = """
import json, sys

tried = []


class NoTensorFlow:  # what the default queue's environment looks like
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("tensorflow", "keras", "tf_keras", "horovod"):
            tried.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (not on the default queue)")


sys.meta_path.insert(0, NoTensorFlow())
from tasks import publish
from tasks.common import workspace
from tasks.connections import s3_client

try:
    summary = publish.run(workspace(sys.argv[2], sys.argv[1]), client=s3_client(), bucket=sys.argv[3])
except Exception as exc:
    summary = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps({"summary": summary, "tried": tried, "loaded": sorted(m for m in sys.modules if "tensorflow" in m)}))
"""


def _publish_without_tensorflow(root, env) -> dict:
    child = {k: v for k, v in os.environ.items() if not k.startswith("RN50_")}
    result = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, str(root), RUN_ID, BUCKET],
                            env={**child, **env}, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def bucket(s3_env):
    client = s3(s3_env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=BUCKET)
    return client


def test_publish_task_uploads_evaluates_export_without_tensorflow(bucket, s3_env, tmp_path):
    ws = make_run_outputs(RunWorkspace(tmp_path / "workspaces", RUN_ID).create())
    out = _publish_without_tensorflow(ws.root, s3_env)
    assert out["tried"] == [] and out["loaded"] == [], out
    assert out["summary"].get("version") == "v0001", out
    manifest = json.loads(bucket.get_object(Bucket=BUCKET, Key="models/resnet50/v0001/manifest.json")["Body"].read())
    assert manifest["files"]["model.keras"]["sha256"] == sha256(ws.export / "model.keras")


def test_publish_task_refuses_a_missing_or_stale_export_in_one_line(bucket, s3_env, tmp_path):
    ws = make_run_outputs(RunWorkspace(tmp_path / "workspaces", RUN_ID).create(), keras=False)
    out = _publish_without_tensorflow(ws.root, s3_env)
    error = out["summary"].get("error", "")
    assert f"{ws.export / 'model.keras'}: missing" in error and "evaluate" in error and "\n" not in error, out
    assert out["tried"] == [], out

    # An export older than the newest checkpoint (training was resumed after evaluate exported).
    (ws.export / "model.keras").write_bytes(b"an export of ckpt-1")
    index = ws.model / "checkpoints/ckpt-2.index"
    os.utime(index, ns=(index.stat().st_atime_ns, (ws.export / "model.keras").stat().st_mtime_ns + 10**9))
    out = _publish_without_tensorflow(ws.root, s3_env)
    error = out["summary"].get("error", "")
    assert "model.keras: older than checkpoint ckpt-2" in error and "evaluate" in error and "\n" not in error, out
    assert out["tried"] == [] and keys(bucket) == [], out


def test_cli_no_export_refuses_a_stale_export_and_publishes_without_one(bucket, s3_env, tmp_path):
    """`rn50 publish --no-export` uploads what is there: no model.keras is allowed, a stale one is not."""

    model_dir = make_model_dir(tmp_path / "m")
    index = model_dir / "checkpoints/ckpt-2.index"
    os.utime(index, ns=(index.stat().st_atime_ns, (model_dir / "model.keras").stat().st_mtime_ns + 10**9))
    env = {**os.environ, **s3_env}
    stale = rn50("publish", "--no-export", "--model-dir", str(model_dir), "--bucket", BUCKET, env=env)
    assert stale.returncode == 2, stale.stderr
    assert stale.stderr.strip() == (f"rn50 publish: error: {model_dir / 'model.keras'}: older than checkpoint ckpt-2; "
                                    "the evaluate task exports it on the gpu queue: re-run evaluate (or `rn50 publish "
                                    "--export` where TensorFlow is installed)")
    assert keys(bucket) == []
    (model_dir / "model.keras").unlink()
    published = rn50("publish", "--no-export", "--model-dir", str(model_dir), "--bucket", BUCKET, env=env)
    assert published.returncode == 0, published.stderr
    manifest = json.loads(bucket.get_object(Bucket=BUCKET, Key="models/resnet50/v0001/manifest.json")["Body"].read())
    assert "model.keras" not in manifest["files"]
