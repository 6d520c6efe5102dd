"""Publishing to a real S3 server (moto_server over HTTP): layout, manifest, and each guarantee of issue 5.

Faults that need a second process (SIGKILL, an endpoint that is down, concurrent publishers) are in
test_publish_faults.py; the DVC pointer in test_publish_dvc.py; the CLI in test_publish_cli.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
from publish_support import BUCKET, MIB, SMALL_PARTS, TRAINER, decision, keys, make_model_dir, publish, uploads
from support import sha256

from pipeline.files import NotRegularFile
from pipeline.gate import champion_from_manifest, run_gate
from pipeline.publish.hashing import sha256_b64
from pipeline.publish.publish import PublishError, PublishRefused
from pipeline.publish.pull import IntegrityError, pull_version
from pipeline.publish.registry import (
    RegistryError,
    advance_latest,
    claim_version,
    latest_manifest,
    list_versions,
    read_latest,
)
from pipeline.publish.store import PreconditionFailed, Store, make_client

ROOT = "models/resnet50/"


def record_calls(client, operation: str) -> list[dict]:
    """Every request of `operation` this client makes: its parameters, as sent."""
    calls: list[dict] = []
    client.meta.events.register(f"before-parameter-build.s3.{operation}", lambda params, **_: calls.append(params))
    return calls


def test_layout_and_manifest(registry, tmp_path, monkeypatch):
    raw, client = registry
    model_dir = make_model_dir(tmp_path / "m")
    report = tmp_path / "report.json"
    report.write_text('{"ok": true, "records": 500}\n')
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "resnet50_retrain")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__2026-11-28")
    result = publish(model_dir, client, run_id="run-1", extra_files={"report.json": report}, dvc_prefix="dvc",
                     lineage={"hosts": "node1:8,node2:8", "num_gpus": 16, "dataset_version": "abc.dir"})

    assert (result.version, result.uri, result.state) == ("v0001", f"s3://{BUCKET}/{ROOT}v0001/", "new")
    expected = {"checkpoints/checkpoint", "checkpoints/ckpt-2.index", "checkpoints/ckpt-2.data-00000-of-00001",
                "model.keras", "eval.json", "decision.json", "metrics.jsonl", "report.json", "config.json"}
    assert set(keys(raw, prefix=ROOT + "v0001/")) == {ROOT + "v0001/" + n for n in expected | {"manifest.json",
                                                                                              ".claim.json"}}
    manifest = json.loads(raw.get_object(Bucket=BUCKET, Key=ROOT + "v0001/manifest.json")["Body"].read())
    assert manifest == result.manifest
    assert set(manifest["files"]) == expected
    for name in expected - {"checkpoints/checkpoint", "report.json"}:
        assert manifest["files"][name]["sha256"] == sha256(model_dir / name)
        assert manifest["files"][name]["size"] == (model_dir / name).stat().st_size
    assert manifest["files"]["report.json"]["sha256"] == sha256(report)
    # Only the newest checkpoint, with an index that names only it.
    body = raw.get_object(Bucket=BUCKET, Key=ROOT + "v0001/checkpoints/checkpoint")["Body"].read().decode()
    assert body == 'model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-2"\n'
    assert (manifest["model"], manifest["version"], manifest["run_id"]) == ("resnet50", "v0001", "run-1")
    assert manifest["created_at"].endswith("+00:00")
    assert manifest["metrics"]["top1_accuracy"] == 95.0
    assert (manifest["verdict"], manifest["force_reason"], manifest["baseline"]["name"]) == ("pass", None, "smoke")
    # What the gate compared: both models measured on the same records, in the version's own contract.
    assert manifest["gate"]["candidate"] == decision()["candidate"]
    assert manifest["gate"]["live_baseline"] == decision()["live_baseline"]
    assert manifest["dataset_version"] == "abc.dir"
    assert manifest["code_version"] and len(manifest["code_version"].split("-")[0]) == 40
    assert manifest["training"]["config"]["profile"] == "smoke"
    assert (manifest["training"]["hosts"], manifest["training"]["num_gpus"]) == ("node1:8,node2:8", 16)
    assert manifest["airflow"] == {"dag_id": "resnet50_retrain", "run_id": "manual__2026-11-28"}
    assert manifest["dvc"]["md5"].endswith(".dir") and manifest["dvc"]["remote"] == f"s3://{BUCKET}/dvc"
    latest = json.loads(raw.get_object(Bucket=BUCKET, Key=ROOT + "latest.json")["Body"].read())
    assert latest["version"] == "v0001"
    assert latest_manifest(client, BUCKET, "models", "resnet50") == manifest


def test_lineage_from_data_dvc_and_the_trainer_config_json_records(registry, tmp_path, repo_root):
    _, client = registry
    repo = tmp_path / "code"
    repo.mkdir()
    (repo / "data.dvc").write_bytes((repo_root / "data.dvc").read_bytes())
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "data.dvc"], check=True)
    subprocess.run([*git, "commit", "-qm", "data"], check=True)
    # The code that trained (the trainer image's, here) is the version's code, not the code that publishes it.
    trainer = {"code_version": "c" * 40, "image": "registry.example.com/rn50-trainer:1.1"}
    first = publish(make_model_dir(tmp_path / "a", trainer=trainer), client, code_repo=repo)
    md5 = (repo_root / "data.dvc").read_text().split("md5: ")[1].split()[0]
    assert (first.manifest["dataset_version"], first.manifest["code_version"]) == (md5, "c" * 40)
    assert first.manifest["training"]["config"]["trainer"] == trainer
    # A model directory whose config.json records no trainer: unknown, never the publishing checkout's commit.
    second = publish(make_model_dir(tmp_path / "b", seed=1, trainer=None), client, code_repo=repo)
    assert second.manifest["code_version"] is None
    third = publish(make_model_dir(tmp_path / "c", seed=2), client, code_repo=tmp_path / "c")  # not git
    assert third.manifest["code_version"] == TRAINER["code_version"] and third.manifest["dataset_version"] is None


def test_refuses_what_the_gate_did_not_pass(registry, tmp_path):
    raw, client = registry
    failed = make_model_dir(tmp_path / "failed", verdict="fail")
    with pytest.raises(PublishRefused, match="verdict is 'fail'"):
        publish(failed, client)
    (failed / "decision.json").unlink()
    with pytest.raises(PublishRefused, match=r"decision\.json"):
        publish(failed, client)
    no_eval = make_model_dir(tmp_path / "no-eval")
    (no_eval / "eval.json").unlink()
    with pytest.raises(PublishError, match=r"eval\.json: missing"):
        publish(no_eval, client)
    assert keys(raw) == []  # refused before anything moved

    forced = make_model_dir(tmp_path / "forced", verdict="fail", force=True, reason="hotfix for label bug")
    manifest = publish(forced, client).manifest
    assert (manifest["verdict"], manifest["force_publish"], manifest["force_reason"]) == (
        "fail", True, "hotfix for label bug")


def test_every_version_object_is_a_conditional_create(registry, tmp_path):
    raw, client = registry
    puts = record_calls(client, "PutObject")
    completes = record_calls(client, "CompleteMultipartUpload")
    model_dir = make_model_dir(tmp_path / "m", data_bytes=13 * MIB)
    publish(model_dir, client, dvc_prefix="dvc", transfer=SMALL_PARTS, run_id="imm")
    version_writes = [p for p in puts + completes if p["Key"].startswith(ROOT + "v0001/")]
    assert len(version_writes) == 10  # claim, 8 files (one multipart), manifest
    assert all(p.get("IfNoneMatch") == "*" for p in version_writes)
    assert [p["Key"] for p in puts if p["Key"].startswith(ROOT + "v")][-1] == ROOT + "v0001/manifest.json"
    latest_writes = [p for p in puts if p["Key"] == ROOT + "latest.json"]
    assert latest_writes and all(p.get("IfNoneMatch") == "*" or p.get("IfMatch") for p in latest_writes)

    # The server refuses an overwrite, and a retry of the run with other bytes leaves the version alone:
    # they become a new version.
    store = Store(client, BUCKET)
    with pytest.raises(PreconditionFailed):
        store.put_new(ROOT + "v0001/eval.json", b"{}", sha256_b64=sha256_b64(b"{}"))
    before = {k: raw.head_object(Bucket=BUCKET, Key=k)["ETag"] for k in keys(raw, prefix=ROOT + "v0001/")}
    (model_dir / "eval.json").write_text('{"top1_accuracy": 99.9}\n')
    assert publish(model_dir, client, run_id="imm", transfer=SMALL_PARTS).version == "v0002"
    after = {k: raw.head_object(Bucket=BUCKET, Key=k)["ETag"] for k in keys(raw, prefix=ROOT + "v0001/")}
    assert after == before


def test_incomplete_version_is_invisible(registry, tmp_path):
    raw, client = registry
    publish(make_model_dir(tmp_path / "a"), client, run_id="a")
    # What a publish killed before its manifest leaves behind: a claim and some files.
    store = Store(client, BUCKET)
    assert claim_version(store, "models", "resnet50", "b").version == "v0002"
    raw.put_object(Bucket=BUCKET, Key=ROOT + "v0002/eval.json", Body=b'{"top1_accuracy": 99.0}')

    assert [m["version"] for m in list_versions(client, BUCKET, "models", "resnet50")] == ["v0001"]
    assert latest_manifest(client, BUCKET, "models", "resnet50")["version"] == "v0001"
    with pytest.raises(RegistryError, match="v0002/: not a published version"):
        pull_version(client, BUCKET, tmp_path / "pulled", version="v0002")
    assert pull_version(client, BUCKET, tmp_path / "pulled").version == "v0001"
    with pytest.raises(RegistryError, match="has no manifest"):
        advance_latest(store, "models", "resnet50", "v0002", "0" * 64)


def test_latest_moves_forward_only(registry, tmp_path):
    _, client = registry
    store = Store(client, BUCKET)
    # Run "a" claims v0001 but finishes after run "b", which gets v0002.
    assert claim_version(store, "models", "resnet50", "a").version == "v0001"
    b = publish(make_model_dir(tmp_path / "b", seed=2), client, run_id="b")
    a = publish(make_model_dir(tmp_path / "a", seed=1), client, run_id="a")
    assert (a.version, a.state, a.latest, b.version, b.latest) == ("v0001", "resumed", "v0002", "v0002", "v0002")
    assert read_latest(store, "models", "resnet50")[0]["version"] == "v0002"
    assert advance_latest(store, "models", "resnet50", "v0001", "0" * 64) == "v0002"


def test_latest_compare_and_swap_under_contention(registry, tmp_path):
    raw, client = registry
    for seed, run in ((1, "r1"), (2, "r2"), (3, "r3")):
        publish(make_model_dir(tmp_path / run, seed=seed), client, run_id=run)
    # latest.json back at v0001, as if v0002 and v0003 finished together: both swap it, one loses.
    raw.put_object(Bucket=BUCKET, Key=ROOT + "latest.json", Body=b'{"version": "v0001"}')
    barrier = threading.Barrier(2, timeout=20)
    results: dict[str, str] = {}

    def advance(version: str) -> None:
        own = make_client(max_attempts=2)
        waited = []

        def at_the_same_time(params, **_):
            if params["Key"].endswith("latest.json") and not waited:
                waited.append(1)
                barrier.wait()

        own.meta.events.register("before-parameter-build.s3.PutObject", at_the_same_time)
        results[version] = advance_latest(Store(own, BUCKET), "models", "resnet50", version, "0" * 64)

    threads = [threading.Thread(target=advance, args=(v,)) for v in ("v0002", "v0003")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each says what latest names right after its own attempt: v0002 may have won first and then lost to v0003.
    assert results["v0003"] == "v0003" and results["v0002"] in ("v0002", "v0003")
    assert json.loads(raw.get_object(Bucket=BUCKET, Key=ROOT + "latest.json")["Body"].read())["version"] == "v0003"


def test_retry_of_the_same_run_resumes_and_uploads_only_what_is_missing(registry, tmp_path):
    raw, client = registry
    model_dir = make_model_dir(tmp_path / "m")

    def fail_on_metrics(params, **_):
        if params["Key"].endswith("metrics.jsonl"):
            raise ConnectionAbortedError("injected: the process died here")

    client.meta.events.register("before-parameter-build.s3.PutObject", fail_on_metrics)
    with pytest.raises(ConnectionAbortedError):
        publish(model_dir, client, run_id="run-7")
    client.meta.events.unregister("before-parameter-build.s3.PutObject", fail_on_metrics)
    there = set(keys(raw, prefix=ROOT + "v0001/"))
    assert ROOT + "v0001/manifest.json" not in there and latest_manifest(client, BUCKET, "models", "resnet50") is None

    puts = record_calls(client, "PutObject")
    result = publish(model_dir, client, run_id="run-7")
    assert (result.version, result.state) == ("v0001", "resumed")
    assert result.present == len(there) - 1 and result.uploaded == 8 - result.present  # minus the claim
    assert not {p["Key"] for p in puts} & there  # nothing that was there was sent again
    again = publish(model_dir, client, run_id="run-7")
    assert (again.version, again.state, again.uploaded, again.present) == ("v0001", "complete", 0, 8)
    # A crash between the manifest and latest.json: the retry moves latest.
    raw.delete_object(Bucket=BUCKET, Key=ROOT + "latest.json")
    assert publish(model_dir, client, run_id="run-7").latest == "v0001"
    assert [m["version"] for m in list_versions(client, BUCKET, "models", "resnet50")] == ["v0001"]
    # Without a run id, the same files on the same machine are the same publish.
    other = make_model_dir(tmp_path / "other", seed=5)
    assert publish(other, client).version == publish(other, client).version == "v0002"


def test_multipart_with_sha256_checksums_aborts_on_failure_and_resumes_parts(registry, tmp_path):
    raw, client = registry
    model_dir = make_model_dir(tmp_path / "m", data_bytes=20 * MIB)  # 4 parts of 6 MiB (the last 2 MiB)
    data_key = ROOT + "v0001/checkpoints/ckpt-2.data-00000-of-00001"

    def fail_part_3(params, **_):
        if params.get("PartNumber") == 3:
            raise ConnectionResetError("injected failure in part 3")

    client.meta.events.register("before-parameter-build.s3.UploadPart", fail_part_3)
    with pytest.raises(ConnectionResetError):
        publish(model_dir, client, run_id="big", transfer=SMALL_PARTS)
    assert uploads(raw) == []  # the failed upload was aborted, not left dangling

    # Now the abort fails too (as when the process is killed): the next attempt must resume the parts.
    def no_abort(**_):
        raise ConnectionResetError("injected: abort impossible")

    client.meta.events.register("before-parameter-build.s3.AbortMultipartUpload", no_abort)
    with pytest.raises(ConnectionResetError):
        publish(model_dir, client, run_id="big", transfer=SMALL_PARTS)
    client.meta.events.unregister("before-parameter-build.s3.UploadPart", fail_part_3)
    client.meta.events.unregister("before-parameter-build.s3.AbortMultipartUpload", no_abort)
    assert [u["Key"] for u in uploads(raw)] == [data_key]

    parts = record_calls(client, "UploadPart")
    result = publish(model_dir, client, run_id="big", transfer=SMALL_PARTS)
    assert result.state == "resumed" and len(parts) < 4  # parts the dead attempt sent were kept
    assert uploads(raw) == []
    head = raw.head_object(Bucket=BUCKET, Key=data_key, ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-4"') and head["ContentLength"] == 20 * MIB
    assert result.manifest["files"]["checkpoints/ckpt-2.data-00000-of-00001"]["sha256"] == sha256(
        model_dir / "checkpoints/ckpt-2.data-00000-of-00001")
    pulled = pull_version(client, BUCKET, tmp_path / "pulled")
    assert sha256(pulled.dest / "checkpoints/ckpt-2.data-00000-of-00001") == sha256(
        model_dir / "checkpoints/ckpt-2.data-00000-of-00001")


def test_pull_verifies_every_file_and_refuses_tampering(registry, tmp_path):
    raw, client = registry
    model_dir = make_model_dir(tmp_path / "m")
    publish(model_dir, client)
    good = pull_version(client, BUCKET, tmp_path / "good")
    assert good.version == "v0001" and good.files == 8
    for name in ("eval.json", "model.keras", "checkpoints/ckpt-2.index"):
        assert sha256(good.dest / name) == sha256(model_dir / name)
    assert json.loads((good.dest / "manifest.json").read_text())["version"] == "v0001"
    with pytest.raises(FileExistsError):
        pull_version(client, BUCKET, good.dest)

    key = ROOT + "v0001/eval.json"
    raw.put_object(Bucket=BUCKET, Key=key, Body=(model_dir / "eval.json").read_bytes().replace(b"95.0", b"99.9"))
    with pytest.raises(IntegrityError, match=r"eval\.json: sha256 .* differs.*tampered"):
        pull_version(client, BUCKET, tmp_path / "tampered")
    raw.put_object(Bucket=BUCKET, Key=key, Body=(model_dir / "eval.json").read_bytes())
    data = ROOT + "v0001/checkpoints/ckpt-2.data-00000-of-00001"
    shard = (model_dir / "checkpoints/ckpt-2.data-00000-of-00001").read_bytes()
    raw.put_object(Bucket=BUCKET, Key=data, Body=shard[:-1])
    with pytest.raises(IntegrityError, match="truncated"):
        pull_version(client, BUCKET, tmp_path / "truncated", version="v0001")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good", "m"]  # no DEST, no partial download left

    # The manifest itself: latest.json recorded its sha256.
    raw.put_object(Bucket=BUCKET, Key=ROOT + "v0001/manifest.json", Body=b'{"version": "v0001", "files": {}}')
    with pytest.raises(RegistryError, match="refusing"):
        pull_version(client, BUCKET, tmp_path / "manifest")


SECRET = "AWS_SECRET_ACCESS_KEY=planted-secret-of-the-worker\n"


def plant_link(model_dir: Path, name: str, target: Path) -> None:
    path = model_dir / name
    if path.is_dir():
        path.rename(target)  # the real directory moves out, a link to it takes its place
    else:
        path.unlink(missing_ok=True)
    path.symlink_to(target)


@pytest.mark.parametrize("name", ["metrics.jsonl", "eval.json", "config.json", "checkpoints/ckpt-2.index",
                                  "checkpoints/checkpoint", "checkpoints", "report.json"])
def test_refuses_a_symlink_in_the_model_directory(registry, tmp_path, name):
    raw, client = registry
    model_dir = make_model_dir(tmp_path / "m")
    report = tmp_path / "report.json"
    report.write_text('{"ok": true}\n')
    secret = tmp_path / "environ"
    secret.write_text(SECRET)
    if name == "checkpoints":
        plant_link(model_dir, name, tmp_path / "elsewhere")
    elif name == "report.json":
        report.unlink()
        report.symlink_to(secret)
    else:
        plant_link(model_dir, name, secret)
    with pytest.raises(PublishError, match=rf"{name}: a symlink, not a regular file"):
        publish(model_dir, client, extra_files={"report.json": report})
    assert keys(raw) == []  # refused before anything moved


def test_refuses_a_fifo_and_a_planted_decision_link(registry, tmp_path):
    raw, client = registry
    model_dir = make_model_dir(tmp_path / "m")
    (model_dir / "metrics.jsonl").unlink()
    os.mkfifo(model_dir / "metrics.jsonl")  # reading it would wait for a writer forever
    with pytest.raises(PublishError, match=r"metrics\.jsonl: a special file"):
        publish(model_dir, client)
    (model_dir / "metrics.jsonl").unlink()
    decision = tmp_path / "decision.json"
    (model_dir / "decision.json").rename(decision)
    (model_dir / "decision.json").symlink_to(decision)
    with pytest.raises(PublishRefused, match=r"decision\.json: a symlink"):
        publish(model_dir, client)
    assert keys(raw) == []


def test_a_link_swapped_in_after_the_check_is_not_followed(registry, tmp_path):
    raw, client = registry
    model_dir = make_model_dir(tmp_path / "m")
    secret = tmp_path / "environ"
    secret.write_text(SECRET)

    def swap(params, **_):  # after the files were checked, before any is read for upload
        if params["Key"].endswith(".claim.json"):
            plant_link(model_dir, "metrics.jsonl", secret)

    client.meta.events.register("before-parameter-build.s3.PutObject", swap)
    with pytest.raises(NotRegularFile, match=r"metrics\.jsonl: a symlink"):
        publish(model_dir, client, run_id="swap")
    bodies = [raw.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys(raw)]
    assert not any(b"planted-secret" in body for body in bodies)


def test_a_cleared_and_rerun_gate_publishes_a_version_that_supersedes_the_first(registry, tmp_path):
    raw, client = registry
    model_dir = make_model_dir(tmp_path / "m")
    first = publish(model_dir, client, run_id="scheduled__2026-12-01")
    before = {k: raw.head_object(Bucket=BUCKET, Key=k)["ETag"] for k in keys(raw, prefix=ROOT + "v0001/")}
    # The gate task is cleared and re-run: decision.json gets a new time, and the champion is now v0001.
    champion = champion_from_manifest(latest_manifest(client, BUCKET, "models", "resnet50"))
    run_gate(model_dir, champion=champion)

    second = publish(model_dir, client, run_id="scheduled__2026-12-01")
    assert (second.version, second.state, second.latest) == ("v0002", "new", "v0002")
    assert (first.manifest["supersedes"], second.manifest["supersedes"]) == (None, "v0001")
    assert second.manifest["run_id"] == first.manifest["run_id"]
    assert second.manifest["files"]["decision.json"]["sha256"] == sha256(model_dir / "decision.json")
    assert second.manifest["gate"]["champion"]["version"] == "v0001"
    assert {k: raw.head_object(Bucket=BUCKET, Key=k)["ETag"] for k in keys(raw, prefix=ROOT + "v0001/")} == before
    # A retry of the re-run is the same version again, and a re-run after that supersedes v0002.
    assert (publish(model_dir, client, run_id="scheduled__2026-12-01").version,) == ("v0002",)
    (model_dir / "eval.json").write_text(json.dumps({"top1_accuracy": 95.0, "eval_throughput": 799.0}) + "\n")
    third = publish(model_dir, client, run_id="scheduled__2026-12-01")
    assert (third.version, third.manifest["supersedes"], third.latest) == ("v0003", "v0002", "v0003")
    assert [m["version"] for m in list_versions(client, BUCKET, "models", "resnet50")] == ["v0001", "v0002", "v0003"]


def test_a_rerun_of_evaluate_after_a_failed_publish_abandons_the_unfinished_version(registry, tmp_path):
    raw, client = registry
    model_dir = make_model_dir(tmp_path / "m", data_bytes=13 * MIB)

    def fail_on_manifest(params, **_):
        if params["Key"].endswith("manifest.json"):
            raise ConnectionAbortedError("injected: the worker died here")

    client.meta.events.register("before-parameter-build.s3.PutObject", fail_on_manifest)
    with pytest.raises(ConnectionAbortedError):
        publish(model_dir, client, run_id="run-9", transfer=SMALL_PARTS)
    client.meta.events.unregister("before-parameter-build.s3.PutObject", fail_on_manifest)
    assert ROOT + "v0001/eval.json" in keys(raw, prefix=ROOT + "v0001/")
    # evaluate is cleared and re-run: a new throughput in eval.json, one more line in metrics.jsonl.
    (model_dir / "eval.json").write_text(json.dumps({"top1_accuracy": 95.0, "eval_throughput": 799.0}) + "\n")
    with (model_dir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 40, "top1_accuracy": 95.0}\n')

    result = publish(model_dir, client, run_id="run-9", transfer=SMALL_PARTS)
    # v0001 was never published, so v0002 supersedes nothing; v0001 stays invisible.
    assert (result.version, result.state, result.latest, result.manifest["supersedes"]) == (
        "v0002", "new", "v0002", None)
    assert result.manifest["files"]["eval.json"]["sha256"] == sha256(model_dir / "eval.json")
    assert [m["version"] for m in list_versions(client, BUCKET, "models", "resnet50")] == ["v0002"]
    assert uploads(raw) == []
    assert publish(model_dir, client, run_id="run-9", transfer=SMALL_PARTS).state == "complete"
