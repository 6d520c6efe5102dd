"""`data.dvc` pins the sample's bytes, and the `storage` remote works against a real S3 endpoint."""

import shutil
import subprocess
from pathlib import Path

import boto3
import yaml
from support import BIN, file_hashes, run


def _dvc(repo: Path, env: dict, *args: str) -> str:
    return run(repo, env, str(BIN / "dvc"), *args)


def _project_copy(repo_root: Path, tmp: Path, sample_dir: Path, env: dict) -> Path:
    """A DVC repo with the project's data.dvc and .dvc/config, and the sample in data/imagenet."""
    proj = tmp / "proj"
    proj.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    _dvc(proj, env, "init", "-q")
    shutil.copy(repo_root / ".dvc" / "config", proj / ".dvc" / "config")
    shutil.copy(repo_root / "data.dvc", proj / "data.dvc")
    shutil.copytree(sample_dir, proj / "data" / "imagenet")
    return proj


def test_data_dvc_tracks_data_imagenet_on_the_s3_remote(repo_root):
    out = yaml.safe_load((repo_root / "data.dvc").read_text())["outs"]
    assert len(out) == 1 and out[0]["path"] == "data/imagenet" and out[0]["md5"].endswith(".dir")
    config = (repo_root / ".dvc" / "config").read_text()
    assert "remote = storage" in config and "url = s3://rn50-artifacts/dvc" in config
    assert "/data/imagenet" in (repo_root / ".gitignore").read_text().splitlines()


def test_generated_sample_is_what_data_dvc_pins(repo_root, sample_dir, tmp_path, dvc_env):
    proj = _project_copy(repo_root, tmp_path, sample_dir, dvc_env)
    # Without --force, commit refuses to change data.dvc: it only caches bytes that already match.
    _dvc(proj, dvc_env, "commit", "data.dvc")
    status = _dvc(proj, dvc_env, "status", "data.dvc")
    assert "Data and pipelines are up to date." in status
    assert (proj / "data.dvc").read_bytes() == (repo_root / "data.dvc").read_bytes()


def test_changed_sample_is_reported(repo_root, sample_dir, tmp_path, dvc_env):
    proj = _project_copy(repo_root, tmp_path, sample_dir, dvc_env)
    shard = proj / "data" / "imagenet" / "validation-00001-of-00002"
    shard.write_bytes(shard.read_bytes()[:-1])
    result = subprocess.run(
        [str(BIN / "dvc"), "commit", "data.dvc"], cwd=proj, env=dvc_env, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=300,
    )
    assert result.returncode != 0
    assert "data.dvc" in result.stderr


def test_push_and_pull_through_the_endpoint_from_the_environment(repo_root, sample_dir, tmp_path, dvc_env, s3_env):
    env = {**dvc_env, **s3_env}
    boto3.client("s3").create_bucket(Bucket="rn50-artifacts")
    proj = _project_copy(repo_root, tmp_path, sample_dir, env)
    _dvc(proj, env, "commit", "data.dvc")
    _dvc(proj, env, "push", "data.dvc")
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="rn50-artifacts")["Contents"]]
    assert all(k.startswith("dvc/files/md5/") for k in keys)
    assert len(keys) == len(list(sample_dir.iterdir())) + 1  # the files and the .dir listing

    shutil.rmtree(proj / "data" / "imagenet")
    shutil.rmtree(proj / ".dvc" / "cache")
    _dvc(proj, env, "pull", "data.dvc")
    assert file_hashes(proj / "data" / "imagenet") == file_hashes(sample_dir)
