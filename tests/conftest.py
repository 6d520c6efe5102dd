"""Shared fixtures: the generated sample dataset, a real S3 server over HTTP, an empty registry bucket on
it, an isolated DVC, the parsed DAG. Plain helpers imported by name are in support.py."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import BIN, REPO, free_port

import pipeline  # noqa: F401  (conftest loads before the test modules: TensorFlow gets its CPU kernels set)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample dataset, generated once per session. Tests must not modify it."""
    from pipeline.data.sample import make_sample

    out = tmp_path_factory.mktemp("sample") / "imagenet"
    make_sample(out)
    return out


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1, over real HTTP, for boto3, s3fs and dvc-s3 alike."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start on {url}") from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Standard AWS env pointing at the test server, with its state reset for each test."""
    urllib.request.urlopen(urllib.request.Request(f"{s3_endpoint}/moto-api/reset", method="POST"), timeout=5)
    env = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def registry(s3_env: dict[str, str]):
    """(a raw boto3 client, for looking behind the registry code's back; the client the code under test
    uses) against an empty bucket publish_support.BUCKET."""
    from publish_support import BUCKET, s3

    from pipeline.publish.store import make_client

    raw = s3(s3_env["AWS_ENDPOINT_URL"])
    raw.create_bucket(Bucket=BUCKET)
    return raw, make_client(max_attempts=2)


@pytest.fixture
def dvc_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a `dvc` subprocess that reads no user, site or system config."""
    env = dict(os.environ)
    for name in ("DVC_SITE_CACHE_DIR", "DVC_GLOBAL_CONFIG_DIR", "DVC_SYSTEM_CONFIG_DIR"):
        path = tmp_path / name.lower()
        path.mkdir()
        env[name] = str(path)
    env["DVC_NO_ANALYTICS"] = "1"
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    return env


@pytest.fixture(scope="module")
def dag(tmp_path_factory: pytest.TempPathFactory):
    """The resnet50_retrain DAG as Airflow's DagBag parses it, once per test module."""
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags["resnet50_retrain"]


@pytest.fixture(scope="module")
def dag_parsed_with(dag):
    """A function: the resnet50_retrain DAG parsed with these deployment settings (RN50_NUM_GPUS="8", ...)."""
    from airflow.dag_processing.dagbag import DagBag

    def parse(**settings: str):
        with pytest.MonkeyPatch.context() as env:
            for name, value in settings.items():
                env.setenv(name, value)
            bag = DagBag(dag_folder=str(REPO / "dags"))
        assert bag.import_errors == {}
        return bag.dags["resnet50_retrain"]

    return parse
