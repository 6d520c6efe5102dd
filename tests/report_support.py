"""A run's stage outputs for the report tests, in the formats the stages write them (no training)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.data.gx_suite import DATA_DOCS_INDEX
from pipeline.data.labels import NUM_CLASSES
from pipeline.recipe import get_profile

CLASSES = list(range(0, 1000, 100))  # the sample's ten classes (labels 1, 101, ..., 901)
WORST, SECOND = 300, 700  # the two classes the model gets most wrong
STEPS = 30


def per_class() -> dict[str, list[int]]:
    count = [50 if i in CLASSES else 0 for i in range(NUM_CLASSES)]
    correct = [{WORST: 5, SECOND: 20}.get(i, 48) if count[i] else 0 for i in range(NUM_CLASSES)]
    return {"correct": correct, "count": count}


def write_stages(model: Path, eval_dir: Path, gate: Path, validation: Path, *, data_docs: bool = True) -> None:
    """train's model/, evaluate's eval/, the gate's gate/ and the validator's validation/, as a run leaves them."""
    for folder in (model, eval_dir, gate, validation):
        folder.mkdir(parents=True, exist_ok=True)
    get_profile("smoke").save(model)
    (model / "metrics.jsonl").write_text("".join(
        json.dumps({"time": 1796148653.0 + s, "step": s, "epoch": 1 + s // 10, "loss": 4.0 / s, "lr": 0.01 * s / STEPS,
                    "train_throughput": 40.0 + s % 7}) + "\n" for s in range(1, STEPS + 1)))
    pc = per_class()
    top1 = round(100.0 * sum(pc["correct"]) / sum(pc["count"]), 4)
    evaluation = {"top1_accuracy": top1, "top5_accuracy": 97.2, "eval_count": 500, "eval_throughput": 199.5,
                  "checkpoint": str(model / "checkpoints" / f"ckpt-{STEPS}"), "step": STEPS, "per_class": pc}
    (eval_dir / "eval.json").write_text(json.dumps(evaluation, indent=2))
    with (eval_dir / "metrics.jsonl").open("a") as f:  # one file in a pulled version: training's lines, then this
        f.write(json.dumps({"time": 1796149200.0, "step": STEPS, "top1_accuracy": top1, "top5_accuracy": 97.2,
                            "eval_throughput": 199.5}) + "\n")
    (gate / "decision.json").write_text(json.dumps({
        "verdict": "pass", "publish": True, "profile": "smoke", "top1_accuracy": top1,
        "reasons": [f"PASS: top-1 {top1:.2f} % >= 59.70 % (sanity floor smoke 60.00 % - 0.3 pp)",
                    "PASS: top-1 against the live baseline champion v0001: 80.00 % on the same 500 images"],
        "baseline": {"name": "smoke", "top1_accuracy": 60.0, "source": "rn50-pipeline", "sanity_check": True},
        "champion": {"version": "v0001", "top1_accuracy": 81.0},
        "thresholds": {"tolerance": 0.3, "champion_tolerance": 0.3, "baseline_min": 59.7, "champion_min": 79.7},
        "candidate": {"top1_accuracy": top1, "top5_accuracy": 97.2, "eval_count": 500},
        "live_baseline": {"model": {"kind": "champion", "version": "v0001", "uri": "s3://b/models/resnet50/v0001/"},
                          "top1_accuracy": 80.0, "top5_accuracy": 95.0, "eval_count": 500},
        "registry": "s3://b/models/resnet50/", "force_publish": False, "force_reason": None, "inputs": {},
        "decided_at": "2026-12-01T18:20:06+00:00"}, indent=2))
    (validation / "report.json").write_text(json.dumps({
        "data_dir": "/data/imagenet", "expect": "sample", "decode": "header", "valid": True, "shards": 6,
        "records": 1510, "bytes": 6958474, "seconds": 10.6,
        "rules": [{"rule": "shards.name", "description": "every file is named", "severity": "error", "passed": True,
                   "count": 0, "source": "rn50", "examples": []},
                  {"rule": "image.size", "description": "images are not tiny", "severity": "warning",
                   "passed": False, "count": 3, "source": "rn50",
                   "examples": [{"file": "validation-00000-of-00002", "record": 17, "detail": "12x9 px"}]}],
        "great_expectations": {"success": True},
        "drift": {"status": "warn", "baseline": {"version": "v0001", "dataset_version": "abc123"},
                  "checks": [{"name": "class_share", "passed": False, "severity": "warning",
                              "detail": "class n01530575 moved by 25 %"},
                             {"name": "new_classes", "passed": True, "severity": "error", "detail": ""}]},
    }, indent=2))
    if data_docs:
        site = validation / DATA_DOCS_INDEX.parent
        (site / "static").mkdir(parents=True)
        (site / "index.html").write_text("<html><body>GX Data Docs</body></html>")
        (site / "static" / "style.css").write_text("body {}")


def registry_manifests() -> list[dict]:
    return [{"version": f"v000{n}", "created_at": f"2026-0{n}-01T00:00:00+00:00",
             "metrics": {"top1_accuracy": 70.0 + n, "top5_accuracy": 90.0 + n}} for n in range(1, 4)]
