"""pipeline/settings.py is the one place `RN50_*` settings are read, and the README's table says what it holds."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from pipeline import settings

REPO = Path(__file__).resolve().parent.parent


def readme_settings() -> dict[str, str]:
    """name -> its default cell, from the table under the README's "Settings" heading."""
    text = (REPO / "README.md").read_text()
    section = re.search(r"^#+ Settings\n(.*?)(?=^#+ |\Z)", text, re.S | re.M)
    assert section, "README.md has no Settings section"
    rows = {}
    for line in section.group(1).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `RN50_"):
            assert len(cells) == 3, f"README settings row is not | `NAME` | default | meaning |: {line}"
            rows[cells[0].strip("`")] = cells[1]
    return rows


def test_the_readme_table_lists_every_setting_with_its_default():
    rows = readme_settings()
    assert sorted(rows) == sorted(s.name for s in settings.SETTINGS)
    for setting in settings.SETTINGS:
        # The cell may add a note after the default: "`ngc-90e` (`smoke` in `make airflow`)".
        assert rows[setting.name].replace("`", "").startswith(setting.default_text), (setting.name, rows[setting.name])


def _environ(node: ast.expr) -> bool:
    """`os.environ`, `environ`, `self.environ`, `os`: what a read of the environment goes through."""
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return "environ" in name or name == "os"


def _rn50(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("RN50_")


def env_reads(source: str) -> list[int]:
    """Line numbers where source reads an RN50_ variable from the environment by its literal name."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args and _rn50(node.args[0]):
            func = node.func
            if (isinstance(func, ast.Attribute) and func.attr in ("get", "getenv", "pop", "setdefault")
                    and _environ(func.value)) or (isinstance(func, ast.Name) and func.id == "getenv"):
                lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and _rn50(node.slice) and _environ(node.value):
            if isinstance(node.ctx, ast.Load):
                lines.append(node.lineno)
        elif isinstance(node, ast.Compare) and _rn50(node.left) and any(_environ(c) for c in node.comparators):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_check_finds_every_form_of_read():
    source = '''
import os
from os import environ, getenv
a = os.environ.get("RN50_A")
b = os.environ["RN50_B"]
c = os.getenv("RN50_C", "x")
d = getenv("RN50_D")
e = environ.get("RN50_E")
f = "RN50_F" in os.environ
g = self.environ.get("RN50_G", "")
env = {**os.environ, "RN50_H": "1"}   # passing it on to a child: not a read
os.environ["RN50_I"] = "1"             # setting it for a child: not a read
h = os.environ.get("HOME")
'''
    assert env_reads(source) == [4, 5, 6, 7, 8, 9, 10]


def test_only_the_settings_module_reads_rn50_variables():
    offenders = []
    for folder in ("pipeline", "tasks", "dags"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == REPO / "pipeline" / "settings.py":
                continue
            offenders += [f"{path.relative_to(REPO)}:{n}" for n in env_reads(path.read_text())]
    assert offenders == [], "read RN50_* through pipeline.settings instead"


@pytest.mark.parametrize(("name", "value"), [
    ("RN50_NUM_GPUS", "0"), ("RN50_NUM_GPUS", "two"), ("RN50_RETENTION_DAYS", "abc"),
    ("RN50_RETENTION_DAYS", "-1"), ("RN50_TRAIN_TIMEOUT_HOURS", "nan"), ("RN50_K8S_POLL_S", "soon"),
])
def test_a_bad_value_is_an_error_naming_the_variable(name, value):
    setting = next(s for s in settings.SETTINGS if s.name == name)
    with pytest.raises(settings.SettingError) as error:
        setting.get({name: value})
    message = str(error.value)
    assert message.startswith(f"{name}={value!r}: ") and "\n" not in message
    with pytest.raises(settings.SettingError, match=name):
        settings.resolved({name: value})


def test_unset_or_empty_means_the_default_and_a_value_is_parsed():
    assert settings.NUM_GPUS.get({}) == settings.NUM_GPUS.get({"RN50_NUM_GPUS": "  "}) == 1
    assert settings.NUM_GPUS.get({"RN50_NUM_GPUS": "8"}) == 8
    assert settings.ALLOWED_HOSTS.get({"RN50_ALLOWED_HOSTS": " gpu1, ,gpu2 "}) == ("gpu1", "gpu2")
    assert settings.WORKSPACE_ROOT.get({"RN50_WORKSPACE_ROOT": "/x"}) == Path("/x")


@pytest.mark.parametrize(("given", "seen"), [(None, "1"), ("0", "0")])
def test_tensorflow_gets_onednn_cpu_kernels_unless_told_otherwise(given, seen):
    """TensorFlow enables oneDNN by itself only on AVX-512 VNNI/BF16/AMX CPUs; elsewhere training ran 4x slower.
    What TensorFlow reads at import is the environment of the process that imports it through the package."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if given is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = given
    probe = "import os, pipeline.recipe; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == seen
