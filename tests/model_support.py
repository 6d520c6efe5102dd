"""Model directories and checkpoints for tests: NVIDIA's TF1 variables (a stand-in NGC checkpoint) and a
smoke model directory as training leaves it. TensorFlow is imported only by the functions that need it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))  # NVIDIA's resnet50: (bottleneck width, blocks)
BN = ("gamma", "beta", "moving_mean", "moving_variance")
PREFIX = "nvidia_rn50_tf_amp"
KERNEL, BIAS = "resnet50/output/dense/kernel", "resnet50/output/dense/bias"
GLOBAL_STEP = 112_590


def _conv(variables: dict, kernel: str, bn: str, shape: list[int]) -> None:
    variables[kernel] = shape
    for name in BN:
        variables[f"{bn}/{name}"] = [shape[-1]]


def nvidia_block(b: int, layer: int) -> str:
    return f"resnet50/btlnck_block_{b}_{layer}"


def nvidia_shapes() -> dict[str, list[int]]:
    """NVIDIA's model variables (model/resnet.py build_model, model/blocks/*.py), name -> shape."""
    v: dict[str, list[int]] = {}
    _conv(v, "resnet50/conv2d/conv2d/kernel", "resnet50/conv2d/BatchNorm", [7, 7, 3, 64])
    cin = 64
    for b, (width, blocks) in enumerate(STAGES):
        for layer in range(blocks):
            s = nvidia_block(b, layer)
            if layer == 0:
                _conv(v, f"{s}/shortcut/conv2d/conv2d/kernel", f"{s}/shortcut/conv2d/BatchNorm", [1, 1, cin, 4 * width])
            _conv(v, f"{s}/bottleneck_1/conv2d/kernel", f"{s}/bottleneck_1/BatchNorm", [1, 1, cin, width])
            _conv(v, f"{s}/bottleneck_2/conv2d/kernel", f"{s}/bottleneck_2/BatchNorm", [3, 3, width, width])
            _conv(v, f"{s}/bottleneck_3/conv2d/kernel", f"{s}/bottleneck_3/BatchNorm", [1, 1, width, 4 * width])
            cin = 4 * width
    v[KERNEL], v[BIAS] = [2048, 1001], [1001]
    return v


def write_checkpoint(folder: Path, values: dict[str, np.ndarray], *, graph: str | None = None) -> Path:
    """A TF1 name-based checkpoint as the NGC zip unpacks: state file (naming the training machine's
    path), .index and .data, optionally a graph.pbtxt."""
    import tensorflow as tf

    folder.mkdir(parents=True)
    names = sorted(values)
    tf.raw_ops.SaveV2(prefix=str(folder / PREFIX), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(values[n]) for n in names])
    (folder / "checkpoint").write_text(f'model_checkpoint_path: "/results/{PREFIX}"\n'
                                       f'all_model_checkpoint_paths: "/results/{PREFIX}"\n')
    if graph is not None:
        (folder / "graph.pbtxt").write_text(graph)
    return folder


def smoke_config(**overrides):
    """The smoke profile at batch 8, checkpointing and logging every step: a few steps train quickly."""
    from pipeline.recipe import get_profile

    return get_profile("smoke").replace(batch_size=8, checkpoint_every=1, log_every=1, **overrides)


def save_model_dir(model, folder: Path, *, step: int, config) -> Path:
    """A model directory as training leaves it: config.json, and a checkpoint at `step` with an optimizer's state."""
    import tensorflow as tf

    from pipeline.contracts.names import CHECKPOINT_DIR
    from pipeline.train.checkpoint import by_path

    ckpt = tf.train.Checkpoint(model=by_path(model.variables), step=tf.Variable(step, dtype=tf.int64),
                               optimizer={"sgd/iteration": tf.Variable(step, dtype=tf.int64)})
    tf.train.CheckpointManager(ckpt, str(folder / CHECKPOINT_DIR), max_to_keep=1, checkpoint_name="ckpt").save(step)
    config.save(folder)
    return folder


# Three small images a 32-px smoke model is fed by prediction and serving tests: a wide JPEG, a grayscale
# JPEG (decoded to three channels) and a non-square PNG.
TEST_IMAGES = (("wide.jpg", (90, 60), "RGB"), ("gray.jpg", (50, 70), "L"), ("tile.png", (64, 48), "RGB"))


def predictable_smoke_model(root: Path, *, seed: int) -> dict:
    """An untrained smoke model directory (config.json, checkpoint 4) whose head gives every class its own
    probability, and TEST_IMAGES written beside it. An untrained head's logits are huge (BN statistics of
    0 and 1): its softmax is one-hot with 999 ties, which would make any top-5 order arbitrary; a head
    scaled to logits of spread 2 on these images has one order.

    Returns {"model_dir", "model" (the restored Keras model), "images" (paths), "batch" (the images
    through the project's one preprocessing at 32 px)}.
    """
    import keras
    import tensorflow as tf
    from PIL import Image
    from support import untrained_checkpoint

    from pipeline.contracts.names import CHECKPOINT_DIR
    from pipeline.predict import load_image
    from pipeline.recipe import get_profile
    from pipeline.train.checkpoint import by_path

    model_dir = root / "model"
    model = untrained_checkpoint(model_dir, get_profile("smoke"), step=3)
    rng = np.random.default_rng(seed)
    images = []
    for name, (width, height), mode in TEST_IMAGES:
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode).save(root / name)
        images.append(str(root / name))
    batch = tf.stack([load_image(p, 32) for p in images])
    features = keras.Model(model.inputs, model.get_layer("avg_pool").output)(batch)
    fc = model.get_layer("fc")
    fc.kernel.assign(fc.kernel * (2.0 / float(tf.math.reduce_std(features @ fc.kernel))))
    fc.bias.assign(rng.normal(0.0, 1.0, 1000).astype(np.float32))
    tf.train.CheckpointManager(
        tf.train.Checkpoint(model=by_path(model.variables), step=tf.Variable(4, dtype=tf.int64)),
        str(model_dir / CHECKPOINT_DIR), max_to_keep=None, checkpoint_name="ckpt").save(checkpoint_number=4)
    return {"model_dir": model_dir, "model": model, "images": images, "batch": batch}
