"""validate_data: every record checked before any GPU is spent; a failure is final.

The validator runs as `python -m pipeline validate` in a child process: its worker pool spawns
processes that re-import the parent's main module, and inside an Airflow task that module is the
`airflow` CLI, which cannot start there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from pipeline.train.config import get_profile
from pipeline.workspace import RunWorkspace
from tasks.common import final

EXIT_INVALID, EXIT_USAGE = 1, 2


def run(ws: RunWorkspace, *, data_dir: str, profile: str, workers: int | None = None) -> dict[str, Any]:
    expect = get_profile(profile).dataset
    workers = workers or min(8, os.cpu_count() or 1)
    cmd = [sys.executable, "-m", "pipeline", "validate", str(data_dir), "--expect", expect, "--decode", "header",
           "--workers", str(workers), "--report-dir", str(ws.validation)]
    result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    print(result.stdout, end="")
    if result.returncode == EXIT_INVALID:
        failures = [line for line in result.stdout.splitlines() if not line.startswith(str(data_dir))]
        raise final(RuntimeError(f"{data_dir}: invalid data: " + "; ".join(failures[:5])))
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        error = ValueError(reason) if result.returncode == EXIT_USAGE else RuntimeError(reason)
        raise final(error) if result.returncode == EXIT_USAGE else error
    report = json.loads((ws.validation / "report.json").read_text())
    return {"data_dir": data_dir, "records": report["records"], "shards": report["shards"],
            "report": str(ws.validation / "report.json"), "expect": expect}
