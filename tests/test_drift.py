"""Data drift (issue 17, req. 3): the validator's per-run data summary, its comparison with the champion's,
validate_data fetching that from the registry (moto over HTTP), RN50_DRIFT_FAIL, and the GX run's names."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

# Imported here, not first inside a test: Airflow's logging keeps the sys.stderr it finds at import, which
# inside a capsys test is closed after it.
from airflow.sdk.exceptions import AirflowFailException
from publish_support import BUCKET, make_model_dir, publish

from pipeline.contracts import names
from pipeline.data import drift
from pipeline.data.validate import validate_dataset
from pipeline.stages import drift_reference
from pipeline.workspace import RunWorkspace

RUN_ID = "manual__2026-12-02T03:00:00+00:00"
DATASET_VERSION = "0123456789abcdef0123456789abcdef.dir"


# --- compare() on hand-made summaries -----------------------------------------------------------


def summary(**changes: Any) -> dict[str, Any]:
    """A summary of 1000 train and 500 validation records over labels 1-10, changed as told."""
    base = {
        "format": drift.FORMAT,
        "dataset_version": "v-champion",
        "records": {"train": 1000, "validation": 500},
        "classes": {"train": {str(label): 100 for label in range(1, 11)},
                    "validation": {str(label): 50 for label in range(1, 11)}},
        "image": {name: {"edges": list(edges), "counts": [0] * (len(edges) - 1),
                         "quantiles": {str(q): 100.0 * (1 + q) for q in drift.QUANTILES}}
                  for name, edges in drift.DISTRIBUTIONS.items()},
        "jpeg": {"sampled": 1500, "of": 1500, "grayscale": 0.02, "cmyk": 0.0, "progressive": 0.02},
        "duplicates": {"within_split": 0, "cross_split": 0},
    }
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = base
        for key in parents:
            node = node[key]
        if value is None:
            del node[leaf]
        else:
            node[leaf] = value
    return base


def fired(comparison: dict[str, Any]) -> set[str]:
    return {c["name"] for c in comparison["checks"] if not c["passed"]}


def test_the_same_data_is_ok_and_every_check_is_listed():
    result = drift.compare(summary(), summary(), baseline_version="v0003")
    assert result["status"] == "ok" and fired(result) == set()
    assert result["baseline"] == {"version": "v0003", "dataset_version": "v-champion"}
    assert {c["name"] for c in result["checks"]} == {
        "classes.share", "classes.new", "classes.missing", "image.width", "image.height", "image.aspect",
        "jpeg.grayscale", "jpeg.cmyk", "jpeg.progressive", "duplicates"}
    assert all(set(c) == {"name", "passed", "severity", "detail"} for c in result["checks"])


def _share(label_records: int) -> dict[str, int]:
    # label 1 with `label_records` records, the other nine with 100 each
    return {"1": label_records, **{str(label): 100 for label in range(2, 11)}}


@pytest.mark.parametrize(("changes", "expected"), [
    # label 1's share of train: 100/1000 -> 127/1027 is +23.7 % (fires); 120/1020 is +17.6 % (does not)
    ({"classes__train": _share(127)}, {"classes.share"}),
    ({"classes__train": _share(120)}, set()),
    ({"classes__validation__11": 50}, {"classes.new"}),  # the others' shares: 50/550 against 50/500, -9 %
    ({"classes__train__10": None}, {"classes.missing"}),
    ({"image__width__quantiles__0.5": 150.0 * 1.11}, {"image.width"}),  # the champion's is 150: +11 %
    ({"image__width__quantiles__0.5": 150.0 * 1.09}, set()),
    ({"image__aspect__quantiles__0.05": 105.0 * 0.89}, {"image.aspect"}),  # the champion's is 105: -11 %
    ({"jpeg__grayscale": 0.05}, {"jpeg.grayscale"}),
    ({"jpeg__grayscale": 0.025}, set()),  # 0.5 points: under FRACTION_SHIFT
    ({"jpeg__cmyk": 0.02}, {"jpeg.cmyk"}),
    ({"jpeg__progressive": 0.0}, {"jpeg.progressive"}),
    ({"duplicates__within_split": 2}, {"duplicates"}),  # 2 of 1500: 0.13 % > 0.1 %
    ({"duplicates__within_split": 1}, set()),
])
def test_each_check_fires_past_its_threshold_and_not_before(changes, expected):
    result = drift.compare(summary(**changes), summary())
    assert fired(result) == expected
    assert result["status"] == ("warn" if expected else "ok")
    assert all(c["severity"] == "warning" for c in result["checks"])


def test_a_fraction_needs_more_than_sampling_noise_to_fire():
    # 2 % -> 5 % is 3 points, past FRACTION_SHIFT; from 40 JPEGs read each it is within three standard errors
    few = {"jpeg__sampled": 40}
    assert fired(drift.compare(summary(jpeg__grayscale=0.05, **few), summary(**few))) == set()


def test_fail_makes_a_fired_check_an_error_and_the_status_fail():
    result = drift.compare(summary(classes__train__10=None), summary(), fail=True)
    assert result["status"] == "fail"
    assert drift.failure_lines(result) == ["ERROR drift.classes.missing: train label 10"]
    assert drift.compare(summary(), summary(), fail=True)["status"] == "ok"


def test_a_summary_that_is_not_one_is_refused_naming_it():
    with pytest.raises(drift.SummaryError, match=r"^s3://b/x: format 2, expected 1; not a data summary$"):
        drift.check_summary(summary(format=2), "s3://b/x")
    for bad, field in ((summary(classes={"train": {"1": -3}}), "classes"),
                       (summary(classes={"train": {"one": 3}}), "classes"),
                       (summary(image__width__quantiles={"0.5": "wide"}), "image.width.quantiles"),
                       (summary(jpeg__grayscale=1.5), "jpeg"),
                       (summary(duplicates={"within_split": True}), "duplicates")):
        with pytest.raises(drift.SummaryError, match=rf"^x: {re.escape(field)}: "):
            drift.check_summary(bad, "x")
    assert drift.check_summary(summary(), "x") == summary()


def _nested(depth: int) -> list:
    node: list = []
    for _ in range(depth):
        node = [node]
    return node


# Summaries check_summary used to accept (or crash on itself) whose comparison, or the drift.json it is
# written to, then raised: validate_data failed on every run until the champion changed.
HOSTILE = [
    ("a label of superscript two", {"classes__train__\u00b2": 100}, "classes"),  # "²".isdigit(), int("²") raises
    ("an Arabic-Indic digit label", {"classes__train__\u0661": 100}, "classes"),  # int() reads it as label 1
    ("a label of 5000 digits", {"classes__train__" + "9" * 5000: 100}, "classes"),  # past int()'s digit limit
    ("a class with no records", {"classes__train__1": 0}, "classes"),  # its share is 0: the change divides by it
    ("a quantile past float", {"image__width__quantiles__0.5": 10**400}, "image.width.quantiles"),
    ("a duplicate count past float", {"duplicates__within_split": 10**400}, "duplicates"),
    ("a sample count past float", {"jpeg__sampled": 10**400}, "jpeg"),
    ("a dataset version nested 100,000 deep", {"dataset_version": _nested(100_000)}, "nested deeper than"),
]


@pytest.mark.parametrize(("changes", "field"), [(c, f) for _, c, f in HOSTILE], ids=[n for n, _, _ in HOSTILE])
def test_a_summary_compare_cannot_read_is_refused_with_a_reason(changes, field):
    hostile = summary(**changes)
    with pytest.raises(drift.SummaryError, match=rf"^champion: {re.escape(field)}"):
        drift.check_summary(hostile, "champion")


def test_every_summary_check_summary_accepts_compares_and_writes(tmp_path: Path):
    from pipeline.files import write_json

    # What the checks allow at their edges: empty splits, no JPEG read, zero quantiles, no duplicates.
    edges = [summary(classes={"train": {}}), summary(jpeg__sampled=0), summary(classes={}),
             summary(image__width__quantiles={str(q): 0.0 for q in drift.QUANTILES}),
             summary(image__height__quantiles={str(q): None for q in drift.QUANTILES}),
             summary(duplicates={}), summary(dataset_version=_nested(8))]
    for one in edges:
        for other in (*edges, summary()):
            comparison = drift.compare(drift.check_summary(one, "a"), drift.check_summary(other, "b"))
            write_json(tmp_path / names.DRIFT, comparison)


# --- the real sample ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validated(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The sample validated once, as validate_data runs it (run name, dataset version, report dir)."""
    out = tmp_path_factory.mktemp("validation")
    report = validate_dataset(sample_dir, expect="sample", workers=1, report_dir=out, run_name=RUN_ID,
                              dataset_version=DATASET_VERSION)
    return report, out


def test_the_summary_counts_what_describe_counts(validated, sample_dir: Path):
    from pipeline.data.describe import describe_dataset

    report, out = validated
    written = json.loads((out / names.DATA_SUMMARY).read_text())
    assert written == report.summary and written["dataset_version"] == DATASET_VERSION
    stats = describe_dataset(sample_dir)
    assert written["records"] == {split: s.records for split, s in stats.items()}
    assert written["classes"] == {split: {str(k): v for k, v in sorted(s.per_label.items())}
                                  for split, s in stats.items()}
    records = sum(s.records for s in stats.values())
    assert written["jpeg"]["sampled"] == records  # the sample is smaller than JPEG_SAMPLE: every header read
    for quirk in ("grayscale", "progressive"):
        assert written["jpeg"][quirk] == pytest.approx(sum(s.quirks[quirk] for s in stats.values()) / records)
    for name in drift.DISTRIBUTIONS:
        assert sum(written["image"][name]["counts"]) == records
    assert len(json.dumps(written)) < 20_000


def test_the_gx_run_and_data_asset_are_named_after_the_run_and_the_dataset_version(validated):
    report, _ = validated
    result = json.loads(Path(report.gx["validation_result"]).read_text())
    assert result["meta"]["run_id"]["run_name"] == RUN_ID
    assert result["meta"]["active_batch_definition"]["data_asset_name"] == DATASET_VERSION
    docs = Path(report.gx["data_docs"])
    index = docs.read_text()
    assert RUN_ID in index and DATASET_VERSION in index and "__none__" not in index
    (page,) = (docs.parent / "validations").rglob("*.html")
    assert RUN_ID in page.relative_to(docs.parent).as_posix()


def test_bad_names_or_baseline_summary_are_one_line_usage_errors(sample_dir: Path, tmp_path: Path):
    from support import rn50

    for flag in ("--run-name", "--dataset-version"):
        done = rn50("validate", str(sample_dir), flag, "a/../b", "--report-dir", str(tmp_path))
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines()[-1].startswith(f"rn50 validate: error: argument {flag}: name 'a/../b'")
        assert not (tmp_path / "report.json").exists()
    done = rn50("validate", str(sample_dir), "--baseline-summary", str(tmp_path / "absent.json"))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"rn50 validate: error: {tmp_path / 'absent.json'}: [Errno 2] No such file "
                                        f"or directory: '{tmp_path / 'absent.json'}'"]
    for name, text, why in (("nested.json", "[" * 100_000 + "]" * 100_000, "maximum recursion depth exceeded"),
                            ("digit.json", json.dumps(summary(**{"classes__train__\u00b2": 1})), "classes: split")):
        (tmp_path / name).write_text(text)
        done = rn50("validate", str(sample_dir), "--baseline-summary", str(tmp_path / name))
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith(f"rn50 validate: error: {tmp_path / name}: ") and why in done.stderr


def test_gx_states_the_size_drift_as_compare_does(validated, sample_dir: Path, tmp_path: Path):
    report, _ = validated
    baseline = copy.deepcopy(report.summary)  # the champion's images were half as wide again
    baseline["image"]["width"]["quantiles"] = {q: v * 1.5 for q, v in baseline["image"]["width"]["quantiles"].items()}
    again = validate_dataset(sample_dir, expect="sample", workers=1, report_dir=tmp_path, baseline_summary=baseline)
    assert again.ok and again.gx["success"]  # drift is not a broken rule
    by_gx = {r["rule"].removeprefix("drift."): r["success"] for r in again.gx["drift"]}
    by_compare = {c["name"]: c["passed"] for c in drift.compare(again.summary, baseline)["checks"]}
    assert by_gx == {"image.width": False, "image.height": True, "image.aspect": True}
    assert by_gx == {name: by_compare[name] for name in by_gx}


# --- validate_data against the champion in the registry -----------------------------------------


def shifted_copy(src: Path, dst: Path) -> Path:
    """src without label 1's train records and with label 101's train records twice (with their manifest)."""
    from pipeline.contracts.names import SAMPLE_MANIFEST
    from pipeline.data.format import read_shard, write_shard

    dst.mkdir()
    manifest = json.loads((src / SAMPLE_MANIFEST).read_text())
    per_label = manifest["splits"]["train"]["per_label"]
    for path in sorted(src.glob("*-of-*")):
        records = list(read_shard(path))
        if path.name.startswith("train"):
            records = [r for r in records if r.label != 1] + [r for r in records if r.label == 101]
        write_shard(dst / path.name, records)
    per_label["101"] *= 2
    manifest["splits"]["train"]["records"] += per_label["101"] // 2 - per_label.pop("1")
    (dst / SAMPLE_MANIFEST).write_text(json.dumps(manifest))
    return dst


@pytest.fixture(scope="module")
def shifted(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shifted_copy(sample_dir, tmp_path_factory.mktemp("shifted") / "imagenet")


def workspace(root: Path) -> RunWorkspace:
    ws = RunWorkspace(root, RUN_ID).create()
    ws.data_record.write_text(json.dumps({"dataset_version": DATASET_VERSION}))
    return ws


def publish_champion(tmp_path: Path, client: Any, data_summary: dict[str, Any] | None) -> str:
    extra = None
    if data_summary is not None:
        path = tmp_path / "champion_data_summary.json"
        path.write_text(json.dumps(data_summary))
        extra = {names.PUBLISHED_DATA_SUMMARY: path}
    return publish(make_model_dir(tmp_path / "champion"), client, extra_files=extra).version


def run_validate_data(ws: RunWorkspace, data_dir: Path, client: Any, **kwargs: Any) -> dict[str, Any]:
    from tasks import validate_data

    return validate_data.run(ws, data_dir=str(data_dir), profile="smoke", workers=1, client=client, bucket=BUCKET,
                             **kwargs)


def test_no_champion_means_drift_not_checked(registry, sample_dir: Path, tmp_path: Path, capsys):
    _, client = registry
    ws = workspace(tmp_path)
    result = run_validate_data(ws, sample_dir, client)
    assert result["drift"] == "not_checked"
    comparison = json.loads((ws.validation / names.DRIFT).read_text())
    assert comparison["status"] == "not_checked" and comparison["reason"].startswith("no champion in s3://")
    assert json.loads((ws.validation / "report.json").read_text())["drift"] == comparison
    assert "drift not checked" in capsys.readouterr().out


def test_a_champion_without_a_summary_is_no_baseline(registry, tmp_path: Path):
    _, client = registry
    version = publish_champion(tmp_path, client, None)
    assert drift_reference.champion_summary(client, BUCKET, "models", "resnet50") == (
        None, version, f"champion {version} has no {names.PUBLISHED_DATA_SUMMARY}: drift not checked")


def test_a_tampered_champion_summary_is_refused(registry, validated, tmp_path: Path):
    raw, client = registry
    version = publish_champion(tmp_path, client, validated[0].summary)
    key = f"models/resnet50/{version}/{names.PUBLISHED_DATA_SUMMARY}"
    raw.put_object(Bucket=BUCKET, Key=key, Body=b'{"format": 1}')
    with pytest.raises(drift.SummaryError, match=rf"^s3://{BUCKET}/{key}: sha256 differs"):
        drift_reference.champion_summary(client, BUCKET, "models", "resnet50")


def test_a_champion_summary_nested_past_the_parser_is_refused_naming_it(registry, tmp_path: Path):
    _, client = registry
    path = tmp_path / "nested.json"
    path.write_text('{"format": 1, "classes": ' + "[" * 100_000 + "]" * 100_000 + "}")  # 200 kB: under the cap
    extra = {names.PUBLISHED_DATA_SUMMARY: path}
    version = publish(make_model_dir(tmp_path / "champion"), client, extra_files=extra).version
    key = f"models/resnet50/{version}/{names.PUBLISHED_DATA_SUMMARY}"
    with pytest.raises(drift.SummaryError, match=rf"^s3://{BUCKET}/{key}: not valid JSON"):
        drift_reference.champion_summary(client, BUCKET, "models", "resnet50")


def test_a_champion_summary_compare_cannot_read_means_drift_not_made(registry, sample_dir: Path, tmp_path: Path,
                                                                      monkeypatch, capsys):
    _, client = registry
    hostile = summary(**{"classes__train__\u00b2": 100})  # "²": isdigit() said a label, int() raised in compare
    version = publish_champion(tmp_path, client, hostile)
    monkeypatch.setenv("RN50_DRIFT_FAIL", "true")  # a comparison not made fails nothing, whatever drift would
    ws = workspace(tmp_path / "ws")
    assert run_validate_data(ws, sample_dir, client)["drift"] == "not_checked"
    comparison = json.loads((ws.validation / names.DRIFT).read_text())
    key = f"models/resnet50/{version}/{names.PUBLISHED_DATA_SUMMARY}"
    assert comparison == {"status": "not_checked", "baseline": None, "checks": [], "reason": (
        f"s3://{BUCKET}/{key}: classes: split 'train' label '\u00b2' is not a class label; not a data summary: "
        "drift not checked")}
    assert json.loads((ws.validation / "report.json").read_text())["drift"] == comparison
    assert comparison["reason"] in capsys.readouterr().out


def test_shifted_data_warns_against_the_champion_and_fails_with_rn50_drift_fail(
        registry, validated, shifted: Path, tmp_path: Path, monkeypatch, capsys):
    _, client = registry
    version = publish_champion(tmp_path, client, validated[0].summary)  # the champion trained on the sample

    ws = workspace(tmp_path / "warn")
    assert run_validate_data(ws, shifted, client)["drift"] == "warn"
    comparison = json.loads((ws.validation / names.DRIFT).read_text())
    assert comparison["baseline"] == {"version": version, "dataset_version": DATASET_VERSION}
    assert fired(comparison) == {"classes.missing", "classes.share", "duplicates"}
    assert json.loads((ws.validation / "report.json").read_text())["drift"] == comparison
    out = capsys.readouterr().out
    assert f"drift against the champion {version}: warn" in out
    assert "WARNING drift.classes.missing: train label 1" in out

    monkeypatch.setenv("RN50_DRIFT_FAIL", "true")
    ws = workspace(tmp_path / "fail")
    reason = (rf"data drift against the champion {version} \(RN50_DRIFT_FAIL\): "
              r"ERROR drift\.classes\.share: .*; ERROR drift\.classes\.missing: train label 1; ERROR drift\.duplicates")
    with pytest.raises(AirflowFailException, match=reason):  # final: a retry reads the same data
        run_validate_data(ws, shifted, client)
    assert json.loads((ws.validation / names.DRIFT).read_text())["status"] == "fail"


def test_publish_puts_the_summary_in_the_version_and_the_next_run_reads_it_back(registry, tmp_path: Path):
    from publish_support import make_run_outputs

    from tasks import publish as publish_task

    _, client = registry
    ws = make_run_outputs(RunWorkspace(tmp_path, RUN_ID).create())
    ws.validation.mkdir()
    (ws.validation / names.DATA_SUMMARY).write_text(json.dumps(summary()))
    version = publish_task.run(ws, client=client, bucket=BUCKET)["version"]
    assert drift_reference.champion_summary(client, BUCKET, "models", "resnet50") == (summary(), version, "")
