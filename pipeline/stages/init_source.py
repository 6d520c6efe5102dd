"""Where a new run's first weights come from (`rn50 train --init-from`, the DAG's init_from Param), as a model
directory that pipeline.train.warm_start loads.

Sources: `scratch` (random, the default), a model directory (PATH: as training, `rn50 import-ngc` or
`rn50 pull` writes one; a pulled version is recorded as the champion it is), `ngc` (NVIDIA's checkpoint
named by RN50_NGC_CHECKPOINT, imported once into a cache under the workspace root) or `champion` (the
registry's `latest` version, pulled for the run; the DAG instead pulls it once into the run's workspace,
pipeline.stages.baseline.snapshot_champion, and passes that PATH).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import settings
from pipeline.contracts.baseline import model_identity
from pipeline.contracts.names import CHECKPOINT_DIR, CONFIG_FILE, NGC_CACHE
from pipeline.contracts.registry import MODEL
from pipeline.files import sha256_file
from pipeline.publish.pull import pull_version
from pipeline.publish.store import make_client
from pipeline.stages import ngc_source
from pipeline.train.warm_start import WarmStartError

SOURCES = ("scratch", "ngc", "champion")  # or a model directory's path


@dataclass(frozen=True)
class InitFrom:
    """Where a new run's weights come from, and what it needs to find them."""

    source: str = "scratch"
    bucket: str = settings.BUCKET.default
    prefix: str = settings.PREFIX.default
    workspace_root: Path = settings.WORKSPACE_ROOT.default

    @property
    def scratch(self) -> bool:
        return self.source == "scratch"

    @contextmanager
    def model_dir(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """(a model directory holding the weights, the record config.json keeps of them)."""
        if self.source == "ngc":
            yield self._ngc()
        elif self.source == "champion":
            with tempfile.TemporaryDirectory(prefix="rn50-champion-") as scratch:
                yield self._champion(Path(scratch) / "version")
        else:
            path = Path(self.source)
            if not (path / CHECKPOINT_DIR).is_dir():
                raise WarmStartError(f"--init-from {path}: not a model directory (no {CHECKPOINT_DIR}/); "
                                     f"give one of {', '.join(SOURCES)} or a model directory")
            # A version `rn50 pull` fetched (the DAG's champion snapshot) says which one: the record names it.
            pulled = model_identity(path)
            kind = {"kind": "path"} if pulled is None or pulled["kind"] != "champion" else pulled
            yield path, {**kind, "path": str(path.resolve())}

    def _champion(self, dest: Path) -> tuple[Path, dict[str, Any]]:
        try:
            result = pull_version(make_client(), self.bucket, dest, prefix=self.prefix, model=MODEL)
        except Exception as exc:  # registry, S3 and integrity errors alike: the run cannot start
            raise WarmStartError(f"--init-from champion: {' '.join(str(exc).split())}") from None
        return dest, {"kind": "champion", "uri": result.manifest["uri"], "version": result.version}

    def _ngc(self) -> tuple[Path, dict[str, Any]]:
        source = settings.NGC_CHECKPOINT.get()
        if not source:
            raise WarmStartError(f"--init-from ngc: {settings.NGC_CHECKPOINT.name} is not set; set it to NVIDIA's "
                                 "unzipped checkpoint directory (a path or an s3:// URI)")
        try:
            content = ngc_source.identity(source)  # on every use: a checkpoint replaced in place is another one
        except ngc_source.NgcSourceError as exc:
            raise WarmStartError(str(exc)) from None
        key = json.dumps([source, content], sort_keys=True).encode()
        cache = Path(self.workspace_root) / NGC_CACHE / hashlib.sha256(key).hexdigest()[:16]
        imported = cache / "model"
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / ".lock", "a") as lock:
            # Two tasks may import at once (evaluate_baseline, and train or its pods on the shared volume):
            # one imports, the other waits for it and then uses its import.
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (imported / CONFIG_FILE).is_file():
                for leftover in (cache / "checkpoint", imported, *cache.glob(".checkpoint.partial-*")):
                    _remove(leftover)  # a download or import cut short: start over
                checkpoint = Path(source)
                try:
                    if source.startswith("s3://"):
                        checkpoint = ngc_source.download(source, content["objects"], cache / "checkpoint")
                except ngc_source.NgcSourceError as exc:
                    raise WarmStartError(str(exc)) from None
                from pipeline.train.ngc_import import NgcImportError, import_ngc  # TensorFlow: only to import

                try:
                    import_ngc(checkpoint, imported)
                except NgcImportError as exc:
                    raise WarmStartError(f"{settings.NGC_CHECKPOINT.name}: {exc}") from None
        digests = verify_import(imported)
        hashed = content.get("sha256")  # a local checkpoint's: its files as hashed above
        if hashed is not None and (changed := [n for n, d in digests.items() if hashed.get(n) != d]):
            # A file rewritten between hashing it above and importing it: the import is not of `content`.
            raise WarmStartError(f"{settings.NGC_CHECKPOINT.name}={source}: {changed[0]} changed while it was "
                                 f"imported; remove {cache} and try again")
        return imported, {"kind": "ngc", "source": source, "sha256": digests, "identity": content}


def verify_import(imported: Path) -> dict[str, str]:
    """The sha256 the import recorded of each checkpoint file, checked again against the files."""
    record = json.loads((imported / CONFIG_FILE).read_text())["imported_from"]
    folder = Path(record["source"]).parent
    for name, digest in record["sha256"].items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != digest:
            raise WarmStartError(f"{path}: changed or gone since it was imported into {imported} (sha256 {digest}); "
                                 f"remove {imported.parent} to import it again")
    return record["sha256"]


def _remove(path: Path) -> None:
    """Remove a leftover file, directory or symlink (the link itself: rmtree refuses one, and following it
    would let a planted link aim the next download at another directory)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)
