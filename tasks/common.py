"""What every task adapter shares: the run workspace, final failures, skips, the S3 client and stage timing."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.workspace import RunWorkspace, default_root


def workspace_root() -> Path:
    return default_root()


def workspace(run_id: str, root: str | Path | None = None) -> RunWorkspace:
    return RunWorkspace(Path(root) if root else workspace_root(), run_id).create()


def data_record(ws: RunWorkspace) -> dict[str, Any] | None:
    """What fetch_data recorded of the run's data (data.json: its dataset version and where it was); None
    when fetch_data did not run. A planted link is refused: what it says goes into the manifest."""
    from pipeline.files import read_json

    try:
        return read_json(ws.data_record)
    except FileNotFoundError:
        return None


@contextmanager
def timed(ws: RunWorkspace, stage: str, gpus: int = 0) -> Iterator[RunWorkspace]:
    """Record the stage's wall time and GPUs in the run's cost (pipeline.cost), whether it succeeds or fails:
    a failed attempt kept its GPUs busy too."""
    from pipeline.cost import record_stage

    started, clock = time.time(), time.perf_counter()
    try:
        yield ws
    finally:
        try:
            record_stage(ws.path, stage, time.perf_counter() - clock, gpus, started=started)
        except OSError as exc:  # a full disk costs the report its figure, never the stage its result
            print(f"warning: the cost of {stage} was not recorded: {exc}")


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
    """pipeline's S3 client (`make_client`) with the Airflow connection's fields when it is defined, else
    from the standard AWS environment.

    The connection is read as the Amazon provider reads it (`AwsConnectionWrapper`): the keys from login
    and password (or extra `aws_access_key_id`/`aws_secret_access_key`), extra `aws_session_token`,
    `region_name`, `endpoint_url` (or `service_config.s3.endpoint_url`), `profile_name`, `verify` and
    `config_kwargs` (botocore Config options). A connection that assumes a role (`role_arn`) is refused:
    the client would silently use the connection's own credentials instead.

    Only a connection that is not defined falls back. One that is configured but cannot be read (a typo
    in its AIRFLOW_CONN_ variable, a secrets backend denying access) is an error: falling back would
    publish with whatever credentials the worker happens to have, to wherever they point.
    """
    from pipeline.publish.store import make_client

    if conn_id:
        try:
            from airflow.providers.amazon.aws.utils.connection_wrapper import AwsConnectionWrapper
            from airflow.sdk import Connection
            from airflow.sdk.exceptions import AirflowNotFoundException
        except ImportError:
            pass
        else:
            from pipeline.redact import redact

            variable = f"AIRFLOW_CONN_{conn_id.upper()}"
            try:
                conn = AwsConnectionWrapper(Connection.get(conn_id))
            except AirflowNotFoundException:
                # Airflow says "not defined" also when it cannot parse the variable (it logs the parse
                # error at debug level and moves on), so a variable that is set is not an absent connection.
                if os.environ.get(variable):
                    raise RuntimeError(f"Airflow connection {conn_id!r}: {variable} is set, but Airflow cannot "
                                       "read it as a connection URI or JSON") from None
            except Exception as exc:
                reason = redact(str(exc)).splitlines()[0] if str(exc).strip() else ""
                raise RuntimeError(f"Airflow connection {conn_id!r} could not be read: "
                                   f"{type(exc).__name__}: {reason}") from None
            else:
                if conn.role_arn:
                    raise RuntimeError(f"Airflow connection {conn_id!r}: role_arn (assuming a role) is not "
                                       "supported; give the connection the role's credentials instead")
                return make_client(
                    access_key=conn.aws_access_key_id, secret_key=conn.aws_secret_access_key,
                    session_token=conn.aws_session_token, region=conn.region_name,
                    endpoint_url=conn.get_service_endpoint_url("s3"), profile=conn.profile_name,
                    verify=conn.verify, config=conn.extra_config.get("config_kwargs"),
                )
    return make_client()
