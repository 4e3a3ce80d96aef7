"""Benchmark: a 3.2 study (--seeds 20 by default) as part3_detection.py runs it, against the plain
loop a peer would write (benchmarks/plain/plain_part3.py: nn.Module + optim.SGD, one seed after
another, one thread), each seed given the same number of iterations as in our run. Both timed as
whole processes (start-up and figures included), alternating, `--repeats` times. Part 3's path
spreads the seeds over --workers processes of one thread each. Read the ratio: absolute times drift
on a shared machine.

    python benchmarks/bench_part3.py [--data-dir data] [--seeds 20] [--workers 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ours = [sys.executable, "part3_detection.py", "--data-dir", args.data_dir, "--out", tmp, "--quiet",
                "--seeds", str(args.seeds), "--workers", str(args.workers)]
        subprocess.run(ours, cwd=ROOT, check=True, capture_output=True)
        results = json.loads((Path(tmp) / "part3_detection.json").read_text())
        cap = results["config"]["max_iters"]
        its = [i if i is not None else d if d is not None else cap
               for i, d in zip(results["iterations"], results["diverged_at"], strict=True)]
        plain = [sys.executable, "benchmarks/plain/plain_part3.py", "--task", "detection", "--data-dir",
                 args.data_dir, "--out", f"{tmp}/plain", "--iters", ",".join(map(str, its))]
        t_ours, t_plain = [], []
        for _ in range(args.repeats):
            t_ours.append(timed(ours))
            t_plain.append(timed(plain))
    a, b = statistics.median(t_ours), statistics.median(t_plain)
    n = sum(i + 1 for i in its)
    print(f"3.2, {args.seeds} seeds, {n:,} model-iterations in all ({min(its)}-{max(its)} per seed)")
    print(f"  plain loop, 1 process of 1 thread:          {b:7.2f} s  ({1e3 * b / n:.2f} ms per model-iteration)")
    print(f"  part3_detection.py, {args.workers} process(es) of 1 thread: {a:7.2f} s  "
          f"({1e3 * a / n:.2f} ms per model-iteration)")
    print(f"  ratio plain / ours: {b / a:.2f}x (medians of {args.repeats} alternating whole runs)")


if __name__ == "__main__":
    main()
