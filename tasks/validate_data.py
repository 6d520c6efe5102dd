"""validate_data: every record checked before any GPU is spent, and the data compared with the champion's
(pipeline.stages.validate). Bad data fails for good; drift warns, or fails for good with RN50_DRIFT_FAIL;
a registry that cannot be read is an error that retries.
"""

from __future__ import annotations

from typing import Any

from pipeline import settings
from pipeline.contracts.registry import MODEL
from pipeline.stages.validate import validate_run
from pipeline.workspace import RunWorkspace
from tasks.common import data_record, final_failures


def run(ws: RunWorkspace, *, data_dir: str, profile: str, workers: int | None = None, client: Any = None,
        bucket: str | None = None, prefix: str = settings.PREFIX.default, model: str = MODEL,
        drift_fail: bool | None = None) -> dict[str, Any]:
    with final_failures():
        return validate_run(ws, data_dir=data_dir, profile=profile, workers=workers,
                            dataset_version=(data_record(ws) or {}).get("dataset_version"), client=client,
                            bucket=bucket, prefix=prefix, model=model, drift_fail=drift_fail)
