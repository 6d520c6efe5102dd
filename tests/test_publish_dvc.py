"""The published version is a DVC artifact: `dvc pull` in a fresh clone of the registry repo fetches
exactly the bytes the manifest lists, and the pointer is committed and tagged `resnet50@vNNNN`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from publish_support import BUCKET, DVC, MIB, keys, make_model_dir, registry_repo, s3
from support import run, sha256

from pipeline.publish.dvc_pointer import DvcError
from pipeline.publish.registry import claim_version
from pipeline.publish.store import Store, make_client
from pipeline.publish.upload import Transfer
from pipeline.stages.publish import publish_model


@pytest.fixture
def env(s3_env, dvc_env):
    s3(s3_env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=BUCKET)
    return {**dvc_env, **s3_env}


def test_dvc_pull_in_a_fresh_clone_gets_the_manifests_bytes(env, tmp_path):
    repo = registry_repo(tmp_path / "registry", env, f"s3://{BUCKET}/dvc")
    client = make_client(max_attempts=2)

    def publish(name: str, seed: int):
        model_dir = tmp_path / name
        if not model_dir.exists():
            # "d" has a multipart checkpoint shard: its DVC copy must download through DVC's checksum checks.
            make_model_dir(model_dir, seed=seed, data_bytes=13 * MIB if name == "d" else 64 * 1024)
        return publish_model(model_dir, client=client, bucket=BUCKET, run_id=name, dvc_repo=repo,
                             transfer=Transfer(threshold=8 * MIB, part_size=6 * MIB))

    first = publish("a", 1)
    pointer = yaml.safe_load((repo / "models/resnet50.dvc").read_text())
    assert pointer["outs"][0]["md5"] == first.manifest["dvc"]["md5"]
    assert pointer["outs"][0]["nfiles"] == len(first.manifest["files"])
    assert pointer["meta"]["version"] == "v0001"
    assert first.pointer["tag"] == "resnet50@v0001"
    assert _git(repo, env, "rev-parse", "resnet50@v0001^{commit}") == first.pointer["commit"]
    assert _git(repo, env, "status", "--porcelain") == ""  # committed, and models/resnet50 is git-ignored

    second = publish("b", 2)
    assert (second.version, second.pointer["tag"]) == ("v0002", "resnet50@v0002")
    # An older version finishing late is tagged beside the branch; the branch keeps the newest pointer.
    assert claim_version(Store(client, BUCKET), "models", "resnet50", "c").version == "v0003"
    publish("d", 4)
    late = publish("c", 3)
    assert (late.version, late.latest, late.pointer["tag"]) == ("v0003", "v0004", "resnet50@v0003")
    assert yaml.safe_load((repo / "models/resnet50.dvc").read_text())["meta"]["version"] == "v0004"
    tagged = yaml.safe_load(_git(repo, env, "show", "resnet50@v0003:models/resnet50.dvc"))
    assert tagged["outs"][0]["md5"] == late.manifest["dvc"]["md5"]
    assert _git(repo, env, "tag", "--list").split() == [f"resnet50@v000{n}" for n in range(1, 5)]

    # A consumer: a fresh clone, `dvc pull`, then the same at an older tag.
    clone = tmp_path / "clone"
    run(tmp_path, env, "git", "clone", "-q", str(repo), str(clone))
    run(clone, env, DVC, "pull", "models/resnet50.dvc")
    newest = publish("d", 4).manifest  # the retry of a complete version returns its manifest
    assert _hashes(clone / "models/resnet50") == {n: e["sha256"] for n, e in newest["files"].items()}
    _git(clone, env, "checkout", "-q", "resnet50@v0003")
    run(clone, env, DVC, "pull", "models/resnet50.dvc")
    assert _hashes(clone / "models/resnet50") == {n: e["sha256"] for n, e in late.manifest["files"].items()}


def _git(repo: Path, env: dict, *args: str) -> str:
    return run(repo, env, "git", "-c", "user.name=t", "-c", "user.email=t@t", *args)


def _hashes(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): sha256(p) for p in directory.rglob("*") if p.is_file()}


def test_a_repo_whose_remote_is_elsewhere_is_refused_before_uploading(env, tmp_path):
    repo = registry_repo(tmp_path / "registry", env, "s3://another-bucket/dvc")
    with pytest.raises(DvcError, match="another-bucket"):
        publish_model(make_model_dir(tmp_path / "m"), client=make_client(max_attempts=2), bucket=BUCKET,
                      dvc_repo=repo)
    assert keys(s3(env["AWS_ENDPOINT_URL"])) == []
    with pytest.raises(DvcError, match="not a DVC repository"):
        publish_model(make_model_dir(tmp_path / "n"), client=make_client(max_attempts=2), bucket=BUCKET,
                      dvc_repo=tmp_path)
