"""Run workspaces: one folder per run id and no other, removals that stay inside it, and `rn50 gc`."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import rn50

from pipeline import settings
from pipeline.workspace import RunWorkspace, default_root, safe_name

DAY = 86400.0


def _decode(name: str) -> str:
    """The inverse of safe_name for names without the long-name digest: proof that no two run ids share one."""
    return re.sub(rb"~([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), name.encode()).decode(
        "utf-8", "surrogatepass")


@pytest.mark.parametrize("run_id", [".", "..", "./", "../x", ".dvc-cache", "dvc-cache", "..."])
def test_every_run_id_gets_a_folder_of_its_own_under_the_root(tmp_path, run_id):
    ws = RunWorkspace(tmp_path, run_id)
    assert ws.path.parent == tmp_path.resolve()  # never the root itself, its parent, or a sibling of the root
    assert not ws.path.name.startswith(".")  # the root's own entries (the DVC cache) are dot-named
    assert ws.path.name not in {".", ".."} and "/" not in ws.path.name


def test_workspace_names_are_injective():
    # The old scheme sanitised 'a:b' to 'a_b' plus 8 hex of its hash: a run literally named that took its folder.
    colliding = "a_b-" + hashlib.sha256(b"a:b").hexdigest()[:8]
    run_ids = ["a:b", "a_b", colliding, "a~3Ab", "a~3Ab".lower(), "a%3Ab", ".", "~2E", "..", "~2E.", "dvc-cache",
               ".dvc-cache", "manual__2026-11-28T10:00:00+00:00", "manual__2026-11-28T10_00_00_00_00"]
    names = [safe_name(r) for r in run_ids]
    assert len(set(names)) == len(run_ids), dict(zip(run_ids, names, strict=True))
    assert safe_name("manual__2026-11-28T10:00:00+00:00") == "manual__2026-11-28T10~3A00~3A00~2B00~3A00"
    assert safe_name("scheduled__2026-12-01") == "scheduled__2026-12-01"  # a plain run id stays readable


@given(st.text(min_size=1, max_size=16))  # at most 192 escaped characters: no long-name digest
def test_a_workspace_name_is_filesystem_safe_and_gives_back_its_run_id(run_id):
    name = safe_name(run_id)
    assert re.fullmatch(r"[A-Za-z0-9_~-][A-Za-z0-9_.~-]*", name), name
    assert _decode(name) == run_id


def test_a_very_long_run_id_gets_a_name_a_filesystem_accepts(tmp_path):
    a, b = ":" * 250, ":" * 249 + "+"
    assert len(safe_name(a).encode()) <= 255 and safe_name(a) != safe_name(b)
    assert RunWorkspace(tmp_path, a).create().path.is_dir()


def test_a_run_removes_only_inside_its_own_folder(tmp_path):
    mine = RunWorkspace(tmp_path, "manual__a").create()
    other = RunWorkspace(tmp_path, "manual__b").create()
    (other.model).mkdir()
    (other.model / "ckpt").write_text("theirs")
    (mine.path / "link").symlink_to(other.path)
    for outside in (mine.path, tmp_path, other.model, mine.path / ".." / "manual__b" / "model", mine.path / "link"
                    / "model"):
        with pytest.raises(ValueError, match="outside"):
            mine.remove(outside)
    mine.remove(mine.path / "link")  # the link goes, not what it points to
    assert not (mine.path / "link").exists() and (other.model / "ckpt").read_text() == "theirs"
    (mine.checkout / "data").mkdir(parents=True)
    mine.remove(mine.checkout)
    assert not mine.checkout.exists() and mine.path.is_dir()


# ---- rn50 gc ----------------------------------------------------------------------------------


def _age(path: Path, days: float) -> None:
    """Every file and folder under path last changed `days` ago."""
    when = time.time() - days * DAY
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(Path(folder) / name, (when, when), follow_symlinks=False)
    os.utime(path, (when, when))


def _workspace(root: Path, run_id: str, days: float) -> RunWorkspace:
    ws = RunWorkspace(root, run_id).create()
    (ws.checkout / "data" / "imagenet").mkdir(parents=True)
    (ws.checkout / "data" / "imagenet" / "train-00000-of-00001").write_bytes(b"x" * 1000)
    ws.model.mkdir()
    (ws.model / "eval.json").write_text("{}")
    _age(ws.path, days)
    return ws


def _gc(*args: str) -> subprocess.CompletedProcess:
    return rn50("gc", *args)


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "workspaces"
    root.mkdir()
    return root


def test_gc_removes_idle_workspaces_and_nothing_else(root, tmp_path):
    old = _workspace(root, "manual__2026-01-01T00:00:00+00:00", days=40)
    recent = _workspace(root, "manual__recent", days=3)
    training = _workspace(root, "manual__long-training", days=40)
    (training.model / "metrics.jsonl").write_text('{"step": 1}\n')  # still writing: in progress
    cache = root / ".dvc-cache" / "files" / "md5"
    cache.mkdir(parents=True)
    (cache / "ab").write_text("cached")
    (root / "notes").mkdir()  # not a run workspace: gc leaves what it did not make
    (root / "notes" / "todo").write_text("keep")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "manual__link").symlink_to(outside)
    for entry in (root / ".dvc-cache", root / "notes", outside):
        _age(entry, 400)

    dry = _gc("--older-than", "30", "--workspace-root", str(root), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert old.path.is_dir()
    assert "would remove" in dry.stdout and old.run_id in dry.stdout

    result = _gc("--older-than", "30", "--workspace-root", str(root))
    assert result.returncode == 0, result.stderr
    assert not old.path.exists()
    assert recent.path.is_dir() and training.path.is_dir()
    assert (cache / "ab").read_text() == "cached"
    assert (root / "notes" / "todo").read_text() == "keep" and outside.is_dir()
    assert sorted(p.name for p in root.iterdir()) == sorted([".dvc-cache", "notes", "manual__link",
                                                             recent.path.name, training.path.name])
    assert f"removed {old.path}" in result.stdout and old.run_id in result.stdout


def test_gc_errors_are_one_line(root, tmp_path):
    help_ = _gc("--help")
    assert help_.returncode == 0 and "--older-than" in help_.stdout and "--dry-run" in help_.stdout
    for args, needle in ((["--older-than", "0", "--workspace-root", str(root)], "older-than"),
                         (["--older-than", "soon", "--workspace-root", str(root)], "older-than"),
                         (["--workspace-root", str(root)], "older-than"),
                         (["--older-than", "30", "--workspace-root", str(tmp_path / "nope")], "nope")):
        result = _gc(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = [ln for ln in result.stderr.splitlines() if ln.startswith("rn50")]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr, result.stderr



def test_the_run_marker_replaces_a_planted_link_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    ws = RunWorkspace(tmp_path / "root", "r1").create()
    marker = ws.path / "run.json"
    marker.unlink()
    marker.symlink_to(victim)
    ws.create()  # every task creates its workspace again
    assert victim.read_text() == "keep me\n"
    assert not marker.is_symlink() and '"run_id": "r1"' in marker.read_text()


def test_the_default_root_is_the_setting(monkeypatch, tmp_path):
    monkeypatch.delenv("RN50_WORKSPACE_ROOT", raising=False)
    assert default_root() == settings.PROJECT_ROOT / "runs" / "workspaces"
    monkeypatch.setenv("RN50_WORKSPACE_ROOT", str(tmp_path / "ws"))
    assert default_root() == tmp_path / "ws"


# ---- the root's own entries: no run id names one ----


def _root_entries(root: Path, monkeypatch) -> list[Path]:
    """Where the pipeline keeps its own things in the workspace root, as the code that uses them finds them."""
    from pipeline.contracts.names import NGC_CACHE
    from tasks.notify import FailureNotifier

    monkeypatch.setenv("RN50_WORKSPACE_ROOT", str(root))
    return [RunWorkspace(root, "any").cache, root.resolve() / NGC_CACHE, FailureNotifier().failures_file().resolve()]


@pytest.mark.parametrize("run_id", ["ngc-cache", "failures.jsonl", ".ngc-cache", ".failures.jsonl", "dvc-cache",
                                    ".dvc-cache"])
def test_no_run_id_names_an_entry_of_the_root_that_is_not_a_workspace(tmp_path, monkeypatch, run_id):
    # Airflow accepts `ngc-cache` and `failures.jsonl` as run ids: such a run had the NGC cache as its
    # workspace (and gc removed it), or made the failure log a folder.
    entries = _root_entries(tmp_path, monkeypatch)
    assert RunWorkspace(tmp_path, run_id).path not in entries
    assert all(e.parent == tmp_path.resolve() and e.name.startswith(".") for e in entries)  # none a workspace name


def test_gc_never_removes_the_root_entries_whatever_the_runs_are_named(root, monkeypatch):
    cache, ngc_cache, failures = _root_entries(root, monkeypatch)
    (ngc_cache / "0123456789abcdef").mkdir(parents=True)
    (ngc_cache / "0123456789abcdef" / "config.json").write_text("{}")
    failures.write_text('{"summary": "an earlier failure"}\n')
    cache.mkdir()
    runs = [_workspace(root, run_id, days=40) for run_id in ("ngc-cache", "failures.jsonl", ".ngc-cache")]
    for entry in (cache, ngc_cache, failures):
        _age(entry, 400)
    result = _gc("--older-than", "30", "--workspace-root", str(root))
    assert result.returncode == 0, result.stderr
    assert not any(ws.path.exists() for ws in runs)
    assert (ngc_cache / "0123456789abcdef" / "config.json").read_text() == "{}"
    assert failures.read_text() == '{"summary": "an earlier failure"}\n' and cache.is_dir()
