"""`rn50 predict`: plain and JSON output, the model's own image size (a 32-px smoke model), a version
fetched by `rn50 pull`, and a one-line error naming a file that is not an image.

The model is an untrained smoke model (config.json and a checkpoint, as training leaves them): what is
tested is the command's plumbing, checked against the model restored by hand on NVIDIA's preprocessing
at 32 px; that an imported NGC model predicts as NVIDIA does is tests/test_ngc_import.py's.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from model_support import predictable_smoke_model
from publish_support import BUCKET, decision, publish

from pipeline.cli import EXIT_FAILED, EXIT_OK, main
from pipeline.data.labels import load_label_map
from pipeline.predict import PredictError

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("predict")
    made = predictable_smoke_model(root, seed=3)
    # What predict must compute: the restored model on each image preprocessed at the model's 32 px.
    expected = tf.nn.softmax(made["model"](made["batch"], training=False)).numpy()
    return {"root": root, "model_dir": made["model_dir"], "images": made["images"], "expected": expected}


def _predict(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["predict", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_is_exactly_the_documented_list(smoke: dict, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _predict(capsys, "--model-dir", str(smoke["model_dir"]), "--json", "--top-k", "3", *smoke["images"])
    assert code == EXIT_OK
    got = json.loads(out)
    labels = load_label_map()
    assert isinstance(got, list) and [item["image"] for item in got] == smoke["images"]
    for item, expected in zip(got, smoke["expected"], strict=True):
        assert set(item) == {"image", "top"}
        assert [set(g) for g in item["top"]] == [{"index", "synset", "name", "probability"}] * 3
        order = np.argsort(-expected)[:3]
        assert [g["index"] for g in item["top"]] == order.tolist()
        np.testing.assert_allclose([g["probability"] for g in item["top"]], expected[order], atol=1e-5)
        assert [g["synset"] for g in item["top"]] == [labels.synsets[i] for i in order]
        assert [g["name"] for g in item["top"]] == [labels.names[i] for i in order]


def test_plain_output_is_one_line_per_image(smoke: dict, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _predict(capsys, "--model-dir", str(smoke["model_dir"]), *smoke["images"])
    assert code == EXIT_OK
    lines = out.splitlines()
    assert len(lines) == len(smoke["images"])
    labels = load_label_map()
    for line, path, expected in zip(lines, smoke["images"], smoke["expected"], strict=True):
        assert line.startswith(f"{path}: ")
        guesses = line[len(path) + 2 :].split(" | ")
        assert len(guesses) == 5  # the default top-k
        for guess, index in zip(guesses, np.argsort(-expected)[:5], strict=True):
            match = re.fullmatch(r"(\d+) (n\d{8}) (.+) (\d\.\d{4})", guess)
            assert match, guess
            assert int(match[1]) == index and match[2] == labels.synsets[index] and match[3] == labels.names[index]
            assert abs(float(match[4]) - expected[index]) < 1e-4


def test_a_file_that_is_not_an_image_is_named(smoke: dict, capsys: pytest.CaptureFixture) -> None:
    text = smoke["root"] / "notes.jpg"
    text.write_text("not a picture\n")
    truncated = smoke["root"] / "cut.jpg"
    truncated.write_bytes(Path(smoke["images"][0]).read_bytes()[:200])
    for bad in (text, truncated, smoke["root"] / "absent.png"):
        code, out, err = _predict(capsys, "--model-dir", str(smoke["model_dir"]), smoke["images"][0], str(bad))
        assert code == EXIT_FAILED, err
        assert out == "" and len(err.strip().splitlines()) == 1 and str(bad) in err and "Traceback" not in err, err


def test_a_pulled_version_predicts_like_its_model_directory(smoke: dict, registry, capsys) -> None:
    from pipeline.publish.pull import pull_version

    _, client = registry
    published = smoke["root"] / "published"
    shutil.copytree(smoke["model_dir"], published)
    (published / "eval.json").write_text(json.dumps({"top1_accuracy": 95.0, "top5_accuracy": 99.0,
                                                     "eval_count": 500, "eval_throughput": 1.0}))
    (published / "decision.json").write_text(json.dumps(decision()))
    publish(published, client)
    pulled = smoke["root"] / "pulled"
    pull_version(client, BUCKET, pulled)
    runs = [_predict(capsys, "--model-dir", str(d), "--json", *smoke["images"]) for d in (smoke["model_dir"], pulled)]
    assert runs[0][0] == runs[1][0] == EXIT_OK
    assert json.loads(runs[0][1]) == json.loads(runs[1][1])


class _CountingModel:
    """The restored model, noting at each forward pass how many images had been decoded by then."""

    def __init__(self, model, decoded: list, passes: list) -> None:
        self._model, self._decoded, self._passes = model, decoded, passes

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def __call__(self, batch, **kwargs):
        self._passes.append((len(self._decoded), int(batch.shape[0])))
        return self._model(batch, **kwargs)


def test_images_are_decoded_a_batch_at_a_time(smoke: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Memory holds one batch of inputs (about 600 kB an image at 224 px), however many files are given;
    # a file that is not a JPEG or PNG is still named before the model is built.
    from pipeline import predict as predict_module
    from pipeline.train import model as model_module

    decoded: list[str] = []
    passes: list[tuple[int, int]] = []
    load_image, build_model = predict_module.load_image, model_module.build_model
    monkeypatch.setattr(predict_module, "load_image", lambda path, size: decoded.append(path) or load_image(path, size))
    monkeypatch.setattr(model_module, "build_model",
                        lambda *args, **kwargs: _CountingModel(build_model(*args, **kwargs), decoded, passes))
    batch = predict_module._BATCH
    images = [shutil.copy(smoke["images"][i % 3], tmp_path / f"{i}{Path(smoke['images'][i % 3]).suffix}")
              for i in range(2 * batch + 3)]
    predictions = predict_module.predict(smoke["model_dir"], [str(p) for p in images])
    assert passes == [(batch, batch), (2 * batch, batch), (2 * batch + 3, 3)]
    assert [p.top[0].index for p in predictions[:3]] == [int(np.argmax(row)) for row in smoke["expected"]]

    decoded.clear()
    passes.clear()
    (tmp_path / "notes.png").write_text("not a picture\n")
    with pytest.raises(PredictError, match=r"notes\.png: not an image"):
        predict_module.predict(smoke["model_dir"], [*map(str, images), str(tmp_path / "notes.png")])
    assert passes == [] and decoded == []
