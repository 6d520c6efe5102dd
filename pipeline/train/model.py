"""The model a training, benchmark or evaluation run builds from its config.

One place decides the formulation: with XLA on and no GPU in the process, the layers of
`pipeline.model.xla_cpu`, which XLA:CPU compiles 2-4x faster (bench/train.py); otherwise the
stock Keras layers that cuDNN and TensorFlow's own CPU kernels serve. The variables are the same
either way, so a checkpoint from one restores into the other.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pipeline.model import build_resnet50
from pipeline.train.config import TrainConfig


def xla_on_cpu(config: TrainConfig) -> bool:
    return config.xla and not tf.config.list_physical_devices("GPU")


def build_model(config: TrainConfig, *, dtype: str | None, xla_cpu: bool | None = None) -> keras.Model:
    """`dtype` is the Keras policy (training: the config's AMP policy; evaluation: float32).
    `xla_cpu=None` decides by `xla_on_cpu`."""
    return build_resnet50(
        config.num_classes, image_size=config.image_size, weight_init=config.weight_init, dtype=dtype,
        xla_cpu=xla_on_cpu(config) if xla_cpu is None else xla_cpu,
    )
