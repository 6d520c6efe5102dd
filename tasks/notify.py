"""The failure callback: one summary a person on call can act on, without opening six task logs.

Imported by the DAG file at parse time, so it imports nothing heavy.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("rn50.failure")


def failure_summary(context: dict[str, Any]) -> str:
    from pipeline.gate import DECISION_FILE
    from pipeline.workspace import RunWorkspace
    from tasks.common import workspace_root

    ti = context.get("task_instance") or context.get("ti")
    task_id = getattr(ti, "task_id", "?")
    run_id = context.get("run_id") or getattr(ti, "run_id", None)
    exception = context.get("exception")
    reason = f"{type(exception).__name__}: {exception}" if exception is not None else "unknown"
    where = ""
    if run_id:
        ws = RunWorkspace(workspace_root(), run_id)
        report = {
            "validate_data": ws.validation / "report.json",
            "check_accuracy": ws.gate / DECISION_FILE,
            "train": ws.model / "metrics.jsonl",
        }.get(task_id, ws.path)
        where = f"; see {report}"
    try_number = getattr(ti, "try_number", "?")
    return f"resnet50_retrain: task {task_id} failed (try {try_number}) in run {run_id}: {reason}{where}"


def log_failure(context: dict[str, Any]) -> None:
    log.error(failure_summary(context))
