"""The model a training, benchmark or evaluation run builds from its config.

XLA is for GPUs: on a CPU, XLA:CPU compiles ResNet50's BatchNorm reductions, 1x1-conv gradients and
convolutions on 1-2 px maps into code slower than TensorFlow's own kernels, so a CPU run with XLA
on gets a one-line warning (docs/benchmarks.md has the measurements).
"""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

from pipeline.model import build_resnet50
from pipeline.recipe import TrainConfig

log = logging.getLogger(__name__)
XLA_ON_CPU_WARNING = "warning: XLA on a CPU makes the training step slower, not faster; --no-xla is quicker here"


def build_model(config: TrainConfig, *, dtype: str | None) -> keras.Model:
    """`dtype` is the Keras policy (training: the config's AMP policy; evaluation: float32)."""
    return build_resnet50(config.num_classes, image_size=config.image_size, weight_init=config.weight_init, dtype=dtype)


def warn_if_xla_on_cpu(config: TrainConfig) -> bool:
    """Log the warning when XLA is on and there is no GPU; True if it did."""
    slow = config.xla and not tf.config.list_physical_devices("GPU")
    if slow:
        log.warning(XLA_ON_CPU_WARNING)
    return slow
