"""The deployment's policy for a run's hosts and GPUs (pipeline.stages.policy), as the DAG's fetch_data checks
it before any work and train before it trains: a run that breaks it fails for good."""

from __future__ import annotations

from pipeline.stages import policy
from tasks.common import final_failures


def check_run_hosts(hosts: str | None) -> None:
    with final_failures():
        policy.check_run_hosts(hosts)


def check_run_gpus(num_gpus: int, launcher: str, reserved: int) -> None:
    with final_failures():
        policy.check_run_gpus(num_gpus, launcher, reserved)
