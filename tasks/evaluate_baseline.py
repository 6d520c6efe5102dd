"""evaluate_baseline: the run's baseline model (NVIDIA's imported checkpoint when RN50_NGC_CHECKPOINT is set,
else the champion's snapshot in champion/) evaluated on this run's validation data into baseline/, for the
gate to compare with the candidate on the same images. With neither, baseline/baseline.json says so and the
task succeeds: the gate then decides on the floor. A baseline that exists but cannot be read fails (and retries).
"""

from __future__ import annotations

from typing import Any

from pipeline.contracts.registry import MODEL
from pipeline.settings import PREFIX
from pipeline.workspace import RunWorkspace
from tasks.common import data_record


def run(ws: RunWorkspace, *, data_dir: str, client: Any, bucket: str, prefix: str = PREFIX.default,
        model: str = MODEL) -> dict[str, Any]:
    from pipeline.stages.baseline import evaluate_baseline

    ws.remove(ws.baseline)  # a retry's baseline/ holds this try's figures only (metrics.jsonl appends)
    record = evaluate_baseline(data_dir, ws.baseline, ws.champion, client=client, bucket=bucket, prefix=prefix,
                               workspace_root=ws.root, model=model,
                               dataset_version=(data_record(ws) or {}).get("dataset_version"))
    identity = record["model"]
    if identity["kind"] == "none":
        print(f"no baseline: {identity['reason']}")
    else:
        print(f"baseline {identity}: top-1 {record['top1_accuracy']:.2f} %, top-5 {record['top5_accuracy']:.2f} % "
              f"over {record['eval_count']} images")
    return record
