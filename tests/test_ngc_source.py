"""NVIDIA's checkpoint from `RN50_NGC_CHECKPOINT=s3://...`, against moto_server: every key that becomes a
local file is a plain relative name (the registry's rule), "folder" objects are skipped, every object is
streamed to a new file that no planted symlink redirects, and what arrived is checked against the listing
(size, ETag) before it is imported.

The checkpoint is model_support's stand-in for NVIDIA's (their variables, random values), as
tests/test_warm_start.py uploads it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from model_support import GLOBAL_STEP, nvidia_shapes, write_checkpoint
from publish_support import BUCKET

from pipeline.contracts.names import NGC_CACHE
from pipeline.stages import ngc_source
from pipeline.stages.init_source import InitFrom
from pipeline.train.warm_start import WarmStartError

pytest.importorskip("tensorflow")

UPLOAD = "ngc/resnet50_tf_amp"
URI = f"s3://{BUCKET}/{UPLOAD}"
INDEX = "nvidia_rn50_tf_amp.index"


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(23)
    values = {name: rng.normal(0, 0.05, shape).astype(np.float32) for name, shape in nvidia_shapes().items()}
    return write_checkpoint(tmp_path_factory.mktemp("ngc") / "ckpt", dict(values, global_step=np.int64(GLOBAL_STEP)))


@pytest.fixture
def uploaded(standin: Path, registry, monkeypatch: pytest.MonkeyPatch):
    """The raw client, with the stand-in under s3://BUCKET/UPLOAD/ and RN50_NGC_CHECKPOINT naming it."""
    raw, _ = registry
    for path in standin.iterdir():
        raw.upload_file(str(path), BUCKET, f"{UPLOAD}/{path.name}")
    monkeypatch.setenv("RN50_NGC_CHECKPOINT", URI)
    return raw


def _everything(root: Path) -> set[Path]:
    return {Path(d) / n for d, dirs, files in os.walk(root) for n in dirs + files}


@pytest.mark.parametrize("name", ["../../../../escaped", "{outside}/escaped"])
def test_a_key_that_is_not_a_plain_relative_name_is_refused_and_nothing_lands_outside_the_cache(
        uploaded, tmp_path: Path, name: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    key = f"{UPLOAD}/{name.format(outside=outside)}"  # "{outside}" is absolute: ckpt//tmp/.../escaped
    uploaded.put_object(Bucket=BUCKET, Key=key, Body=b"planted")
    root = tmp_path / "workspaces"
    before = _everything(tmp_path)
    with pytest.raises(WarmStartError) as refused:
        InitFrom("ngc", workspace_root=root).model_dir().__enter__()
    message = str(refused.value)
    assert "\n" not in message and "RN50_NGC_CHECKPOINT" in message and repr(key) in message, message
    assert "not a plain relative file name" in message, message
    new = _everything(tmp_path) - before
    assert not [p for p in new if p.name == "escaped"], new
    assert all(p.is_relative_to(root / NGC_CACHE) for p in new), new


def test_a_folder_object_is_skipped(uploaded, tmp_path: Path) -> None:
    uploaded.put_object(Bucket=BUCKET, Key=f"{UPLOAD}/", Body=b"")  # the S3 console's "Create folder"
    uploaded.put_object(Bucket=BUCKET, Key=f"{UPLOAD}/extra/", Body=b"")
    with InitFrom("ngc", workspace_root=tmp_path / "workspaces").model_dir() as (source, record):
        assert (source / "config.json").is_file()
    assert record["kind"] == "ngc" and sorted(record["sha256"]) == [
        "nvidia_rn50_tf_amp.data-00000-of-00001", INDEX]


def test_a_symlink_planted_in_the_cache_is_not_followed(uploaded, tmp_path: Path) -> None:
    root = tmp_path / "workspaces"
    with InitFrom("ngc", workspace_root=root).model_dir() as (source, _):
        cache = source.parent
    # An import cut short (no model/) and its download folder replaced by a link to another directory:
    # the next use downloads again, and must not write through the link.
    victim = tmp_path / "victim"
    victim.mkdir()
    for leftover in (source, cache / "checkpoint"):
        for path in sorted(leftover.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        leftover.rmdir()
    (cache / "checkpoint").symlink_to(victim)
    with InitFrom("ngc", workspace_root=root).model_dir() as (again, _):
        assert (again / "config.json").is_file()
    assert list(victim.iterdir()) == []


def test_a_symlink_at_a_download_target_is_refused_and_not_written_through(uploaded, tmp_path: Path) -> None:
    from pipeline.publish.store import Store, make_client

    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    link = tmp_path / "target"
    link.symlink_to(victim)
    with pytest.raises(FileExistsError):
        Store(make_client(), BUCKET).download(f"{UPLOAD}/{INDEX}", link, max_bytes=1 << 30)
    assert victim.read_bytes() == b"keep" and link.is_symlink()


@pytest.mark.parametrize("change", ["replaced", "size"])
def test_what_was_downloaded_is_checked_against_the_listing(uploaded, tmp_path: Path, change: str) -> None:
    objects = ngc_source.list_objects(URI)
    key = f"{UPLOAD}/{INDEX}"
    if change == "replaced":  # the same size, other bytes, after the listing: another ETag
        body = uploaded.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        uploaded.put_object(Bucket=BUCKET, Key=key, Body=bytes(b ^ 0xFF for b in body))
        reason = "replaced since it was listed"
    else:  # a listing that says more than the object holds (an object cut short since)
        objects[INDEX] = {**objects[INDEX], "size": objects[INDEX]["size"] + 1}
        reason = "listed as"
    with pytest.raises(ngc_source.NgcSourceError) as refused:
        ngc_source.download(URI, objects, tmp_path / "checkpoint")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"RN50_NGC_CHECKPOINT={URI}: key {key!r}: "), message
    assert reason in message, message
    assert list(tmp_path.iterdir()) == []  # nothing left: neither the folder nor its staging directory


def test_objects_are_streamed_not_read_whole(uploaded, tmp_path: Path) -> None:
    import tracemalloc

    size = 64 * 1024**2
    uploaded.put_object(Bucket=BUCKET, Key=f"{UPLOAD}/events.out.tfevents", Body=os.urandom(size))
    objects = ngc_source.list_objects(URI)
    tracemalloc.start()
    try:
        ngc_source.download(URI, objects, tmp_path / "checkpoint")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "checkpoint" / "events.out.tfevents").stat().st_size == size
    assert peak < 16 * 1024**2, peak  # chunks of 1 MiB, not the 64 MiB object (nor the 100 MB .data)


def test_a_checkpoint_larger_than_the_cap_is_refused_before_anything_is_downloaded(uploaded) -> None:
    with pytest.raises(ngc_source.NgcSourceError, match=r"^RN50_NGC_CHECKPOINT=s3://.*: \d+ bytes under it, more "
                       r"than the 1000 a checkpoint may have; refusing to download it$"):
        ngc_source.list_objects(URI, max_bytes=1000)
