"""Benchmark: how close `rn50 validate` runs to disk speed and to JPEG-decode speed.

Prints, all measured in this one run on the same files (these machines are noisy, so only ratios
against a baseline from the same run mean anything):
  (a)/(b)  validator MB/s, header mode, 1 worker  /  raw sequential read MB/s (warm page cache)
  (c)      full-decode validation time  /  tf.io.decode_jpeg alone over the same images
  (d)      speed-up with 2 workers over 1
The dataset is generated once (ImageNet-like records of about 110 KB, over 500 MB in all) and kept
in .cache/bench-validate, so later runs skip that.

    .venv/bin/python bench/validate.py [--mb 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from pipeline.data import scan
from pipeline.data.format import ImageRecord, write_shard
from pipeline.data.labels import load_label_map
from pipeline.data.scan import scan_shard
from pipeline.data.shards import shard_name
from pipeline.data.tfrecord import iter_frames
from pipeline.data.validate import validate_dataset

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench-validate"
SHARDS = 8


def make_dataset(out: Path, megabytes: int) -> Path:
    """ImageNet-like shards: 500x375-ish JPEGs of smooth-plus-noise content, about 110 KB each."""
    import tensorflow as tf

    stamp = out / f".complete-{megabytes}"
    if stamp.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(".complete-*"):  # the shards are about to change under it
        old.unlink()
    labels = load_label_map()
    rng = np.random.default_rng(0)
    records: list[ImageRecord] = []
    total = 0
    while total < megabytes * 1_000_000:
        h, w = int(rng.integers(330, 420)), int(rng.integers(450, 520))
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * (i + 1) + y * (3 - i)) % 256 for i in range(3)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 28, size=(h, w, 3)), 0, 255).astype(np.uint8)
        jpeg = tf.io.encode_jpeg(pixels, quality=90).numpy()
        label = int(rng.integers(1, 1001))
        records.append(
            ImageRecord(jpeg, label, labels.synset(label), labels.name(label), h, w, f"bench_{len(records)}.JPEG")
        )
        total += len(jpeg)
    per_shard = -(-len(records) // SHARDS)
    for i in range(SHARDS):
        split, index, count = ("train", i, SHARDS - 2) if i < SHARDS - 2 else ("validation", i - SHARDS + 2, 2)
        write_shard(out / shard_name(split, index, count), records[i * per_shard : (i + 1) * per_shard])
    stamp.touch()
    return out


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def raw_read(files: list[Path]) -> None:
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=512, help="dataset size in MB (at least 500 for the README figures)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept")
    args = parser.parse_args()

    import tensorflow as tf

    data = make_dataset(CACHE, args.mb)
    files = sorted(p for p in data.iterdir() if "-of-" in p.name)
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    raw_read(files)  # warm the page cache
    print(f"dataset: {len(files)} shards, {size_mb:.0f} MB, in {data}")
    crc = scan._native.CRC_IMPLS[-1] if scan.NATIVE else None
    print(f"shard scanner: {f'native, CRC-32C by {crc}' if crc else f'Python ({scan.NATIVE_PROBLEM})'}")

    t_raw = best_of(args.repeat, lambda: raw_read(files))
    scan_all = lambda decode: [scan_shard(p, p.name.split("-")[0], decode=decode) for p in files]
    t_header = best_of(args.repeat, lambda: scan_all("header"))
    t_whole = best_of(args.repeat, lambda: validate_dataset(data, workers=1))
    print(f"(b) raw sequential read:            {size_mb / t_raw:8.0f} MB/s")
    print(f"(a) validator, header, 1 worker:    {size_mb / t_header:8.0f} MB/s  (shard scan: CRCs, schema, JPEG, hash)")
    print(f"    whole validate_dataset, 1 wkr:  {size_mb / t_whole:8.0f} MB/s  (+ facts table, GX suite, Data Docs)")
    print(f"    (a)/(b) = {t_raw / t_header:.2f}   (target >= 0.5)")

    images = [
        bytes(tf.train.Example.FromString(f.data).features.feature["image/encoded"].bytes_list.value[0])
        for p in files
        for f in iter_frames(p)
    ]
    t_decode = best_of(args.repeat, lambda: [tf.io.decode_jpeg(img, channels=3) for img in images])
    t_full = best_of(args.repeat, lambda: scan_all("full"))
    print(f"(c) decode_jpeg alone: {t_decode:.2f} s; full-decode validation: {t_full:.2f} s")
    print(f"    full validation / decode alone = {t_full / t_decode:.2f}   (target <= 1.25)")

    # (d) The scan stage in a pool of 2 warmed-up workers (TensorFlow imported, as it is after the first
    # shard of a long run) against the same stage in 1 process; then whole runs, worker start-up included.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        list(pool.map(_warm_worker, range(2)))
        for decode, t_one in (("header", t_header), ("full", t_full)):
            t_two = best_of(args.repeat, lambda d=decode: list(pool.map(_scan, files, [d] * len(files))))
            print(f"(d) 2 workers vs 1, {decode:<6} scan: {t_one / t_two:.2f}x ({t_one:.2f} s -> {t_two:.2f} s)"
                  "   (target >= 1.7)")
    t_h2 = best_of(args.repeat, lambda: validate_dataset(data, workers=2))
    t_f1 = best_of(1, lambda: validate_dataset(data, workers=1, decode="full"))
    t_f2 = best_of(1, lambda: validate_dataset(data, workers=2, decode="full"))
    print(f"    whole validate_dataset, header: {t_whole / t_h2:.2f}x ({t_whole:.2f} s -> {t_h2:.2f} s, cold workers)")
    print(f"    whole validate_dataset, full:   {t_f1 / t_f2:.2f}x ({t_f1:.2f} s -> {t_f2:.2f} s, cold workers)")


def _warm_worker(_: int) -> None:
    import tensorflow  # noqa: F401  (what `full` mode's first shard would pay)

    time.sleep(0.5)  # keep this worker busy so the other one takes the second warm-up


def _scan(path: Path, decode: str) -> int:
    return scan_shard(path, path.name.split("-")[0], decode=decode).records

if __name__ == "__main__":
    main()
