"""The deployment's policy for a run's hosts and GPUs: what a run's Params may ask for.

Checked twice by the DAG: by fetch_data, so a run that breaks it fails before any work, and by train,
which uses them. A refusal is final (pipeline.errors.Refused): the same Params are refused again.
"""

from __future__ import annotations

from pipeline.errors import Refused
from pipeline.train.launch import check_hosts


def check_run_hosts(hosts: str | None) -> None:
    """The hosts a run names (its `hosts` Param): refused unless the deployment allows them."""
    if hosts:
        try:
            check_hosts(hosts)
        except ValueError as exc:
            raise Refused(str(exc)) from exc


def check_run_gpus(num_gpus: int, launcher: str, reserved: int) -> None:
    """A run's GPUs (its num_gpus and launcher Params) against the `gpu` pool slots its train task reserves.

    The slots are the deployment's (RN50_NUM_GPUS, RN50_LAUNCHER), fixed when the DAG is parsed: a run
    using more GPUs than it reserves would share them with another task, fewer would leave them idle.
    launcher=kubernetes uses none of the gpu worker's GPUs: the cluster schedules the MPIJob's.
    """
    if launcher != "local":
        return
    if not reserved:
        raise Refused("launcher=local but this deployment trains on Kubernetes and reserves no GPU slot "
                      "for training (RN50_LAUNCHER=kubernetes); trigger with launcher=kubernetes")
    if num_gpus != reserved:
        slots = f"{reserved} GPU slot{'s' if reserved != 1 else ''}"
        raise Refused(f"num_gpus={num_gpus} but this deployment reserves {slots} per training run "
                      f"(RN50_NUM_GPUS={reserved}); trigger with num_gpus={reserved}, or set RN50_NUM_GPUS "
                      "(and the gpu pool's size) for the deployment")
