"""Benchmark: training input img/s (`train_dataset` at 224 px, batch 64) against a bare floor.

The floor is the least a training input must do, as a plain tf.data pipeline written here:
TFRecordDataset -> parse (image and label) -> `decode_and_crop_jpeg` with NVIDIA's decode flags over a
random window of the same area and aspect ranges as our crop -> bilinear resize to 224 -> flip ->
normalise -> batch 64 -> prefetch. What ours does on top (the shuffles, the interleave, the boxes, the
crop sampler with its 100 attempts, seeds, the label shift) is the overhead the ratio shows.

Prints, all measured in this one run on the same files (these machines are noisy, so only ratios
against a baseline from the same run mean anything):
  ours    img/s of `train_dataset(..., batch_size=64, image_size=224)` (unseeded: out-of-order
          parallelism, as the NGC recipes train), and of the seeded, deterministic variant (--seeded)
  floor   img/s of the plain pipeline above
  ratio   ours / floor: img/s from the summed times of all rounds, each round's own ratio and their
          median; and the CPU seconds per image, floor / ours
How it is timed: each pipeline lives in its own spawned process, built and warmed up there (--warmup
batches, untimed); then the parent asks them in turn, A B A B ..., --rounds times, for LEAD_IN untimed
batches and then --batches timed ones (wall and the process's CPU time). The process not being timed
is stopped (SIGSTOP): a pipeline left running would fill its autotuned buffers meanwhile and start its
next turn from them (a turn of 10 batches once took no time at all). Load from other jobs hits both
alike, with one bias: on a loaded machine the scheduler shares the cores by thread, and the pipeline
with more runnable threads (ours: the parallel interleave and batch) gets more of them, so there the
CPU figure is the fairer one. The data is generated into a temporary directory: --images JPEGs of
500x400 px (the sample's class images, quality 90, about 40 % with boxes) in 8 shards.

    .venv/bin/python bench/input.py [--images 1024] [--rounds 8] [--batches 15] [--warmup 10] [--seeded]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from pipeline.data.format import ENCODED, LABEL, Box, ImageRecord, write_shard
from pipeline.data.input import CROP_AREA_RANGE, CROP_ASPECT_RATIO_RANGE, train_dataset
from pipeline.data.labels import load_label_map
from pipeline.data.preprocess import decode_and_crop_jpeg, normalize
from pipeline.data.sample import class_style, encode_jpeg, render_image
from pipeline.data.shards import shard_name

HEIGHT, WIDTH = 400, 500
BATCH = 64
IMAGE_SIZE = 224
SHARDS = 8
LEAD_IN = 2  # untimed batches before each timed turn (its threads wake up from SIGSTOP)


def make_dataset(out: Path, images: int) -> None:
    """`images` 500x400 JPEGs of the sample's ten classes in SHARDS train shards."""
    labels = load_label_map()
    rng = np.random.default_rng(0)
    records = []
    for i in range(images):
        k = i % 10
        pixels, boxes = render_image(rng, class_style(k, 10), HEIGHT, WIDTH)
        label = 1 + 100 * k
        records.append(ImageRecord(
            encode_jpeg(pixels, quality=90, grayscale=False, progressive=False), label, labels.synset(label),
            labels.name(label), HEIGHT, WIDTH, f"bench_{i}.JPEG",
            tuple(Box(x0 / WIDTH, y0 / HEIGHT, x1 / WIDTH, y1 / HEIGHT) for x0, y0, x1, y1 in boxes),
        ))
    for s in range(SHARDS):
        write_shard(out / shard_name("train", s, SHARDS), records[s::SHARDS])


def floor_dataset(data_dir: Path):
    """The bare pipeline: no shuffle, no boxes, a crop window drawn directly from the same ranges."""
    import tensorflow as tf

    files = sorted(str(p) for p in data_dir.glob("train-*"))
    spec = {ENCODED: tf.io.FixedLenFeature([], tf.string), LABEL: tf.io.FixedLenFeature([], tf.int64)}
    log_aspect = [math.log(r) for r in CROP_ASPECT_RATIO_RANGE]

    def record(serialized):
        parsed = tf.io.parse_single_example(serialized, spec)
        shape = tf.cast(tf.io.extract_jpeg_shape(parsed[ENCODED])[:2], tf.float32)
        area = tf.random.uniform([], *CROP_AREA_RANGE) * shape[0] * shape[1]
        aspect = tf.exp(tf.random.uniform([], *log_aspect))
        size = tf.minimum(tf.stack([tf.sqrt(area / aspect), tf.sqrt(area * aspect)]), shape)
        begin = tf.random.uniform([2]) * (shape - size)
        window = tf.cast(tf.concat([begin, size], 0), tf.int32)
        image = decode_and_crop_jpeg(parsed[ENCODED], window)
        image = tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE])
        image = tf.image.random_flip_left_right(image)
        return normalize(image), parsed[LABEL]

    ds = tf.data.TFRecordDataset(files).repeat()
    ds = ds.map(record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return ds.batch(BATCH, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def worker(build: Callable[[Path], Any], data_dir: Path, warmup: int, conn: Connection) -> None:
    """Own one pipeline: warm it up, then time a turn of `count` batches each time the parent asks."""
    batches = iter(build(data_dir))
    for _ in range(warmup):
        next(batches)
    conn.send("ready")
    while (count := conn.recv()) is not None:
        for _ in range(LEAD_IN):
            next(batches)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            next(batches)
        conn.send((time.perf_counter() - wall, time.process_time() - cpu))


def ours(data_dir: Path):
    return train_dataset(data_dir, batch_size=BATCH, image_size=IMAGE_SIZE)


def ours_seeded(data_dir: Path):
    return train_dataset(data_dir, batch_size=BATCH, image_size=IMAGE_SIZE, seed=0)


def compare(pipelines: dict[str, Callable[[Path], Any]], data_dir: Path, *, warmup: int, rounds: int,
            batches: int) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds of each turn of each pipeline, each pipeline in its own process, in turn.

    A pipeline left running between its turns would fill its buffers (autotuned prefetch, parallel
    map and batch) while the other is timed, and start its next turn from them: every process but the
    one being timed is stopped (SIGSTOP), so each pipeline only ever runs in its own turns.
    """
    ctx = multiprocessing.get_context("spawn")
    conns, procs = {}, {}
    for name, build in pipelines.items():
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(build, data_dir, warmup, child), daemon=True)
        proc.start()
        conns[name], procs[name] = parent, proc

    def receive(name: str) -> Any:
        try:
            return conns[name].recv()
        except EOFError:
            raise SystemExit(f"bench/input.py: the {name} pipeline's process died (its error is above)") from None

    try:
        for name in conns:  # all built and warm before the first timed turn
            receive(name)
            os.kill(procs[name].pid, signal.SIGSTOP)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in conns}
        for _ in range(rounds):
            for name, conn in conns.items():
                os.kill(procs[name].pid, signal.SIGCONT)
                conn.send(batches)
                times[name].append(receive(name))
                os.kill(procs[name].pid, signal.SIGSTOP)
        return times
    finally:
        for name, conn in conns.items():
            with contextlib.suppress(OSError):  # the process may be gone already
                os.kill(procs[name].pid, signal.SIGCONT)
                conn.send(None)
        for proc in procs.values():
            proc.join(timeout=30)


def report(times: dict[str, list[tuple[float, float]]], batches: int, baseline: str = "floor") -> None:
    images = batches * BATCH
    rate = {name: images * len(t) / sum(w for w, _ in t) for name, t in times.items()}
    cpu = {name: 1000 * sum(c for _, c in t) / (images * len(t)) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:>14}: {rate[name]:6.0f} img/s, {cpu[name]:.2f} ms CPU/img  "
              f"(turns: {', '.join(f'{images / w:.0f}' for w, _ in t)})")
    for name, t in times.items():
        if name == baseline:
            continue
        rounds = [f / o for (o, _), (f, _) in zip(t, times[baseline], strict=True)]
        print(f"{name} / {baseline} = {rate[name] / rate[baseline]:.2f} img/s   (target >= 0.85; rounds "
              f"{', '.join(f'{r:.2f}' for r in rounds)}, median {statistics.median(rounds):.2f}); "
              f"CPU per image {cpu[baseline] / cpu[name]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024, help="JPEGs to generate (default 1024)")
    parser.add_argument("--rounds", type=int, default=8, help="timed turns of each pipeline (default 8)")
    parser.add_argument("--batches", type=int, default=15, help="timed batches of 64 per turn (default 15)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches per pipeline first (default 10)")
    parser.add_argument("--seeded", action="store_true", help="also time the seeded, deterministic pipeline")
    args = parser.parse_args()
    for name in ("images", "rounds", "batches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")

    with tempfile.TemporaryDirectory(prefix="bench-input.") as tmp:
        data = Path(tmp)
        start = time.perf_counter()
        make_dataset(data, args.images)
        size_mb = sum(p.stat().st_size for p in data.iterdir()) / 1e6
        print(f"dataset: {args.images} JPEGs of {WIDTH}x{HEIGHT}, {size_mb:.0f} MB in {SHARDS} shards "
              f"({time.perf_counter() - start:.0f} s to make); {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.2f}")
        pipelines: dict[str, Callable[[Path], Any]] = {"floor": floor_dataset, "ours": ours}
        if args.seeded:
            pipelines["ours, seeded"] = ours_seeded
        times = compare(pipelines, data, warmup=args.warmup, rounds=args.rounds, batches=args.batches)
    report(times, args.batches)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
