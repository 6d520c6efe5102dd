"""The validate_data stage: every record checked before any GPU is spent, and the data compared with the
champion's.

The validator runs as `python -m pipeline validate` in a child process: its worker pool spawns
processes that re-import the parent's main module, and inside an Airflow task that module is the
`airflow` CLI, which cannot start there. It writes validation/summary.json; this stage then compares
that summary with the one the champion was published with (pipeline.stages.drift_reference,
pipeline.data.drift) into validation/drift.json and report.json's "drift". Bad data is Failed; drift
warns, or is Failed with RN50_DRIFT_FAIL. No champion, one without a summary, or one whose summary is
not one (pipeline.data.drift.check_summary) is no reference, not an error: the comparison is not made
and drift.json says why. A registry that cannot be read is an error that retries.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline import settings
from pipeline.contracts import exit_codes, names
from pipeline.contracts.registry import MODEL
from pipeline.data import drift
from pipeline.data.gx_suite import NAME_PATTERN
from pipeline.errors import Failed, Refused, Retryable
from pipeline.files import read_json, write_json
from pipeline.recipe import get_profile
from pipeline.stages import drift_reference
from pipeline.workspace import RunWorkspace, safe_name


def validate_run(ws: RunWorkspace, *, data_dir: str, profile: str, workers: int | None = None,
                 dataset_version: str | None = None, client: Any = None, bucket: str | None = None,
                 prefix: str = settings.PREFIX.default, model: str = MODEL,
                 drift_fail: bool | None = None) -> dict[str, Any]:
    """Validate data_dir into the run's validation folder and compare it with the champion's data (from the
    registry `client` and `bucket` name; none given: not compared). The task's summary."""
    expect = get_profile(profile).dataset
    drift_fail = settings.DRIFT_FAIL.get() if drift_fail is None else drift_fail
    # The champion's summary first: a registry that cannot be read fails before the long scan.
    baseline, baseline_version, no_baseline = None, None, "no registry given: drift not checked"
    if client is not None and bucket:
        try:
            baseline, baseline_version, no_baseline = drift_reference.champion_summary(client, bucket, prefix, model)
        except drift.SummaryError as exc:
            # Failing would fail every run until the champion changes: this run's data is judged without it.
            baseline, no_baseline = None, f"{exc}: drift not checked"
    ws.remove(ws.validation / names.REFERENCE_SUMMARY)
    reference = None
    if baseline is not None:
        ws.validation.mkdir(parents=True, exist_ok=True)
        reference = write_json(ws.validation / names.REFERENCE_SUMMARY, baseline)
    _validate(ws, data_dir, expect, workers or min(8, os.cpu_count() or 1), dataset_version, reference)

    report_path = ws.validation / names.VALIDATION_REPORT
    report = read_json(report_path)
    if baseline is None:
        comparison = drift.not_checked(no_baseline)
    else:
        current = read_json(ws.validation / names.DATA_SUMMARY)
        comparison = drift.compare(current, baseline, fail=drift_fail, baseline_version=baseline_version)
    write_json(ws.validation / names.DRIFT, comparison)
    write_json(report_path, {**report, "drift": comparison})
    lines = drift.failure_lines(comparison)
    print(f"drift against the champion {baseline_version}: {comparison['status']}" if baseline is not None
          else no_baseline)
    for line in lines:
        print(line)
    if comparison["status"] == "fail":
        raise Failed(f"{data_dir}: data drift against the champion {baseline_version} "
                     f"({settings.DRIFT_FAIL.name}): " + "; ".join(lines[:5]))
    return {"data_dir": data_dir, "records": report["records"], "shards": report["shards"],
            "report": str(report_path), "expect": expect, "drift": comparison["status"]}


def _validate(ws: RunWorkspace, data_dir: str, expect: str, workers: int, dataset_version: str | None,
              reference: Path | None) -> None:
    """`rn50 validate` into the validation folder; its exit code says the failure's kind."""
    # The GX run is named after the Airflow run: verbatim when GX can store it under that name, else escaped.
    run_name = ws.run_id if re.fullmatch(NAME_PATTERN, ws.run_id) else safe_name(ws.run_id)
    cmd = [sys.executable, "-m", "pipeline", "validate", str(data_dir), "--expect", expect, "--decode", "header",
           "--workers", str(workers), "--report-dir", str(ws.validation), "--run-name", run_name]
    if dataset_version:
        cmd += ["--dataset-version", dataset_version]
    if reference is not None:
        cmd += ["--baseline-summary", str(reference)]
    result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    print(result.stdout, end="")
    if result.returncode == exit_codes.FAILED:
        failures = [line for line in result.stdout.splitlines() if not line.startswith(str(data_dir))]
        raise Failed(f"{data_dir}: invalid data: " + "; ".join(failures[:5]))
    if result.returncode != exit_codes.OK:
        reason = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        raise Refused(reason) if result.returncode == exit_codes.USAGE else Retryable(reason)
