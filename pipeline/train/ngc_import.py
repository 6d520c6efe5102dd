"""NVIDIA's NGC ResNet50 v1.5 TensorFlow checkpoint as one of our model directories (`rn50 import-ngc`).

The checkpoint ("ResNet v1.5 TensorFlow checkpoint (AMP)", DeepLearningExamples' TF1 ConvNets code) is a
name-based TF1 Saver checkpoint: a `checkpoint` state file and `<prefix>.index` / `<prefix>.data-*`. It is
read with `tf.train.load_checkpoint`, by variable name; no TF1 graph is built.

The mapping, NVIDIA's name (scope `resnet50/`) -> our Keras variable path (pipeline/model/resnet.py), with
stage b = 0..3 (our stage b + 2), layer l (our block l + 1), k = 1..3 and BN one of gamma, beta,
moving_mean, moving_variance. Kernels are HWIO on both sides; convs have no bias; BN epsilon is 1e-5 on
both sides:

    conv2d/conv2d/kernel                                   conv1/kernel
    conv2d/BatchNorm/BN                                    conv1_bn/BN
    btlnck_block_{b}_{l}/bottleneck_{k}/conv2d/kernel      stage{b+2}_block{l+1}_conv{k}/kernel
    btlnck_block_{b}_{l}/bottleneck_{k}/BatchNorm/BN       stage{b+2}_block{l+1}_conv{k}_bn/BN
    btlnck_block_{b}_0/shortcut/conv2d/conv2d/kernel       stage{b+2}_block1_shortcut/kernel
    btlnck_block_{b}_0/shortcut/conv2d/BatchNorm/BN        stage{b+2}_block1_shortcut_bn/BN
    output/dense/kernel   [2048, 1001]                     fc/kernel [2048, 1000]  (column 1000 dropped)
                          ([1, 1, 2048, 1001] with use_final_conv: the same matrix)
    output/dense/bias     [1001]                           fc/bias [1000]          (entry 1000 dropped)

Classes: NVIDIA's output i (0..999) is the i-th synset in sorted order, i.e. record label i + 1 (their
input subtracts 1, as ours does: `LabelMap.class_index`), which is our output i. Output 1000 is never a
training target, so it is dropped; NVIDIA's own softmax spans all 1001 outputs, ours the 1000 (the
probabilities differ by the mass a trained model puts on output 1000, which is next to none).

What is not a model variable is ignored: the `<var>/Momentum` slots, `global_step` (recorded in
config.json and kept as the checkpoint's step) and any other bookkeeping outside `resnet50/` (an AMP
run's loss-scale counters). Every model variable must be there, with its shape, and nothing else may be.

v1 or v1.5: the two have identical variables and shapes (v1 strides the 1x1 `bottleneck_1` of a
stage's first block, v1.5 the 3x3 `bottleneck_2`), so the weights cannot tell them apart. The graph
can: when the checkpoint's `<prefix>.meta` or a `graph.pbtxt` beside it is there (the NGC zip may hold
either), the strides of its `bottleneck_1`/`bottleneck_2` Conv2D ops are checked and a v1 graph is
refused; config.json records which file was checked, or that none was there.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from pipeline.contracts.names import CHECKPOINT_DIR, CONFIG_FILE
from pipeline.data.labels import NUM_CLASSES
from pipeline.files import sha256_file, staging_dir, write_json
from pipeline.recipe import get_profile
from pipeline.train.checkpoint import by_path

SCOPE = "resnet50/"
# NVIDIA's 90-epoch AMP recipe is the checkpoint's: its gate baseline is the NGC table's ngc-90e row.
PROFILE = "ngc-90e"
NGC_CLASSES = 1001  # 1000 synsets and an output that is never a target
HEAD_KERNEL = SCOPE + "output/dense/kernel"
HEAD_BIAS = SCOPE + "output/dense/bias"
_BN = "(gamma|beta|moving_mean|moving_variance)"
_BLOCK = r"stage(\d)_block(\d+)"


class NgcImportError(ValueError):
    """The checkpoint cannot be imported; the message is one line naming the file or variable."""


@dataclass(frozen=True)
class ImportResult:
    model_dir: Path
    checkpoint: str  # our checkpoint's prefix in model_dir
    global_step: int | None
    head: str  # "dense" or "final_conv"
    stride_check: str  # the graph file whose strides were checked, or why none was


def nvidia_name(path: str) -> str:
    """NVIDIA's variable name for one of our variable paths (the table above, as code)."""
    rules = (
        (r"conv1/kernel", "conv2d/conv2d/kernel"),
        (rf"conv1_bn/{_BN}", r"conv2d/BatchNorm/\1"),
        (rf"{_BLOCK}_conv(\d)/kernel", lambda m: f"{_block(m)}/bottleneck_{m[3]}/conv2d/kernel"),
        (rf"{_BLOCK}_conv(\d)_bn/{_BN}", lambda m: f"{_block(m)}/bottleneck_{m[3]}/BatchNorm/{m[4]}"),
        (rf"{_BLOCK}_shortcut/kernel", lambda m: f"{_block(m)}/shortcut/conv2d/conv2d/kernel"),
        (rf"{_BLOCK}_shortcut_bn/{_BN}", lambda m: f"{_block(m)}/shortcut/conv2d/BatchNorm/{m[3]}"),
        (r"fc/(kernel|bias)", r"output/dense/\1"),
    )
    for pattern, replacement in rules:
        match = re.fullmatch(pattern, path)
        if match:
            name = replacement(match) if callable(replacement) else match.expand(replacement)
            return SCOPE + name
    raise ValueError(f"{path}: no NGC counterpart (pipeline/model/resnet.py changed its layer names?)")


def _block(match: re.Match[str]) -> str:
    return f"btlnck_block_{int(match[1]) - 2}_{int(match[2]) - 1}"


@cache
def _template() -> tf.keras.Model:
    """One float32 model per process: its variables are what a checkpoint must fill (built once: seconds)."""
    from pipeline.model import build_resnet50  # Keras: the checkpoint checks before it need none

    return build_resnet50(NUM_CLASSES, image_size=get_profile(PROFILE).image_size, dtype="float32")


def _is_model_variable(name: str) -> bool:
    return name.startswith(SCOPE) and not name.endswith("/Momentum")


def resolve_checkpoint(ckpt: Path) -> str:
    """The checkpoint prefix: CKPT itself, or what the `checkpoint` state file of directory CKPT names."""
    ckpt = Path(ckpt)
    if not ckpt.exists() and not Path(f"{ckpt}.index").is_file():
        raise NgcImportError(f"{ckpt}: no such checkpoint directory or prefix")
    if ckpt.is_dir():
        if not (ckpt / "checkpoint").is_file():
            raise NgcImportError(f"{ckpt}: not a checkpoint directory (no `checkpoint` state file); "
                                 "give the directory the NGC zip unpacks to, or the checkpoint's prefix")
        try:
            state = tf.train.get_checkpoint_state(str(ckpt))
        except Exception as exc:  # a garbled state file: protobuf text errors of several kinds
            raise NgcImportError(f"{ckpt / 'checkpoint'}: not a checkpoint state file ({_first_line(exc)})") from None
        if state is None or not state.model_checkpoint_path:
            raise NgcImportError(f"{ckpt / 'checkpoint'}: names no model_checkpoint_path")
        # NVIDIA's state file names the path on the training machine. The checkpoint is the files beside
        # the state file, never what its path names elsewhere on this machine (another directory's import).
        name = Path(state.model_checkpoint_path).name
        if name in ("", ".", ".."):
            raise NgcImportError(f"{ckpt / 'checkpoint'}: model_checkpoint_path {state.model_checkpoint_path!r} "
                                 "names no checkpoint prefix")
        return str(ckpt / name)
    if ckpt.suffix == ".index":
        ckpt = ckpt.with_suffix("")
    return str(ckpt)


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return " ".join(text.split())[:300]


def _read(prefix: str) -> tf.train.CheckpointReader:
    if not Path(f"{prefix}.index").is_file():
        raise NgcImportError(f"{prefix}.index: missing; not a TensorFlow checkpoint")
    try:
        return tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as exc:
        raise NgcImportError(f"{prefix}: not a TensorFlow checkpoint ({_first_line(exc)})") from None


# The convolutions v1 and v1.5 stride differently: bottleneck_1 and bottleneck_2 of the first block of
# stages 1-3 (stage 0's first block is unstrided in both).
_DECISIVE = frozenset((b, k) for b in ("1", "2", "3") for k in ("1", "2"))
_NOT_CHECKED = "the weights alone cannot tell v1 from v1.5"


def check_strides(prefix: str) -> str:
    """Refuse a v1 graph; return the graph file checked, or why none could be (see the module docstring).
    A graph counts as checked only when it holds every convolution whose stride tells v1 from v1.5."""
    candidates = [Path(f"{prefix}.meta"), Path(prefix).parent / "graph.pbtxt"]
    lacking = []
    for path in candidates:
        if not path.is_file():
            continue
        graph = _graph_def(path)
        seen = set()
        for node in graph.node:
            match = re.search(r"(btlnck_block_(\d+)_0)/bottleneck_([12])/conv2d/Conv2D$", node.name)
            if node.op != "Conv2D" or not match:
                continue
            seen.add((match[2], match[3]))
            strides = list(node.attr["strides"].list.i)
            nchw = node.attr["data_format"].s == b"NCHW"
            spatial = max(strides[2:4] if nchw else strides[1:3], default=1)
            strided_1x1 = match[3] == "1" and spatial > 1
            unstrided_3x3 = match[3] == "2" and match[2] != "0" and spatial == 1
            if strided_1x1 or unstrided_3x3:
                variable = f"{SCOPE}{match[1]}/bottleneck_{match[3]}/conv2d/kernel"
                raise NgcImportError(
                    f"{variable}: stride {spatial} in {path.name}'s graph: a ResNet50 v1 checkpoint "
                    "(v1.5 strides the 3x3 bottleneck_2, not the 1x1 bottleneck_1)")
        if _DECISIVE.issubset(seen):
            return path.name
        lacking.append(path.name)
    if lacking:
        verb = "lacks" if len(lacking) == 1 else "lack"
        return (f"not checked: {' and '.join(lacking)} {verb} the bottleneck_1/bottleneck_2 Conv2D ops of "
                f"btlnck_block_1_0 to btlnck_block_3_0, whose strides differ: {_NOT_CHECKED}")
    return f"not checked: no .meta or graph.pbtxt beside the checkpoint: {_NOT_CHECKED}"


def _graph_def(path: Path) -> Any:
    from google.protobuf import text_format

    try:
        if path.suffix == ".meta":
            meta = tf.compat.v1.MetaGraphDef()
            meta.ParseFromString(path.read_bytes())
            return meta.graph_def
        return text_format.Parse(path.read_text(), tf.compat.v1.GraphDef())
    except Exception as exc:  # protobuf's decode and parse errors share no base class worth naming
        raise NgcImportError(f"{path}: not a TensorFlow graph ({_first_line(exc)})") from None


def read_weights(prefix: str) -> tuple[dict[str, np.ndarray], str, int | None]:
    """Our variable path -> value, the head variant, and global_step; every refusal names the variable."""
    reader = _read(prefix)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    expected = {nvidia_name(v.path): v for v in _template().variables}
    for name in sorted(shapes):
        if _is_model_variable(name) and name not in expected:
            raise NgcImportError(f"{name}: extra variable in {prefix}: not part of ResNet50 v1.5")
    weights: dict[str, np.ndarray] = {}
    head = "dense"
    for name, variable in expected.items():
        if name not in shapes:
            raise NgcImportError(f"{name}: missing from {prefix}")
        shape, want = list(shapes[name]), list(variable.shape)
        if name == HEAD_KERNEL:
            allowed = {"dense": [want[0], NGC_CLASSES], "final_conv": [1, 1, want[0], NGC_CLASSES]}
            found = next((k for k, v in allowed.items() if v == shape), None)
            if found is None:
                raise NgcImportError(f"{name}: shape {shape} in {prefix}, expected {allowed['dense']} "
                                     f"(or {allowed['final_conv']} with use_final_conv)")
            head, want = found, shape
        elif name == HEAD_BIAS:
            want = [NGC_CLASSES]
        if shape != want:
            raise NgcImportError(f"{name}: shape {shape} in {prefix}, expected {want}")
        if dtypes[name] != tf.float32:
            raise NgcImportError(f"{name}: {dtypes[name].name} in {prefix}, expected float32")
    if "global_step" in shapes and (shapes["global_step"] != [] or not dtypes["global_step"].is_integer):
        raise NgcImportError(f"global_step: a {dtypes['global_step'].name} of shape {shapes['global_step']} in "
                             f"{prefix}, expected an integer scalar")
    for name, variable in expected.items():  # read only once every name and shape is right
        value = _tensor(reader, prefix, name)
        if name == HEAD_KERNEL:
            value = value.reshape(-1, NGC_CLASSES)[:, :NUM_CLASSES]
        elif name == HEAD_BIAS:
            value = value[:NUM_CLASSES]
        weights[variable.path] = value
    step = int(_tensor(reader, prefix, "global_step")) if "global_step" in shapes else None
    if step is not None and step < 0:
        raise NgcImportError(f"global_step: {step} in {prefix}, expected a step count (0 or more)")
    return weights, head, step


def _tensor(reader: tf.train.CheckpointReader, prefix: str, name: str) -> np.ndarray:
    """One variable's value; a .data file that is cut short, corrupted or missing is refused naming both."""
    try:
        return reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError) as exc:  # a short read is IndexError, a bad CRC DataLoss
        data = sorted(str(p) for p in Path(prefix).parent.glob(f"{Path(prefix).name}.data-*"))
        where = data[0] if len(data) == 1 else f"{prefix}.data-*"
        raise NgcImportError(f"{name}: cannot be read from {where}, truncated or corrupted "
                             f"({_first_line(exc)})") from None


def import_ngc(ckpt: Path, model_dir: Path) -> ImportResult:
    """Write model_dir (new, or empty) from NVIDIA's checkpoint at ckpt: config.json and checkpoints/, as a
    trained model directory holds them, so evaluate, predict, gate and publish take it as one."""
    model_dir = Path(model_dir)
    if model_dir.exists() and (not model_dir.is_dir() or any(model_dir.iterdir())):
        raise NgcImportError(f"{model_dir}: exists and is not an empty directory")
    prefix = resolve_checkpoint(ckpt)
    stride_check = check_strides(prefix)
    weights, head, step = read_weights(prefix)

    model = _template()
    for variable in model.variables:
        variable.assign(weights[variable.path])
    source_files = [Path(f"{prefix}.index"), *sorted(Path(prefix).parent.glob(f"{Path(prefix).name}.data-*"))]
    config = get_profile(PROFILE).to_dict() | {
        "imported_from": {
            "format": "NGC TensorFlow 1 checkpoint (DeepLearningExamples ConvNets resnet50, v1.5)",
            "source": str(Path(prefix).resolve()),
            "sha256": {p.name: sha256_file(p) for p in source_files},
            "global_step": step,
            "head": head,
            "stride_check": stride_check,
        }
    }
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    # Built in a staging directory beside it, then renamed: never a half-written model directory.
    staging = staging_dir(model_dir.parent, f".{model_dir.name}.partial-")
    try:
        # The keys a trained model directory's checkpoints use (pipeline.train.checkpoint.TrainState).
        checkpoint = tf.train.Checkpoint(
            model=by_path(model.variables),
            step=tf.Variable(step or 0, dtype=tf.int64, trainable=False),
            epoch=tf.Variable(0, dtype=tf.int64, trainable=False),
        )
        manager = tf.train.CheckpointManager(checkpoint, str(staging / CHECKPOINT_DIR), max_to_keep=1,
                                             checkpoint_name="ckpt")
        saved = manager.save(checkpoint_number=step or 0)
        write_json(staging / CONFIG_FILE, config)
        if model_dir.exists():
            model_dir.rmdir()  # empty, checked above
        os.replace(staging, model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ImportResult(model_dir, str(model_dir / CHECKPOINT_DIR / Path(saved).name), step, head, stride_check)
