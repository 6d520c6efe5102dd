"""What every task adapter shares: the run workspace, the failure kinds as Airflow's, skips and stage timing.

The Airflow connections (S3, Kubernetes) are in tasks.connections.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.errors import is_final
from pipeline.workspace import RunWorkspace, default_root


def workspace_root() -> Path:
    return default_root()


def workspace(run_id: str, root: str | Path | None = None) -> RunWorkspace:
    return RunWorkspace(Path(root) if root else workspace_root(), run_id).create()


def data_record(ws: RunWorkspace) -> dict[str, Any] | None:
    """What fetch_data recorded of the run's data (data.json: its dataset version and where it was); None
    when fetch_data did not run. A planted link is refused: what it says goes into the manifest."""
    from pipeline.files import read_json

    try:
        return read_json(ws.data_record)
    except FileNotFoundError:
        return None


@contextmanager
def timed(ws: RunWorkspace, stage: str, gpus: int = 0) -> Iterator[RunWorkspace]:
    """Record the stage's wall time and GPUs in the run's cost (pipeline.cost), whether it succeeds or fails:
    a failed attempt kept its GPUs busy too."""
    from pipeline.cost import record_stage

    started, clock = time.time(), time.perf_counter()
    try:
        yield ws
    finally:
        try:
            record_stage(ws.path, stage, time.perf_counter() - clock, gpus, started=started)
        except OSError as exc:  # a full disk costs the report its figure, never the stage its result
            print(f"warning: the cost of {stage} was not recorded: {exc}")


@contextmanager
def final_failures(*refusals: type[Exception]) -> Iterator[None]:
    """The one place a failure's kind (pipeline.errors) becomes Airflow's: a Refused or Failed, and any of
    `refusals` (a library's own error, where that is how it refuses, such as a ValueError for a bad
    Param), fails the task for good (AirflowFailException, same message); anything else propagates, and
    Airflow retries it. Outside Airflow the error stays as it is."""
    try:
        yield
    except Exception as exc:
        fail = _airflow_fail()
        if fail is None or not (is_final(exc) or isinstance(exc, refusals)):
            raise
        raise fail(str(exc)) from exc


def _airflow_fail() -> type[Exception] | None:
    try:
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:
        return None
    return AirflowFailException


def skip(reason: str) -> BaseException:
    from airflow.sdk.exceptions import AirflowSkipException

    return AirflowSkipException(reason)
