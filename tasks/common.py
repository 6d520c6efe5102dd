"""What every task adapter shares: the run workspace, final failures, skips and the S3 client."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.workspace import RunWorkspace, default_root


def workspace_root() -> Path:
    return default_root()


def workspace(run_id: str, root: str | Path | None = None) -> RunWorkspace:
    return RunWorkspace(Path(root) if root else workspace_root(), run_id).create()


def final(exc: BaseException) -> BaseException:
    """The same error as one Airflow must not retry (bad data, a failed gate); plain outside Airflow."""
    try:
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:
        return exc
    return AirflowFailException(str(exc))


def skip(reason: str) -> BaseException:
    from airflow.sdk.exceptions import AirflowSkipException

    return AirflowSkipException(reason)


def s3_client(conn_id: str | None = None) -> Any:
    """boto3 S3 client from the Airflow connection when it is defined, else from the standard AWS environment.

    Only a connection that is not defined falls back. One that is configured but cannot be read (a typo
    in its AIRFLOW_CONN_ variable, a secrets backend denying access) is an error: falling back would
    publish with whatever credentials the worker happens to have, to wherever they point.
    """
    if conn_id:
        try:
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook
            from airflow.sdk import Connection
            from airflow.sdk.exceptions import AirflowNotFoundException
        except ImportError:
            pass
        else:
            variable = f"AIRFLOW_CONN_{conn_id.upper()}"
            try:
                Connection.get(conn_id)
            except AirflowNotFoundException:
                # Airflow says "not defined" also when it cannot parse the variable (it logs the parse
                # error at debug level and moves on), so a variable that is set is not an absent connection.
                if os.environ.get(variable):
                    raise RuntimeError(f"Airflow connection {conn_id!r}: {variable} is set, but Airflow cannot "
                                       "read it as a connection URI or JSON") from None
            except Exception as exc:
                from pipeline.publish.redact import redact

                reason = redact(str(exc)).splitlines()[0] if str(exc).strip() else ""
                raise RuntimeError(f"Airflow connection {conn_id!r} could not be read: "
                                   f"{type(exc).__name__}: {reason}") from None
            else:
                return S3Hook(aws_conn_id=conn_id).get_conn()
    from pipeline.publish.store import make_client

    return make_client()
