"""The servable SavedModel in every version: exported once beside model.keras, published, fetched by
`rn50 pull`, and served by a fresh process that imports nothing of this project, with the same answers
as `rn50 predict`; and publish's refusal of a missing, stale or linked saved_model/.

The model is an untrained smoke model (32 px) whose head is scaled so that every class has its own
probability (an untrained head's softmax is one-hot, with ties that would make top-5 orders arbitrary).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from model_support import predictable_smoke_model
from publish_support import BUCKET, SAVED_MODEL_FILES, add_saved_model, decision, make_run_outputs, publish
from support import BIN, rn50, sha256, venv_env

from pipeline.publish.publish import PublishError
from pipeline.stages.publish import StageDirs, collect_files
from pipeline.workspace import RunWorkspace

# Served in a fresh interpreter: TensorFlow and NumPy only, from a folder outside the checkout.
SERVE = """
import json, sys
import numpy as np
import tensorflow as tf

folder, images, preprocessed = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
loaded = tf.saved_model.load(folder)
by_bytes = loaded.signatures["serving_default"]
by_images = loaded.signatures["serving_images"]
def plain(outputs):
    return {k: v.numpy().tolist() for k, v in outputs.items()}
answer = {"bytes": plain(by_bytes(image_bytes=tf.constant([open(p, "rb").read() for p in images]))),
          "images": plain(by_images(images=tf.constant(np.load(preprocessed))))}
try:
    by_bytes(image_bytes=tf.constant([open(images[0], "rb").read(), b"GIF89a not a photo"]))
    answer["not_an_image"] = "no error"
except tf.errors.InvalidArgumentError as exc:
    answer["not_an_image"] = exc.message
answer["project_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("pipeline", "tasks"))
print(json.dumps(answer))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("tensorflow")
    from pipeline.train.export import export_serving

    root = tmp_path_factory.mktemp("saved_model")
    made = predictable_smoke_model(root, seed=5)
    model_dir, images = made["model_dir"], made["images"]
    np.save(root / "preprocessed.npy", made["batch"].numpy())  # the project's one preprocessing
    # Links planted where the exports go are replaced, never written through.
    decoy = root / "decoy"
    (decoy / "saved_model").mkdir(parents=True)
    (decoy / "labels.txt").write_text("not the labels\n")
    (model_dir / "saved_model").symlink_to(decoy / "saved_model")
    (model_dir / "labels.txt").symlink_to(decoy / "labels.txt")
    exports = export_serving(model_dir)
    return {"root": root, "model_dir": model_dir, "images": images, "exports": exports, "decoy": decoy}


def test_the_export_replaces_planted_links_and_is_kept_while_current(exported: dict) -> None:
    from pipeline.train.export import export_serving

    model_dir, decoy = exported["model_dir"], exported["decoy"]
    assert list((decoy / "saved_model").iterdir()) == [] and (decoy / "labels.txt").read_text() == "not the labels\n"
    saved, labels = model_dir / "saved_model", model_dir / "labels.txt"
    assert not saved.is_symlink() and (saved / "saved_model.pb").is_file() and not labels.is_symlink()
    lines = labels.read_text().splitlines()
    assert len(lines) == 1000 and lines[0] == "0\tn01440764\ttench, Tinca tinca"
    assert lines[999].startswith("999\tn15075141\t")
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]  # no scratch left
    before = {p: (sha256(p), p.stat().st_mtime_ns) for p in [*saved.rglob("*.pb"), labels, model_dir / "model.keras"]}
    assert export_serving(model_dir) == exported["exports"]
    assert {p: (sha256(p), p.stat().st_mtime_ns) for p in before} == before  # a retried publish sees the same bytes


def test_a_pulled_version_serves_raw_bytes_like_rn50_predict(exported: dict, registry, s3_env, tmp_path,
                                                             capsys: pytest.CaptureFixture) -> None:
    from pipeline.cli import EXIT_OK, main

    _, client = registry
    model_dir = exported["model_dir"]
    (model_dir / "eval.json").write_text(json.dumps({"top1_accuracy": 95.0, "top5_accuracy": 99.0,
                                                     "eval_count": 500, "eval_throughput": 1.0}))
    (model_dir / "decision.json").write_text(json.dumps(decision()))
    result = publish(model_dir, client, require_export=True)
    files = result.manifest["files"]
    assert {"labels.txt", "saved_model/saved_model.pb", "saved_model/variables/variables.index"} <= set(files)
    pulled = tmp_path / "pulled"
    got = rn50("pull", str(pulled), "--bucket", BUCKET, env={**venv_env(), **s3_env})
    assert got.returncode == 0, got.stderr
    served = pulled / "saved_model"
    assert (pulled / "labels.txt").read_bytes() == (model_dir / "labels.txt").read_bytes()

    # A consumer's process: no project on the path, not run from the checkout; saved_model_cli beside it.
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    images = exported["images"]
    consumer = subprocess.Popen([sys.executable, "-c", SERVE, str(served), *images,
                                 str(exported["root"] / "preprocessed.npy")],
                                cwd=tmp_path, env=clean, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cli = subprocess.run([str(BIN / "saved_model_cli"), "show", "--dir", str(served), "--all"], cwd=tmp_path,
                         env=clean, capture_output=True, text=True, timeout=300)
    capsys.readouterr()
    assert main(["predict", "--model-dir", str(pulled), "--json", *images]) == EXIT_OK
    predicted = json.loads(capsys.readouterr().out)
    out, err = consumer.communicate(timeout=300)
    assert consumer.returncode == 0, err[-3000:]
    answer = json.loads(out)

    assert answer["project_modules"] == []
    for outputs in (answer["bytes"], answer["images"]):
        assert set(outputs) == {"probabilities", "classes", "top5_classes", "top5_probabilities"}
        for i, item in enumerate(predicted):
            top = item["top"]
            assert outputs["top5_classes"][i] == [g["index"] for g in top]
            assert outputs["classes"][i] == top[0]["index"]
            np.testing.assert_allclose(outputs["top5_probabilities"][i], [g["probability"] for g in top], atol=1e-5)
            probabilities = np.array(outputs["probabilities"][i])
            assert probabilities.shape == (1000,) and abs(probabilities.sum() - 1) < 1e-4
            np.testing.assert_allclose(probabilities[outputs["top5_classes"][i]], outputs["top5_probabilities"][i])
    assert "neither a JPEG nor a PNG" in answer["not_an_image"]

    assert cli.returncode == 0, cli.stderr[-3000:]
    for line in ("signature_def['serving_default']", "inputs['image_bytes']", "dtype: DT_STRING",
                 "signature_def['serving_images']", "inputs['images']", "shape: (-1, 32, 32, 3)",
                 "outputs['probabilities']", "outputs['classes']", "outputs['top5_classes']",
                 "outputs['top5_probabilities']"):
        assert line in cli.stdout, (line, cli.stdout)


def _dirs(ws: RunWorkspace) -> StageDirs:
    return StageDirs.of(ws.model, ws.eval, ws.gate, ws.export)


def test_publish_refuses_a_missing_stale_or_linked_saved_model(tmp_path: Path) -> None:
    ws = make_run_outputs(RunWorkspace(tmp_path / "workspaces", "manual__sm").create(), saved_model=False)
    with pytest.raises(PublishError, match=r"export/saved_model: missing \(no saved_model\.pb\); the evaluate task"):
        collect_files(_dirs(ws), require_export=True)
    assert not {"saved_model/saved_model.pb", "labels.txt"} & set(collect_files(_dirs(ws)))  # the CLI may do without
    add_saved_model(ws.export)
    (ws.export / "labels.txt").unlink()
    with pytest.raises(PublishError, match=r"export/labels\.txt: missing beside saved_model/; the evaluate task"):
        collect_files(_dirs(ws))

    ws = make_run_outputs(RunWorkspace(tmp_path / "workspaces", "manual__sm2").create())
    files = collect_files(_dirs(ws), require_export=True)
    served = (*SAVED_MODEL_FILES, "labels.txt")
    assert {name: files[name] for name in served} == {name: ws.export / name for name in served}
    # Older than the newest checkpoint (training resumed after evaluate exported): not the version's model.
    index = ws.model / "checkpoints/ckpt-2.index"
    pb = ws.export / "saved_model/saved_model.pb"
    os.utime(pb, ns=(pb.stat().st_atime_ns, index.stat().st_mtime_ns - 10**9))
    with pytest.raises(PublishError, match=r"export/saved_model: older than checkpoint ckpt-2; the evaluate task"):
        collect_files(_dirs(ws), require_export=True)
    os.utime(pb, ns=(pb.stat().st_atime_ns, index.stat().st_mtime_ns))

    # A link anywhere in it is refused, whatever it points to.
    variables = ws.export / "saved_model/variables"
    os.rename(variables, tmp_path / "variables")
    variables.symlink_to(tmp_path / "variables")
    with pytest.raises(PublishError, match=r"saved_model/variables: a symlink, not a regular file"):
        collect_files(_dirs(ws), require_export=True)
    variables.unlink()
    os.rename(tmp_path / "variables", variables)
    (ws.export / "saved_model/assets").mkdir()
    (ws.export / "saved_model/assets/vocab.txt").symlink_to("/etc/passwd")
    with pytest.raises(PublishError, match=r"assets/vocab\.txt: a symlink, not a regular file"):
        collect_files(_dirs(ws), require_export=True)
