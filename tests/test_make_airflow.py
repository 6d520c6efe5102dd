"""`make airflow` (scripts/airflow.sh): the login, the addresses, the playground and the stop.

The fast tests run the script for real in a stand-in venv whose `airflow` records how each component
(api-server, scheduler, dag-processor, triggerer) was started and then idles like one; the real Airflow
reads that environment where it matters. The slow test starts the real thing, as `make airflow` does,
reads the S3 server with only the export lines it printed, and stops it.
tests/test_dag_e2e.py triggers a run on it over REST.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import psutil
import pytest
from support import BIN, REPO, airflow_login, free_port, http_json

SCRIPT = REPO / "scripts" / "airflow.sh"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")

# Records its command line and environment, then idles like a component. STUB_EXITS names one that
# exits at once; STUB_IGNORES_TERM one that ignores SIGTERM and has a task, in a session of its own,
# that ignores it too (a scheduler was seen ignoring SIGTERM for 40 s).
STUB_AIRFLOW = """#!{python}
import json, os, signal, subprocess, sys, time
command = sys.argv[1]
if command in ("db", "pools"):
    sys.exit(0)
if command == os.environ.get("STUB_IGNORES_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                      "time.sleep(300)"], start_new_session=True)
path = os.path.join(os.environ["STUB_DIR"], command + ".json")
with open(path + ".new", "w") as f:
    json.dump({{"argv": sys.argv[1:], "env": dict(os.environ), "pid": os.getpid()}}, f)
os.replace(path + ".new", path)
if command == os.environ.get("STUB_EXITS"):
    sys.exit(3)
while True:
    time.sleep(1)
"""


@pytest.fixture
def venv(tmp_path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    stub = venv / "bin" / "airflow"
    stub.write_text(STUB_AIRFLOW.format(python=sys.executable))
    stub.chmod(0o755)
    for tool in ("python", "dvc", "moto_server"):
        (venv / "bin" / tool).symlink_to(BIN / tool if tool != "python" else sys.executable)
    return venv


# Processes come and go while a test looks at them: one that is gone has no children, sockets or
# command line. (psutil may raise a bare FileNotFoundError for one that vanishes mid-read.)
GONE = (psutil.Error, OSError)


def _tree(pid: int) -> list[psutil.Process]:
    """pid and every process below it."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except GONE:
        return []


def _connections(process: psutil.Process) -> list:
    try:
        return process.net_connections(kind="inet")
    except GONE:
        return []


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except GONE:
        return []


def _alive(process: psutil.Process | int) -> bool:
    try:
        process = psutil.Process(process) if isinstance(process, int) else process
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except GONE:
        return False


def _marked(home: Path) -> list[int]:
    """The processes whose environment carries the script's marker for this Airflow home."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"\0RN50_AIRFLOW_MEMBER={home} ".encode() in b"\0" + env:
            found.append(int(entry.name))
    return found


def _stop_and_wait_all_gone(proc: subprocess.Popen, home: Path, processes: list[psutil.Process],
                            sig: int = signal.SIGTERM) -> float:
    """sig to the script's process group; seconds until none of it is left (at most 60)."""
    start = time.monotonic()
    os.killpg(proc.pid, sig)
    while time.monotonic() - start < 60:
        alive = [p for p in processes if _alive(p)]
        group = [p.pid for p in psutil.process_iter() if _pgid(p.pid) == proc.pid]
        if proc.poll() is not None and not alive and not group and not _marked(home):
            return time.monotonic() - start
        time.sleep(0.2)
    for p in processes:
        if _alive(p):
            p.kill()
    return float("inf")


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _make_airflow(venv: Path, home: Path, s3_env: dict[str, str], *, stop: int | None = signal.SIGTERM,
                  **env: str) -> tuple[int, str, str, dict, float]:
    """scripts/airflow.sh, as `make airflow` runs it, until its components run (or it exits), then
    the signal `stop` to its process group: its exit status, output, what each component got, and
    the seconds until nothing of it was left."""
    stub_dir = venv.parent / "stub"
    stub_dir.mkdir(exist_ok=True)
    for old in stub_dir.iterdir():
        old.unlink()
    out, err = venv.parent / "out.log", venv.parent / "err.log"
    with out.open("w") as stdout, err.open("w") as stderr:
        # SIGINT as a terminal's Ctrl-C finds it, even if this test runs where SIGINT is ignored.
        proc = subprocess.Popen([str(SCRIPT), str(venv)], cwd=REPO, stdout=stdout, stderr=stderr,
                                start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                                env={"PATH": os.environ["PATH"], "HOME": str(venv.parent),
                                     "RN50_AIRFLOW_HOME": str(home), "AIRFLOW_PORT": str(free_port()),
                                     "STUB_DIR": str(stub_dir), **s3_env, **env})
    deadline = time.monotonic() + 60
    # Up: every component started and the banner (login, exports) printed; a stop before that races it.
    while proc.poll() is None and (stop is None or not all((stub_dir / f"{c}.json").exists() for c in COMPONENTS)
                                   or "Fetch a published version" not in out.read_text()):
        assert time.monotonic() < deadline, out.read_text() + err.read_text()
        time.sleep(0.2)
    seconds = 0.0
    if proc.poll() is None:
        seconds = _stop_and_wait_all_gone(proc, home, _tree(proc.pid), stop)
    proc.wait(timeout=10)
    started = {p.stem: json.loads(p.read_text()) for p in stub_dir.glob("*.json")}
    return proc.returncode, out.read_text(), err.read_text(), started, seconds


def test_the_login_is_a_generated_password_only_its_owner_can_read(venv, tmp_path, s3_env):
    home = tmp_path / "home"
    code, out, err, _, _ = _make_airflow(venv, home, s3_env)
    assert code == 0, err
    password, mode = airflow_login(home)
    assert mode == 0o600
    assert password != "admin" and len(password) >= 16
    assert f"admin / {password}" in out  # printed at start: nobody has to dig for it
    code, _, err, _, _ = _make_airflow(venv, home, s3_env)
    assert code == 0, err
    assert airflow_login(home) == (password, 0o600), "a restart must keep the login"
    other = tmp_path / "other"
    assert _make_airflow(venv, other, s3_env)[0] == 0
    assert airflow_login(other)[0] != password


def test_the_admin_admin_login_of_earlier_versions_is_replaced(venv, tmp_path, s3_env):
    home = tmp_path / "home"
    home.mkdir()
    (home / "passwords.json").write_text('{"admin": "admin", "viewer": "kept-as-it-was"}\n')
    (home / "passwords.json").chmod(0o644)
    code, _, err, _, _ = _make_airflow(venv, home, s3_env)
    assert code == 0, err
    password, mode = airflow_login(home)
    assert password != "admin" and mode == 0o600
    assert json.loads((home / "passwords.json").read_text())["viewer"] == "kept-as-it-was"


def test_a_broken_password_file_is_a_one_line_error(venv, tmp_path, s3_env):
    home = tmp_path / "home"
    home.mkdir()
    (home / "passwords.json").write_text("{admin: admin")
    code, _, err, started, _ = _make_airflow(venv, home, s3_env)
    assert code != 0 and not started
    [line] = err.strip().splitlines()
    assert str(home / "passwords.json") in line, line


def test_a_port_in_use_is_a_one_line_error_naming_the_setting(venv, tmp_path, s3_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err, started, _ = _make_airflow(venv, tmp_path / "home", s3_env, AIRFLOW_PORT=str(port))
    assert code != 0 and not started
    [line] = err.strip().splitlines()
    assert str(port) in line and "AIRFLOW_PORT" in line, line


def test_airflow_serves_on_loopback_unless_told_otherwise(venv, tmp_path, s3_env):
    code, _, err, started, _ = _make_airflow(venv, tmp_path / "home", s3_env)
    assert code == 0, err
    # What the api-server binds: Airflow's own reading of the environment it was started with.
    host = subprocess.run([str(BIN / "airflow"), "config", "get-value", "api", "host"], capture_output=True, text=True,
                          timeout=120,
                          env={**started["api-server"]["env"], "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    assert host.returncode == 0, host.stderr[-2000:]
    assert host.stdout.strip() == "127.0.0.1"
    # No log server on every interface: the processes that would start one are told not to.
    for component in ("scheduler", "triggerer"):
        assert "--skip-serve-logs" in started[component]["argv"], component
    code, _, err, started, _ = _make_airflow(venv, tmp_path / "home", s3_env, RN50_BIND_ADDRESS="0.0.0.0")
    assert code == 0, err
    assert started["api-server"]["env"]["AIRFLOW__API__HOST"] == "0.0.0.0"


def test_the_playground_has_no_schedule_and_trains_smoke_unless_told_otherwise(venv, tmp_path, s3_env):
    code, _, err, started, _ = _make_airflow(venv, tmp_path / "home", s3_env)
    assert code == 0, err
    for component in COMPONENTS:
        env = started[component]["env"]
        assert (env["RN50_SCHEDULE"], env["RN50_PROFILE"], env["RN50_NUM_GPUS"]) == ("none", "smoke", "1"), component
        # Every component reaches the S3 server and the registry repo the script set up.
        assert env["AWS_ENDPOINT_URL"] == s3_env["AWS_ENDPOINT_URL"], component
        assert Path(env["RN50_DVC_REPO"], ".dvc").is_dir(), component
    code, _, err, started, _ = _make_airflow(venv, tmp_path / "home", s3_env, RN50_SCHEDULE="@monthly",
                                             RN50_PROFILE="ngc-90e", RN50_NUM_GPUS="8")
    assert code == 0, err
    env = started["scheduler"]["env"]
    assert (env["RN50_SCHEDULE"], env["RN50_PROFILE"], env["RN50_NUM_GPUS"]) == ("@monthly", "ngc-90e", "8")


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(venv, tmp_path, s3_env):
    home = tmp_path / "home"
    code, out, err, _, seconds = _make_airflow(venv, home, s3_env, STUB_IGNORES_TERM="scheduler",
                                                     RN50_AIRFLOW_GRACE_S="3")
    assert code == 0, err
    assert 2 <= seconds < 15, (seconds, out, err)  # the grace period, counted in bash's whole seconds
    assert "killed" in err


def test_ctrl_c_stops_all_of_it(venv, tmp_path, s3_env):
    home = tmp_path / "home"
    code, out, err, started, seconds = _make_airflow(venv, home, s3_env, stop=signal.SIGINT)
    assert code == 0, err
    assert set(started) == set(COMPONENTS)
    assert seconds < 10, (seconds, out, err)  # all of them, moto_server too, and no SIGKILL needed
    assert "killed" not in err


def test_a_component_that_exits_stops_the_rest_with_one_line_naming_it(venv, tmp_path, s3_env):
    home = tmp_path / "home"
    stub_dir = venv.parent / "stub"
    code, _, err, _, _ = _make_airflow(venv, home, s3_env, stop=None, STUB_EXITS="dag-processor")
    assert code == 1, err
    assert "dag-processor exited" in err.splitlines()[0]
    # Those started before it exited (the stop may come before the last one is up) are gone.
    for recorded in stub_dir.glob("*.json"):
        assert not _alive(json.loads(recorded.read_text())["pid"]), recorded.stem
    assert not _marked(home)


# ---- the real thing ----

@pytest.mark.slow
def test_make_airflow_brings_up_the_playground_and_sigterm_stops_all_of_it_within_30_s(tmp_path):
    home, port = tmp_path / "home", free_port()
    log = tmp_path / "airflow.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(SCRIPT), str(BIN.parent)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "RN50_AIRFLOW_HOME": str(home),
                                     "AIRFLOW_PORT": str(port), "RN50_WORKSPACE_ROOT": str(tmp_path / "workspaces")})
    base = f"http://127.0.0.1:{port}"
    processes: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                health = http_json(f"{base}/api/v2/monitor/health")
                if all(health[c]["status"] == "healthy"
                       for c in ("metadatabase", "scheduler", "triggerer", "dag_processor")):
                    break
            except (urllib.error.URLError, OSError, KeyError, TypeError, json.JSONDecodeError):
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(2)
        login = {"username": "admin", "password": airflow_login(home)[0]}
        token = http_json(f"{base}/auth/token", login)["access_token"]
        # The DAG as the dag-processor parsed it with the playground's settings: no schedule to start a
        # production run on unpause, and a form whose defaults train the smoke profile.
        while True:
            try:
                dag = http_json(f"{base}/api/v2/dags/resnet50_retrain/details", token=token)
                break
            except urllib.error.HTTPError as exc:
                assert exc.code == 404 and time.monotonic() < deadline, exc
                time.sleep(2)
        assert dag["timetable_summary"] in (None, "None"), dag["timetable_summary"]
        assert dag["params"]["profile"]["value"] == "smoke"

        processes = _tree(proc.pid)
        # The LocalExecutor forks all its workers at once: 32 (Airflow's parallelism) unless the script says 4.
        workers = [p for p in processes if "LocalExecutor" in " ".join(_cmdline(p))]
        assert 1 <= len(workers) <= 4, [" ".join(_cmdline(p)) for p in workers]
        listening = [c.laddr for p in processes for c in _connections(p) if c.status == psutil.CONN_LISTEN]
        assert port in [a.port for a in listening] and len(listening) >= 2, listening  # the UI and S3 at least
        assert {a.ip for a in listening} == {"127.0.0.1"}, listening

        # From another terminal: only the export lines it printed.
        exports = [line.strip() for line in log.read_text().splitlines() if line.strip().startswith("export ")]
        registry = home / "registry"
        consumer = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", "\n".join([
                *exports, "rn50 list --bucket rn50-artifacts", f"cd {REPO} && dvc status --cloud data.dvc",
                f"git clone -q {registry} {tmp_path / 'clone'} && ls {tmp_path / 'clone' / '.dvc' / 'config'}"])],
            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=300)
        assert consumer.returncode == 0, consumer.stdout + consumer.stderr
        assert "no published versions under s3://rn50-artifacts/models/resnet50/" in consumer.stdout
        assert "in sync" in consumer.stdout, consumer.stdout  # the sample is on the DVC remote
        # The marker, for a process whose parent dies first (the api-server's title overwrites it in its
        # environment; sessions and descendants find that one).
        moto = [p.pid for p in processes if "moto_server" in " ".join(_cmdline(p))]
        assert moto and set(moto) <= set(_marked(home)), (moto, _marked(home))
    finally:
        seconds = _stop_and_wait_all_gone(proc, home, processes or _tree(proc.pid))
    print(f"stopped in {seconds:.1f} s")
    assert seconds <= 30, f"{seconds:.0f} s; " + log.read_text()[-2000:]
