"""Every artifact's file and folder name, grouped by the stage that writes it.

A run workspace (pipeline.workspace) holds one folder per stage; a published version holds the files
pipeline.stages.version picks from those folders, under the same names.
"""

from __future__ import annotations

from dataclasses import dataclass

# The workspace root (pipeline.workspace): beside the runs' folders, its own entries. Each starts with
# ROOT_ENTRY, which no run's folder name does, so no run id can name one.
ROOT_ENTRY = "."
DVC_CACHE = ROOT_ENTRY + "dvc-cache"  # the DVC cache all runs share
NGC_CACHE = ROOT_ENTRY + "ngc-cache"  # one imported model directory per NGC checkpoint (pipeline.stages.init_source)
FAILURES = ROOT_ENTRY + "failures.jsonl"  # tasks.notify: one JSON line per task that failed for good
FAILURES_BEFORE_ROOT_ENTRIES = "failures.jsonl"  # where versions before dot-named entries kept it (tasks.notify)
TRASH = ROOT_ENTRY + "gc-"  # a workspace being deleted: out of any run's way at once, finished by the next gc

# A run workspace's folders, one per stage that writes it (pipeline.workspace.RunWorkspace).
CHECKOUT_DIR = "repo"  # fetch_data: the git+DVC checkout of data.dvc
VALIDATION_DIR = "validation"  # validate_data
MODEL_DIR = "model"  # train
EVAL_DIR = "eval"  # evaluate
EXPORT_DIR = "export"  # evaluate, on the gpu queue
CHAMPION_DIR = "champion"  # train (init_from=champion) or evaluate_baseline: the champion, pulled once per run
BASELINE_DIR = "baseline"  # evaluate_baseline
GATE_DIR = "gate"  # check_accuracy
# REPORT_DIR (report), below

# fetch_data: what it fetched.
DATA_DVC = "data.dvc"  # the dataset's DVC pointer in the project (and in each checkout)
DATA_RECORD = "data.json"  # in the workspace: the dataset's version and where it is
RUN_MARKER = "run.json"  # in the workspace: names the run; written by every task

# validate_data (`rn50 validate --report-dir`): the validation folder.
VALIDATION_REPORT = "report.json"  # the validator's report; published as is
DATA_SUMMARY = "summary.json"  # this run's data summary (pipeline.data.drift.summarize)
DRIFT = "drift.json"  # this run's summary compared with the reference's
REFERENCE_SUMMARY = "champion_summary.json"  # the drift reference: the copy of the champion's summary it read
GX_RESULT = "gx_validation_result.json"  # Great Expectations' validation result
GX_DATA_DOCS = ("gx", "uncommitted", "data_docs", "local_site", "index.html")  # its Data Docs, under the report dir
PUBLISHED_DATA_SUMMARY = "data_summary.json"  # DATA_SUMMARY's name in a version

# make-sample: the sample dataset's own record of how it was made.
SAMPLE_MANIFEST = "manifest.json"

# train: the model folder.
CONFIG_FILE = "config.json"  # the recipe and where training started from (pipeline.contracts.config)
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"  # one JSON object per logged step (and evaluate's result line)
TENSORBOARD_DIR = "tensorboard"

# evaluate (and evaluate_baseline): the eval folder.
EVAL_FILE = "eval.json"  # pipeline.contracts.evaluation
# evaluate, on the gpu queue: the export folder.
EXPORT_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
SAVED_MODEL_PB = "saved_model.pb"  # its modification time is the export's (the is_current rule)
LABELS_FILE = "labels.txt"

# evaluate_baseline: the baseline folder.
BASELINE_FILE = "baseline.json"  # which model the live baseline is (pipeline.contracts.baseline)

# check_accuracy (`rn50 gate`): the gate folder.
DECISION_FILE = "decision.json"  # pipeline.contracts.decision

# report (`rn50 report`): the report folder, in the workspace and in a version.
REPORT_DIR = "report"
REPORT_INDEX = "index.html"

# publish: the registry's own keys (pipeline.contracts.registry) and the DVC pointer repo's folder.
MANIFEST = "manifest.json"  # a version's, written last (pipeline.contracts.manifest)
LATEST = "latest.json"
CLAIM = ".claim.json"
POINTER_DIR = "models"

# Every task: its wall time, for the manifest's cost (pipeline.cost).
COST_DIR = "cost"


@dataclass(frozen=True)
class Stage:
    task_id: str  # the Airflow task: never renamed (Airflow keys a task's history by it)
    folder: str | None  # its folder in the run workspace (pipeline.workspace.RunWorkspace)
    command: str | None  # the `rn50` subcommand that does the same work outside Airflow


# One name per stage where the three can agree; where they cannot, this table is the map.
STAGES = (
    Stage("check_changes", None, None),
    Stage("fetch_data", CHECKOUT_DIR, None),
    Stage("validate_data", VALIDATION_DIR, "validate"),
    Stage("train", MODEL_DIR, "train"),
    Stage("evaluate", EVAL_DIR, "evaluate"),
    Stage("evaluate_baseline", BASELINE_DIR, "evaluate"),
    Stage("check_accuracy", GATE_DIR, "gate"),
    Stage("report", REPORT_DIR, "report"),
    Stage("publish", None, "publish"),
)
