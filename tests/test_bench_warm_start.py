"""bench/warm_start.py's command line: --help, and bad arguments refused in one line before anything trains."""

from __future__ import annotations

import subprocess
import sys

import pytest


def bench(repo_root, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench/warm_start.py", *args], cwd=repo_root, capture_output=True,
                          text=True, timeout=120)


def test_help_says_what_it_measures(repo_root):
    done = bench(repo_root, "--help")
    assert done.returncode == 0
    assert "--init-from" in done.stdout and "--finetune-lr-scale" in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--eval-every", "0"], "argument --eval-every: '0' must be above 0"),
    (["--recolour", "1,x"], "argument --recolour: '1,x': give record labels separated by commas"),
    (["--data-dir", "no/such/dir"], "--data-dir no/such/dir: no such directory"),
])
def test_a_bad_argument_is_one_line_and_exit_2(repo_root, args, message):
    done = bench(repo_root, *args)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith(f"warm_start.py: error: {message}")
    assert "Traceback" not in done.stderr
