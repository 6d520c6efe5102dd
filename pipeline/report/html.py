"""The report's index.html: one static page, its styles inline, its figures the PNGs beside it.

No script and no external resource, so it opens offline from a pulled version or straight from S3.
Every section is there whatever was available; a missing input says "not available" and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from pipeline.contracts.names import DECISION_FILE, EVAL_FILE, METRICS_FILE, VALIDATION_REPORT

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 62em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ccc; padding: .2em .6em; }
th { background: #f3f3f3; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; } .na { color: #777; font-style: italic; }
.pass, .ok { color: #106b21; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
.warn { color: #a35c00; font-weight: bold; }
"""


@dataclass
class Page:
    """What the page shows; None in a field means "not available" with the matching note."""

    title: str
    source: str
    generated_at: str
    evaluation: dict[str, Any] | None = None
    training_png: str | None = None
    accuracy_png: str | None = None
    accuracy_rows: list[tuple[str, float | None, float | None]] = field(default_factory=list)
    per_class_png: str | None = None
    worst: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None
    notes: dict[str, str] = field(default_factory=dict)  # section -> why it is not available


def why(exc: BaseException) -> str:
    """An exception as one short line, for a section that says why it is not available."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _na(what: str, why: str | None) -> str:
    return f'<p class="na">{escape(what)}: not available{": " + escape(why) if why else ""}</p>'


def _num(value: Any, digits: int = 2, unit: str = "") -> str:
    return f"{value:,.{digits}f}{unit}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{escape(str(v))}</td>'
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _img(name: str | None, alt: str, note: str | None) -> str:
    if not name:
        return _na(alt, note)
    # Drawn from what could be read; the note says what could not (a metrics.jsonl cut short).
    return f'<p><img src="{escape(name)}" alt="{escape(alt)}"></p>' + (f'<p class="na">Note: {escape(note)}</p>'
                                                                       if note else "")


def _status(value: Any) -> str:
    text = str(value)
    return f'<span class="{escape(text) if text in ("pass", "fail", "ok", "warn") else ""}">{escape(text)}</span>'


def _summary(p: Page) -> str:
    e, d = p.evaluation or {}, p.decision or {}
    return _table(["top-1", "top-5", "validation images", "step", "gate verdict"],
                  [[_num(e.get("top1_accuracy"), 2, " %"), _num(e.get("top5_accuracy"), 2, " %"),
                    e.get("eval_count", "-"), e.get("step", "-"), d.get("verdict", "not available")]], (0, 1, 2, 3))


def _accuracy(p: Page) -> str:
    rows = [[label, _num(t1, 2, " %"), _num(t5, 2, " %")] for label, t1, t5 in p.accuracy_rows]
    parts = [_img(p.accuracy_png, "top-1 and top-5 against the baselines", p.notes.get("accuracy"))]
    if rows:
        parts.append(_table(["model", "top-1", "top-5"], rows, (1, 2)))
    if "registry" in p.notes:
        parts.append(_na("the registry's last versions", p.notes["registry"]))
    return "".join(parts)


def _per_class(p: Page) -> str:
    parts = [_img(p.per_class_png, "per-class top-1 accuracy", p.notes.get("per_class"))]
    if p.worst:
        parts.append(f"<h3>The {len(p.worst)} worst classes</h3>")
        parts.append(_table(["class", "synset", "name", "correct", "images", "top-1"],
                            [[w["index"], w["synset"], w["name"], w["correct"], w["count"],
                              _num(w["accuracy"], 1, " %")] for w in p.worst], (0, 3, 4, 5)))
    return "".join(parts)


def _example(rule: dict[str, Any]) -> str:
    """The rule's first violation as `file record N: detail`."""
    first = (rule.get("examples") or [None])[0]
    if not isinstance(first, dict):
        return "" if first is None else str(first)
    where = " ".join(str(x) for x in (first.get("file"), first.get("record") is not None and
                                       f"record {first.get('record')}") if x)
    return f"{where}: {first['detail']}" if first.get("detail") else where


def _validation(p: Page) -> str:
    v = p.validation
    if v is None:
        body = _na("the validation report", p.notes.get("validation"))
    else:
        rules = [r for r in v.get("rules") or [] if isinstance(r, dict)]
        failing = [r for r in rules if not r.get("passed", True)]
        body = _table(["valid", "records", "shards", "classes", "bytes", "rules checked", "rules failing"],
                      [[v.get("valid", "-"), v.get("records", "-"), v.get("shards", "-"), v.get("classes", "-"),
                        v.get("bytes", "-"), len(rules), len(failing)]], (1, 2, 3, 4, 5, 6))
        if failing:
            body += _table(["rule", "severity", "violations", "first example"],
                           [[r.get("rule"), r.get("severity"), r.get("count"), _example(r)] for r in failing], (2,))
        else:
            body += "<p>No rule has a violation.</p>"
        body += _great_expectations(v, rules)
    return body


def _great_expectations(v: dict[str, Any], rules: list[dict[str, Any]]) -> str:
    """The GX suite's results as report.json has them: each rule GX checked, and the drift expectations.

    Drawn here rather than linked to GX's Data Docs, which load scripts and stylesheets from public CDNs
    (the page must open offline) and show record values unescaped."""
    gx = v.get("great_expectations")
    if not isinstance(gx, dict):
        return _na("the Great Expectations results", "report.json has none")
    ours = [r for r in rules if r.get("source") == "great_expectations"]
    named = ", ".join(f"{what} {gx[key]}" for what, key in (("run", "run_name"), ("data asset", "data_asset"))
                      if gx.get(key))
    parts = ["<h3>Great Expectations</h3>",
             f"<p>Suite: {_status('pass' if gx.get('success') else 'fail')}"
             f"{' (' + escape(named) + ')' if named else ''}; {len(ours)} rules checked by Great Expectations.</p>"]
    if ours:
        parts.append(_table(["rule", "checks", "passed", "violations", "first example"],
                            [[r.get("rule"), r.get("description", ""), r.get("passed"), r.get("count"), _example(r)]
                             for r in ours], (3,)))
    drift = [d for d in gx.get("drift") or [] if isinstance(d, dict)]
    if drift:
        parts.append(_table(["drift expectation", "expectation", "passed"],
                            [[d.get("rule"), d.get("expectation"), d.get("success")] for d in drift]))
    return "".join(parts)


def _drift(p: Page) -> str:
    d = p.drift
    if not isinstance(d, dict):
        return _na("the comparison with the champion's data", p.notes.get("drift"))
    reason = f": {escape(str(d['reason']))}" if d.get("reason") else ""  # not_checked: no champion summary, ...
    parts = [f"<p>Status: {_status(d.get('status', '-'))}{reason}</p>"]
    if isinstance(d.get("baseline"), dict):
        parts.append(_table(["compared with", "value"], [[k, v] for k, v in d["baseline"].items()]))
    checks = [c for c in d.get("checks") or [] if isinstance(c, dict)]
    if checks:
        parts.append(_table(["check", "passed", "severity", "detail"],
                            [[c.get("name"), c.get("passed"), c.get("severity"), c.get("detail", "")] for c in checks]))
    return "".join(parts)


def _gate(p: Page) -> str:
    d = p.decision
    if d is None:
        return _na("the gate's decision", p.notes.get("gate"))
    reasons = "".join(f"<li>{escape(str(r))}</li>" for r in d.get("reasons") or [])
    parts = [f"<p>Verdict: {_status(d.get('verdict', '-'))}"
             + (f" (forced: {escape(str(d.get('force_reason')))})" if d.get("force_publish") else "") + "</p>",
             f"<ul>{reasons}</ul>"]
    if isinstance(d.get("thresholds"), dict):
        parts.append(_table(["threshold", "value"], [[k, v] for k, v in d["thresholds"].items()]))
    return "".join(parts)


def _cost(p: Page) -> str:
    c = p.cost
    if not isinstance(c, dict):
        return _na("the run's cost", p.notes.get("cost"))
    stages = c.get("stages") or {}
    rows = [[name, _num(s.get("seconds"), 1), s.get("gpus", "-"), _num(s.get("gpu_hours"), 4), s.get("attempts", 1)]
            for name, s in stages.items() if isinstance(s, dict)]
    hours = c.get("gpu_hours") or {}
    return (_table(["stage", "wall seconds", "GPUs", "GPU-hours", "attempts"], rows, (1, 2, 3, 4))
            + _table(["GPU-hours of training", "GPU-hours of evaluation", "GPU-hours in all", "run wall seconds"],
                     [[_num(hours.get("training"), 4), _num(hours.get("evaluation"), 4), _num(hours.get("total"), 4),
                       _num(c.get("wall_seconds"), 1)]], (0, 1, 2, 3)))


# (id, title, what it is drawn from, how): a section whose input holds what it cannot draw (a number for
# decision.json's reasons, a list for the cost's stages) says so, and the other sections are still drawn.
SECTIONS = (
    ("summary", "Summary", f"{EVAL_FILE} and {DECISION_FILE}", _summary),
    ("training", "Training", METRICS_FILE, lambda p: _img(p.training_png, "loss, learning rate and throughput "
                                                             "against step", p.notes.get("training"))),
    ("accuracy", "Accuracy against the baselines", "the accuracy table", _accuracy),
    ("per-class", "Per-class accuracy", f"{EVAL_FILE}'s per-class counts", _per_class),
    ("validation", "Data validation", f"the validation's {VALIDATION_REPORT}", _validation),
    ("drift", "Data drift against the champion's data", "the drift comparison", _drift),
    ("gate", "Gate decision", DECISION_FILE, _gate),
    ("cost", "Cost", "the cost record", _cost),
)


def _section(page: Page, title: str, what: str, draw: Callable[[Page], str]) -> str:

    try:
        return draw(page)
    except Exception as exc:  # a report is never the reason a run fails: the section says why instead
        return _na(title, f"{what} could not be drawn ({why(exc)})")


def render(page: Page) -> str:
    body = "".join(f'<section id="{sid}"><h2>{escape(title)}</h2>{_section(page, title, what, draw)}</section>'
                   for sid, title, what, draw in SECTIONS)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(page.title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{escape(page.title)}</h1>"
            f"<p>From {escape(page.source)}, made {escape(page.generated_at)}.</p>{body}</body></html>\n")
