"""fetch_data and publish on run workspaces: real git, real DVC (a directory remote), S3 on moto_server.

What a run's data is, where it lives, and that a run never deletes or reads another run's folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support import BIN, REPO, free_port

from tasks.common import workspace

BUCKET = "rn50-fetch-test"


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def _dvc(*args: str, cwd: Path) -> None:
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def data_repo(tmp_path, dvc_env, monkeypatch) -> Path:
    """A project whose data.dvc pins a two-shard dataset pushed to a directory remote."""
    for key, value in dvc_env.items():
        monkeypatch.setenv(key, value)
    repo = tmp_path / "project"
    data = repo / "data" / "imagenet"
    data.mkdir(parents=True)
    _git("init", "-q", cwd=repo)
    _dvc("init", "-q", cwd=repo)
    _dvc("remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=repo)
    (data / "train-00000-of-00001").write_bytes(b"t" * 3000)
    (data / "validation-00000-of-00001").write_bytes(b"v" * 1000)
    (repo / "data.dvc").write_text("outs:\n- path: data/imagenet\n")
    (repo / ".gitignore").write_text("/data/imagenet\n")
    _dvc("commit", "-q", "-f", "data.dvc", cwd=repo)
    _dvc("push", "-q", "data.dvc", cwd=repo)
    _git("add", ".", cwd=repo)
    _git("commit", "-qm", "data", cwd=repo)
    return repo


def _md5(dvc_file: Path) -> str:
    return yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]


def test_run_id_dot_cannot_delete_another_runs_workspace(data_repo, tmp_path):
    from tasks import fetch_data

    root = tmp_path / "workspaces"
    other = workspace("repo", root)  # a run named like a workspace's checkout folder
    other.model.mkdir()
    (other.model / "ckpt-1.index").write_text("a week of training")
    try:
        fetch_data.run(workspace(".", root), repo=data_repo)
    finally:
        assert (other.model / "ckpt-1.index").read_text() == "a week of training"
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted(
        [other.path.name, workspace(".", root).path.name])


def test_a_run_named_dvc_cache_does_not_hold_the_shared_cache(data_repo, tmp_path):
    from tasks import fetch_data

    root = tmp_path / "workspaces"
    named = workspace("dvc-cache", root)
    fetch_data.run(named, repo=data_repo)
    fetch_data.run(workspace("manual__2", root), repo=data_repo)
    cached = [p for p in root.rglob("md5") if p.parent.name == "files"]  # DVC 3's cache layout
    assert cached, "no DVC cache under the workspace root"
    for folder in cached:
        assert named.path not in folder.parents, f"the shared cache {folder.parent} is inside run dvc-cache's folder"


def _validation_report(ws) -> Path:
    ws.validation.mkdir(parents=True, exist_ok=True)
    report = ws.validation / "report.json"
    report.write_text(json.dumps({"ok": True}) + "\n")
    return report


def _publish(ws, monkeypatch) -> dict:
    from publish_support import make_run_outputs, s3

    from tasks import publish

    monkeypatch.delenv("RN50_DVC_REPO", raising=False)
    make_run_outputs(ws)
    client = s3(os.environ["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=BUCKET)
    summary = publish.run(ws, client=client, bucket=BUCKET)
    key = f"models/resnet50/{summary['version']}/manifest.json"
    return json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_a_data_dir_run_records_that_directory_not_the_projects_data_dvc(s3_env, sample_dir, tmp_path, monkeypatch):
    from tasks import fetch_data

    ws = workspace("manual__data_dir", tmp_path / "workspaces")
    fetch_data.run(ws, data_dir=str(sample_dir))
    _validation_report(ws)
    manifest = _publish(ws, monkeypatch)
    assert manifest["dataset_version"] != _md5(REPO / "data.dvc")  # the code checkout's dataset was not used
    assert manifest["dataset_version"].startswith("unversioned:")
    dataset = manifest["lineage"]["dataset"]
    assert dataset["source"] == "data_dir" and dataset["data_dir"] == str(sample_dir.resolve())
    assert dataset["files"] == len([p for p in sample_dir.rglob("*") if p.is_file()])
    assert manifest["dataset_version"][len("unversioned:"):] in dataset["listing_sha256"]

    # Same names and sizes, same fingerprint; one shard more, another.
    again = workspace("manual__again", tmp_path / "workspaces")
    assert fetch_data.run(again, data_dir=str(sample_dir))["dataset_version"] == manifest["dataset_version"]
    grown = tmp_path / "grown"
    shutil.copytree(sample_dir, grown)
    (grown / "train-00009-of-00009").write_bytes(b"x")
    assert fetch_data.run(again, data_dir=str(grown))["dataset_version"] != manifest["dataset_version"]


def test_a_published_run_drops_its_data_copy_and_keeps_its_reports_and_model(data_repo, s3_env, tmp_path,
                                                                            monkeypatch):
    from tasks import fetch_data

    ws = workspace("manual__published", tmp_path / "workspaces")
    fetched = fetch_data.run(ws, repo=data_repo)
    data_dir = Path(fetched["data_dir"])
    assert sorted(p.name for p in data_dir.iterdir()) == ["train-00000-of-00001", "validation-00000-of-00001"]
    report = _validation_report(ws)
    manifest = _publish(ws, monkeypatch)
    assert not data_dir.exists()  # the run's copy is gone; the shared cache keeps one
    assert report.is_file() and (ws.export / "model.keras").is_file() and (ws.checkout / "data.dvc").is_file()
    assert manifest["dataset_version"] == _md5(data_repo / "data.dvc")  # the data.dvc this run pulled
    assert manifest["lineage"]["dataset"]["source"] == "dvc"

    # A rerun of fetch_data (a cleared task) gets the data back from the cache, without the remote.
    shutil.rmtree(tmp_path / "remote")
    again = fetch_data.run(ws, repo=data_repo)
    assert again["pulled"] and (data_dir / "train-00000-of-00001").stat().st_size == 3000



# A known fake credential, lower case so that it can also be a bucket name: DVC names the bucket in its
# error, which is how a secret would reach the message (as an endpoint or path that embeds one does).
SECRET = "fake-secret-9f3kq2lx7vb"


def test_a_failing_dvc_pull_reports_dvcs_reason_without_the_secret(data_repo, tmp_path, monkeypatch):
    from pipeline.fetch import FetchError
    from tasks import fetch_data

    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    _dvc("remote", "add", "-d", "-f", "s3", f"s3://{SECRET}/dvc", cwd=data_repo)
    _dvc("remote", "modify", "s3", "endpointurl", endpoint, cwd=data_repo)
    _git("commit", "-qam", "an S3 remote nothing listens for", cwd=data_repo)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEKEY000000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries would take 30 s to say the same
    with pytest.raises(FetchError) as failed:
        fetch_data.run(workspace("manual__no_remote", tmp_path / "workspaces"), repo=data_repo)
    message = str(failed.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith("dvc pull data.dvc in ") and ": exit 1: " in message, message
    # DVC's own reason, its last line included
    assert f'Could not connect to the endpoint URL: "{endpoint}/[redacted]/dvc/' in message, message
    assert message.endswith("ERROR: failed to pull data from the cloud - 1 files failed to download"), message
    assert SECRET not in message and "AKIAFAKEKEY000000000" not in message
