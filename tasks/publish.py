"""publish: the gated model as an immutable version in the registry bucket, plus its DVC pointer.

It runs on the default queue, whose image has no TensorFlow: it only reads the run workspace's stage
folders (model/, eval/, gate/, export/, validation/, report/) and the run's cost records, and uploads.
The model.keras it publishes is evaluate's export (gpu queue); a missing or stale one is refused, never
made here. The report's s3:// URI is in the task log and in the summary (the Asset event's extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import settings
from pipeline.contracts import names
from pipeline.contracts.names import DATA_DVC
from pipeline.contracts.registry import MODEL
from pipeline.fetch import FetchError, remove_data
from pipeline.workspace import RunWorkspace
from tasks.common import data_record


def run(ws: RunWorkspace, *, client: Any, bucket: str, prefix: str = settings.PREFIX.default, model: str = MODEL,
        run_id: str | None = None, lineage: dict[str, Any] | None = None,
        dvc_repo: Path | None = None) -> dict[str, Any]:
    from pipeline.cost import read_cost
    from pipeline.publish.registry import report_uri
    from pipeline.stages.publish import publish_model

    # The dataset fetch_data recorded, else the data.dvc this run pulled: never the code checkout's
    # data.dvc, which a data_dir run (or a data_rev other than the code's) did not train on.
    if data := data_record(ws):
        lineage = {"dataset_version": data.get("dataset_version"), "dataset": data, **(lineage or {})}
    result = publish_model(
        ws.model, eval_dir=ws.eval, gate_dir=ws.gate, export_dir=ws.export, client=client, bucket=bucket,
        prefix=prefix, model=model, run_id=run_id or ws.run_id,
        validation_report=ws.validation / names.VALIDATION_REPORT, report_dir=ws.report, lineage=lineage,
        cost=read_cost(ws.path),
        dvc_repo=dvc_repo or settings.DVC_REPO.get(),
        data_dvc=ws.checkout / DATA_DVC,  # absent: the dataset is unknown, and the manifest says so (null)
        require_export=True,
    )
    top1 = (result.manifest.get("metrics") or {}).get("top1_accuracy")
    print(f"published {result.uri} (top-1 {top1} %)")
    run_report = report_uri(result.manifest)
    print(f"run report: {run_report or 'none (the report task left no report/index.html)'}")
    try:  # published: the run's data copy is done with (its reports and model stay)
        if (removed := remove_data(ws)) is not None:
            print(f"removed this run's data copy {removed} (the DVC cache keeps the data)")
    except (FetchError, OSError, ValueError) as exc:  # the version is out: a full disk is no reason to fail
        print(f"warning: this run's data copy stays ({exc}); `rn50 gc` removes it later")
    return {"version": result.version, "uri": result.uri, "top1_accuracy": top1, "bucket": bucket,
            "prefix": prefix, "model": model, "report_uri": run_report}
