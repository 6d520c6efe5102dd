"""The publish stage: which files make a version, read from where each stage left them, then handed to the
registry's protocol (pipeline.publish.publish.publish_files).

The files come from the stages' folders (`StageDirs`): all in one model directory for `rn50 publish`, or a
run workspace's folders in the DAG (train's model/, evaluate's eval/ and export/, the gate's gate/, the
validator's validation/, the report's report/). The version's file names are the same either way, and both
call `publish_model`, so what a version holds never depends on who published it. Nothing here exports:
the default queue has no TensorFlow.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.contracts.evaluation import eval_summary
from pipeline.contracts.names import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    DATA_SUMMARY,
    DECISION_FILE,
    EVAL_FILE,
    EXPORT_FILE,
    LABELS_FILE,
    METRICS_FILE,
    PUBLISHED_DATA_SUMMARY,
    REPORT_DIR,
    REPORT_INDEX,
    SAVED_MODEL_DIR,
    SAVED_MODEL_PB,
    VALIDATION_REPORT,
)
from pipeline.contracts.registry import MODEL, check_file_name
from pipeline.files import NotRegularFile, read_json, read_regular, regular_file
from pipeline.publish.publish import (
    PublishError,
    PublishRefused,
    PublishResult,
    default_run_id,
    publish_files,
    resolve_lineage,
)
from pipeline.publish.upload import Source, Transfer
from pipeline.settings import PREFIX, PROJECT_ROOT
from pipeline.train.export import is_current, saved_model_current

log = logging.getLogger(__name__)

# The version's files and the StageDirs folder each comes from (checkpoints/ and metrics.jsonl: see collect_files).
REQUIRED = {CONFIG_FILE: "model", EVAL_FILE: "eval", DECISION_FILE: "gate"}
# The .keras export; required with `require_export`, as is saved_model/ with labels.txt (saved_model_files).
OPTIONAL = {EXPORT_FILE: "export"}
# Publishing never exports: the default queue has no TensorFlow (and exporting again changes the bytes).
EXPORT_HINT = ("the evaluate task exports it on the gpu queue: re-run evaluate (or `rn50 publish --export` "
               "where TensorFlow is installed)")


@dataclass(frozen=True)
class StageDirs:
    """Where each stage left its files: train (checkpoints/, config.json, metrics.jsonl), evaluate
    (eval.json and its metrics.jsonl line), the gate (decision.json), the export (model.keras,
    saved_model/, labels.txt), the validator (report.json, with its summary.json beside it) and the report
    (index.html and its figures)."""

    model: Path
    eval: Path
    gate: Path
    export: Path
    validation_report: Path | None = None
    report: Path | None = None

    @classmethod
    def of(cls, model_dir: Path, eval_dir: Path | None = None, gate_dir: Path | None = None,
           export_dir: Path | None = None, validation_report: Path | None = None,
           report_dir: Path | None = None) -> StageDirs:
        """Each folder not given is model_dir (the report's: model_dir/report, where `rn50 report` writes it):
        `rn50` keeps every stage's files beside the model."""
        model = Path(model_dir)
        folders = (Path(d) if d is not None else model for d in (eval_dir, gate_dir, export_dir))
        return cls(model, *folders, Path(validation_report) if validation_report is not None else None,
                   Path(report_dir) if report_dir is not None else model / REPORT_DIR)


def latest_checkpoint(model_dir: Path) -> dict[str, Source]:
    """The newest TF checkpoint only (older ones are training history, not the model), with a
    `checkpoint` index naming just it, so `tf.train.latest_checkpoint` works on the pulled copy."""
    directory = model_dir / CHECKPOINT_DIR
    if not _regular(model_dir, f"{CHECKPOINT_DIR}/checkpoint"):
        raise PublishError(f"{directory}/checkpoint: missing; is {model_dir} a trained model directory?")
    state = read_regular(directory / "checkpoint").decode(errors="replace")
    match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state, re.MULTILINE)
    if not match:
        raise PublishError(f"{directory}/checkpoint: names no model_checkpoint_path")
    name = Path(match.group(1)).name
    index = directory / f"{name}.index"
    data = sorted(directory.glob(f"{name}.data-*"))
    if not _regular(model_dir, f"{CHECKPOINT_DIR}/{index.name}") or not data:
        raise PublishError(f"{directory}: checkpoint {name} is incomplete (its .index or .data files are missing)")
    index_text = f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n'
    files: dict[str, Source] = {f"{CHECKPOINT_DIR}/checkpoint": index_text.encode()}
    for path in [index, *data]:
        _regular(model_dir, f"{CHECKPOINT_DIR}/{path.name}")
        files[f"{CHECKPOINT_DIR}/{path.name}"] = path
    return files


def _regular(model_dir: Path, name: str) -> bool:
    """Whether the model directory holds name as a regular file, reached through no symlink.

    A link or a FIFO is refused whatever it points to: `metrics.jsonl -> /proc/self/environ` would
    publish the worker's environment.
    """
    try:
        return regular_file(model_dir / name, below=model_dir)
    except NotRegularFile as exc:
        raise PublishError(str(exc)) from None


def _check_name(name: str) -> str:
    try:
        return check_file_name(name)  # the rule pull checks every manifest's names with
    except ValueError as exc:
        raise PublishError(str(exc)) from None


def collect_files(dirs: StageDirs, extra_files: dict[str, Path] | None = None, *,
                  require_export: bool = False) -> dict[str, Source]:
    """What the version holds: name in the version -> local file (or generated bytes).

    A model.keras or saved_model/ older than the latest checkpoint is refused (it is not the model the
    version holds); with `require_export`, so is a missing one (or a missing labels.txt).
    """
    model_dir = dirs.model
    if not model_dir.is_dir():
        raise PublishError(f"{model_dir}: no such model directory")
    files: dict[str, Source] = {}
    for name, stage in REQUIRED.items():
        folder = getattr(dirs, stage)
        if not _regular(folder, name):
            raise PublishError(f"{folder / name}: missing; a version must hold it")
        files[name] = folder / name
    files.update(latest_checkpoint(model_dir))
    # One metrics.jsonl, training's lines then evaluate's, as they are when both write the model directory.
    metrics = [d / METRICS_FILE for d in dict.fromkeys((model_dir, dirs.eval)) if _regular(d, METRICS_FILE)]
    if metrics:
        files[METRICS_FILE] = metrics[0] if len(metrics) == 1 else b"".join(read_regular(m) for m in metrics)
    else:
        log.warning(f"{model_dir / METRICS_FILE}: not there; the version will not hold it")
    for name, stage in OPTIONAL.items():
        folder = getattr(dirs, stage)
        if _regular(folder, name):
            files[name] = folder / name
        elif require_export:
            raise PublishError(f"{folder / name}: missing; {EXPORT_HINT}")
        else:
            log.warning(f"{folder / name}: not there; the version will not hold it")
    index = next(Path(source) for name, source in files.items() if name.endswith(".index"))
    if EXPORT_FILE in files and not is_current(dirs.export / EXPORT_FILE, index):
        raise PublishError(f"{dirs.export / EXPORT_FILE}: older than checkpoint {index.stem}; {EXPORT_HINT}")
    files.update(saved_model_files(dirs.export, index, require=require_export))
    files.update(validation_files(dirs.validation_report))
    files.update(report_files(dirs.report))
    for name, path in (extra_files or {}).items():
        name = _check_name(name)
        if name in files:
            raise PublishError(f"{name!r}: the model directory already provides it")
        if not _regular(Path(path).parent, Path(path).name):
            raise PublishError(f"{path}: no such file (for {name})")
        files[name] = Path(path)
    return files


def saved_model_files(export_dir: Path, checkpoint_index: Path, *, require: bool = False) -> dict[str, Path]:
    """Every file of export_dir's saved_model/ as `saved_model/<path inside it>`, and its labels.txt; {}
    when there is no saved_model/ (PublishError if `require`). One older than the checkpoint is refused,
    as is a link or special file anywhere in it."""
    root = export_dir / SAVED_MODEL_DIR
    if not _regular(export_dir, f"{SAVED_MODEL_DIR}/{SAVED_MODEL_PB}"):  # refuses a link in saved_model/'s place
        if require:
            raise PublishError(f"{root}: missing (no {SAVED_MODEL_PB}); {EXPORT_HINT}")
        log.warning(f"{root}: not there; the version will not hold it")
        return {}
    if not saved_model_current(export_dir, checkpoint_index):
        raise PublishError(f"{root}: older than checkpoint {checkpoint_index.stem}; {EXPORT_HINT}")
    if not _regular(export_dir, LABELS_FILE):  # what its class indices mean: exported with it
        raise PublishError(f"{export_dir / LABELS_FILE}: missing beside {SAVED_MODEL_DIR}/; {EXPORT_HINT}")
    files: dict[str, Path] = {LABELS_FILE: export_dir / LABELS_FILE}

    def unreadable(exc: OSError) -> None:
        raise PublishError(f"{exc.filename}: cannot read it ({exc.strerror})")

    for folder, subfolders, names in os.walk(root, onerror=unreadable):  # never into a linked folder
        links = [d for d in subfolders if os.path.islink(os.path.join(folder, d))]  # refused by _regular
        for name in sorted(names + links):
            relative = (Path(folder) / name).relative_to(export_dir).as_posix()
            if _regular(export_dir, relative):
                files[_check_name(relative)] = export_dir / relative
    return files


def validation_files(report: Path | None) -> dict[str, Path]:
    """The validator's report.json and, beside it, its data summary as data_summary.json: what the next run's
    validate_data compares its data with. Each is left out when it is not there (no validation ran; without
    a summary the next run says it has no drift reference)."""
    if report is None:
        return {}
    present = {VALIDATION_REPORT: report, PUBLISHED_DATA_SUMMARY: report.parent / DATA_SUMMARY}
    return {name: path for name, path in present.items() if os.path.lexists(path) and _regular(path.parent, path.name)}


def report_files(report_dir: Path | None) -> dict[str, Path]:
    """Every file of the run report as report/<its path there>; {} when report_dir holds no index.html."""
    if report_dir is None or not (report_dir / REPORT_INDEX).is_file():
        return {}
    files: dict[str, Path] = {}
    for path in sorted(report_dir.rglob("*")):
        if path.is_file() or path.is_symlink():
            relative = path.relative_to(report_dir).as_posix()
            _regular(report_dir, relative)  # a link is refused, whatever it points to
            files[_check_name(f"{REPORT_DIR}/{relative}")] = path
    return files


def read_decision(gate_dir: Path) -> dict[str, Any]:
    path = gate_dir / DECISION_FILE
    try:
        decision = read_json(path)
    except (FileNotFoundError, ValueError) as exc:
        raise PublishRefused(f"{exc}; run `rn50 gate` first") from None
    verdict = decision.get("verdict")
    if verdict != "pass":
        if decision.get("force_publish") is not True:
            raise PublishRefused(f"{path}: verdict is {verdict!r} and publishing was not forced; not publishing")
        if not str(decision.get("force_reason") or "").strip():
            raise PublishRefused(f"{path}: force_publish without a force_reason; not publishing")
    return decision


def read_evaluation(eval_dir: Path) -> dict[str, Any]:
    try:
        evaluation = read_json(eval_dir / EVAL_FILE)
    except (FileNotFoundError, ValueError) as exc:
        raise PublishError(str(exc)) from None
    top1 = evaluation.get("top1_accuracy")
    if not isinstance(top1, int | float) or not 0 <= top1 <= 100:
        raise PublishError(f"{eval_dir / EVAL_FILE}: top1_accuracy is {top1!r}, expected a percentage")
    return eval_summary(evaluation)  # the per-class lists stay in the version's eval.json and report


def publish_model(
    model_dir: Path,
    *,
    eval_dir: Path | None = None,
    gate_dir: Path | None = None,
    export_dir: Path | None = None,
    validation_report: Path | None = None,
    report_dir: Path | None = None,
    client: Any,
    bucket: str,
    prefix: str = PREFIX.default,
    model: str = MODEL,
    run_id: str | None = None,
    lineage: dict[str, Any] | None = None,
    extra_files: dict[str, Path] | None = None,
    dvc_repo: Path | None = None,
    dvc_prefix: str | None = "dvc",
    code_repo: Path | None = None,
    data_dvc: Path | None = None,
    transfer: Transfer | None = None,
    require_export: bool = False,
    cost: dict[str, Any] | None = None,
) -> PublishResult:
    """Publish model_dir as `s3://{bucket}/{prefix}/{model}/{version}/`; see the module docstring.

    The files come from the stages' folders (StageDirs.of: a run workspace's, or all in model_dir), so a
    version holds the same files whoever publishes it: `rn50 publish` and the DAG's publish both call this.

    `lineage` may give dataset_version, code_version, dag_id, run_id, hosts, num_gpus and any other
    JSON-able facts; what it leaves out comes from `data_dvc` (default `code_repo/data.dvc`, `code_repo`
    defaulting to this project's checkout), config.json's trainer record (the code version of the code that
    trained) and Airflow's environment. `dvc_prefix=None` skips
    the DVC remote (and then no pointer can be written). `require_export`: refuse a model directory
    without model.keras (the Airflow task does; the CLI may publish without it). `cost`: the run's
    pipeline.cost record, into the manifest's "cost".
    """
    dirs = StageDirs.of(model_dir, eval_dir, gate_dir, export_dir, validation_report, report_dir)
    decision = read_decision(dirs.gate)  # first: a model the gate failed is refused whatever else is wrong
    files = collect_files(dirs, extra_files, require_export=require_export)
    evaluation = read_evaluation(dirs.eval)
    config = read_json(dirs.model / CONFIG_FILE)
    resolved = resolve_lineage(lineage, code_repo=Path(code_repo or PROJECT_ROOT), data_dvc=data_dvc, config=config)
    return publish_files(files, evaluation=evaluation, decision=decision, config=config, lineage=resolved,
                         run_id=run_id or default_run_id(dirs.model, files), client=client, bucket=bucket,
                         prefix=prefix, model=model, dvc_repo=dvc_repo, dvc_prefix=dvc_prefix, transfer=transfer,
                         cost=cost)
