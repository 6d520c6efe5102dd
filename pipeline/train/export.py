"""The `.keras` file for serving, made once from the latest checkpoint of a model directory.

It goes into the export directory: the model directory itself for `rn50 publish`, the run workspace's
own `export/` folder in the DAG (train's `model/` is written by training only).

Written once and kept: a `.keras` file is a zip with timestamps, so exporting again would change its
sha256, and a retried publish must see the same bytes to resume the same version. It is made again
only when a newer checkpoint exists.

It needs TensorFlow, so the evaluate task makes it on the gpu queue; publish, on the default queue
whose image has no TensorFlow, only checks that it is current (`is_current`) and uploads it. This
module imports TensorFlow only inside `export_keras`, so that check costs no TensorFlow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

EXPORT_FILE = "model.keras"


def is_current(export: Path, checkpoint_index: Path) -> bool:
    """Whether export is a regular file written after the checkpoint (its `.index` file) it holds.

    A planted link is no export, whatever it points to.
    """
    if export.is_symlink() or not export.is_file():
        return False
    return export.stat().st_mtime_ns >= checkpoint_index.stat().st_mtime_ns


def export_keras(model_dir: Path, export_dir: Path | None = None) -> Path:
    """export_dir/model.keras (default: in model_dir) from model_dir's latest checkpoint; kept when current."""
    import tensorflow as tf

    from pipeline.model import build_resnet50
    from pipeline.train.checkpoint import CHECKPOINT_DIR, restore_model
    from pipeline.train.config import TrainConfig

    model_dir = Path(model_dir)
    export_dir = Path(export_dir) if export_dir is not None else model_dir
    target = export_dir / EXPORT_FILE
    latest = tf.train.latest_checkpoint(str(model_dir / CHECKPOINT_DIR))
    if latest is None:
        raise FileNotFoundError(f"{model_dir / CHECKPOINT_DIR}: no checkpoint to export; train first")
    if is_current(target, Path(latest + ".index")):  # a planted link is not: it is replaced
        return target
    config = TrainConfig.load(model_dir)
    model = build_resnet50(config.num_classes, image_size=config.image_size, dtype="float32")
    restore_model(model, model_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    # Saved into a new private directory (a fixed temporary name could be a planted link that Keras
    # would write through), then renamed over the target: never a half-written model.keras, and a link
    # in its place is replaced, not followed.
    with tempfile.TemporaryDirectory(dir=export_dir, prefix=f".{EXPORT_FILE}.") as scratch:
        partial = Path(scratch) / EXPORT_FILE
        model.save(partial)
        os.replace(partial, target)
    return target
