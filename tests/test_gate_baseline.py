"""The run's live baseline, task by task, against a real registry (moto_server over HTTP) and the sample:
evaluate_baseline measures the published champion on this run's data (or records that there is none),
train's init_from=champion uses the same snapshot of the run's registry, and the gate compares the two.

The champion is a 32-px smoke model (built once) whose output is its bias, which ranks the sample's classes,
so that its figures are neither 0 nor 100 and depend on which records it scores: what is checked is
which model is measured on which data, not how good it is.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException  # final: never retried
from publish_support import BUCKET, make_model_dir, publish

from pipeline.contracts.names import DECISION_FILE
from pipeline.stages.baseline import BaselineError
from pipeline.workspace import RunWorkspace

tf = pytest.importorskip("tensorflow")

MD5 = "3f2a9c1e5d7b40a8b1c2d3e4f5a6b7c8"
PREFIX = "team/models"  # not the default: the run's Params name the registry, not RN50_BUCKET/RN50_PREFIX


@pytest.fixture(scope="module")
def champion_dir(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained-like smoke model directory (config.json, a real checkpoint) with random weights."""
    import numpy as np
    from model_support import save_model_dir, smoke_config

    from pipeline.data.input import eval_dataset
    from pipeline.train.model import build_model

    labels = sorted({int(label) for _, batch in eval_dataset(sample_dir, batch_size=100, image_size=32)
                     for label in batch.numpy()})
    model = build_model(smoke_config(), dtype="float32")
    bias = np.zeros(model.get_layer("fc").bias.shape, np.float32)
    bias[labels] = 5.0 + 0.5 * np.arange(len(labels))
    model.get_layer("fc").bias.assign(bias)
    model.get_layer("fc").kernel.assign(tf.zeros_like(model.get_layer("fc").kernel))  # random BN stats: huge logits
    return save_model_dir(model, tmp_path_factory.mktemp("champion") / "model", step=7, config=smoke_config())


def _publish(champion_dir: Path, folder: Path, client) -> str:
    version = make_model_dir(folder, keras=False)
    shutil.rmtree(version / "checkpoints")
    shutil.copytree(champion_dir / "checkpoints", version / "checkpoints")
    shutil.copy(champion_dir / "config.json", version / "config.json")
    return publish(version, client, prefix=PREFIX).version


@pytest.fixture
def no_ngc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RN50_NGC_CHECKPOINT", raising=False)
    monkeypatch.setenv("RN50_BUCKET", "not-the-runs-bucket")  # the trainer's own setting: must not be used
    monkeypatch.setenv("RN50_PREFIX", "not/the/runs/prefix")


def _candidate(ws: RunWorkspace, top1: float, eval_count: int, data: dict | None = None) -> None:
    from pipeline.recipe import get_profile

    ws.model.mkdir(exist_ok=True)
    get_profile("smoke").save(ws.model)
    ws.eval.mkdir(exist_ok=True)
    (ws.eval / "eval.json").write_text(json.dumps({"top1_accuracy": top1, "top5_accuracy": 99.0,
                                                   "eval_count": eval_count, "data": data}))


def test_the_champion_is_measured_on_this_runs_data_and_train_starts_from_the_same_snapshot(
        champion_dir, registry, no_ngc, sample_dir: Path, tmp_path: Path) -> None:
    from pipeline.data.input import count_records, split_identity
    from pipeline.files import write_json
    from pipeline.stages.init_source import InitFrom
    from pipeline.stages.train import train_command
    from pipeline.train.evaluate import evaluate
    from tasks import check_accuracy, evaluate_baseline, train

    _, client = registry
    assert _publish(champion_dir, tmp_path / "v1", client) == "v0001"
    ws = RunWorkspace(tmp_path / "ws", "manual__baseline").create()
    write_json(ws.data_record, {"source": "dvc", "dataset_version": MD5})  # as fetch_data records the run's data
    record = evaluate_baseline.run(ws, data_dir=str(sample_dir), client=client, bucket=BUCKET, prefix=PREFIX)

    identity = {"kind": "champion", "version": "v0001", "uri": f"s3://{BUCKET}/{PREFIX}/resnet50/v0001/"}
    assert json.loads((ws.baseline / "baseline.json").read_text()) == identity
    measured = json.loads((ws.baseline / "eval.json").read_text())
    # This run's validation records, every one, scored with the champion's weights (not its published 95.0).
    assert 0 < measured["top1_accuracy"] < measured["top5_accuracy"] < 100
    assert measured["eval_count"] == count_records(sample_dir, "validation") == record["eval_count"]
    # Which data: the validation shards it read, and the dataset version fetch_data recorded of them.
    assert measured["data"] == {**split_identity(sample_dir, "validation"), "dataset_version": MD5}
    assert measured["data"]["records"] == measured["eval_count"] and measured["data"]["shards"] == 2
    direct = evaluate(sample_dir, champion_dir)
    assert (measured["top1_accuracy"], measured["top5_accuracy"]) == (direct.top1_accuracy, direct.top5_accuracy)
    # Per-class top-1 counts from the same pass (the report's): each record under its own class, once, and the
    # hits add up to top-1. The sample's validation split holds 50 images of each of its ten classes.
    counts, hits = direct.per_class["count"], direct.per_class["correct"]
    assert len(counts) == len(hits) == 1000 and measured["per_class"] == direct.per_class
    assert {i: n for i, n in enumerate(counts) if n} == dict.fromkeys(range(0, 1000, 100), 50)
    assert all(0 <= h <= n for h, n in zip(hits, counts, strict=True))
    assert round(100.0 * sum(hits) / direct.eval_count, 4) == direct.top1_accuracy

    # A newer version published meanwhile changes nothing for this run: train gets the same snapshot.
    assert _publish(champion_dir, tmp_path / "v2", client) == "v0002"
    source = train.init_source(ws, "champion", client=client, bucket=BUCKET, prefix=PREFIX)
    assert source == str(ws.champion)
    cmd = train_command(data_dir=str(sample_dir), model_dir=ws.model, profile="smoke", init_from=source)
    assert cmd[cmd.index("--init-from") + 1] == str(ws.champion)
    with InitFrom(source).model_dir() as (folder, init):  # what config.json's init record will say
        assert folder == ws.champion
    assert init == {**identity, "path": str(ws.champion.resolve())}
    assert train.init_source(ws, "scratch") == "scratch"

    # The gate: the candidate against v0001 as measured here, on the same records.
    top1 = measured["top1_accuracy"]
    _candidate(ws, top1, measured["eval_count"], measured["data"])
    summary = check_accuracy.run(ws, profile="smoke", tolerance=0.3, force_publish=True, force_reason="random weights",
                                 client=client, bucket=BUCKET, prefix=PREFIX)
    decision = json.loads((ws.gate / DECISION_FILE).read_text())
    assert decision["live_baseline"] == {"model": identity, **{k: measured[k] for k in (
        "top1_accuracy", "top5_accuracy", "eval_count", "data")}} == summary["live_baseline"]
    assert decision["candidate"]["eval_count"] == measured["eval_count"]
    assert decision["champion"]["version"] == "v0002"  # recorded: the latest when the gate ran
    assert (f"PASS: top-1 {top1:.2f} % >= {top1 - 0.3:.2f} % (live baseline champion v0001: {top1:.2f} % on the "
            f"same {measured['eval_count']} images - 0.3 pp)") in decision["reasons"]
    _candidate(ws, top1, measured["eval_count"] - 1, measured["data"])  # other records: no comparison, a failure
    count = measured["eval_count"]
    with pytest.raises(AirflowFailException, match=f"on {count - 1} validation records and the live baseline "
                                                   f"champion v0001 on {count}: not the same data"):
        check_accuracy.run(ws, profile="smoke", client=client, bucket=BUCKET, prefix=PREFIX)


def test_a_candidate_evaluated_on_other_images_of_the_same_count_fails_the_gate_naming_both(
        champion_dir, registry, no_ngc, sample_dir: Path, tmp_path: Path) -> None:
    """`rn50 evaluate` on another dataset of the same size (another 500 validation images): the gate compares
    what eval.json says of the shards each side read, computed by the evaluation from the files themselves."""
    from pipeline.data.sample import SampleSpec, make_sample
    from pipeline.train.evaluate import evaluate, write_eval
    from tasks import check_accuracy, evaluate_baseline

    other = tmp_path / "other"
    make_sample(other, SampleSpec(seed=7, train_per_class=(2, 2), train_shards=1))  # 500 other validation images
    _, client = registry
    assert _publish(champion_dir, tmp_path / "v1", client) == "v0001"
    ws = RunWorkspace(tmp_path / "ws", "manual__other").create()
    evaluate_baseline.run(ws, data_dir=str(sample_dir), client=client, bucket=BUCKET, prefix=PREFIX)
    baseline = json.loads((ws.baseline / "eval.json").read_text())["data"]
    _candidate(ws, 0.0, 0)
    candidate = evaluate(other, champion_dir)
    write_eval(candidate, ws.eval)
    assert candidate.eval_count == baseline["records"] == 500 and candidate.data["sha256"] != baseline["sha256"]

    def named(data: dict) -> str:
        return f"validation {data['sha256'][:16]} (500 records in 2 shards)"

    reason = (f"FAIL: the candidate was evaluated on {named(candidate.data)} and the live baseline champion v0001 "
              f"on {named(baseline)}: not the same data, no comparison")
    with pytest.raises(AirflowFailException, match=re.escape(reason[len("FAIL: "):])):
        check_accuracy.run(ws, profile="smoke", client=client, bucket=BUCKET, prefix=PREFIX)
    decision = json.loads((ws.gate / DECISION_FILE).read_text())
    assert reason in decision["reasons"] and decision["thresholds"]["live_min"] is None
    assert (decision["candidate"]["data"], decision["live_baseline"]["data"]) == (candidate.data, baseline)


def test_with_nothing_published_there_is_no_baseline_and_the_floor_decides(
        registry, no_ngc, sample_dir: Path, tmp_path: Path) -> None:
    from tasks import check_accuracy, evaluate_baseline, train

    _, client = registry
    ws = RunWorkspace(tmp_path / "ws", "manual__first").create()
    record = evaluate_baseline.run(ws, data_dir=str(sample_dir), client=client, bucket=BUCKET, prefix=PREFIX)
    reason = f"RN50_NGC_CHECKPOINT is not set and nothing is published under s3://{BUCKET}/{PREFIX}/resnet50/"
    assert record == {"model": {"kind": "none", "reason": reason}}
    assert sorted(p.name for p in ws.baseline.iterdir()) == ["baseline.json"] and not ws.champion.exists()
    _candidate(ws, 91.4, 500)
    check_accuracy.run(ws, profile="smoke", client=client, bucket=BUCKET, prefix=PREFIX)
    decision = json.loads((ws.gate / DECISION_FILE).read_text())
    assert (decision["verdict"], decision["live_baseline"]) == ("pass", None)
    assert f"PASS: no live baseline: {reason}" in decision["reasons"]
    # Fine-tuning from a champion that does not exist is final, and says where it looked.
    with pytest.raises(AirflowFailException, match=f"^init_from=champion: nothing is published under s3://{BUCKET}/{PREFIX}/"):
        train.init_source(ws, "champion", client=client, bucket=BUCKET, prefix=PREFIX)


def test_a_registry_that_cannot_be_read_is_an_error_not_a_run_without_baseline(
        registry, no_ngc, sample_dir: Path, tmp_path: Path) -> None:
    from tasks import evaluate_baseline, train

    _, client = registry
    ws = RunWorkspace(tmp_path / "ws", "manual__down").create()
    with pytest.raises(BaselineError, match=r"^the champion under s3://no-such-bucket/team/models/resnet50/: "):
        evaluate_baseline.run(ws, data_dir=str(sample_dir), client=client, bucket="no-such-bucket", prefix=PREFIX)
    assert not (ws.baseline / "baseline.json").exists() and not ws.champion.exists()
    with pytest.raises(RuntimeError, match=r"^init_from=champion: the champion under s3://no-such-bucket/"):
        train.init_source(ws, "champion", client=client, bucket="no-such-bucket", prefix=PREFIX)


def test_with_nvidias_checkpoint_set_its_import_is_the_baseline_not_the_champion(
        champion_dir, registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from model_support import GLOBAL_STEP, nvidia_shapes, write_checkpoint

    from pipeline.data.input import count_records
    from pipeline.data.sample import SampleSpec, make_sample
    from tasks import evaluate_baseline

    # NVIDIA's model evaluates at 224 px: a sample with 2 validation images per class keeps that quick.
    data_dir = tmp_path / "small"
    make_sample(data_dir, SampleSpec(train_per_class=(2, 2), validation_per_class=2, train_shards=1))
    rng = np.random.default_rng(3)
    values = {}
    for name, shape in nvidia_shapes().items():  # He-scaled kernels, identity BN: finite logits at 224 px
        if name.endswith("/kernel"):
            values[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:-1]))).astype(np.float32)
        else:
            values[name] = (np.ones if name.endswith(("/gamma", "/moving_variance")) else np.zeros)(shape, np.float32)
    ckpt = write_checkpoint(tmp_path / "ngc", dict(values, global_step=np.int64(GLOBAL_STEP)))
    _, client = registry
    assert _publish(champion_dir, tmp_path / "v1", client) == "v0001"
    monkeypatch.setenv("RN50_NGC_CHECKPOINT", str(ckpt))
    ws = RunWorkspace(tmp_path / "ws", "manual__ngc").create()
    record = evaluate_baseline.run(ws, data_dir=str(data_dir), client=client, bucket=BUCKET, prefix=PREFIX)

    identity = json.loads((ws.baseline / "baseline.json").read_text())
    assert identity == record["model"] and identity["kind"] == "ngc" and identity["source"] == str(ckpt)
    assert sorted(identity["sha256"]) == ["nvidia_rn50_tf_amp.data-00000-of-00001", "nvidia_rn50_tf_amp.index"]
    measured = json.loads((ws.baseline / "eval.json").read_text())
    assert measured["eval_count"] == count_records(data_dir, "validation") == 20
    assert not ws.champion.exists()  # NVIDIA's checkpoint is the baseline: the champion is not even pulled
    assert any((ws.root / ".ngc-cache").rglob("config.json"))  # imported once into the workspace root's cache
