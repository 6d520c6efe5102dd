"""Every `RN50_*` setting the Python code reads: its name, type, default and meaning, in one table.

A deployment sets these in the environment of its Airflow processes and workers (docker/compose.yaml,
docker/k8s/, `make airflow`); a run's trigger form overrides some of them for that run only. Code reads a
setting with `PROFILE.get()`, never with `os.environ` (reads of the environment elsewhere only pass it on
to child processes). The README's settings table lists exactly these names and defaults
(tests/test_settings.py), and `rn50 settings` prints what this machine resolves them to.

This module imports nothing heavy: the DAG file reads it while it parses.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from pipeline.recipe import PROFILES

T = TypeVar("T")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# local: horovodrun on the gpu worker; kubernetes: an MPIJob (docker/k8s/).
LAUNCHERS = ("local", "kubernetes")


class SettingError(ValueError):
    """A setting's value does not parse; the message names the variable and the value."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # NaN fails too
        raise ValueError("must be a number >= 0")
    return value


def _one_of(choices: Iterable[str]) -> Callable[[str], str]:
    names = tuple(choices)

    def parse(text: str) -> str:
        if text not in names:
            raise ValueError(f"choose one of {', '.join(names)}")
        return text

    return parse


def _flag(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError("choose true or false")


# A code version goes into manifests and log lines as it is: a commit, a tag or a release, nothing else.
_CODE_VERSION = re.compile(r"[0-9A-Za-z._+-]{1,64}")


def _code_version(text: str) -> str:
    if not _CODE_VERSION.fullmatch(text):
        raise ValueError("must be 1-64 of the characters 0-9 A-Z a-z . _ + - (e.g. `git rev-parse HEAD`)")
    return text


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


@dataclass(frozen=True)
class Setting(Generic[T]):
    name: str
    default: T
    help: str
    parse: Callable[[str], T] = str  # type: ignore[assignment]
    shown: str | None = None  # the default as the README shows it, when repr would not say it

    def get(self, environ: Mapping[str, str] = os.environ) -> T:
        """The value in `environ`; unset or empty means the default."""
        raw = environ.get(self.name, "").strip()
        if not raw:
            return self.default
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise SettingError(f"{self.name}={raw!r}: {exc}") from None

    @property
    def default_text(self) -> str:
        if self.shown is not None:
            return self.shown
        if isinstance(self.default, tuple):
            return ",".join(self.default)
        return str(self.default)


# What a run does (the trigger form's defaults come from these).
PROFILE = Setting("RN50_PROFILE", "ngc-90e", "the training recipe of scheduled runs and the form's default",
                  _one_of(PROFILES))
SCHEDULE = Setting("RN50_SCHEDULE", "@monthly",
                   "a cron preset or expression, or `none` for triggered runs only")
NUM_GPUS = Setting("RN50_NUM_GPUS", 1, "GPUs per run: ranks, and `gpu` pool slots the train task takes",
                   _positive_int)
LAUNCHER = Setting("RN50_LAUNCHER", "local", "`local` (horovodrun on the gpu worker) or `kubernetes` (an MPIJob)",
                   _one_of(LAUNCHERS))
GPUS_PER_NODE = Setting("RN50_GPUS_PER_NODE", 8, "GPUs per MPIJob worker", _positive_int)
ALLOWED_HOSTS = Setting("RN50_ALLOWED_HOSTS", (), "hosts other than localhost a run may train on, comma-separated",
                        _names, "(none)")
TRAIN_TIMEOUT_HOURS = Setting("RN50_TRAIN_TIMEOUT_HOURS", 72.0,
                              "the train task's timeout; on it the trainer saves a checkpoint", _non_negative_float,
                              "72")
DRIFT_FAIL = Setting("RN50_DRIFT_FAIL", False, "data drift against the champion's data (pipeline/data/drift.py) "
                     "fails validate_data instead of warning", _flag, "false")

# Where things are.
BUCKET = Setting("RN50_BUCKET", "rn50-artifacts", "the bucket versions are published to")
PREFIX = Setting("RN50_PREFIX", "models", "the key prefix: versions are `s3://BUCKET/PREFIX/resnet50/vNNNN/`")
AWS_CONN_ID = Setting("RN50_AWS_CONN_ID", "aws_default",
                      "the Airflow connection for S3; when undefined, the standard `AWS_*` environment")
WORKSPACE_ROOT = Setting("RN50_WORKSPACE_ROOT", PROJECT_ROOT / "runs" / "workspaces",
                         "where run workspaces and the shared DVC cache live", Path, "runs/workspaces")
RETENTION_DAYS = Setting("RN50_RETENTION_DAYS", 30.0,
                         "idle workspaces older than this are removed (`0` keeps them)", _non_negative_float, "30")
REPO = Setting("RN50_REPO", PROJECT_ROOT, "the git repo whose `data.dvc` fetch_data pulls", Path, "this checkout")
DVC_REPO: Setting[Path | None] = Setting("RN50_DVC_REPO", None,
                                         "the registry repo publish commits the DVC pointer to", Path, "(none)")
NGC_CHECKPOINT: Setting[str | None] = Setting(
    "RN50_NGC_CHECKPOINT", None,
    "NVIDIA's unzipped NGC checkpoint (a path or an `s3://` URI): the gate's live baseline and what "
    "`--init-from ngc` starts from",
    shown="(none)")
CODE_VERSION: Setting[str | None] = Setting(
    "RN50_CODE_VERSION", None,
    "the code version of an installed copy without git (an image: `--build-arg`, docker/); a git checkout's "
    "own commit wins", _code_version, "(none)")
WORKER_NAME: Setting[str | None] = Setting("RN50_WORKER_NAME", None,
                                           "names a Celery worker in task instances' hostname (`make stack`)",
                                           shown="(none)")

# Training on Kubernetes (launcher=kubernetes; docker/k8s/).
K8S_CONN_ID = Setting("RN50_K8S_CONN_ID", "kubernetes_default", "the Airflow connection to the cluster")
K8S_NAMESPACE = Setting("RN50_K8S_NAMESPACE", "rn50", "the namespace MPIJobs run in")
TRAINER_IMAGE = Setting("RN50_TRAINER_IMAGE", "rn50-trainer:0.1.0",
                        "the image of the MPIJob's pods; where set, the image `rn50 train` records it runs in")
K8S_SHARED_CLAIM = Setting("RN50_K8S_SHARED_CLAIM", "rn50-shared",
                           "the ReadWriteMany claim holding workspaces and data")
K8S_SHARED_PATH = Setting("RN50_K8S_SHARED_PATH", "/shared", "where that claim is mounted, on Airflow and the pods")
K8S_SERVICE_ACCOUNT = Setting("RN50_K8S_SERVICE_ACCOUNT", "rn50-trainer", "the pods' service account")
K8S_CPUS_PER_GPU = Setting("RN50_K8S_CPUS_PER_GPU", 8, "CPU request per GPU", _positive_int)
K8S_MEMORY_PER_GPU_GIB = Setting("RN50_K8S_MEMORY_PER_GPU_GIB", 48, "memory request per GPU, GiB", _positive_int)
K8S_POLL_S = Setting("RN50_K8S_POLL_S", 30.0, "how often the train task polls the MPIJob, seconds",
                     _non_negative_float, "30")

SETTINGS: tuple[Setting, ...] = tuple(value for value in globals().values() if isinstance(value, Setting))


def resolved(environ: Mapping[str, str] = os.environ) -> dict[str, object]:
    """Every setting's value here, by name (an unparsable one raises SettingError naming it)."""
    return {setting.name: setting.get(environ) for setting in SETTINGS}
