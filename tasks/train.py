"""train: the run's model/, trained by `rn50 train` in a child process (horovodrun for several GPUs) or as an
MPIJob on Kubernetes (pipeline.stages.train supervises either).

The stage reads a failed trainer's kind from its exit code (a retry could not help, or it may), and
tasks.common.final_failures makes that Airflow's final or retried failure; a retry resumes from the
checkpoint. The cluster is the Airflow connection's (tasks.connections.kubernetes_api).
"""

from __future__ import annotations

from typing import Any

from pipeline import settings
from pipeline.errors import Refused
from pipeline.stages import train as stage
from pipeline.workspace import RunWorkspace
from tasks import connections
from tasks.common import final_failures


def init_source(ws: RunWorkspace, init_from: str | None, *, client: Any = None, bucket: str | None = None,
                prefix: str = settings.PREFIX.default) -> str | None:
    """What `rn50 train --init-from` gets: init_from, except that `champion` is the run's snapshot of it
    (pipeline.stages.train.run_init_from)."""
    with final_failures():
        return stage.run_init_from(ws, init_from, client=client, bucket=bucket, prefix=prefix)


def run(ws: RunWorkspace, *, data_dir: str, profile: str, launcher: str = "local", gpus_per_node: int = 8,
        client: Any = None, bucket: str | None = None, prefix: str = settings.PREFIX.default,
        **options: Any) -> dict[str, Any]:
    """Train in this machine's processes (launcher=local) or as an MPIJob on Kubernetes."""
    if "init_from" in options:
        options["init_from"] = init_source(ws, options["init_from"], client=client, bucket=bucket, prefix=prefix)
    with final_failures():
        if launcher == "kubernetes":
            return stage.train_on_kubernetes(ws, connections.kubernetes_api, data_dir=data_dir, profile=profile,
                                             gpus_per_node=gpus_per_node, **options)
        if launcher != "local":
            raise Refused(f"launcher must be local or kubernetes, not {launcher!r}")
        return stage.train_locally(ws, data_dir=data_dir, profile=profile, **options)
