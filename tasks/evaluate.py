"""evaluate: top-1/top-5 of the trained model over the whole validation split into the run's eval/
(eval.json), then the serving exports (model.keras, saved_model/ and labels.txt) into its export/:
here on the gpu queue, where TensorFlow is (publish has none). It reads train's model/ and writes nothing there."""

from __future__ import annotations

from typing import Any

from pipeline.workspace import RunWorkspace
from tasks.common import data_record


def run(ws: RunWorkspace, *, data_dir: str) -> dict[str, Any]:
    from pipeline.contracts.names import EXPORT_FILE, SAVED_MODEL_DIR
    from pipeline.train.evaluate import evaluate, write_eval
    from pipeline.train.export import export_serving

    # eval.json names the data it scored: the shards (always) and the dataset version fetch_data recorded.
    result = evaluate(data_dir, ws.model, dataset_version=(data_record(ws) or {}).get("dataset_version"))
    ws.remove(ws.eval)  # a retry's eval/ holds this try's figures only (metrics.jsonl appends)
    path = write_eval(result, ws.eval)
    print(f"top-1 {result.top1_accuracy:.2f} %, top-5 {result.top5_accuracy:.2f} % over {result.eval_count} images")
    exports = export_serving(ws.model, ws.export)  # kept when current: a retried publish sees the same bytes
    print(f"exported {', '.join(str(p) for p in exports.values())}")
    return {**result.summary(), "eval_json": str(path), "model_keras": str(exports[EXPORT_FILE]),
            "saved_model": str(exports[SAVED_MODEL_DIR])}
