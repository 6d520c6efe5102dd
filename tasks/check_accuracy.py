"""check_accuracy: the gate against the NGC floor and the live baseline evaluate_baseline measured on the
same data; a failure is final.

Reads eval/eval.json, baseline/ (eval.json and baseline.json) and model/config.json, writes gate/decision.json
(whatever the verdict). The registry's `latest` is read only to be recorded in the decision."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pipeline.contracts.names import DECISION_FILE
from pipeline.contracts.registry import MODEL
from pipeline.gate import DEFAULT_TOLERANCE, GateFailed, run_gate
from pipeline.settings import PREFIX
from pipeline.stages.baseline import read_champion
from pipeline.workspace import RunWorkspace
from tasks.common import final_failures


def run(ws: RunWorkspace, *, profile: str, tolerance: float = DEFAULT_TOLERANCE, force_publish: bool = False,
        force_reason: str | None = None, client: Any = None, bucket: str | None = None, prefix: str = PREFIX.default,
        model: str = MODEL) -> dict[str, Any]:
    champion = registry = None
    if client is not None and bucket:
        champion, registry = read_champion(client, bucket, prefix, model)
    with final_failures(GateFailed):  # a failed gate fails for good: a retry judges the same figures
        try:
            decision = run_gate(ws.model, eval_dir=ws.eval, gate_dir=ws.gate, profile=profile, champion=champion,
                                baseline_dir=ws.baseline, tolerance=tolerance, force_publish=force_publish,
                                force_reason=force_reason, registry=registry)
        except GateFailed as exc:
            for reason in exc.decision.reasons:
                print(reason)
            raise
    for reason in decision.reasons:
        print(reason)
    return {"verdict": decision.verdict, "publish": decision.publish, "top1_accuracy": decision.top1_accuracy,
            "decision": str(ws.gate / DECISION_FILE), "champion": asdict(decision)["champion"],
            "live_baseline": decision.live_baseline, "registry": decision.registry}
