"""Warm start (`rn50 train --init-from`): from a model directory, NVIDIA's checkpoint (a path or s3://), the
registry's champion (published to moto_server); a resumed run keeps its own checkpoint; a model that does
not fit is refused in one line naming the variable.

The sources are 32-px smoke models (ResNet50's convolutions do not depend on the image size, so NVIDIA's
224-px checkpoint fits them too), built once; the training runs are one or two steps on the sample.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from model_support import GLOBAL_STEP, KERNEL, nvidia_shapes, save_model_dir, smoke_config, write_checkpoint
from publish_support import BUCKET, make_model_dir, publish

from pipeline.cli import EXIT_USAGE, main
from pipeline.stages.init_source import InitFrom
from pipeline.train.warm_start import WarmStartError, load_weights

tf = pytest.importorskip("tensorflow")

CONFIG = "config.json"


def _weights(folder: Path) -> dict[str, np.ndarray]:
    """Our variable path -> value in folder's latest checkpoint (read directly, not through the code under test)."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(folder / "checkpoints")))
    return {key[len("model/"):-len("/.ATTRIBUTES/VARIABLE_VALUE")].replace(".S", "/"): reader.get_tensor(key)
            for key in reader.get_variable_to_shape_map() if key.startswith("model/")}


def _near(weights: dict[str, np.ndarray], source: dict[str, np.ndarray]) -> bool:
    """Within a tenth of the weights' own scale, in the first and the last layer."""
    return all(np.abs(weights[k] - source[k]).mean() < 0.1 * np.abs(source[k]).mean()
               for k in ("conv1/kernel", "fc/kernel"))


@pytest.fixture(scope="module")
def model():
    from pipeline.train.model import build_model

    return build_model(smoke_config(), dtype="float32")


@pytest.fixture(scope="module")
def sources(model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two model directories with different random weights, both saved at step 500."""
    root = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(16)
    found = {}
    for name in ("a", "b"):
        for variable in model.variables:
            variable.assign(rng.normal(0, 0.05, variable.shape).astype(np.float32))
        found[name] = save_model_dir(model, root / name, step=500, config=smoke_config())
    return found


def test_train_from_a_model_directory_starts_fresh_from_its_weights_and_records_it(
        sources: dict[str, Path], sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pipeline.train.loop import train

    tf.keras.optimizers.SGD()  # as after other runs in this process: the checkpoint's keys must not depend on it
    run = tmp_path / "run"
    result = train(smoke_config(steps=2), sample_dir, run, init_from=InitFrom(str(sources["a"])))
    assert (result.status, result.step) == ("finished", 2)  # the source's step 500 is not carried over
    reader = tf.train.load_checkpoint(str(run / "checkpoints" / "ckpt-1"))
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 1
    assert reader.get_tensor("optimizer/sgd.Siteration/.ATTRIBUTES/VARIABLE_VALUE") == 1  # a fresh optimizer
    source, trained = _weights(sources["a"]), _weights(run)
    # Two warmup steps move the weights a little; a scratch init would be as far off as another random draw.
    assert _near(trained, source)
    assert json.loads((run / CONFIG).read_text())["init"] == {
        "kind": "path", "path": str(sources["a"].resolve()), "checkpoint": "ckpt-500"}

    # A retried run resumes its own checkpoint: told to start from b now, it neither reads b nor forgets a.
    for path in (run / "checkpoints").glob("ckpt-2.*"):  # as if killed before its second checkpoint
        path.unlink()
    (run / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n'
                                                    'all_model_checkpoint_paths: "ckpt-1"\n')
    capsys.readouterr()
    # A retry is a new process; in this one Keras would name the second optimizer sgd_1, not the saved sgd.
    tf.keras.backend.clear_session()
    again = train(smoke_config(steps=2), sample_dir, run, init_from=InitFrom(str(sources["b"])))
    assert (again.status, again.step) == ("finished", 2)
    resumed = _weights(run)
    assert _near(resumed, source) and not _near(resumed, _weights(sources["b"]))
    assert json.loads((run / CONFIG).read_text())["init"]["path"] == str(sources["a"].resolve())
    said = capsys.readouterr()
    assert "resumed from" in said.out + said.err and "weights from" not in said.out + said.err


def test_a_model_that_does_not_fit_is_refused_naming_the_variable(
        model, sources: dict[str, Path], sample_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    from pipeline.train.model import build_model

    ten = build_model(smoke_config(num_classes=10), dtype="float32")
    source = save_model_dir(ten, tmp_path / "ten", step=3, config=smoke_config(num_classes=10))
    with pytest.raises(WarmStartError, match=r"^fc/kernel: shape \[2048, 10\] in .*ckpt-3, this run's model has "
                                             r"\[2048, 1000\]"):
        load_weights(model, source)
    run = tmp_path / "run"
    code = main(["train", "--profile", "smoke", "--steps", "1", "--batch-size", "8", "--data-dir", str(sample_dir),
                 "--model-dir", str(run), "--init-from", str(source)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE
    assert err[-1].startswith("rn50 train: error: fc/kernel: shape [2048, 10]"), err
    assert not (run / "checkpoints").exists()  # nothing trained from a half-loaded model
    assert main(["train", "--profile", "smoke", "--data-dir", str(sample_dir), "--model-dir", str(tmp_path / "x"),
                 "--init-from", str(tmp_path / "nowhere")]) == EXIT_USAGE
    assert "nowhere: not a model directory" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ngc_standin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    values = {name: rng.normal(0, 0.05, shape).astype(np.float32) for name, shape in nvidia_shapes().items()}
    folder = write_checkpoint(tmp_path_factory.mktemp("ngc") / "ckpt", dict(values, global_step=np.int64(GLOBAL_STEP)))
    return folder, values


@pytest.fixture(scope="module")
def other_ngc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """NVIDIA's checkpoint as a later download might be: the same files, other weights."""
    rng = np.random.default_rng(6)
    values = {name: rng.normal(0, 0.05, shape).astype(np.float32) for name, shape in nvidia_shapes().items()}
    folder = write_checkpoint(tmp_path_factory.mktemp("ngc2") / "ckpt", dict(values, global_step=np.int64(GLOBAL_STEP)))
    return folder, values


def test_from_ngc_a_local_checkpoint_is_imported_once_and_verified(
        model, ngc_standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, values = ngc_standin
    init = InitFrom("ngc", workspace_root=tmp_path / "workspaces")
    monkeypatch.delenv("RN50_NGC_CHECKPOINT", raising=False)
    with pytest.raises(WarmStartError, match="RN50_NGC_CHECKPOINT is not set"):
        init.model_dir().__enter__()
    monkeypatch.setenv("RN50_NGC_CHECKPOINT", str(folder))
    with init.model_dir() as (source, record):
        load_weights(model, source)
    assert record["kind"] == "ngc" and record["source"] == str(folder)
    assert sorted(record["sha256"]) == ["nvidia_rn50_tf_amp.data-00000-of-00001", "nvidia_rn50_tf_amp.index"]
    weights = {v.path: v.numpy() for v in model.variables}
    np.testing.assert_array_equal(weights["conv1/kernel"], values["resnet50/conv2d/conv2d/kernel"])
    np.testing.assert_array_equal(weights["fc/kernel"], values[KERNEL][:, :1000])
    imported = source / CONFIG
    mtime = imported.stat().st_mtime_ns
    with init.model_dir() as (again, _):
        assert again == source and imported.stat().st_mtime_ns == mtime  # the cache, not a second import
    data = folder / "nvidia_rn50_tf_amp.data-00000-of-00001"
    saved = data.read_bytes()
    try:
        data.write_bytes(saved[:-4] + b"\0\0\0\0")  # changed in place: another checkpoint, and a broken one
        with pytest.raises(WarmStartError, match=r"nvidia_rn50_tf_amp\.data-00000-of-00001, truncated or corrupted"):
            init.model_dir().__enter__()
    finally:
        data.write_bytes(saved)


def test_from_ngc_a_local_checkpoint_replaced_in_place_is_imported_again(
        model, ngc_standin, other_ngc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = shutil.copytree(ngc_standin[0], tmp_path / "ckpt")
    monkeypatch.setenv("RN50_NGC_CHECKPOINT", str(folder))
    init = InitFrom("ngc", workspace_root=tmp_path / "workspaces")
    with init.model_dir() as (first, record):
        pass
    for path in other_ngc[0].iterdir():
        shutil.copy(path, folder / path.name)  # NVIDIA's next checkpoint, at the same path
    with init.model_dir() as (source, again):
        load_weights(model, source)
    assert source != first and again["identity"] != record["identity"] and again["sha256"] != record["sha256"]
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(),
                                  other_ngc[1]["resnet50/conv2d/conv2d/kernel"])


def test_two_tasks_importing_the_ngc_checkpoint_at_once_share_one_import(
        ngc_standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    folder, _ = ngc_standin
    monkeypatch.setenv("RN50_NGC_CHECKPOINT", str(folder))
    init = InitFrom("ngc", workspace_root=tmp_path / "workspaces")

    def use() -> tuple[Path, float]:
        with init.model_dir() as (source, _):
            return source, (source / CONFIG).stat().st_mtime_ns

    with ThreadPoolExecutor(2) as pool:  # each opens the lock file itself, as two processes would
        results = [future.result() for future in [pool.submit(use), pool.submit(use)]]
    assert results[0] == results[1]  # the same import, made once


def test_from_ngc_an_s3_uri_is_downloaded_into_the_cache(
        model, ngc_standin, registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw, _ = registry
    folder, values = ngc_standin
    for path in folder.iterdir():
        raw.upload_file(str(path), BUCKET, f"ngc/resnet50_tf_amp/{path.name}")
    monkeypatch.setenv("RN50_NGC_CHECKPOINT", f"s3://{BUCKET}/ngc/resnet50_tf_amp")
    root = tmp_path / "workspaces"
    with InitFrom("ngc", workspace_root=root).model_dir() as (source, record):
        load_weights(model, source)
    assert source.is_relative_to(root / ".ngc-cache")
    assert record["sha256"]["nvidia_rn50_tf_amp.index"] == json.loads((source / CONFIG).read_text())[
        "imported_from"]["sha256"]["nvidia_rn50_tf_amp.index"]
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), values["resnet50/conv2d/conv2d/kernel"])
    mtime = (source / CONFIG).stat().st_mtime_ns
    with InitFrom("ngc", workspace_root=root).model_dir() as (cached, again):
        assert cached == source and (source / CONFIG).stat().st_mtime_ns == mtime  # downloaded once: the cache
    assert again == record and sorted(record["identity"]["objects"]) == sorted(p.name for p in folder.iterdir())


def test_from_ngc_an_s3_checkpoint_replaced_in_place_is_imported_again_or_refused(
        model, ngc_standin, other_ngc, registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw, _ = registry
    prefix = "ngc/resnet50_tf_amp"
    for path in ngc_standin[0].iterdir():
        raw.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")
    monkeypatch.setenv("RN50_NGC_CHECKPOINT", f"s3://{BUCKET}/{prefix}")
    init = InitFrom("ngc", workspace_root=tmp_path / "workspaces")
    with init.model_dir() as (first, record):
        pass
    for path in other_ngc[0].iterdir():  # NVIDIA's next checkpoint, at the same URI
        raw.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")
    with init.model_dir() as (source, again):
        load_weights(model, source)
    assert source != first and again["sha256"] != record["sha256"]
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(),
                                  other_ngc[1]["resnet50/conv2d/conv2d/kernel"])
    # The .index replaced by the first checkpoint's again, the .data deleted: never the old import.
    raw.upload_file(str(ngc_standin[0] / "nvidia_rn50_tf_amp.index"), BUCKET, f"{prefix}/nvidia_rn50_tf_amp.index")
    raw.delete_object(Bucket=BUCKET, Key=f"{prefix}/nvidia_rn50_tf_amp.data-00000-of-00001")
    with pytest.raises(WarmStartError, match=r"^RN50_NGC_CHECKPOINT: .*nvidia_rn50_tf_amp") as refused:
        init.model_dir().__enter__()
    assert "\n" not in str(refused.value)


def test_from_the_champion_the_latest_published_version(
        model, sources: dict[str, Path], registry, tmp_path: Path) -> None:
    _, client = registry
    init = InitFrom("champion", bucket=BUCKET)
    with pytest.raises(WarmStartError, match=r"^--init-from champion: .*nothing published yet"):
        init.model_dir().__enter__()
    for number, name in ((1, "b"), (2, "a")):  # a is the latest
        version = make_model_dir(tmp_path / f"v{number}", keras=False)
        shutil.rmtree(version / "checkpoints")
        shutil.copytree(sources[name] / "checkpoints", version / "checkpoints")
        publish(version, client)
    with init.model_dir() as (source, record):
        load_weights(model, source)
        assert os.path.isdir(source)
    assert record == {"kind": "champion", "uri": f"s3://{BUCKET}/models/resnet50/v0002/", "version": "v0002"}
    assert not source.exists()  # pulled for the run only
    np.testing.assert_array_equal(model.get_layer("fc").kernel.numpy(), _weights(sources["a"])["fc/kernel"])


def test_init_from_reaches_every_rank_and_the_train_tasks_command(tmp_path: Path) -> None:
    from pipeline.cli import _worker_argv, build_parser
    from pipeline.stages.train import train_command

    args = build_parser().parse_args(["train", "--np", "2", "--data-dir", "d", "--model-dir", "m",
                                      "--init-from", "champion"])
    argv = _worker_argv(args)
    assert argv[argv.index("--init-from") + 1] == "champion"
    assert "--init-from" not in _worker_argv(build_parser().parse_args(["train", "--np", "2"]))  # scratch
    cmd = train_command(data_dir="d", model_dir=tmp_path, profile="finetune", init_from="ngc")
    assert cmd[cmd.index("--init-from") + 1] == "ngc"
