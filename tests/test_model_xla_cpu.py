"""The XLA:CPU formulation (pipeline/model/xla_cpu.py): the same model, the same numbers, other shapes.

Equality is checked in float64, where the two formulations agree to rounding (1e-10); in float32 a
freshly initialised ResNet at batch 4 amplifies rounding through BatchNorm on 1x1 and 2x2 maps so much
that even XLA against TensorFlow's kernels, same layers, differs by tens of percent in some gradients.
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.model import build_resnet50
from pipeline.model.xla_cpu import FlatBatchNormalization, MatmulConv2D, same_padding
from pipeline.train.checkpoint import by_path, restore_model
from pipeline.train.config import get_profile
from pipeline.train.model import build_model, xla_on_cpu
from tests.test_model import GOLDEN_WEIGHTS_SHA256, signature_sha256


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    assert [v.path for v in source.variables] == [v.path for v in target.variables]
    for s, t in zip(source.variables, target.variables, strict=True):
        t.assign(s)


@pytest.mark.parametrize(
    ("size", "kernel", "stride"),
    [(5, 1, 1), (5, 1, 2), (4, 1, 2), (2, 3, 1), (1, 3, 1), (4, 3, 2), (3, 3, 2), (5, 3, 2), (4, 7, 2), (8, 3, 1)],
)
def test_conv_layer_equals_keras_conv(size: int, kernel: int, stride: int) -> None:
    """Every case the model can meet, odd sizes included (TF's "SAME" pads more after than before)."""
    x = np.random.default_rng(size * 100 + kernel * 10 + stride).normal(size=(3, size, size, 5))
    stock = keras.layers.Conv2D(6, kernel, strides=stride, padding="same", use_bias=False, dtype="float64")
    ours = MatmulConv2D(6, kernel, strides=stride, padding="same", use_bias=False, dtype="float64")
    expected = stock(x)
    ours.build(x.shape)
    ours.kernel.assign(stock.kernel)
    with tf.GradientTape(persistent=True) as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        a, b = stock(xt), ours(xt)
    np.testing.assert_allclose(b, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a, expected)
    for ga, gb in zip(tape.gradient(a, [xt, stock.kernel]), tape.gradient(b, [xt, ours.kernel]), strict=True):
        np.testing.assert_allclose(gb, ga, rtol=1e-10, atol=1e-12)


def test_same_padding_is_tensorflows() -> None:
    assert same_padding(224, 7, 2) == (112, 2, 3)
    assert same_padding(4, 3, 2) == (2, 0, 1)
    assert same_padding(2, 3, 1) == (2, 1, 1)
    assert same_padding(5, 1, 2) == (3, 0, 0)


def test_same_weights_names_and_layers_as_the_stock_model() -> None:
    stock, ours = build_resnet50(10, image_size=64), build_resnet50(10, image_size=64, xla_cpu=True)
    assert [layer.name for layer in ours.layers] == [layer.name for layer in stock.layers]
    assert [(v.path, v.shape) for v in ours.weights] == [(v.path, v.shape) for v in stock.weights]
    assert signature_sha256(build_resnet50(xla_cpu=True)) == GOLDEN_WEIGHTS_SHA256
    assert sum(isinstance(layer, MatmulConv2D) for layer in ours.layers) == 53
    assert sum(isinstance(layer, FlatBatchNormalization) for layer in ours.layers) == 53
    assert not any(isinstance(layer, (MatmulConv2D, FlatBatchNormalization)) for layer in stock.layers)


def _logits_and_grads(model: keras.Model, images: tf.Tensor, jit: bool):
    labels = tf.constant([1, 2, 3, 4])

    @tf.function(jit_compile=jit)
    def run(images):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        return logits, tape.gradient(loss, model.trainable_variables)

    logits, grads = run(images)
    return logits, grads, [v.numpy() for v in model.non_trainable_variables], model(images, training=False)


@pytest.mark.parametrize(("size", "jit"), [(64, False), (32, False), (32, True)])
def test_same_outputs_gradients_and_bn_statistics(size: int, jit: bool) -> None:
    """32 px puts stages 4-5 on 2x2 and 1x1 maps (patches x matmul, strided and not); 64 px stage 5 only."""
    stock = build_resnet50(10, image_size=size, dtype="float64")
    ours = build_resnet50(10, image_size=size, dtype="float64", xla_cpu=True)
    _copy_weights(stock, ours)
    images = tf.random.stateless_normal([4, size, size, 3], seed=[3, size], dtype=tf.float64)
    expected = _logits_and_grads(stock, images, jit=False)
    got = _logits_and_grads(ours, images, jit=jit)
    # fc computes in float32 whatever the policy; XLA rounds there (and in float64) unlike TensorFlow
    tol = 1e-5 if jit else 1e-9
    np.testing.assert_allclose(got[0], expected[0], rtol=tol, atol=tol)
    for var, g, e in zip(ours.trainable_variables, got[1], expected[1], strict=True):
        scale = float(np.max(np.abs(e))) or 1.0
        np.testing.assert_allclose(g / scale, e / scale, atol=tol, err_msg=var.path)
    for g, e in zip(got[2], expected[2], strict=True):  # moving mean and variance after the step
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol)
    np.testing.assert_allclose(got[3], expected[3], rtol=tol, atol=tol)  # inference, from the moving statistics


def _optimized_hlo(model: keras.Model) -> str:
    images = tf.zeros([4, 32, 32, 3])

    @tf.function(jit_compile=True)
    def grads(images):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(images, training=True))
        return tape.gradient(loss, model.trainable_variables)

    return grads.experimental_get_compiler_ir(images)(stage="optimized_hlo")


def test_xla_sees_matmuls_and_flat_reductions() -> None:
    """What XLA:CPU is handed, optimised: the shapes that made the stock layers 3x slower are gone."""
    stock = _optimized_hlo(build_resnet50(10, image_size=32))
    ours = _optimized_hlo(build_resnet50(10, image_size=32, xla_cpu=True))
    small_map_conv = r"f32\[4,[12],[12],\d+\]\{[^}]*\} convolution\("
    assert re.search(small_map_conv, stock) and not re.search(small_map_conv, ours)
    # Reductions over N, H and W of a map (XLA folds a few of ours back; at 32 px: 191 -> 38).
    four_d_reduce = r"reduce\([^)]*\), dimensions=\{0,1,2\}"
    assert len(re.findall(four_d_reduce, ours)) < len(re.findall(four_d_reduce, stock)) / 3
    assert len(re.findall(r" convolution\(", ours)) < len(re.findall(r" convolution\(", stock)) / 2  # 23 vs 87
    assert len(re.findall(r" dot\(", ours)) > len(re.findall(r" dot\(", stock))


def test_mixed_float16_computes_the_matmuls_in_float16() -> None:
    model = build_resnet50(10, image_size=32, dtype="mixed_float16", xla_cpu=True)
    assert {v.dtype for v in model.weights} == {"float32"}
    images = tf.zeros([4, 32, 32, 3], tf.float16)
    hlo = tf.function(lambda x: model(x, training=True), jit_compile=True).experimental_get_compiler_ir(images)(
        stage="hlo"
    )
    dots = re.findall(r"(f16|f32)\[([\d,]+)\]\{[^}]*\} dot\(", hlo)
    assert len([d for d in dots if d[0] == "f16"]) >= 36  # the forward 1x1 convs and stage 5's 3x3 (1x1 map)
    assert [d for d in dots if d[0] == "f32"] == [("f32", "4,10")]  # only fc, float32 by design
    logits = model(images, training=True)
    assert logits.dtype == "float32" and np.all(np.isfinite(logits))


def test_a_checkpoint_moves_between_formulations(tmp_path) -> None:
    ours = build_resnet50(10, image_size=32, xla_cpu=True)
    for v in ours.variables:
        v.assign(tf.random.stateless_normal(v.shape, seed=[len(v.path), 7]))
    directory = tmp_path / "checkpoints"
    tf.train.Checkpoint(model=by_path(ours.variables)).save(str(directory / "ckpt"))
    stock = build_resnet50(10, image_size=32)
    restore_model(stock, tmp_path)
    for a, b in zip(ours.variables, stock.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_layers_serialize_under_their_registered_names() -> None:
    for layer in (MatmulConv2D(8, 3, padding="same", name="c"), FlatBatchNormalization(momentum=0.9, name="b")):
        config = keras.saving.serialize_keras_object(layer)
        assert config["registered_name"].startswith("rn50>")
        again = keras.saving.deserialize_keras_object(config)
        assert type(again) is type(layer) and again.get_config() == layer.get_config()


def test_training_picks_the_formulation_from_xla_and_the_devices() -> None:
    assert not tf.config.list_physical_devices("GPU")  # CI and these machines: a CPU only
    on = get_profile("smoke").replace(num_classes=10, image_size=32, xla=True)
    off = on.replace(xla=False)
    assert xla_on_cpu(on) and not xla_on_cpu(off)
    assert isinstance(build_model(on, dtype="float32").get_layer("conv1"), MatmulConv2D)
    assert type(build_model(off, dtype="float32").get_layer("conv1")) is keras.layers.Conv2D
    stock = build_model(on, dtype="float32", xla_cpu=False)
    assert type(stock.get_layer("conv1_bn")) is keras.layers.BatchNormalization
