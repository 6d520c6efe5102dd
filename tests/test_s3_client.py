"""tasks.connections.s3_client: the Airflow connection when one is configured, the AWS environment only when none is;
either way a client from pipeline's one factory (`make_client`: its retries, its signing settings).

Lookups go through Airflow's own `Connection.get` and its secrets backends (the `AIRFLOW_CONN_*`
variables, and a configured backend), as in a task outside the worker's supervisor.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.sdk.bases.secrets_backend import BaseSecretsBackend
from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied

from pipeline.publish.store import DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_MODE
from tasks.connections import s3_client

REPO = Path(__file__).resolve().parent.parent
CONN = "rn50_test_s3"
VAR = f"AIRFLOW_CONN_{CONN.upper()}"
CONN_SECRET = "conn-secret-5678-never-printed"


class DenyingBackend(BaseSecretsBackend):
    """A secrets backend that refuses access, as Vault or Secrets Manager do for a role without rights."""

    def get_conn_value(self, conn_id: str, team_name: str | None = None) -> str | None:
        raise AirflowSecretsBackendAccessDenied(f"access to connection {conn_id!r} denied")


def access_key(client) -> str:
    return client._request_signer._credentials.get_frozen_credentials().access_key


def test_a_defined_connection_is_used(s3_env, monkeypatch):
    monkeypatch.setenv(VAR, json.dumps({"conn_type": "aws", "login": "conn-key-id-1234", "password": CONN_SECRET,
                                        "extra": {"endpoint_url": s3_env["AWS_ENDPOINT_URL"],
                                                  "region_name": "us-east-1"}}))
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    monkeypatch.delenv("AWS_RETRY_MODE", raising=False)
    client = s3_client(CONN)
    assert access_key(client) == "conn-key-id-1234"
    client.create_bucket(Bucket="through-the-connection")
    assert "through-the-connection" in [b["Name"] for b in client.list_buckets()["Buckets"]]
    # Made by pipeline's factory, not the provider's hook: one retry layer, configured the same everywhere.
    assert client.meta.config.retries == {"mode": DEFAULT_RETRY_MODE, "total_max_attempts": DEFAULT_MAX_ATTEMPTS}
    assert client.meta.config.s3 == {"payload_signing_enabled": False}


def test_a_connections_extra_fields_are_used(s3_env, monkeypatch):
    monkeypatch.setenv(VAR, json.dumps({"conn_type": "aws", "extra": {
        "aws_access_key_id": "extra-key-id", "aws_secret_access_key": CONN_SECRET, "aws_session_token": "tok-1",
        "region_name": "eu-west-2", "service_config": {"s3": {"endpoint_url": s3_env["AWS_ENDPOINT_URL"]}},
        "config_kwargs": {"retries": {"mode": "adaptive", "total_max_attempts": 7}}}}))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the connection's endpoint wins
    client = s3_client(CONN)
    credentials = client._request_signer._credentials.get_frozen_credentials()
    assert (credentials.access_key, credentials.secret_key, credentials.token) == ("extra-key-id", CONN_SECRET, "tok-1")
    assert (client.meta.region_name, client.meta.endpoint_url) == ("eu-west-2", s3_env["AWS_ENDPOINT_URL"])
    assert client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 7}
    client.create_bucket(Bucket="extra", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})


def test_a_connection_that_assumes_a_role_is_refused(s3_env, monkeypatch):
    monkeypatch.setenv(VAR, json.dumps({"conn_type": "aws", "login": "k", "password": CONN_SECRET,
                                        "extra": {"role_arn": "arn:aws:iam::123456789012:role/publisher"}}))
    with pytest.raises(RuntimeError, match=f"{CONN}.*role_arn"):
        s3_client(CONN)


def test_an_absent_connection_falls_back_to_the_aws_environment(s3_env, monkeypatch):
    monkeypatch.delenv(VAR, raising=False)
    assert access_key(s3_client(CONN)) == s3_env["AWS_ACCESS_KEY_ID"]
    assert access_key(s3_client(None)) == s3_env["AWS_ACCESS_KEY_ID"]


def test_a_connection_airflow_cannot_parse_is_an_error(s3_env, monkeypatch):
    # A typo in the deployment's JSON: Airflow itself then reports the connection as not defined.
    monkeypatch.setenv(VAR, '{"conn_type": "aws", "password": "' + CONN_SECRET + '", ')
    with pytest.raises(RuntimeError) as error:
        s3_client(CONN)
    message = str(error.value)
    assert CONN in message and VAR in message and "\n" not in message
    assert CONN_SECRET not in message


def test_a_connection_the_secrets_backend_denies_is_an_error(s3_env, tmp_path):
    env = {**s3_env, "PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path),
           "AIRFLOW_HOME": str(tmp_path / "airflow"), "PYTHONPATH": f"{REPO}:{REPO / 'tests'}",
           "AIRFLOW__SECRETS__BACKEND": "test_s3_client.DenyingBackend"}
    code = f"from tasks.connections import s3_client; s3_client({CONN!r}); print('fell back to the AWS environment')"
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode != 0, result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert CONN in last and "denied" in last


def test_botocores_own_retry_settings_win_over_our_defaults(monkeypatch, tmp_path):
    """One retry layer, configured the standard way: AWS_RETRY_MODE/AWS_MAX_ATTEMPTS or ~/.aws/config, and
    standard mode with DEFAULT_MAX_ATTEMPTS only where neither says (botocore's own default is legacy)."""
    from pipeline.publish.store import make_client

    config = tmp_path / "config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    assert make_client().meta.config.retries == {"mode": DEFAULT_RETRY_MODE, "total_max_attempts": DEFAULT_MAX_ATTEMPTS}
    config.write_text("[default]\nretry_mode = legacy\nmax_attempts = 2\n")
    assert make_client().meta.config.retries == {"mode": "legacy", "total_max_attempts": 2}
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    assert make_client().meta.config.retries == {"mode": "adaptive", "total_max_attempts": 3}
    assert make_client(max_attempts=4).meta.config.retries == {"mode": "adaptive", "total_max_attempts": 4}
