"""baseline.json, which model a run's live baseline is: evaluate_baseline writes it beside that model's
eval.json (its last file: the gate reads a baseline only once it is whole), and the gate names the model by it.

{"kind": "ngc", "source", "sha256", "identity"}  NVIDIA's checkpoint, imported (identity: by content)
{"kind": "champion", "version", "uri"}           the registry's `latest`, pulled for the run
{"kind": "path", "path"}                         a model directory `rn50 gate --baseline` was given
{"kind": "none", "reason"}                       no baseline model, and why
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.contracts.config import imported_from
from pipeline.contracts.names import CONFIG_FILE, MANIFEST


def none_record(reason: str) -> dict[str, Any]:
    return {"kind": "none", "reason": reason}


def champion_record(manifest: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "champion", "version": manifest.get("version"), "uri": manifest.get("uri")}


def model_identity(folder: Path) -> dict[str, Any] | None:
    """Which model a directory holds: a published version (`rn50 pull`'s manifest.json), NVIDIA's imported
    checkpoint (config.json's imported_from), or None when it says neither."""
    folder = Path(folder)
    try:
        if (folder / MANIFEST).is_file():
            return champion_record(json.loads((folder / MANIFEST).read_text()))
        if (folder / CONFIG_FILE).is_file():
            imported = imported_from(json.loads((folder / CONFIG_FILE).read_text()))
            if imported is not None:
                return {"kind": "ngc", "source": imported.get("source"), "sha256": imported.get("sha256")}
    except (OSError, ValueError, AttributeError):
        return None
    return None
