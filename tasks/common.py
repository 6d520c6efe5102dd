"""What every task adapter shares: the run workspace, final failures, and the command-line summary."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.workspace import DEFAULT_ROOT, RunWorkspace

REPO = Path(__file__).resolve().parent.parent


def workspace_root() -> Path:
    return Path(os.environ.get("RN50_WORKSPACE_ROOT", REPO / DEFAULT_ROOT))


def workspace(run_id: str, root: str | Path | None = None) -> RunWorkspace:
    return RunWorkspace(Path(root) if root else workspace_root(), run_id).create()


def final(exc: BaseException) -> BaseException:
    """The same error as one Airflow must not retry (bad data, a failed gate); plain outside Airflow."""
    try:
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:
        return exc
    return AirflowFailException(str(exc))


def add_workspace_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-id", required=True, help="names the run workspace")
    parser.add_argument("--workspace-root", type=Path, help="default: $RN50_WORKSPACE_ROOT or runs/workspaces")


def cli(run: Callable[[argparse.Namespace], dict[str, Any]], parser: argparse.ArgumentParser) -> None:
    """`python -m tasks.X`: print the summary as JSON; exit 1 with one line on failure."""
    args = parser.parse_args()
    try:
        summary = run(args)
    except Exception as exc:  # the one line a container log needs; details are in the stage's own files
        print(f"{parser.prog}: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(summary, indent=2))


def skip(reason: str) -> BaseException:
    from airflow.sdk.exceptions import AirflowSkipException

    return AirflowSkipException(reason)


def s3_client(conn_id: str | None = None) -> Any:
    """boto3 S3 client from the Airflow connection when it exists, else from the standard AWS environment."""
    if conn_id:
        try:
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook
            from airflow.sdk import Connection
        except ImportError:
            pass
        else:
            try:
                Connection.get(conn_id)
            except Exception:  # no such connection: the AWS environment (or instance role) decides
                pass
            else:
                return S3Hook(aws_conn_id=conn_id).get_conn()
    from pipeline.publish.store import make_client

    return make_client()
