"""The `rn50` CLI: help, the sample commands, and one-line errors with non-zero exits."""

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def run(*args, cwd=None):
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_from_the_console_script_and_python_dash_m():
    for cmd in ([str(BIN / "rn50")], [sys.executable, "-m", "pipeline"]):
        result = run(*cmd, "--help")
        assert result.returncode == 0
        assert "make-sample" in result.stdout and "describe" in result.stdout
        sub = run(*cmd, "make-sample", "--help")
        assert sub.returncode == 0 and "OUT_DIR" in sub.stdout


def test_make_sample_then_describe(tmp_path, sample_dir):
    out = tmp_path / "imagenet"
    made = run(str(BIN / "rn50"), "make-sample", str(out))
    assert made.returncode == 0, made.stderr
    assert "train" in made.stdout and "validation" in made.stdout
    assert "n01440764" in made.stdout and "tench" in made.stdout
    described = run(sys.executable, "-m", "pipeline", "describe", str(out))
    assert described.returncode == 0, described.stderr
    assert described.stdout.splitlines() == made.stdout.splitlines()[1:-1]


def _one_line_error(result, *needles):
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("rn50")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_usage_errors_are_one_line_and_exit_2(tmp_path):
    assert run(str(BIN / "rn50")).returncode == 2

    _one_line_error(run(str(BIN / "rn50"), "describe", str(tmp_path / "nope")), "nope", "no such directory")

    (tmp_path / "empty").mkdir()
    _one_line_error(run(str(BIN / "rn50"), "describe", str(tmp_path / "empty")), "no shard files")

    a_file = tmp_path / "file"
    a_file.write_text("x")
    _one_line_error(run(str(BIN / "rn50"), "make-sample", str(a_file)), "not a directory")


def test_a_corrupt_shard_is_named(tmp_path, sample_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    data = (sample_dir / "validation-00000-of-00002").read_bytes()
    (bad / "validation-00000-of-00002").write_bytes(data[: len(data) // 2])
    _one_line_error(run(str(BIN / "rn50"), "describe", str(bad)), "validation-00000-of-00002")
