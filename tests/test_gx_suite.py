"""The Great Expectations suite over the facts table: verdicts, offending (shard, index) pairs, artefacts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data.gx_suite import GxOutcome, GxRuleResult, run_expectations

A, B = "train-00000-of-00002", "train-00001-of-00002"
RULES = {"labels.range", "labels.synset", "image.size_mismatch", "boxes.range", "schema.unique_record", "counts.rows"}
NAN = np.nan


def clean_facts() -> pd.DataFrame:
    """Six healthy records over two shards; (A, 1) and (B, 2) have no boxes (NaN box columns)."""
    return pd.DataFrame(
        {
            "split": ["train"] * 6,
            "shard": [A, A, A, B, B, B],
            "index": np.array([0, 1, 2, 0, 1, 2], dtype="int64"),
            "offset": np.array([0, 100, 200, 0, 120, 240], dtype="int64"),
            "size": np.array([100, 100, 100, 120, 120, 120], dtype="int64"),
            "label": np.array([1, 2, 3, 998, 999, 1000], dtype="int64"),
            "synset": ["n01", "n02", "n03", "n998", "n999", "n1000"],
            "label_synset": ["n01", "n02", "n03", "n998", "n999", "n1000"],
            "height": np.array([64, 48, 32, 64, 80, 64], dtype="int64"),
            "width": np.array([64, 40, 32, 96, 80, 64], dtype="int64"),
            # (B, 2)'s JPEG header was unreadable: NaN dims are not a size mismatch.
            "jpeg_height": [64.0, 48.0, 32.0, 64.0, 80.0, NAN],
            "jpeg_width": [64.0, 40.0, 32.0, 96.0, 80.0, NAN],
            "num_boxes": np.array([1, 0, 2, 1, 3, 0], dtype="int64"),
            "box_xmin_min": [0.0, NAN, 0.1, 0.2, 0.0, NAN],
            "box_ymin_min": [0.0, NAN, 0.1, 0.2, 0.0, NAN],
            "box_xmax_max": [1.0, NAN, 0.9, 0.8, 1.0, NAN],
            "box_ymax_max": [1.0, NAN, 0.9, 0.8, 1.0, NAN],
            "box_w_min": [1.0, NAN, 0.2, 0.6, 0.01, NAN],
            "box_h_min": [1.0, NAN, 0.2, 0.6, 0.01, NAN],
            "content_hash": [f"{i:064x}" for i in range(6)],
        }
    )


def by_rule(outcome: GxOutcome) -> dict[str, list[GxRuleResult]]:
    grouped: dict[str, list[GxRuleResult]] = defaultdict(list)
    for r in outcome.results:
        grouped[r.rule].append(r)
    return grouped


def failing(outcome: GxOutcome, rule: str) -> tuple[int, list[tuple[str, int]]]:
    """Total unexpected count and examples over the failed expectations of one rule."""
    bad = [r for r in by_rule(outcome)[rule] if not r.success]
    return sum(r.unexpected_count for r in bad), [pair for r in bad for pair in r.examples]


def test_module_imports_without_great_expectations() -> None:
    code = "import sys, pipeline.data.gx_suite; assert 'great_expectations' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


def test_clean_table_passes_and_writes_reports(tmp_path: Path) -> None:
    outcome = run_expectations(clean_facts(), tmp_path, expected_rows=6)

    assert outcome.success, outcome.failed()
    assert set(by_rule(outcome)) == RULES
    assert all(r.success and r.unexpected_count == 0 and r.examples == [] for r in outcome.results)
    assert len(outcome.results) == 13  # 1 + 1 + 2 + 6 + 1 + 2
    assert outcome.results[0].expectation == "expect_column_values_to_be_between(label)"

    assert outcome.result_json == tmp_path / "gx_validation_result.json"
    doc = json.loads(outcome.result_json.read_text())
    assert doc["success"] is True
    assert doc["suite_name"] == "imagenet_facts"
    assert outcome.data_docs_index == tmp_path / "gx/uncommitted/data_docs/local_site/index.html"
    assert "imagenet_facts" in outcome.data_docs_index.read_text()


def test_one_defect_per_rule_names_the_offending_records(tmp_path: Path) -> None:
    facts = clean_facts()
    facts.loc[2, ["label", "label_synset"]] = [0, ""]  # (A, 2): label out of range; no label synset for it
    facts.loc[4, "label_synset"] = "n0999"  # (B, 1): synset disagrees with the label map
    facts.loc[0, "jpeg_width"] = 65.0  # (A, 0): JPEG width differs from the record
    facts.loc[3, "box_xmax_max"] = 1.5  # (B, 0): box beyond the right edge
    facts.loc[5, "index"] = 1  # (B, 1) twice

    outcome = run_expectations(facts, tmp_path)

    assert not outcome.success
    assert failing(outcome, "labels.range") == (1, [(A, 2)])
    assert failing(outcome, "labels.synset") == (1, [(B, 1)])
    assert failing(outcome, "image.size_mismatch") == (1, [(A, 0)])
    assert failing(outcome, "boxes.range") == (1, [(B, 0)])
    # Both copies of a duplicated key are unexpected.
    assert failing(outcome, "schema.unique_record") == (2, [(B, 1), (B, 1)])
    assert all(r.success for r in by_rule(outcome)["counts.rows"])

    (width,) = [r for r in outcome.results if not r.success and r.rule == "image.size_mismatch"]
    assert width.expectation == "expect_column_pair_values_to_be_equal(width, jpeg_width)"
    doc = json.loads(outcome.result_json.read_text())
    assert doc["success"] is False


def test_box_bounds_are_inclusive_except_width_and_height(tmp_path: Path) -> None:
    facts = clean_facts()
    facts.loc[0, ["box_xmin_min", "box_xmax_max"]] = [0.0, 1.0]  # touching the edges is fine
    facts.loc[2, "box_w_min"] = 0.0  # (A, 2): zero-width box
    facts.loc[4, "box_ymin_min"] = -0.01  # (B, 1)

    outcome = run_expectations(facts, tmp_path)

    assert failing(outcome, "boxes.range") == (2, [(B, 1), (A, 2)])  # suite order: ymin check before width
    assert [r.rule for r in outcome.failed()] == ["boxes.range", "boxes.range"]


def test_examples_stop_at_twenty_in_table_order(tmp_path: Path) -> None:
    n = 50
    facts = pd.concat([clean_facts()] * (n // 2), ignore_index=True).head(n)
    facts["shard"] = A
    facts["index"] = np.arange(n, dtype="int64")
    facts["label"] = 5000

    outcome = run_expectations(facts, tmp_path)

    (labels,) = by_rule(outcome)["labels.range"]
    assert labels.unexpected_count == n
    assert labels.examples == [(A, i) for i in range(20)]


def test_gx_builds_index_lists_from_the_kept_rows_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The speed-up hook exists in this GX, sees at most 20 unexpected rows, and is removed after the run."""
    from great_expectations.expectations.metrics.map_metric_provider import map_condition_auxilliary_methods as aux

    original = aux.compute_unexpected_pandas_indices
    seen: list[int] = []

    def spy(**kwargs: object) -> object:
        seen.append(len(kwargs["domain_records_df"]))  # type: ignore[arg-type]
        return original(**kwargs)

    monkeypatch.setattr(aux, "compute_unexpected_pandas_indices", spy)
    facts = pd.concat([clean_facts()] * 10, ignore_index=True)
    facts["index"] = np.arange(len(facts), dtype="int64")
    facts["label"] = 0

    outcome = run_expectations(facts, tmp_path)

    assert aux.compute_unexpected_pandas_indices is spy
    assert seen and max(seen) == 20
    assert by_rule(outcome)["labels.range"][0].unexpected_count == 60


def test_expected_rows_mismatch_fails_counts(tmp_path: Path) -> None:
    outcome = run_expectations(clean_facts(), tmp_path, expected_rows=7)

    assert not outcome.success
    assert [(r.rule, r.expectation, r.examples) for r in outcome.failed()] == [
        ("counts.rows", "expect_table_row_count_to_equal(value=7)", [])
    ]


def test_empty_table_fails_counts_only(tmp_path: Path) -> None:
    outcome = run_expectations(clean_facts().head(0), tmp_path)

    assert not outcome.success
    assert {r.rule for r in outcome.failed()} == {"counts.rows"}


def test_rerun_on_same_report_dir(tmp_path: Path) -> None:
    first = run_expectations(clean_facts(), tmp_path, expected_rows=7)
    assert not first.success

    facts = clean_facts()
    facts.loc[1, "label"] = 0
    second = run_expectations(facts, tmp_path)  # suite replaced: no row-count equality any more

    assert not second.success
    assert {r.rule for r in second.failed()} == {"labels.range"}
    assert failing(second, "labels.range") == (1, [(A, 1)])
    assert len(second.results) == 12
    assert json.loads(second.result_json.read_text())["success"] is False
    assert second.data_docs_index.is_file()

    third = run_expectations(clean_facts(), tmp_path, expected_rows=6)
    assert third.success


def test_missing_column_is_an_error_not_a_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="box_h_min"):
        run_expectations(clean_facts().drop(columns="box_h_min"), tmp_path)
