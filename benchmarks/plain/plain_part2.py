"""The plain part-2 script a peer would write (the benchmark's baseline): nn.Module, truncated
normal init, optim.SGD, the loss and accuracy recorded every iteration, the handout's figures (loss
and accuracy per setting), one thread. Runs exactly the iterations it is given, one per setting.

    python benchmarks/plain/plain_part2.py --iters 8319,3515,1678,714 --out DIR [--data-dir data]
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

SETTINGS = [("sigmoid", "l2"), ("sigmoid", "ce"), ("relu", "l2"), ("relu", "ce")]


def init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.1, a=-0.2, b=0.2)
            nn.init.constant_(m.bias, 0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.tensor(np.load(args.data_dir / "random/random_imgs.npy"), dtype=torch.float32).reshape(64, 16)
    y = torch.tensor(np.load(args.data_dir / "random/random_labs.npy"), dtype=torch.float32)
    args.out.mkdir(parents=True, exist_ok=True)
    for (act, loss_name), iters in zip(SETTINGS, map(int, args.iters.split(",")), strict=True):
        model = nn.Sequential(nn.Linear(16, 4), nn.Sigmoid() if act == "sigmoid" else nn.ReLU(), nn.Linear(4, 1))
        init(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        losses, accs = [], []
        for _ in range(iters + 1):
            z = model(x).squeeze(1)
            p = torch.sigmoid(z)
            loss = ((p - y) ** 2).mean() if loss_name == "l2" else nn.functional.binary_cross_entropy_with_logits(z, y)
            acc = ((p > 0.5).float() == y).float().mean()
            losses.append(loss.item())
            accs.append(acc.item())
            opt.zero_grad()
            loss.backward()
            opt.step()
        for values, name in ((losses, "loss"), (accs, "accuracy")):
            plt.figure()
            plt.plot(values)
            plt.title(f"{act} + {loss_name}: {name}")
            plt.savefig(args.out / f"plain_{act}_{loss_name}_{name}.png")
            plt.close()
        print(act, loss_name, iters, "iterations, final accuracy", accs[-1])


if __name__ == "__main__":
    main()
