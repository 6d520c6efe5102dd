"""train: `rn50 train` in a child process (horovodrun for several GPUs), or an MPIJob on Kubernetes.

A child process, not a call: Horovod's ranks must be processes, and TensorFlow's GPU state must not
live in the Airflow worker. When Airflow stops the task (timeout, mark failed) the child gets SIGTERM,
saves a checkpoint and exits, and the retry carries on from there. With launcher=kubernetes the task
submits an MPIJob whose launcher pod runs `rn50 train --hostfile` (pipeline.train.mpijob), and waits
for it; a stopped task deletes the job, whose ranks then checkpoint the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline import settings
from pipeline.command import CommandError, StderrTail
from pipeline.train.launch import check_hosts
from pipeline.train.logs import read_metrics
from pipeline.train.mpijob import CustomObjects, MPIJobFailed, run_mpijob, train_flags, training_job
from pipeline.workspace import RunWorkspace
from tasks.common import final, s3_client

EXIT_USAGE = 2
TAIL_WAIT_S = 5  # a rank the launcher left behind may hold its stderr open: its end is not waited for long
STOP_GRACE_S = 120  # a checkpoint of ResNet50 with its optimizer takes seconds; this bounds a stuck save


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


def _summary(ws: RunWorkspace, num_gpus: int, hosts: str | None) -> dict[str, Any]:
    last = next((m for m in reversed(read_metrics(ws.model)) if "loss" in m), {})
    return {"model_dir": str(ws.model), "step": last.get("step"), "epoch": last.get("epoch"),
            "loss": last.get("loss"), "train_throughput": last.get("train_throughput"), "num_gpus": num_gpus,
            "hosts": hosts}


def check_run_hosts(hosts: str | None) -> None:
    """The hosts a run names (its `hosts` Param): refused, for good, unless the deployment allows them."""
    if hosts:
        try:
            check_hosts(hosts)
        except ValueError as exc:
            raise final(exc) from exc


def check_run_gpus(num_gpus: int, launcher: str, reserved: int) -> None:
    """A run's GPUs (its num_gpus and launcher Params) against the `gpu` pool slots its train task reserves.

    The slots are the deployment's (RN50_NUM_GPUS, RN50_LAUNCHER), fixed when the DAG is parsed: a run
    using more GPUs than it reserves would share them with another task, fewer would leave them idle.
    launcher=kubernetes uses none of the gpu worker's GPUs: the cluster schedules the MPIJob's.
    """
    if launcher != "local":
        return
    if not reserved:
        raise final(ValueError("launcher=local but this deployment trains on Kubernetes and reserves no GPU slot "
                               "for training (RN50_LAUNCHER=kubernetes); trigger with launcher=kubernetes"))
    if num_gpus != reserved:
        slots = f"{reserved} GPU slot{'s' if reserved != 1 else ''}"
        raise final(ValueError(f"num_gpus={num_gpus} but this deployment reserves {slots} per training run "
                               f"(RN50_NUM_GPUS={reserved}); trigger with num_gpus={reserved}, or set RN50_NUM_GPUS "
                               "(and the gpu pool's size) for the deployment"))


def init_source(ws: RunWorkspace, init_from: str | None, *, client: Any = None, bucket: str | None = None,
                prefix: str = settings.PREFIX.default) -> str | None:
    """What `rn50 train --init-from` gets: init_from, except that `champion` is the run's snapshot of it.

    The run's bucket and prefix (its Params) and the task's S3 client (the Airflow connection) name the
    registry, not the trainer's own environment; the snapshot, under the run workspace (which the MPIJob's
    pods share), is the one evaluate_baseline measures too. Nothing published is final; S3 errors retry.
    """
    if init_from != "champion":
        return init_from
    from pipeline.stages.baseline import BaselineError, registry_uri, snapshot_champion

    bucket = bucket or settings.BUCKET.get()
    try:
        folder = snapshot_champion(ws.champion, client or s3_client(), bucket, prefix)
    except ValueError as exc:  # a prefix that is no key path
        raise final(exc) from exc
    except BaselineError as exc:
        raise RuntimeError(f"init_from=champion: {exc}") from None
    if folder is None:
        raise final(ValueError(f"init_from=champion: nothing is published under "
                               f"{registry_uri(bucket, prefix)}; start from scratch or ngc"))
    return str(folder)


def run(ws: RunWorkspace, *, data_dir: str, profile: str, launcher: str = "local", gpus_per_node: int = 8,
        client: Any = None, bucket: str | None = None, prefix: str = settings.PREFIX.default,
        **options: Any) -> dict[str, Any]:
    """Train in this machine's processes (launcher=local) or as an MPIJob on Kubernetes."""
    if "init_from" in options:
        options["init_from"] = init_source(ws, options["init_from"], client=client, bucket=bucket, prefix=prefix)
    if launcher == "kubernetes":
        return run_on_kubernetes(ws, data_dir=data_dir, profile=profile, gpus_per_node=gpus_per_node, **options)
    if launcher != "local":
        raise final(ValueError(f"launcher must be local or kubernetes, not {launcher!r}"))
    check_run_hosts(options.get("hosts"))
    cmd = train_command(data_dir=data_dir, model_dir=ws.model, profile=profile, **options)
    print("running: " + " ".join(cmd), flush=True)
    try:
        run_child(cmd)
    except CommandError as exc:
        reason = " | ".join(exc.tail) or "nothing on stderr"
        # `rn50 train` ends a failure it understood with one `rn50 train: error:` line: exit 2 for a bad
        # parameter or missing data (nothing trained), 1 for a record it cannot read. A retry would fail
        # the same way. Anything else (a crash, a lost rank) may pass on a retry.
        said = exc.tail[-1] if exc.tail and exc.tail[-1].startswith("rn50 train: error:") else None
        if exc.returncode == EXIT_USAGE:
            raise final(ValueError(f"training could not start: {said or reason}")) from None
        if said:
            raise final(RuntimeError(f"training stopped, and a retry would stop the same way: {said}")) from None
        raise RuntimeError(f"rn50 train exited with {exc.returncode}: {reason}; a retry resumes from "
                           f"{ws.model}/checkpoints") from None
    return _summary(ws, options.get("num_gpus", 1), options.get("hosts"))


def mpijob_for(ws: RunWorkspace, *, data_dir: str, profile: str, num_gpus: int = 1, gpus_per_node: int = 8,
               environ: Mapping[str, str] = os.environ, **overrides: Any) -> dict[str, Any]:
    """The MPIJob that trains this run (pipeline.train.mpijob.training_job); what does not fit is final."""
    try:
        return training_job(ws.run_id, ws.root, data_dir=data_dir, profile=profile, num_gpus=num_gpus,
                            gpus_per_node=gpus_per_node, environ=environ, **overrides)
    except ValueError as exc:
        raise final(exc) from exc


def kubernetes_api(conn_id: str) -> CustomObjects:
    """The cncf.kubernetes provider's hook: its connection says which cluster (in-cluster, kubeconfig)."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    return KubernetesHook(conn_id=conn_id)


def run_on_kubernetes(ws: RunWorkspace, *, data_dir: str, profile: str, num_gpus: int = 1, gpus_per_node: int = 8,
                      hosts: str | None = None, **overrides: Any) -> dict[str, Any]:
    if hosts:
        raise final(ValueError("hosts is for launcher=local; on Kubernetes the MPIJob's workers are the hosts"))
    body = mpijob_for(ws, data_dir=data_dir, profile=profile, num_gpus=num_gpus, gpus_per_node=gpus_per_node,
                      **overrides)
    try:
        conn_id, poll_s = settings.K8S_CONN_ID.get(), settings.K8S_POLL_S.get()
    except ValueError as exc:
        raise final(exc) from exc
    try:
        run_mpijob(kubernetes_api(conn_id), body, poll_s=poll_s, log=lambda line: print(line, flush=True))
    except MPIJobFailed as exc:
        raise RuntimeError(f"{exc}; a retry resumes from {ws.model}/checkpoints") from exc
    workers = body["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"]
    return _summary(ws, num_gpus, f"{body['metadata']['name']}: {workers}x{body['spec']['slotsPerWorker']} GPUs")
