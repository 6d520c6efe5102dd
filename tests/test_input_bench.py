"""bench/input.py's command line: --help, and bad arguments refused in one line before any data is made."""

from __future__ import annotations

import subprocess
import sys

import pytest


def bench(repo_root, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench/input.py", *args], cwd=repo_root, capture_output=True,
                          text=True, timeout=120)


def test_help_says_what_it_measures(repo_root):
    done = bench(repo_root, "--help")
    assert done.returncode == 0
    assert "floor" in done.stdout and "train_dataset" in done.stdout
    for option in ("--images", "--rounds", "--batches", "--warmup", "--seeded"):
        assert option in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--rounds", "0"], "--rounds must be at least 1"),
    (["--images", "-3"], "--images must be at least 1"),
    (["--batches", "x"], "argument --batches: invalid int value: 'x'"),
])
def test_a_bad_argument_is_one_line_and_exit_2(repo_root, args, message):
    done = bench(repo_root, *args)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == f"input.py: error: {message}"
    assert "Traceback" not in done.stderr and "dataset:" not in done.stdout
