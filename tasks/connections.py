"""The deployment's Airflow connections, as the clients pipeline takes: S3 (the Amazon provider's fields) and
Kubernetes (the cncf.kubernetes provider's hook). Imported by the tasks when they run, never at DAG parse."""

from __future__ import annotations

import os
from typing import Any

from pipeline.train.mpijob import CustomObjects


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


def kubernetes_api(conn_id: str) -> CustomObjects:
    """The cncf.kubernetes provider's hook: its connection says which cluster (in-cluster, kubeconfig)."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    return KubernetesHook(conn_id=conn_id)
