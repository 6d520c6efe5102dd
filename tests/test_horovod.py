"""The Horovod built into .venv works: TensorFlow and Gloo, and a real 2-process allreduce."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
HERE = Path(__file__).parent


def _env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def test_check_build_shows_tensorflow_and_gloo():
    result = subprocess.run(
        [str(BIN / "horovodrun"), "--check-build"], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "[X] TensorFlow" in result.stdout
    assert "[X] Gloo" in result.stdout.split("Available Tensor Operations")[0]


@pytest.mark.slow
def test_two_process_allreduce_averages_across_ranks(tmp_path):
    result = subprocess.run(
        [
            str(BIN / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo",
            sys.executable, str(HERE / "horovod_allreduce.py"), str(tmp_path),
        ],
        capture_output=True, text=True, env=_env(), timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["size"] == 2
        # Rank r contributes [r+1, 10(r+1)]: the mean of ranks 0 and 1 is [1.5, 15], the sum [3, 30].
        assert got["average"] == [1.5, 15.0]
        assert got["sum"] == [3.0, 30.0]


@pytest.mark.slow
def test_two_ranks_train_to_identical_weights_on_different_data(tmp_path, sample_dir):
    result = subprocess.run(
        [
            str(BIN / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo",
            sys.executable, str(HERE / "horovod_train.py"), str(sample_dir), str(tmp_path),
        ],
        capture_output=True, text=True, env={**_env(), "PYTHONPATH": str(HERE.parent)}, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["size"] for r in ranks] == [2, 2]
    assert ranks[0]["initial_conv1"] != ranks[1]["initial_conv1"]  # they really started apart
    assert ranks[0]["iterations"] == ranks[1]["iterations"] == 3
    assert ranks[0]["trained"] == ranks[1]["trained"]  # weights and momentum slots, bit for bit
    # BatchNorm's moving statistics follow each rank's own batches (no sync BN, as in NVIDIA's recipe);
    # only rank 0's are checkpointed.
    assert ranks[0]["bn_statistics"] != ranks[1]["bn_statistics"]
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the logged loss is the mean over ranks
    seen = [set(r["seen"]) for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 24
    assert not seen[0] & seen[1]
