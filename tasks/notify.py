"""Failure notification: one summary a person on call can act on, without opening six task logs.

`FailureNotifier` is the DAG's on_failure_callback. Airflow calls it on the worker once a task has failed
for good (its last try; a try that will be retried calls on_retry_callback instead). It writes the summary
to the task's log and appends it, as one JSON object with the log's URL, to `.failures.jsonl` at the root
of the run workspaces (RN50_WORKSPACE_ROOT, the storage every worker shares), or to the file it is given:
a platform engineer follows that file (`tail -F`) or points a log shipper at it.

Imported by the DAG file at parse time, so it imports nothing heavy.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.sdk import BaseNotifier

from pipeline.contracts import names

log = logging.getLogger("rn50.failure")
MAX_ERROR_CHARS = 500


def _one_line(exception: BaseException | None) -> str:
    """The exception's type and the first line of its message, bounded: a log line, not a traceback."""
    if exception is None:
        return "unknown"
    message = next((line.strip() for line in str(exception).splitlines() if line.strip()), "")
    text = f"{type(exception).__name__}: {message}" if message else type(exception).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


def failure_record(context: dict[str, Any]) -> dict[str, Any]:
    """What failed, where and why, from a task's Airflow context; `summary` says it in one line."""
    from pipeline.workspace import RunWorkspace, default_root

    ti = context.get("task_instance") or context.get("ti")
    dag = context.get("dag")
    dag_id = getattr(dag, "dag_id", None) or getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = context.get("run_id") or getattr(ti, "run_id", None)
    try_number = getattr(ti, "try_number", "?")
    error = _one_line(context.get("exception"))
    report = None
    if run_id:
        ws = RunWorkspace(default_root(), run_id)
        report = str({
            "validate_data": ws.validation / names.VALIDATION_REPORT,
            "check_accuracy": ws.gate / names.DECISION_FILE,
            "train": ws.model / names.METRICS_FILE,
        }.get(task_id, ws.path))
    summary = f"{dag_id}: task {task_id} failed (try {try_number}) in run {run_id}: {error}"
    if report:
        summary += f"; see {report}"
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"), "dag_id": dag_id, "run_id": run_id,
        "task_id": task_id, "try_number": try_number, "error": error, "report": report,
        "log_url": getattr(ti, "log_url", None), "summary": summary,
    }


def failure_summary(context: dict[str, Any]) -> str:
    return failure_record(context)["summary"]


class FailureNotifier(BaseNotifier):
    """The summary to the task log, and the record as one JSON line to `path` (default: the workspace root's
    .failures.jsonl, resolved when a task fails, so a worker's own RN50_WORKSPACE_ROOT counts)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.path = path

    def failures_file(self) -> Path:
        from pipeline.workspace import default_root

        return Path(self.path) if self.path else default_root() / names.FAILURES

    def notify(self, context: dict[str, Any]) -> None:
        from pipeline.files import append_line
        from pipeline.workspace import adopt_earlier_failure_log

        record = failure_record(context)
        log.error(record["summary"])
        path = self.failures_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path:
            adopt_earlier_failure_log(path)
        append_line(path, json.dumps(record, default=str))

