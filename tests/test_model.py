"""ResNet50 v1.5 builder: architecture, parameter counts, initialisation, mixed precision and stable names.

Run `python tests/test_model.py` to print the sorted "path:shape" list of all weights that GOLDEN_WEIGHTS_SHA256
hashes, and the hash itself, e.g. to review a deliberate rename.
"""

from __future__ import annotations

import hashlib
import math
import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from pipeline.model import build_resnet50

# torchvision.models.resnet50().parameters() (the reference v1.5), which matches ours one for one:
# convs without bias, BN gamma/beta, fc kernel and bias.
TRAINABLE_PARAMS = 25_557_032
# BN moving mean and variance: 2 x 26,560 channels over 53 BNs. Not parameters in PyTorch's count.
NON_TRAINABLE_PARAMS = 53_120
NUM_LAYERS = 175  # input, 53 x (conv, BN), 49 ReLUs, pool1, 16 x (add), avg_pool, fc
NUM_WEIGHTS = 267  # 53 conv kernels + 53 x 4 BN variables + fc kernel and bias
GOLDEN_WEIGHTS_SHA256 = "1e34490356fb10a96ab3aa59c5ae4c09905d2601531697e988cc10de82fbb537"

# Downsampling happens in the stem and in the 3x3 conv and projection of each stage's first block (v1.5).
STRIDE_2_CONVS = {
    "conv1",
    *(f"stage{s}_block1_{c}" for s in (3, 4, 5) for c in ("conv2", "shortcut")),
}


def weight_signature(model: keras.Model) -> list[str]:
    """Sorted "path:shape" of every weight: what a path-keyed checkpoint depends on."""
    return sorted(f"{v.path}:{'x'.join(map(str, v.shape))}" for v in model.weights)


def signature_sha256(model: keras.Model) -> str:
    return hashlib.sha256("\n".join(weight_signature(model)).encode()).hexdigest()


def count(variables: list) -> int:
    return sum(math.prod(v.shape) for v in variables)


@pytest.fixture(scope="module")
def model() -> keras.Model:
    """The default model (1000 classes, 224x224, fan_in), built once: building costs seconds, running it nothing."""
    return build_resnet50()


def test_parameter_counts_match_reference(model: keras.Model) -> None:
    assert count(model.trainable_weights) == TRAINABLE_PARAMS
    assert count(model.non_trainable_weights) == NON_TRAINABLE_PARAMS


def test_stride_sits_in_the_3x3_conv(model: keras.Model) -> None:
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 53
    assert {c.name for c in convs if c.strides == (2, 2)} == STRIDE_2_CONVS
    assert all(c.strides in {(1, 1), (2, 2)} for c in convs)
    for stage in (3, 4, 5):
        assert model.get_layer(f"stage{stage}_block1_conv1").strides == (1, 1)
        assert model.get_layer(f"stage{stage}_block1_conv2").kernel_size == (3, 3)
    assert model.get_layer("pool1").strides == (2, 2)


def test_stage_output_sizes_at_224(model: keras.Model) -> None:
    assert tuple(model.input.shape) == (None, 224, 224, 3)
    outputs = {s: model.get_layer(f"stage{s}_block{n}_out").output.shape for s, n in ((2, 3), (3, 4), (4, 6), (5, 3))}
    assert outputs == {2: (None, 56, 56, 256), 3: (None, 28, 28, 512), 4: (None, 14, 14, 1024), 5: (None, 7, 7, 2048)}
    assert tuple(model.output.shape) == (None, 1000)


def test_convs_have_no_bias_and_bn_follows_nvidia(model: keras.Model) -> None:
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert not any(c.use_bias for c in convs)
    assert len(bns) == 53
    assert all(bn.momentum == 0.9 and bn.epsilon == 1e-5 for bn in bns)
    # NVIDIA initialises every gamma to 1, the last BN of each block included (no zero-init residual).
    assert all(np.all(bn.gamma.numpy() == 1.0) for bn in bns)


def test_variable_paths_end_in_role(model: keras.Model) -> None:
    """The optimizer decays variables whose path ends in "kernel" and nothing else."""
    roles = {v.path.rsplit("/", 1)[-1] for v in model.weights}
    assert roles == {"kernel", "gamma", "beta", "moving_mean", "moving_variance", "bias"}
    assert [v.path for v in model.weights if v.path.endswith("bias")] == ["fc/bias"]
    assert sum(v.path.endswith("kernel") for v in model.weights) == 54


def test_layer_names_are_stable(model: keras.Model) -> None:
    names = [layer.name for layer in model.layers]
    assert names[:6] == ["images", "conv1", "conv1_bn", "conv1_relu", "pool1", "stage2_block1_conv1"]
    assert names[-3:] == ["stage5_block3_out", "avg_pool", "fc"]
    for name in (
        "stage2_block1_shortcut",
        "stage2_block1_shortcut_bn",
        "stage3_block4_conv3_bn",
        "stage4_block6_add",
        "stage5_block1_conv2_relu",
    ):
        assert name in names
    # No Keras auto-names ("conv2d_3", "re_lu"): every layer is named by the builder.
    assert all(re.fullmatch(r"images|conv1.*|pool1|stage[2-5]_block\d_.+|avg_pool|fc", n) for n in names)
    assert len(names) == len(set(names)) == NUM_LAYERS
    assert len(model.weights) == NUM_WEIGHTS
    assert signature_sha256(model) == GOLDEN_WEIGHTS_SHA256, "a weight path or shape changed: see module docstring"


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_weight_init_modes(model: keras.Model, mode: str) -> None:
    m = model if mode == "fan_in" else build_resnet50(10, image_size=32, weight_init=mode)
    for name in ("stage5_block1_conv3", "fc"):  # 1x1 512->2048 and dense 2048->classes: fan_in != fan_out
        layer = m.get_layer(name)
        config = layer.kernel_initializer.get_config()
        # NVIDIA: variance scaling, scale 2.0, truncated normal (its std is corrected to the target).
        assert (config["mode"], config["scale"], config["distribution"]) == (mode, 2.0, "truncated_normal")
        shape = layer.kernel.shape
        fan = math.prod(shape[:-1]) if mode == "fan_in" else math.prod(shape[:-2]) * shape[-1]
        assert np.std(layer.kernel.numpy()) == pytest.approx(math.sqrt(2.0 / fan), rel=0.03)


def test_unknown_weight_init_is_rejected() -> None:
    with pytest.raises(ValueError, match="weight_init"):
        build_resnet50(weight_init="he_normal")


@pytest.mark.parametrize(("policy", "compute"), [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")])
def test_mixed_precision(policy: str, compute: str) -> None:
    before = keras.config.dtype_policy().name
    m = build_resnet50(10, image_size=32, dtype=policy)
    assert keras.config.dtype_policy().name == before
    assert {v.dtype for v in m.weights} == {"float32"}
    conv = m.get_layer("stage3_block1_conv2")
    assert conv.compute_dtype == compute and conv.output.dtype == compute
    assert m.get_layer("fc").compute_dtype == "float32"
    logits = m(np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32"), training=False)
    assert logits.dtype == "float32" and np.all(np.isfinite(logits))


def test_dtype_none_follows_global_policy() -> None:
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        m = build_resnet50(10, image_size=32)
    finally:
        keras.config.set_dtype_policy(before)
    assert m.get_layer("conv1").compute_dtype == "float16"
    assert m.output.dtype == "float32"


def test_forward_pass_any_image_size() -> None:
    m = build_resnet50(10, image_size=None)
    assert tuple(m.input.shape) == (None, None, None, 3)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    for training in (False, True):
        logits = keras.ops.convert_to_numpy(m(x, training=training))
        assert logits.shape == (2, 10) and logits.dtype == np.float32 and np.all(np.isfinite(logits))


if __name__ == "__main__":
    built = build_resnet50()
    print("\n".join(weight_signature(built)))
    print(signature_sha256(built))
