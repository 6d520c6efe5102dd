"""Data drift: this run's data summary against the champion's, as the issue's checks.

The validator writes a small per-run summary of its facts table (`summarize`: records per split and
class, image width/height/aspect histograms on fixed bin edges and quantiles, grayscale/CMYK/progressive
fractions, duplicates); every published version carries it as `data_summary.json`, and the next run
compares its own with the champion's (`compare`). The image-size checks are also Great Expectations
quantile expectations over the facts (`quantile_ranges` builds the ranges for both, so the two agree by
construction), which puts them in the run's Data Docs.

Every threshold is a constant here. A check that fires is a warning, or with RN50_DRIFT_FAIL an error
that fails validate_data. The comparison's shape ({"status", "baseline", "checks": [{"name", "passed",
"severity", "detail"}]}) is what the run report renders; status is "ok", "warn", "fail", or
"not_checked" when there is no baseline.

Imports nothing heavy: the default-queue adapter reads and compares summaries without pandas.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FORMAT = 1

# Fixed bin edges, so two summaries compare bin by bin (pixels; aspect is width / height).
SIZE_EDGES = (0, 64, 128, 192, 256, 320, 384, 448, 512, 640, 768, 1024, 1536, 2048, 4096, 65536)
ASPECT_EDGES = (0.0, 0.5, 0.67, 0.75, 0.8, 0.9, 1.0, 1.1, 1.25, 1.34, 1.5, 1.78, 2.0, 3.0, 1e9)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
DISTRIBUTIONS = {"width": SIZE_EDGES, "height": SIZE_EDGES, "aspect": ASPECT_EDGES}
# JPEG headers read for the colour-space and progressive fractions: a seeded sample (every record when
# fewer), so the check costs a few thousand small reads however large the dataset.
JPEG_SAMPLE = 4000
JPEG_SEED = 17

# The checks' thresholds.
CLASS_SHARE_SHIFT = 0.20  # a class's share of a split moves by more than this, relative to the champion's
QUANTILE_SHIFT = 0.10  # an image width/height/aspect quantile moves by more than this, relative
FRACTION_SHIFT = 0.01  # a grayscale/CMYK/progressive fraction moves by more than this (absolute) ...
FRACTION_SIGMAS = 3.0  # ... and by more than this many standard errors of the two samples' difference
DUPLICATE_SHIFT = 0.001  # duplicates' share of the records grows by more than this (absolute)

STATUSES = ("ok", "warn", "fail", "not_checked")

# What check_summary lets through to compare. A class label as summarize writes it: ASCII digits, no leading
# zero, short enough for int() (which refuses more than 4300 digits).
LABEL_PATTERN = r"0|[1-9][0-9]{0,8}"
MAX_COUNT = 2**53  # records or headers: exact as a float, so sums and shares stay finite
MAX_NUMBER = 1e300  # a quantile: times 1 +- QUANTILE_SHIFT still a float
MAX_DEPTH = 16  # a summary's lists and objects nest 4 deep; json.dumps recurses on each level


class SummaryError(ValueError):
    """A summary that is not one (a one-line reason naming it)."""


# --- the summary --------------------------------------------------------------------------------


def summarize(
    facts: pd.DataFrame,
    *,
    jpeg: dict[str, Any],
    duplicates: dict[str, int],
    dataset_version: str | None = None,
) -> dict[str, Any]:
    """The facts table in a few kilobytes: what `compare` needs, and nothing per record.

    `jpeg` is `jpeg_fractions`' answer, `duplicates` the duplicate rules' counts.
    """
    import numpy as np

    splits = sorted(str(s) for s in facts["split"].unique())
    classes = {}
    for split in splits:
        counts = facts.loc[facts["split"] == split, "label"].value_counts()
        classes[split] = {str(int(label)): int(n) for label, n in sorted(counts.items())}
    columns = {
        "width": facts["width"].to_numpy(dtype=float),
        "height": facts["height"].to_numpy(dtype=float),
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        columns["aspect"] = columns["width"] / columns["height"]
    image = {}
    for name, edges in DISTRIBUTIONS.items():
        values = columns[name][np.isfinite(columns[name])]
        counts, _ = np.histogram(values, bins=edges)
        # "nearest", as Great Expectations computes quantiles on pandas: the same figures as its expectations.
        quantiles = np.quantile(values, QUANTILES, method="nearest") if len(values) else [None] * len(QUANTILES)
        image[name] = {
            "edges": list(edges),
            "counts": [int(c) for c in counts],
            "quantiles": {str(q): (None if v is None else float(v)) for q, v in zip(QUANTILES, quantiles, strict=True)},
        }
    return {
        "format": FORMAT,
        "dataset_version": dataset_version,
        "records": {split: sum(classes[split].values()) for split in splits},
        "classes": classes,
        "image": image,
        "jpeg": jpeg,
        "duplicates": {k: int(v) for k, v in duplicates.items()},
    }


def jpeg_fractions(count: int, header_of: Callable[[int], Any]) -> dict[str, Any]:
    """Grayscale (1 component), CMYK (4) and progressive fractions over a seeded sample of the `count` rows;
    `header_of(row)` is the row's JpegHeader, or None when its header cannot be read."""
    import numpy as np

    rows = np.arange(count)
    if count > JPEG_SAMPLE:
        rows = np.sort(np.random.default_rng(JPEG_SEED).choice(count, JPEG_SAMPLE, replace=False))
    read = gray = cmyk = progressive = 0
    for row in rows:
        header = header_of(int(row))
        if header is None:
            continue
        read += 1
        gray += header.components == 1
        cmyk += header.components == 4
        progressive += bool(header.progressive)
    fractions = {name: n / read if read else 0.0
                 for name, n in (("grayscale", gray), ("cmyk", cmyk), ("progressive", progressive))}
    return {"sampled": read, "of": count, **fractions}


def _depth(value: Any) -> int:
    """How deeply value's lists and objects nest, counted without recursion (a walk that recursed would raise
    RecursionError on the very documents this measures)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                break
            todo += [(child, depth + 1) for child in (node.values() if isinstance(node, dict) else node)]
    return deepest


def check_summary(value: Any, where: str) -> dict[str, Any]:
    """`value` if it is a summary `compare` can read, and its comparison can be written as JSON; SummaryError
    naming `where` and the field otherwise."""
    def bad(why: str) -> SummaryError:
        return SummaryError(f"{where}: {why}; not a data summary")

    if _depth(value) > MAX_DEPTH:  # summarize's own nest 4 deep; dumping a deeper one may raise RecursionError
        raise bad(f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(value, dict):
        raise bad("not a JSON object")
    if value.get("format") != FORMAT:
        raise bad(f"format {value.get('format')!r}, expected {FORMAT}")
    def count(n: Any) -> bool:  # a float holds it exactly, so every share and sum compare makes is finite
        return isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_COUNT

    def number(n: Any) -> bool:  # an int past float's range would raise OverflowError in the comparison
        return n is None or (isinstance(n, int | float) and not isinstance(n, bool) and abs(n) <= MAX_NUMBER)

    classes = value.get("classes")
    if not isinstance(classes, dict) or not all(isinstance(per, dict) for per in classes.values()):
        raise bad("classes: not {split: {label: count}}")
    for split, per in classes.items():
        for label, n in per.items():
            # ASCII digits as summarize writes them: str.isdigit() also takes "²", which int() refuses
            if not (isinstance(label, str) and re.fullmatch(LABEL_PATTERN, label)):
                raise bad(f"classes: split {str(split)[:40]!r} label {str(label)[:20]!r} is not a class label")
            if not count(n) or n == 0:  # summarize lists classes with records only; a share of 0 divides by it
                raise bad(f"classes: split {str(split)[:40]!r} label {label} has {str(n)[:20]} records, "
                          f"not 1 to {MAX_COUNT}")
    image = value.get("image") if isinstance(value.get("image"), dict) else {}
    for name in DISTRIBUTIONS:
        quantiles = image.get(name, {}).get("quantiles") if isinstance(image.get(name), dict) else None
        if not isinstance(quantiles, dict) or not all(number(v) for v in quantiles.values()):
            raise bad(f"image.{name}.quantiles: not {{quantile: number}}")
    jpeg = value.get("jpeg")
    if not isinstance(jpeg, dict) or not count(jpeg.get("sampled")) or not all(
        isinstance(jpeg.get(k), int | float) and 0 <= jpeg[k] <= 1 for k in ("grayscale", "cmyk", "progressive")
    ):
        raise bad("jpeg: not a sampled count and grayscale/cmyk/progressive fractions")
    duplicates = value.get("duplicates")
    if not isinstance(duplicates, dict) or not all(count(n) for n in duplicates.values()):
        raise bad("duplicates: not {rule: count}")
    return value


# --- the comparison -----------------------------------------------------------------------------


def quantile_ranges(champion: dict[str, Any], name: str) -> list[tuple[float, float, float]]:
    """(quantile, low, high) the current data's `name` quantiles must stay within: the champion's, +-QUANTILE_SHIFT."""
    ranges = []
    for q in QUANTILES:
        value = champion["image"][name]["quantiles"].get(str(q))
        if isinstance(value, int | float) and math.isfinite(value):
            ranges.append((q, value * (1 - QUANTILE_SHIFT), value * (1 + QUANTILE_SHIFT)))
    return ranges


def _check(name: str, problems: list[str], severity: str, ok_detail: str = "") -> dict[str, Any]:
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    return {"name": name, "passed": not problems, "severity": severity, "detail": shown or ok_detail}


def _class_checks(current: dict, champion: dict, severity: str) -> Iterable[dict[str, Any]]:
    shifted, new, missing = [], [], []
    for split in sorted(set(current["classes"]) | set(champion["classes"])):
        now, then = current["classes"].get(split, {}), champion["classes"].get(split, {})
        now_total, then_total = sum(now.values()), sum(then.values())
        new += [f"{split} label {label}" for label in sorted(set(now) - set(then), key=int)]
        missing += [f"{split} label {label}" for label in sorted(set(then) - set(now), key=int)]
        for label in sorted(set(now) & set(then), key=int):
            share_now, share_then = now[label] / now_total, then[label] / then_total
            change = (share_now - share_then) / share_then
            if abs(change) > CLASS_SHARE_SHIFT:
                shifted.append(f"{split} label {label}: {100 * share_then:.2f} % -> {100 * share_now:.2f} % of the "
                               f"split ({100 * change:+.0f} %)")
    yield _check("classes.share", shifted, severity, f"no class share moved by more than {CLASS_SHARE_SHIFT:.0%}")
    yield _check("classes.new", new, severity, "no class the champion's data lacks")
    yield _check("classes.missing", missing, severity, "every class of the champion's data is present")


def _distribution_checks(current: dict, champion: dict, severity: str) -> Iterable[dict[str, Any]]:
    for name in DISTRIBUTIONS:
        moved = []
        for q, low, high in quantile_ranges(champion, name):
            value = current["image"][name]["quantiles"].get(str(q))
            if not isinstance(value, int | float) or not low <= value <= high:
                then = champion["image"][name]["quantiles"][str(q)]
                moved.append(f"q{q:g} {then:g} -> {value if value is None else format(value, 'g')}")
        yield _check(f"image.{name}", moved, severity, f"quantiles within {QUANTILE_SHIFT:.0%} of the champion's")


def _fraction_checks(current: dict, champion: dict, severity: str) -> Iterable[dict[str, Any]]:
    n1, n2 = current["jpeg"]["sampled"], champion["jpeg"]["sampled"]
    for name in ("grayscale", "cmyk", "progressive"):
        p1, p2 = float(current["jpeg"][name]), float(champion["jpeg"][name])
        problems = []
        if n1 and n2:
            pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
            se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
            if abs(p1 - p2) > max(FRACTION_SHIFT, FRACTION_SIGMAS * se):
                problems.append(f"{100 * p2:.2f} % -> {100 * p1:.2f} % of sampled JPEGs ({n2} and {n1} read)")
        yield _check(f"jpeg.{name}", problems, severity, f"{100 * p2:.2f} % -> {100 * p1:.2f} %")


def _duplicate_check(current: dict, champion: dict, severity: str) -> dict[str, Any]:
    def share(summary: dict) -> tuple[int, float]:
        count = sum(summary["duplicates"].values())
        return count, count / max(sum(sum(per.values()) for per in summary["classes"].values()), 1)

    (now, share_now), (then, share_then) = share(current), share(champion)
    problems = []
    if share_now - share_then > DUPLICATE_SHIFT:
        problems.append(f"{then} -> {now} duplicate records ({100 * share_then:.2f} % -> {100 * share_now:.2f} %)")
    return _check("duplicates", problems, severity, f"{then} -> {now} duplicate records")


def compare(current: dict[str, Any], champion: dict[str, Any], *, fail: bool = False,
            baseline_version: str | None = None) -> dict[str, Any]:
    """This run's summary against the champion's: every check, and the status ("fail" only when `fail`)."""
    severity = "error" if fail else "warning"
    checks = [
        *_class_checks(current, champion, severity),
        *_distribution_checks(current, champion, severity),
        *_fraction_checks(current, champion, severity),
        _duplicate_check(current, champion, severity),
    ]
    fired = any(not c["passed"] for c in checks)
    return {
        "status": ("fail" if fail else "warn") if fired else "ok",
        "baseline": {"version": baseline_version, "dataset_version": champion.get("dataset_version")},
        "checks": checks,
    }


def not_checked(reason: str) -> dict[str, Any]:
    """The comparison when there is nothing to compare with: not an error."""
    return {"status": "not_checked", "baseline": None, "checks": [], "reason": reason}


def failure_lines(comparison: dict[str, Any]) -> list[str]:
    """One line per check that fired, naming it, as the validator prints its rules."""
    checks = comparison["checks"]
    return [f"{c['severity'].upper()} drift.{c['name']}: {c['detail']}" for c in checks if not c["passed"]]
