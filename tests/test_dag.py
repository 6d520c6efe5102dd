"""The `resnet50_retrain` DAG: it parses without heavy imports (bench/dag_parse.py times the parse), and its
wiring is what the design says."""

from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DAGS = REPO / "dags"


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(REPO), **extra}


def test_dagbag_imports_without_heavy_libraries(tmp_path):
    # A fresh interpreter, as the dag-processor has: what the DAG file imports is what gets counted.
    code = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
heavy = [m for m in ("tensorflow", "keras", "great_expectations", "boto3", "horovod", "pandas", "kubernetes")
         if m in sys.modules]
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dag_ids),
                  "heavy": heavy}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code, str(DAGS)], capture_output=True, text=True, timeout=120,
        env=_env(AIRFLOW_HOME=str(tmp_path)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["errors"] == {}
    assert got["dags"] == ["resnet50_retrain"]
    assert got["heavy"] == []



def test_schedule_and_run_policy(dag):
    assert dag.timetable.expression == "0 0 1 * *"  # @monthly
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.doc_md and "fetch_data" in dag.doc_md
    assert {"rn50", "training"} <= set(dag.tags)


def test_tasks_and_dependencies(dag):
    order = ["fetch_data", "validate_data", "train", "evaluate", "check_accuracy", "report", "publish"]
    assert sorted(dag.task_ids) == sorted([*order, "evaluate_baseline", "check_changes"])
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    assert dag.get_task("train").upstream_task_ids == {"fetch_data", "validate_data", "check_changes"}
    # check_changes may skip the run before any GPU is spent; validate_data runs beside it either way.
    assert dag.get_task("check_changes").upstream_task_ids == {"fetch_data"}
    assert dag.get_task("publish").upstream_task_ids == {"check_accuracy", "report", "train"}
    # The report waits for the gate, on the default queue (matplotlib, no TensorFlow) and no GPU pool.
    report = dag.get_task("report")
    assert report.upstream_task_ids == {"check_accuracy"}
    assert report.trigger_rule == "all_done"  # a failed gate's run has its report too (not published)
    assert (report.queue, report.pool) == ("default", "default_pool")
    # The baseline is measured beside training, on validated data, and the gate waits for it.
    assert dag.get_task("evaluate_baseline").upstream_task_ids == {"fetch_data", "validate_data", "check_changes"}
    assert dag.get_task("check_accuracy").upstream_task_ids == {"evaluate", "evaluate_baseline"}


def test_tasks_take_only_the_xcoms_they_use(dag):
    # The rest of the order is `>>` (ruff's ARG rules on dags/ refuse an XCom argument a task does not read).
    from airflow.sdk.definitions.xcom_arg import XComArg

    inputs = {t.task_id: sorted(op.task_id for op, _ in XComArg.iter_xcom_references(t.op_args))
              for t in dag.tasks}
    assert inputs == {"fetch_data": [], "validate_data": ["fetch_data"], "check_changes": [], "train": ["fetch_data"],
                      "evaluate": ["fetch_data"], "evaluate_baseline": ["fetch_data"], "check_accuracy": [],
                      "report": [], "publish": ["check_accuracy", "train"]}


def test_each_task_pushes_its_summary_once_as_return_value(dag):
    # Downstream tasks and the REST API (tests/test_stack_e2e.py) read `return_value`; no per-key copies.
    assert {t.task_id: t.multiple_outputs for t in dag.tasks} == dict.fromkeys(dag.task_ids, False)


def test_gpu_routing_retries_and_outlet(dag):
    train = dag.get_task("train")
    assert (train.pool, train.queue) == ("gpu", "gpu")
    assert train.execution_timeout == timedelta(hours=72)
    assert train.retries == 2 and train.retry_exponential_backoff
    for name in ("evaluate", "evaluate_baseline"):  # TensorFlow's tasks: the gpu worker, one slot each
        assert (dag.get_task(name).pool, dag.get_task(name).queue, dag.get_task(name).pool_slots) == ("gpu", "gpu", 1)
    # Bad data and a failed gate are final: no retry.
    assert dag.get_task("validate_data").retries == 0
    assert dag.get_task("check_accuracy").retries == 0
    assert dag.get_task("fetch_data").retries == 2
    for task in dag.tasks:
        assert task.on_failure_callback, task.task_id
    outlets = dag.get_task("publish").outlets
    assert [o.name for o in outlets] == ["resnet50_model"]


def test_params_have_titles_descriptions_and_schemas(dag):
    from pipeline.recipe import PROFILES

    params = dag.params
    expected = {"profile", "data_rev", "data_dir", "epochs", "steps", "batch_size", "num_gpus", "hosts", "amp",
                "xla", "launcher", "gpus_per_node", "gate_tolerance", "force_publish", "force_reason", "publish",
                "bucket", "prefix", "init_from", "force_retrain"}
    assert set(params.keys()) == expected
    for name in expected:
        param = params.get_param(name)
        assert param.schema.get("title") and param.description, name
    assert params["profile"] == "ngc-90e"  # a scheduled run trains the production recipe
    assert params["init_from"] == "scratch"  # ... from random weights, unless a run asks for a warm start
    assert params.get_param("profile").schema["enum"] == ["ngc-90e", "ngc-250e", "smoke", "finetune"] == list(PROFILES)
    assert params.get_param("launcher").schema["enum"] == ["local", "kubernetes"]
    assert params["publish"] is True and params["force_publish"] is False
    assert params["force_retrain"] is False  # an unchanged run is skipped unless the trigger forces it
    assert params["launcher"] == "local" and params["gpus_per_node"] == 8


def test_the_trigger_form_groups_its_params(dag):
    # The UI opens the form on the Params without a section and folds each section under its title, in the order
    # the sections first appear.
    sections: dict[str | None, list[str]] = {}
    for name in dag.params:
        sections.setdefault(dag.params.get_param(name).schema.get("section"), []).append(name)
    assert list(sections.items()) == [
        (None, ["profile", "data_rev", "data_dir"]),
        ("Training overrides", ["epochs", "steps", "batch_size", "amp", "xla", "init_from", "force_retrain"]),
        ("Gate", ["gate_tolerance", "force_publish", "force_reason"]),
        ("Where to publish", ["publish", "bucket", "prefix"]),
        ("GPUs and hosts", ["num_gpus", "launcher", "gpus_per_node", "hosts"]),
    ]


@pytest.mark.parametrize(
    ("name", "bad"),
    [("profile", "ngc-9e"), ("num_gpus", 0), ("epochs", -1), ("gate_tolerance", -0.1), ("bucket", "UPPER_case"),
     ("hosts", "node1:8;rm -rf /"), ("batch_size", "big"), ("launcher", "slurm"), ("gpus_per_node", 0),
     ("gate_tolerance", 2.5), ("gate_tolerance", 100), ("prefix", ""), ("prefix", "/models"), ("prefix", "models/"),
     ("prefix", "../models"), ("prefix", "models/../other"), ("prefix", "a//b")],
)
def test_the_trigger_form_rejects_bad_values(dag, name, bad):
    from airflow.sdk.exceptions import ParamValidationError

    param = dag.params.get_param(name)
    with pytest.raises(ParamValidationError):
        param.resolve(bad)


def test_the_gate_and_registry_params_take_their_rules_from_the_library(dag):
    from pipeline.contracts.registry import PREFIX_PATTERN
    from pipeline.gate import DEFAULT_TOLERANCE, MAX_TOLERANCE

    tolerance, prefix = dag.params.get_param("gate_tolerance"), dag.params.get_param("prefix")
    assert (tolerance.value, tolerance.schema["maximum"]) == (DEFAULT_TOLERANCE, MAX_TOLERANCE)
    assert prefix.schema["pattern"] == PREFIX_PATTERN
    assert tolerance.resolve(MAX_TOLERANCE) == MAX_TOLERANCE
    assert prefix.resolve("team-a/models.v2") == "team-a/models.v2"


def test_defaults_come_from_the_deployment_environment(tmp_path):
    code = "import dags.resnet50_retrain as d; print(d.resnet50_retrain().params['profile'])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
        env=_env(AIRFLOW_HOME=str(tmp_path), RN50_PROFILE="smoke"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "smoke"


@pytest.mark.parametrize(("name", "value", "error"), [
    ("RN50_PROFILE", "ngc-90", "RN50_PROFILE='ngc-90': choose one of ngc-90e, ngc-250e, smoke, finetune"),
    ("RN50_LAUNCHER", "slurm", "RN50_LAUNCHER='slurm': choose one of local, kubernetes"),
    ("RN50_NUM_GPUS", "zero", "RN50_NUM_GPUS='zero': invalid literal for int() with base 10: 'zero'"),
])
def test_a_bad_deployment_setting_names_itself_in_the_import_error(dag, monkeypatch, name, value, error):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv(name, value)
    bag = DagBag(dag_folder=str(DAGS))
    [message] = bag.import_errors.values()
    assert message.rstrip().splitlines()[-1] == f"pipeline.settings.SettingError: {error}"


class _FailedTI:
    """What a failure callback's context holds of the task instance (Airflow's RuntimeTaskInstance)."""

    dag_id, task_id, run_id, try_number = "resnet50_retrain", "validate_data", "manual__2026-11-28T10:00:00+00:00", 1
    log_url = "http://airflow.example/dags/resnet50_retrain/runs/manual__2026-11-28T10%3A00%3A00%2B00%3A00/tasks/validate_data?try_number=1"


def test_the_failure_notifier_writes_the_task_log_and_one_json_line_per_failure(dag, tmp_path, monkeypatch, caplog):
    from tasks.notify import FailureNotifier

    monkeypatch.setenv("RN50_WORKSPACE_ROOT", str(tmp_path))
    callbacks = [t.on_failure_callback for t in dag.tasks]
    assert all(len(c) == 1 and isinstance(c[0], FailureNotifier) for c in callbacks), callbacks
    notifier = callbacks[0][0]
    context = {"dag": dag, "ti": _FailedTI(), "task_instance": _FailedTI(), "run_id": _FailedTI.run_id,
               "exception": ValueError("labels.range: 3 records\n  shard train-00001: label 1001")}
    with caplog.at_level("ERROR", logger="rn50.failure"):
        notifier(context)
    report = f"{tmp_path}/manual__2026-11-28T10~3A00~3A00~2B00~3A00/validation/report.json"
    summary = (f"resnet50_retrain: task validate_data failed (try 1) in run {_FailedTI.run_id}: ValueError: "
               f"labels.range: 3 records; see {report}")
    assert [r.getMessage() for r in caplog.records] == [summary]  # the task log's line
    notifier({**context, "exception": None})
    first, second = map(json.loads, (tmp_path / ".failures.jsonl").read_text().splitlines())
    assert {k: v for k, v in first.items() if k != "time"} == {
        "dag_id": "resnet50_retrain", "run_id": _FailedTI.run_id, "task_id": "validate_data", "try_number": 1,
        "error": "ValueError: labels.range: 3 records", "log_url": _FailedTI.log_url, "summary": summary,
        "report": report,
    }
    assert second["error"] == "unknown" and second["task_id"] == "validate_data"


def test_the_failure_notifier_bounds_the_error_and_writes_where_it_is_told(tmp_path):
    from tasks.notify import MAX_ERROR_CHARS, FailureNotifier

    target = tmp_path / "alerts" / "rn50.jsonl"
    FailureNotifier(target)({"ti": _FailedTI(), "exception": RuntimeError("x" * 10_000)})
    [record] = map(json.loads, target.read_text().splitlines())
    assert len(record["error"]) == MAX_ERROR_CHARS and record["error"].startswith("RuntimeError: xxx")
    assert record["run_id"] == _FailedTI.run_id  # from the task instance when the context has none


def test_the_failure_log_takes_records_after_a_run_named_like_it(tmp_path, monkeypatch):
    # Airflow accepts `failures.jsonl` as a run id: its workspace was the failure log's path, and every
    # later failure's append raised IsADirectoryError (the alert lost).
    from pipeline.workspace import RunWorkspace
    from tasks.notify import FailureNotifier

    monkeypatch.setenv("RN50_WORKSPACE_ROOT", str(tmp_path))
    for run_id in ("failures.jsonl", ".failures.jsonl"):
        RunWorkspace(tmp_path, run_id).create()
    notifier = FailureNotifier()
    notifier({"ti": _FailedTI(), "exception": ValueError("labels.range: 3 records")})
    [record] = map(json.loads, notifier.failures_file().read_text().splitlines())
    assert record["error"] == "ValueError: labels.range: 3 records"


def test_the_failure_log_of_earlier_versions_moves_out_of_the_way_of_a_run_named_like_it(tmp_path, monkeypatch):
    # Earlier versions appended to failures.jsonl, a name a run id maps to: the first failure after the
    # upgrade carries its records on in the new log, and a run of that name then gets its workspace.
    from pipeline.workspace import RunWorkspace
    from tasks.notify import FailureNotifier

    monkeypatch.setenv("RN50_WORKSPACE_ROOT", str(tmp_path))
    (tmp_path / "failures.jsonl").write_text('{"summary": "before the upgrade"}\n')
    notifier = FailureNotifier()
    assert notifier.failures_file() != tmp_path / "failures.jsonl"
    notifier({"ti": _FailedTI(), "exception": ValueError("boom")})
    old, new = map(json.loads, notifier.failures_file().read_text().splitlines())
    assert old == {"summary": "before the upgrade"} and new["error"] == "ValueError: boom"
    assert RunWorkspace(tmp_path, "failures.jsonl").create().path.is_dir()
    # Once the new log exists, a file of the old name (an earlier version's worker still writing) is left.
    shutil.rmtree(tmp_path / "failures.jsonl")
    (tmp_path / "failures.jsonl").write_text('{"summary": "an old worker"}\n')
    notifier({"ti": _FailedTI(), "exception": ValueError("again")})
    assert len(notifier.failures_file().read_text().splitlines()) == 3
    assert (tmp_path / "failures.jsonl").read_text() == '{"summary": "an old worker"}\n'


@pytest.mark.slow
def test_airflow_calls_the_failure_notifier_when_a_task_fails_for_good(tmp_path):
    """A one-task DAG that fails, run by `airflow dags test`: the context Airflow passes has what the record needs."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "fails.py").write_text('''
from datetime import datetime
from airflow.sdk import dag, task
from tasks.notify import FailureNotifier

@dag(start_date=datetime(2026, 1, 1), schedule=None,
     default_args={"retries": 0, "on_failure_callback": FailureNotifier()})
def fails():
    @task
    def boom():
        raise ValueError("labels.range: 3 records")
    boom()

fails()
''')
    env = _env(AIRFLOW_HOME=str(tmp_path / "home"), AIRFLOW__CORE__DAGS_FOLDER=str(dags),
               AIRFLOW__API__BASE_URL="http://airflow.example:8080/", RN50_WORKSPACE_ROOT=str(tmp_path / "ws"))
    airflow = str(Path(sys.executable).parent / "airflow")
    results = [subprocess.run([airflow, *args], env=env, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL) for args in (["db", "migrate"], ["dags", "test", "fails"])]
    migrate, result = results
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
    assert "DagRun failed" in result.stdout + result.stderr, result.stdout[-2000:] + result.stderr[-2000:]
    [record] = map(json.loads, (tmp_path / "ws" / ".failures.jsonl").read_text().splitlines())
    run = record["run_id"]
    assert run.startswith("manual__") and (record["dag_id"], record["task_id"]) == ("fails", "boom")
    assert (record["try_number"], record["error"]) == (1, "ValueError: labels.range: 3 records")
    assert record["log_url"].startswith("http://airflow.example:8080/dags/fails/runs/manual__")
    assert record["log_url"].endswith("/tasks/boom?try_number=1")
    assert record["summary"] in result.stdout + result.stderr  # and the same line in the task's log


def test_fetch_data_removes_workspaces_idle_past_the_retention(dag, tmp_path, monkeypatch, sample_dir):
    from pipeline.workspace import RunWorkspace

    monkeypatch.setenv("RN50_WORKSPACE_ROOT", str(tmp_path))
    idle, recent = RunWorkspace(tmp_path, "manual__idle").create(), RunWorkspace(tmp_path, "manual__recent").create()
    idle.model.mkdir()
    (idle.model / "eval.json").write_text("{}")
    ten_years_ago = time.time() - 3650 * 86400
    for path in [*idle.path.rglob("*"), idle.path]:
        os.utime(path, (ten_years_ago, ten_years_ago))
    params = {**dag.params, "data_dir": str(sample_dir)}
    dag.get_task("fetch_data").python_callable(params=params, run_id="manual__now")
    assert not idle.path.exists()
    assert recent.path.is_dir() and RunWorkspace(tmp_path, "manual__now").path.is_dir()


# ---- the GPUs a run reserves are the GPUs it uses ----------------------------------------------------------


def _fetch_data(dag, tmp_path, monkeypatch, sample_dir, **conf):
    monkeypatch.setenv("RN50_WORKSPACE_ROOT", str(tmp_path / "runs"))
    params = copy.deepcopy(dag.params)
    params.update({"data_dir": str(sample_dir), **conf})
    return dag.get_task("fetch_data").python_callable(params=params.validate(), run_id="manual__gpus")


def test_evaluate_reserves_one_gpu_and_train_the_deployments(dag_parsed_with):
    four = dag_parsed_with(RN50_NUM_GPUS="4")
    assert (four.get_task("evaluate").pool, four.get_task("evaluate").pool_slots) == ("gpu", 1)
    assert (four.get_task("evaluate_baseline").pool, four.get_task("evaluate_baseline").pool_slots) == ("gpu", 1)
    assert (four.get_task("train").pool, four.get_task("train").pool_slots) == ("gpu", 4)
    assert four.params["num_gpus"] == 4  # the form's default is what is reserved
    on_k8s = dag_parsed_with(RN50_NUM_GPUS="4", RN50_LAUNCHER="kubernetes")
    assert on_k8s.get_task("train").pool != "gpu" and on_k8s.get_task("train").queue != "gpu"
    assert on_k8s.get_task("evaluate").pool_slots == on_k8s.get_task("evaluate_baseline").pool_slots == 1


def test_a_run_using_other_gpus_than_it_reserves_fails_in_fetch_data(dag_parsed_with, tmp_path, monkeypatch,
                                                                     sample_dir):
    from airflow.sdk.exceptions import AirflowFailException

    four = dag_parsed_with(RN50_NUM_GPUS="4")
    with pytest.raises(AirflowFailException) as refused:
        _fetch_data(four, tmp_path, monkeypatch, sample_dir, num_gpus=8)
    assert str(refused.value) == (
        "num_gpus=8 but this deployment reserves 4 GPU slots per training run (RN50_NUM_GPUS=4); trigger with "
        "num_gpus=4, or set RN50_NUM_GPUS (and the gpu pool's size) for the deployment")
    assert not (tmp_path / "runs").exists()  # refused before the run's workspace or any data

    on_k8s = dag_parsed_with(RN50_LAUNCHER="kubernetes")
    with pytest.raises(AirflowFailException, match=r"^launcher=local but this deployment trains on Kubernetes .*"
                       r"\(RN50_LAUNCHER=kubernetes\)"):
        _fetch_data(on_k8s, tmp_path, monkeypatch, sample_dir, launcher="local")
    assert not (tmp_path / "runs").exists()


def test_a_run_using_the_gpus_it_reserves_passes_the_check(dag_parsed_with, tmp_path, monkeypatch, sample_dir):
    four = dag_parsed_with(RN50_NUM_GPUS="4")
    assert _fetch_data(four, tmp_path, monkeypatch, sample_dir, num_gpus=4)["data_dir"] == str(sample_dir.resolve())
    # An MPIJob's GPUs are the cluster's to schedule, whatever their number: no slot of the gpu pool is involved.
    on_k8s = dag_parsed_with(RN50_LAUNCHER="kubernetes")
    assert _fetch_data(on_k8s, tmp_path, monkeypatch, sample_dir, launcher="kubernetes", num_gpus=64)["data_dir"]


def test_train_refuses_other_gpus_than_it_reserves_too(dag_parsed_with, tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    import pipeline.stages.train

    started: list[list[str]] = []
    monkeypatch.setattr(pipeline.stages.train, "run_child", lambda cmd, env=None: started.append(cmd))
    monkeypatch.setenv("RN50_WORKSPACE_ROOT", str(tmp_path / "runs"))
    four = dag_parsed_with(RN50_NUM_GPUS="4")
    params = copy.deepcopy(four.params)
    params.update({"num_gpus": 2})
    with pytest.raises(AirflowFailException, match=r"^num_gpus=2 but this deployment reserves 4 GPU slots"):
        four.get_task("train").python_callable({"data_dir": str(tmp_path)}, params=params.validate(),
                                               run_id="manual__gpus")
    assert started == []
