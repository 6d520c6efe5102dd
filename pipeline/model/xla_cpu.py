"""Conv and BatchNorm layers that compute the same thing in shapes XLA:CPU compiles well.

Why this exists: compiled by XLA for a CPU, the stock layers train 2-3x slower than TensorFlow's own
kernels (README, bench/train.py), and three shapes cause nearly all of it (measured with XLA's thunk
trace, 64 px, batch 32):
- BatchNorm's statistics and their gradients reduce a [N, H, W, C] tensor over three dimensions, which
  XLA:CPU emits as a plain loop, about 10x slower than the same sums over a [N*H*W, C] view (those
  are split into a tree and run by its vectorised reduction kernels);
- a 1x1 convolution is a matrix product, but XLA turns its filter gradient into a dot over three
  contracting dimensions, with a physical transpose of the activations in front of each;
- a convolution whose output is 1 or 2 pixels wide (stage 5 at 64 px, stages 4-5 at 32 px) runs as an
  Eigen convolution about 40x slower than the arithmetic needs (200 ms for a 3x3, 512-channel layer on
  a 2x2 map at batch 32, against 5 ms as patches x matmul).
These layers write the same arithmetic as [M, C] matrix products and reductions. The variables, their
names and shapes are those of the stock layers, so checkpoints move freely between the two
formulations; only a model built for XLA on a CPU uses these (`build_resnet50(xla_cpu=True)`): GPUs
are served by cuDNN through the stock layers.
"""

from __future__ import annotations

import keras
from keras import layers, ops

# Convolutions whose output is at most this many pixels high or wide are written as patches x matmul.
SMALL_OUTPUT = 2


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """(output size, padding before, padding after) of TensorFlow's "SAME" along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


@keras.saving.register_keras_serializable(package="rn50")
class MatmulConv2D(layers.Conv2D):
    """Conv2D whose 1x1 and small-output cases are matrix products; every other case is the stock conv."""

    def convolution_op(self, inputs, kernel):
        _, height, width, channels = inputs.shape
        plain = (
            self.data_format != "channels_last" or self.groups != 1 or tuple(self.dilation_rate) != (1, 1)
            or self.padding != "same" or height is None or width is None
        )
        if plain:
            return super().convolution_op(inputs, kernel)
        kh, kw, _, filters = kernel.shape
        sh, sw = self.strides
        out_h, top, bottom = same_padding(height, kh, sh)
        out_w, left, right = same_padding(width, kw, sw)
        if (kh, kw) == (1, 1):
            columns = inputs[:, ::sh, ::sw, :] if (sh, sw) != (1, 1) else inputs
            depth = channels
        elif min(out_h, out_w) <= SMALL_OUTPUT:
            padded = ops.pad(inputs, [[0, 0], [top, bottom], [left, right], [0, 0]])
            # One strided view per kernel tap, side by side in (row, column, channel) order: the
            # kernel's own memory order, so a reshape of the kernel is its matrix.
            taps = [
                padded[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw, :]
                for i in range(kh)
                for j in range(kw)
            ]
            columns = ops.concatenate(taps, axis=-1)
            depth = kh * kw * channels
        else:
            return super().convolution_op(inputs, kernel)
        product = ops.matmul(ops.reshape(columns, (-1, depth)), ops.reshape(kernel, (depth, filters)))
        return ops.reshape(product, (-1, out_h, out_w, filters))


@keras.saving.register_keras_serializable(package="rn50")
class FlatBatchNormalization(layers.BatchNormalization):
    """BatchNormalization over a [N*H*W, C] view of its input: the same statistics, as 2-D reductions."""

    def build(self, input_shape):
        super().build(input_shape)
        if self.axis not in (-1, len(input_shape) - 1):
            raise ValueError(f"{self.name}: FlatBatchNormalization normalises the last axis only, got axis={self.axis}")
        self.axis = -1  # of the flat view, whatever the rank of the input
        self._reduction_axes = [0]

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise ValueError(f"{self.name}: FlatBatchNormalization takes no mask")
        shape = ops.shape(inputs)
        flat = ops.reshape(inputs, (-1, inputs.shape[-1]))
        return ops.reshape(super().call(flat, training=training), shape)
