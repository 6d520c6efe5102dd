"""Great Expectations checks over the facts table: one row per ImageNet TFRecord record.

The facts table (split, shard, index, label, synset, image and box geometry, ...) is built by scanning the
shards; this module states what a healthy table looks like as a Great Expectations 1.x Expectation Suite, so
that the rules live in one declarative place, the validation result is kept as the GX JSON artefact, and the
human-readable report is GX's own Data Docs site. Every expectation carries `meta={"rule": ...}`, a stable id
that callers (and the DAG's quality gate) key on instead of GX's expectation types.

Offending records are named by their (shard, index) pair, taken from GX's own `partial_unexpected_index_list`
(result_format `unexpected_index_column_names`), so that the examples we report are the ones in the GX report.

great_expectations takes about 5 s to import, so it is imported inside the functions that need it: importing
this module (for instance while Airflow parses DAG files) stays fast.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.contracts.names import GX_DATA_DOCS, GX_RESULT
from pipeline.data.drift import DISTRIBUTIONS, quantile_ranges
from pipeline.data.rules import MAX_EXAMPLES
from pipeline.files import write_json

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

SUITE_NAME = "imagenet_facts"
DATA_ASSET = "facts_table"  # the data asset's name when the dataset's version is not known
# A GX run name or data asset name becomes a directory of the GX stores: Airflow's run id characters, no '/'.
NAME_PATTERN = r"[A-Za-z0-9_.~:+-]{1,200}"
# Where a file context rooted at report_dir keeps its default "local_site" Data Docs.
DATA_DOCS_INDEX = Path(*GX_DATA_DOCS)
KEY_COLUMNS = ["shard", "index"]
# The GX 1.24 function that builds unexpected index lists for pandas (see _unexpected_index_list_capped).
_GX_INDEX_HOOK = "compute_unexpected_pandas_indices"

# SUMMARY keeps GX from putting every unexpected value into the result (COMPLETE would, for a million-row
# failure); partial lists stop at MAX_EXAMPLES. `return_unexpected_index_query: False` matters on pandas: left
# unset, GX builds a `df.filter(items=[...every unexpected index...])` string for each expectation.
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": MAX_EXAMPLES,
    "unexpected_index_column_names": KEY_COLUMNS,
    "return_unexpected_index_query": False,
}

# (column, min_value, max_value, strict): box bounds are normalised coordinates, and a box must have a positive
# width and height. NaN (a record without boxes) is a missing value, which column-map expectations skip.
_BOX_BOUNDS: tuple[tuple[str, float | None, float | None, bool], ...] = (
    ("box_xmin_min", 0.0, None, False),
    ("box_ymin_min", 0.0, None, False),
    ("box_xmax_max", None, 1.0, False),
    ("box_ymax_max", None, 1.0, False),
    ("box_w_min", 0.0, None, True),
    ("box_h_min", 0.0, None, True),
)


@dataclass(frozen=True)
class GxRuleResult:
    """The outcome of one expectation, keyed by our rule id rather than by GX's expectation type.

    A rule may span several expectations (e.g. "boxes.range" has one per box column); each expectation gets
    its own GxRuleResult, all carrying the same `rule`, so a count never mixes two different checks.
    """

    rule: str
    expectation: str
    success: bool
    unexpected_count: int
    # Up to MAX_EXAMPLES offending (shard, index) pairs, in table order; empty for table-level expectations.
    examples: list[tuple[str, int]]


@dataclass(frozen=True)
class GxOutcome:
    """Everything a caller needs after validation: the verdict, per-expectation detail, and the artefacts."""

    success: bool
    results: list[GxRuleResult]
    result_json: Path
    data_docs_index: Path
    run_name: str | None = None
    data_asset: str = DATA_ASSET

    def failed(self) -> list[GxRuleResult]:
        """The results that failed, in suite order (what a quality gate prints)."""
        return [r for r in self.results if not r.success]


def _import_gx() -> Any:
    # Analytics must be off before the first import: GX reads the variable when the module loads.
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations

    return great_expectations


@functools.cache
def _quantile_expectation() -> type:
    """GX 1.24's ExpectColumnQuantileValuesToBeBetween with its verdict as a Python bool: the original's is
    numpy's (np.all), which the file results store cannot serialise (TypeError). Defined on first use, so that
    GX is imported only then; GX registers it, and the original's Data Docs renderers, under its own name."""
    gx = _import_gx()

    class ExpectColumnQuantileValuesNearBaseline(gx.expectations.ExpectColumnQuantileValuesToBeBetween):
        def _validate(self, metrics: dict, runtime_configuration: dict | None = None,
                      execution_engine: Any = None) -> dict:
            outcome = super()._validate(metrics, runtime_configuration, execution_engine)
            details = outcome["result"]["details"]
            details["success_details"] = [bool(v) for v in details["success_details"]]
            return {**outcome, "success": bool(outcome["success"])}

    return ExpectColumnQuantileValuesNearBaseline


def build_suite(
    expected_rows: int | None, *, name: str = SUITE_NAME, baseline: dict | None = None
) -> gx.ExpectationSuite:
    """The Expectation Suite for the facts table.

    `expected_rows` is the record count the table must have (e.g. from the dataset manifest); None means the
    count is unknown and only "at least one row" is checked. The suite is returned unsaved: `run_expectations`
    stores it in its context with add_or_update, so a rerun replaces an older suite of the same name.
    A `baseline` data summary (pipeline.data.drift) adds its image width/height/aspect quantile ranges
    (rules `drift.image.*`), the drift checks GX states well.
    """
    gx = _import_gx()
    gxe = gx.expectations

    def meta(rule: str) -> dict[str, str]:
        return {"rule": rule}

    suite = gx.ExpectationSuite(name=name)
    add = suite.add_expectation
    add(gxe.ExpectColumnValuesToBeBetween(column="label", min_value=1, max_value=1000, meta=meta("labels.range")))
    # label_synset is the label map's synset for `label`; run_expectations blanks it (to missing) when the label
    # is out of range, so such a record is reported once, by "labels.range", and not again here.
    add(
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="synset",
            column_B="label_synset",
            ignore_row_if="either_value_is_missing",
            meta=meta("labels.synset"),
        )
    )
    # int64 record dims against float64 JPEG dims: pandas compares 64 == 64.0 as equal, so no cast is needed;
    # NaN means the JPEG header could not be read, which is another check's business, so those rows are skipped.
    for record_col, jpeg_col in (("height", "jpeg_height"), ("width", "jpeg_width")):
        add(
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A=record_col,
                column_B=jpeg_col,
                ignore_row_if="either_value_is_missing",
                meta=meta("image.size_mismatch"),
            )
        )
    for column, lo, hi, strict in _BOX_BOUNDS:
        add(
            gxe.ExpectColumnValuesToBeBetween(
                column=column,
                min_value=lo,
                max_value=hi,
                strict_min=strict and lo is not None,
                strict_max=strict and hi is not None,
                meta=meta("boxes.range"),
            )
        )
    add(gxe.ExpectCompoundColumnsToBeUnique(column_list=KEY_COLUMNS, meta=meta("schema.unique_record")))
    add(gxe.ExpectTableRowCountToBeBetween(min_value=1, meta=meta("counts.rows")))
    if expected_rows is not None:
        add(gxe.ExpectTableRowCountToEqual(value=expected_rows, meta=meta("counts.rows")))
    if baseline is not None:
        for column in DISTRIBUTIONS:
            if ranges := quantile_ranges(baseline, column):
                add(_quantile_expectation()(
                    column=column,
                    quantile_ranges={"quantiles": [q for q, _, _ in ranges],
                                     "value_ranges": [[lo, hi] for _, lo, hi in ranges]},
                    allow_relative_error="nearest",  # as drift.summarize computes them
                    meta=meta(f"drift.image.{column}"),
                ))
    return suite


@contextlib.contextmanager
def _unexpected_index_list_capped() -> Iterator[None]:
    """Make GX 1.24 (pandas) stop building the unexpected index list after the rows it will keep.

    For the SUMMARY index list, GX's `compute_unexpected_pandas_indices` walks *every* unexpected row with
    `DataFrame.at` and a column-name check per row, then keeps the first `partial_unexpected_count` entries.
    Measured on 1.33 M rows that all fail one expectation: about 95 s for a column check and 190 s for a column
    pair, against 4 s for the whole clean suite. Handing it only the first rows of the (table-ordered) unexpected
    frame yields the very same list, so the examples still come from GX. Only GX's one call site, in
    map_condition_auxilliary_methods, is patched, and only while our checkpoint runs; COMPLETE and
    exclude_unexpected_values (which keep everything) are passed through untouched. If a GX upgrade moves the
    function, validation still works, just slower on mass failures (test_gx_suite checks the hook exists).
    """
    from great_expectations.expectations.metrics.map_metric_provider import map_condition_auxilliary_methods as aux

    original = getattr(aux, _GX_INDEX_HOOK, None)
    if original is None:
        yield
        return

    def capped(*, domain_records_df: Any, result_format: dict[str, Any], **kwargs: Any) -> Any:
        keep = result_format.get("partial_unexpected_count")
        if (
            isinstance(keep, int)
            and result_format.get("result_format") != "COMPLETE"
            and not result_format.get("exclude_unexpected_values", False)
        ):
            domain_records_df = domain_records_df.head(keep)
        return original(domain_records_df=domain_records_df, result_format=result_format, **kwargs)

    setattr(aux, _GX_INDEX_HOOK, capped)
    try:
        yield
    finally:
        setattr(aux, _GX_INDEX_HOOK, original)


def _describe(config: Any) -> str:
    """A short label such as "expect_column_values_to_be_between(label)", for logs and gate messages."""
    kwargs = config.kwargs
    if "column" in kwargs:
        args = [kwargs["column"]]
    elif "column_A" in kwargs:
        args = [kwargs["column_A"], kwargs["column_B"]]
    elif "column_list" in kwargs:
        args = list(kwargs["column_list"])
    else:  # table-level: show the bound(s) instead
        args = [f"{k}={kwargs[k]}" for k in ("value", "min_value", "max_value") if kwargs.get(k) is not None]
    return f"{config.type}({', '.join(str(a) for a in args)})"


def _examples(result: dict[str, Any]) -> list[tuple[str, int]]:
    # Each entry is a dict with the domain column(s) plus our index columns, e.g.
    # {"label": 0, "shard": "train-00000-of-00004", "index": 2}; GX keeps table order and cuts at MAX_EXAMPLES.
    entries = result.get("partial_unexpected_index_list") or []
    return [(str(e["shard"]), int(e["index"])) for e in entries[:MAX_EXAMPLES]]


def _raise_on_errors(validation: Any) -> None:
    """GX catches exceptions inside expectations (a missing column, a bad dtype) and marks them failed with no
    counts; that is a bug in the table builder, not a data defect, so it must not pass as an ordinary failure."""
    errors = []
    for r in validation.results:
        info = r.exception_info or {}
        # exception_info is either {"raised_exception": ..., ...} or keyed by metric id with such dicts inside.
        infos = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
        errors += [
            f"{_describe(r.expectation_config)}: {i.get('exception_message')}"
            for i in infos
            if i.get("raised_exception")
        ]
    if errors:
        raise RuntimeError("Great Expectations could not evaluate: " + "; ".join(dict.fromkeys(errors)))


def check_name(value: str, what: str) -> str:
    """`value` if it can name a GX run or data asset; ValueError naming `what` otherwise."""
    import re

    if not isinstance(value, str) or not re.fullmatch(NAME_PATTERN, value):
        raise ValueError(f"{what} {value!r}: must match {NAME_PATTERN}")
    return value


def run_expectations(facts: pd.DataFrame, report_dir: Path, *, expected_rows: int | None = None,
                     run_name: str | None = None, dataset_version: str | None = None,
                     baseline: dict | None = None) -> GxOutcome:
    """Validate the facts table, write the GX result JSON and Data Docs into report_dir, and summarise.

    The GX run is named `run_name` (e.g. the Airflow run id) and the data asset `dataset_version`, so the
    Data Docs say which run checked which data; a `baseline` summary adds the drift expectations (build_suite).

    The GX project (a file context) lives in report_dir/gx, so the report directory is self-contained: the
    suite, the stored validation results, and the Data Docs site that renders them. Running again on the same
    report_dir updates the suite, validation definition and checkpoint in place and adds a new result.

    Raises RuntimeError if GX could not evaluate an expectation (after the JSON and Data Docs are written).
    """
    gx = _import_gx()
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    asset = check_name(dataset_version, "dataset version") if dataset_version is not None else DATA_ASSET
    if run_name is not None:
        check_name(run_name, "run name")
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=report_dir)
    # Progress bars default to on and would write tqdm bars to the task logs for every metric batch.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.variables.save()

    batch_definition = (
        context.data_sources.add_or_update_pandas("facts")
        .add_dataframe_asset(asset)
        .add_batch_definition_whole_dataframe("whole_table")
    )
    suite = context.suites.add_or_update(build_suite(expected_rows, baseline=baseline))
    validation_definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=SUITE_NAME, data=batch_definition, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=SUITE_NAME,
            validation_definitions=[validation_definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
            result_format=RESULT_FORMAT,
        )
    )

    # An empty label_synset means "label out of 1..1000"; as a missing value the pair check skips it (see
    # build_suite). assign() leaves the caller's frame alone and, with copy-on-write, copies one column only.
    table = facts.assign(label_synset=facts["label_synset"].mask(facts["label_synset"] == ""))
    if baseline is not None:  # the drift expectations' third column; a zero height is another rule's business
        aspect = facts["width"] / facts["height"].where(facts["height"] > 0)
        table = table.assign(aspect=aspect)
    with _unexpected_index_list_capped():
        checkpoint_result = checkpoint.run(batch_parameters={"dataframe": table},
                                           run_id=RunIdentifier(run_name=run_name) if run_name else None)
    (validation,) = checkpoint_result.run_results.values()

    result_json = report_dir / GX_RESULT
    write_json(result_json, validation.to_json_dict())
    data_docs_index = report_dir / DATA_DOCS_INDEX
    if not data_docs_index.is_file():
        raise RuntimeError(f"Great Expectations did not write Data Docs at {data_docs_index}")
    _raise_on_errors(validation)

    # GX does not keep suite order in its results; put them back in it so reports read like the suite.
    order = {e.id: i for i, e in enumerate(suite.expectations)}
    ordered = sorted(validation.results, key=lambda r: order.get(r.expectation_config.id, len(order)))
    results = [
        GxRuleResult(
            rule=str(r.expectation_config.meta["rule"]),
            expectation=_describe(r.expectation_config),
            success=bool(r.success),
            unexpected_count=int(r.result.get("unexpected_count") or 0),
            examples=_examples(r.result),
        )
        for r in ordered
    ]
    return GxOutcome(
        success=bool(validation.success),
        results=results,
        result_json=result_json,
        data_docs_index=data_docs_index,
        run_name=run_name,
        data_asset=asset,
    )
