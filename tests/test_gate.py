"""The gate: NGC baselines as data, the pass rule at its edges, and decision.json written every time."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support import rn50

from pipeline import gate
from pipeline.contracts.names import DECISION_FILE
from pipeline.gate import (
    DEFAULT_TOLERANCE,
    FLOORS,
    NGC_THROUGHPUT,
    GateFailed,
    LiveBaseline,
    champion_from_manifest,
    decide,
    floor_for,
    run_gate,
)
from pipeline.recipe import get_profile


def test_baselines_are_ngcs_figures_with_their_source():
    expected = {
        "ngc-90e-amp-a100": 76.93, "ngc-90e-amp-v100": 76.99, "ngc-90e-tf32-a100": 77.01,
        "ngc-90e-fp32-v100": 77.01, "ngc-250e-amp": 78.35, "ngc-250e-fp32": 78.34, "smoke": 60.0,
    }
    assert {name: b.top1_accuracy for name, b in FLOORS.items()} == expected
    assert all("DeepLearningExamples" in b.source for b in FLOORS.values() if not b.sanity_check)
    assert [b.name for b in FLOORS.values() if b.sanity_check] == ["smoke"]
    assert NGC_THROUGHPUT == {"a100": 2375.0, "v100": 1270.0}


def test_the_profile_selects_the_baseline():
    assert floor_for("ngc-90e").top1_accuracy == 76.93
    assert floor_for("ngc-90e", amp=False).top1_accuracy == 77.01
    assert floor_for("ngc-250e").top1_accuracy == 78.35
    assert floor_for("ngc-250e", amp=False).top1_accuracy == 78.34
    assert floor_for("smoke").sanity_check
    with pytest.raises(ValueError, match="no baseline for profile 'ngc-30e'"):
        floor_for("ngc-30e")


@pytest.mark.parametrize(("top1", "verdict"), [(76.63, "pass"), (76.62, "fail"), (80.0, "pass"), (10.0, "fail")])
def test_baseline_rule_at_its_edge(top1, verdict):
    d = decide(top1, floor_for("ngc-90e"), profile="ngc-90e")
    assert d.verdict == verdict and d.publish == (verdict == "pass")
    assert d.thresholds["baseline_min"] == 76.63
    assert any("NGC baseline ngc-90e-amp-a100 76.93 %" in r for r in d.reasons)


CHAMPION = {"kind": "champion", "version": "v0007", "uri": "s3://b/models/resnet50/v0007/"}
# What eval.json records of the validation data it scored (pipeline.data.input.split_identity).
IMAGENET = {"split": "validation", "shards": 128, "records": 50000, "bytes": 6_400_000_000, "sha256": "a" * 64,
            "dataset_version": "3f2a9c1e5d7b40a8b1c2d3e4f5a6b7c8"}
LIVE = LiveBaseline(CHAMPION, top1_accuracy=77.5, top5_accuracy=93.6, eval_count=50000, data=IMAGENET)


@pytest.mark.parametrize(("top1", "verdict", "sign"), [
    (78.1, "pass", ">="),  # better than the baseline
    (77.5, "pass", ">="),  # equal
    (77.2, "pass", ">="),  # worse, but within the tolerance: 77.2 >= 77.5 - 0.3
    (77.19, "fail", "<"),  # worse by more than the tolerance
])
def test_the_live_baseline_rule(top1, verdict, sign):
    d = decide(top1, floor_for("ngc-90e"), live=LIVE, top5=93.0, eval_count=50000, data=IMAGENET)
    assert (d.verdict, d.thresholds["live_min"]) == (verdict, 77.2)
    assert d.reasons[0].startswith("PASS: top-1") and "NGC baseline" in d.reasons[0]  # the floor still applies
    assert d.reasons[1] == (f"{verdict.upper()}: top-1 {top1:.2f} % {sign} 77.20 % (live baseline champion v0007: "
                            "77.50 % on the same 50000 images - 0.3 pp)")
    # Both models' figures, record counts and data, and the baseline's identity are in the decision.
    assert d.candidate == {"top1_accuracy": top1, "top5_accuracy": 93.0, "eval_count": 50000, "data": IMAGENET}
    assert d.live_baseline == {"model": CHAMPION, "top1_accuracy": 77.5, "top5_accuracy": 93.6, "eval_count": 50000,
                               "data": IMAGENET}
    assert decide(77.19, floor_for("ngc-90e"), live=LIVE, eval_count=50000, data=IMAGENET,
                  tolerance=1.0).verdict == "pass"


def test_without_a_live_baseline_the_floor_decides_and_the_champions_recorded_number_does_not():
    champion = {"version": "v0007", "top1_accuracy": 99.0, "uri": "s3://b/models/resnet50/v0007/"}
    d = decide(77.0, floor_for("ngc-90e"), champion=champion, no_live="nothing is published")
    assert (d.verdict, d.live_baseline, d.thresholds["live_min"], d.champion) == ("pass", None, None, champion)
    assert d.reasons[1] == ("PASS: no live baseline: nothing is published; champion v0007's recorded 99.00 % was "
                            "measured on other data and decides nothing")
    assert decide(76.0, floor_for("ngc-90e"), tolerance=1.0).verdict == "pass"
    assert decide(76.0, floor_for("ngc-90e")).verdict == "fail"  # the floor: 76.93 - 0.3
    with pytest.raises(ValueError, match="tolerance -1 pp: must be between 0 and"):
        decide(77.0, floor_for("ngc-90e"), tolerance=-1)


def test_a_live_baseline_measured_on_other_records_fails_the_gate_naming_both_counts():
    for count in (49999, None):  # other data, or a candidate's eval.json without a count
        d = decide(90.0, floor_for("ngc-90e"), live=LIVE, eval_count=count)
        assert d.verdict == "fail" and d.thresholds["live_min"] is None
        assert d.reasons[1] == (f"FAIL: the candidate was evaluated on {count} validation records and the live "
                                "baseline champion v0007 on 50000: not the same data, no comparison")


def test_a_live_baseline_measured_on_other_images_of_the_same_count_fails_the_gate_naming_both():
    other = {**IMAGENET, "sha256": "b" * 64, "dataset_version": None}  # another 50,000 images
    live = LiveBaseline(CHAMPION, top1_accuracy=77.5, top5_accuracy=93.6, eval_count=50000, data=other)
    d = decide(90.0, floor_for("ngc-90e"), live=live, eval_count=50000, data=IMAGENET)
    assert d.verdict == "fail" and d.thresholds["live_min"] is None
    assert d.reasons[1] == (
        "FAIL: the candidate was evaluated on validation aaaaaaaaaaaaaaaa (50000 records in 128 shards, dataset "
        "3f2a9c1e5d7b40a8b1c2d3e4f5a6b7c8) and the live baseline champion v0007 on validation bbbbbbbbbbbbbbbb "
        "(50000 records in 128 shards): not the same data, no comparison")
    # The same shards are the same data, whatever each side knew of the dataset's version.
    same = LiveBaseline(CHAMPION, 77.5, 93.6, 50000, data={**IMAGENET, "dataset_version": None})
    assert decide(90.0, floor_for("ngc-90e"), live=same, eval_count=50000, data=IMAGENET).verdict == "pass"


@pytest.mark.parametrize(("ours", "theirs", "who"), [
    (None, IMAGENET, "the candidate's eval.json records"),
    (IMAGENET, None, "the live baseline's eval.json records"),
    (None, None, "the candidate's and the live baseline's eval.json record"),
    ({"sha256": 7}, IMAGENET, "the candidate's eval.json records"),  # not a digest
])
def test_an_eval_json_that_names_no_data_cannot_be_compared_with_a_live_baseline(ours, theirs, who):
    live = LiveBaseline(CHAMPION, top1_accuracy=77.5, top5_accuracy=93.6, eval_count=50000, data=theirs)
    d = decide(90.0, floor_for("ngc-90e"), live=live, eval_count=50000, data=ours)
    assert d.verdict == "fail" and d.thresholds["live_min"] is None
    assert d.reasons[1] == (f"FAIL: cannot tell that the candidate and the live baseline champion v0007 were "
                            f"evaluated on the same data: {who} no data identity (written before rn50 evaluate "
                            "recorded one); evaluate again")


def test_the_tolerances_are_bounded_and_a_looser_gate_is_a_forced_publish():
    smoke, bound = floor_for("smoke"), gate.MAX_TOLERANCE
    champion = {"version": "v0001", "top1_accuracy": 95.0}
    assert DEFAULT_TOLERANCE < bound <= 3  # a few points, not a switch that turns the gate off
    for kwargs in ({"tolerance": bound + 0.01}, {"tolerance": 100.0}, {"tolerance": float("inf")}):
        with pytest.raises(ValueError, match=f"above the {bound:g} pp bound; a looser gate is a forced publish"):
            decide(40.0, smoke, champion=champion, **kwargs)
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match=f"must be between 0 and {bound:g}"):
            decide(40.0, smoke, tolerance=bad, force_publish=True, force_reason="anything")
    assert decide(60.0 - bound, smoke, tolerance=bound).verdict == "pass"  # the bound itself is allowed
    forced = decide(40.0, smoke, champion=champion, tolerance=25.0, force_publish=True,
                    force_reason="relabelled validation set")
    # The honest verdict: a gate looser than the bound is a failed gate, published only because it was forced.
    assert (forced.verdict, forced.publish, forced.force_publish) == ("fail", True, True)
    assert f"FAIL: tolerance 25 pp is above the {bound:g} pp bound" in forced.reasons
    assert forced.reasons[-1] == "OVERRIDE: force_publish: relabelled validation set"


def test_force_publish_needs_a_reason_and_keeps_the_honest_verdict():
    with pytest.raises(ValueError, match="force_publish needs a reason"):
        decide(50.0, floor_for("ngc-90e"), force_publish=True, force_reason="  ")
    d = decide(50.0, floor_for("ngc-90e"), force_publish=True, force_reason="hotfix for label bug #12")
    assert (d.verdict, d.publish, d.force_reason) == ("fail", True, "hotfix for label bug #12")
    assert d.reasons[-1] == "OVERRIDE: force_publish: hotfix for label bug #12"


SAMPLE = {"split": "validation", "shards": 2, "records": 500, "bytes": 1_234_567, "sha256": "5" * 64,
          "dataset_version": None}


def _model_dir(tmp_path: Path, top1: float | None, profile: str = "smoke") -> Path:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    get_profile(profile).save(model_dir)
    if top1 is not None:
        (model_dir / "eval.json").write_text(json.dumps({"top1_accuracy": top1, "eval_count": 500, "data": SAMPLE}))
    return model_dir


def test_run_gate_writes_the_decision_when_passing(tmp_path):
    model_dir = _model_dir(tmp_path, 91.4)
    decision = run_gate(model_dir)
    written = json.loads((model_dir / DECISION_FILE).read_text())
    assert written["verdict"] == "pass" and written["profile"] == "smoke"
    assert written["baseline"]["name"] == "smoke" and written["baseline"]["sanity_check"] is True
    assert written["thresholds"]["baseline_min"] == 59.7
    assert written["inputs"]["eval"]["top1_accuracy"] == 91.4
    assert decision.verdict == "pass"


def test_the_decision_carries_the_evaluation_without_its_per_class_lists(tmp_path):
    model_dir = _model_dir(tmp_path, 91.4)
    per_class = {"correct": [45] * 1000, "count": [50] * 1000}
    (model_dir / "eval.json").write_text(json.dumps({"top1_accuracy": 91.4, "eval_count": 500, "data": SAMPLE,
                                                     "per_class": per_class}))
    run_gate(model_dir)
    written = json.loads((model_dir / DECISION_FILE).read_text())
    assert written["inputs"]["eval"] == {"top1_accuracy": 91.4, "eval_count": 500, "data": SAMPLE}


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda d: (d / "eval.json").unlink(), "eval.json: missing"),
        (lambda d: (d / "eval.json").write_text("{not json"), "eval.json: not valid JSON"),
        (lambda d: (d / "eval.json").write_text('{"top1_accuracy": "high"}'), "top1_accuracy is 'high'"),
        (lambda d: (d / "eval.json").write_text('{"top1_accuracy": 20.0}'), "FAIL: top-1 20.00 % < 59.70 %"),
    ],
)
def test_a_failing_gate_still_writes_its_decision_and_raises(tmp_path, setup, reason):
    model_dir = _model_dir(tmp_path, 91.4)
    setup(model_dir)
    with pytest.raises(GateFailed) as failure:
        run_gate(model_dir)
    written = json.loads((model_dir / DECISION_FILE).read_text())
    assert written["verdict"] == "fail" and written["publish"] is False
    assert any(reason in r for r in written["reasons"]), written["reasons"]
    assert reason in str(failure.value)


def test_champion_from_a_manifest():
    assert champion_from_manifest(None) is None
    champ = champion_from_manifest({"version": "v0003", "metrics": {"top1_accuracy": 76.9}})
    assert champ["version"] == "v0003" and champ["top1_accuracy"] == 76.9
    with pytest.raises(ValueError, match="v0004"):
        champion_from_manifest({"version": "v0004", "metrics": {}})


def _gate(*args: str) -> subprocess.CompletedProcess:
    return rn50("gate", *args, timeout=60)


def test_cli_exit_codes(tmp_path):
    model_dir = _model_dir(tmp_path, 40.0)
    failed = _gate("--model-dir", str(model_dir))
    assert failed.returncode == 1
    assert "FAIL: top-1 40.00 % < 59.70 % (sanity floor smoke 60.00 % - 0.3 pp)" in failed.stdout
    assert f"gate: FAIL; decision: {model_dir / DECISION_FILE}" in failed.stdout

    too_loose = _gate("--model-dir", str(model_dir), "--tolerance", "25")
    assert too_loose.returncode == 2 and len(too_loose.stderr.splitlines()) == 1, too_loose.stderr
    assert too_loose.stderr.startswith(f"rn50 gate: error: tolerance 25 pp is above the {gate.MAX_TOLERANCE:g} pp")
    (model_dir / "eval.json").write_text(json.dumps({"top1_accuracy": 60.0 - gate.MAX_TOLERANCE}))
    passed = _gate("--model-dir", str(model_dir), "--tolerance", str(gate.MAX_TOLERANCE))
    assert passed.returncode == 0 and "gate: PASS" in passed.stdout
    (model_dir / "eval.json").write_text(json.dumps({"top1_accuracy": 40.0}))

    usage = _gate("--model-dir", str(model_dir), "--force-publish")
    assert usage.returncode == 2
    assert usage.stderr.strip() == (
        "rn50 gate: error: force_publish needs a reason (force_reason): it is recorded in the manifest"
    )
    forced = _gate("--model-dir", str(model_dir), "--force-publish", "--force-reason", "demo")
    assert forced.returncode == 0 and "gate: FAIL (publish forced)" in forced.stdout
    assert json.loads((model_dir / DECISION_FILE).read_text())["force_reason"] == "demo"


def test_the_decision_says_where_it_looked_for_a_champion(tmp_path):
    model_dir = _model_dir(tmp_path, 91.4)
    run_gate(model_dir, registry="s3://b/team/resnet50/")
    written = json.loads((model_dir / DECISION_FILE).read_text())
    assert (written["registry"], written["champion"], written["verdict"]) == ("s3://b/team/resnet50/", None, "pass")
    assert "PASS: no live baseline: none was given (rn50 gate --baseline DIR)" in written["reasons"]
    run_gate(model_dir)
    assert json.loads((model_dir / DECISION_FILE).read_text())["registry"] is None


def _baseline_dir(folder: Path, identity: dict | None, evaluation: dict | None) -> Path:
    folder.mkdir(parents=True)
    if identity is not None:
        (folder / "baseline.json").write_text(json.dumps(identity))
    if evaluation is not None:
        (folder / "eval.json").write_text(json.dumps(evaluation))
    return folder


def test_run_gate_reads_the_live_baseline_and_refuses_one_it_cannot_read(tmp_path):
    model_dir = _model_dir(tmp_path, 91.4)  # eval_count 500
    good = _baseline_dir(tmp_path / "good", CHAMPION, {"top1_accuracy": 91.6, "top5_accuracy": 99.0,
                                                      "eval_count": 500, "data": SAMPLE})
    written = run_gate(model_dir, baseline_dir=good)
    assert written.live_baseline["model"] == CHAMPION and written.thresholds["live_min"] == 91.3
    with pytest.raises(GateFailed, match=r"FAIL: top-1 91\.40 % < 91\.50 % \(live baseline champion v0007"):
        run_gate(model_dir, baseline_dir=good, tolerance=0.1)
    none = _baseline_dir(tmp_path / "none", {"kind": "none", "reason": "nothing is published under s3://b/m/"}, None)
    reasons = run_gate(model_dir, baseline_dir=none).reasons
    assert "PASS: no live baseline: nothing is published under s3://b/m/" in reasons
    # A baseline that should be there but is not readable is a failed gate, never a silent pass on the floor.
    for name, identity, evaluation, reason in (
        ("gone", None, None, "gone: missing"),
        ("no-model", None, {"top1_accuracy": 91.6, "top5_accuracy": 99.0, "eval_count": 500},
         "no-model: names no model to compare with"),
        ("no-eval", CHAMPION, None, "no-eval/eval.json: missing"),
        ("bad-eval", CHAMPION, {"top1_accuracy": 91.0}, "bad-eval/eval.json: no usable top1_accuracy"),
        ("no-kind", {"version": "v0001"}, None, "no-kind/baseline.json: not a baseline record"),
    ):
        folder = tmp_path / name if name == "gone" else _baseline_dir(tmp_path / name, identity, evaluation)
        with pytest.raises(GateFailed, match=reason) as failed:
            run_gate(model_dir, baseline_dir=folder)
        # and no "PASS: no live baseline" beside it: there is one, it could not be read
        assert not any("no live baseline" in r for r in failed.value.decision.reasons), failed.value.decision.reasons
    # A model directory training left, evaluated on this data, is a live baseline too.
    trained = _baseline_dir(tmp_path / "trained", None, {"top1_accuracy": 91.6, "top5_accuracy": 99.0,
                                                        "eval_count": 500, "data": SAMPLE})
    (trained / "config.json").write_text((model_dir / "config.json").read_text())
    assert run_gate(model_dir, baseline_dir=trained).live_baseline["model"] == {"kind": "path",
                                                                                "path": str(trained.resolve())}


def test_rn50_gate_refuses_a_baseline_evaluated_on_other_images_of_the_same_count(tmp_path):
    model_dir = _model_dir(tmp_path, 91.4)  # 500 records of SAMPLE
    other = {**SAMPLE, "sha256": "6" * 64, "bytes": 1_234_000}
    baseline = _baseline_dir(tmp_path / "elsewhere", None, {"top1_accuracy": 91.6, "top5_accuracy": 99.0,
                                                           "eval_count": 500, "data": other})
    (baseline / "config.json").write_text((model_dir / "config.json").read_text())
    refused = _gate("--model-dir", str(model_dir), "--baseline", str(baseline))
    assert refused.returncode == 1, refused.stdout
    assert (f"FAIL: the candidate was evaluated on validation {'5' * 16} (500 records in 2 shards) and the live "
            f"baseline path {baseline.resolve()} on validation {'6' * 16} (500 records in 2 shards): not the same "
            "data, no comparison") in refused.stdout
    written = json.loads((model_dir / DECISION_FILE).read_text())
    assert (written["candidate"]["data"], written["live_baseline"]["data"]) == (SAMPLE, other)


# -- against a real registry (moto_server over HTTP) ------------------------------------------------


def _check_accuracy(root: Path, run_id: str, top1: float, client, *, prefix: str = "models",
                    passes: bool = True) -> dict:
    """The DAG's check_accuracy task on a model of this top-1; returns the decision.json it wrote."""
    from publish_support import BUCKET

    from pipeline.workspace import RunWorkspace
    from tasks import check_accuracy

    ws = RunWorkspace(root / "ws", run_id).create()
    ws.model.mkdir()
    get_profile("smoke").save(ws.model)
    ws.eval.mkdir()
    (ws.eval / "eval.json").write_text(json.dumps({"top1_accuracy": top1}))
    ws.baseline.mkdir()  # as evaluate_baseline leaves it when the run has no baseline model
    (ws.baseline / "baseline.json").write_text(json.dumps({"kind": "none", "reason": "no baseline model"}))
    if passes:
        check_accuracy.run(ws, profile="smoke", client=client, bucket=BUCKET, prefix=prefix)
    else:
        with pytest.raises(Exception, match="FAIL: top-1"):  # AirflowFailException: final, never retried
            check_accuracy.run(ws, profile="smoke", client=client, bucket=BUCKET, prefix=prefix)
    assert sorted(p.name for p in ws.gate.iterdir()) == [DECISION_FILE]  # the gate writes its own folder only
    assert sorted(p.name for p in ws.model.iterdir()) == ["config.json"]
    return json.loads((ws.gate / DECISION_FILE).read_text())


def test_the_champion_comes_from_the_registry_and_an_empty_location_is_recorded(registry, tmp_path):
    from publish_support import BUCKET, make_model_dir

    from pipeline.stages.publish import publish_model

    raw, client = registry
    root = f"s3://{BUCKET}/models/resnet50/"
    empty = _check_accuracy(tmp_path, "empty", 91.4, client)
    assert (empty["verdict"], empty["registry"], empty["champion"]) == ("pass", root, None)
    assert "PASS: no live baseline: no baseline model" in empty["reasons"]

    # The champion is recorded; its own number (95.0, measured on whatever data it saw) is no threshold.
    publish_model(make_model_dir(tmp_path / "v1", top1=95.0), client=client, bucket=BUCKET, dvc_prefix=None)
    worse = _check_accuracy(tmp_path, "worse", 91.4, client)
    assert (worse["verdict"], worse["champion"]["version"], worse["registry"]) == ("pass", "v0001", root)
    # latest.json lost (deleted, or a first publish killed before it): the location is not empty, and
    # the champion is still the newest complete version.
    raw.delete_object(Bucket=BUCKET, Key="models/resnet50/latest.json")
    again = _check_accuracy(tmp_path, "again", 91.4, client)
    assert again["champion"]["version"] == "v0001"
    # A prefix with nothing under it passes without a champion, and the decision says where it looked.
    elsewhere = _check_accuracy(tmp_path, "elsewhere", 91.4, client, prefix="scratch")
    assert (elsewhere["registry"], elsewhere["champion"]) == (f"s3://{BUCKET}/scratch/resnet50/", None)
    with pytest.raises(ValueError, match=r"prefix '\.\./models'"):
        _check_accuracy(tmp_path, "escape", 91.4, client, prefix="../models")


@pytest.mark.parametrize("bad", ["", "/models", "models/", "a//b", "../models", "models/..", "./models", "mod els",
                                 "models\n", "a\\b", "mödels"])
def test_a_prefix_is_a_plain_key_path(bad):
    from pipeline.contracts.registry import PREFIX_PATTERN, model_prefix

    with pytest.raises(ValueError, match=r"prefix .*: must match") as refused:
        model_prefix(bad, "resnet50")
    assert PREFIX_PATTERN in str(refused.value)


def test_good_prefixes_and_model_names():
    from pipeline.contracts.registry import model_prefix

    assert model_prefix("models", "resnet50") == "models/resnet50/"
    assert model_prefix("team-a/models.v2", "resnet_50") == "team-a/models.v2/resnet_50/"
    for model in ("", "..", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="model name"):
            model_prefix("models", model)


def test_cli_refuses_a_bad_prefix_in_one_line(registry, s3_env):
    import os

    from publish_support import BUCKET

    for command in (("list", "--bucket", BUCKET), ("pull", "--bucket", BUCKET, "/tmp/rn50-never-written"),
                    ("gate", "--model-dir", "/tmp/rn50-no-model", "--bucket", BUCKET)):
        result = rn50(*command, "--prefix", "../models", env={**os.environ, **s3_env})
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"rn50 {command[0]}: error: prefix '../models': must match")
        assert len(result.stderr.splitlines()) == 1


def test_rn50_gate_takes_a_pulled_version_evaluated_on_this_data_as_its_live_baseline(registry, tmp_path):
    from publish_support import BUCKET, make_model_dir

    from pipeline.publish.pull import pull_version
    from pipeline.stages.publish import publish_model

    _, client = registry
    publish_model(make_model_dir(tmp_path / "v1", top1=95.0), client=client, bucket=BUCKET, dvc_prefix=None)
    pulled = pull_version(client, BUCKET, tmp_path / "pulled").dest
    model_dir = _model_dir(tmp_path, 91.4)  # 500 records
    # As pulled, its eval.json is the one published with it (95.0 on its own data): not a live figure.
    stale = _gate("--model-dir", str(model_dir), "--baseline", str(pulled))
    assert stale.returncode == 1
    assert f"FAIL: {pulled}/eval.json: the figures published with v0001, measured on its own data" in stale.stdout
    # `rn50 evaluate --model-dir pulled` on this data replaces it: then it is the live baseline.
    (pulled / "eval.json").write_text(json.dumps({"top1_accuracy": 91.5, "top5_accuracy": 99.0, "eval_count": 500,
                                                  "data": SAMPLE}))
    live = _gate("--model-dir", str(model_dir), "--baseline", str(pulled))
    assert live.returncode == 0, live.stdout
    assert ("PASS: top-1 91.40 % >= 91.20 % (live baseline champion v0001: 91.50 % on the same 500 images - 0.3 pp)"
            in live.stdout)
    written = json.loads((model_dir / DECISION_FILE).read_text())["live_baseline"]
    assert written["model"] == {"kind": "champion", "version": "v0001", "uri": f"s3://{BUCKET}/models/resnet50/v0001/"}


def test_the_reasons_print_a_baseline_records_text_escaped(tmp_path):
    # baseline.json (or a pulled version's manifest.json) is another's text: its escape sequences are shown,
    # not sent to the terminal (clear screen, an OSC 8 hyperlink, the 8-bit CSI, a forged line).
    source = "/ngc\x1b[2J\x1b]8;;https://evil.example/\x07rn50\x9b31m\r\nPASS: forged"
    model_dir = _model_dir(tmp_path, 91.4)
    baseline = _baseline_dir(tmp_path / "b", {"kind": "ngc", "source": source, "sha256": {}},
                             {"top1_accuracy": 91.0, "top5_accuracy": 99.0, "eval_count": 500})
    result = _gate("--model-dir", str(model_dir), "--baseline", str(baseline))
    controls = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))} - {"\n"}
    assert not controls & set(result.stdout), repr(result.stdout)
    assert "NGC checkpoint /ngc\\x1b[2J\\x1b]8;;https://evil.example/\\x07rn50\\x9b31m\\x0d\\x0aPASS: forged" in \
        result.stdout, result.stdout
    assert not any(line.startswith("PASS: forged") for line in result.stdout.splitlines())
    assert json.loads((model_dir / DECISION_FILE).read_text())["live_baseline"]["model"]["source"] == source
