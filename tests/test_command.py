"""Every subprocess a task runs: a failure names the command, its exit code and its own last error lines,
redacted, in one line; a chatty command cannot fill memory; the trainer's output still streams to the log."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline.command import MAX_LINE, TAIL_LINES, CommandError, run

SECRET = "fake-secret-Qm81xR4tYv"  # a known fake credential


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_failure_names_the_command_its_exit_code_and_its_last_stderr_lines_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    code = ("import os, sys\nfor i in range(100): print(f'line {i}', file=sys.stderr)\n"
            "print('ERROR: denied for ' + os.environ['AWS_SECRET_ACCESS_KEY'], file=sys.stderr)\nsys.exit(3)")
    with pytest.raises(CommandError) as failed:
        run(_python(code), cwd=tmp_path)
    message = str(failed.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{Path(sys.executable).name} -c import os, sys\\nfor i in range(100)")
    assert f" in {tmp_path}: exit 3: " in message
    assert message.endswith("line 98 | line 99 | ERROR: denied for [redacted]")
    assert failed.value.tail == [f"line {i}" for i in range(81, 100)] + ["ERROR: denied for [redacted]"]
    assert SECRET not in message and "line 80 " not in message


def test_stdout_is_returned_and_a_missing_program_is_a_one_line_error(tmp_path):
    assert run(_python("print('out'); import sys; print('noise', file=sys.stderr)")) == "out\n"
    with pytest.raises(CommandError, match=r"^no-such-program-rn50 --x: exit 127: FileNotFoundError: No such file"):
        run(["no-such-program-rn50", "--x"])


def test_only_the_tail_is_kept_of_a_command_that_writes_without_end(tmp_path):
    # 50 MB on stderr: a million lines, then one line of 20 MB with no newline at all
    code = ("import sys\nw = sys.stderr.write\nfor i in range(1_000_000): w(f'progress {i:040d}\\n')\n"
            "w('x' * 20_000_000)\nsys.exit(1)")
    with pytest.raises(CommandError) as failed:
        run(_python(code))
    tail = failed.value.tail
    assert len(tail) == TAIL_LINES and tail[-1] == "x" * MAX_LINE  # the endless line, cut
    assert tail[-2] == f"progress {999_999:040d}"


def test_the_trainer_child_streams_its_stderr_and_fails_with_its_last_lines(capfd, monkeypatch):
    import pipeline.stages.train

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEKEY000000000")
    code = ("import sys\nprint('epoch 1', flush=True)\n"
            "for i in range(30): print(f'rank 0: step {i}', file=sys.stderr)\n"
            "print('OOM with AKIAFAKEKEY000000000', file=sys.stderr)\nsys.exit(137)")
    with pytest.raises(CommandError) as failed:
        pipeline.stages.train.run_child(_python(code))
    assert failed.value.returncode == 137
    assert failed.value.tail[-2:] == ["rank 0: step 29", "OOM with [redacted]"]
    streamed = capfd.readouterr()
    assert "epoch 1" in streamed.out  # stdout and stderr reach the task log as before, all of them
    assert "rank 0: step 0\n" in streamed.err and "rank 0: step 29\n" in streamed.err
