"""Training on Kubernetes: an MPIJob (kubeflow mpi-operator, kubeflow.org/v2beta1), submitted and watched.

The mpi-operator starts W worker pods with G GPUs each, running sshd, and one launcher pod. The
launcher runs `rn50 train --hostfile /etc/mpi/hostfile`, which starts `horovodrun` over
ssh on the hosts the operator wrote there: the same command line as on one machine, so the code
that trains is the same. Data and the run workspace live on a shared volume (a ReadWriteMany
claim) mounted at the same path in the pods and on the Airflow workers, so checkpoints survive a
deleted job and a retry resumes them.

This module is data in, data out, plus one job's lifecycle (`MPIJobRun`: run and on_kill, as an
operator's) that talks to whatever implements the three custom-object calls of the cncf.kubernetes
provider's `KubernetesHook` (the train task passes the hook; a test passes a fake).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from pipeline import settings

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v2beta1", "mpijobs", "MPIJob"
HOSTFILE = "/etc/mpi/hostfile"  # written by the mpi-operator into the launcher: "host slots=G" per worker
WORKER_COMMAND = ("rn50-worker",)  # sshd, and SIGTERM passed on to the ranks (docker/rn50-worker.sh)
NO_SIDECAR = {"sidecar.istio.io/inject": "false"}  # an Istio proxy would keep the pods from ever completing


class CustomObjects(Protocol):
    """What we use of `airflow.providers.cncf.kubernetes.hooks.kubernetes.KubernetesHook`."""

    def create_custom_object(self, group: str, version: str, plural: str, body: dict, namespace: str | None = None
                             ) -> Any: ...

    def get_custom_object(self, group: str, version: str, plural: str, name: str, namespace: str | None = None
                          ) -> Any: ...

    def delete_custom_object(self, group: str, version: str, plural: str, name: str, namespace: str | None = None,
                             **kwargs: Any) -> Any: ...


class MPIJobFailed(RuntimeError):
    """The job ended in the Failed condition; the message carries the operator's reason."""


@dataclass(frozen=True)
class MPIJobSpec:
    name: str
    namespace: str
    image: str
    launcher_command: Sequence[str]
    workers: int
    gpus_per_worker: int
    shared_claim: str  # a ReadWriteMany PersistentVolumeClaim holding the data and the run workspaces
    shared_path: str = "/shared"
    env: Mapping[str, str] = field(default_factory=dict)
    cpus_per_gpu: int = 8
    memory_per_gpu_gib: int = 48
    shm_gib: int = 16  # NCCL and tf.data use /dev/shm; a container's default 64 MiB is far too small
    annotations: Mapping[str, str] = field(default_factory=dict)
    service_account: str | None = None
    stop_grace_s: int = 120  # a rank saves its checkpoint on SIGTERM in seconds; this bounds a stuck one

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", self.name):
            raise ValueError(f"MPIJob name {self.name!r}: lower-case letters, digits and '-', at most 40 characters")
        if self.workers < 1 or self.gpus_per_worker < 1:
            raise ValueError(f"MPIJob {self.name}: workers ({self.workers}) and GPUs per worker "
                             f"({self.gpus_per_worker}) must be at least 1")


def job_name(run_id: str, prefix: str = "rn50-train") -> str:
    """One name per DAG run: a retry finds the job its earlier try started instead of starting another."""
    return f"{prefix}-{hashlib.sha256(run_id.encode()).hexdigest()[:10]}"


def split_gpus(num_gpus: int, gpus_per_node: int) -> tuple[int, int]:
    """(workers, GPUs per worker) for num_gpus ranks on nodes of gpus_per_node GPUs."""
    if num_gpus < 1 or gpus_per_node < 1:
        raise ValueError(f"num_gpus ({num_gpus}) and gpus_per_node ({gpus_per_node}) must be at least 1")
    if num_gpus <= gpus_per_node:
        return 1, num_gpus
    if num_gpus % gpus_per_node:
        raise ValueError(f"num_gpus {num_gpus} over several nodes must be a multiple of gpus_per_node "
                         f"{gpus_per_node}, so every worker gets the same number of GPUs")
    return num_gpus // gpus_per_node, gpus_per_node


def _container(name: str, spec: MPIJobSpec, command: Sequence[str], resources: dict) -> dict:
    return {
        "name": name,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(command),
        "env": [{"name": k, "value": str(v)} for k, v in sorted(spec.env.items())],
        "resources": resources,
        "volumeMounts": [{"name": "shared", "mountPath": spec.shared_path}, {"name": "dshm", "mountPath": "/dev/shm"}],
    }


def _pod(spec: MPIJobSpec, container: dict, labels: dict) -> dict:
    pod: dict[str, Any] = {
        "terminationGracePeriodSeconds": spec.stop_grace_s,
        "containers": [container],
        "volumes": [
            {"name": "shared", "persistentVolumeClaim": {"claimName": spec.shared_claim}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{spec.shm_gib}Gi"}},
        ],
    }
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    return {"metadata": {"labels": {**labels, **NO_SIDECAR}, "annotations": dict(NO_SIDECAR)}, "spec": pod}


def render_mpijob(spec: MPIJobSpec) -> dict:
    """The MPIJob manifest: plain data, the same that `kubectl apply -f` takes."""
    labels = {"app.kubernetes.io/name": "rn50", "app.kubernetes.io/component": "train",
              "rn50/job": spec.name}
    gpus = spec.gpus_per_worker
    worker_resources = {
        "requests": {"cpu": str(spec.cpus_per_gpu * gpus), "memory": f"{spec.memory_per_gpu_gib * gpus}Gi",
                     "nvidia.com/gpu": gpus},
        "limits": {"memory": f"{spec.memory_per_gpu_gib * gpus}Gi", "nvidia.com/gpu": gpus},
    }
    launcher_resources = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels,
                     "annotations": dict(spec.annotations)},
        "spec": {
            "slotsPerWorker": gpus,
            "mpiImplementation": "OpenMPI",  # only for the hostfile format ("host slots=G"); horovodrun reads it
            "launcherCreationPolicy": "WaitForWorkersReady",  # horovodrun's ssh check needs every sshd up
            "runPolicy": {
                # Running: when the job ends, stop what still runs, keep the failed pods' logs to read.
                "cleanPodPolicy": "Running",
                "backoffLimit": 0,  # Airflow's retry restarts the whole job; it resumes from the checkpoint
                "ttlSecondsAfterFinished": 7 * 24 * 3600,
            },
            "mpiReplicaSpecs": {
                "Launcher": {
                    "replicas": 1,
                    "restartPolicy": "Never",
                    "template": _pod(spec, _container("launcher", spec, spec.launcher_command, launcher_resources),
                                     {**labels, "rn50/role": "launcher"}),
                },
                "Worker": {
                    "replicas": spec.workers,
                    "restartPolicy": "Never",
                    "template": _pod(spec, _container("worker", spec, WORKER_COMMAND, worker_resources),
                                     {**labels, "rn50/role": "worker"}),
                },
            },
        },
    }


def train_flags(**overrides: Any) -> list[str]:
    """`rn50 train`'s flags for these profile overrides (None: the profile's; booleans: --x / --no-x)."""
    flags = []
    for name, value in overrides.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else flag.replace("--", "--no-", 1))
        elif value is not None:
            flags += [flag, str(value)]
    return flags


def training_job(run_id: str, workspace_root: str | Path, *, data_dir: str | Path, profile: str, num_gpus: int,
                 gpus_per_node: int, environ: Mapping[str, str] = os.environ, **overrides: Any) -> dict:
    """The MPIJob that trains run `run_id`: num_gpus ranks on nodes of gpus_per_node GPUs.

    Where and how it runs (namespace, image, shared claim, requests) is the deployment's: the RN50_K8S_*
    and RN50_TRAINER_IMAGE settings in `environ`. Its launcher runs `rn50 train` on the run's workspace,
    which must be on the shared volume, like the data. A ValueError names what does not fit.
    """
    shared = PurePosixPath(settings.K8S_SHARED_PATH.get(environ))
    root = Path(workspace_root).resolve()
    for what, path in (("the run workspace (RN50_WORKSPACE_ROOT)", workspace_root), ("data_dir", data_dir)):
        if not PurePosixPath(Path(path).resolve()).is_relative_to(shared):
            raise ValueError(f"launcher=kubernetes: {what} {path} is not on the shared volume "
                             f"RN50_K8S_SHARED_PATH={shared}, which the training pods mount")
    workers, gpus = split_gpus(num_gpus, gpus_per_node)
    image = settings.TRAINER_IMAGE.get(environ)
    # The image too: `rn50 train` records the image it ran in (config.json), which check_changes compares.
    env = {"RN50_WORKSPACE_ROOT": str(root), "TF_CPP_MIN_LOG_LEVEL": "2", settings.TRAINER_IMAGE.name: image}
    if ngc := settings.NGC_CHECKPOINT.get(environ):  # --init-from ngc imports it in the pods (a path on the
        env[settings.NGC_CHECKPOINT.name] = ngc     # shared volume or an s3:// URI), into the shared cache
    command = ["rn50", "train", "--run-id", run_id, "--workspace-root", str(root), "--data-dir", str(data_dir),
               "--profile", profile, "--np", str(num_gpus), "--hostfile", HOSTFILE, *train_flags(**overrides)]
    return render_mpijob(MPIJobSpec(
        name=job_name(run_id), namespace=settings.K8S_NAMESPACE.get(environ),
        image=image, launcher_command=command, workers=workers, gpus_per_worker=gpus,
        shared_claim=settings.K8S_SHARED_CLAIM.get(environ), shared_path=str(shared),
        env=env, annotations={"rn50/run-id": run_id},
        service_account=settings.K8S_SERVICE_ACCOUNT.get(environ) or None,
        cpus_per_gpu=settings.K8S_CPUS_PER_GPU.get(environ),
        memory_per_gpu_gib=settings.K8S_MEMORY_PER_GPU_GIB.get(environ),
    ))


def job_state(obj: Mapping[str, Any]) -> tuple[str, str]:
    """('pending'|'running'|'succeeded'|'failed'|'suspended', why) from the job's status conditions."""
    conditions = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []
                  if str(c.get("status")) == "True"}
    for kind in ("Failed", "Succeeded", "Suspended", "Running"):
        if kind in conditions:
            c = conditions[kind]
            why = ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
            return kind.lower(), why
    return "pending", "waiting for the pods to be scheduled"


def _not_found(exc: BaseException) -> bool:
    return getattr(exc, "status", None) == 404  # kubernetes.client.ApiException, without importing it


def _get(api: CustomObjects, name: str, namespace: str) -> Mapping[str, Any] | None:
    try:
        return api.get_custom_object(GROUP, VERSION, PLURAL, name, namespace)
    except Exception as exc:
        if _not_found(exc):
            return None
        raise


def _delete(api: CustomObjects, name: str, namespace: str) -> None:
    try:
        # Foreground: the pods get SIGTERM (and save a checkpoint) before the job object is gone.
        api.delete_custom_object(GROUP, VERSION, PLURAL, name, namespace, propagation_policy="Foreground")
    except Exception as exc:
        if not _not_found(exc):
            raise


class MPIJobRun:
    """One training job's lifecycle, as an Airflow operator keeps one: `run()` submits the job (or adopts the
    one an earlier try left) and waits until it ends, `on_kill()` deletes it.

    A job that already succeeded is not run again. A failed one is deleted and submitted afresh: its
    ranks resume from the checkpoint on the shared volume. If the wait is interrupted (Airflow's
    timeout, a task marked failed) `run()` calls `on_kill()` itself, so no GPUs keep training for nobody.
    """

    def __init__(self, api: CustomObjects, body: Mapping[str, Any], *, poll_s: float = 30,
                 gone_timeout_s: float = 600, log: Callable[[str], None] = print,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.api, self.body, self.poll_s, self.gone_timeout_s = api, body, poll_s, gone_timeout_s
        self.log, self.sleep = log, sleep
        self.name, self.namespace = body["metadata"]["name"], body["metadata"]["namespace"]
        self.ref = f"MPIJob {self.namespace}/{self.name}"

    def run(self) -> Mapping[str, Any]:
        """The job's object once it succeeded; MPIJobFailed when it failed or vanished."""
        existing = self._adopt()
        if existing is not None:
            return existing
        last = None
        try:
            while True:
                obj = _get(self.api, self.name, self.namespace)
                if obj is None:
                    raise MPIJobFailed(f"{self.ref} disappeared while running (deleted by someone else?)")
                state, why = job_state(obj)
                if state != last:
                    self.log(f"{self.ref}: {state}" + (f" ({why})" if why else ""))
                    last = state
                if state == "succeeded":
                    return obj
                if state == "failed":
                    raise MPIJobFailed(f"{self.ref} failed: {why or 'no reason given'}; the launcher's log: "
                                       f"kubectl -n {self.namespace} logs job/{self.name}-launcher")
                self.sleep(self.poll_s)
        except MPIJobFailed:
            raise
        except BaseException:
            self.on_kill()
            raise

    def on_kill(self) -> None:
        """Delete the job: its pods get SIGTERM, so the ranks checkpoint and free their GPUs."""
        self.log(f"{self.ref}: stopped while waiting; deleting the job so its ranks checkpoint and free their GPUs")
        _delete(self.api, self.name, self.namespace)

    def _adopt(self) -> Mapping[str, Any] | None:
        """Submit the job unless an earlier try's is there: that one's object if it succeeded, else None
        (a running one is waited for, a failed one replaced)."""
        existing = _get(self.api, self.name, self.namespace)
        if existing is not None:
            state, why = job_state(existing)
            if state == "succeeded":
                self.log(f"{self.ref} already succeeded; not training again")
                return existing
            if state != "failed":
                self.log(f"{self.ref} is {state} from an earlier try; waiting for it")
                return None
            self.log(f"{self.ref} failed before ({why}); deleting it to start again from the last checkpoint")
            _delete(self.api, self.name, self.namespace)
            waited = 0.0
            while _get(self.api, self.name, self.namespace) is not None:
                if waited >= self.gone_timeout_s:
                    raise MPIJobFailed(f"{self.ref} still exists {self.gone_timeout_s:.0f} s after it was deleted")
                self.sleep(self.poll_s)
                waited += self.poll_s
        self.api.create_custom_object(GROUP, VERSION, PLURAL, dict(self.body), self.namespace)
        workers = self.body["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"]
        self.log(f"{self.ref} submitted: {workers} worker(s) x {self.body['spec']['slotsPerWorker']} GPU(s)")
        return None


def run_mpijob(api: CustomObjects, body: Mapping[str, Any], *, poll_s: float = 30, gone_timeout_s: float = 600,
               log: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep) -> Mapping[str, Any]:
    """Submit the job (or adopt an earlier try's), wait until it ends, and delete it if the wait is stopped
    (MPIJobRun)."""
    return MPIJobRun(api, body, poll_s=poll_s, gone_timeout_s=gone_timeout_s, log=log, sleep=sleep).run()
