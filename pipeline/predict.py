"""`rn50 predict`: the top-k ImageNet classes of JPEG or PNG files, with a model directory (trained, or
imported from NGC) or a version fetched by `rn50 pull` (both hold config.json and checkpoints/).

Images go through the evaluation's preprocessing (`pipeline.data.preprocess`, NVIDIA's) at the model's
own image size, so a 32-px smoke model is fed 32-px crops and an NGC import 224-px ones. Every file is
read and decoded before the model is built: a file that is not an image is reported at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.data.labels import NUM_CLASSES, load_label_map
from pipeline.data.preprocess import image_format

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


def load_image(path: str, image_size: int) -> Any:
    """The model's input for one file: float32 [size, size, 3], normalised."""
    import tensorflow as tf

    from pipeline.data.preprocess import decode_jpeg, decode_png, eval_crop, normalize

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PredictError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    kind = image_format(data)
    if kind is None:
        raise PredictError(f"{path}: not an image (neither JPEG nor PNG)")
    try:
        decoded = (decode_jpeg if kind == "jpeg" else decode_png)(tf.constant(data))
        return normalize(eval_crop(decoded, image_size))
    except tf.errors.OpError as exc:
        message = " ".join((exc.message or str(exc)).split())[:200]
        raise PredictError(f"{path}: not a readable {kind.upper()} image ({message})") from None


def predict(model_dir: Path, images: list[str], *, top_k: int = 5) -> list[Prediction]:
    """The top_k classes of each image, most probable first (softmax over the model's 1000 outputs)."""
    import tensorflow as tf

    from pipeline.train.checkpoint import restore_model
    from pipeline.train.config import TrainConfig
    from pipeline.train.model import build_model

    config = TrainConfig.load(model_dir)
    if config.num_classes != NUM_CLASSES:
        raise ValueError(f"{model_dir}: a {config.num_classes}-class model; predict names ImageNet's {NUM_CLASSES}")
    if not 1 <= top_k <= NUM_CLASSES:
        raise ValueError(f"--top-k must be in 1..{NUM_CLASSES}, not {top_k}")
    inputs = [load_image(path, config.image_size) for path in images]
    model = build_model(config, dtype="float32")
    restore_model(model, model_dir)
    labels = load_label_map()
    predictions = []
    for start in range(0, len(inputs), _BATCH):
        batch = tf.stack(inputs[start : start + _BATCH])
        probabilities = tf.nn.softmax(model(batch, training=False)).numpy()
        for path, row in zip(images[start : start + _BATCH], probabilities, strict=True):
            best = row.argsort(kind="stable")[::-1][:top_k]
            top = [Guess(int(i), labels.synsets[i], labels.names[i], round(float(row[i]), 6)) for i in best]
            predictions.append(Prediction(path, top))
    return predictions
