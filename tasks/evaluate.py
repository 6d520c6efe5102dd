"""evaluate: top-1/top-5 of the trained model over the whole validation split into the run's eval/
(eval.json), then model.keras, the serving export, into its export/: here on the gpu queue, where
TensorFlow is (publish has none). It reads train's model/ and writes nothing there."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pipeline.workspace import RunWorkspace


def run(ws: RunWorkspace, *, data_dir: str) -> dict[str, Any]:
    from pipeline.train.evaluate import evaluate, write_eval
    from pipeline.train.export import export_keras

    result = evaluate(data_dir, ws.model)
    ws.remove(ws.eval)  # a retry's eval/ holds this try's figures only (metrics.jsonl appends)
    path = write_eval(result, ws.eval)
    print(f"top-1 {result.top1_accuracy:.2f} %, top-5 {result.top5_accuracy:.2f} % over {result.eval_count} images")
    export = export_keras(ws.model, ws.export)  # kept when already current: a retried publish sees the same bytes
    print(f"exported {export}")
    return {**asdict(result), "eval_json": str(path), "model_keras": str(export)}
