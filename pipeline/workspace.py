"""One directory per DAG run: every stage reads and writes there, so runs never share state.

Two runs at once must not share a DVC checkout (DVC locks it) or a model directory (a second run
would resume the first's checkpoints). A retry of the same run must find its own earlier work, so
the directory name comes from the run id alone.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path("runs/workspaces")


def safe_name(run_id: str) -> str:
    """Airflow run ids hold ':' and '+'; keep them readable but filesystem-safe, and unambiguous."""
    if not run_id:
        raise ValueError("empty run id")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
    return name if name == run_id else f"{name}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class RunWorkspace:
    root: Path
    run_id: str

    @property
    def path(self) -> Path:
        return Path(self.root).resolve() / safe_name(self.run_id)

    @property
    def checkout(self) -> Path:  # the git+DVC checkout of data.dvc at the chosen revision
        return self.path / "repo"

    @property
    def validation(self) -> Path:
        return self.path / "validation"

    @property
    def model(self) -> Path:
        return self.path / "model"

    def create(self) -> RunWorkspace:
        self.path.mkdir(parents=True, exist_ok=True)
        return self
