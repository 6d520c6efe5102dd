"""The `rn50` CLI: help, the sample commands, and one-line errors with non-zero exits."""

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

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


def _subcommands(parser):
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def _option(parser, flag):
    [action] = [a for a in parser._actions if flag in a.option_strings]
    return action


def test_every_subcommand_has_help_that_describes_it(capsys):
    from pipeline.cli import build_parser

    commands = _subcommands(build_parser())
    assert {"train", "mpijob", "evaluate", "gate", "publish", "list", "pull", "gc", "settings"} <= set(commands)
    for name, parser in commands.items():
        with pytest.raises(SystemExit) as done:
            parser.parse_args(["--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: rn50 {name}") and parser.description and len(out.splitlines()) > 5, name


def test_defaults_and_choices_come_from_the_library_and_the_settings(monkeypatch, tmp_path):
    from pipeline import cli, gate
    from pipeline import recipe as config

    for name, value in (("RN50_BUCKET", "other-bucket"), ("RN50_PREFIX", "staging"),
                        ("RN50_WORKSPACE_ROOT", str(tmp_path / "ws")), ("RN50_DVC_REPO", str(tmp_path / "reg"))):
        monkeypatch.setenv(name, value)
    # A profile added to the library is a choice of every command that takes one, with no other change.
    monkeypatch.setitem(config.PROFILES, "tiny", config.PROFILES["smoke"].replace(profile="tiny"))
    parser = cli.build_parser()
    publish = parser.parse_args(["publish", "--model-dir", "m"])
    assert (publish.bucket, publish.prefix, publish.model) == ("other-bucket", "staging", cli.MODEL)
    assert publish.dvc_repo == tmp_path / "reg"
    for command in (["list"], ["pull", "dest"]):
        args = parser.parse_args(command)
        assert (args.bucket, args.prefix) == ("other-bucket", "staging"), command
    assert parser.parse_args(["gc", "--older-than", "1"]).workspace_root == tmp_path / "ws"
    assert parser.parse_args(["train", "--run-id", "r"]).workspace_root == tmp_path / "ws"
    assert parser.parse_args(["train", "--profile", "tiny"]).profile == "tiny"
    commands = _subcommands(parser)
    for name in ("train", "mpijob", "gate"):
        assert _option(commands[name], "--profile").choices == tuple(config.PROFILES), name
    assert _option(commands["gate"], "--tolerance").default == gate.DEFAULT_TOLERANCE
    assert parser.parse_args(["gate", "--model-dir", "m"]).baseline is None  # no live baseline unless given
    assert parser.parse_args(["gate", "--model-dir", "m"]).bucket is None  # no registry unless asked


def test_rn50_settings_prints_every_setting_and_where_its_value_came_from(tmp_path):
    from pipeline import settings

    env = {"PATH": os.environ["PATH"], "RN50_BUCKET": "from-env", "RN50_NUM_GPUS": "4"}
    result = subprocess.run([str(BIN / "rn50"), "settings"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert list(rows) == [s.name for s in settings.SETTINGS]
    for setting in settings.SETTINGS:
        assert setting.help in rows[setting.name]
    assert rows["RN50_BUCKET"].split()[1:3] == ["from-env", "env"]
    assert rows["RN50_NUM_GPUS"].split()[1:3] == ["4", "env"]
    assert rows["RN50_PREFIX"].split()[1:3] == ["models", "default"]


def test_rn50_settings_names_a_bad_value_in_one_line_and_exits_1():
    env = {"PATH": os.environ["PATH"], "RN50_NUM_GPUS": "0"}
    result = subprocess.run([str(BIN / "rn50"), "settings"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == "rn50 settings: error: RN50_NUM_GPUS='0': must be at least 1"
    assert result.stdout == ""


def test_the_task_adapters_have_no_command_line_of_their_own():
    # rn50 is the one command line: a stage run without Airflow goes through it, not `python -m tasks.X`.
    for path in sorted((Path(__file__).resolve().parent.parent / "tasks").glob("*.py")):
        text = path.read_text()
        assert "argparse" not in text and "__main__" not in text, f"{path.name} has a command line of its own"


def test_output_cut_short_by_its_reader_is_no_error():
    """`rn50 settings | head`: the reader may close the pipe before rn50 writes (here `true` exits at once,
    long before rn50 has started): no BrokenPipeError traceback, and exit 0."""
    command = f"set -o pipefail; {shlex.quote(str(BIN / 'rn50'))} settings | true"
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
