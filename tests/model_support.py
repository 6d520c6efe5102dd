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
    from pipeline.train.config import get_profile

    return get_profile("smoke").replace(batch_size=8, checkpoint_every=1, log_every=1, **overrides)


def save_model_dir(model, folder: Path, *, step: int, config) -> Path:
    """A model directory as training leaves it: config.json, and a checkpoint at `step` with an optimizer's state."""
    import tensorflow as tf

    from pipeline.train.checkpoint import CHECKPOINT_DIR, by_path

    ckpt = tf.train.Checkpoint(model=by_path(model.variables), step=tf.Variable(step, dtype=tf.int64),
                               optimizer={"sgd/iteration": tf.Variable(step, dtype=tf.int64)})
    tf.train.CheckpointManager(ckpt, str(folder / CHECKPOINT_DIR), max_to_keep=1, checkpoint_name="ckpt").save(step)
    config.save(folder)
    return folder
