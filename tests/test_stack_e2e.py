"""`make stack` end to end: the production topology runs a smoke run triggered over the REST API.

scripts/stack.sh up brings up Postgres, Redis, moto_server (S3), the Airflow api-server, scheduler,
dag-processor and triggerer, worker A (queue `default`, from .venv-airflow: no TensorFlow) and worker B
(queue `gpu`, from .venv). A run triggered over the REST API must run every task on the worker its queue
names, publish v0001 (which `rn50 pull` and `dvc pull` of the registry pointer both fetch intact), and a
second run with the same data and code, fine-tuned from the champion (init_from=champion), must be gated
against v0001 measured in that run on the same data. `stack.sh down` leaves nothing.

The runs are short (a few steps): run 1 is force-published, since a few steps cannot reach the smoke
floor; run 2 is not, so the gate decides it (on the floor, and against v0001 as its live baseline).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support import BIN, REPO, file_hashes, free_ports, http_json

STACK_SH = REPO / "scripts" / "stack.sh"
AIRFLOW_VENV = Path(os.environ.get("AIRFLOW_VENV", REPO / ".venv-airflow")).resolve()
DAG = "resnet50_retrain"
BUCKET = "rn50-artifacts"  # compose's default RN50_BUCKET, which the stack keeps
STEPS = 10
# Tasks that need TensorFlow, on worker B (queue gpu); the others on worker A (queue default).
GPU_TASKS = {"train", "evaluate", "evaluate_baseline"}
TASKS = {"fetch_data", "validate_data", "check_changes", "train", "evaluate", "evaluate_baseline", "check_accuracy",
         "report", "publish"}
pytestmark = pytest.mark.slow


@dataclass
class Stack:
    dir: Path
    env: dict[str, str]  # what `stack.sh` is run with
    api: str
    token: str

    def sh(self, *args: str, cwd: Path | None = None, timeout: float = 300,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """stack.sh ARGS (e.g. `exec COMMAND...`), its output captured."""
        return subprocess.run([str(STACK_SH), *args], env={**self.env, **(env or {})}, cwd=cwd or REPO,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def http(self, method: str, path: str, body: dict | None = None) -> dict:
        return http_json(self.api + path, body, self.token, method)

    def logs(self, run_id: str) -> str:
        """The last lines of each task log of RUN_ID, for a failure's message."""
        return "\n".join(f"--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                         for log in sorted((self.dir / "airflow" / "logs" / f"dag_id={DAG}" / f"run_id={run_id}")
                                           .glob("*/*.log")))

    def s3(self):
        import boto3

        lines = (self.dir / "secrets.env").read_text().splitlines()
        secrets = dict(line.split("=", 1) for line in lines if "=" in line)
        return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.env['RN50_S3_PORT']}", region_name="us-east-1",
                            aws_access_key_id="rn50", aws_secret_access_key=secrets["MINIO_ROOT_PASSWORD"])


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    assert (AIRFLOW_VENV / "bin" / "airflow").exists(), (
        f"{AIRFLOW_VENV} (worker A's environment, without TensorFlow) is missing: make .venv-airflow/.setup-none")
    # Under the checkout: the postgres user that runs the cluster (when root) cannot reach pytest's tmp.
    # The directory ignores itself, as .venv-airflow does.
    stack_dir = Path(tempfile.mkdtemp(prefix=".stack-test-", dir=REPO))
    (stack_dir / ".gitignore").write_text("*\n")
    api_port, s3_port = free_ports(2)
    env = {
        "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
        "DVC_NO_ANALYTICS": "1", "VENV": str(BIN.parent), "AIRFLOW_VENV": str(AIRFLOW_VENV),
        "RN50_STACK_DIR": str(stack_dir), "AIRFLOW_PORT": str(api_port), "RN50_S3_PORT": str(s3_port),
        # One CPU "GPU", the smoke profile, no schedule: unpausing starts no production run. (The stack
        # pushes data/imagenet to its DVC remote, making it first as `make sample` does.)
        "RN50_NUM_GPUS": "1", "RN50_PROFILE": "smoke", "RN50_SCHEDULE": "none",
    }
    stack = Stack(stack_dir, env, f"http://127.0.0.1:{env['AIRFLOW_PORT']}", "")
    try:
        started = time.monotonic()
        result = stack.sh("up", timeout=900)
        assert result.returncode == 0, f"stack.sh up:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        print(f"stack.sh up: {time.monotonic() - started:.0f} s")
        password = json.loads((stack_dir / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())
        stack.token = stack.http("POST", "/auth/token", {"username": "admin", "password": password["admin"]})[
            "access_token"]
        yield stack
    finally:
        subprocess.run([str(STACK_SH), "down"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(stack_dir, ignore_errors=True)


def _trigger(stack: Stack, conf: dict) -> str:
    deadline = time.monotonic() + 300
    while True:  # 404 until the dag-processor has parsed the DAG into the database
        try:
            stack.http("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})
            break
        except urllib.error.HTTPError as exc:
            assert exc.code == 404 and time.monotonic() < deadline, exc
            time.sleep(2)
    return stack.http("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]


def _wait(stack: Stack, run_id: str, timeout: float = 900) -> tuple[str, dict[str, dict]]:
    """The run's final state and its task instances by task id."""
    path = f"/api/v2/dags/{DAG}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    deadline = time.monotonic() + timeout
    while (state := stack.http("GET", path)["state"]) not in ("success", "failed"):
        assert time.monotonic() < deadline, f"run {run_id} still {state} after {timeout} s\n{stack.logs(run_id)}"
        time.sleep(3)
    tasks = {t["task_id"]: t for t in stack.http("GET", f"{path}/taskInstances")["task_instances"]}
    return state, tasks


def _xcom(stack: Stack, run_id: str, task_id: str) -> dict:
    run = urllib.parse.quote(run_id, safe="")
    return stack.http("GET", f"/api/v2/dags/{DAG}/dagRuns/{run}/taskInstances/{task_id}/xcomEntries/return_value")[
        "value"]


def _workspace(stack: Stack, run_id: str) -> Path:
    [workspace] = [p for p in (stack.dir / "runs" / "workspaces").iterdir()
                   if (p / "run.json").is_file() and json.loads((p / "run.json").read_text())["run_id"] == run_id]
    return workspace


def _decision(stack: Stack, run_id: str) -> dict:
    """The gate's decision.json in RUN_ID's workspace (gate/, or model/ in the older layout)."""
    workspace = _workspace(stack, run_id)
    path = next(p for p in (workspace / "gate" / "decision.json", workspace / "model" / "decision.json") if p.is_file())
    return json.loads(path.read_text())


def _assert_on_their_workers(tasks: dict[str, dict]) -> None:
    """Each task that ran did so on the worker of its queue: TensorFlow's on worker B, the others on A."""
    machine = socket.gethostname()
    ran = {task_id: (t["queue"], t["hostname"]) for task_id, t in tasks.items() if t["hostname"]}
    expected = {task_id: ("gpu" if task_id in GPU_TASKS else "default") for task_id in ran}
    assert ran == {task_id: (queue, f"worker-{queue}.{machine}") for task_id, queue in expected.items()}


def test_worker_a_runs_without_tensorflow_and_worker_b_with_it(stack):
    # Each worker's process, by its pid file: its Python's site-packages are the environment it runs.
    def mapped(worker: str) -> str:
        pid = (stack.dir / "run" / f"{worker}.pid").read_text().split()[0]
        return Path(f"/proc/{pid}/maps").read_text()

    assert f"{AIRFLOW_VENV}/lib/" in mapped("worker-default")
    assert f"{BIN.parent.resolve()}/lib/" in mapped("worker-gpu")
    find = "import importlib.util; print(importlib.util.find_spec('tensorflow') is not None)"
    assert stack.sh("exec", str(AIRFLOW_VENV / "bin" / "python"), "-c", find).stdout.split() == ["False"]
    assert stack.sh("exec", sys.executable, "-c", find).stdout.split() == ["True"]


def test_a_run_triggered_over_rest_publishes_and_a_second_is_gated_against_it(stack, dvc_env, tmp_path):
    started = time.monotonic()
    # Run 1: data from the stack's DVC remote (no data_dir), a few steps, published by force.
    run_1 = _trigger(stack, {"profile": "smoke", "steps": STEPS, "force_publish": True,
                             "force_reason": f"stack e2e test: {STEPS} steps cannot reach the smoke floor"})
    state, tasks = _wait(stack, run_1)
    assert state == "success", ({t: ti["state"] for t, ti in tasks.items()}, stack.logs(run_1))
    assert {t: ti["state"] for t, ti in tasks.items()} == dict.fromkeys(TASKS, "success")
    _assert_on_their_workers(tasks)
    print(f"run 1: {time.monotonic() - started:.0f} s")

    gate = _xcom(stack, run_1, "check_accuracy")
    assert gate["publish"] is True and gate["champion"] is None  # forced, into an empty registry
    assert gate["live_baseline"] is None  # nothing to measure: no NGC checkpoint, nothing published
    assert _xcom(stack, run_1, "evaluate_baseline")["model"]["kind"] == "none"
    published = _xcom(stack, run_1, "publish")
    assert published["version"] == "v0001"
    # The run report, made on worker A (no TensorFlow): its URI in publish's summary (the Asset event's extra).
    assert published["report_uri"] == f"s3://{BUCKET}/models/resnet50/v0001/report/index.html"
    s3 = stack.s3()
    latest = json.loads(s3.get_object(Bucket=BUCKET, Key="models/resnet50/latest.json")["Body"].read())
    assert latest["version"] == "v0001"
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key="models/resnet50/v0001/manifest.json")["Body"].read())
    assert manifest["airflow"]["run_id"] == run_1 and manifest["force_publish"] is True
    data_dvc = yaml.safe_load(subprocess.check_output(["git", "show", "HEAD:data.dvc"], cwd=REPO))
    assert manifest["dataset_version"] == data_dvc["outs"][0]["md5"]  # fetch_data pulled data.dvc from the remote
    files = {name: entry["sha256"] for name, entry in manifest["files"].items()}
    assert "model.keras" in files  # exported on worker B, uploaded by worker A

    # The consumer's two ways: `rn50 pull` (it checks every sha256 against the manifest) ...
    pulled = tmp_path / "pulled"
    result = stack.sh("exec", str(BIN / "rn50"), "pull", str(pulled), "--bucket", BUCKET)
    assert result.returncode == 0 and "pulled v0001" in result.stdout, result.stderr[-2000:]
    assert json.loads((pulled / "manifest.json").read_text()) == manifest
    # ... and `dvc pull` of the pointer in a fresh clone of the registry repo: the same bytes.
    clone = tmp_path / "consumer"
    subprocess.run(["git", "clone", "-q", str(stack.dir / "registry"), str(clone)], check=True, timeout=60)
    pointer = yaml.safe_load((clone / "models" / "resnet50.dvc").read_text())
    assert pointer["meta"]["version"] == "v0001"
    isolated = {k: v for k, v in dvc_env.items() if k.startswith("DVC_")}
    result = stack.sh("exec", "dvc", "pull", "models/resnet50.dvc", cwd=clone, env=isolated)
    assert result.returncode == 0, result.stderr[-2000:]
    out = clone / "models" / pointer["outs"][0]["path"]
    assert file_hashes(out) == files

    # Run 2: same data, same code, fine-tuned from the champion, not forced: the gate decides, against v0001
    # measured in this run on the same records.
    started = time.monotonic()
    run_2 = _trigger(stack, {"profile": "smoke", "steps": STEPS, "init_from": "champion"})
    state, tasks = _wait(stack, run_2)
    print(f"run 2: {time.monotonic() - started:.0f} s ({state})")
    _assert_on_their_workers(tasks)
    after_gate = {"check_accuracy", "report", "publish"}  # the report is made after the gate's verdict
    assert {t: tasks[t]["state"] for t in TASKS - after_gate} == dict.fromkeys(
        TASKS - after_gate, "success"), stack.logs(run_2)
    assert tasks["evaluate_baseline"]["hostname"].startswith("worker-gpu.")
    workspace = _workspace(stack, run_2)
    # Trained from the run's one snapshot of v0001 (pulled by train or evaluate_baseline, used by both).
    init = json.loads((workspace / "model" / "config.json").read_text())["init"]
    snapshot = str((workspace / "champion").resolve())
    assert (init["kind"], init["version"], init["path"]) == ("champion", "v0001", snapshot)
    decision = _decision(stack, run_2)
    assert decision["champion"]["version"] == "v0001"
    assert decision["registry"] == f"s3://{BUCKET}/models/resnet50/"
    live = decision["live_baseline"]
    assert live["model"] == {"kind": "champion", "version": "v0001", "uri": f"s3://{BUCKET}/models/resnet50/v0001/"}
    measured = json.loads((workspace / "baseline" / "eval.json").read_text())  # v0001 measured in this run
    assert {k: live[k] for k in ("top1_accuracy", "top5_accuracy", "eval_count")} == {
        k: measured[k] for k in ("top1_accuracy", "top5_accuracy", "eval_count")}
    assert live["eval_count"] == decision["candidate"]["eval_count"]  # the same records as the candidate
    assert any(f"(live baseline champion v0001: {live['top1_accuracy']:.2f} % on the same {live['eval_count']} images"
               in reason for reason in decision["reasons"]), decision["reasons"]
    latest = json.loads(s3.get_object(Bucket=BUCKET, Key="models/resnet50/latest.json")["Body"].read())
    if decision["publish"]:
        assert state == "success" and _xcom(stack, run_2, "publish")["version"] == latest["version"] == "v0002"
    else:
        assert state == "failed", stack.logs(run_2)
        assert (tasks["check_accuracy"]["state"], tasks["report"]["state"], tasks["publish"]["state"]) == (
            "failed", "success", "upstream_failed")  # the failed gate's report stays in the workspace
        assert latest["version"] == "v0001"
        assert "models/resnet50/v0002/manifest.json" not in [
            o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="models/resnet50/v0002/").get("Contents", [])]


def _stack_processes(stack_dir: Path) -> dict[tuple[int, str], str]:
    """Every live process whose command line or environment names the stack's directory, that the stack
    recorded, or that descends from one of those: (pid, start time) -> command line."""
    found, parents = {}, {}
    recorded = {int(f.read_text().split()[0]) for f in (stack_dir / "run").glob("*.pid")}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rpartition(") ")[2].split()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes()
        except OSError:  # gone meanwhile, or another user's
            continue
        if stat[0] == "Z":  # exited (its parent has not reaped it yet)
            continue
        pid = int(proc.name)
        parents[pid] = (int(stat[1]), stat[19], cmdline)
        if str(stack_dir).encode() in environ or str(stack_dir) in cmdline or pid in recorded:
            found[pid] = None
    for pid in parents:  # the descendants of those
        p = pid
        while p > 1 and p not in found:
            p = parents.get(p, (0,))[0]
        if p in found:
            found[pid] = None
    return {(pid, parents[pid][1]): parents[pid][2] for pid in found if pid in parents}


def _alive(pid: int, start: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].split()
    except OSError:
        return False
    return stat[19] == start and stat[0] != "Z"


def test_stack_down_leaves_no_process_behind(stack):
    before = _stack_processes(stack.dir)
    names = {f.stem for f in (stack.dir / "run").glob("*.pid")}
    assert names == {"postgres", "redis", "moto", "api-server", "scheduler", "dag-processor", "triggerer",
                     "worker-default", "worker-gpu"}
    assert len(before) > len(names)  # the check sees the processes' children, not only the recorded ones
    ports = dict(line.split("=") for line in (stack.dir / "run" / "ports").read_text().split())
    started = time.monotonic()
    result = stack.sh("down", timeout=120)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    print(f"stack.sh down: {took:.0f} s {result.stderr.strip()}")
    # Not one of them, though Celery, Redis and Postgres rewrite their command lines and environments.
    assert {key: cmd for key, cmd in before.items() if _alive(*key)} == {}
    assert _stack_processes(stack.dir) == {}
    assert took < 30, f"stack.sh down took {took:.0f} s"
    for port in ports.values():  # nothing listens on the stack's ports any more
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", int(port)))
