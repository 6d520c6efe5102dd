"""The serving exports, made once from the latest checkpoint of a model directory: `model.keras` (Keras)
and `saved_model/` (a TF SavedModel with NVIDIA's evaluation preprocessing inside), with `labels.txt`.

They go into the export directory: the model directory itself for `rn50 publish`, the run workspace's
own `export/` folder in the DAG (train's `model/` is written by training only).

Written once and kept: a `.keras` file is a zip with timestamps (and a SavedModel's fingerprint
differs per save), so exporting again would change their sha256, and a retried publish must see the
same bytes to resume the same version. They are made again only when a newer checkpoint exists.

It needs TensorFlow, so the evaluate task makes them on the gpu queue; publish, on the default queue
whose image has no TensorFlow, only checks that they are current (`is_current`) and uploads them. This
module imports TensorFlow only inside the export functions, so that check costs no TensorFlow.

The SavedModel's signatures (docs/serving.md):

- `serving_default`: `image_bytes` string [N] (JPEG or PNG files' bytes; anything else fails an
  assertion) -> `probabilities` float32 [N, classes] (softmax), `classes` int64 [N] (argmax: the
  0-based ImageNet index `rn50 predict` prints), `top5_classes` int64 [N, 5], `top5_probabilities`
  float32 [N, 5]. Decode, resize, crop and normalise are `pipeline.data.preprocess`'s, in the graph;
- `serving_images`: `images` float32 [N, size, size, 3], already preprocessed -> the same outputs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline.contracts.names import CHECKPOINT_DIR, EXPORT_FILE, LABELS_FILE, SAVED_MODEL_DIR, SAVED_MODEL_PB
from pipeline.data.labels import load_label_map
from pipeline.data.preprocess import JPEG_MAGIC, PNG_MAGIC, decode_jpeg, decode_png, eval_crop, normalize
from pipeline.files import read_regular, write_atomic
from pipeline.recipe import TrainConfig

SIGNATURE_BYTES = "serving_default"
SIGNATURE_IMAGES = "serving_images"
TOP_K = 5


def is_current(export: Path, checkpoint_index: Path) -> bool:
    """Whether export is a regular file written after the checkpoint (its `.index` file) it holds.

    A planted link is no export, whatever it points to.
    """
    if export.is_symlink() or not export.is_file():
        return False
    return export.stat().st_mtime_ns >= checkpoint_index.stat().st_mtime_ns


def saved_model_current(export_dir: Path, checkpoint_index: Path) -> bool:
    """Whether export_dir holds a saved_model/ folder (not a link) written after the checkpoint."""
    folder = Path(export_dir) / SAVED_MODEL_DIR
    return not folder.is_symlink() and is_current(folder / SAVED_MODEL_PB, checkpoint_index)


def labels_text() -> str:
    """labels.txt: one line per output index, `index<TAB>synset<TAB>name`."""
    labels = load_label_map()
    return "".join(f"{i}\t{s}\t{n}\n" for i, (s, n) in enumerate(zip(labels.synsets, labels.names, strict=True)))


def _latest_index(model_dir: Path) -> Path:
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(model_dir / CHECKPOINT_DIR))
    if latest is None:
        raise FileNotFoundError(f"{model_dir / CHECKPOINT_DIR}: no checkpoint to export; train first")
    return Path(latest + ".index")


def _restored(model_dir: Path) -> tuple[Any, Any]:
    """(config, the float32 model restored from model_dir's latest checkpoint)."""
    from pipeline.model import build_resnet50  # Keras and TensorFlow: the is_current checks run without them
    from pipeline.train.checkpoint import restore_model

    config = TrainConfig.load(model_dir)
    model = build_resnet50(config.num_classes, image_size=config.image_size, dtype="float32")
    restore_model(model, model_dir)
    return config, model


def export_keras(model_dir: Path, export_dir: Path | None = None) -> Path:
    """export_dir/model.keras (default: in model_dir) from model_dir's latest checkpoint; kept when current."""
    return export_serving(model_dir, export_dir, saved_model=False)[EXPORT_FILE]


def export_serving(model_dir: Path, export_dir: Path | None = None, *, saved_model: bool = True) -> dict[str, Path]:
    """model.keras, and (saved_model) saved_model/ and labels.txt, in export_dir (default: model_dir) from
    model_dir's latest checkpoint; each kept when current. Name in the export -> its path."""
    model_dir = Path(model_dir)
    export_dir = Path(export_dir) if export_dir is not None else model_dir
    index = _latest_index(model_dir)
    keras_file = export_dir / EXPORT_FILE
    saved = export_dir / SAVED_MODEL_DIR
    written = {EXPORT_FILE: keras_file}
    if saved_model:
        written |= {SAVED_MODEL_DIR: saved, LABELS_FILE: export_dir / LABELS_FILE}
    # A planted link is not current: it is replaced.
    stale_keras = not is_current(keras_file, index)
    stale_saved = saved_model and not saved_model_current(export_dir, index)
    export_dir.mkdir(parents=True, exist_ok=True)
    if stale_keras or stale_saved:
        config, model = _restored(model_dir)
        if stale_keras:
            _save_keras(model, keras_file)
        if stale_saved:
            _save_saved_model(model, config.image_size, saved)
    if saved_model:
        _write_labels(export_dir / LABELS_FILE)
    return written


def _save_keras(model: Any, target: Path) -> None:
    # Saved into a new private directory (a fixed temporary name could be a planted link that Keras
    # would write through), then renamed over the target: never a half-written model.keras, and a link
    # in its place is replaced, not followed.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{EXPORT_FILE}.") as scratch:
        partial = Path(scratch) / EXPORT_FILE
        model.save(partial)
        os.replace(partial, target)


def _write_labels(target: Path) -> None:
    """Rewritten only when it differs: an unchanged file keeps its time (`rn50 publish`'s run id uses it)."""
    text = labels_text().encode()
    try:
        if not target.is_symlink() and read_regular(target) == text:
            return
    except (OSError, ValueError):
        pass  # absent, or not a regular file: replaced below
    write_atomic(target, text)


def _save_saved_model(model: Any, image_size: int, target: Path) -> None:
    import tensorflow as tf

    # Built in a new private directory, then moved into place whole: a reader never sees half a
    # SavedModel, and whatever was at the target (an older export, a planted link) is moved aside and
    # deleted as itself, never followed.
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{SAVED_MODEL_DIR}."))
    try:
        module = _serving_module(model, image_size)
        tf.saved_model.save(module, str(scratch / SAVED_MODEL_DIR), signatures={
            SIGNATURE_BYTES: module.serve_bytes, SIGNATURE_IMAGES: module.serve_images})
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            target.rename(scratch / "old")
        os.replace(scratch / SAVED_MODEL_DIR, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _serving_module(model: Any, image_size: int) -> Any:
    """A tf.Module holding the model (so its variables are saved) and the two serving functions."""
    import tensorflow as tf

    def preprocess(encoded: tf.Tensor) -> tf.Tensor:
        head = tf.strings.substr(encoded, 0, len(PNG_MAGIC))
        is_jpeg = tf.equal(tf.strings.substr(head, 0, len(JPEG_MAGIC)), JPEG_MAGIC)
        is_png = tf.equal(head, PNG_MAGIC)
        check = tf.debugging.Assert(tf.logical_or(is_jpeg, is_png),
                                    ["image_bytes: an input is neither a JPEG nor a PNG file (by its magic bytes)"])
        with tf.control_dependencies([check]):
            decoded = tf.cond(is_jpeg, lambda: decode_jpeg(encoded), lambda: decode_png(encoded))
        return eval_crop(decoded, image_size)

    class Serving(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="rn50_serving")
            self.model = model

        def outputs(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            probabilities = tf.nn.softmax(self.model(images, training=False))
            top = tf.math.top_k(probabilities, k=min(TOP_K, probabilities.shape[-1]))
            return {"probabilities": probabilities,
                    "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
                    "top5_classes": tf.cast(top.indices, tf.int64), "top5_probabilities": top.values}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
            crops = tf.map_fn(preprocess, image_bytes,
                              fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32))
            return self.outputs(normalize(crops))

        @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")])
        def serve_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            return self.outputs(images)

    return Serving()
