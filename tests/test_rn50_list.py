"""`rn50 list` over versions published to the S3 server: per version top-1/top-5, the live baseline its gate
passed, forced or not, the dataset version, the date and the run report's URI; within 120 columns; --json."""

from __future__ import annotations

import json
import os

import pytest
from publish_support import BUCKET, make_model_dir
from support import rn50

from pipeline.contracts.names import DECISION_FILE
from pipeline.stages.publish import publish_model

MD5 = "3f2a9c1e5d7b40a8b1c2d3e4f5a6b7c8"
BASE = f"s3://{BUCKET}/models/resnet50/"


def _publish(client, path, *, live, verdict="pass", report=False, dataset=MD5, seed=0):
    """A version whose gate measured it against `live` (a LiveBaseline's model, or None: no live baseline)."""
    model_dir = make_model_dir(path, seed=seed, verdict=verdict, force=verdict != "pass",
                               reason="ops sign-off" if verdict != "pass" else None)
    decision = json.loads((model_dir / DECISION_FILE).read_text())
    decision["live_baseline"] = None if live is None else {**decision["live_baseline"], "model": live}
    (model_dir / DECISION_FILE).write_text(json.dumps(decision))
    extra = None
    if report:
        (path.parent / f"{path.name}-report").mkdir()
        page = path.parent / f"{path.name}-report" / "index.html"
        page.write_text("<html><body>run report</body></html>\n")
        extra = {"report/index.html": page}
    publish_model(model_dir, client=client, bucket=BUCKET, dvc_prefix=None, extra_files=extra,
                  lineage={"dataset_version": dataset})


@pytest.fixture
def three_versions(registry, tmp_path):
    _, client = registry
    _publish(client, tmp_path / "a", live=None)  # the first: nothing to measure against but the floor
    _publish(client, tmp_path / "b", live={"kind": "champion", "version": "v0001", "uri": BASE + "v0001/"},
             verdict="fail", report=True, seed=1)
    _publish(client, tmp_path / "c", live={"kind": "ngc", "source": "/ngc/rn50", "sha256": {}}, report=True, seed=2,
             dataset="unversioned:" + "ab" * 32)


def _list(s3_env, *args):
    result = rn50("list", "--bucket", BUCKET, *args, env={**os.environ, **s3_env})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_rn50_list_shows_each_versions_figures_baseline_forcing_data_and_report(three_versions, s3_env):
    header, *rows, under = _list(s3_env).splitlines()
    versions = json.loads(_list(s3_env, "--json"))
    assert header.split()[:2] == ["VERSION", "DATE"] and header.endswith("REPORT")
    assert under == f"REPORT is under {BASE}"
    assert all(len(line) <= 120 for line in [header, *rows]), rows  # a report's URI is shown under the registry's
    cells = [row.split() for row in rows]
    # VERSION, DATE, TOP-1, TOP-5, BASELINE PASSED, GATE, DATASET, REPORT
    assert [c[0] for c in cells] == ["v0001", "v0002", "v0003"]
    assert all(c[1] == versions[0]["created_at"][:10] and (c[2], c[3]) == ("95.00", "99.20") for c in cells)
    assert cells[0][4:] == ["none", "(floor", "only)", "pass", MD5[:12], "-"]
    assert cells[1][4:] == ["champion", "v0001", "fail", "forced", MD5[:12], "v0002/report/index.html"]
    assert cells[2][4:] == ["ngc", "pass", "dir:abababab", "v0003/report/index.html", "latest"]
    # The columns line up: each row's report starts where the header's does.
    column = header.index("REPORT")
    assert [row[column:].split()[0] for row in rows] == ["-", "v0002/report/index.html", "v0003/report/index.html"]


def test_rn50_list_json_holds_full_uris_and_versions(three_versions, s3_env):
    versions = json.loads(_list(s3_env, "--json"))
    assert [(v["version"], v["baseline"], v["forced"], v["verdict"], v["latest"]) for v in versions] == [
        ("v0001", "none (floor only)", False, "pass", False),
        ("v0002", "champion v0001", True, "fail", False),
        ("v0003", "ngc", False, "pass", True),
    ]
    assert [v["report"] for v in versions] == [None, BASE + "v0002/report/index.html", BASE + "v0003/report/index.html"]
    assert versions[0]["dataset_version"] == MD5 and versions[2]["dataset_version"] == "unversioned:" + "ab" * 32
    assert (versions[0]["top1_accuracy"], versions[0]["top5_accuracy"]) == (95.0, 99.2)
    assert versions[0]["created_at"] and versions[0]["uri"] == BASE + "v0001/"


def test_no_live_baseline_is_read_from_the_gate_not_from_the_champion_field(registry, s3_env, tmp_path):
    # A gate that found a champion but could not measure it (no live baseline) passed on the floor alone; one
    # that measured NGC's checkpoint with no champion published passed a live baseline all the same.
    _, client = registry
    _publish(client, tmp_path / "a", live={"kind": "ngc", "source": "/ngc/rn50", "sha256": {}})
    model_dir = make_model_dir(tmp_path / "b", seed=1)
    decision = json.loads((model_dir / DECISION_FILE).read_text())
    decision.update(champion={"version": "v0001", "top1_accuracy": 95.0}, live_baseline=None)
    (model_dir / DECISION_FILE).write_text(json.dumps(decision))
    publish_model(model_dir, client=client, bucket=BUCKET, dvc_prefix=None)
    assert [v["baseline"] for v in json.loads(_list(s3_env, "--json"))] == ["ngc", "none (floor only)"]


def test_an_empty_registry_lists_nothing(registry, s3_env):
    assert _list(s3_env) == f"no published versions under {BASE}\n"
    assert json.loads(_list(s3_env, "--json")) == []


# What a manifest's author could send a terminal: clear screen, an OSC 8 hyperlink over other text, a colour
# by the 8-bit CSI (\x9b), a bell, DEL, a carriage return and a newline that would forge a row of the table.
VERDICT = "fail\x1b[2J\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\\r\nv0009  fake row"
KIND = "\x9b31mngc\x07\x7f\x85"
CONTROLS = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))}


def test_manifest_text_reaches_the_terminal_escaped_never_as_control_characters(registry, s3_env, tmp_path):
    _, client = registry
    _publish(client, tmp_path / "a", live={"kind": KIND, "source": "/ngc/rn50", "sha256": {}}, verdict=VERDICT,
             dataset="\x1b[5m" + MD5)
    table = _list(s3_env)
    assert not CONTROLS & set(table.replace("\n", "")), repr(table)
    header, row, under = table.splitlines()  # one row: the newline in the verdict forged none
    assert header.startswith("VERSION") and row.startswith("v0001") and under.startswith("REPORT is under")
    # Shown as what they are, so the reader can see the manifest holds them.
    assert "\\x1b[2J\\x1b]8;;https://evil.example/" in row and "\\x9b31mngc\\x07\\x7f\\x85" in row, row
    assert "\\x0d\\x0av0009" in row and "\\x1b[5m" in row
    raw = _list(s3_env, "--json")
    assert not CONTROLS & set(raw.replace("\n", "")), repr(raw)  # json.dumps escapes them (C1 too: ensure_ascii)
    [version] = json.loads(raw)
    assert (version["verdict"], version["baseline"]) == (VERDICT, KIND)  # --json keeps the text exact
