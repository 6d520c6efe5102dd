"""`rn50 predict`: the top-k ImageNet classes of JPEG or PNG files, with a model directory (trained, or
imported from NGC) or a version fetched by `rn50 pull` (both hold config.json and checkpoints/).

Images go through the evaluation's preprocessing (`pipeline.data.preprocess`, NVIDIA's) at the model's
own image size, so a 32-px smoke model is fed 32-px crops and an NGC import 224-px ones. Every file is
checked (readable, a JPEG or PNG by its magic bytes) before the model is built, so such a file is
reported at once; images are decoded a batch at a time, so memory does not grow with the number of files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.data.labels import NUM_CLASSES, load_label_map
from pipeline.data.preprocess import PNG_MAGIC, decode_jpeg, decode_png, eval_crop, image_format, normalize
from pipeline.recipe import TrainConfig

_BATCH = 32  # images per forward pass: memory stays bounded however many files are given


class PredictError(ValueError):
    """An input that cannot be predicted on; one line naming the file."""


@dataclass(frozen=True)
class Guess:
    index: int  # the model's output, 0..999 (record label index + 1)
    synset: str
    name: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    image: str  # the path as given
    top: list[Guess]

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "top": [asdict(g) for g in self.top]}

    def line(self) -> str:
        guesses = " | ".join(f"{g.index} {g.synset} {g.name} {g.probability:.4f}" for g in self.top)
        return f"{self.image}: {guesses}"


def _read_kind(path: str, size: int = -1) -> tuple[bytes, str]:
    """(path's first `size` bytes, or all of them; 'jpeg' or 'png'), or PredictError naming the file."""
    try:
        with open(path, "rb") as f:
            data = f.read(size)
    except OSError as exc:
        raise PredictError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    kind = image_format(data)
    if kind is None:
        raise PredictError(f"{path}: not an image (neither JPEG nor PNG)")
    return data, kind


def check_image(path: str) -> None:
    """PredictError unless path can be read and starts as a JPEG or PNG file does (its first bytes only)."""
    _read_kind(path, len(PNG_MAGIC))


def load_image(path: str, image_size: int) -> Any:
    """The model's input for one file: float32 [size, size, 3], normalised."""
    import tensorflow as tf

    data, kind = _read_kind(path)
    try:
        decoded = (decode_jpeg if kind == "jpeg" else decode_png)(tf.constant(data))
        return normalize(eval_crop(decoded, image_size))
    except tf.errors.OpError as exc:
        message = " ".join((exc.message or str(exc)).split())[:200]
        raise PredictError(f"{path}: not a readable {kind.upper()} image ({message})") from None


def predict(model_dir: Path, images: list[str], *, top_k: int = 5) -> list[Prediction]:
    """The top_k classes of each image, most probable first (softmax over the model's 1000 outputs)."""
    import tensorflow as tf

    from pipeline.train.checkpoint import restore_model  # TensorFlow: once there is something to predict
    from pipeline.train.model import build_model

    config = TrainConfig.load(model_dir)
    if config.num_classes != NUM_CLASSES:
        raise ValueError(f"{model_dir}: a {config.num_classes}-class model; predict names ImageNet's {NUM_CLASSES}")
    if not 1 <= top_k <= NUM_CLASSES:
        raise ValueError(f"--top-k must be in 1..{NUM_CLASSES}, not {top_k}")
    for path in images:
        check_image(path)
    model = build_model(config, dtype="float32")
    restore_model(model, model_dir)
    labels = load_label_map()
    predictions = []
    for start in range(0, len(images), _BATCH):
        paths = images[start : start + _BATCH]
        batch = tf.stack([load_image(path, config.image_size) for path in paths])
        probabilities = tf.nn.softmax(model(batch, training=False)).numpy()
        for path, row in zip(paths, probabilities, strict=True):
            best = row.argsort(kind="stable")[::-1][:top_k]
            top = [Guess(int(i), labels.synsets[i], labels.names[i], round(float(row[i]), 6)) for i in best]
            predictions.append(Prediction(path, top))
    return predictions
