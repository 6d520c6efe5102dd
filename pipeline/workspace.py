"""One directory per DAG run: every stage reads and writes there, so runs never share state.

Two runs at once must not share a DVC checkout (DVC locks it) or a model directory (a second run
would resume the first's checkpoints). A retry of the same run must find its own earlier work, so
the directory name comes from the run id alone, and no two run ids give the same name.

The root holds the run workspaces and the root's own entries, whose names start with '.' (ROOT_ENTRY):
the DVC cache all runs share, NVIDIA's imported checkpoints, the failure log, and what `gc` is
deleting. No workspace name starts with '.', so no run id can name the root, its parent or one of
those entries. A run deletes only inside its own folder
(`RunWorkspace.remove`); whole workspaces go only through `gc`, once idle for the retention period.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import string
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline import settings
from pipeline.contracts import names
from pipeline.contracts.names import DATA_RECORD, DVC_CACHE, REPORT_DIR, ROOT_ENTRY, RUN_MARKER, TRASH
from pipeline.files import write_json

_SAFE = frozenset(string.ascii_letters + string.digits + "_.-")
_MAX_NAME = 200  # a file name holds at most 255 bytes; room for TRASH in front
DAY = 86400.0


def default_root() -> Path:
    return settings.WORKSPACE_ROOT.get()


def safe_name(run_id: str) -> str:
    """The run's folder name: Airflow run ids hold ':' and '+'; keep them readable but filesystem-safe.

    Every character outside [A-Za-z0-9_.-] (the escape '~' included) becomes ~XX per UTF-8 byte, and so
    does a leading '.': reading the escapes back gives the run id, so two run ids never share a folder.
    A name too long for the filesystem keeps its start and ends in '~~' and the run id's full sha256
    ('~~' is in no escaped name).
    """
    if not run_id:
        raise ValueError("empty run id")
    name = "".join(c if c in _SAFE else "".join(f"~{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
                   for c in run_id)
    if name.startswith(ROOT_ENTRY):
        name = f"~{ord(ROOT_ENTRY):02X}" + name[1:]
    if len(name) > _MAX_NAME:
        name = name[: _MAX_NAME - 66] + "~~" + hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()
    return name


@dataclass(frozen=True)
class RunWorkspace:
    root: Path
    run_id: str

    @property
    def path(self) -> Path:
        return Path(self.root).resolve() / safe_name(self.run_id)

    @property
    def checkout(self) -> Path:  # the git+DVC checkout of data.dvc at the chosen revision
        return self.path / names.CHECKOUT_DIR

    @property
    def data_record(self) -> Path:  # what fetch_data used: the dataset's version and where it was
        return self.path / DATA_RECORD

    @property
    def validation(self) -> Path:
        return self.path / names.VALIDATION_DIR

    # Each stage writes only its own folder (as TFX components do), so a retried stage replaces its own
    # outputs and nothing of another's; publish reads them all and only uploads.
    @property
    def model(self) -> Path:  # train: checkpoints/, config.json, metrics.jsonl, tensorboard/
        return self.path / names.MODEL_DIR

    @property
    def eval(self) -> Path:  # evaluate: eval.json, its metrics.jsonl line
        return self.path / names.EVAL_DIR

    @property
    def export(self) -> Path:  # evaluate, on the gpu queue: model.keras
        return self.path / names.EXPORT_DIR

    @property
    def champion(self) -> Path:  # train (init_from=champion) or evaluate_baseline, whichever comes first: the
        return self.path / names.CHAMPION_DIR  # registry's `latest`, pulled once per run (pipeline.stages.baseline)

    @property
    def baseline(self) -> Path:  # evaluate_baseline: eval.json and baseline.json (which model it measured)
        return self.path / names.BASELINE_DIR

    @property
    def gate(self) -> Path:  # check_accuracy: decision.json
        return self.path / names.GATE_DIR

    @property
    def report(self) -> Path:  # report: index.html and its PNGs, for people
        return self.path / REPORT_DIR

    @property
    def cache(self) -> Path:  # the DVC cache every run under this root copies from
        return Path(self.root).resolve() / DVC_CACHE

    def create(self) -> RunWorkspace:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / RUN_MARKER, {"run_id": self.run_id})  # never through a link planted there
        return self

    def remove(self, path: Path) -> None:
        """Delete a file or tree strictly inside this run's folder (a symlink, not what it points to).

        Anything else is refused with ValueError: whatever a path says, a run deletes only its own files.
        """
        target = Path(path)
        real = Path(os.path.realpath(target.parent)) / target.name
        if target.name in ("", "..") or self.path not in real.parents:
            raise ValueError(f"{target}: outside the workspace of run {self.run_id} ({self.path}); not removed")
        if real.is_dir() and not real.is_symlink():
            shutil.rmtree(real)
        else:
            real.unlink(missing_ok=True)


@dataclass(frozen=True)
class Removal:
    path: Path
    run_id: str
    idle_days: float
    bytes: int
    error: str | None = None  # why it is still there

    def describe(self, dry_run: bool = False) -> str:
        what = f"{self.path} (run {self.run_id}, idle {self.idle_days:.1f} days, {self.bytes / 1e9:.2f} GB)"
        if self.error:
            return f"cannot remove {what}: {self.error}"
        return f"{'would remove' if dry_run else 'removed'} {what}"


def _activity(folder: Path) -> tuple[float, int]:
    """(newest modification time of anything inside, bytes of its files), symlinks not followed."""
    newest, size = os.lstat(folder).st_mtime, 0
    for parent, dirs, files in os.walk(folder):
        for entries, is_file in ((dirs, False), (files, True)):
            for name in entries:
                try:
                    st = os.lstat(os.path.join(parent, name))
                except OSError:  # gone while we looked
                    continue
                newest = max(newest, st.st_mtime)
                size += st.st_size if is_file else 0
    return newest, size


def _run_id(folder: Path) -> str | None:
    """The run id of a folder RunWorkspace made (its marker names a run id that maps to this folder), else None."""
    marker = folder / RUN_MARKER
    try:
        run_id = json.loads(marker.read_text())["run_id"] if marker.is_file() and not marker.is_symlink() else None
        return run_id if isinstance(run_id, str) and run_id and safe_name(run_id) == folder.name else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def gc(root: Path, older_than_days: float, *, dry_run: bool = False, now: float | None = None) -> list[Removal]:
    """Remove the run workspaces in which nothing changed for `older_than_days`, oldest first.

    Only folders a RunWorkspace made count: the DVC cache, the other dot-named entries, and anything
    else in the root stay. A run in progress writes its workspace (each task marks it, training
    writes checkpoints and metrics), so it is never idle that long. A workspace that cannot be removed
    is reported in its Removal's `error`; the others are still removed.
    """
    if not older_than_days > 0:
        raise ValueError(f"older_than_days must be more than 0, not {older_than_days}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such workspace root")
    now = time.time() if now is None else now
    idle = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(TRASH) and not dry_run and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)  # a removal an earlier gc did not finish
        if entry.name.startswith(ROOT_ENTRY) or entry.is_symlink() or not entry.is_dir():
            continue
        run_id = _run_id(entry)
        if run_id is not None:
            newest, size = _activity(entry)
            if (days := (now - newest) / DAY) >= older_than_days:
                idle.append(Removal(entry, run_id, days, size))
    idle.sort(key=lambda r: -r.idle_days)
    if dry_run:
        return idle
    done = []
    for removal in idle:
        trash = root / (TRASH + removal.path.name)
        try:
            # Renamed first: a retry of this run starting now gets a fresh folder, never a half-deleted one.
            removal.path.rename(trash)
            shutil.rmtree(trash)
        except OSError as exc:
            removal = Removal(removal.path, removal.run_id, removal.idle_days, removal.bytes,
                              error=exc.strerror or str(exc))
        done.append(removal)
    return done


def adopt_earlier_failure_log(path: Path) -> None:
    """An earlier version's log beside `path` becomes `path` while there is none (a hard link: a log already
    there is never replaced, and two workers adopting it at once both keep it), freeing its name for a run.
    Best effort: the alert is appended whatever happens here."""
    earlier = path.with_name(names.FAILURES_BEFORE_ROOT_ENTRIES)
    try:
        if stat.S_ISREG(os.lstat(earlier).st_mode):  # not a run's workspace of that name
            os.link(earlier, path, follow_symlinks=False)
            os.unlink(earlier)
    except OSError:  # none, a log already at `path`, or a filesystem without hard links: left as it is
        pass
