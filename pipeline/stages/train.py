"""The train stage as the DAG runs it: `rn50 train` in a child process (horovodrun for several GPUs) that
this stage supervises, or an MPIJob on Kubernetes; and, first, where the run's weights start from.

A child process, not a call: Horovod's ranks must be processes, and TensorFlow's GPU state must not
live in the Airflow worker. When the task is stopped (timeout, mark failed) the child gets SIGTERM,
saves a checkpoint and exits, and the retry carries on from there. With launcher=kubernetes the
MPIJob's launcher pod runs `rn50 train --hostfile` (pipeline.train.mpijob); a stopped wait deletes the
job, whose ranks then checkpoint the same way.

Failures come back as kinds (pipeline.errors), and a child's kind is read from its exit code alone
(`child_failure`), never from what it printed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline import settings
from pipeline.command import CommandError, StderrTail
from pipeline.contracts import exit_codes
from pipeline.errors import Failed, Refused, Retryable
from pipeline.publish.store import make_client
from pipeline.stages.baseline import BaselineError, registry_uri, snapshot_champion
from pipeline.stages.policy import check_run_hosts
from pipeline.train.logs import read_metrics
from pipeline.train.mpijob import CustomObjects, MPIJobFailed, MPIJobRun, train_flags, training_job
from pipeline.workspace import RunWorkspace

TAIL_WAIT_S = 5  # a rank the launcher left behind may hold its stderr open: its end is not waited for long
STOP_GRACE_S = 120  # a checkpoint of ResNet50 with its optimizer takes seconds; this bounds a stuck save


def run_init_from(ws: RunWorkspace, init_from: str | None, *, client: Any = None, bucket: str | None = None,
                  prefix: str = settings.PREFIX.default) -> str | None:
    """What `rn50 train --init-from` gets: init_from, except that `champion` is the run's snapshot of it.

    The run's bucket and prefix (its Params) and the client the task gives (its Airflow connection; else
    the AWS environment's) name the registry, not the trainer's own environment; the snapshot, under the
    run workspace (which the MPIJob's pods share), is the one evaluate_baseline measures too. Nothing
    published is Refused; a registry that cannot be read is Retryable.
    """
    if init_from != "champion":
        return init_from
    bucket = bucket or settings.BUCKET.get()
    try:
        folder = snapshot_champion(ws.champion, client or make_client(), bucket, prefix)
    except ValueError as exc:  # a prefix that is no key path
        raise Refused(str(exc)) from exc
    except BaselineError as exc:
        raise Retryable(f"init_from=champion: {exc}") from None
    if folder is None:
        raise Refused(f"init_from=champion: nothing is published under {registry_uri(bucket, prefix)}; "
                      "start from scratch or ngc")
    return str(folder)


def train_command(*, data_dir: str, model_dir: Path, profile: str, num_gpus: int = 1, hosts: str | None = None,
                  epochs: int | None = None, batch_size: int | None = None, steps: int | None = None,
                  amp: bool | None = None, xla: bool | None = None, init_from: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline", "train", "--profile", profile, "--data-dir", str(data_dir),
           "--model-dir", str(model_dir), "--np", str(num_gpus)]
    if hosts:
        cmd += ["--hosts", hosts]
    return cmd + train_flags(epochs=epochs, batch_size=batch_size, steps=steps, amp=amp, xla=xla, init_from=init_from)


def run_child(cmd: list[str], env: Mapping[str, str] | None = None) -> None:
    """Run the trainer; if this process is told to stop, pass SIGTERM on and wait for the checkpoint.

    Its stderr goes on to this process's (the task log) as it comes, and its last lines are kept for
    the CommandError a non-zero exit raises.
    """
    child = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    tail = StderrTail(child.stderr, echo=os.fdopen(2, "wb", closefd=False))  # type: ignore[arg-type]

    def terminate() -> None:  # SIGTERM makes the trainer save a checkpoint; give it the grace period to
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()

    def stop(signum: int, frame: FrameType | None) -> None:
        terminate()
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        code = child.wait()
    except BaseException:  # Airflow's timeout arrives as an exception in this process
        if child.poll() is None:
            terminate()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    lines = tail.lines(timeout=TAIL_WAIT_S)
    if code != 0:
        raise CommandError(cmd, None, code, lines)


def child_failure(exc: CommandError, model_dir: Path) -> Refused | Failed | Retryable:
    """What a failed `rn50 train` means, decided by its exit code alone (pipeline.contracts.exit_codes).

    2 (bad parameters or missing data: nothing trained) and 1 (a record it cannot read) would fail the same
    way on a retry. Anything else may pass on one, which resumes from the checkpoint: a crash `rn50 train`
    did not foresee (it exits RETRY), a signal, a lost rank or horovodrun's own failure. Its stderr only
    says why: it ends a foreseen failure with its one-line reason.
    """
    if exc.returncode not in exit_codes.FINAL:
        reason = " | ".join(exc.tail) or "nothing on stderr"
        return Retryable(f"rn50 train exited with {exc.returncode}: {reason}; a retry resumes from "
                         f"{model_dir}/checkpoints")
    said = exc.tail[-1] if exc.tail else "nothing on stderr"
    if exc.returncode == exit_codes.USAGE:
        return Refused(f"training could not start: {said}")
    return Failed(f"training stopped, and a retry would stop the same way: {said}")


def train_locally(ws: RunWorkspace, *, data_dir: str, profile: str, **options: Any) -> dict[str, Any]:
    """Train in this machine's processes: `rn50 train` as a child, under horovodrun for several GPUs or
    `hosts` (which the deployment must allow)."""
    check_run_hosts(options.get("hosts"))
    cmd = train_command(data_dir=data_dir, model_dir=ws.model, profile=profile, **options)
    print("running: " + " ".join(cmd), flush=True)
    try:
        run_child(cmd)
    except CommandError as exc:
        raise child_failure(exc, ws.model) from None
    return summary(ws, options.get("num_gpus", 1), options.get("hosts"))


def train_on_kubernetes(ws: RunWorkspace, connect: Callable[[str], CustomObjects], *, data_dir: str, profile: str,
                        num_gpus: int = 1, gpus_per_node: int = 8, hosts: str | None = None,
                        environ: Mapping[str, str] = os.environ, **overrides: Any) -> dict[str, Any]:
    """Train as the run's MPIJob (pipeline.train.mpijob.training_job) on the cluster `connect(conn_id)` reaches,
    conn_id being the deployment's RN50_K8S_CONN_ID. What does not fit the cluster is Refused before anything is
    submitted; a failed job is Retryable, and its retry resumes from the checkpoint on the shared volume."""
    if hosts:
        raise Refused("hosts is for launcher=local; on Kubernetes the MPIJob's workers are the hosts")
    try:
        body = training_job(ws.run_id, ws.root, data_dir=data_dir, profile=profile, num_gpus=num_gpus,
                            gpus_per_node=gpus_per_node, environ=environ, **overrides)
        conn_id, poll_s = settings.K8S_CONN_ID.get(environ), settings.K8S_POLL_S.get(environ)
    except ValueError as exc:
        raise Refused(str(exc)) from exc
    job = MPIJobRun(connect(conn_id), body, poll_s=poll_s, log=lambda line: print(line, flush=True))
    try:
        job.run()
    except MPIJobFailed as exc:
        raise Retryable(f"{exc}; a retry resumes from {ws.model}/checkpoints") from exc
    workers = body["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"]
    return summary(ws, num_gpus, f"{job.name}: {workers}x{body['spec']['slotsPerWorker']} GPUs")


def summary(ws: RunWorkspace, num_gpus: int, hosts: str | None) -> dict[str, Any]:
    """The task's XCom: where the model is, and training's last logged step."""
    last = next((m for m in reversed(read_metrics(ws.model)) if "loss" in m), {})
    return {"model_dir": str(ws.model), "step": last.get("step"), "epoch": last.get("epoch"),
            "loss": last.get("loss"), "train_throughput": last.get("train_throughput"), "num_gpus": num_gpus,
            "hosts": hosts}
