"""`make airflow` (scripts/airflow.sh): the login it sets up and the address it serves on.

The script runs for real, in a stand-in venv whose `airflow` records the environment `airflow
standalone` is started with and returns; the real Airflow then reads that environment's `[api] host`,
the address standalone's api-server binds. tests/test_dag_e2e.py starts the real standalone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

STUB_AIRFLOW = """#!{python}
import json, os, sys
if sys.argv[1:] == ["standalone"]:
    with open(os.environ["STUB_STANDALONE_ENV"], "w") as f:
        json.dump(dict(os.environ), f)
"""


@pytest.fixture
def venv(tmp_path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    stub = venv / "bin" / "airflow"
    stub.write_text(STUB_AIRFLOW.format(python=sys.executable))
    stub.chmod(0o755)
    (venv / "bin" / "python").symlink_to(sys.executable)
    return venv


def _make_airflow(venv: Path, home: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """scripts/airflow.sh, as `make airflow` runs it; its output and what `airflow standalone` got."""
    recorded = venv.parent / "standalone-env.json"
    recorded.unlink(missing_ok=True)
    result = subprocess.run([str(REPO / "scripts" / "airflow.sh"), str(venv)], cwd=REPO, capture_output=True,
                            text=True, timeout=60,
                            env={"PATH": os.environ["PATH"], "HOME": str(venv.parent), "RN50_AIRFLOW_HOME": str(home),
                                 "STUB_STANDALONE_ENV": str(recorded), **env})
    return result, json.loads(recorded.read_text()) if recorded.exists() else {}


def _login(home: Path) -> tuple[str, int]:
    path = home / "passwords.json"
    return json.loads(path.read_text())["admin"], path.stat().st_mode & 0o777


def test_the_login_is_a_generated_password_only_its_owner_can_read(venv, tmp_path):
    home = tmp_path / "home"
    result, _ = _make_airflow(venv, home)
    assert result.returncode == 0, result.stderr
    password, mode = _login(home)
    assert mode == 0o600
    assert password != "admin" and len(password) >= 16
    assert f"admin / {password}" in result.stdout  # printed at start: nobody has to dig for it
    result, _ = _make_airflow(venv, home)
    assert result.returncode == 0, result.stderr
    assert _login(home) == (password, 0o600), "a restart must keep the login"
    other = tmp_path / "other"
    assert _make_airflow(venv, other)[0].returncode == 0
    assert _login(other)[0] != password


def test_the_admin_admin_login_of_earlier_versions_is_replaced(venv, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "passwords.json").write_text('{"admin": "admin", "viewer": "kept-as-it-was"}\n')
    (home / "passwords.json").chmod(0o644)
    result, _ = _make_airflow(venv, home)
    assert result.returncode == 0, result.stderr
    password, mode = _login(home)
    assert password != "admin" and mode == 0o600
    assert json.loads((home / "passwords.json").read_text())["viewer"] == "kept-as-it-was"


def test_a_broken_password_file_is_a_one_line_error(venv, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "passwords.json").write_text("{admin: admin")
    result, standalone = _make_airflow(venv, home)
    assert result.returncode != 0 and not standalone
    [line] = result.stderr.strip().splitlines()
    assert str(home / "passwords.json") in line, line


def test_airflow_serves_on_loopback_unless_told_otherwise(venv, tmp_path):
    result, standalone = _make_airflow(venv, tmp_path / "home")
    assert result.returncode == 0, result.stderr
    # What the api-server that standalone starts binds: Airflow's own reading of that environment.
    host = subprocess.run([str(BIN / "airflow"), "config", "get-value", "api", "host"], capture_output=True, text=True,
                          timeout=120, env={**standalone, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    assert host.returncode == 0, host.stderr[-2000:]
    assert host.stdout.strip() == "127.0.0.1"
    result, standalone = _make_airflow(venv, tmp_path / "home", RN50_BIND_ADDRESS="0.0.0.0")
    assert result.returncode == 0, result.stderr
    assert standalone["AIRFLOW__API__HOST"] == "0.0.0.0"
