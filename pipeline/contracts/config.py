"""config.json, what a model folder says of how it was made: the recipe (pipeline.recipe.TrainConfig's
fields), and the records below beside it. Written by `rn50 train` and `rn50 import-ngc`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# {"code_version", "image"}: the code that trained (pipeline.provenance.trainer_record); the manifest's
# code_version and check_changes read it.
TRAINER = "trainer"
# {"source", "sha256", ...}: the NGC checkpoint `rn50 import-ngc` converted (a model that was never trained here).
IMPORTED_FROM = "imported_from"


def trained_by(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """config.json's trainer record, or None when it has none (trained before `rn50 train` recorded it, or a
    model `rn50 import-ngc` wrote)."""
    record = (config or {}).get(TRAINER)
    return record if isinstance(record, dict) else None


def imported_from(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """config.json's record of the NGC checkpoint it was imported from, or None."""
    record = (config or {}).get(IMPORTED_FROM)
    return record if isinstance(record, dict) else None
