"""The run report: index.html and its PNGs, for the people who sign off on a version and pay for it.

`build_report` reads what the stages left (training's metrics.jsonl, eval.json with its per-class
counts, the gate's decision.json, the validation's report.json with its Great Expectations results, the
run's cost) and the registry's last versions when the caller has them; it never needs TensorFlow.
Whatever is missing or unreadable makes its section say "not available" and why: a report is never the
reason a run fails. GX's own Data Docs stay in the validation folder: they load scripts and stylesheets
from public CDNs and show record values unescaped, so the page renders the suite's results itself.
Modules: `figures` (the PNGs), `html` (the page).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.contracts.names import (
    DECISION_FILE,
    DRIFT,
    EVAL_FILE,
    MANIFEST,
    METRICS_FILE,
    REPORT_INDEX,
    VALIDATION_REPORT,
)
from pipeline.data.labels import load_label_map
from pipeline.files import read_regular, write_atomic
from pipeline.report.html import Page, render, why

LAST_VERSIONS = 5  # the registry's newest versions the accuracy figure shows
WORST_CLASSES = 10


def _json(path: Path, notes: dict[str, str], section: str) -> dict[str, Any] | None:
    """The JSON object at path, or None with the reason in notes[section]."""
    try:
        value = json.loads(read_regular(path))
    except FileNotFoundError:
        notes.setdefault(section, f"{path} does not exist")
        return None
    except (OSError, ValueError) as exc:
        notes.setdefault(section, f"{path} is not readable JSON ({exc})")
        return None
    if not isinstance(value, dict):
        notes.setdefault(section, f"{path} does not hold a JSON object")
        return None
    return value


def _guarded(notes: dict[str, str], section: str, what: str, draw: Any, *args: Any, default: Any = None) -> Any:
    """draw(*args), or `default` with notes[section] saying what could not be drawn and why."""
    try:
        return draw(*args)
    except Exception as exc:  # a report is never the reason a run fails: its section says why instead
        notes.setdefault(section, f"{what} could not be drawn ({why(exc)})")
        return default


def _metrics(paths: list[Path], notes: dict[str, str]) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in dict.fromkeys(paths):
        try:
            text = read_regular(path).decode()
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            notes.setdefault("training", f"{path} is not readable ({exc})")
            continue
        for number, line in enumerate(text.splitlines(), 1):
            try:
                entry = json.loads(line) if line.strip() else None
            except ValueError:
                notes.setdefault("training", f"{path} line {number} is not JSON; the lines after it are not shown")
                break
            if isinstance(entry, dict):
                lines.append(entry)
    if not lines:
        notes.setdefault("training", f"no {METRICS_FILE} in {', '.join(str(p.parent) for p in paths)}")
    return lines


def _worst(per_class: Any, notes: dict[str, str]) -> tuple[list[float], list[dict[str, Any]]]:
    """Per-class accuracies (classes with images only) and the WORST_CLASSES lowest, named."""
    correct = per_class.get("correct") if isinstance(per_class, dict) else None
    count = per_class.get("count") if isinstance(per_class, dict) else None
    if not (isinstance(correct, list) and isinstance(count, list) and len(correct) == len(count)):
        notes.setdefault("per_class", "eval.json has no per-class counts (evaluated before they were recorded)")
        return [], []
    labels = load_label_map()
    rows = []
    for index, (hits, n) in enumerate(zip(correct, count, strict=True)):
        if isinstance(n, int) and n > 0 and isinstance(hits, int):
            known = index < len(labels)
            rows.append({"index": index, "synset": labels.synset(index + 1) if known else "-",
                         "name": labels.name(index + 1) if known else "-", "correct": hits, "count": n,
                         "accuracy": 100.0 * hits / n})
    if not rows:
        notes.setdefault("per_class", "eval.json's per-class counts are all zero")
    worst = sorted(rows, key=lambda r: (r["accuracy"], r["index"]))[:WORST_CLASSES]
    return [r["accuracy"] for r in rows], worst


def _accuracy_rows(evaluation: dict[str, Any] | None, decision: dict[str, Any] | None,
                   registry: list[dict[str, Any]] | None) -> list[tuple[str, float | None, float | None]]:
    rows: list[tuple[str, float | None, float | None]] = []
    if evaluation:
        rows.append(("this run", evaluation.get("top1_accuracy"), evaluation.get("top5_accuracy")))
    live = (decision or {}).get("live_baseline")
    if isinstance(live, dict):
        model = live.get("model") or {}
        name = model.get("version") or model.get("source") or model.get("path") or ""
        rows.append((f"live baseline: {model.get('kind', '?')} {name}".strip(), live.get("top1_accuracy"),
                     live.get("top5_accuracy")))
    floor = (decision or {}).get("baseline")
    if isinstance(floor, dict):
        rows.append((f"floor: {floor.get('name')}", floor.get("top1_accuracy"), None))
    for manifest in (registry or [])[-LAST_VERSIONS:]:
        metrics = manifest.get("metrics") or {}
        rows.append((f"{manifest.get('version')} ({str(manifest.get('created_at', ''))[:10]})",
                     metrics.get("top1_accuracy"), metrics.get("top5_accuracy")))
    return rows


def build_report(out_dir: Path, *, model_dir: Path, eval_dir: Path | None = None, gate_dir: Path | None = None,
                 validation_dir: Path | None = None, cost: dict[str, Any] | None = None,
                 registry: list[dict[str, Any]] | None = None, registry_note: str | None = None,
                 title: str = "ResNet50 v1.5 run report") -> Path:
    """Write out_dir/index.html and its PNGs; return the index.html path.

    Each folder not given is model_dir (a model directory, or a version `rn50 pull` fetched, holds every
    stage's files). `cost` is a pipeline.cost record, else a pulled version's manifest cost is used;
    `registry` the manifests of the published versions (pipeline.publish.registry.list_versions), oldest
    first, else `registry_note` says why they are not shown.
    """
    from pipeline.report import figures  # matplotlib: imported only when a report is drawn

    model_dir = Path(model_dir)
    eval_dir, gate_dir = Path(eval_dir or model_dir), Path(gate_dir or model_dir)
    validation_dir = Path(validation_dir or model_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: dict[str, str] = {}
    evaluation = _json(eval_dir / EVAL_FILE, notes, "evaluation")
    decision = _json(gate_dir / DECISION_FILE, notes, "gate")
    validation = _json(validation_dir / VALIDATION_REPORT, notes, "validation")
    drift = (validation or {}).get("drift")
    if not isinstance(drift, dict):
        drift = _json(validation_dir / DRIFT, notes, "drift")
    if cost is None and (model_dir / MANIFEST).is_file():
        cost = (_json(model_dir / MANIFEST, notes, "cost") or {}).get("cost")
    if cost is None:
        notes.setdefault("cost", "no stage recorded its time (made outside a DAG run)")
    if registry is None:
        notes["registry"] = registry_note or "no registry was given"
    elif not registry:
        notes["registry"] = "nothing is published yet"

    if evaluation is None:
        notes.setdefault("accuracy", notes["evaluation"])
        notes.setdefault("per_class", notes["evaluation"])
    metrics = _metrics([model_dir / METRICS_FILE, eval_dir / METRICS_FILE], notes)
    # Each input is whatever a file held (a pulled version's, a manifest anyone with write access to the
    # bucket made): what cannot be drawn from it leaves its section "not available", never the report.
    accuracies, worst = [], []
    if evaluation:
        accuracies, worst = _guarded(notes, "per_class", "eval.json's per-class counts", _worst,
                                     evaluation.get("per_class"), notes, default=([], []))
    if validation is not None and "classes" not in validation and accuracies:
        validation = {**validation, "classes": len(accuracies)}  # the validation split's classes, from evaluate
    rows = _guarded(notes, "accuracy", "the accuracy table (eval.json, decision.json, the registry's manifests)",
                    _accuracy_rows, evaluation, decision, registry, default=[])
    floor = _guarded(notes, "accuracy", "decision.json's thresholds",
                     lambda: ((decision or {}).get("thresholds") or {}).get("baseline_min"))
    training = [m for m in metrics if "loss" in m or "train_throughput" in m]
    page = Page(
        title=title, source=str(model_dir), generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        evaluation=evaluation,
        training_png=_guarded(notes, "training", "the training figure", figures.training, training, out_dir),
        accuracy_png=_guarded(notes, "accuracy", "the accuracy figure", figures.accuracy, rows, floor, out_dir),
        accuracy_rows=rows,
        per_class_png=_guarded(notes, "per_class", "the per-class figure", figures.per_class, accuracies, out_dir),
        worst=worst,
        validation=validation, drift=drift,
        decision=decision, cost=cost, notes=notes,
    )
    return write_atomic(out_dir / REPORT_INDEX, render(page))
