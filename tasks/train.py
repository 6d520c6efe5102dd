"""train: `rn50 train` in a child process (horovodrun for several GPUs), or an MPIJob on Kubernetes.

A child process, not a call: Horovod's ranks must be processes, and TensorFlow's GPU state must not
live in the Airflow worker. When Airflow stops the task (timeout, mark failed) the child gets SIGTERM,
saves a checkpoint and exits, and the retry carries on from there. With launcher=kubernetes the task
submits an MPIJob whose launcher pod runs this same module with --hostfile, and waits for it; a
stopped task deletes the job, whose ranks then checkpoint the same way.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from types import FrameType
from typing import Any

import yaml

from pipeline.command import CommandError, StderrTail
from pipeline.train.launch import ALLOWED_HOSTS_VAR, check_hosts, parse_hostfile, parse_hosts
from pipeline.train.logs import read_metrics
from pipeline.train.mpijob import (
    HOSTFILE,
    CustomObjects,
    MPIJobFailed,
    MPIJobSpec,
    job_name,
    render_mpijob,
    run_mpijob,
    split_gpus,
)
from pipeline.workspace import RunWorkspace
from tasks.common import add_workspace_args, cli, final, workspace, workspace_root

EXIT_USAGE = 2
# (setting, environment variable, default) for launcher=kubernetes; docker/k8s/ and the README name them.
K8S_SETTINGS = (
    ("conn_id", "RN50_K8S_CONN_ID", "kubernetes_default"),
    ("namespace", "RN50_K8S_NAMESPACE", "rn50"),
    ("image", "RN50_TRAINER_IMAGE", "rn50-trainer:0.1.0"),
    ("shared_claim", "RN50_K8S_SHARED_CLAIM", "rn50-shared"),
    ("shared_path", "RN50_K8S_SHARED_PATH", "/shared"),
    ("service_account", "RN50_K8S_SERVICE_ACCOUNT", "rn50-trainer"),
    ("cpus_per_gpu", "RN50_K8S_CPUS_PER_GPU", "8"),
    ("memory_per_gpu_gib", "RN50_K8S_MEMORY_PER_GPU_GIB", "48"),
    ("poll_s", "RN50_K8S_POLL_S", "30"),
)
TAIL_WAIT_S = 5  # a rank the launcher left behind may hold its stderr open: its end is not waited for long
STOP_GRACE_S = 120  # a checkpoint of ResNet50 with its optimizer takes seconds; this bounds a stuck save


def train_command(*, data_dir: str, model_dir: Path, profile: str, num_gpus: int = 1, hosts: str | None = None,
                  epochs: int | None = None, batch_size: int | None = None, steps: int | None = None,
                  amp: bool | None = None, xla: bool | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline", "train", "--profile", profile, "--data-dir", str(data_dir),
           "--model-dir", str(model_dir), "--np", str(num_gpus)]
    if hosts:
        cmd += ["--hosts", hosts]
    return cmd + _override_flags(epochs=epochs, batch_size=batch_size, steps=steps, amp=amp, xla=xla)


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


def run(ws: RunWorkspace, *, data_dir: str, profile: str, launcher: str = "local", gpus_per_node: int = 8,
        hostfile: str | None = None, **options: Any) -> dict[str, Any]:
    """Train in this machine's processes (launcher=local) or as an MPIJob on Kubernetes."""
    if launcher == "kubernetes":
        return run_on_kubernetes(ws, data_dir=data_dir, profile=profile, gpus_per_node=gpus_per_node, **options)
    if launcher != "local":
        raise final(ValueError(f"launcher must be local or kubernetes, not {launcher!r}"))
    env = None
    try:
        if hostfile:  # inside an MPIJob's launcher pod: the workers the mpi-operator started are the hosts
            options["hosts"] = parse_hostfile(Path(hostfile).read_text())
            env = {**os.environ, ALLOWED_HOSTS_VAR: ",".join(name for name, _ in parse_hosts(options["hosts"]))}
        else:
            check_run_hosts(options.get("hosts"))
    except ValueError as exc:
        raise final(ValueError(f"{hostfile}: {exc}")) from exc
    cmd = train_command(data_dir=data_dir, model_dir=ws.model, profile=profile, **options)
    print("running: " + " ".join(cmd), flush=True)
    try:
        run_child(cmd, env)
    except CommandError as exc:
        reason = " | ".join(exc.tail) or "nothing on stderr"
        if exc.returncode == EXIT_USAGE:
            args = " ".join(cmd[3:])
            raise final(ValueError(f"rn50 train refused its arguments (exit 2): {args}: {reason}")) from None
        raise RuntimeError(f"rn50 train exited with {exc.returncode}: {reason}; a retry resumes from "
                           f"{ws.model}/checkpoints") from None
    return _summary(ws, options.get("num_gpus", 1), options.get("hosts"))


def kubernetes_settings(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Where and how the MPIJob runs: per deployment, so environment variables (see docker/k8s/)."""
    return {name: env.get(var, default) for name, var, default in K8S_SETTINGS}


def mpijob_for(ws: RunWorkspace, *, data_dir: str, profile: str, num_gpus: int = 1, gpus_per_node: int = 8,
               settings: Mapping[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """The MPIJob that trains this run: num_gpus ranks on nodes of gpus_per_node GPUs."""
    cfg = dict(settings or kubernetes_settings())
    shared = PurePosixPath(cfg["shared_path"])
    for what, path in (("the run workspace (RN50_WORKSPACE_ROOT)", ws.root), ("data_dir", data_dir)):
        if not PurePosixPath(Path(path).resolve()).is_relative_to(shared):
            raise final(ValueError(f"launcher=kubernetes: {what} {path} is not on the shared volume "
                                   f"RN50_K8S_SHARED_PATH={shared}, which the training pods mount"))
    try:
        workers, gpus = split_gpus(num_gpus, gpus_per_node)
        command = [
            "python", "-m", "tasks.train", "--run-id", ws.run_id, "--workspace-root", str(Path(ws.root).resolve()),
            "--data-dir", str(data_dir), "--profile", profile, "--num-gpus", str(num_gpus),
            "--hostfile", HOSTFILE, *_override_flags(**overrides),
        ]
        spec = MPIJobSpec(
            name=job_name(ws.run_id), namespace=cfg["namespace"], image=cfg["image"], launcher_command=command,
            workers=workers, gpus_per_worker=gpus, shared_claim=cfg["shared_claim"], shared_path=str(shared),
            env={"RN50_WORKSPACE_ROOT": str(Path(ws.root).resolve()), "TF_CPP_MIN_LOG_LEVEL": "2"},
            annotations={"rn50/run-id": ws.run_id}, service_account=cfg["service_account"] or None,
            cpus_per_gpu=int(cfg["cpus_per_gpu"]), memory_per_gpu_gib=int(cfg["memory_per_gpu_gib"]),
        )
    except ValueError as exc:
        raise final(exc) from exc
    return render_mpijob(spec)


def kubernetes_api(conn_id: str) -> CustomObjects:
    """The cncf.kubernetes provider's hook: its connection says which cluster (in-cluster, kubeconfig)."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    return KubernetesHook(conn_id=conn_id)


def run_on_kubernetes(ws: RunWorkspace, *, data_dir: str, profile: str, num_gpus: int = 1, gpus_per_node: int = 8,
                      hosts: str | None = None, **overrides: Any) -> dict[str, Any]:
    if hosts:
        raise final(ValueError("hosts is for launcher=local; on Kubernetes the MPIJob's workers are the hosts"))
    settings = kubernetes_settings()
    body = mpijob_for(ws, data_dir=data_dir, profile=profile, num_gpus=num_gpus, gpus_per_node=gpus_per_node,
                      settings=settings, **overrides)
    try:
        run_mpijob(kubernetes_api(settings["conn_id"]), body, poll_s=float(settings["poll_s"]),
                   log=lambda line: print(line, flush=True))
    except MPIJobFailed as exc:
        raise RuntimeError(f"{exc}; a retry resumes from {ws.model}/checkpoints") from exc
    workers = body["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"]
    return _summary(ws, num_gpus, f"{body['metadata']['name']}: {workers}x{body['spec']['slotsPerWorker']} GPUs")


def _override_flags(**overrides: Any) -> list[str]:
    flags = []
    for name, value in overrides.items():
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        elif value is not None:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


def _main(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "steps": args.steps, "amp": args.amp,
                 "xla": args.xla}
    options = {"data_dir": args.data_dir, "profile": args.profile, "num_gpus": args.num_gpus,
               "gpus_per_node": args.gpus_per_node, **overrides}
    if args.render:  # the MPIJob, for `kubectl apply -f -` or a review; nothing is submitted or created
        body = mpijob_for(RunWorkspace(args.workspace_root or workspace_root(), args.run_id), **options)
        print(yaml.safe_dump(body, sort_keys=False), end="")
        sys.exit(0)
    return run(workspace(args.run_id, args.workspace_root), launcher=args.launcher, hostfile=args.hostfile,
               hosts=args.hosts, **options)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="tasks.train", description=__doc__)
    add_workspace_args(parser)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--profile", default="ngc-90e")
    parser.add_argument("--num-gpus", type=int, default=1)
    parser.add_argument("--hosts")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, help="default: the profile's")
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, help="default: the profile's")
    parser.add_argument("--launcher", choices=["local", "kubernetes"], default="local")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="launcher=kubernetes: GPUs per worker pod")
    parser.add_argument("--hostfile", help="an MPI hostfile (host slots=N) naming the hosts, as in an MPIJob")
    parser.add_argument("--render", action="store_true", help="print the MPIJob for these arguments and exit")
    cli(_main, parser)
