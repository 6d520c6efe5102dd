"""`rn50 publish`, `rn50 list` and `rn50 pull` as a user runs them, and credentials found nowhere:
not in any output (success or failure), not in any object in the bucket, not in the registry repo."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import boto3
import pytest
from publish_support import BUCKET, SAVED_MODEL_FILES, add_saved_model, make_model_dir, registry_repo, reset
from support import REPO, rn50, sha256

from pipeline.provenance import dataset_version
from pipeline.publish.store import StoreError, make_client
from pipeline.redact import REDACTED
from pipeline.stages.publish import publish_model

KEY_ID = "AKIARN50KEYIDNOTLOG1"
SECRET = "rn50/Secret+Key-That_Must-Not-Leak"


@pytest.fixture
def env(s3_endpoint, dvc_env):
    reset(s3_endpoint)
    env = {**dvc_env, "AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "2", "AIRFLOW_CTX_DAG_ID": "resnet50_retrain",
           "AIRFLOW_CTX_DAG_RUN_ID": "scheduled__2026-12-01"}
    raw = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                       region_name="us-east-1")
    raw.create_bucket(Bucket=BUCKET)
    env["raw"] = raw
    return env


def test_cli_round_trip_and_no_credentials_anywhere(env, tmp_path):
    raw = env.pop("raw")
    outputs: list[str] = []

    def cli(*args: str, expect: int = 0, **overrides: str) -> subprocess.CompletedProcess:
        result = rn50(*args, env={**env, **overrides})
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == expect, f"rn50 {' '.join(args)}: {result.stdout}{result.stderr}"
        return result

    repo = registry_repo(tmp_path / "registry", env, f"s3://{BUCKET}/dvc")
    model_dir = add_saved_model(make_model_dir(tmp_path / "model"))
    report = tmp_path / "report.json"
    report.write_text('{"ok": true}\n')
    common = ("--model-dir", str(model_dir), "--bucket", BUCKET)
    # With the export (the model.keras and saved_model/ there are newer than the checkpoint, so they are kept).
    first = cli("publish", *common, "--validation-report", str(report), "--dvc-repo", str(repo),
                "--num-gpus", "2", "--hosts", "localhost:2")
    uri = f"s3://{BUCKET}/models/resnet50/v0001/"
    assert first.stdout == uri + "\n"
    assert "latest -> v0001" in first.stderr and "tag resnet50@v0001" in first.stderr
    again = cli("publish", *common, "--no-export", "--validation-report", str(report), "--dvc-repo", str(repo))
    assert again.stdout == uri + "\n" and f"0 files sent, {10 + len(SAVED_MODEL_FILES)} already there" in again.stderr

    listing = cli("list", "--bucket", BUCKET).stdout.splitlines()
    assert listing[0].split()[:2] == ["VERSION", "DATE"]
    # Its gate measured it against a live baseline (publish_support's decision: champion v0001); no report.
    assert listing[1].split()[0] == "v0001" and listing[1].split()[2:4] == ["95.00", "99.20"]
    assert listing[1].split()[4:] == ["champion", "v0001", "pass", dataset_version(REPO / "data.dvc")[:12], "-",
                                      "latest"]

    pulled = tmp_path / "pulled"
    assert "every sha256 verified" in cli("pull", "--bucket", BUCKET, str(pulled)).stdout
    assert sha256(pulled / "model.keras") == sha256(model_dir / "model.keras")
    for name in (*SAVED_MODEL_FILES, "labels.txt"):  # nested names come back where they were
        assert sha256(pulled / name) == sha256(model_dir / name), name
    assert sha256(pulled / "report.json") == sha256(report)

    # Failures: each one line, exit 1 (a check that ran and failed) or 2 (bad usage).
    key = "models/resnet50/v0001/model.keras"
    raw.put_object(Bucket=BUCKET, Key=key, Body=(model_dir / "model.keras").read_bytes()[:-10])
    refused = cli("pull", "--bucket", BUCKET, "--version", "v0001", str(tmp_path / "tampered"), expect=1)
    assert refused.stderr.startswith("rn50 pull: error: ") and "refusing" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1 and not (tmp_path / "tampered").exists()
    failed = make_model_dir(tmp_path / "failed", verdict="fail")
    gate = cli("publish", "--model-dir", str(failed), "--bucket", BUCKET, "--no-export", expect=1)
    assert "not publishing" in gate.stderr
    nobucket = cli("publish", "--model-dir", str(model_dir), "--bucket", "no-such-bucket", "--no-export", expect=1)
    assert "s3://no-such-bucket/: no such bucket" in nobucket.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    cli("list", "--bucket", BUCKET, expect=1, AWS_ENDPOINT_URL=down)
    cli("publish", *common, "--no-export", expect=1, AWS_ENDPOINT_URL=down.replace("//", f"//{KEY_ID}:{SECRET}@"))
    cli("pull", "--bucket", BUCKET, "--version", "v1", str(tmp_path / "x"), expect=2)
    cli("publish", "--model-dir", str(tmp_path / "nothing"), "--bucket", BUCKET, "--no-export", expect=2)
    denied = cli("pull", "--bucket", BUCKET, "--version", "v0002", str(tmp_path / "y"), expect=1)
    assert "not a published version" in denied.stderr

    # The grep: outputs, every object in the bucket, every file and commit of the registry repo.
    texts = list(outputs)
    for page in raw.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            texts.append(raw.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read().decode("latin-1"))
    texts += [p.read_bytes().decode("latin-1") for p in repo.rglob("*") if p.is_file()]
    texts.append(subprocess.run(["git", "-C", str(repo), "log", "-p", "--all"], capture_output=True,
                                text=True).stdout)
    texts += [p.read_text() for p in pulled.rglob("*.json")]
    for secret in (KEY_ID, SECRET):
        assert not [t for t in texts if secret in t]
    assert any('"dag_id": "resnet50_retrain"' in t for t in texts)  # the grep did see the manifest


def test_credentials_given_explicitly_or_in_lineage_are_redacted(s3_env, tmp_path):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    # A client with credentials of its own (as from an Airflow connection); a caller's careless lineage.
    client = make_client(access_key=KEY_ID, secret_key=SECRET, max_attempts=2)
    lineage = {"note": f"trained with {SECRET} by {KEY_ID}", "num_gpus": 8}
    result = publish_model(make_model_dir(tmp_path / "m"), client=client, bucket=BUCKET, lineage=lineage,
                           dvc_prefix=None)
    assert result.manifest["lineage"] == {"note": f"trained with {REDACTED} by {REDACTED}"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://user:{SECRET}@127.0.0.1:{s.getsockname()[1]}"
    client = make_client(endpoint_url=down, access_key=KEY_ID, secret_key=SECRET + "2", max_attempts=1)
    with pytest.raises(StoreError) as error:
        publish_model(make_model_dir(tmp_path / "n"), client=client, bucket=BUCKET)
    assert SECRET not in str(error.value) and KEY_ID not in str(error.value)
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "testing"


def test_publish_records_the_data_dir_it_is_told_not_the_checkouts_data_dvc(env, tmp_path, sample_dir):
    raw = env.pop("raw")
    model_dir = make_model_dir(tmp_path / "model")
    args = ("publish", "--model-dir", str(model_dir), "--bucket", BUCKET, "--no-export", "--data-dir")
    missing = rn50(*args, str(tmp_path / "nowhere"), env=env)
    assert missing.returncode == 2 and missing.stderr.strip().endswith("nowhere: no such directory")
    assert "Contents" not in raw.list_objects_v2(Bucket=BUCKET)
    result = rn50(*args, str(sample_dir), env=env)
    assert result.returncode == 0, result.stderr
    manifest = json.loads(raw.get_object(Bucket=BUCKET, Key="models/resnet50/v0001/manifest.json")["Body"].read())
    assert manifest["dataset_version"].startswith("unversioned:")
    assert manifest["dataset_version"] != dataset_version(REPO / "data.dvc")
    assert manifest["lineage"]["dataset"]["data_dir"] == str(sample_dir.resolve())
