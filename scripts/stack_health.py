"""Is the `make stack` up? The api-server's health report, a Celery reply from each worker, its processes.

Run by scripts/stack.sh with the stack's environment and its Airflow environment's Python (the Celery
app of the Airflow Celery provider names the broker):

    stack_health.py WAIT_S PID_DIR NODE=QUEUE...

Waits up to WAIT_S seconds until the api-server reports the metadata DB, scheduler, triggerer and
dag-processor healthy and every Celery node NODE answers, consuming QUEUE. Exits 1 at once when one of
the processes recorded in PID_DIR has exited (its log says why), or with what is still unhealthy at the
deadline.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

PARTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def exited(pid_dir: Path) -> list[str]:
    """The stack's processes that no longer run (each NAME.pid holds "pid start-time boot-id", as in /proc;
    this start wrote them, so in this boot)."""
    gone = []
    for pid_file in sorted(pid_dir.glob("*.pid")):
        pid, start, _boot = pid_file.read_text().split()
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            stat = ""
        # After the command's name, which may hold spaces: the state, and the start time 19 fields on.
        fields = stat.rpartition(") ")[2].split()
        if fields[19:20] != [start] or fields[0] == "Z":
            gone.append(pid_file.stem)
    return gone


def api_problems(url: str) -> list[str]:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            health = json.load(response)
    except (OSError, ValueError) as exc:
        return [f"api-server: {exc}"]
    return [f"{part}: {(health.get(part) or {}).get('status')}" for part in PARTS
            if (health.get(part) or {}).get("status") != "healthy"]


def worker_problems(nodes: dict[str, str]) -> list[str]:
    # Imported late: it reads the broker URL from the stack's environment, and takes seconds.
    from airflow.providers.celery.executors.celery_executor import app

    replies = app.control.inspect(destination=list(nodes), timeout=2).active_queues() or {}
    problems = []
    for node, queue in nodes.items():
        queues = [q["name"] for q in replies.get(node, [])]
        if node not in replies:
            problems.append(f"{node}: no reply")
        elif queue not in queues:
            problems.append(f"{node}: consumes {queues}, not {queue}")
    return problems


def main(argv: list[str]) -> int:
    wait_s, pid_dir, *node_args = argv
    nodes = dict(arg.split("=", 1) for arg in node_args)
    url = f"http://127.0.0.1:{os.environ['AIRFLOW__API__PORT']}/api/v2/monitor/health"
    deadline = time.monotonic() + float(wait_s)
    while True:
        gone = exited(Path(pid_dir))
        if gone:
            print(f"stack: {', '.join(gone)} exited; see its log in {Path(pid_dir).parent / 'logs'}", file=sys.stderr)
            return 1
        problems = api_problems(url)
        if not problems:
            problems = worker_problems(nodes)
        if not problems:
            return 0
        if time.monotonic() > deadline:
            print(f"stack: not healthy after {wait_s} s: {'; '.join(problems)}", file=sys.stderr)
            return 1
        time.sleep(2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
