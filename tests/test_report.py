"""The run report (pipeline.report, the report task, `rn50 report`) and the run's cost (pipeline.cost).

No training: the stages' files are written in their real formats (tests/report_support.py). The page's
rendering in a browser is tests/test_report_render.py.
"""

from __future__ import annotations

import json
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from publish_support import BUCKET, make_run_outputs, s3
from report_support import SECOND, WORST, registry_manifests, write_stages
from support import rn50, venv_env

from pipeline.cost import read_cost, record_stage
from pipeline.data.labels import load_label_map
from pipeline.report import build_report
from pipeline.workspace import RunWorkspace

SECTIONS = ["summary", "training", "accuracy", "per-class", "validation", "drift", "gate", "cost"]
PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """What a reader of index.html sees: sections (by id, with their text), images and links."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self.external: list[str] = []
        self._section: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self._section = a["id"]
            self.sections[self._section] = ""
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "a":
            self.links.append(a["href"])
        if tag in ("script", "link") or any(str(v).startswith(("http:", "https:", "//")) for v in a.values()):
            self.external.append(f"{tag} {a}")

    def handle_data(self, data: str) -> None:
        if self._section:
            self.sections[self._section] += data


def _page(index: Path) -> Page:
    return Page(index.read_text())


def _run(tmp_path: Path) -> RunWorkspace:
    ws = RunWorkspace(tmp_path / "ws", "manual__report").create()
    write_stages(ws.model, ws.eval, ws.gate, ws.validation)
    return ws


def test_the_report_shows_curves_accuracy_classes_data_gate_and_cost(tmp_path):
    ws = _run(tmp_path)
    record_stage(ws.path, "train", 7200.0, 8)
    record_stage(ws.path, "evaluate", 360.0, 1)
    index = build_report(ws.report, model_dir=ws.model, eval_dir=ws.eval, gate_dir=ws.gate,
                         validation_dir=ws.validation, cost=read_cost(ws.path), registry=registry_manifests())
    assert index == ws.report / "index.html"
    page = _page(index)
    assert list(page.sections) == SECTIONS and page.external == []  # offline: no script, no remote resource
    assert page.images == ["training.png", "accuracy.png", "per_class.png"]
    for name in page.images:  # beside index.html, relative, real PNGs
        assert (ws.report / name).read_bytes().startswith(PNG), name
    assert "not available" not in index.read_text()

    labels = load_label_map()
    text = page.sections
    # The worst classes come first, named by synset and human name (label = class index + 1).
    worst = text["per-class"]
    assert worst.index(labels.synset(WORST + 1)) < worst.index(labels.synset(SECOND + 1))
    assert labels.name(WORST + 1) in worst and "10.0 %" in worst
    # This run against the live baseline, the floor and the registry's last versions.
    for label in ("this run", "live baseline: champion v0001", "floor: smoke", "v0003 (2026-03-01)", "73.00 %"):
        assert label in text["accuracy"], label
    # Validation: the counts, the failing rule with its first example, GX's results drawn here (its Data Docs
    # load from CDNs: they stay in the validation folder, not copied, not linked).
    assert "1510" in text["validation"] and "image.size" in text["validation"]
    assert "validation-00000-of-00002 record 17: 12x9 px" in text["validation"]
    assert "10" in text["validation"]  # classes: the ten the validation split holds
    assert page.links == [] and not (ws.report / "data_docs").exists()
    assert "Suite: pass" in text["validation"] and "0 rules checked by Great Expectations" in text["validation"]
    assert "warn" in text["drift"] and "class n01530575 moved by 25 %" in text["drift"]
    assert "PASS: top-1 against the live baseline" in text["gate"] and "pass" in text["gate"]
    assert "16.0000" in text["cost"] and "0.1000" in text["cost"]  # GPU-hours: 2 h x 8 GPUs; 6 min x 1 GPU


def test_missing_or_broken_inputs_say_not_available_and_why(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    page = _page(build_report(tmp_path / "out", model_dir=empty))
    assert list(page.sections) == SECTIONS and page.images == [] and page.links == []
    for section in SECTIONS[1:]:
        assert "not available" in page.sections[section], section
    assert f"{empty / 'eval.json'} does not exist" in page.sections["accuracy"]
    assert "no registry was given" in page.sections["accuracy"]

    # A metrics.jsonl cut short and an eval.json that is not JSON: the page says which file, and the rest stays.
    ws = _run(tmp_path)
    with (ws.model / "metrics.jsonl").open("a") as f:
        f.write('{"step": 31, "loss"\n')
    (ws.eval / "eval.json").write_text("{not json")
    page = _page(build_report(ws.report, model_dir=ws.model, eval_dir=ws.eval, gate_dir=ws.gate,
                              validation_dir=ws.validation, registry=[]))
    assert page.images == ["training.png", "accuracy.png"]  # the 30 good lines, and the baselines without this run
    assert f"{ws.model / 'metrics.jsonl'} line {31} is not JSON" in page.sections["training"]
    assert f"{ws.eval / 'eval.json'} is not readable JSON" in page.sections["per-class"]
    assert "nothing is published yet" in page.sections["accuracy"]
    assert "no stage recorded its time" in page.sections["cost"]

    # A drift comparison that could not be made says why (pipeline.data.drift's not_checked).
    report = json.loads((ws.validation / "report.json").read_text())
    report["drift"] = {"status": "not_checked", "baseline": None, "checks": [], "reason": "no champion is published"}
    (ws.validation / "report.json").write_text(json.dumps(report))
    page = _page(build_report(ws.report, model_dir=ws.model, validation_dir=ws.validation))
    assert "Status: not_checked: no champion is published" in page.sections["drift"]


def test_inputs_of_the_wrong_type_leave_their_sections_not_available_and_the_rest_drawn(tmp_path):
    ws = _run(tmp_path)
    decision = json.loads((ws.gate / "decision.json").read_text())
    decision.update(thresholds=[59.7], live_baseline={"model": "champion v0001", "top1_accuracy": 80.0})
    (ws.gate / "decision.json").write_text(json.dumps(decision))
    evaluation = json.loads((ws.eval / "eval.json").read_text())
    evaluation["per_class"]["correct"][0] = 10**400  # 400 digits: JSON has no limit, a float does
    (ws.eval / "eval.json").write_text(json.dumps(evaluation))
    page = _page(build_report(ws.report, model_dir=ws.model, eval_dir=ws.eval, gate_dir=ws.gate,
                              validation_dir=ws.validation, registry=registry_manifests()))
    assert list(page.sections) == SECTIONS and page.images == ["training.png"]
    assert ("not available: the accuracy table (eval.json, decision.json, the registry's manifests) could not be "
            "drawn (AttributeError: ") in page.sections["accuracy"]
    assert "not available: eval.json's per-class counts could not be drawn (OverflowError: " in page.sections[
        "per-class"]
    assert "Verdict: pass" in page.sections["gate"] and "1510" in page.sections["validation"]


HOSTILE = "<img src=x onerror=alert(1)>"


class Html(HTMLParser):
    """What a browser would run or fetch from a page: tags, and scripts or stylesheets from elsewhere."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_a_failed_validation_with_markup_in_its_records_is_reported_escaped_and_offline(sample_dir, tmp_path):
    import shutil

    from corruption import VAL0, edit, frames, set_bytes, write_frames

    from pipeline.data import format as fmt
    from pipeline.data.validate import validate_dataset

    data = tmp_path / "imagenet"
    shutil.copytree(sample_dir, data)
    shard = frames(data / VAL0)
    shard[3] = edit(shard[3], set_bytes(fmt.SYNSET, HOSTILE.encode()))
    write_frames(data / VAL0, shard)
    ws = _run(tmp_path)
    report = validate_dataset(data, expect="sample", workers=1, report_dir=ws.validation)
    assert not report.ok and not report.gx["success"]  # labels.synset: a failure GX found
    # Someone with write access to the bucket may put markup in a published report.json too.
    written = json.loads((ws.validation / "report.json").read_text())
    (gx_rule,) = [r for r in written["rules"] if r["rule"] == "labels.synset"]
    gx_rule["examples"][0]["file"] = HOSTILE
    (ws.validation / "report.json").write_text(json.dumps(written))

    index = build_report(ws.report, model_dir=ws.model, eval_dir=ws.eval, gate_dir=ws.gate,
                         validation_dir=ws.validation, registry=[])
    pages = sorted(ws.report.rglob("*.htm*"))
    for page in pages:  # every page a reader can open from the report, offline and inert
        text = page.read_text()
        for tag, attrs in Html(text).tags:
            link = attrs.get("src") or attrs.get("href") or ""
            assert not link.startswith(("http:", "https:", "//")), (page, tag, attrs)
            assert tag != "script" and not (tag == "img" and attrs.get("src") == "x"), (page, tag, attrs)
        assert "<img src=x" not in text, page
    assert pages == [index]  # our page only: GX's Data Docs are not published
    # The suite's results are on the page, each expectation with its verdict and first offending record.
    gx = _page(index).sections["validation"]
    assert "Suite: fail" in gx and "labels.synset" in gx
    assert f"{HOSTILE} record 3: expect_column_pair_values_to_be_equal(synset, label_synset)" in gx  # as text
    assert "&lt;img src=x onerror=alert(1)&gt;" in index.read_text()


def test_cost_per_stage_and_gpu_hours(tmp_path):
    from tasks.common import timed

    ws = RunWorkspace(tmp_path, "manual__cost").create()
    assert read_cost(ws.path) is None
    record_stage(ws.path, "train", 1800.0, 4, started=1000.0)
    record_stage(ws.path, "train", 1800.0, 4)  # a retry: its hours add to the first attempt's
    record_stage(ws.path, "evaluate_baseline", 36.0, 1)
    with pytest.raises(RuntimeError), timed(ws, "evaluate", 1):  # a failed attempt still cost its time
        time.sleep(0.05)
        raise RuntimeError("boom")
    with timed(ws, "report"):
        pass
    cost = read_cost(ws.path)
    assert cost["stages"]["train"] == {"seconds": 3600.0, "gpus": 4, "gpu_hours": 4.0, "attempts": 2}
    assert list(cost["stages"]) == ["train", "evaluate_baseline", "evaluate", "report"]  # the order they started
    assert cost["stages"]["evaluate"]["seconds"] >= 0.05 and cost["stages"]["report"]["gpus"] == 0
    assert cost["gpu_hours"]["training"] == 4.0
    assert cost["gpu_hours"]["evaluation"] == pytest.approx(0.01 + cost["stages"]["evaluate"]["seconds"] / 3600,
                                                             abs=1e-4)
    assert cost["gpu_hours"]["total"] == pytest.approx(cost["gpu_hours"]["training"] + cost["gpu_hours"]["evaluation"])
    assert cost["wall_seconds"] == pytest.approx(time.time() - 1000.0, abs=5)  # first start to last finish
    with pytest.raises(ValueError, match=r"stage '\.\./x'"):
        record_stage(ws.path, "../x", 1.0, 0)


def test_report_task_and_publish_put_the_report_and_cost_in_the_version(s3_env, tmp_path, capsys):
    from tasks import publish, report

    client = s3(s3_env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=BUCKET)
    versions = []
    for n in (1, 2):
        ws = make_run_outputs(RunWorkspace(tmp_path / "ws", f"manual__{n}").create(), top1=80.0 + n)
        write_stages(ws.model / "unused", ws.eval / "unused", ws.gate / "unused", ws.validation)
        record_stage(ws.path, "train", 3600.0, 2)
        summary = report.run(ws, client=client, bucket=BUCKET, prefix="models")
        assert summary == {"report": str(ws.report / "index.html")}
        versions.append(publish.run(ws, client=client, bucket=BUCKET, prefix="models"))
    page = _page(ws.report / "index.html")
    assert "v0001" in page.sections["accuracy"] and "81.00 %" in page.sections["accuracy"]  # the registry's last

    uri = f"s3://{BUCKET}/models/resnet50/v0002/report/index.html"
    assert versions[1]["report_uri"] == uri and f"run report: {uri}" in capsys.readouterr().out
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key="models/resnet50/v0002/manifest.json")["Body"].read())
    assert {"report/index.html", "report/training.png", "report/accuracy.png"} <= set(manifest["files"])
    assert not any(name.startswith("report/data_docs/") for name in manifest["files"])  # GX's HTML stays behind
    assert manifest["cost"]["stages"]["train"]["gpu_hours"] == 2.0
    assert "per_class" not in manifest["metrics"]  # the lists stay in eval.json and the report

    # A registry that cannot be read leaves that part "not available"; the report is still made.
    summary = report.run(ws, client=client, bucket="no-such-bucket", prefix="models")
    page = _page(Path(summary["report"]))
    assert "s3://no-such-bucket/models/resnet50/ could not be read" in page.sections["accuracy"]


def test_a_manifest_whose_strings_are_mathtext_neither_stops_the_report_nor_publish(s3_env, tmp_path):
    from tasks import publish, report

    client = s3(s3_env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=BUCKET)
    runs = []
    for n in (1, 2):
        ws = make_run_outputs(RunWorkspace(tmp_path / "ws", f"manual__{n}").create(), top1=80.0 + n)
        write_stages(ws.model / "unused", ws.eval / "unused", ws.gate / "unused", ws.validation)
        runs.append(ws)
    report.run(runs[0], client=client, bucket=BUCKET, prefix="models")
    publish.run(runs[0], client=client, bucket=BUCKET, prefix="models")
    key = "models/resnet50/v0001/manifest.json"  # anyone who can write the bucket can write this
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps({**manifest, "created_at": "$\\x$"}).encode())

    page = _page(Path(report.run(runs[1], client=client, bucket=BUCKET, prefix="models")["report"]))
    assert page.images == ["training.png", "accuracy.png"]  # its label drawn as plain text (no per-class counts)
    assert "v0001 ($\\x$)" in page.sections["accuracy"] and "not available" not in page.sections["accuracy"]
    assert publish.run(runs[1], client=client, bucket=BUCKET, prefix="models")["version"] == "v0002"


def test_publish_without_a_dag_run_records_no_cost(s3_env, tmp_path):
    from publish_support import make_model_dir, publish

    client = s3(s3_env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=BUCKET)
    result = publish(make_model_dir(tmp_path / "m"), client)
    assert result.manifest["cost"] is None


def test_cli_report_for_a_pulled_version_and_bad_directories(tmp_path):
    help_text = rn50("report", "--help")
    assert help_text.returncode == 0 and "--model-dir" in help_text.stdout and "--out" in help_text.stdout

    version = tmp_path / "v0001"  # as `rn50 pull` leaves a version: every stage's file at its root
    write_stages(version, version, version, version, data_docs=False)
    (version / "manifest.json").write_text(json.dumps({"cost": {"stages": {"train": {
        "seconds": 60.0, "gpus": 8, "gpu_hours": 0.1333, "attempts": 1}}, "gpu_hours": {
        "training": 0.1333, "evaluation": 0.0, "total": 0.1333}, "wall_seconds": 99.0}}))
    made = rn50("report", "--model-dir", str(version))
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == str(version / "report" / "index.html")
    page = _page(version / "report" / "index.html")
    assert "0.1333" in page.sections["cost"] and "1510" in page.sections["validation"]
    assert len(page.images) == 3

    # A pulled version whose decision.json and manifest.json hold the wrong types: those sections say so, the
    # rest is drawn, and plain text even where the user's matplotlibrc asks for LaTeX (there is none here).
    decision = json.loads((version / "decision.json").read_text())
    decision["live_baseline"]["model"]["version"] = "$\\x$"
    (version / "decision.json").write_text(json.dumps({**decision, "reasons": 5}))
    (version / "manifest.json").write_text(json.dumps({"cost": {"stages": ["train"], "gpu_hours": {}}}))
    mpl = tmp_path / "mplconfig"
    mpl.mkdir()
    (mpl / "matplotlibrc").write_text("text.usetex: True\n")
    made = rn50("report", "--model-dir", str(version), env={**venv_env(), "MPLCONFIGDIR": str(mpl)})
    assert made.returncode == 0 and made.stderr == "", made.stderr
    page = _page(version / "report" / "index.html")
    assert page.images == ["training.png", "accuracy.png", "per_class.png"]
    assert "live baseline: champion $\\x$" in page.sections["accuracy"]
    for section, why in (("gate", "decision.json could not be drawn (TypeError: "),
                         ("cost", "the cost record could not be drawn (AttributeError: ")):
        assert f"not available: {why}" in page.sections[section], page.sections[section]
    assert "Verdict" not in page.sections["gate"]
    for section in ("summary", "training", "accuracy", "per-class", "validation", "drift"):
        assert "could not be drawn" not in page.sections[section], section

    for bad, why in ((tmp_path / "nope", "no such model directory"),):
        result = rn50("report", "--model-dir", str(bad))
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr.strip() == f"rn50 report: error: {bad}: {why}"
    (tmp_path / "file").write_text("")
    result = rn50("report", "--model-dir", str(version), "--out", str(tmp_path / "file"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"rn50 report: error: {tmp_path / 'file'}: cannot write the report")
