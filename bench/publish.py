"""Benchmark: `publish_model` throughput against a plain boto3 `upload_file` of the same bytes.

Both go to the same local moto_server (started here, over HTTP on 127.0.0.1), in this one run, on
a model directory shaped like a real ResNet50 one: a checkpoint of 205 MB (weights and SGD momentum,
float32), its index, a 103 MB `model.keras` and the small JSON files. Printed, best of --repeat:
  baseline  boto3 `upload_file` of every file, boto3's defaults (threads, 8 MB parts, CRC32)
  publish   `publish_model` without the DVC remote: claim, conditional puts, SHA256 part checksums,
            sha256 + md5 of every byte, manifest, latest.json
  + DVC     the same plus the server-side copies to the DVC remote
  ratio     baseline seconds / publish seconds (target >= 0.85), best against best, and the median of
            the runs' own ratios (each run times all three back to back)

    .venv/bin/python bench/publish.py [--checkpoint-mb 205] [--keras-mb 103] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3

from pipeline.publish.store import make_client
from pipeline.recipe import get_profile
from pipeline.stages.publish import publish_model

BUCKET = "rn50-bench"
MB = 1_000_000


def make_model_dir(root: Path, checkpoint_mb: int, keras_mb: int) -> Path:
    """Random float32-sized bytes (incompressible, as trained weights nearly are)."""
    ckpt = root / "checkpoints"
    ckpt.mkdir(parents=True)
    rng = __import__("random").Random(0)
    (ckpt / "ckpt-90.data-00000-of-00001").write_bytes(rng.randbytes(checkpoint_mb * MB))
    (ckpt / "ckpt-90.index").write_bytes(rng.randbytes(40_000))
    (ckpt / "checkpoint").write_text('model_checkpoint_path: "ckpt-90"\nall_model_checkpoint_paths: "ckpt-90"\n')
    (root / "model.keras").write_bytes(rng.randbytes(keras_mb * MB))
    (root / "config.json").write_text(json.dumps(get_profile("ngc-90e").to_dict(), indent=2))
    (root / "eval.json").write_text(json.dumps({"top1_accuracy": 76.95, "top5_accuracy": 93.4}))
    (root / "decision.json").write_text(json.dumps({"verdict": "pass", "force_publish": False}))
    (root / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(5000)))
    return root


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def fresh_bucket(url: str) -> None:
    """Empty server between runs, so its memory (and swap) does not grow with the repeats."""
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30)
    boto3.client("s3").create_bucket(Bucket=BUCKET)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint-mb", type=int, default=205)
    parser.add_argument("--keras-mb", type=int, default=103)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    proc, url = start_server()
    os.environ["AWS_ENDPOINT_URL"] = url
    times: dict[str, list[float]] = {"baseline": [], "publish": [], "dvc": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = make_model_dir(Path(tmp) / "model", args.checkpoint_mb, args.keras_mb)
            files = sorted(p for p in model_dir.rglob("*") if p.is_file())
            total = sum(p.stat().st_size for p in files)
            print(f"model directory: {len(files)} files, {total / MB:.0f} MB "
                  f"(checkpoint {args.checkpoint_mb} MB, model.keras {args.keras_mb} MB); server {url}")
            plain = boto3.client("s3")
            ours = make_client()
            for round_ in range(args.repeat):
                fresh_bucket(url)
                started = time.perf_counter()
                for path in files:
                    plain.upload_file(str(path), BUCKET, f"baseline/{path.relative_to(model_dir)}")
                times["baseline"].append(time.perf_counter() - started)
                for name, dvc in (("publish", None), ("dvc", "dvc")):
                    fresh_bucket(url)
                    started = time.perf_counter()
                    publish_model(model_dir, client=ours, bucket=BUCKET, run_id=f"bench-{round_}-{name}",
                                  dvc_prefix=dvc, code_repo=model_dir)
                    times[name].append(time.perf_counter() - started)
                print(f"run {round_ + 1}: " + "  ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    best = {k: min(v) for k, v in times.items()}
    print(f"baseline  boto3 upload_file:       {total / MB / best['baseline']:7.1f} MB/s  ({best['baseline']:.2f} s)")
    print(f"publish   publish_model:           {total / MB / best['publish']:7.1f} MB/s  ({best['publish']:.2f} s)")
    print(f"+ DVC     publish_model + DVC:     {total / MB / best['dvc']:7.1f} MB/s  ({best['dvc']:.2f} s)")
    print(f"ratio publish / baseline = {best['baseline'] / best['publish']:.2f}   (target >= 0.85); "
          f"with the DVC copies {best['baseline'] / best['dvc']:.2f}")
    # Each run measures the three back to back, so a run's own ratio shares its moment's load.
    for name in ("publish", "dvc"):
        ratios = sorted(b / p for b, p in zip(times["baseline"], times[name], strict=True))
        print(f"  per-run ratios, {name}: " + ", ".join(f"{r:.2f}" for r in ratios)
              + f"  (median {statistics.median(ratios):.2f})")


if __name__ == "__main__":
    main()
