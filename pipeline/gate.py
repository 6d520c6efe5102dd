"""The accuracy gate: a model is published only if it matches NVIDIA's figures and a live baseline.

The live baseline is a model measured in the same run, on the same validation data, by the same
evaluation as the candidate (the DAG's evaluate_baseline: NVIDIA's imported checkpoint or the champion,
pipeline.stages.baseline); a number recorded on another dataset version decides nothing. "The same data" is
what each eval.json records of the shards it scored (EVAL_DATA, pipeline.data.input.split_identity),
not a record count: another 50,000 images are not ImageNet's. NGC's published figures stay as the floor.

Every call writes `decision.json`, whatever happens, including when eval.json or the baseline is
missing: the record of *why* a model was or was not published is the point of a gate (TFX's
Evaluator famously writes nothing when its threshold config is absent). The decision is a pure
function (`decide`); reading and writing files is separate (`run_gate`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.contracts.baseline import model_identity
from pipeline.contracts.decision import Decision
from pipeline.contracts.evaluation import EVAL_DATA, data_digest, data_name, eval_summary
from pipeline.contracts.names import BASELINE_FILE, CONFIG_FILE, DECISION_FILE, EVAL_FILE, MANIFEST
from pipeline.files import NotRegularFile, read_regular, sha256_file, write_atomic

DEFAULT_TOLERANCE = 0.3  # percentage points below the floor, and below the live baseline, that still pass
# The loosest the tolerance may be. NGC's own figures for one recipe differ by 0.1 pp and reruns by a few
# tenths, so 2 pp is already generous; a looser gate is no gate, and must say so: it is a failed gate that
# publishes only with force_publish and a force_reason (the DAG's gate_tolerance Param takes its maximum here).
MAX_TOLERANCE = 2.0

NGC_SOURCE = (
    "NVIDIA DeepLearningExamples, TensorFlow/Classification/ConvNets/resnet50v1.5/README.md "
    "(20.06 container): top-1 after 90 / 250 epochs, 8 GPUs"
)


@dataclass(frozen=True)
class Floor:
    name: str
    top1_accuracy: float  # percent
    source: str
    sanity_check: bool = False  # True: our own floor, not an NGC figure


FLOORS: dict[str, Floor] = {
    b.name: b
    for b in (
        Floor("ngc-90e-amp-a100", 76.93, NGC_SOURCE + ", A100 AMP"),
        Floor("ngc-90e-amp-v100", 76.99, NGC_SOURCE + ", V100 AMP"),
        Floor("ngc-90e-tf32-a100", 77.01, NGC_SOURCE + ", A100 TF32"),
        Floor("ngc-90e-fp32-v100", 77.01, NGC_SOURCE + ", V100 FP32"),
        Floor("ngc-250e-amp", 78.35, NGC_SOURCE + ", AMP"),
        Floor("ngc-250e-fp32", 78.34, NGC_SOURCE + ", FP32"),
        Floor(
            "smoke", 60.0, "rn50-pipeline: the generated 10-class sample at 32 px (chance is 10 %)", sanity_check=True
        ),
    )
}

# NGC training throughput, AMP + XLA, batch 256 per GPU, img/s on one GPU (same README).
NGC_THROUGHPUT = {"a100": 2375.0, "v100": 1270.0}


def floor_for(profile: str, *, amp: bool = True) -> Floor:
    """The profile selects the floor: NGC's figure, or the smoke sanity floor. For AMP at 90 epochs it is the
    A100 figure (76.93), the lower of NGC's two AMP results, so a healthy run on either GPU generation passes."""
    if profile == "smoke":
        return FLOORS["smoke"]
    if profile in ("ngc-90e", "finetune"):  # a refresh of a 90-epoch model must still meet its figure
        return FLOORS["ngc-90e-amp-a100" if amp else "ngc-90e-tf32-a100"]
    if profile == "ngc-250e":
        return FLOORS["ngc-250e-amp" if amp else "ngc-250e-fp32"]
    raise ValueError(f"no baseline for profile {profile!r}; known: smoke, ngc-90e, ngc-250e, finetune")


@dataclass(frozen=True)
class LiveBaseline:
    """A baseline model measured on this run's validation data by the candidate's own evaluation."""

    model: dict[str, Any]  # which: {"kind": "champion", "version", "uri"}, {"kind": "ngc", "source", "sha256"}, ...
    top1_accuracy: float  # percent
    top5_accuracy: float
    eval_count: int  # validation records scored
    data: dict[str, Any] | None = None  # its eval.json's EVAL_DATA: which records those were

    @property
    def name(self) -> str:
        kind = self.model.get("kind")
        if kind == "champion":
            return f"champion {self.model.get('version')}"
        if kind == "ngc":
            return f"NGC checkpoint {self.model.get('source')}"
        return f"{kind} {self.model.get('path', '')}".strip()


class GateFailed(Exception):
    """The model did not pass; final, never worth a retry. Carries the decision."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        super().__init__("; ".join(r for r in decision.reasons if r.startswith("FAIL")) or "gate failed")


def decide(
    top1: float | None,
    floor: Floor | None,
    *,
    profile: str | None = None,
    champion: dict[str, Any] | None = None,
    live: LiveBaseline | None = None,
    no_live: str = "none was evaluated for this gate",
    top5: float | None = None,
    eval_count: int | None = None,
    data: dict[str, Any] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    force_publish: bool = False,
    force_reason: str | None = None,
    problems: list[str] | None = None,
    registry: str | None = None,
) -> Decision:
    """Pass iff top-1 >= floor - tolerance and >= live.top1 - tolerance (when there is one).

    `live` is the baseline model measured on the same data in the same run: its eval.json's data (`live.data`)
    must be the candidate's (`data`, both EVAL_DATA) and its record count the candidate's `eval_count`, or the
    gate fails naming both; an eval.json that names no data fails it too (nothing says it is the same data:
    the DAG evaluates both sides afresh in the run, so both name theirs). Without one the floor alone decides, and
    a reason says "no live baseline: " and `no_live`. `champion` ({"version", "top1_accuracy", "uri"} of
    the current `latest`) and `registry` (where it was looked for) are recorded only: a number measured
    on another dataset version is no threshold. `problems` are reasons the inputs could not be read; any
    of them fails the gate. A tolerance above MAX_TOLERANCE fails the gate too, so it can only publish
    when forced. A forced publish keeps the honest verdict and records who overrode it and why.
    """
    if force_publish and not (force_reason or "").strip():
        raise ValueError("force_publish needs a reason (force_reason): it is recorded in the manifest")
    reasons = [f"FAIL: {p}" for p in problems or []]
    if not 0 <= tolerance <= MAX_TOLERANCE:  # also NaN
        if tolerance < 0 or tolerance != tolerance:
            raise ValueError(f"tolerance {tolerance:g} pp: must be between 0 and {MAX_TOLERANCE:g} percentage points")
        if not force_publish:
            raise ValueError(f"tolerance {tolerance:g} pp is above the {MAX_TOLERANCE:g} pp bound; a looser gate is a "
                             "forced publish (force_publish with a force_reason)")
        reasons.append(f"FAIL: tolerance {tolerance:g} pp is above the {MAX_TOLERANCE:g} pp bound")
    thresholds: dict[str, float | None] = {"tolerance": tolerance, "baseline_min": None, "live_min": None}
    if floor is None and not problems:
        reasons.append("FAIL: no baseline for this profile")
    if top1 is not None and floor is not None:
        minimum = round(floor.top1_accuracy - tolerance, 4)
        thresholds["baseline_min"] = minimum
        ok = top1 >= minimum
        kind = "sanity floor" if floor.sanity_check else "NGC baseline"
        reasons.append(
            f"{'PASS' if ok else 'FAIL'}: top-1 {top1:.2f} % {'>=' if ok else '<'} {minimum:.2f} % "
            f"({kind} {floor.name} {floor.top1_accuracy:.2f} % - {tolerance:g} pp)"
        )
    not_same = _not_the_same_data(eval_count, data, live) if top1 is not None and live is not None else None
    if not_same:
        reasons.append(f"FAIL: {not_same}")
    elif top1 is not None and live is not None:
        minimum = round(live.top1_accuracy - tolerance, 4)
        thresholds["live_min"] = minimum
        ok = top1 >= minimum
        reasons.append(
            f"{'PASS' if ok else 'FAIL'}: top-1 {top1:.2f} % {'>=' if ok else '<'} {minimum:.2f} % (live baseline "
            f"{live.name}: {live.top1_accuracy:.2f} % on the same {live.eval_count} images - {tolerance:g} pp)"
        )
    elif top1 is not None and no_live:  # (empty: a baseline was given but unreadable, a problem above)
        note = ""
        if champion is not None:
            note = (f"; champion {champion.get('version')}'s recorded {float(champion['top1_accuracy']):.2f} % "
                    "was measured on other data and decides nothing")
        reasons.append(f"PASS: no live baseline: {no_live}{note}")
    verdict: Literal["pass", "fail"] = "fail" if any(r.startswith("FAIL") for r in reasons) else "pass"
    if force_publish and verdict == "fail":
        reasons.append(f"OVERRIDE: force_publish: {force_reason.strip()}")
    return Decision(
        verdict=verdict,
        publish=verdict == "pass" or force_publish,
        reasons=reasons,
        profile=profile,
        top1_accuracy=top1,
        baseline=asdict(floor) if floor else None,  # decision.json calls the floor "baseline"
        champion=champion,
        thresholds=thresholds,
        candidate=None if top1 is None else {"top1_accuracy": top1, "top5_accuracy": top5, "eval_count": eval_count,
                                             "data": data},
        live_baseline=asdict(live) if live else None,
        registry=registry,
        force_publish=force_publish,
        force_reason=force_reason.strip() if force_publish and force_reason else None,
    )


def _not_the_same_data(eval_count: int | None, data: dict[str, Any] | None, live: LiveBaseline) -> str | None:
    """Why the candidate and the live baseline cannot be compared, or None when both scored the same records."""
    ours, theirs = data_digest(data), data_digest(live.data)
    if ours and theirs and ours != theirs:
        return (f"the candidate was evaluated on {data_name(data)} and the live baseline {live.name} on "
                f"{data_name(live.data)}: not the same data, no comparison")
    if live.eval_count != eval_count:
        return (f"the candidate was evaluated on {eval_count} validation records and the live baseline {live.name} "
                f"on {live.eval_count}: not the same data, no comparison")
    if not (ours and theirs):
        silent = " and ".join(who for who, digest in (("the candidate's", ours), ("the live baseline's", theirs))
                              if not digest)
        verb = "record" if not (ours or theirs) else "records"
        return (f"cannot tell that the candidate and the live baseline {live.name} were evaluated on the same data: "
                f"{silent} eval.json {verb} no data identity (written before rn50 evaluate recorded one); evaluate "
                "again")
    return None


def champion_from_manifest(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The champion as the gate needs it, from the manifest `latest` points to."""
    if manifest is None:
        return None
    metrics = manifest.get("metrics")
    top1 = metrics.get("top1_accuracy") if isinstance(metrics, dict) else None
    if not isinstance(top1, int | float):
        raise ValueError(f"the latest manifest ({manifest.get('version')}) has no metrics.top1_accuracy")
    return {"version": manifest.get("version"), "top1_accuracy": float(top1), "uri": manifest.get("uri")}


def _read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        return json.loads(read_regular(path))  # never through a link: what it reads goes into decision.json
    except FileNotFoundError:
        problems.append(f"{path}: missing")
    except NotRegularFile as exc:
        problems.append(str(exc))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: not valid JSON ({exc})")
    return None


def read_live_baseline(folder: Path, problems: list[str]) -> tuple[LiveBaseline | None, str]:
    """(the live baseline in folder, why there is none): its eval.json and which model that measured.

    The model is named by folder/baseline.json (evaluate_baseline writes it; {"kind": "none", "reason"}
    when the run had no baseline model), else by the folder itself (a version `rn50 pull` fetched, a
    model `rn50 import-ngc` wrote, or any model directory, evaluated there by `rn50 evaluate`).
    Unreadable files, and a folder that names no model, are problems.
    """
    folder = Path(folder)
    if not folder.is_dir():
        problems.append(f"{folder}: missing")
        return None, ""
    if os.path.lexists(folder / BASELINE_FILE):  # the DAG's baseline/: evaluate_baseline names what it measured
        identity = _read_json(folder / BASELINE_FILE, problems)
        if identity is None:
            return None, ""
    else:
        identity = model_identity(folder)
        if identity is None and (folder / CONFIG_FILE).is_file():  # a model directory training left
            identity = {"kind": "path", "path": str(folder.resolve())}
        if identity is None:
            problems.append(f"{folder}: names no model to compare with: not a model directory (config.json), a "
                            f"version `rn50 pull` fetched (manifest.json) or the DAG's baseline/ ({BASELINE_FILE})")
            return None, ""
    if not isinstance(identity, dict) or not identity.get("kind"):
        problems.append(f"{folder / BASELINE_FILE}: not a baseline record (no kind)")
        return None, ""
    if identity["kind"] == "none":
        return None, str(identity.get("reason") or "none")
    evaluation = _read_json(folder / EVAL_FILE, problems)
    if evaluation is None:
        return None, ""
    if _published_eval(folder):
        problems.append(f"{folder / EVAL_FILE}: the figures published with {identity.get('version')}, measured on "
                        f"its own data; evaluate it on this data first (rn50 evaluate --model-dir {folder})")
        return None, ""
    try:
        live = LiveBaseline(identity, float(evaluation["top1_accuracy"]), float(evaluation["top5_accuracy"]),
                            int(evaluation["eval_count"]), _data(evaluation))
    except (KeyError, TypeError, ValueError) as exc:
        problems.append(f"{folder / EVAL_FILE}: no usable top1_accuracy, top5_accuracy and eval_count ({exc})")
        return None, ""
    return live, ""


def _data(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    """eval.json's EVAL_DATA when it is an object (what it says is checked by decide), else None."""
    data = (evaluation or {}).get(EVAL_DATA)
    return data if isinstance(data, dict) else None


def _published_eval(folder: Path) -> bool:
    """Whether folder/eval.json is still the one its manifest lists (a pulled version, not evaluated since)."""
    try:
        entry = json.loads(read_regular(folder / MANIFEST))["files"][EVAL_FILE]
        return sha256_file(folder / EVAL_FILE) == entry["sha256"]
    except (OSError, ValueError, KeyError, TypeError, NotRegularFile):
        return False


def run_gate(
    model_dir: Path,
    *,
    eval_dir: Path | None = None,
    gate_dir: Path | None = None,
    profile: str | None = None,
    champion: dict[str, Any] | None = None,
    baseline_dir: Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    force_publish: bool = False,
    force_reason: str | None = None,
    registry: str | None = None,
) -> Decision:
    """Read eval_dir/eval.json (and model_dir/config.json for the profile), decide, always write
    gate_dir/decision.json; both directories default to model_dir (`rn50 gate`; the DAG gives the run
    workspace's eval/ and gate/). baseline_dir holds the live baseline (read_live_baseline); None: there
    is none, and the floor alone decides.

    Raises GateFailed after writing the decision when the model must not be published.
    """
    model_dir = Path(model_dir)
    eval_path = Path(eval_dir if eval_dir is not None else model_dir) / EVAL_FILE
    gate_dir = Path(gate_dir if gate_dir is not None else model_dir)
    problems: list[str] = []
    evaluation = _read_json(eval_path, problems)
    config = _read_json(model_dir / CONFIG_FILE, problems if profile is None else [])
    profile = profile or (config or {}).get("profile")
    amp = bool((config or {}).get("amp", True))
    top1 = None
    if evaluation is not None:
        value = evaluation.get("top1_accuracy")
        if isinstance(value, int | float) and 0 <= value <= 100:
            top1 = float(value)
        else:
            problems.append(f"{eval_path}: top1_accuracy is {value!r}, expected a percentage")
    live, no_live = None, "none was given (rn50 gate --baseline DIR)"
    if baseline_dir is not None:
        live, no_live = read_live_baseline(Path(baseline_dir), problems)
    floor = None
    if profile is not None:
        try:
            floor = floor_for(profile, amp=amp)
        except ValueError as exc:
            problems.append(str(exc))
    decision = decide(
        top1, floor, profile=profile, champion=champion, live=live, no_live=no_live,
        top5=(evaluation or {}).get("top5_accuracy"), eval_count=(evaluation or {}).get("eval_count"),
        data=_data(evaluation),
        tolerance=tolerance, force_publish=force_publish, force_reason=force_reason, problems=problems,
        registry=registry,
    )
    decision.inputs = {"model_dir": str(model_dir), "eval": evaluation and eval_summary(evaluation),
                       "amp": amp}
    gate_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(gate_dir / DECISION_FILE, decision.to_json())  # replaces a planted link, never writes through it
    if not decision.publish:
        raise GateFailed(decision)
    return decision
