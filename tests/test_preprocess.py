"""NVIDIA's evaluation preprocessing (`pipeline.data.preprocess.eval_crop`) gives the very pixels of
resizing the whole image (TensorFlow 1's bilinear kernel, NVIDIA's) and slicing the centre crop, at a
cost that does not grow with the image's shape: beyond 4:1 it computes the crop alone. Resized whole,
a 1 x N image is 256 x 256N floats at 224 px: 4.7 GB for N = 6000, 48 GiB for N = 65500 (a 270-byte PNG),
in `rn50 predict`, in the SavedModel's `serving_default` and in evaluation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import BIN, REPO, venv_env

tf = pytest.importorskip("tensorflow")

from pipeline.data import preprocess  # noqa: E402
from pipeline.data.preprocess import eval_crop, resize_side  # noqa: E402

# A fresh process predicting a 375 x 500 photo at 224 px peaks at about 0.85 GiB (TensorFlow, ResNet50's
# weights, one forward pass), these two thin images at about 1 GiB; resized whole, 1 x 6000 adds 4.7 GB.
PEAK_RSS_BOUND = 1536 << 20
# The child's data limit, so that a regression fails the test by running out of it instead of
# taking gigabytes from the machine (the whole resize of 1 x 6000 alone is 4.7 GB).
DATA_LIMIT = 4 << 30
THIN = ((1, 6000), (1, 65500))  # (height, width)


def _whole_resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """NVIDIA's evaluation as written: resize the whole image (legacy kernel), then slice the crop."""
    h, w = image.shape[0], image.shape[1]
    scale = np.float32(resize_side(image_size)) / np.float32(min(h, w))
    nh, nw = int(np.float32(h) * scale), int(np.float32(w) * scale)
    resized = tf.compat.v1.image.resize(image, [nh, nw], method=tf.compat.v1.image.ResizeMethod.BILINEAR,
                                        align_corners=False)
    top, left = (nh - image_size) // 2, (nw - image_size) // 2
    return tf.cast(resized, tf.float32)[top : top + image_size, left : left + image_size]


def _sizes() -> list[tuple[int, int]]:
    rng = np.random.default_rng(23)
    sizes = [(int(rng.integers(1, 800)), int(rng.integers(1, 800))) for _ in range(150)]
    # Exact multiples and halves of 256 (integer source points), equal sides, the kernel's clamped
    # last row and column (sides under 16), and thin ones the whole resize can still afford.
    return [*sizes, (256, 256), (512, 512), (512, 1024), (128, 300), (255, 257), (1, 1), (2, 3), (8, 8), (15, 40),
            (16, 17), (37, 37), (36, 40), (500, 375), (1, 300), (700, 2), (3, 1000)]


@pytest.mark.parametrize("image_size", [224, 32])
@pytest.mark.parametrize("path", ["as_used", "sampled_always"])
def test_the_crop_is_the_whole_resize_sliced_bit_for_bit(image_size: int, path: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    if path == "sampled_always":  # the crop-only path on every size, not only beyond 4:1
        monkeypatch.setattr(preprocess, "WHOLE_RESIZE_AREA", 0)
    rng = np.random.default_rng(image_size)
    # As tf.data and the SavedModel run it: a graph over images of unknown shape.
    graph = tf.function(lambda image: eval_crop(image, image_size),
                        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    for h, w in _sizes():
        image = tf.constant(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        expected = _whole_resize(image, image_size).numpy()
        for got in (eval_crop(image, image_size), graph(image)):
            assert got.dtype == tf.float32 and got.shape == (image_size, image_size, 3), (h, w)
            np.testing.assert_array_equal(got.numpy(), expected, err_msg=f"{h} x {w}")


def _thin_png(folder: Path, height: int, width: int) -> str:
    path = folder / f"thin-{height}x{width}.png"
    pixels = np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.write_bytes(tf.io.encode_png(pixels).numpy())
    return str(path)


@pytest.fixture(scope="module")
def model_224(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An untrained 224-px model directory with its SavedModel, and the thin PNGs."""
    from support import untrained_checkpoint

    from pipeline.recipe import get_profile
    from pipeline.train.export import export_serving

    root = tmp_path_factory.mktemp("thin")
    model_dir = root / "model"
    untrained_checkpoint(model_dir, get_profile("smoke").replace(image_size=224), step=1)
    export_serving(model_dir)
    return {"root": root, "model_dir": model_dir, "images": [_thin_png(root, h, w) for h, w in THIN]}


# A small launcher between the test and the measured process. A child forked from pytest starts with
# pytest's own resident pages in its peak RSS (fork copies the page tables, and exec records the old
# peak), which late in the suite is gigabytes; forked from this small process it starts near zero.
MEASURE = """
import os, resource, sys
limit, report, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
pid = os.fork()
if pid == 0:
    os.execv(args[0], args)
_, status, usage = os.wait4(pid, 0)
open(report, "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _run_measured(args: list[str], folder: Path) -> tuple[int, str, str, int]:
    """args in a fresh process with DATA_LIMIT: (exit code, stdout, stderr, its own peak RSS in bytes)."""
    out, err, report = folder / "stdout", folder / "stderr", folder / "maxrss"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        code = subprocess.run([sys.executable, "-c", MEASURE, str(DATA_LIMIT), str(report), *args],
                              stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=REPO,
                              env=venv_env(), check=False).returncode
    return code, out.read_text(), err.read_text(), int(report.read_text()) * 1024  # kB on Linux


def test_rn50_predict_answers_thin_images_in_bounded_memory(model_224: dict, tmp_path: Path) -> None:
    code, out, err, peak = _run_measured(
        [str(BIN / "rn50"), "predict", "--model-dir", str(model_224["model_dir"]), "--json", *model_224["images"]],
        tmp_path)
    assert code == 0, err[-2000:]
    answers = json.loads(out)
    assert [a["image"] for a in answers] == model_224["images"]
    assert all(len(a["top"]) == 5 for a in answers)
    assert peak < PEAK_RSS_BOUND, f"peak RSS {peak / 2**20:.0f} MiB"


SERVE = """
import json, sys
import tensorflow as tf

signature = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
answer = signature(image_bytes=tf.constant([open(p, "rb").read() for p in sys.argv[2:]]))
print(json.dumps({k: v.numpy().tolist() for k, v in answer.items()}))
"""


def test_serving_default_answers_thin_images_in_bounded_memory(model_224: dict, tmp_path: Path) -> None:
    saved = str(model_224["model_dir"] / "saved_model")
    code, out, err, peak = _run_measured([sys.executable, "-c", SERVE, saved, *model_224["images"]], tmp_path)
    assert code == 0, err[-2000:]
    answer = json.loads(out)
    assert np.array(answer["top5_classes"]).shape == (len(THIN), 5)
    np.testing.assert_allclose(np.sum(answer["probabilities"], axis=1), 1.0, atol=1e-4)
    assert peak < PEAK_RSS_BOUND, f"peak RSS {peak / 2**20:.0f} MiB"
