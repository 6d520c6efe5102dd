"""`rn50 import-ngc` on a stand-in for NVIDIA's checkpoint, then `rn50 predict --json`, against an independent
implementation of NVIDIA's evaluation (preprocessing and forward pass in plain tf.nn ops, written here from
DeepLearningExamples' TF1 ConvNets code, not from our Keras model); and every refusal.

The stand-in has NVIDIA's variable names and shapes (written with SaveV2, so the names are exactly
NVIDIA's), random He-initialised kernels, and BN statistics calibrated on the test images, so activations
stay sane through 16 blocks. Output 1000 gets a large bias: an importer that dropped the wrong column, or
mis-numbered the classes, would change every image's top-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from model_support import BIAS, GLOBAL_STEP, KERNEL, PREFIX, STAGES, nvidia_block, nvidia_shapes, write_checkpoint
from PIL import Image

from pipeline.cli import EXIT_FAILED, EXIT_OK, main

tf = pytest.importorskip("tensorflow")

def nvidia_preprocess(path: Path) -> np.ndarray:
    """utils/image_processing.py's evaluation path, 224 px: float32 [224, 224, 3], normalised."""
    data = path.read_bytes()
    if data.startswith(b"\x89PNG"):
        image = tf.io.decode_png(data, channels=3)
    else:
        image = tf.io.decode_jpeg(data, channels=3, fancy_upscaling=False, dct_method="INTEGER_FAST")
    h, w = (np.float32(d) for d in image.shape[:2])
    scale = np.float32(256) / min(h, w)
    nh, nw = int(h * scale), int(w * scale)
    # TensorFlow 1's tf.image.resize (NVIDIA's checkpoint is TF1's): bilinear without half-pixel centres.
    resized = tf.compat.v1.image.resize_bilinear(image[None], [nh, nw], align_corners=False)[0].numpy()
    top, left = (nh - 224) // 2, (nw - 224) // 2
    crop = resized[top : top + 224, left : left + 224]
    return (crop - np.array([123.68, 116.28, 103.53], np.float32)) / np.array([58.395, 57.120, 57.385], np.float32)


def nvidia_forward(w: dict[str, np.ndarray], images: np.ndarray, *, calibrate: bool = False) -> np.ndarray:
    """NVIDIA's inference graph in tf.nn ops, NHWC; logits [N, 1001]. `calibrate` sets every BN's moving
    statistics to the batch's (and scales the dense layer) instead of using them."""

    def conv_bn(x, kernel: str, bn: str, stride: int, relu: bool = True):
        y = tf.nn.conv2d(x, w[kernel], stride, "SAME")
        if calibrate:
            mean, variance = tf.nn.moments(y, [0, 1, 2])
            w[f"{bn}/moving_mean"], w[f"{bn}/moving_variance"] = mean.numpy(), variance.numpy()
        y = tf.nn.batch_normalization(y, w[f"{bn}/moving_mean"], w[f"{bn}/moving_variance"], w[f"{bn}/beta"],
                                      w[f"{bn}/gamma"], 1e-5)
        return tf.nn.relu(y) if relu else y

    x = conv_bn(tf.constant(images), "resnet50/conv2d/conv2d/kernel", "resnet50/conv2d/BatchNorm", 2)
    x = tf.nn.max_pool2d(x, 3, 2, "SAME")
    for b, (_, blocks) in enumerate(STAGES):
        for layer in range(blocks):
            s, stride = nvidia_block(b, layer), 2 if layer == 0 and b > 0 else 1
            shortcut = x
            if layer == 0:
                shortcut = conv_bn(x, f"{s}/shortcut/conv2d/conv2d/kernel", f"{s}/shortcut/conv2d/BatchNorm",
                                   stride, relu=False)
            y = conv_bn(x, f"{s}/bottleneck_1/conv2d/kernel", f"{s}/bottleneck_1/BatchNorm", 1)
            y = conv_bn(y, f"{s}/bottleneck_2/conv2d/kernel", f"{s}/bottleneck_2/BatchNorm", stride)  # v1.5
            y = conv_bn(y, f"{s}/bottleneck_3/conv2d/kernel", f"{s}/bottleneck_3/BatchNorm", 1, relu=False)
            x = tf.nn.relu(shortcut + y)
    features = tf.reduce_mean(x, [1, 2])
    if calibrate:  # logits with a spread of 3: clear top-5s, probabilities far from flat
        w[KERNEL] *= np.float32(3.0 / float(tf.math.reduce_std(features @ w[KERNEL])))
    return (features @ w[KERNEL] + w[BIAS]).numpy()


def nvidia_probabilities(logits: np.ndarray) -> np.ndarray:
    return tf.nn.softmax(logits[:, :1000]).numpy()  # output 1000 dropped, as the import does


def _images(folder: Path) -> list[Path]:
    """Real files: non-square both ways, a grayscale JPEG, a PNG; chroma-subsampled JPEGs, where
    NVIDIA's decode flags change the pixels."""
    rng = np.random.default_rng(7)
    folder.mkdir()
    paths = []
    for name, size, mode in (("landscape.jpg", (320, 240), "RGB"), ("portrait.jpg", (230, 300), "RGB"),
                             ("gray.jpg", (260, 257), "L"), ("square.png", (240, 240), "RGB")):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
        pixels = np.asarray(coarse, np.int16) + rng.integers(-20, 21, (size[1], size[0], 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert(mode)
        image.save(folder / name, **({"quality": 90} if name.endswith(".jpg") else {}))
        paths.append(folder / name)
    return paths


def conv_graph(stride_in_1x1: bool) -> str:
    """A GraphDef with the first blocks' Conv2D ops (NCHW, as NVIDIA's GPU graph), v1 or v1.5 strides."""
    nodes = []
    for b in range(4):
        for k in (1, 2):
            strided = b > 0 and (k == 1) == stride_in_1x1
            stride = 2 if strided else 1
            nodes.append(
                f'node {{ name: "{nvidia_block(b, 0)}/bottleneck_{k}/conv2d/Conv2D" op: "Conv2D" '
                f'attr {{ key: "data_format" value {{ s: "NCHW" }} }} '
                f'attr {{ key: "strides" value {{ list {{ i: 1 i: 1 i: {stride} i: {stride} }} }} }} }}')
    return "\n".join(nodes) + "\n"


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ngc")
    images = _images(root / "images")
    batch = np.stack([nvidia_preprocess(p) for p in images])
    rng = np.random.default_rng(16)
    values: dict[str, np.ndarray] = {}
    for name, shape in nvidia_shapes().items():
        if name.endswith("/kernel"):
            fan_in = int(np.prod(shape[:-1]))
            values[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        elif name.endswith("/gamma"):
            values[name] = rng.uniform(0.5, 1.0, shape).astype(np.float32)
        elif name.endswith(("/beta", "/bias")):
            values[name] = rng.normal(0.0, 0.1, shape).astype(np.float32)
        else:
            values[name] = np.zeros(shape, np.float32) if "mean" in name else np.ones(shape, np.float32)
    values[BIAS][1000] = 20.0  # never a target: it must be dropped, not predicted
    nvidia_forward(values, batch, calibrate=True)
    reference = nvidia_probabilities(nvidia_forward(values, batch))
    saved = dict(values, global_step=np.int64(GLOBAL_STEP))
    for name in ("resnet50/conv2d/conv2d/kernel", KERNEL):  # slots NVIDIA's Momentum optimizer leaves
        saved[f"{name}/Momentum"] = np.zeros_like(values[name])
    ckpt = write_checkpoint(root / "ngc_ckpt", saved, graph=conv_graph(stride_in_1x1=False))
    model_dir = root / "imported"
    assert main(["import-ngc", str(ckpt), str(model_dir)]) == EXIT_OK
    return {"root": root, "images": images, "batch": batch, "values": values, "saved": saved,
            "reference": reference, "ckpt": ckpt, "model_dir": model_dir}


def test_the_standin_has_nvidias_variable_count_and_size() -> None:
    shapes = nvidia_shapes()
    assert len(shapes) == 267  # the figures, from NVIDIA's graph
    assert sum(int(np.prod(s)) for s in shapes.values()) == 25_612_201


def test_import_then_predict_reproduces_nvidias_evaluation(standin: dict, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    paths = [str(p) for p in standin["images"]]
    assert main(["predict", "--model-dir", str(standin["model_dir"]), "--json", *paths]) == EXIT_OK
    got = json.loads(capsys.readouterr().out)
    reference = standin["reference"]
    synsets = sorted((Path(__file__).parents[1] / "pipeline/data/resources/imagenet_lsvrc_2015_synsets.txt")
                     .read_text().split())
    assert [item["image"] for item in got] == paths
    for item, expected in zip(got, reference, strict=True):
        order = np.argsort(-expected)
        # The comparison means something only if the reference's top-5 is not a near-tie (logit gaps
        # far above float32 round-off).
        assert np.min(-np.diff(np.log(expected[order[:6]]))) > 1e-3
        assert [g["index"] for g in item["top"]] == order[:5].tolist(), item["image"]
        np.testing.assert_allclose([g["probability"] for g in item["top"]], expected[order[:5]], atol=5e-3)
        assert [g["synset"] for g in item["top"]] == [synsets[i] for i in order[:5]]
        assert all(g["name"] for g in item["top"])
    # Not a flat distribution: the test compares real preferences.
    assert max(item["top"][0]["probability"] for item in got) > 0.05


def test_the_preprocessing_is_nvidias_to_the_pixel(standin: dict) -> None:
    from pipeline.predict import load_image

    for path, expected in zip(standin["images"], standin["batch"], strict=True):
        np.testing.assert_allclose(load_image(str(path), 224).numpy(), expected, atol=1e-4, err_msg=str(path))
    # TensorFlow's default decode (fancy upscaling, accurate IDCT) gives other pixels: the flags matter.
    path = standin["images"][0]
    default = tf.io.decode_jpeg(path.read_bytes(), channels=3)
    nvidia = tf.io.decode_jpeg(path.read_bytes(), channels=3, fancy_upscaling=False, dct_method="INTEGER_FAST")
    assert np.abs(default.numpy().astype(int) - nvidia.numpy().astype(int)).max() > 2


def test_the_model_directory_records_its_source(standin: dict) -> None:
    import hashlib

    config = json.loads((standin["model_dir"] / "config.json").read_text())
    source = config["imported_from"]
    ckpt = standin["ckpt"]
    assert source["source"] == str((ckpt / PREFIX).resolve())
    files = [f"{PREFIX}.index", f"{PREFIX}.data-00000-of-00001"]
    assert source["sha256"] == {f: hashlib.sha256((ckpt / f).read_bytes()).hexdigest() for f in files}
    assert source["global_step"] == GLOBAL_STEP and source["head"] == "dense"
    assert source["stride_check"] == "graph.pbtxt"
    assert config["profile"] == "ngc-90e" and config["image_size"] == 224 and config["num_classes"] == 1000
    # The checkpoint a trained model directory holds: evaluate reads its step, publish its files.
    latest = tf.train.latest_checkpoint(str(standin["model_dir"] / "checkpoints"))
    assert int(tf.train.load_variable(latest, "step/.ATTRIBUTES/VARIABLE_VALUE")) == GLOBAL_STEP


def test_the_final_conv_head_imports_the_same_weights(standin: dict) -> None:
    from pipeline.train.ngc_import import read_weights

    saved = dict(standin["saved"], **{KERNEL: standin["values"][KERNEL].reshape(1, 1, 2048, 1001)})
    ckpt = write_checkpoint(standin["root"] / "final_conv", saved)
    weights, head, step = read_weights(str(ckpt / PREFIX))
    assert head == "final_conv" and step == GLOBAL_STEP
    np.testing.assert_array_equal(weights["fc/kernel"], standin["values"][KERNEL][:, :1000])
    np.testing.assert_array_equal(weights["fc/bias"], standin["values"][BIAS][:1000])


def _refused(capsys: pytest.CaptureFixture, ckpt: Path, out: Path, *needles: str) -> None:
    capsys.readouterr()
    assert main(["import-ngc", str(ckpt), str(out)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    assert not out.exists(), "a refused import must leave no model directory"


NAME = "resnet50/btlnck_block_2_3/bottleneck_2/conv2d/kernel"


@pytest.mark.parametrize(
    ("case", "change", "needles"),
    [
        ("missing", lambda v: v.pop(NAME), (NAME, "missing")),
        ("extra", lambda v: v.update({"resnet50/btlnck_block_3_3/bottleneck_1/conv2d/kernel": np.zeros(1, np.float32)}),
         ("resnet50/btlnck_block_3_3/bottleneck_1/conv2d/kernel", "extra")),
        ("shape", lambda v: v.update({NAME: np.zeros([3, 3, 256, 128], np.float32)}), (NAME, "[3, 3, 256, 128]")),
        ("head", lambda v: v.update({KERNEL: np.zeros([2048, 1000], np.float32)}), (KERNEL, "[2048, 1000]")),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_refused_naming_the_variable(
    standin: dict, capsys: pytest.CaptureFixture, case: str, change, needles: tuple[str, ...]
) -> None:
    values = dict(standin["saved"])
    change(values)
    ckpt = write_checkpoint(standin["root"] / f"bad_{case}", values)
    _refused(capsys, ckpt, standin["root"] / f"out_{case}", *needles)


def test_a_v1_graph_is_refused(standin: dict, capsys: pytest.CaptureFixture) -> None:
    v1 = standin["root"] / "v1"
    v1.mkdir()
    for f in standin["ckpt"].iterdir():
        if f.name != "graph.pbtxt":
            (v1 / f.name).symlink_to(f)
    (v1 / "graph.pbtxt").write_text(conv_graph(stride_in_1x1=True))
    _refused(capsys, v1, standin["root"] / "out_v1", "resnet50/btlnck_block_1_0/bottleneck_1/conv2d/kernel",
             "ResNet50 v1 checkpoint")


def test_what_is_not_a_checkpoint_is_refused(standin: dict, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _refused(capsys, tmp_path / "nothing", out, "nothing", "no such")
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(capsys, empty, out, "empty", "no `checkpoint` state file")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "checkpoint").write_text(f'model_checkpoint_path: "{PREFIX}"\n')
    (garbage / f"{PREFIX}.index").write_bytes(b"not an index" * 100)
    (garbage / f"{PREFIX}.data-00000-of-00001").write_bytes(b"\0" * 100)
    _refused(capsys, garbage, out, f"{PREFIX}", "not a TensorFlow checkpoint")
    # A file that is no checkpoint prefix at all, e.g. one of the images.
    _refused(capsys, standin["images"][0], out, standin["images"][0].name)


def test_an_existing_model_directory_is_not_overwritten(standin: dict, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert main(["import-ngc", str(standin["ckpt"]), str(standin["model_dir"])]) == EXIT_FAILED
    assert "not an empty directory" in capsys.readouterr().err
    assert (standin["model_dir"] / "config.json").is_file()


@pytest.mark.parametrize(("case", "step"), [("vector", np.array([1, 2], np.int64)), ("string", np.array(b"112590")),
                                            ("float", np.float32(3.5)), ("negative", np.int64(-1))])
def test_a_global_step_that_is_not_a_step_is_refused(standin: dict, capsys: pytest.CaptureFixture, case: str,
                                                     step: np.ndarray) -> None:
    ckpt = write_checkpoint(standin["root"] / f"step_{case}", dict(standin["saved"], global_step=step))
    _refused(capsys, ckpt, standin["root"] / f"out_step_{case}", "global_step", str(ckpt / PREFIX))


def _copy_checkpoint(standin: dict, folder: Path) -> Path:
    import shutil

    shutil.copytree(standin["ckpt"], folder)
    return folder


def test_a_truncated_data_file_is_refused_naming_it_and_the_variable(standin: dict,
                                                                     capsys: pytest.CaptureFixture) -> None:
    ckpt = _copy_checkpoint(standin, standin["root"] / "truncated")
    data = ckpt / f"{PREFIX}.data-00000-of-00001"
    with data.open("r+b") as f:
        f.truncate(data.stat().st_size // 2)
    _refused(capsys, ckpt, standin["root"] / "out_truncated", str(data), "resnet50/")


def test_the_state_file_names_a_checkpoint_beside_it_never_one_elsewhere(standin: dict, capsys: pytest.CaptureFixture,
                                                                        tmp_path: Path) -> None:
    # A directory holding only a state file that names another directory's checkpoint by its absolute path
    # imported that one: the files beside the state file are the checkpoint, or there is none.
    only_state = tmp_path / "only_state"
    only_state.mkdir()
    (only_state / "checkpoint").write_text(f'model_checkpoint_path: "{standin["ckpt"] / PREFIX}"\n')
    _refused(capsys, only_state, tmp_path / "out", f"{only_state / PREFIX}.index", "missing")


@pytest.mark.parametrize(("case", "graph"), [
    ("empty", ""),
    ("stem only", 'node { name: "resnet50/conv2d/conv2d/Conv2D" op: "Conv2D" }\n'),
    # The first stage's blocks are unstrided in v1 and v1.5 alike: they tell nothing.
    ("first stage only", "".join(line + "\n" for line in conv_graph(stride_in_1x1=True).splitlines()
                                 if "btlnck_block_0_0" in line)),
])
def test_a_graph_without_the_strided_bottleneck_convolutions_is_not_reported_as_checked(
    standin: dict, case: str, graph: str
) -> None:
    from pipeline.train.ngc_import import check_strides

    ckpt = _copy_checkpoint(standin, standin["root"] / f"graph_{case.replace(' ', '_')}")
    (ckpt / "graph.pbtxt").write_text(graph)
    said = check_strides(str(ckpt / PREFIX))
    assert said != "graph.pbtxt" and "not checked" in said and "graph.pbtxt" in said, said
    assert check_strides(str(standin["ckpt"] / PREFIX)) == "graph.pbtxt"  # NVIDIA's strides: checked


def test_the_help_gives_the_exit_code_a_refusal_has(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["import-ngc", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"Exit {EXIT_FAILED}," in text and "Exit 2" not in text, text


def test_the_imported_directory_has_the_mode_a_trained_one_gets(standin: dict, tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o027)
    try:
        trained = tmp_path / "trained"
        trained.mkdir()  # as pipeline.train.loop.train makes its model directory
        assert main(["import-ngc", str(standin["ckpt"]), str(tmp_path / "imported")]) == EXIT_OK
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "imported").stat().st_mode)
    assert mode == stat.S_IMODE(trained.stat().st_mode) == 0o750, oct(mode)
