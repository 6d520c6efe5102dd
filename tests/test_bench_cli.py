"""The benchmarks' command lines: --help, and bad arguments refused in one line before any work starts
(bench/input.py makes no data, bench/warm_start.py trains nothing)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def bench(repo_root, script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"bench/{script}", *args], cwd=repo_root, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(("script", "words"), [
    ("input.py", ("floor", "train_dataset", "--images", "--rounds", "--batches", "--warmup", "--seeded")),
    ("warm_start.py", ("--init-from", "--finetune-lr-scale")),
])
def test_help_says_what_it_measures(repo_root, script, words):
    done = bench(repo_root, script, "--help")
    assert done.returncode == 0
    for word in words:
        assert word in done.stdout


@pytest.mark.parametrize(("script", "args", "message"), [
    ("input.py", ["--rounds", "0"], "--rounds must be at least 1"),
    ("input.py", ["--images", "-3"], "--images must be at least 1"),
    ("input.py", ["--batches", "x"], "argument --batches: invalid int value: 'x'"),
    ("warm_start.py", ["--eval-every", "0"], "argument --eval-every: '0' must be above 0"),
    ("warm_start.py", ["--recolour", "1,x"],
     "argument --recolour: '1,x': give record labels separated by commas, e.g. 1,501"),
    ("warm_start.py", ["--data-dir", "no/such/dir"],
     "--data-dir no/such/dir: no such directory (make sample writes data/imagenet)"),
])
def test_a_bad_argument_is_one_line_and_exit_2(repo_root, script, args, message):
    done = bench(repo_root, script, *args)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == f"{script}: error: {message}"
    assert "Traceback" not in done.stderr and done.stdout == ""  # nothing made, nothing trained
