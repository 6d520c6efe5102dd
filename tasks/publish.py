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
from pipeline.data import drift
from pipeline.fetch import DATA_DVC, FetchError, remove_data
from pipeline.publish.registry import MODEL
from pipeline.workspace import RunWorkspace
from tasks.common import data_record


def report_files(ws: RunWorkspace) -> dict[str, Path]:
    """Every file of the run report (ws.report), as report/<its path there> in the version."""
    from pipeline.report import INDEX, REPORT_DIR

    if not (ws.report / INDEX).is_file():
        return {}
    return {f"{REPORT_DIR}/{path.relative_to(ws.report).as_posix()}": path
            for path in sorted(ws.report.rglob("*")) if path.is_file() or path.is_symlink()}  # a link: refused


def run(ws: RunWorkspace, *, client: Any, bucket: str, prefix: str = settings.PREFIX.default, model: str = MODEL,
        run_id: str | None = None, lineage: dict[str, Any] | None = None,
        dvc_repo: Path | None = None) -> dict[str, Any]:
    from pipeline.cost import read_cost
    from pipeline.publish.publish import publish_model
    from pipeline.publish.registry import report_uri

    report = ws.validation / "report.json"
    # The validator's data summary, as data_summary.json: what the next run's validate_data compares its data with.
    summary = ws.validation / drift.SUMMARY_NAME
    # The dataset fetch_data recorded, else the data.dvc this run pulled: never the code checkout's
    # data.dvc, which a data_dir run (or a data_rev other than the code's) did not train on.
    if data := data_record(ws):
        lineage = {"dataset_version": data.get("dataset_version"), "dataset": data, **(lineage or {})}
    result = publish_model(
        ws.model, eval_dir=ws.eval, gate_dir=ws.gate, export_dir=ws.export, client=client, bucket=bucket,
        prefix=prefix, model=model, run_id=run_id or ws.run_id,
        lineage=lineage, extra_files={**({"report.json": report} if report.exists() else {}), **report_files(ws),
                                      **({drift.PUBLISHED_NAME: summary} if summary.exists() else {})},
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
