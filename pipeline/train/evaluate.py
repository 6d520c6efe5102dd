"""Top-1/top-5 over every validation record exactly once, written to eval.json.

NVIDIA's evaluation drops the last partial batch or repeats records to fill it; ours keeps it and
checks that the number of images scored equals the number of records on disk, so a truncated or
duplicated pass cannot pass as a result. Accuracies are in percent, like the NGC baselines. eval.json
also names the records it scored (`data`: the validation shards' identity, from the files read, and the
dataset version when the caller knows it), which the gate requires of both sides it compares.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from pipeline.contracts.evaluation import eval_summary
from pipeline.contracts.names import EVAL_FILE
from pipeline.data.input import eval_dataset, read_batches, split_identity
from pipeline.files import write_json
from pipeline.recipe import TrainConfig
from pipeline.train.checkpoint import restore_model
from pipeline.train.logs import MetricsLog
from pipeline.train.model import build_model


class EvaluationError(RuntimeError):
    """The evaluation did not score every validation record exactly once."""


@dataclass(frozen=True)
class EvalResult:
    top1_accuracy: float
    top5_accuracy: float
    eval_count: int
    eval_throughput: float
    checkpoint: str
    step: int
    # Top-1 hits and records per true class index (0-based), for the run report's per-class accuracy.
    per_class: dict[str, list[int]] = field(default_factory=dict, repr=False)
    # Which records: pipeline.data.input.split_identity of the validation split, and "dataset_version".
    data: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The result without its per-class lists: what a task returns as its XCom and a log line shows."""
        return eval_summary(asdict(self))


def evaluate(data_dir: Path, model_dir: Path, *, batch_size: int | None = None,
             dataset_version: str | None = None) -> EvalResult:
    """Score model_dir's latest checkpoint on data_dir's validation split. `dataset_version`: what the data is
    known as (fetch_data's record in the DAG), recorded beside the shards' own identity."""
    data_dir, model_dir = Path(data_dir), Path(model_dir)
    config = TrainConfig.load(model_dir)
    identity = split_identity(data_dir, "validation")  # counts the records too, in the same walk
    expected = identity["records"]
    # Evaluate in float32 whatever the training precision: the variables are float32 either way.
    model = build_model(config, dtype="float32")
    checkpoint = restore_model(model, model_dir)
    step = int(tf.train.load_variable(checkpoint, "step/.ATTRIBUTES/VARIABLE_VALUE"))

    full = batch_size or config.batch_size
    data = eval_dataset(data_dir, batch_size=full, image_size=config.image_size)

    # XLA pays on a GPU only (docs/training.md); an NGC-recipe model evaluated on a CPU runs plain.
    @tf.function(jit_compile=config.xla and bool(tf.config.list_physical_devices("GPU")))
    def score(images, labels, valid):
        logits = model(images, training=False)
        top5 = tf.math.top_k(logits, k=min(5, config.num_classes)).indices
        hits = tf.equal(top5, tf.cast(labels, top5.dtype)[:, None])
        mask = tf.range(tf.shape(labels)[0]) < valid
        hits = tf.logical_and(hits, mask[:, None])
        # Per class in the same pass; padding has mask False, so it adds to no class's count.
        labels = tf.cast(labels, tf.int32)
        class_hits = tf.math.unsorted_segment_sum(tf.cast(hits[:, 0], tf.int64), labels, config.num_classes)
        class_count = tf.math.unsorted_segment_sum(tf.cast(mask, tf.int64), labels, config.num_classes)
        return (tf.reduce_sum(tf.cast(hits[:, 0], tf.int64)), tf.reduce_sum(tf.cast(tf.reduce_any(hits, 1), tf.int64)),
                class_hits, class_count)

    top1 = top5 = count = 0
    class_hits = np.zeros(config.num_classes, np.int64)
    class_count = np.zeros(config.num_classes, np.int64)
    timed_images, started = 0, None
    for images, labels in read_batches(data, data_dir, "validation"):  # a bad record: named, not a traceback
        n = int(labels.shape[0])
        if n < full:  # pad the last batch: one compiled shape, and padding never counts as a hit
            images = tf.pad(images, [[0, full - n], [0, 0], [0, 0], [0, 0]])
            labels = tf.pad(labels, [[0, full - n]])
        h1, h5, ch, cc = score(images, labels, tf.constant(n))
        top1, top5, count = top1 + int(h1), top5 + int(h5), count + n
        class_hits += ch.numpy()
        class_count += cc.numpy()
        if started is None:  # the first batch compiles: time from the second
            started = time.perf_counter()
        else:
            timed_images += n
    seconds = time.perf_counter() - started if started else 0.0
    if count != expected or count == 0:
        raise EvaluationError(f"{data_dir}: scored {count} validation images, but the shards hold {expected} records")
    return EvalResult(
        top1_accuracy=round(100.0 * top1 / count, 4),
        top5_accuracy=round(100.0 * top5 / count, 4),
        eval_count=count,
        eval_throughput=round(timed_images / seconds, 2) if seconds > 0 else 0.0,
        checkpoint=checkpoint,
        step=step,
        per_class={"correct": class_hits.tolist(), "count": class_count.tolist()},
        data={**identity, "dataset_version": dataset_version},
    )


def write_eval(result: EvalResult, eval_dir: Path) -> Path:
    """eval.json for the gate, and the same figures as a metrics.jsonl line (NVIDIA's keys), in eval_dir:
    the model directory for `rn50 evaluate`, the run workspace's eval/ in the DAG (publish then puts that
    line after training's in the version's metrics.jsonl)."""
    Path(eval_dir).mkdir(parents=True, exist_ok=True)
    path = write_json(Path(eval_dir) / EVAL_FILE, asdict(result))
    log = MetricsLog(eval_dir)
    log.record({"step": result.step, "top1_accuracy": result.top1_accuracy, "top5_accuracy": result.top5_accuracy,
                "eval_throughput": result.eval_throughput})
    log.close()
    return path
