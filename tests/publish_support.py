"""Shared by the publish tests: a model directory shaped like a trained one, and S3 helpers.

The checkpoint is random bytes in TF's file layout: publishing never parses it, and a real one would
cost a TensorFlow import and a training step per test.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

import boto3
from support import BIN, run

from pipeline.contracts.decision import Decision
from pipeline.publish.publish import PublishResult
from pipeline.publish.upload import Transfer
from pipeline.recipe import get_profile
from pipeline.stages.publish import publish_model

BUCKET = "rn50-registry"
MIB = 1024 * 1024
DVC = str(BIN / "dvc")
# Parts small enough that a few MiB of test data makes a multipart upload of several parts.
SMALL_PARTS = Transfer(threshold=8 * MIB, part_size=6 * MIB, concurrency=4)


def decision(verdict: str = "pass", *, force: bool = False, reason: str | None = None) -> dict[str, Any]:
    """decision.json as the gate writes it (its schema, pipeline.contracts.decision.Decision)."""
    live = {"model": {"kind": "champion", "version": "v0001", "uri": f"s3://{BUCKET}/models/resnet50/v0001/"},
            "top1_accuracy": 95.0, "top5_accuracy": 99.0, "eval_count": 500}
    return asdict(Decision(
        verdict=verdict, publish=verdict == "pass" or force, force_publish=force, force_reason=reason,
        profile="smoke", top1_accuracy=95.0, champion=None,
        baseline={"name": "smoke", "top1_accuracy": 60.0, "source": "rn50-pipeline sample", "sanity_check": True},
        thresholds={"tolerance": 0.3, "baseline_min": 59.7, "live_min": 94.7},
        candidate={"top1_accuracy": 95.0, "top5_accuracy": 99.2, "eval_count": 500}, live_baseline=live,
        reasons=[f"{'PASS' if verdict == 'pass' else 'FAIL'}: top-1 95.00 % vs 59.70 %"],
        decided_at="2026-11-28T12:00:00+00:00",
    ))


# config.json's record of the code that trained (`rn50 train` writes it): a commit, no image.
TRAINER = {"code_version": "0123456789abcdef0123456789abcdef01234567", "image": None}


def make_model_dir(path: Path, *, data_bytes: int = 64 * 1024, seed: int = 0, top1: float = 95.0,
                   verdict: str = "pass", force: bool = False, reason: str | None = None,
                   keras: bool = True, trainer: dict[str, Any] | None = TRAINER) -> Path:
    """A model directory as training, evaluate, gate and export leave it (two checkpoints kept); trainer=None:
    a config.json that records no trainer (trained before `rn50 train` recorded one)."""
    rng = __import__("random").Random(seed)
    ckpt = path / "checkpoints"
    ckpt.mkdir(parents=True)
    config = {**get_profile("smoke").to_dict(), **({"trainer": trainer} if trainer is not None else {})}
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (path / "eval.json").write_text(json.dumps({"top1_accuracy": top1, "top5_accuracy": 99.2, "eval_count": 500,
                                                "eval_throughput": 812.5}) + "\n")
    (path / "decision.json").write_text(json.dumps(decision(verdict, force=force, reason=reason), indent=2) + "\n")
    (path / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "epoch": s // 31, "loss": 2.0 / s, "lr": 0.01, "train_throughput": 45.0}) + "\n"
        for s in range(1, 40)))
    for step in (1, 2):
        (ckpt / f"ckpt-{step}.index").write_bytes(rng.randbytes(3000 + step))
        (ckpt / f"ckpt-{step}.data-00000-of-00001").write_bytes(rng.randbytes(data_bytes))
    (ckpt / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-1"\n'
                                     'all_model_checkpoint_paths: "ckpt-2"\n')
    if keras:
        (path / "model.keras").write_bytes(rng.randbytes(20_000))
    return path


SAVED_MODEL_FILES = ("saved_model/saved_model.pb", "saved_model/fingerprint.pb",
                     "saved_model/variables/variables.index", "saved_model/variables/variables.data-00000-of-00001")
EVAL_LINE = json.dumps({"step": 39, "top1_accuracy": 95.0, "top5_accuracy": 99.2, "eval_throughput": 812.5}) + "\n"


def make_run_outputs(ws: Any, *, saved_model: bool = True, **kwargs: Any) -> Any:
    """A run workspace as its stages leave it: make_model_dir's files, each in the folder of the stage that
    writes it (train's model/, evaluate's eval/ with its metrics.jsonl line and export/, the gate's gate/),
    and (saved_model) evaluate's saved_model/ and labels.txt, random bytes in a SavedModel's file layout."""
    make_model_dir(ws.model, **kwargs)
    for folder, name in ((ws.eval, "eval.json"), (ws.gate, "decision.json"), (ws.export, "model.keras")):
        folder.mkdir(exist_ok=True)
        if (ws.model / name).exists():
            os.replace(ws.model / name, folder / name)  # keeps the export's time: newer than the checkpoint
    (ws.eval / "metrics.jsonl").write_text(EVAL_LINE)
    if saved_model:
        add_saved_model(ws.export)
    return ws


def add_saved_model(folder: Path) -> Path:
    """The export's saved_model/ (random bytes in a SavedModel's file layout) and labels.txt, in folder
    and newer than its checkpoint."""
    rng = __import__("random").Random(1)
    for name in SAVED_MODEL_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(rng.randbytes(2000))
    (folder / "labels.txt").write_text("0\tn01440764\ttench, Tinca tinca\n")
    return folder


def s3(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
                        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
                        region_name="us-east-1")


def keys(client: Any, bucket: str = BUCKET, prefix: str = "") -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def uploads(client: Any, bucket: str = BUCKET) -> list[dict[str, Any]]:
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def reset(endpoint: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=5)


def publish(model_dir: Path, client: Any, **kwargs: Any) -> PublishResult:
    """publish_model into BUCKET, without the DVC remote unless dvc_prefix is given."""
    kwargs.setdefault("dvc_prefix", None)
    return publish_model(model_dir, client=client, bucket=BUCKET, **kwargs)


def registry_repo(path: Path, env: dict[str, str], remote: str) -> Path:
    """A model-registry repo as `make demo` creates it: git + DVC, default remote on the bucket."""
    git = ("git", "-c", "user.name=t", "-c", "user.email=t@t")
    path.mkdir()
    run(path, env, *git, "init", "-q")
    run(path, env, DVC, "init", "-q")
    run(path, env, DVC, "remote", "add", "-d", "storage", remote)
    run(path, env, *git, "add", ".dvc")
    run(path, env, *git, "commit", "-qm", "model registry")
    return path


class FlakyProxy:
    """An HTTP proxy in front of the S3 server that breaks requests on a schedule.

    `plan(n, method, path)` says what happens to the n-th request (1-based; path with its query): "ok",
    "503" (SlowDown, the throttling answer), "reset" (the connection drops before the server sees the
    request), "lost" (the server handles it, then the connection drops, so the client never learns
    that its write succeeded) or "cut" (the response's headers and half its body arrive, then the
    connection drops).
    """

    def __init__(self, target: str, plan) -> None:
        import http.client
        import http.server
        import socket
        import threading
        from urllib.parse import urlsplit

        self.plan, self.count, self.faults = plan, 0, {"503": 0, "reset": 0, "lost": 0, "cut": 0}
        lock = threading.Lock()
        upstream = urlsplit(target)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _drop(self) -> None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    proxy.count += 1
                    mode = proxy.plan(proxy.count, self.command, self.path)
                    if mode != "ok":
                        proxy.faults[mode] += 1
                if mode == "503":
                    payload = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if mode == "reset":
                    return self._drop()
                conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                response = conn.getresponse()
                data = response.read()
                conn.close()
                if mode == "lost":
                    return self._drop()
                self.send_response(response.status)
                # A HEAD's Content-Length is the object's size, not this (empty) body's.
                skip = {"transfer-encoding", "connection", "date", "server"} | (
                    set() if self.command == "HEAD" else {"content-length"})
                for name, value in response.getheaders():
                    if name.lower() not in skip:
                        self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data[:len(data) // 2] if mode == "cut" else data)
                if mode == "cut":
                    self.wfile.flush()
                    self._drop()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # the resets this proxy makes on purpose

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
