"""ResNet50 v1.5 as a plain Keras functional model, following NVIDIA DeepLearningExamples.

Reference: NVIDIA/DeepLearningExamples, TensorFlow/Classification/ConvNets/model/resnet.py (hyperparameters,
stem, head) and model/blocks/resnet_bottleneck_block.py, model/blocks/conv2d_block.py (the block). Where this file
follows a choice of theirs that the papers leave open, the comment says "NVIDIA".

Every layer gets an explicit name, because Keras' auto-numbering ("conv2d_17") shifts whenever a layer is added
anywhere. With explicit names, variable paths ("stage3_block1_conv2/kernel", "fc/bias") are stable, so a checkpoint
keyed by variable path survives refactors, and the optimizer can pick weight-decay variables by path. (Keras'
own `save_weights` and `tf.train.Checkpoint(model=...)` key by layer position or class, not by these names.)
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

# (bottleneck width, blocks) for stages 2..5; the block output is 4x the width.
_STAGES: tuple[tuple[int, int], ...] = ((64, 3), (128, 4), (256, 6), (512, 3))
_EXPANSION = 4
_WEIGHT_INITS = ("fan_in", "fan_out")


@dataclass(frozen=True)
class _Options:
    """What every conv/BN layer shares; one object keeps the block functions' signatures short."""

    weight_init: str
    bn_momentum: float
    bn_epsilon: float
    dtype: str | None

    def kernel_initializer(self) -> keras.initializers.Initializer:
        # NVIDIA: variance scaling, scale 2.0, truncated normal, mode = --weight_init, for convs and the dense
        # layer alike. A fresh instance per layer: an unseeded Keras 3 initializer picks its seed once, so a
        # shared instance would give every layer of one shape identical weights.
        return keras.initializers.VarianceScaling(scale=2.0, mode=self.weight_init, distribution="truncated_normal")


def _conv_bn(
    x: keras.KerasTensor,
    filters: int,
    kernel_size: int,
    *,
    name: str,
    opts: _Options,
    strides: int = 1,
    relu: bool = True,
) -> keras.KerasTensor:
    """Conv (no bias: the BN beta that follows makes it redundant) + BN (+ ReLU)."""
    # NVIDIA pads with "SAME" everywhere, including the strided convs, rather than torchvision's symmetric padding.
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=opts.kernel_initializer(),
        dtype=opts.dtype,
        name=name,
    )(x)
    # NVIDIA: gamma starts at 1 in every BN, including the last one of a block (no zero-init residual).
    x = layers.BatchNormalization(
        momentum=opts.bn_momentum, epsilon=opts.bn_epsilon, dtype=opts.dtype, name=f"{name}_bn"
    )(x)
    if relu:
        x = layers.ReLU(dtype=opts.dtype, name=f"{name}_relu")(x)
    return x


def _bottleneck_block(x: keras.KerasTensor, width: int, *, stride: int, name: str, opts: _Options) -> keras.KerasTensor:
    """One bottleneck block, v1.5: the stride sits in the 3x3 conv, which keeps more of the input than v1's
    strided 1x1 (which skips 3 of every 4 positions) and is worth about 0.5 % top-1 (NVIDIA's README)."""
    out_channels = width * _EXPANSION
    shortcut = x
    if stride != 1 or x.shape[-1] != out_channels:
        shortcut = _conv_bn(x, out_channels, 1, strides=stride, relu=False, name=f"{name}_shortcut", opts=opts)
    y = _conv_bn(x, width, 1, name=f"{name}_conv1", opts=opts)
    y = _conv_bn(y, width, 3, strides=stride, name=f"{name}_conv2", opts=opts)
    y = _conv_bn(y, out_channels, 1, relu=False, name=f"{name}_conv3", opts=opts)
    y = layers.Add(dtype=opts.dtype, name=f"{name}_add")([shortcut, y])
    return layers.ReLU(dtype=opts.dtype, name=f"{name}_out")(y)


def _stage(
    x: keras.KerasTensor, width: int, blocks: int, *, stride: int, name: str, opts: _Options
) -> keras.KerasTensor:
    """A stage downsamples (if at all) in its first block only, as in every ResNet."""
    for i in range(blocks):
        x = _bottleneck_block(x, width, stride=stride if i == 0 else 1, name=f"{name}_block{i + 1}", opts=opts)
    return x


def build_resnet50(
    num_classes: int = 1000,
    *,
    image_size: int | None = 224,
    weight_init: str = "fan_in",
    bn_momentum: float = 0.9,
    bn_epsilon: float = 1e-5,
    dtype: str | None = None,
    name: str = "resnet50_v1_5",
) -> keras.Model:
    """Build ResNet50 v1.5 for channels-last images that the input pipeline has already normalised.

    The model returns float32 logits, with no softmax, because the loss takes logits (numerically stabler than
    the log of a softmax). `dtype` is a Keras dtype-policy name given to each layer, so that building
    a mixed-precision model does not change the process-wide policy under other code; None means the current
    global policy. `image_size=None` accepts any spatial size (evaluation at another resolution).

    Defaults are NVIDIA's 90-epoch recipe: BN momentum 0.9 (their "decay"), epsilon 1e-5, `--weight_init=fan_in`.
    """
    if weight_init not in _WEIGHT_INITS:
        raise ValueError(f"weight_init must be one of {_WEIGHT_INITS}, got {weight_init!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    opts = _Options(weight_init, bn_momentum, bn_epsilon, dtype)

    inputs = keras.Input(shape=(image_size, image_size, 3), name="images")
    x = _conv_bn(inputs, 64, 7, strides=2, name="conv1", opts=opts)
    x = layers.MaxPooling2D(3, strides=2, padding="same", dtype=dtype, name="pool1")(x)  # NVIDIA: "SAME"
    for stage, (width, blocks) in enumerate(_STAGES, start=2):
        x = _stage(x, width, blocks, stride=1 if stage == 2 else 2, name=f"stage{stage}", opts=opts)
    x = layers.GlobalAveragePooling2D(dtype=dtype, name="avg_pool")(x)
    # float32 whatever the policy: softmax cross-entropy on float16 logits loses precision and can overflow.
    # NVIDIA: the dense layer uses the same variance-scaling init as the convs, and a zero bias.
    logits = layers.Dense(
        num_classes, kernel_initializer=opts.kernel_initializer(), bias_initializer="zeros", dtype="float32", name="fc"
    )(x)
    return keras.Model(inputs, logits, name=name)
