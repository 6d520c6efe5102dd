"""Benchmark: how long `rn50 --help` takes, against an interpreter that only imports argparse.

Each run starts a fresh interpreter, as a user's shell does: `python -m pipeline --help` (ours) and
`python -c "import argparse"` (the baseline: what any Python command line costs before its own code),
back to back, --repeat times. Printed:
  ours       seconds for `rn50 --help` (median and best)
  baseline   seconds for the bare interpreter with argparse (median and best)
  ratio      ours / baseline, the median of the runs' own ratios
  heavy      the heavy libraries `rn50 --help` imported (TensorFlow, GX, boto3, matplotlib, pandas): none

    .venv/bin/python bench/cli_help.py [--repeat 9] [--repo DIR]

--repo times another checkout's `pipeline` (e.g. a `git worktree` of an older commit), for a before/after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "great_expectations", "boto3", "matplotlib", "pandas")
LIST_HEAVY = ("import runpy, sys; sys.argv = ['rn50', '--help']\n"
              "try:\n    runpy.run_module('pipeline', run_name='__main__')\nexcept SystemExit:\n    pass\n"
              f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})), file=sys.stderr)")


def _seconds(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose pipeline/ is timed")
    args = parser.parse_args()
    if not (args.repo / "pipeline" / "__main__.py").is_file():
        parser.error(f"--repo {args.repo}: no pipeline/__main__.py there")
    env = {**os.environ, "PYTHONPATH": str(args.repo.resolve())}
    ours, base, ratios = [], [], []
    for _ in range(args.repeat):
        ours.append(_seconds([sys.executable, "-m", "pipeline", "--help"], env))
        base.append(_seconds([sys.executable, "-c", "import argparse"], env))
        ratios.append(ours[-1] / base[-1])
    heavy = subprocess.run([sys.executable, "-c", LIST_HEAVY], env=env, capture_output=True, text=True,
                           check=True).stderr.strip().splitlines()[-1]
    print(f"ours      rn50 --help  median {statistics.median(ours):.3f} s, best {min(ours):.3f} s")
    print(f"baseline  python -c 'import argparse'  median {statistics.median(base):.3f} s, best {min(base):.3f} s")
    print(f"ratio     ours / baseline = {statistics.median(ratios):.2f}")
    print(f"heavy     {heavy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
