"""validate_data: every record checked before any GPU is spent; a failure is final."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from pipeline.data.validate import DataValidationError, validate_dataset
from pipeline.train.config import get_profile
from pipeline.workspace import RunWorkspace
from tasks.common import add_workspace_args, cli, final, workspace


def run(ws: RunWorkspace, *, data_dir: str, profile: str, workers: int | None = None) -> dict[str, Any]:
    expect = get_profile(profile).dataset
    workers = workers or min(8, os.cpu_count() or 1)
    try:
        report = validate_dataset(Path(data_dir), expect=expect, decode="header", workers=workers,
                                  report_dir=ws.validation, raise_on_failure=True)
    except DataValidationError as exc:
        for line in exc.report.failure_lines():
            print(line)
        raise final(exc) from exc
    return {"data_dir": data_dir, "records": report.records, "shards": report.shards,
            "report": str(ws.validation / "report.json"), "expect": expect}


def _main(args: argparse.Namespace) -> dict[str, Any]:
    return run(workspace(args.run_id, args.workspace_root), data_dir=args.data_dir, profile=args.profile,
               workers=args.workers)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="tasks.validate_data", description=__doc__)
    add_workspace_args(parser)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--profile", default="ngc-90e")
    parser.add_argument("--workers", type=int)
    cli(_main, parser)
