"""Fault injection against a real S3 server: a publisher killed mid-upload, an endpoint that is down or
flaky, and publishers racing each other."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from publish_support import BUCKET, MIB, SMALL_PARTS, FlakyProxy, keys, make_model_dir, uploads
from support import REPO, free_port, rn50, sha256

from pipeline.publish.pull import pull_version
from pipeline.publish.registry import RegistryError, latest_manifest, list_versions
from pipeline.publish.store import StoreError, make_client
from pipeline.stages.publish import publish_model


def _published(client) -> list[str]:
    return [m["version"] for m in list_versions(client, BUCKET, "models", "resnet50")]


@pytest.mark.parametrize("stage", ["part", "manifest"])
def test_sigkill_mid_publish_leaves_nothing_visible_and_a_rerun_completes(registry, tmp_path, stage):
    raw, client = registry
    publish_model(make_model_dir(tmp_path / "first"), client=client, bucket=BUCKET, run_id="first")
    model_dir = make_model_dir(tmp_path / "second", data_bytes=20 * MIB, seed=1)
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "publish_killable.py"), str(model_dir), BUCKET, "second", stage],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, stdin=subprocess.DEVNULL,
    )
    try:
        line = proc.stdout.readline()  # blocks until it reaches the chosen point (or dies)
        assert line.strip() == "PAUSED", f"{line}{proc.stderr.read() if proc.poll() is not None else ''}"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert ".claim.json" in " ".join(keys(raw, prefix="models/resnet50/v0002/"))  # it had started
    assert _published(client) == ["v0001"]
    assert latest_manifest(client, BUCKET, "models", "resnet50")["version"] == "v0001"
    with pytest.raises(RegistryError, match="not a published version"):
        pull_version(client, BUCKET, tmp_path / "pulled", version="v0002")
    if stage == "part":
        assert len(uploads(raw)) == 1  # what the kill left; the rerun must resume or abort it

    result = publish_model(model_dir, client=client, bucket=BUCKET, run_id="second",
                           transfer=SMALL_PARTS)
    assert (result.version, result.state, result.latest) == ("v0002", "resumed", "v0002")
    assert result.present >= 1
    assert uploads(raw) == []
    assert _published(client) == ["v0001", "v0002"]
    pulled = pull_version(client, BUCKET, tmp_path / "pulled")
    for name in ("checkpoints/ckpt-2.data-00000-of-00001", "model.keras", "eval.json"):
        assert sha256(pulled.dest / name) == sha256(model_dir / name)


def test_endpoint_down_bounded_retries_then_one_clear_line(s3_env, tmp_path, monkeypatch):
    down = f"http://127.0.0.1:{free_port()}"
    client = make_client(endpoint_url=down, max_attempts=3)
    started = time.monotonic()
    with pytest.raises(StoreError) as error:
        publish_model(make_model_dir(tmp_path / "m"), client=client, bucket=BUCKET)
    assert time.monotonic() - started < 15
    message = str(error.value)
    assert "\n" not in message and "Could not connect" in message

    # The same through the CLI, retrying as botocore's standard settings say: progress lines, then exactly
    # one error line, exit 1.
    env = {**os.environ, "AWS_ENDPOINT_URL": down, "AWS_MAX_ATTEMPTS": "2"}
    started = time.monotonic()
    run = rn50("publish", "--no-export", "--model-dir", str(tmp_path / "m"), "--bucket", BUCKET, env=env)
    assert run.returncode == 1 and run.stdout == ""
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("rn50 publish: error: ") and "Could not connect" in errors[0], \
        run.stderr
    assert "Traceback" not in run.stderr
    assert time.monotonic() - started < 30


def test_transient_errors_are_retried(registry, tmp_path, s3_env):
    """503 SlowDown, resets before the server sees a request, and lost responses after it handled one
    (so a conditional write's retry meets its own object) on a schedule over every request."""
    raw, _ = registry
    modes = {2: "503", 5: "reset", 8: "lost"}
    proxy = FlakyProxy(s3_env["AWS_ENDPOINT_URL"], lambda n, *_: modes.get(n % 10, "ok"))
    try:
        # The faults fall on every tenth request over all threads, so one operation can meet several in a
        # row: enough attempts that a run of them is retried through (3 of 10 fail: 0.3**10 per operation).
        client = make_client(endpoint_url=proxy.url, max_attempts=10)
        model_dir = make_model_dir(tmp_path / "m", data_bytes=13 * MIB)
        result = publish_model(model_dir, client=client, bucket=BUCKET, run_id="flaky", dvc_prefix="dvc",
                               transfer=SMALL_PARTS)
        pulled = pull_version(client, BUCKET, tmp_path / "pulled")
    finally:
        proxy.close()
    assert min(proxy.faults[mode] for mode in set(modes.values())) >= 3, proxy.faults
    assert (result.version, result.latest) == ("v0001", "v0001")
    assert _published(raw) == ["v0001"]  # a lost claim response did not make a second version
    assert uploads(raw) == []
    for name in ("checkpoints/ckpt-2.data-00000-of-00001", "model.keras", "decision.json"):
        assert sha256(pulled.dest / name) == sha256(model_dir / name)


def test_a_body_cut_off_mid_read_is_fetched_again(registry, tmp_path, s3_env):
    """botocore retries a request until its headers arrive; a GET's body is read after that, so a body
    that breaks off is the one case `Store.read` retries itself. Cut once: the pull completes; cut every
    time: one line, and DEST is not created."""
    _, client = registry
    model_dir = make_model_dir(tmp_path / "m", data_bytes=13 * MIB)
    publish_model(model_dir, client=client, bucket=BUCKET, dvc_prefix=None, transfer=SMALL_PARTS)
    cut: list[str] = []

    def once(n: int, method: str, path: str) -> str:
        if method == "GET" and path.split("?")[0].endswith(("/manifest.json", ".data-00000-of-00001")) \
                and path not in cut:
            cut.append(path)
            return "cut"
        return "ok"

    proxy = FlakyProxy(s3_env["AWS_ENDPOINT_URL"], once)
    try:
        pulled = pull_version(make_client(endpoint_url=proxy.url, max_attempts=2), BUCKET, tmp_path / "pulled",
                              version="v0001")
        assert proxy.faults["cut"] == len(cut) == 2  # the manifest and the checkpoint's shard
        for name in ("checkpoints/ckpt-2.data-00000-of-00001", "model.keras"):
            assert sha256(pulled.dest / name) == sha256(model_dir / name)

        proxy.plan = lambda n, method, path: "cut" if method == "GET" and "ckpt-2.data" in path else "ok"
        with pytest.raises(StoreError) as error:
            pull_version(make_client(endpoint_url=proxy.url, max_attempts=2), BUCKET, tmp_path / "again",
                         version="v0001")
    finally:
        proxy.close()
    message = str(error.value)
    assert "\n" not in message and "ckpt-2.data-00000-of-00001" in message and "after 2 tries" in message
    assert not (tmp_path / "again").exists()


def test_a_lost_create_multipart_upload_response_leaves_no_upload_open(registry, tmp_path, s3_env):
    """The server starts a multipart upload but its answer is lost: the retry starts a second one, and
    the first, which this publish never learned the id of, must not stay open (S3 bills it)."""
    raw, _ = registry
    lost: list[str] = []

    def plan(n: int, method: str, path: str) -> str:
        if method == "POST" and path.endswith("?uploads") and len(lost) < 2:
            lost.append(path)
            return "lost"
        return "ok"

    proxy = FlakyProxy(s3_env["AWS_ENDPOINT_URL"], plan)
    try:
        client = make_client(endpoint_url=proxy.url, max_attempts=3)
        result = publish_model(make_model_dir(tmp_path / "m", data_bytes=13 * MIB), client=client, bucket=BUCKET,
                               run_id="lost", transfer=SMALL_PARTS)
    finally:
        proxy.close()
    assert len(lost) == 2 and result.version == "v0001"
    assert uploads(raw) == []
    assert _published(raw) == ["v0001"]


def test_two_concurrent_publishes_get_two_complete_versions(registry, tmp_path):
    """Both list the (empty) registry, then both claim v0001 at the same instant: one must move on."""
    raw, _ = registry
    barrier = threading.Barrier(2, timeout=30)
    results, claims, errors = {}, {}, []

    def run(name: str, seed: int) -> None:
        try:
            client = make_client(max_attempts=2)
            first = []

            def together(params, **_):
                if params["Key"].endswith(".claim.json") and not first:
                    first.append(params["Key"])
                    barrier.wait()

            client.meta.events.register("before-parameter-build.s3.PutObject", together)
            results[name] = publish_model(make_model_dir(tmp_path / name, seed=seed), client=client, bucket=BUCKET,
                                          run_id=name, dvc_prefix="dvc")
            claims[name] = first[0]
        except BaseException as exc:  # reported below; a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n, s)) for n, s in (("a", 1), ("b", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert claims == {"a": "models/resnet50/v0001/.claim.json", "b": "models/resnet50/v0001/.claim.json"}
    assert sorted(r.version for r in results.values()) == ["v0001", "v0002"]
    for name in "ab":
        manifest = json.loads(raw.get_object(Bucket=BUCKET, Key=f"models/resnet50/{results[name].version}/"
                                             "manifest.json")["Body"].read())
        assert manifest["run_id"] == name
        assert manifest["files"]["model.keras"]["sha256"] == sha256(tmp_path / name / "model.keras")
    assert _published(raw) == ["v0001", "v0002"]
    assert latest_manifest(raw, BUCKET, "models", "resnet50")["version"] == "v0002"


def test_two_publishing_processes(registry, tmp_path):
    raw, _ = registry
    procs = [
        subprocess.Popen([sys.executable, "-m", "pipeline", "publish", "--no-export", "--bucket", BUCKET,
                          "--model-dir", str(make_model_dir(tmp_path / name, seed=seed)), "--run-id", name],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL)
        for name, seed in (("p", 1), ("q", 2))
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    uris = sorted(out.strip() for out, _ in outputs)
    assert uris == [f"s3://{BUCKET}/models/resnet50/v0001/", f"s3://{BUCKET}/models/resnet50/v0002/"]
    assert _published(raw) == ["v0001", "v0002"]


def test_a_concurrent_retry_of_the_same_run_shares_its_version(registry, tmp_path):
    raw, _ = registry
    model_dir = make_model_dir(tmp_path / "m")
    found = []

    def run() -> None:
        found.append(publish_model(model_dir, client=make_client(max_attempts=2), bucket=BUCKET, run_id="same",
                                   dvc_prefix=None).version)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert found == ["v0001", "v0001"]
    assert _published(raw) == ["v0001"]
