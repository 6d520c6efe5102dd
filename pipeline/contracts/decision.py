"""decision.json, the gate's record of why a model was or was not published (`rn50 gate`, check_accuracy).

It is written on every call, whatever happens; publish copies it into the manifest's "gate" and "baseline".
`Decision` is its schema: the gate builds one (pipeline.gate.decide), and a test fixture builds its own the
same way, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal


@dataclass
class Decision:
    verdict: Literal["pass", "fail"]
    publish: bool
    reasons: list[str]
    profile: str | None
    top1_accuracy: float | None
    baseline: dict[str, Any] | None  # the floor: NGC's figure for the profile (or the smoke floor)
    champion: dict[str, Any] | None  # the `latest` that existed, recorded only: its own number decides nothing
    thresholds: dict[str, float | None]
    candidate: dict[str, Any] | None = None  # top-1, top-5 and record count of the model under the gate
    live_baseline: dict[str, Any] | None = None  # LiveBaseline's fields, or None with a "no live baseline" reason
    registry: str | None = None  # where the champion was looked for (s3://bucket/prefix/model/); None: nowhere
    force_publish: bool = False
    force_reason: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"
