"""Plain helpers the tests share, imported by name (fixtures are in conftest.py).

The registry's test material (model directories, S3 helpers, a flaky proxy) is in publish_support.py
and the loopback sshd in sshd_support.py; what is here serves tests of every kind: ports, commands
run to completion, HTTP with JSON, file digests, an untrained checkpoint, compose's interpolation.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_ports(n: int, address: str = "127.0.0.1") -> list[int]:
    """n distinct ports on address that nothing listens on (all held while picking, so no two are the
    same). Another process may take one before the caller binds it: callers that can, retry."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind((address, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port(address: str = "127.0.0.1") -> int:
    """A port on address that nothing listens on: for a server to start on, or a client to fail against."""
    return free_ports(1, address)[0]


def run(cwd: Path | None, env: dict[str, str] | None, *args: str, timeout: float = 300) -> str:
    """args, run to completion without stdin; its stdout, stripped. Fails the test, with the command's
    output, if it exits non-zero."""
    result = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout.strip()


def venv_env() -> dict[str, str]:
    """This process's environment with the venv's bin/ first on PATH (dvc, horovodrun, airflow, rn50)."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def rn50(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The rn50 command as a user runs it, from the checkout, without stdin; env is its whole environment
    (venv_env() when None). Its exit status and output are the caller's to check."""
    return subprocess.run([str(BIN / "rn50"), *args], capture_output=True, text=True, cwd=REPO, timeout=timeout,
                          env=venv_env() if env is None else env, stdin=subprocess.DEVNULL)


def http_json(url: str, data: dict | None = None, token: str | None = None, method: str | None = None) -> Any:
    """A JSON request (POST when data is given) with an optional bearer token; the JSON answer."""
    request = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                     headers={"Content-Type": "application/json"}, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def airflow_login(home: Path) -> tuple[str, int]:
    """The admin password `make airflow` generated in its Airflow home, and that file's permission bits."""
    path = home / "passwords.json"
    return json.loads(path.read_text())["admin"], path.stat().st_mode & 0o777


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(directory: Path) -> dict[str, str]:
    """Every file below directory: its path relative to it -> sha256."""
    return {p.relative_to(directory).as_posix(): sha256(p) for p in sorted(directory.rglob("*")) if p.is_file()}


def untrained_checkpoint(model_dir: Path, config: Any, *, step: int = 0) -> Any:
    """What training leaves in model_dir, without the training: config.json and a checkpoint of a freshly
    built model and its optimizer at `step`. Returns the model (TensorFlow is imported here)."""
    from pipeline.model import build_resnet50
    from pipeline.train.checkpoint import TrainState
    from pipeline.train.optim import make_optimizer, make_schedule

    model_dir.mkdir(parents=True, exist_ok=True)
    config.save(model_dir)
    model = build_resnet50(config.num_classes, image_size=config.image_size)
    optimizer = make_optimizer(config, make_schedule(config, world_size=1, total_steps=10, steps_per_epoch=10))
    optimizer.build(model.trainable_variables)
    state = TrainState(model, optimizer, model_dir)
    state.step = step
    state.save()
    return model


_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_]\w*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_]\w*))")


def compose_interpolate(doc: Any, env: dict[str, str], missing: set[str]) -> Any:
    """Compose's interpolation of every value (no nesting: compose.yaml has none); unset ${X:?} go to `missing`."""
    if isinstance(doc, dict):
        return {k: compose_interpolate(v, env, missing) for k, v in doc.items()}
    if isinstance(doc, list):
        return [compose_interpolate(v, env, missing) for v in doc]
    if not isinstance(doc, str):
        return doc

    def one(m: re.Match) -> str:
        if m.group(1):
            return "$"
        name, op, arg = m.group(2) or m.group(5), m.group(3) or "", m.group(4)
        value = env.get(name)
        unset = not value if op.startswith(":") else value is None
        if unset and op.endswith("-"):
            return arg
        if unset and op.endswith("?"):
            missing.add(name)
        return value or ""

    return _VARIABLE.sub(one, doc)
