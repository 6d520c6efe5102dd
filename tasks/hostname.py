"""The hostname a task instance records: which worker ran it (Airflow's `[core] hostname_callable`).

In containers (docker/compose.yaml) each worker has a hostname of its own. `make stack` runs both
Celery workers on one machine, so it names each with RN50_WORKER_NAME, and a task instance's hostname
says `<worker>.<machine>`.
"""

from __future__ import annotations

import socket

from pipeline import settings


def hostname() -> str:
    worker = settings.WORKER_NAME.get()
    return f"{worker}.{socket.gethostname()}" if worker else socket.getfqdn()
