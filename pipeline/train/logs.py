"""What a training run leaves to read: metrics.jsonl with NVIDIA's keys, TensorBoard, a console line.

Only rank 0 writes. A resumed run appends to the same metrics.jsonl, so the file is the whole
history of the model directory; each line carries the step, so a reader can see where a restart
picked up.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from pipeline.contracts.names import METRICS_FILE, TENSORBOARD_DIR
from pipeline.files import append_line


def duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class MetricsLog:
    def __init__(self, model_dir: Path, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.path = Path(model_dir) / METRICS_FILE
        self.stream = stream or sys.stdout
        self._writer = None
        if enabled:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(str(Path(model_dir) / TENSORBOARD_DIR))

    def say(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def record(self, entry: dict[str, Any]) -> None:
        """One line of metrics.jsonl and, for every number in it, a TensorBoard scalar at its step."""
        if not self.enabled:
            return
        entry = {"time": round(time.time(), 3), **entry}
        append_line(self.path, json.dumps(entry))  # refuses a symlink planted in its place
        step = int(entry.get("step", 0))
        with self._writer.as_default(step=step):
            import tensorflow as tf

            for key, value in entry.items():
                if key not in ("step", "time") and isinstance(value, int | float):
                    tf.summary.scalar(key, value)
        self._writer.flush()

    def progress(self, *, step: int, total: int, epoch: int, epochs: int, loss: float, lr: float,
                 throughput: float, eta_seconds: float) -> None:
        self.say(
            f"step {step}/{total}  epoch {epoch}/{epochs}  loss {loss:.4f}  lr {lr:.5f}  "
            f"{throughput:,.1f} img/s  eta {duration(eta_seconds)}"
        )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics(model_dir: Path) -> list[dict[str, Any]]:
    path = Path(model_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
