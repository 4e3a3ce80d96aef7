"""Benchmark: part 2's batched many-seed engine against the plain eager loop, in one run.

The baseline is the straightforward way: an nn.Module and optim.SGD per seed, one seed after
another (part2_fc.train_plain). The fast path trains every seed of every setting together
(part2_fc.train_batched). Both run the same iterations, capped below the first 100% so that no
run stops early and every model-iteration is real work; the cost per model-iteration and the
ratio are printed. Absolute times drift on a shared machine; the ratio is what to read.

Then the 4-setting x 100-seed study of `python part2_fc.py --seeds 100` is timed end to end.

    python benchmarks/bench_part2.py [--data-dir data] [--seeds 1000] [--iters 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import part2_fc as p2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="course-layout data folder")
    parser.add_argument("--seeds", type=int, default=1000, help="seeds per setting for the batched engine")
    parser.add_argument("--plain-seeds", type=int, default=3, help="seeds per setting for the eager loop")
    parser.add_argument("--iters", type=int, default=300, help="iterations per run (below any 100%% stop)")
    parser.add_argument("--study-seeds", type=int, default=100, help="seeds for the full-length study")
    args = parser.parse_args()

    data = p2.load_dataset(args.data_dir, "random")
    x = torch.tensor(data.images.reshape(len(data.images), -1), dtype=p2.DTYPE)
    y = torch.tensor(data.labels, dtype=p2.DTYPE)
    settings = list(p2.SETTINGS)
    cfg = p2.TrainConfig(max_iters=args.iters)
    print(f"data: {data.data_dir} ({data.provenance}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    start = time.perf_counter()
    plain = {s: [p2.train_plain(p2.plain_model(s, k, x.shape[1], cfg), x, y, p2.SETTINGS[s][1], cfg)
                 for k in range(args.plain_seeds)] for s in settings}
    plain_s = time.perf_counter() - start
    plain_model_iters = sum(int(np.isfinite(r.losses).sum()) for runs in plain.values() for r in runs)

    start = time.perf_counter()
    batched = p2.train_batched(settings, list(range(args.seeds)), x, y, cfg)
    batched_s = time.perf_counter() - start
    batched_model_iters = sum(int(np.isfinite(r.losses).sum()) for r in batched.values())

    agree = all(
        np.allclose(batched[s].losses[:, k], r.losses[:, 0], rtol=1e-9, atol=1e-12, equal_nan=True)
        for s in settings for k, r in enumerate(plain[s])
    )
    per_plain = plain_s / plain_model_iters * 1e6
    per_batched = batched_s / batched_model_iters * 1e6
    print(f"eager loop (nn.Module + optim.SGD), {len(settings)} x {args.plain_seeds} seeds "
          f"x {args.iters} its: "
          f"{plain_s:.2f} s, {per_plain:.2f} us per model-iteration")
    print(f"batched engine, {len(settings)} x {args.seeds} seeds x {args.iters} its: "
          f"{batched_s:.2f} s, {per_batched:.3f} us per model-iteration")
    print(f"ratio: the batched engine is {per_plain / per_batched:.0f}x cheaper per model-iteration "
          f"(curves agree with the eager loop: {agree})")

    start = time.perf_counter()
    study = p2.train_batched(settings, list(range(args.study_seeds)), x, y, p2.TrainConfig())
    study_s = time.perf_counter() - start
    reached = {s: sum(i is not None for i in r.iterations) for s, r in study.items()}
    print(f"study: {len(settings)} settings x {args.study_seeds} seeds, cap 10,000: {study_s:.1f} s "
          f"(reached 100%: {reached})")


if __name__ == "__main__":
    main()
