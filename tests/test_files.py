"""Stage outputs never write through a symlink planted in the model directory (pipeline/files.py).

A link planted where a stage writes its output must not redirect the write: the file it points to
stays as it was, and the output is a regular file of its own (or, for metrics.jsonl's appends, the
stage refuses with a one-line error naming the file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.contracts.names import DECISION_FILE
from pipeline.files import NotRegularFile, append_line, write_atomic
from pipeline.gate import GateFailed, run_gate
from pipeline.recipe import get_profile

VICTIM = "precious: the file a planted link points at\n"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "model"
    path.mkdir()
    get_profile("smoke").save(path)
    (path / "eval.json").write_text(json.dumps({"top1_accuracy": 95.0}) + "\n")
    return path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM)
    return path


def assert_replaced_not_followed(link: Path, victim: Path) -> dict:
    assert victim.read_text() == VICTIM
    assert not link.is_symlink() and link.is_file()
    assert [p.name for p in link.parent.iterdir() if p.name.endswith(".tmp")] == []
    return json.loads(link.read_text())


def test_gate_replaces_a_planted_decision_json_link(model_dir, victim):
    (model_dir / DECISION_FILE).symlink_to(victim)
    run_gate(model_dir)
    assert assert_replaced_not_followed(model_dir / DECISION_FILE, victim)["verdict"] == "pass"


def test_gate_does_not_read_eval_json_through_a_link(model_dir, tmp_path):
    # What the gate reads goes into decision.json, which is published: a link must not smuggle a file in.
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"top1_accuracy": 99.0, "token": "planted-secret"}) + "\n")
    (model_dir / "eval.json").unlink()
    (model_dir / "eval.json").symlink_to(secret)
    with pytest.raises(GateFailed, match=r"eval\.json: a symlink"):
        run_gate(model_dir)
    assert "planted-secret" not in (model_dir / DECISION_FILE).read_text()


def test_config_save_replaces_a_planted_link(model_dir, victim):
    (model_dir / "config.json").unlink()
    (model_dir / "config.json").symlink_to(victim)
    get_profile("smoke").save(model_dir)
    assert assert_replaced_not_followed(model_dir / "config.json", victim)["profile"] == "smoke"


def test_evaluate_writes_eval_json_and_refuses_a_metrics_link(model_dir, victim):
    from pipeline.contracts.names import METRICS_FILE
    from pipeline.train.evaluate import EvalResult, write_eval

    (model_dir / "eval.json").unlink()
    (model_dir / "eval.json").symlink_to(victim)
    result = EvalResult(top1_accuracy=95.0, top5_accuracy=99.0, eval_count=500, eval_throughput=10.0,
                        checkpoint="ckpt-2", step=2)
    write_eval(result, model_dir)
    assert assert_replaced_not_followed(model_dir / "eval.json", victim)["top1_accuracy"] == 95.0

    (model_dir / METRICS_FILE).unlink()
    (model_dir / METRICS_FILE).symlink_to(victim)
    with pytest.raises(NotRegularFile, match=r"metrics\.jsonl: a symlink"):
        write_eval(result, model_dir)
    assert victim.read_text() == VICTIM


def test_metrics_log_appends_lines_and_refuses_a_link(model_dir, victim):
    from pipeline.contracts.names import METRICS_FILE
    from pipeline.train.logs import MetricsLog, read_metrics

    log = MetricsLog(model_dir)
    log.record({"step": 1, "loss": 2.0})
    log.record({"step": 2, "loss": 1.0})
    assert [e["step"] for e in read_metrics(model_dir)] == [1, 2]
    (model_dir / METRICS_FILE).unlink()
    (model_dir / METRICS_FILE).symlink_to(victim)
    with pytest.raises(NotRegularFile, match=r"metrics\.jsonl: a symlink"):
        log.record({"step": 3, "loss": 0.5})
    log.close()
    assert victim.read_text() == VICTIM


def test_append_to_a_fifo_fails_at_once(tmp_path):
    fifo = tmp_path / "metrics.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFile, match=r"metrics\.jsonl: a special file"):
        append_line(fifo, "{}")  # no reader: without O_NONBLOCK this open would wait forever


def test_write_atomic_replaces_a_dangling_link_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.symlink_to(tmp_path / "nowhere" / "created-through-the-link")
    write_atomic(target, "{}\n")
    assert target.read_text() == "{}\n" and not target.is_symlink() and not (tmp_path / "nowhere").exists()
    with pytest.raises(TypeError):
        write_atomic(target, None)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_validation_writes_its_report_beside_planted_links(sample_dir, tmp_path, victim):
    from pipeline.contracts.names import GX_RESULT
    from pipeline.data.validate import validate_dataset

    report_dir, index_dir = tmp_path / "report", tmp_path / "dali"
    report_dir.mkdir()
    index_dir.mkdir()
    links = [report_dir / "report.json", report_dir / GX_RESULT, index_dir / "train-00000-of-00004.idx"]
    for link in links:
        link.symlink_to(victim)
    report = validate_dataset(sample_dir, expect="sample", report_dir=report_dir, dali_index_dir=index_dir)
    assert report.ok
    assert victim.read_text() == VICTIM
    for link in links:
        assert not link.is_symlink() and link.stat().st_size > 0


def test_export_does_not_write_through_a_planted_link(model_dir, victim):
    from support import untrained_checkpoint

    from pipeline.contracts.names import EXPORT_FILE
    from pipeline.train.export import export_keras

    untrained_checkpoint(model_dir, get_profile("smoke").replace(num_classes=10))
    planted = [model_dir / f".{EXPORT_FILE}.partial.keras", model_dir / EXPORT_FILE]  # the old temporary name too
    for link in planted:
        link.symlink_to(victim)
    later = victim.stat().st_mtime + 3600  # a link to a file newer than the checkpoint is no export either
    os.utime(victim, (later, later))
    path = export_keras(model_dir)
    assert victim.read_bytes() == VICTIM.encode()
    assert path == model_dir / EXPORT_FILE and not path.is_symlink() and path.stat().st_size > 0


def test_fetch_data_and_publish_never_go_through_a_planted_data_json_link(s3_env, sample_dir, tmp_path, victim,
                                                                          monkeypatch):
    from publish_support import keys, make_model_dir, s3

    from tasks import fetch_data, publish
    from tasks.common import workspace

    ws = workspace("manual__links", tmp_path / "workspaces")
    ws.data_record.symlink_to(victim)
    fetch_data.run(ws, data_dir=str(sample_dir))
    assert assert_replaced_not_followed(ws.data_record, victim)["source"] == "data_dir"
    # Planted after fetch_data: publish refuses it rather than put the file it names into the manifest.
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"dataset_version": "planted-secret"}) + "\n")
    ws.data_record.unlink()
    ws.data_record.symlink_to(secret)
    make_model_dir(ws.model)
    monkeypatch.delenv("RN50_DVC_REPO", raising=False)
    client = s3(s3_env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket="rn50-links")
    with pytest.raises(NotRegularFile, match=r"data\.json: a symlink"):
        publish.run(ws, client=client, bucket="rn50-links")
    assert keys(client, "rn50-links") == []
