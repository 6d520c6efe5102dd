"""The contracts between stages (pipeline.contracts): the published manifest against its JSON schema,
decision.json against the schema the gate builds it from, and a version's files whoever publishes it."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict
from pathlib import Path

import jsonschema
import pytest
from publish_support import BUCKET, add_saved_model, make_model_dir, make_run_outputs

from pipeline.cli import main
from pipeline.contracts import names
from pipeline.contracts.decision import Decision
from pipeline.contracts.manifest import schema
from pipeline.contracts.names import STAGES
from pipeline.gate import run_gate
from pipeline.workspace import RunWorkspace
from tasks import publish as publish_task

SUMMARY = {"format": 1, "records": {"validation": 500}}


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())


def _stage_outputs(validation: Path, report: Path) -> None:
    """What validate_data and the report task leave beside a model: report.json, summary.json, report/."""
    validation.mkdir(parents=True, exist_ok=True)
    (validation / names.VALIDATION_REPORT).write_text('{"ok": true, "records": 500}\n')
    (validation / names.DATA_SUMMARY).write_text(json.dumps(SUMMARY))
    report.mkdir(parents=True, exist_ok=True)
    (report / names.REPORT_INDEX).write_text("<html>report</html>\n")
    (report / "accuracy.png").write_bytes(b"\x89PNG fake")


def _manifest(raw, prefix: str, version: str = "v0001") -> dict:
    key = f"{prefix}/resnet50/{version}/{names.MANIFEST}"
    return json.loads(raw.get_object(Bucket=BUCKET, Key=key)["Body"].read())


@pytest.fixture
def dag_published(registry, tmp_path, monkeypatch):
    """A version the DAG's publish task made from a run workspace's stage folders: the manifest as stored."""
    raw, client = registry
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "resnet50_retrain")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__2026-12-07")
    ws = make_run_outputs(RunWorkspace(tmp_path / "runs", "manual__2026-12-07").create())
    _stage_outputs(ws.validation, ws.report)
    publish_task.run(ws, client=client, bucket=BUCKET, lineage={"hosts": "localhost:1", "num_gpus": 1})
    return _manifest(raw, "models")


def test_a_published_manifest_matches_its_json_schema(dag_published):
    _validator().validate(dag_published)


@pytest.mark.parametrize(("why", "break_it"), [
    ("no files", lambda m: m.pop("files")),
    ("a file named like the registry's own", lambda m: m["files"].update({names.MANIFEST: m["files"]["eval.json"]})),
    ("a digest that is not one", lambda m: m["files"]["eval.json"].update(sha256="not-hex")),
    ("an unknown field", lambda m: m.update(surprise=True)),
    ("the per-class lists in the metrics", lambda m: m["metrics"].update(per_class={"correct": []})),
    ("a verdict that is neither", lambda m: m.update(verdict="maybe")),
    ("a version name that is not one", lambda m: m.update(version="v1")),
])
def test_the_schema_refuses_a_manifest_that_breaks_the_contract(dag_published, why, break_it):
    broken = copy.deepcopy(dag_published)
    break_it(broken)
    assert not _validator().is_valid(broken), why


def test_rn50_publish_and_the_dag_publish_the_same_files(dag_published, registry, tmp_path):
    """The same stage outputs, all beside the model (rn50's layout) or in a run workspace's folders (the DAG's),
    make versions of the same files: both go through pipeline.stages.publish."""
    raw, _ = registry
    model_dir = add_saved_model(make_model_dir(tmp_path / "model"))
    _stage_outputs(tmp_path / "validation", model_dir / names.REPORT_DIR)
    code = main(["publish", "--model-dir", str(model_dir), "--bucket", BUCKET, "--prefix", "cli", "--no-export",
                 "--validation-report", str(tmp_path / "validation" / names.VALIDATION_REPORT)])
    assert code == 0
    by_cli = _manifest(raw, "cli")
    assert set(by_cli["files"]) == set(dag_published["files"])
    assert {names.VALIDATION_REPORT, names.PUBLISHED_DATA_SUMMARY, f"{names.REPORT_DIR}/{names.REPORT_INDEX}",
            names.LABELS_FILE, f"{names.SAVED_MODEL_DIR}/{names.SAVED_MODEL_PB}"} <= set(by_cli["files"])
    _validator().validate(by_cli)


def test_decision_json_is_the_decision_schema(tmp_path):
    """What the gate writes reads back into its schema field for field, so fixtures built from the schema
    (publish_support.decision) are what the gate writes."""
    from pipeline.gate import GateFailed

    model_dir = make_model_dir(tmp_path / "m", top1=20.0)
    with pytest.raises(GateFailed):
        run_gate(model_dir, profile="smoke")
    written = json.loads((model_dir / names.DECISION_FILE).read_text())
    assert asdict(Decision(**written)) == written
    assert written["verdict"] == "fail" and not written["publish"]


def test_the_architecture_page_maps_the_stages_as_the_contracts_do():
    page = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text()
    section = page.split("## Stages, tasks and commands", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| `")]
    documented = [(re.sub(r"`", "", task), re.match(r"`?([a-z]*)", folder)[1].rstrip("/") or None,
                   command.strip("`") or None) for task, folder, command, _ in rows]
    assert documented == [(s.task_id, s.folder, s.command) for s in STAGES]

