"""The run workspace's stages on a real (tiny, untrained) checkpoint: evaluate, check_accuracy and publish
as the DAG runs them. Each writes only its own folder (train model/, evaluate eval/ and export/, the gate
gate/), a retried evaluate replaces its folder, and publish only reads: the version holds the names it
held when every stage wrote one model directory, each with its stage's bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

tf = pytest.importorskip("tensorflow")

from publish_support import BUCKET, SAVED_MODEL_FILES, s3  # noqa: E402
from support import untrained_checkpoint  # noqa: E402

from pipeline.recipe import get_profile  # noqa: E402

TRAINING_LINE = '{"step": 1, "epoch": 0, "loss": 2.3, "lr": 0.01, "train_throughput": 45.0}\n'


def _files(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under folder: relative path -> (sha256, modification time)."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _changed(before: dict[str, tuple[str, int]], after: dict[str, tuple[str, int]]) -> set[str]:
    """The top-level folders (stages) in which a file appeared, changed or went away."""
    return {name.split("/")[0] for name in set(before) ^ set(after) | {n for n in before if after.get(n) != before[n]}}


def test_each_stage_writes_only_its_own_folder_and_publish_only_uploads(s3_env, sample_dir, tmp_path, monkeypatch):
    from tasks import check_accuracy, evaluate, publish
    from tasks.common import workspace

    # What train leaves in model/: config.json, a checkpoint, metrics.jsonl.
    ws = workspace("manual__stages", tmp_path / "workspaces")
    untrained_checkpoint(ws.model, get_profile("smoke").replace(batch_size=100), step=1)
    (ws.model / "metrics.jsonl").write_text(TRAINING_LINE)
    ws.validation.mkdir()
    (ws.validation / "report.json").write_text('{"passed": true}\n')

    # What an earlier try of evaluate left in eval/: a retry replaces it, and leaves nothing of it.
    ws.eval.mkdir()
    (ws.eval / "metrics.jsonl").write_text('{"step": 1, "top1_accuracy": 1.0}\n')
    (ws.eval / "eval.json").write_text('{"top1_accuracy": 1.0}\n')
    start = _files(ws.path)

    summary = evaluate.run(ws, data_dir=str(sample_dir))
    evaluated = _files(ws.path)
    assert _changed(start, evaluated) == {"eval", "export"}
    assert set(_files(ws.export)) == {"model.keras", "labels.txt", *SAVED_MODEL_FILES}
    assert not list(ws.export.glob(".*"))  # no scratch left
    assert {"eval.json", "metrics.jsonl"} <= set(_files(ws.eval))
    [line] = (ws.eval / "metrics.jsonl").read_text().splitlines()  # this try's line only
    assert json.loads(line)["eval_throughput"] == summary["eval_throughput"] and summary["eval_count"] == 500
    export = ws.export / "model.keras"
    assert summary["model_keras"] == str(export) and summary["eval_json"] == str(ws.eval / "eval.json")
    assert export.stat().st_mtime >= (ws.model / "checkpoints/ckpt-1.index").stat().st_mtime

    # The untrained model fails the smoke floor; forced, so that publish has something to upload.
    gated = check_accuracy.run(ws, profile="smoke", force_publish=True, force_reason="test: an untrained model")
    assert gated["decision"] == str(ws.gate / "decision.json")
    after_gate = _files(ws.path)
    assert _changed(evaluated, after_gate) == {"gate"} and set(_files(ws.gate)) == {"decision.json"}

    monkeypatch.delenv("RN50_DVC_REPO", raising=False)
    client = s3(s3_env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=BUCKET)
    result = publish.run(ws, client=client, bucket=BUCKET)
    assert _files(ws.path) == after_gate  # publish only reads the workspace
    key = f"models/resnet50/{result['version']}/manifest.json"
    published = {name: entry["sha256"] for name, entry in
                 json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())["files"].items()}
    # The names consumers see, as when every stage wrote one model directory; each file from its stage's folder,
    # and one metrics.jsonl: training's lines, then evaluate's.
    assert set(published) == {"config.json", "metrics.jsonl", "eval.json", "decision.json", "model.keras",
                              "report.json", "checkpoints/checkpoint", "checkpoints/ckpt-1.index",
                              "checkpoints/ckpt-1.data-00000-of-00001", "labels.txt", *SAVED_MODEL_FILES}
    metrics = (ws.model / "metrics.jsonl").read_bytes() + (ws.eval / "metrics.jsonl").read_bytes()
    assert metrics.startswith(TRAINING_LINE.encode())
    assert published["metrics.jsonl"] == hashlib.sha256(metrics).hexdigest()
    for name, path in (("eval.json", ws.eval / "eval.json"), ("decision.json", ws.gate / "decision.json"),
                       ("model.keras", export), ("config.json", ws.model / "config.json"),
                       ("checkpoints/ckpt-1.index", ws.model / "checkpoints/ckpt-1.index"),
                       ("report.json", ws.validation / "report.json"), ("labels.txt", ws.export / "labels.txt"),
                       *((name, ws.export / name) for name in SAVED_MODEL_FILES)):
        assert published[name] == hashlib.sha256(path.read_bytes()).hexdigest(), name
