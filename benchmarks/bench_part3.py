"""Benchmark: part 3.2's training against the plain float32 loop, cost per model-iteration, one run.

Baseline: nn.Module + optim.SGD, one seed after another, one torch thread (the plain loop's fastest
setting on this 2-core machine). Part 3's path: part3_line.run_studies, the same loop per seed in
--workers single-thread processes. For the record, the alternative it was chosen over:
torch.func.vmap over the seeds stacked (one thread), and the seeds folded into the channels of one
network (grouped convolutions). Their gain on one thread varies widely from run to run here, and
over a stack of one they run other convolution kernels than over two or more, so a seed's numbers
would depend on its company (the benchmark prints how far apart). All train 3.2's network (with
the width head) on the detection set for --iters iterations (default: of the order of a 3.2 run)
with no stop, so every model-iteration is a full forward + backward + update.
Absolute times drift on a shared machine; read the ratios.

    python benchmarks/bench_part3.py [--data-dir data] [--seeds 20] [--iters 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import part3_detection as p32
import part3_line as p3
from part1_loss_gradient import load_dataset


def never_stop(logits: torch.Tensor, pred: torch.Tensor | None, batch: dict[str, torch.Tensor],
               cfg: p3.Config) -> dict[str, torch.Tensor]:
    """3.2's task with the stop rule switched off: every seed runs to the cap."""
    metrics = p32.detection_task(logits, pred, batch, cfg)
    return metrics | {"done": metrics["done"] * 0}


def plain_loop(seeds: list[int], cfg: p3.Config, batch: dict[str, np.ndarray]) -> float:
    """Seconds for nn.Module + optim.SGD, one seed after another, cfg.max_iters updates each. Like
    any loop for 3.2 it records the four curves the handout plots (it runs on past 100%, as the
    engine does here)."""
    x, y, w = (torch.tensor(batch[k], dtype=torch.float32) for k in ("x", "y", "widths"))
    start = time.perf_counter()
    for seed in seeds:
        net = p3.initial_model(seed, cfg)
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr)
        curves = []
        for _ in range(cfg.max_iters + 1):
            logits, pred = net(x)
            ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
            l2 = ((pred - w) ** 2).mean()
            accuracy = ((torch.sigmoid(logits) > 0.5) == (y > 0.5)).float().mean()
            width_accuracy = ((pred - w).abs() < p32.WIDTH_TOLERANCE).float().mean()
            curves.append([ce.item(), accuracy.item(), l2.item(), width_accuracy.item()])
            loss = ce + cfg.lr_reg / cfg.lr * l2
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def vmap_stack(seeds: list[int], cfg: p3.Config, batch: dict[str, np.ndarray]) -> float:
    """Seconds for torch.func.vmap over the stacked seeds, optim.SGD on the stacked weights."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    x, y, w = (torch.tensor(batch[k], dtype=torch.float32) for k in ("x", "y", "widths"))
    template = p3.ConvNet(cfg.image, cfg.padding, width_head=True).to("meta")

    def objective(params: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, pred = functional_call(template, params, (x,))
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, y) \
            + cfg.lr_reg / cfg.lr * ((pred - w) ** 2).mean()

    start = time.perf_counter()
    stacked = stack_module_state([p3.initial_model(s, cfg) for s in seeds])[0]
    params = {k: v.detach() for k, v in stacked.items()}
    opt = torch.optim.SGD(params.values(), lr=cfg.lr)
    step = vmap(grad(objective))
    for _ in range(cfg.max_iters + 1):
        for name, g in step(params).items():
            params[name].grad = g
        opt.step()
    return time.perf_counter() - start


def folded_stack(seeds: list[int], cfg: p3.Config, batch: dict[str, np.ndarray]) -> tuple[float, list]:
    """Seconds for the seeds folded into the channels of one network (conv1 with 16 S kernels, conv2
    and both heads grouped per seed, groups = S), optim.SGD, one thread; and seed seeds[0]'s weights."""
    from torch import nn

    x, y, w = (torch.tensor(batch[k], dtype=torch.float32) for k in ("x", "y", "widths"))
    nets, n = [p3.initial_model(seed, cfg) for seed in seeds], len(seeds)
    c1, c2 = nets[0].conv1, nets[0].conv2
    head = (c2.out_channels, *p3.conv_sizes(cfg.image, cfg.padding)[1])
    folded = nn.Sequential(nn.Conv2d(1, c1.out_channels * n, c1.kernel_size, padding=c1.padding), nn.ReLU(),
                           nn.Conv2d(c2.in_channels * n, c2.out_channels * n, c2.kernel_size,
                                     padding=c2.padding, groups=n), nn.ReLU(),
                           nn.Conv2d(head[0] * n, 2 * n, head[1:], groups=n))
    with torch.no_grad():
        for layer, parts in ((folded[0], [m.conv1 for m in nets]), (folded[2], [m.conv2 for m in nets])):
            layer.weight.copy_(torch.cat([m.weight for m in parts]))
            layer.bias.copy_(torch.cat([m.bias for m in parts]))
        heads = torch.cat([torch.cat([m.fc.weight, m.reg.weight]) for m in nets])
        folded[4].weight.copy_(heads.view(2 * n, *head))
        folded[4].bias.copy_(torch.cat([torch.cat([m.fc.bias, m.reg.bias]) for m in nets]))
    opt = torch.optim.SGD(folded.parameters(), lr=cfg.lr)
    start = time.perf_counter()
    for _ in range(cfg.max_iters + 1):
        out = folded(x).view(len(x), n, 2)  # (B, S, logit and width)
        ce = torch.nn.functional.binary_cross_entropy_with_logits(
            out[..., 0], y[:, None].expand(-1, n), reduction="none").mean(0)
        loss = (ce + cfg.lr_reg / cfg.lr * ((out[..., 1] - w[:, None]) ** 2).mean(0)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start, [p.detach()[: len(p) // n].clone() for p in folded.parameters()]


def engine(seeds: list[int], cfg: p3.Config, batch: dict[str, np.ndarray], workers: int) -> float:
    start = time.perf_counter()
    p3.run_studies({"bench": p3.Study(seeds, cfg, batch, never_stop)}, workers)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data = load_dataset(args.data_dir, "detection")
    batch = p3.batch_of(data)
    cfg = p3.Config(image=tuple(data.images.shape[1:]), width_head=True, max_iters=args.iters)
    torch.set_num_threads(1)
    engine([0, 1], p3.replace(cfg, max_iters=3), batch, 1)  # one-time costs before any clock
    plain_loop([0], p3.replace(cfg, max_iters=3), batch)
    seeds = list(range(args.seeds))
    its = args.iters + 1
    print(f"3.2 network, detection set ({data.provenance}), {its} iterations per seed, float32, "
          f"torch {torch.__version__}")
    plain = plain_loop(seeds, cfg, batch) / (its * len(seeds))
    single = engine([0], cfg, batch, 1) / its  # one seed against the plain loop on the same seed
    plain_one = plain_loop([0], cfg, batch) / its
    stacked = vmap_stack(seeds, cfg, batch) / (its * len(seeds))
    folded = folded_stack(seeds, cfg, batch)[0] / (its * len(seeds))
    short = p3.replace(cfg, max_iters=100)
    alone, pair, five = (folded_stack(list(range(k)), short, batch)[1] for k in (1, 2, 5))
    apart = {k: max(float((a - b).abs().max()) for a, b in zip(alone, other, strict=True))
             for k, other in ((2, pair), (5, five))}
    many = engine(seeds, cfg, batch, args.workers) / (its * len(seeds))
    print(f"  plain loop, 1 thread, seeds one after another:  {plain * 1e3:6.2f} ms per model-iteration")
    print(f"  vmap over the {args.seeds} seeds stacked, 1 thread:    {stacked * 1e3:6.2f} ms "
          "per model-iteration")
    print(f"  the {args.seeds} seeds folded into channels, 1 thread: {folded * 1e3:6.2f} ms "
          "per model-iteration")
    print(f"    (its seed 0 after 100 iterations: alone vs with 1 other {apart[2]:.1e} apart, "
          f"alone vs with 4 others {apart[5]:.1e})")
    print(f"  part 3, {args.seeds} seeds, {args.workers} worker(s):              {many * 1e3:6.2f} ms "
          "per model-iteration (includes starting the workers)")
    print(f"  part 3, 1 seed (python part3_detection.py):     {single * 1e3:6.2f} ms per iteration "
          f"(the plain loop on that seed: {plain_one * 1e3:.2f} ms)")
    print(f"  ratio, {args.seeds} seeds: part 3 is {plain / many:.2f}x cheaper than the plain loop "
          f"(vmap alone: {plain / stacked:.2f}x, folded alone: {plain / folded:.2f}x)")
    print(f"  ratio, 1 seed: part 3 takes {single / plain_one:.2f}x the plain loop's time")


if __name__ == "__main__":
    main()
