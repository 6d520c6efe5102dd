"""The DAG end to end under `airflow dags test`, against a real S3 server.

What `make demo` does, as tests: the sample data pushed to the DVC remote on a moto server, a SQLite
Airflow home, and the whole chain from `dvc pull` to a published version. Bad data and a bad model
must stop the chain at the right task with nothing published. The UI's Trigger on `make airflow` is
tests/test_browser.py; a trigger over REST on the Celery stack, tests/test_stack_e2e.py.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from support import BIN, REPO, run

BUCKET = "rn50-artifacts"
pytestmark = pytest.mark.slow


@pytest.fixture
def airflow_env(tmp_path, s3_env, dvc_env, sample_dir) -> dict[str, str]:
    """A SQLite Airflow home, the sample on the DVC remote, and a model-registry repo for the pointer."""
    import boto3

    home = tmp_path / "airflow-home"
    home.mkdir()
    env = {
        **dvc_env, **s3_env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "RN50_WORKSPACE_ROOT": str(tmp_path / "workspaces"),
        "RN50_REPO": str(REPO),
        "RN50_DVC_REPO": str(tmp_path / "registry"),
        "PYTHONPATH": str(REPO),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "GX_ANALYTICS_ENABLED": "false",
    }
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    # The sample on the remote, exactly as data.dvc at HEAD pins it: fetch_data pulls it from there.
    project = tmp_path / "push"
    project.mkdir()
    run(project, env, "git", "init", "-q")
    run(project, env, str(BIN / "dvc"), "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", project / ".dvc" / "config")
    (project / "data.dvc").write_bytes(subprocess.check_output(["git", "show", "HEAD:data.dvc"], cwd=REPO))
    shutil.copytree(sample_dir, project / "data" / "imagenet")
    run(project, env, str(BIN / "dvc"), "commit", "--quiet", "data.dvc")
    run(project, env, str(BIN / "dvc"), "push", "--quiet", "data.dvc")
    registry = tmp_path / "registry"
    registry.mkdir()
    run(registry, env, "git", "init", "-q")
    run(registry, env, str(BIN / "dvc"), "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", registry / ".dvc" / "config")
    run(registry, env, "git", "add", ".dvc")
    run(registry, env, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "registry")
    run(None, env, str(BIN / "airflow"), "db", "migrate", timeout=300)
    run(None, env, str(BIN / "airflow"), "pools", "set", "gpu", "1", "GPU slots")
    return env


def _json_out(text: str):
    """The JSON an `airflow ... -o json` command printed, after any log lines before it."""
    line = next(ln for ln in reversed(text.splitlines()) if ln.startswith(("[{", "[]")))
    return json.loads(line)


def _dag_test(env: dict[str, str], conf: dict) -> tuple[str, dict[str, str]]:
    """Run the DAG once; return its final state and each task's state."""
    result = subprocess.run(
        [str(BIN / "airflow"), "dags", "test", "resnet50_retrain", "--conf", json.dumps(conf)],
        env=env, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL,
    )
    log = result.stdout + result.stderr
    runs = _json_out(run(None, env, str(BIN / "airflow"), "dags", "list-runs", "resnet50_retrain", "-o", "json"))
    last = max(runs, key=lambda r: r["start_date"] or "")
    states = _json_out(run(None, env, str(BIN / "airflow"), "tasks", "states-for-dag-run", "resnet50_retrain",
                           last["run_id"], "-o", "json"))
    by_task = {s["task_id"]: s["state"] for s in states}
    print(log[-5000:])
    return last["state"], by_task


def _model_keys() -> list[str]:
    import boto3

    listing = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="models/")
    return [o["Key"] for o in listing.get("Contents", [])]


def test_dag_end_to_end_publishes_a_verified_version(airflow_env, tmp_path):
    import boto3

    from pipeline.workspace import RunWorkspace

    root = Path(airflow_env["RN50_WORKSPACE_ROOT"])
    idle = RunWorkspace(root, "manual__last_year").create()
    year_ago = time.time() - 365 * 86400
    os.utime(idle.path / "run.json", (year_ago, year_ago))
    os.utime(idle.path, (year_ago, year_ago))
    # 200 of the smoke recipe's 620 steps (the schedule spans them): 98 % top-1 on the sample, far above the
    # 60 % floor, in a third of the time. The recipe's own accuracy is test_train_run's to check.
    state, tasks = _dag_test(airflow_env, {"profile": "smoke", "num_gpus": 1, "steps": 200})
    assert tasks == dict.fromkeys(
        ["fetch_data", "validate_data", "check_changes", "train", "evaluate", "evaluate_baseline",
         "check_accuracy", "report", "publish"],
        "success"
    )
    assert state == "success"
    assert not idle.path.exists()  # past the retention (30 days)
    [ws] = [p for p in root.iterdir() if p.name.startswith("manual__")]
    # Published: the run's data copy is gone, its reports and model stay, and the cache keeps the data.
    assert not (ws / "repo" / "data" / "imagenet").exists() and (ws / "repo" / "data.dvc").is_file()
    assert (ws / "validation" / "report.json").is_file() and (ws / "export" / "model.keras").is_file()
    assert any((root / ".dvc-cache").rglob("*"))
    s3 = boto3.client("s3")
    latest = json.loads(s3.get_object(Bucket=BUCKET, Key="models/resnet50/latest.json")["Body"].read())
    version = latest["version"]
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=f"models/resnet50/{version}/manifest.json")["Body"].read())
    assert manifest["metrics"]["top1_accuracy"] >= 60.0
    assert manifest["verdict"] == "pass"
    dataset_md5 = yaml.safe_load(subprocess.check_output(["git", "show", "HEAD:data.dvc"], cwd=REPO))["outs"][0]
    assert json.dumps(manifest).count(dataset_md5["md5"]) >= 1  # the dataset version is recorded
    assert manifest["dataset_version"] == dataset_md5["md5"]
    assert manifest["airflow"]["dag_id"] == "resnet50_retrain"
    names = set(manifest["files"])
    assert {"eval.json", "decision.json", "metrics.jsonl", "report.json", "model.keras"} <= names
    # The run report with its figures (GX's results on its page, not GX's CDN-loading Data Docs), and what each
    # stage cost, in the version.
    assert {"report/index.html", "report/training.png", "report/accuracy.png", "report/per_class.png"} <= names
    assert not any(name.startswith("report/data_docs/") for name in names)
    cost = manifest["cost"]
    assert {"fetch_data", "validate_data", "train", "evaluate", "check_accuracy", "report"} <= set(cost["stages"])
    assert cost["stages"]["train"]["gpus"] == 1 and cost["gpu_hours"]["training"] > 0

    # The DVC pointer: a fresh clone of the registry repo pulls the same bytes the manifest lists.
    registry = Path(airflow_env["RN50_DVC_REPO"])
    pointer = registry / "models" / "resnet50.dvc"
    assert pointer.exists()
    clone = tmp_path / "consumer"
    run(None, airflow_env, "git", "clone", "-q", str(registry), str(clone))
    if not (clone / "models" / "resnet50.dvc").exists():  # pointer left uncommitted: copy it as a user would
        (clone / "models").mkdir(exist_ok=True)
        shutil.copy(pointer, clone / "models" / "resnet50.dvc")
    run(clone, airflow_env, str(BIN / "dvc"), "pull", "--quiet", "models/resnet50.dvc")
    out = yaml.safe_load((clone / "models" / "resnet50.dvc").read_text())["outs"][0]["path"]
    pulled = clone / "models" / out
    sha = {name: entry["sha256"] for name, entry in manifest["files"].items()}
    checked = 0
    for path in pulled.rglob("*"):
        rel = path.relative_to(pulled).as_posix()
        if path.is_file() and rel in sha:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha[rel], rel
            checked += 1
    assert checked >= 5


def _corrupt_copy(sample_dir: Path, dest: Path) -> Path:
    shutil.copytree(sample_dir, dest)
    shard = dest / "train-00001-of-00004"
    data = bytearray(shard.read_bytes())
    data[5000] ^= 0xFF  # inside a record: its data CRC no longer matches
    shard.write_bytes(bytes(data))
    return dest


def test_corrupted_data_stops_the_run_before_training(airflow_env, sample_dir, tmp_path):
    data_dir = _corrupt_copy(sample_dir, tmp_path / "corrupt")
    state, tasks = _dag_test(airflow_env, {"profile": "smoke", "data_dir": str(data_dir)})
    assert state == "failed"
    assert tasks["fetch_data"] == "success"
    assert tasks["validate_data"] == "failed"
    assert tasks["train"] == "upstream_failed" and tasks["publish"] == "upstream_failed"
    assert _model_keys() == []
    assert not list(Path(airflow_env["RN50_WORKSPACE_ROOT"]).glob("*/model"))  # no GPU time was spent


def _shuffled_labels_copy(sample_dir: Path, dest: Path) -> Path:
    """Same images, labels permuted within each split: valid data (synsets follow labels) that teaches nothing."""
    import dataclasses

    from pipeline.data.format import read_shard, write_shard

    dest.mkdir()
    shutil.copy(sample_dir / "manifest.json", dest / "manifest.json")
    rng = random.Random(3)
    for split in ("train", "validation"):
        shards = sorted(sample_dir.glob(f"{split}-*"))
        records = [list(read_shard(s)) for s in shards]
        flat = [r for rs in records for r in rs]
        targets = [(r.label, r.synset, r.text) for r in flat]
        rng.shuffle(targets)
        it = iter(targets)
        for shard, rs in zip(shards, records, strict=True):
            relabelled = []
            for r in rs:
                label, synset, text = next(it)
                boxes = tuple(dataclasses.replace(b) for b in r.boxes)
                relabelled.append(dataclasses.replace(r, label=label, synset=synset, text=text, boxes=boxes))
            write_shard(dest / shard.name, relabelled)
    return dest


def test_shuffled_labels_fail_the_gate_and_nothing_is_published(airflow_env, sample_dir, tmp_path):
    data_dir = _shuffled_labels_copy(sample_dir, tmp_path / "shuffled")
    state, tasks = _dag_test(airflow_env, {"profile": "smoke", "data_dir": str(data_dir), "steps": 30})
    assert state == "failed"
    assert tasks["validate_data"] == "success" and tasks["evaluate"] == "success"
    assert tasks["check_accuracy"] == "failed"
    assert tasks["publish"] == "upstream_failed"
    assert _model_keys() == []
    decision = json.loads(next(Path(airflow_env["RN50_WORKSPACE_ROOT"]).glob("*/gate/decision.json")).read_text())
    assert decision["verdict"] == "fail" and decision["publish"] is False
    # The failed gate's run report is made all the same, in the workspace: its reasons beside the curves.
    assert tasks["report"] == "success"
    [report] = Path(airflow_env["RN50_WORKSPACE_ROOT"]).glob("*/report/index.html")
    page = report.read_text()
    failing = [reason for reason in decision["reasons"] if reason.startswith("FAIL")]
    assert failing and all(html.escape(reason) in page for reason in failing)
    assert (report.parent / "training.png").is_file()
