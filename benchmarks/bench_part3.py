"""Benchmark: part 3's batched engine against the plain loop (seeds one after another), in one run.

The baseline is the straightforward way: an nn.Module (nn.Conv2d) and optim.SGD per seed, one
seed after another (part3_line.train_plain). The batched engine trains every seed at once
(part3_line.train_batched: conv1 by im2col, conv2 as one batched matrix product, autograd on
the stacked weights). Both train the same seeds for the same iterations and must agree: same
stops, curves within 1e-9 relative.

Two workloads, each timed with torch's default thread count and with one thread:
  - 3.2's network (with the width head) on the detection set for --iters iterations, below any
    regression stop, so every model-iteration is a full forward + backward + update;
  - 3.1 on the line set, every seed trained to its stop (the real workload of part3_line.py),
    capped at --line-cap iterations so that a slow seed cannot hold the benchmark up.
Printed: the cost per model-iteration (one seed's forward pass, plus its backward and update
unless it stopped there) of each engine and the ratio. One-time costs (torch.optim's first call
takes about 2 s) are paid before the clock starts. Absolute times drift on a shared machine; the
ratio is what to read. If another process holds a core, torch's two threads stall each other
and nn.Conv2d in float64 becomes up to 50x slower: compare the one-thread lines then.

    python benchmarks/bench_part3.py [--data-dir data] [--seeds 20] [--iters 60]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import part3_line as p3
from part2_fc import DTYPE, load_dataset


def model_iterations(runs: p3.ConvRuns) -> int:
    """Forward passes made: iterations 0..stop of every run."""
    return sum(runs.stop_iteration(s) + 1 for s in range(len(runs.iterations)))


def agree(a: p3.ConvRuns, b: p3.ConvRuns) -> bool:
    """Same stops and divergences, every curve within 1e-9 relative."""
    return a.iterations == b.iterations and a.diverged_at == b.diverged_at and all(
        np.allclose(a.histories()[k], b.histories()[k], rtol=1e-9, atol=1e-12, equal_nan=True)
        for k in a.histories())


def compare(label: str, seeds: list[int], x: torch.Tensor, y: torch.Tensor, widths: torch.Tensor | None,
            cfg: p3.ConvConfig) -> None:
    """Time both engines on the same work and print the cost per model-iteration."""
    geo = p3.conv_geometry(tuple(x.shape[2:]), "valid")
    regression = widths is not None
    timings = {}
    for name, engine in (("plain", p3.train_plain), ("batched", p3.train_batched)):
        start = time.perf_counter()
        runs = engine(seeds, x, y, widths, geo, cfg, regression)
        seconds = time.perf_counter() - start
        timings[name] = (runs, seconds, seconds / model_iterations(runs))
    (plain, plain_s, plain_cost), (batched, batched_s, batched_cost) = timings["plain"], timings["batched"]
    print(f"  {label}: {len(seeds)} seeds, {model_iterations(plain)} model-iterations")
    print(f"    plain  (nn.Module + optim.SGD, one seed after another): {plain_s:6.1f} s, "
          f"{plain_cost * 1e3:6.2f} ms per model-iteration")
    print(f"    batched (all seeds at once):                           {batched_s:6.1f} s, "
          f"{batched_cost * 1e3:6.2f} ms per model-iteration")
    print(f"    ratio: batched is {plain_cost / batched_cost:.2f}x cheaper; engines agree: "
          f"{agree(plain, batched)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="course-layout data folder")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per engine (default 20)")
    parser.add_argument("--iters", type=int, default=60,
                        help="iterations of the detection workload, below any stop (default 60)")
    parser.add_argument("--line-cap", type=int, default=300,
                        help="cap on the line workload's iterations (default 300; most seeds stop before)")
    args = parser.parse_args()

    line, detection = load_dataset(args.data_dir, "line"), load_dataset(args.data_dir, "detection")
    assert detection.widths is not None
    seeds = list(range(args.seeds))
    x_line = torch.tensor(line.images[:, None], dtype=DTYPE)
    y_line = torch.tensor(line.labels, dtype=DTYPE)
    x_det = torch.tensor(detection.images[:, None], dtype=DTYPE)
    y_det = torch.tensor(detection.labels, dtype=DTYPE)
    w_det = torch.tensor(detection.widths, dtype=DTYPE)
    default_threads = torch.get_num_threads()
    print(f"data: {args.data_dir} ({line.provenance}); torch {torch.__version__}; float64")

    warm = p3.ConvConfig(max_iters=2)  # pay one-time costs before any clock starts
    geo = p3.conv_geometry(tuple(x_det.shape[2:]), "valid")
    for engine in (p3.train_plain, p3.train_batched):
        engine([0], x_det, y_det, w_det, geo, warm, True)

    for threads in dict.fromkeys((default_threads, 1)):
        torch.set_num_threads(threads)
        print(f"\n{threads} torch thread(s):")
        compare(f"3.2 network, detection set, {args.iters} iterations (no stop)", seeds, x_det, y_det, w_det,
                p3.ConvConfig(max_iters=args.iters))
        compare(f"3.1 network, line set, every seed to its stop (at most {args.line_cap} iterations)", seeds,
                x_line, y_line, None, p3.ConvConfig(max_iters=args.line_cap))
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
