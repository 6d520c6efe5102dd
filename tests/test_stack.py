"""`make stack` (scripts/stack.sh, scripts/stack.env) in step with docker/compose.yaml, checked without starting either.

The stack is compose's production topology on one machine: its Airflow processes must get compose's
settings, key for key and default for default, with only this machine's addresses and paths in place of
the containers'. Each side is resolved as it would be at start: compose's interpolation for compose.yaml,
bash sourcing scripts/stack.env as stack.sh does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from support import REPO, compose_interpolate

STACK_ENV = REPO / "scripts" / "stack.env"
COMPOSE = REPO / "docker" / "compose.yaml"

# What stack.sh gives stack.env: the checkout, the stack's directory, its ports, the generated secrets.
SECRETS = {name: f"{name.lower()}-0123456789abcdef" for name in
           ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY", "REDIS_PASSWORD")}
MACHINE = {"ROOT": "/src/rn50", "STACK": "/src/rn50/.stack", "STACK_API_PORT": "8080", "STACK_S3_PORT": "9000",
           "STACK_PG_PORT": "5432", "STACK_REDIS_PORT": "6379", "STACK_HEALTH_PORT": "8974"}
# Only in the stack, and why: the images set AIRFLOW_HOME and TF_CPP_MIN_LOG_LEVEL themselves; in
# compose every service has its own address, on one machine they listen on 127.0.0.1 and ports of their own.
STACK_ONLY = {"AIRFLOW_HOME", "TF_CPP_MIN_LOG_LEVEL", "AIRFLOW__API__HOST", "AIRFLOW__API__PORT",
              "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST",
              "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"}
# Addresses: the same URL but for host and port.
URLS = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AWS_ENDPOINT_URL"}
# Paths in the containers' file system against the checkout's and the stack directory's.
PATHS = {"AIRFLOW__CORE__DAGS_FOLDER", "RN50_REPO", "RN50_DVC_REPO", "RN50_WORKSPACE_ROOT"}
# compose's Redis is reachable only on the stack's own network; on a machine every local user reaches
# 127.0.0.1, so the stack's broker has a password.
BROKER = "AIRFLOW__CELERY__BROKER_URL"
CONNECTION = "AIRFLOW_CONN_AWS_DEFAULT"


def _compose_env(inputs: dict[str, str]) -> dict[str, str]:
    raw = yaml.safe_load(COMPOSE.read_text())["x-airflow-env"]
    missing: set[str] = set()
    env = compose_interpolate(raw, inputs, missing)
    assert not missing, f"compose would refuse to start: {missing} unset"
    return {k: str(v) for k, v in env.items()}


def _stack_env(inputs: dict[str, str]) -> dict[str, str]:
    """What stack.sh hands the Airflow processes: stack.env sourced by bash, every key it assigns."""
    keys = re.findall(r"^([A-Za-z_]\w*)=", STACK_ENV.read_text(), re.MULTILINE)
    script = 'set -eu; . "$0"; for key in "$@"; do printf "%s\\0" "${!key}"; done'
    result = subprocess.run(["bash", "-c", script, str(STACK_ENV), *keys], capture_output=True, timeout=30,
                            env={"PATH": os.environ["PATH"], **inputs})
    assert result.returncode == 0, result.stderr.decode()
    return dict(zip(keys, result.stdout.decode().split("\0")[:-1], strict=True))


def _compose_defaults() -> set[str]:
    """The variables compose.yaml's Airflow settings read with a default: what a deployment may set."""
    return set(re.findall(r"\$\{([A-Za-z_]\w*):-", json.dumps(yaml.safe_load(COMPOSE.read_text())["x-airflow-env"])))


def _without_host(url: str) -> tuple:
    parts = urlsplit(url)
    return parts.scheme, parts.username, parts.password, parts.path, parts.query


def test_the_stack_sets_every_setting_compose_sets_and_no_other():
    stack, compose = _stack_env({**SECRETS, **MACHINE}), _compose_env(SECRETS)
    assert set(stack) - STACK_ONLY == set(compose)
    assert set(stack) >= STACK_ONLY, "a key listed as the stack's own is gone: update STACK_ONLY"


@pytest.mark.parametrize("overridden", [False, True], ids=["defaults", "overridden"])
def test_the_stack_and_compose_agree_on_every_value_but_addresses_and_paths(overridden):
    # Overridden: every variable compose reads with a default set to a value of its own, so a setting the
    # stack hard-codes (or reads under another name) differs from compose's.
    overrides = {name: f"set-{name.lower()}" for name in _compose_defaults()} if overridden else {}
    assert not overridden or {"RN50_PROFILE", "RN50_SCHEDULE", "RN50_NUM_GPUS", "MINIO_ROOT_USER"} <= set(overrides)
    stack = _stack_env({**SECRETS, **MACHINE, **overrides})
    compose = _compose_env({**SECRETS, **overrides})
    for key, value in compose.items():
        if key == BROKER:
            assert urlsplit(stack[key]).password == SECRETS["REDIS_PASSWORD"] and not urlsplit(value).password
            assert _without_host(stack[key])[3:] == _without_host(value)[3:], key
            assert urlsplit(stack[key]).hostname == "127.0.0.1", key
        elif key in URLS:
            assert _without_host(stack[key]) == _without_host(value), key
            assert urlsplit(stack[key]).hostname == "127.0.0.1", key
        elif key == CONNECTION:
            ours, theirs = json.loads(stack[key]), json.loads(value)
            assert ours["extra"].pop("endpoint_url") == stack["AWS_ENDPOINT_URL"]
            assert theirs["extra"].pop("endpoint_url") == compose["AWS_ENDPOINT_URL"]
            assert ours == theirs
        elif key not in PATHS:
            assert stack[key] == value, key


def test_the_stack_paths_are_the_checkout_and_its_own_directory():
    stack = _stack_env({**SECRETS, **MACHINE})
    assert stack["AIRFLOW__CORE__DAGS_FOLDER"] == f"{MACHINE['ROOT']}/dags"
    assert stack["RN50_REPO"] == MACHINE["ROOT"]
    for key in PATHS - {"AIRFLOW__CORE__DAGS_FOLDER", "RN50_REPO"}:
        assert stack[key].startswith(MACHINE["STACK"] + "/"), key


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_the_stack_has_no_default_for_a_secret(secret):
    inputs = {**SECRETS, **MACHINE}
    del inputs[secret]
    result = subprocess.run(["bash", "-c", 'set -eu; . "$0"', str(STACK_ENV)], capture_output=True, text=True,
                            timeout=30, env={"PATH": os.environ["PATH"], **inputs})
    assert result.returncode != 0 and secret in result.stderr, result.stderr


def test_each_worker_names_itself_in_the_task_instances_it_runs(monkeypatch):
    # stack.sh points Airflow's hostname_callable at tasks.hostname.hostname: the path must import.
    from airflow.configuration import conf

    text = (REPO / "scripts" / "stack.sh").read_text()
    [path] = set(re.findall(r"AIRFLOW__CORE__HOSTNAME_CALLABLE=([\w.]+)", text))
    monkeypatch.setenv("AIRFLOW__CORE__HOSTNAME_CALLABLE", path)
    monkeypatch.setenv("RN50_WORKER_NAME", "worker-gpu")
    assert conf.getimport("core", "hostname_callable")().startswith("worker-gpu.")
    monkeypatch.delenv("RN50_WORKER_NAME")
    assert not conf.getimport("core", "hostname_callable")().startswith("worker-gpu.")


def test_the_ports_the_stack_picks_are_distinct_and_not_the_given_ones():
    # Postgres, Redis and the scheduler's health check get ports picked at start; two alike (or one equal
    # to AIRFLOW_PORT or RN50_S3_PORT) would fail the start. stack.sh's own free_ports, run by bash.
    text = (REPO / "scripts" / "stack.sh").read_text()
    function = re.search(r"^free_ports\(\) \{.*?^\}\n", text, re.DOTALL | re.MULTILINE).group(0)
    given = ["8080", "9000"]
    script = f'VENV={Path(sys.executable).parent.parent}\n{function}free_ports 64 "$@"'
    result = subprocess.run(["bash", "-c", script, "bash", *given], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    ports = [int(port) for port in result.stdout.split()]
    assert len(ports) == len(set(ports)) == 64
    assert not set(ports) & {int(port) for port in given} and all(1024 <= port < 65536 for port in ports)


def test_stack_sh_edited_while_it_runs_finishes_the_command_it_started(tmp_path):
    # Bash reads a script as it runs it: a checkout updated while `make stack` runs (git pull) must not
    # make a running stack.sh read on into the new text. Here the edit happens during `down`, from a
    # grep it runs; before the fix, bash went on to read the appended line and failed with exit 2.
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "stack.sh"
    shutil.copy(REPO / "scripts" / "stack.sh", script)
    shutil.copy(REPO / "scripts" / "processes.sh", tmp_path / "scripts")  # it sources that
    fake = tmp_path / "bin"
    fake.mkdir()
    real_grep = shutil.which("grep")
    (fake / "grep").write_text(f'#!/bin/sh\necho "echo edited; exit 3 ) (" >> {script}\nexec {real_grep} "$@"\n')
    (fake / "grep").chmod(0o755)
    result = subprocess.run([str(script), "down"], capture_output=True, text=True, timeout=60,
                            env={"PATH": f"{fake}:{os.environ['PATH']}", "RN50_STACK_DIR": str(tmp_path / "stack")})
    assert "edited" in script.read_text()  # the edit did happen during the run
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# ---- `stack.sh down` stops what the stack started, and nothing else ----

def _sourceable_stack(tmp_path: Path) -> Path:
    """stack.sh without its last line (`main "$@"`): its functions, to run one at a time as stack.sh does."""
    (tmp_path / "scripts").mkdir(exist_ok=True)
    body, last = (REPO / "scripts" / "stack.sh").read_text().rstrip("\n").rsplit("\n", 1)
    assert last == 'main "$@"; exit'
    (tmp_path / "scripts" / "stack.sh").write_text(body + "\n")
    shutil.copy(REPO / "scripts" / "processes.sh", tmp_path / "scripts")
    return tmp_path / "scripts" / "stack.sh"


def _stack_sh(tmp_path: Path, *args: str, script: str | None = None) -> subprocess.CompletedProcess:
    """`stack.sh ARGS` (or SCRIPT run with stack.sh's functions) on the stack directory tmp_path/stack."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "RN50_STACK_DIR": str(tmp_path / "stack"),
           "RN50_STACK_GRACE_S": "2"}
    command = (["bash", "-c", f'. "$0"\n{script}', str(_sourceable_stack(tmp_path))] if script
               else [str(REPO / "scripts" / "stack.sh"), *args])
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].split()[0] != "Z"
    except OSError:
        return False


def _start_time(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].split()[19]


def _wait_until_gone(pids: list[int], seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + seconds
    while (alive := [p for p in pids if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _orphaned_session() -> tuple[int, int]:
    """Another program's session whose leader has exited, as a daemon leaves it: (its id, which is the
    exited leader's pid, free for a pid file to name; the pid of the process left in it)."""
    leader = subprocess.Popen(["sh", "-c", "sleep 300 < /dev/null > /dev/null 2>&1 & echo $!"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    left = int(leader.communicate(timeout=30)[0])
    assert os.getsid(left) == leader.pid and not _running(leader.pid)
    return leader.pid, left


BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
OTHER_BOOT = "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize("case", ["another boot", "an exited leader", "a written-before-boot-ids exited leader",
                                  "a pid that is another process now", "not a pid"])
def test_stack_down_leaves_a_process_a_stale_pid_file_names_alive_and_says_so(tmp_path, case):
    # After a reboot, or once the stack's processes are gone (a SIGKILLed `run`, OOM), a pid file's pid
    # and session id may be another program's: `down` signalled that session and all its descendants.
    run_dir = tmp_path / "stack" / "run"
    run_dir.mkdir(parents=True)
    if case == "a pid that is another process now":
        other = subprocess.Popen(["sleep", "300"], start_new_session=True)
        sid, victims, line = other.pid, [other.pid], f"{other.pid} 1 {BOOT_ID}"
    else:
        sid, left = _orphaned_session()
        victims = [left]
        line = {"another boot": f"{sid} 4242 {OTHER_BOOT}", "an exited leader": f"{sid} 4242 {BOOT_ID}",
                "a written-before-boot-ids exited leader": f"{sid} 4242",
                "not a pid": f"{sid}x 4242 {BOOT_ID}"}[case]
    (run_dir / "worker-gpu.pid").write_text(line + "\n")
    try:
        result = _stack_sh(tmp_path, "down")
        assert result.returncode == 0, result.stderr
        assert all(_running(p) for p in victims), f"down killed another program's session {sid}"
        assert re.fullmatch(rf"stack: {re.escape(str(run_dir))}/worker-gpu\.pid is stale \([^\n]+\): not signalled\n",
                            result.stderr), result.stderr
        assert not (run_dir / "worker-gpu.pid").exists()
    finally:
        _kill(victims)


def test_stack_down_stops_the_processes_the_stack_started_and_their_sessions(tmp_path):
    # The normal path, with the pid files the stack writes: each started process, a process in its
    # session with no marker (Celery and Postgres rewrite their environments), and one that started a
    # session of its own (as Horovod's ranks do), found as a descendant.
    ready = tmp_path / "pids"
    ready.mkdir()
    result = _stack_sh(tmp_path, script=f'''
mkdir -p "$RUN" "$LOGS"
start worker-gpu sh -c 'env -u RN50_STACK_MEMBER sleep 300 & echo $! > {ready}/child
  env -u RN50_STACK_MEMBER setsid sleep 300 & echo $! > {ready}/rank; exec sleep 300'
start moto sleep 300
for _ in $(seq 100); do [ -s {ready}/child ] && [ -s {ready}/rank ] && break; sleep 0.1; done
''')
    assert result.returncode == 0, result.stderr
    pids = [int(p.read_text()) for p in ready.iterdir()]
    recorded = {f.stem: f.read_text().split() for f in (tmp_path / "stack" / "run").glob("*.pid")}
    assert set(recorded) == {"worker-gpu", "moto"}
    for pid, start, boot in recorded.values():  # "pid start-time boot-id"
        assert (start, boot) == (_start_time(int(pid)), BOOT_ID)
        pids.append(int(pid))
    try:
        assert len(pids) == 4 and all(_running(p) for p in pids)
        result = _stack_sh(tmp_path, "down")  # from another process, as make stack-down runs it
        assert (result.returncode, result.stderr) == (0, "")
        assert _wait_until_gone(pids, 1) == []
        assert list((tmp_path / "stack" / "run").glob("*.pid")) == []
    finally:
        _kill(pids)


def test_the_stack_stops_what_is_left_of_a_process_it_started_when_that_one_exits(tmp_path):
    # `make stack` (run) watches what it started: when one exits, it stops the rest, the processes left
    # in that one's session too (a Celery worker's pool, with no marker in its rewritten environment).
    left = tmp_path / "left"
    result = _stack_sh(tmp_path, script=f'''
mkdir -p "$RUN" "$LOGS"
start worker-gpu sh -c 'env -u RN50_STACK_MEMBER sleep 300 & echo $! > {left}; exit 0'
for _ in $(seq 100); do [ -s {left} ] && ! pid worker-gpu > /dev/null && break; sleep 0.1; done
down
''')
    pid = int(left.read_text())
    try:
        assert result.returncode == 0, result.stderr
        assert _wait_until_gone([pid], 1) == [] and result.stderr == ""
    finally:
        _kill([pid])
