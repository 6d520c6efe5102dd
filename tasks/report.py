"""report: the run report (index.html, its PNGs) into the run's report/, for publish to upload.

On the default queue (matplotlib, no TensorFlow): it reads the other stages' folders and the registry's
published versions, and writes only report/. A registry it cannot read leaves that part of the report
"not available"; it does not fail the run, whose model is what is being published.
"""

from __future__ import annotations

from typing import Any

from pipeline.contracts.registry import MODEL
from pipeline.workspace import RunWorkspace


def run(ws: RunWorkspace, *, client: Any, bucket: str, prefix: str, model: str = MODEL) -> dict[str, Any]:
    from pipeline.cost import read_cost
    from pipeline.publish.registry import RegistryError, list_versions
    from pipeline.publish.store import StoreError
    from pipeline.report import build_report

    registry, note = None, None
    try:
        registry = list_versions(client, bucket, prefix, model)
    except (StoreError, RegistryError) as exc:
        note = f"s3://{bucket}/{prefix}/{model}/ could not be read: {exc}"
        print(f"warning: {note}")
    ws.remove(ws.report)  # a retry's report is this try's alone
    index = build_report(ws.report, model_dir=ws.model, eval_dir=ws.eval, gate_dir=ws.gate,
                         validation_dir=ws.validation, cost=read_cost(ws.path), registry=registry,
                         registry_note=note, title=f"ResNet50 v1.5 run {ws.run_id}")
    print(f"run report: {index}")
    return {"report": str(index)}
