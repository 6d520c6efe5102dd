"""Benchmark: how long the dag-processor takes to parse dags/, against a trivial DAG of the same shape.

Each parse runs in a fresh interpreter, as the dag-processor's are: Airflow's DagBag is imported first
(not timed), then `DagBag(dag_folder)` is timed, so the figure is what our DAG file costs: its imports
and its construction. The baseline is a DAG file with six chained @task functions and nothing else,
parsed the same way in the same run, interleaved with ours (these machines are noisy, so only the
ratio against a baseline from the same run means much). Printed, over --repeat runs of each:
  ours       seconds to parse dags/ (median and best)
  baseline   seconds to parse the trivial DAG (median and best)
  ratio      ours / baseline, the median of the runs' own ratios (each run parses both back to back)
Airflow gives a DAG file `core.dagbag_import_timeout` (30 s by default) before it fails the import.
tests/test_dag.py checks what parsing must not import (TensorFlow, boto3, ...); this measures the time.

    .venv/bin/python bench/dag_parse.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PARSE = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "dags": sorted(bag.dag_ids)}))
"""

TRIVIAL_DAG = '''
from airflow.sdk import dag, task


@dag(dag_id="trivial", schedule=None, catchup=False)
def trivial():
    steps = [task(task_id=name)(lambda: None)() for name in
             ("fetch_data", "validate_data", "train", "evaluate", "check_accuracy", "publish")]
    for before, after in zip(steps, steps[1:]):
        before >> after


trivial()
'''


def parse_seconds(folder: Path, home: Path) -> float:
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", PARSE, str(folder)], capture_output=True, text=True, env=env,
                            timeout=300, check=True)
    got = json.loads(result.stdout.strip().splitlines()[-1])
    if got["errors"] or len(got["dags"]) != 1:
        raise SystemExit(f"bench/dag_parse.py: {folder} did not parse to one DAG: {got}")
    return got["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"ours": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp:
        home, trivial = Path(tmp) / "airflow-home", Path(tmp) / "trivial"
        home.mkdir()
        trivial.mkdir()
        (trivial / "trivial.py").write_text(TRIVIAL_DAG)
        parse_seconds(trivial, home)  # untimed: Airflow's first start in a new home writes its config
        for run in range(args.repeat):
            times["baseline"].append(parse_seconds(trivial, home))
            times["ours"].append(parse_seconds(REPO / "dags", home))
            print(f"run {run + 1}: ours {times['ours'][-1]:.3f} s  baseline {times['baseline'][-1]:.3f} s", flush=True)
    for name, label in (("ours", "dags/"), ("baseline", "trivial DAG")):
        print(f"{name:9} {label:12} median {statistics.median(times[name]):.3f} s, best {min(times[name]):.3f} s")
    ratios = [o / b for o, b in zip(times["ours"], times["baseline"], strict=True)]
    print(f"ratio     ours / baseline = {statistics.median(ratios):.2f} (median of "
          + ", ".join(f"{r:.2f}" for r in sorted(ratios)) + ")")


if __name__ == "__main__":
    main()
