"""The gate: NGC baselines as data, the pass rule at its edges, and decision.json written every time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.gate import (
    BASELINES,
    DECISION_FILE,
    NGC_THROUGHPUT,
    GateFailed,
    baseline_for,
    champion_from_manifest,
    decide,
    run_gate,
)
from pipeline.train.config import get_profile

BIN = Path(sys.executable).parent


def test_baselines_are_ngcs_figures_with_their_source():
    expected = {
        "ngc-90e-amp-a100": 76.93, "ngc-90e-amp-v100": 76.99, "ngc-90e-tf32-a100": 77.01,
        "ngc-90e-fp32-v100": 77.01, "ngc-250e-amp": 78.35, "ngc-250e-fp32": 78.34, "smoke": 60.0,
    }
    assert {name: b.top1_accuracy for name, b in BASELINES.items()} == expected
    assert all("DeepLearningExamples" in b.source for b in BASELINES.values() if not b.sanity_check)
    assert [b.name for b in BASELINES.values() if b.sanity_check] == ["smoke"]
    assert NGC_THROUGHPUT == {"a100": 2375.0, "v100": 1270.0}


def test_the_profile_selects_the_baseline():
    assert baseline_for("ngc-90e").top1_accuracy == 76.93
    assert baseline_for("ngc-90e", amp=False).top1_accuracy == 77.01
    assert baseline_for("ngc-250e").top1_accuracy == 78.35
    assert baseline_for("ngc-250e", amp=False).top1_accuracy == 78.34
    assert baseline_for("smoke").sanity_check
    with pytest.raises(ValueError, match="no baseline for profile 'ngc-30e'"):
        baseline_for("ngc-30e")


@pytest.mark.parametrize(("top1", "verdict"), [(76.63, "pass"), (76.62, "fail"), (80.0, "pass"), (10.0, "fail")])
def test_baseline_rule_at_its_edge(top1, verdict):
    d = decide(top1, baseline_for("ngc-90e"), profile="ngc-90e")
    assert d.verdict == verdict and d.publish == (verdict == "pass")
    assert d.thresholds["baseline_min"] == 76.63
    assert any("NGC baseline ngc-90e-amp-a100 76.93 %" in r for r in d.reasons)


def test_champion_rule_and_tolerances():
    champion = {"version": "v0007", "top1_accuracy": 77.5}
    assert decide(77.2, baseline_for("ngc-90e"), champion=champion).verdict == "pass"  # 77.2 >= 77.5 - 0.3
    failed = decide(77.19, baseline_for("ngc-90e"), champion=champion)
    assert failed.verdict == "fail"
    assert failed.reasons[0].startswith("PASS") and failed.reasons[1].startswith("FAIL")
    assert "champion v0007 77.50 %" in failed.reasons[1]
    assert decide(77.19, baseline_for("ngc-90e"), champion=champion, champion_tolerance=1.0).verdict == "pass"
    assert decide(76.0, baseline_for("ngc-90e"), tolerance=1.0).verdict == "pass"
    lonely = decide(77.0, baseline_for("ngc-90e"))
    assert "PASS: no champion yet (no published `latest`)" in lonely.reasons
    with pytest.raises(ValueError, match="tolerances must be >= 0"):
        decide(77.0, baseline_for("ngc-90e"), tolerance=-1)


def test_force_publish_needs_a_reason_and_keeps_the_honest_verdict():
    with pytest.raises(ValueError, match="force_publish needs a reason"):
        decide(50.0, baseline_for("ngc-90e"), force_publish=True, force_reason="  ")
    d = decide(50.0, baseline_for("ngc-90e"), force_publish=True, force_reason="hotfix for label bug #12")
    assert (d.verdict, d.publish, d.force_reason) == ("fail", True, "hotfix for label bug #12")
    assert d.reasons[-1] == "OVERRIDE: force_publish: hotfix for label bug #12"


def _model_dir(tmp_path: Path, top1: float | None, profile: str = "smoke") -> Path:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    get_profile(profile).save(model_dir)
    if top1 is not None:
        (model_dir / "eval.json").write_text(json.dumps({"top1_accuracy": top1, "eval_count": 500}))
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
    return subprocess.run([str(BIN / "rn50"), "gate", *args], capture_output=True, text=True, timeout=60)


def test_cli_exit_codes(tmp_path):
    model_dir = _model_dir(tmp_path, 40.0)
    failed = _gate("--model-dir", str(model_dir))
    assert failed.returncode == 1
    assert "FAIL: top-1 40.00 % < 59.70 % (sanity floor smoke 60.00 % - 0.3 pp)" in failed.stdout
    assert f"gate: FAIL; decision: {model_dir / DECISION_FILE}" in failed.stdout

    passed = _gate("--model-dir", str(model_dir), "--tolerance", "25")
    assert passed.returncode == 0 and "gate: PASS" in passed.stdout

    usage = _gate("--model-dir", str(model_dir), "--force-publish")
    assert usage.returncode == 2
    assert usage.stderr.strip() == (
        "rn50 gate: error: force_publish needs a reason (force_reason): it is recorded in the manifest"
    )
    forced = _gate("--model-dir", str(model_dir), "--force-publish", "--force-reason", "demo")
    assert forced.returncode == 0 and "gate: FAIL (publish forced)" in forced.stdout
    assert json.loads((model_dir / DECISION_FILE).read_text())["force_reason"] == "demo"
