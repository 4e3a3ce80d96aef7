"""Benchmark: part 2's many-seed engine against the plain eager loop, per model-iteration.

Baseline: the straightforward way, an nn.Module (two nn.Linear) and optim.SGD per seed, one seed
after another, float32, one thread, with the stop check every iteration. Fast path: part2_fc.train
as part2_fc.py runs it (through part2_fc.run_jobs): every seed of a setting in one stack, float32,
one thread per process, the settings in one process and then in --workers processes (start-up
included: the whole machine, as a user runs it).
Both run the same capped number of iterations (a run that reaches 100% earlier stops in both; the
model-iterations actually done are counted), so the cost per model-iteration compares like with
like. Absolute times drift on a shared machine: both are timed --repeats times, alternating, and the
best of each is kept; the ratio is what to read (goal: >= 80x at 1,000 seeds). Then, optionally,
peak memory of a 4-setting study with many seeds (ru_maxrss of this process, which trains them).

    python benchmarks/bench_part2.py [--data-dir data] [--seeds 1000] [--plain-seeds 3] [--iters 1000]
                                     [--workers 2] [--repeats 3] [--memory-seeds 0] [--memory-iters 300]
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import part2_fc as p2

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def plain_loop(setting: str, seed: int, x: torch.Tensor, y: torch.Tensor, iters: int) -> int:
    """One seed, nn.Module + optim.SGD at lr 0.1; returns the model-iterations done (evaluations)."""
    activation, loss_kind, _ = p2.SETTINGS[setting]
    act = nn.ReLU() if activation == "relu" else nn.Sigmoid()
    model = nn.Sequential(nn.Linear(16, 4), act, nn.Linear(4, 1))
    w1, b1, w2, b2 = p2.initial_weights([seed], 16, p2.Config())
    with torch.no_grad():
        model[0].weight.copy_(w1[0]), model[0].bias.copy_(b1[0, :, 0])
        model[2].weight.copy_(w2[0].T), model[2].bias.copy_(b2[0])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for t in range(iters + 1):
        z = model(x).squeeze(1)
        loss = F.mse_loss(torch.sigmoid(z), y) if loss_kind == "l2" else F.binary_cross_entropy_with_logits(z, y)
        if not torch.isfinite(loss) or bool(((z > 0) == (y > 0.5)).all()) or t == iters:
            return t + 1
        opt.zero_grad()
        loss.backward()
        opt.step()
    return iters + 1


def done_iterations(runs: list[dict], iters: int) -> int:
    """Model-iterations (evaluations) a stack did: each run up to its stop or the cap."""
    ends = [r["iterations"] if r["iterations"] is not None else r["diverged_at"] for r in runs]
    return sum((iters if e is None else e) + 1 for e in ends)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="course-layout data folder")
    parser.add_argument("--seeds", type=int, default=1000, help="seeds per setting for the engine")
    parser.add_argument("--plain-seeds", type=int, default=3, help="seeds per setting for the eager loop")
    parser.add_argument("--iters", type=int, default=1000, help="iteration cap of every run")
    parser.add_argument("--workers", type=int, default=2, help="processes of part 2's path")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats; the best of each is kept")
    parser.add_argument("--memory-seeds", type=int, default=0, help="seeds of the memory check (0: skip)")
    parser.add_argument("--memory-iters", type=int, default=300, help="iteration cap of the memory check")
    args = parser.parse_args()

    data = p2.load_dataset(args.data_dir, "random")
    x = data.images.reshape(len(data.images), -1)  # (64, 16) float64 numpy, as part2_fc.main passes it
    y = data.labels
    xt, yt = (torch.tensor(v, dtype=torch.float32) for v in (x, y))
    settings = list(p2.SETTINGS)
    print(f"data: {data.describe}; torch {torch.__version__}; numpy {np.__version__}; float32")

    torch.set_num_threads(1)
    plain_loop("relu-ce", 0, xt, yt, 5)  # one-time warm-up (the first optimiser step imports modules)
    p2.train("relu-ce", [(0, 0.1)], x, y, p2.Config(max_iters=5, log=False))  # one-time warm-up
    cfg = p2.Config(max_iters=args.iters, log=False)
    seeds = [(k, 0.1) for k in range(args.seeds)]
    best: dict[str, float] = {}  # us per model-iteration, the best of the repeats (the least disturbed)
    for _ in range(args.repeats):  # alternating, so that a busy spell on a shared machine hits both
        start = time.perf_counter()
        its = sum(plain_loop(s, k, xt, yt, args.iters) for s in settings for k in range(args.plain_seeds))
        best["eager"] = min(best.get("eager", math.inf), (time.perf_counter() - start) / its * 1e6)
        for workers in sorted({1, args.workers}):
            start = time.perf_counter()  # with workers > 1 this includes starting the processes
            stacks = p2.run_jobs(p2.train, [(s, seeds, x, y, cfg) for s in settings], workers)
            its = sum(done_iterations(s["runs"], args.iters) for s in stacks)
            best[workers] = min(best.get(workers, math.inf), (time.perf_counter() - start) / its * 1e6)
    print(f"eager loop, 1 thread, {len(settings)} x {args.plain_seeds} seeds, cap {args.iters}: "
          f"{best['eager']:.1f} us per model-iteration (best of {args.repeats})")
    for workers in sorted({1, args.workers}):
        print(f"part 2's path, {workers} process(es) of 1 thread, {len(settings)} x {args.seeds} seeds, cap "
              f"{args.iters}: {best[workers]:.2f} us per model-iteration (best of {args.repeats}); "
              f"{best['eager'] / best[workers]:.0f}x cheaper than the eager loop")

    if args.memory_seeds:
        start = time.perf_counter()
        cfg = p2.Config(max_iters=args.memory_iters, log=False)
        for s in settings:
            runs = [(k, 0.1) for k in range(args.memory_seeds)]
            p2.train(s, runs, x, y, cfg, band_runs=args.memory_seeds)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"memory: {len(settings)} x {args.memory_seeds} seeds, cap {args.memory_iters}, with the loss "
              f"band: peak RSS {peak_mb:.0f} MB ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
