"""A registry holding objects no publish of ours writes: each is a one-line error naming the object, or a
safe repair, never a traceback, a blocked registry or an unbounded read.

The bad objects are written with raw boto3 into a real bucket (moto_server over HTTP): a corrupt
`latest.json`, a manifest that is not an object or names another version, file names that alias each
other, claims and manifests far larger than any we write.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import pytest
from publish_support import BUCKET, MIB, make_model_dir, publish
from support import rn50

from pipeline.contracts.registry import version_number
from pipeline.publish.publish import PublishError
from pipeline.publish.pull import pull_version
from pipeline.publish.registry import RegistryError, latest_manifest, list_versions
from pipeline.publish.store import MAX_JSON_BYTES

ROOT = "models/resnet50/"
LATEST = ROOT + "latest.json"
HUGE = b'{"pad": "' + b"x" * (MAX_JSON_BYTES + 1) + b'"}'


def put(raw, key: str, body: bytes) -> str:
    return raw.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"]


def get(raw, key: str) -> bytes:
    return raw.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def latest_puts(client) -> list[dict]:
    """Every PutObject of latest.json this client makes, with its parameters as sent."""
    calls: list[dict] = []

    def record(params, **_):
        if params["Key"] == LATEST:
            calls.append(params)

    client.meta.events.register("before-parameter-build.s3.PutObject", record)
    return calls


def cli(*args: str, env: dict[str, str]):
    return rn50(*args, env={**os.environ, **env, "AWS_MAX_ATTEMPTS": "2"})


# -- a corrupt latest.json -------------------------------------------------------------------------

CORRUPT_LATEST = {
    "not-json": b"{not json",
    "array": b'["v0001"]',
    "string": b'"v0001"',
    "not-a-version": b'{"version": "../v0001"}',
    "no-such-version": b'{"version": "v0009", "manifest_sha256": "00"}',
    "too-large": b'{"version": "v0001", "pad": "' + b"x" * (MAX_JSON_BYTES + 1) + b'"}',
}


@pytest.mark.parametrize("kind", CORRUPT_LATEST)
def test_a_corrupt_latest_is_replaced_by_compare_and_swap_and_the_next_publish_goes_on(registry, tmp_path, kind):
    raw, client = registry
    publish(make_model_dir(tmp_path / "a"), client, run_id="a")
    corrupt = put(raw, LATEST, CORRUPT_LATEST[kind])
    swaps = latest_puts(client)
    second = publish(make_model_dir(tmp_path / "b", seed=1), client, run_id="b")
    assert (second.version, second.latest) == ("v0002", "v0002")
    assert [p.get("IfMatch") for p in swaps] == [corrupt]  # one compare-and-swap, on the corrupt object's ETag
    pointer = json.loads(get(raw, LATEST))
    assert pointer["version"] == "v0002"
    assert pointer["manifest_sha256"] == hashlib.sha256(get(raw, ROOT + "v0002/manifest.json")).hexdigest()


@pytest.mark.parametrize("kind", ["not-json", "array", "not-a-version", "too-large", "no-such-version"])
def test_rn50_list_repairs_a_corrupt_latest(registry, s3_env, tmp_path, kind):
    raw, client = registry
    for run in ("a", "b"):
        publish(make_model_dir(tmp_path / run, seed=ord(run)), client, run_id=run)
    put(raw, LATEST, CORRUPT_LATEST[kind])
    listing = cli("list", "--bucket", BUCKET, env=s3_env)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[2].split()[0] == "v0002" and listing.stdout.splitlines()[2].endswith("latest")
    assert len(listing.stderr.splitlines()) == 1 and "replaced by a pointer to v0002" in listing.stderr
    assert json.loads(get(raw, LATEST))["version"] == "v0002"
    assert latest_manifest(client, BUCKET, "models", "resnet50")["version"] == "v0002"


def test_the_repair_loses_to_a_concurrent_change(registry, tmp_path):
    raw, client = registry
    first = publish(make_model_dir(tmp_path / "a"), client, run_id="a")
    good = get(raw, LATEST)
    put(raw, LATEST, b"{not json")
    raced = []

    def writes_first(params, **_):  # another client fixes latest.json between our read and our swap
        if params["Key"] == LATEST and not raced:
            raced.append(put(raw, LATEST, good))

    client.meta.events.register("before-parameter-build.s3.PutObject", writes_first)
    assert latest_manifest(client, BUCKET, "models", "resnet50") == first.manifest
    assert raced and raw.head_object(Bucket=BUCKET, Key=LATEST)["ETag"] == raced[0]  # theirs stands, untouched


def test_a_corrupt_latest_with_nothing_complete_is_nothing_published(registry, tmp_path):
    raw, client = registry
    put(raw, LATEST, b"{not json")
    assert latest_manifest(client, BUCKET, "models", "resnet50") is None
    with pytest.raises(RegistryError, match="nothing published yet"):
        pull_version(client, BUCKET, tmp_path / "pulled")
    assert publish(make_model_dir(tmp_path / "a"), client, run_id="a").latest == "v0001"
    assert json.loads(get(raw, LATEST))["version"] == "v0001"


# -- manifests that are not what they must be ---------------------------------------------------------

BAD_MANIFESTS = {
    "array": (b'["v0001"]', "a JSON array, not an object"),
    "string": (b'"v0001"', "a JSON string, not an object"),
    "files-array": (b'{"format": "rn50-model-manifest/1", "model": "resnet50", "version": "v0001", '
                    b'"files": ["eval.json"]}', "files: not an object"),
    "size-string": (b'{"model": "resnet50", "version": "v0001", "files": {"eval.json": {"size": "12"}}}',
                    "files['eval.json']: needs a size (bytes) and a sha256 (64 hex digits)"),
    "metrics-array": (b'{"model": "resnet50", "version": "v0001", "files": {}, "metrics": [95.0]}',
                      "metrics: not an object"),
    "other-model": (b'{"model": "vgg16", "version": "v0001", "files": {}}', "is for model 'vgg16', not 'resnet50'"),
    "not-json": (b'{"model": ', "not valid JSON"),
    "too-large": (HUGE, f"larger than the {MAX_JSON_BYTES} bytes"),
}


@pytest.mark.parametrize("kind", BAD_MANIFESTS)
def test_a_bad_manifest_is_a_one_line_error_in_pull_list_and_the_gate(registry, s3_env, tmp_path, kind):
    raw, client = registry
    publish(make_model_dir(tmp_path / "a"), client, run_id="a")
    body, reason = BAD_MANIFESTS[kind]
    put(raw, ROOT + "v0001/manifest.json", body)
    uri = f"s3://{BUCKET}/{ROOT}v0001/manifest.json"
    # latest.json vouches for these very bytes, so only the manifest's content is wrong.
    pointer = json.loads(get(raw, LATEST)) | {"manifest_sha256": hashlib.sha256(body).hexdigest()}
    put(raw, LATEST, json.dumps(pointer).encode())
    with pytest.raises(RegistryError, match=f"^{re.escape(uri)}: .*{re.escape(reason)}"):
        pull_version(client, BUCKET, tmp_path / "pulled", version="v0001")
    with pytest.raises(RegistryError, match=f"^{re.escape(uri)}: "):
        list_versions(client, BUCKET, "models", "resnet50")
    with pytest.raises(RegistryError, match=f"^{re.escape(uri)}: "):  # what the gate reads the champion with
        latest_manifest(client, BUCKET, "models", "resnet50")
    assert not (tmp_path / "pulled").exists()
    for command in (("pull", "--bucket", BUCKET, "--version", "v0001", str(tmp_path / "cli")),
                    ("list", "--bucket", BUCKET)):
        result = cli(*command, env=s3_env)
        assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith(f"rn50 {command[0]}: error: {uri}: ") and reason in result.stderr


def test_rn50_list_prints_what_a_manifest_holds_whatever_its_type(registry, s3_env, tmp_path):
    raw, client = registry
    publish(make_model_dir(tmp_path / "a"), client, run_id="a")
    key = ROOT + "v0001/manifest.json"
    manifest = json.loads(get(raw, key)) | {"dataset_version": {"md5": 1}, "created_at": 7, "verdict": None}
    put(raw, key, json.dumps(manifest).encode())
    listing = cli("list", "--bucket", BUCKET, env=s3_env)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[1].split()[:2] == ["v0001", "7"] and "{'md5': 1}" in listing.stdout


def test_the_gate_task_reads_a_bad_champion_manifest_as_one_line(registry, tmp_path):
    from pipeline.recipe import get_profile
    from pipeline.workspace import RunWorkspace
    from tasks import check_accuracy

    raw, client = registry
    publish(make_model_dir(tmp_path / "a"), client, run_id="a")
    body = b'["v0001"]'
    put(raw, ROOT + "v0001/manifest.json", body)
    put(raw, LATEST, json.dumps(json.loads(get(raw, LATEST)) | {"manifest_sha256": hashlib.sha256(body).hexdigest()})
        .encode())
    ws = RunWorkspace(tmp_path / "ws", "r").create()
    ws.model.mkdir()
    get_profile("smoke").save(ws.model)
    ws.eval.mkdir()
    (ws.eval / "eval.json").write_text('{"top1_accuracy": 91.0}')
    with pytest.raises(RegistryError, match=r"manifest\.json: a JSON array, not an object"):
        check_accuracy.run(ws, profile="smoke", client=client, bucket=BUCKET)


def test_a_manifest_naming_another_version_is_refused(registry, tmp_path):
    raw, client = registry
    publish(make_model_dir(tmp_path / "a"), client, run_id="a")
    publish(make_model_dir(tmp_path / "b", seed=1), client, run_id="b")
    other = get(raw, ROOT + "v0002/manifest.json")
    put(raw, ROOT + "v0001/manifest.json", other)
    with pytest.raises(RegistryError, match=r"v0001/manifest\.json: says version 'v0002', not 'v0001'"):
        pull_version(client, BUCKET, tmp_path / "pulled", version="v0001")
    # latest.json naming v0001 and vouching for those bytes: still refused.
    pointer = json.loads(get(raw, LATEST)) | {"version": "v0001", "manifest": ROOT + "v0001/manifest.json",
                                              "manifest_sha256": hashlib.sha256(other).hexdigest()}
    put(raw, LATEST, json.dumps(pointer).encode())
    with pytest.raises(RegistryError, match="says version 'v0002', not 'v0001'"):
        pull_version(client, BUCKET, tmp_path / "pulled")
    assert not (tmp_path / "pulled").exists()


BAD_NAMES = ["a/../eval.json", "./eval.json", "a//eval.json", "a\\eval.json", "/eval.json", "../eval.json", "",
             "manifest.json", "eval.json/inner", "a\x00b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_manifest_file_name_that_is_not_a_plain_relative_path_is_refused_before_any_download(
        registry, tmp_path, name):
    raw, client = registry
    publish(make_model_dir(tmp_path / "a"), client, run_id="a")
    key = ROOT + "v0001/manifest.json"
    manifest = json.loads(get(raw, key))
    body = b'{"top1_accuracy": 1.0}'
    if name not in ("a\x00b", "manifest.json"):
        put(raw, ROOT + "v0001/" + name, body)  # the aliasing object exists, with its own valid digest
    manifest["files"][name] = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    put(raw, key, json.dumps(manifest).encode())
    gets = []
    client.meta.events.register("before-parameter-build.s3.GetObject",
                                lambda params, **_: gets.append(params["Key"]))
    prefix = re.escape(f"s3://{BUCKET}/{ROOT}v0001/manifest.json: files[{name!r}]: ")
    with pytest.raises(RegistryError, match=f"^{prefix}"):
        pull_version(client, BUCKET, tmp_path / "pulled", version="v0001")
    assert gets == [key] and not (tmp_path / "pulled").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no staging directory left either


@pytest.mark.parametrize("name", ["a/../eval.json", "./x", "a//b", "a\\b", "", "manifest.json", ".claim.json"])
def test_publish_refuses_the_same_names(registry, tmp_path, name):
    raw, client = registry
    report = tmp_path / "report.json"
    report.write_text("{}")
    with pytest.raises(PublishError, match=r"not a plain relative file name|reserved for the registry"):
        publish(make_model_dir(tmp_path / "a"), client, extra_files={name: report})
    assert raw.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


# -- claims ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("claim", [b"{not json", b'["someone"]', b'"someone"',
                                   b'{"run_id": "a", "pad": "' + b"x" * MAX_JSON_BYTES + b'"}'])
def test_a_bad_claim_does_not_block_publishing(registry, tmp_path, claim):
    raw, client = registry
    put(raw, ROOT + "v0001/.claim.json", claim)
    result = publish(make_model_dir(tmp_path / "a"), client, run_id="a")
    assert (result.version, result.latest) == ("v0002", "v0002")  # v0001 is someone else's, whatever it holds
    assert publish(make_model_dir(tmp_path / "a2"), client, run_id="a").version == "v0002"  # found again on retry


def test_a_json_object_larger_than_the_bound_is_refused_without_reading_it(registry):
    from pipeline.publish.store import InvalidObject, Store

    raw, client = registry
    put(raw, "big.json", b" " * (MAX_JSON_BYTES + 1) + b"{}")  # valid JSON, only too large
    put(raw, "fits.json", b" " * (MAX_JSON_BYTES - 2) + b"{}")
    store = Store(client, BUCKET)
    with pytest.raises(InvalidObject, match=rf"^s3://{BUCKET}/big\.json: larger than the {MAX_JSON_BYTES} bytes"):
        store.get_json("big.json")
    assert store.get_json("fits.json")[0] == {}
    assert MAX_JSON_BYTES <= 4 * MIB  # a registry JSON object is kilobytes; this is not a memory budget


@pytest.mark.parametrize("name", ["v0001\n", "v\u0660\u0660\u0660\u0661", "v0001/", "v001", "x0001"])
def test_only_a_plain_version_name_is_a_version(name):
    # "v0001\n" passed `^v(\d{4,})$` ($ matches before a final newline) and Arabic-Indic digits passed \d.
    with pytest.raises(ValueError, match="is not a version name"):
        version_number(name)
