"""The plain part-3 script a peer would write (the benchmark's baseline) for 3.1 or 3.2: the conv
net of Figure 4 (and 3.2's width head), truncated normal init, optim.SGD on CE (+ 0.01 L2 for 3.2),
the handout's curves recorded every iteration and plotted (first seed), one thread. One seed per
entry of --iters, one after another, each exactly that many updates.

    python benchmarks/plain/plain_part3.py --task line|detection --iters N[,N...] --out DIR [--data-dir data]
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width_head: bool) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 7), nn.Conv2d(16, 8, 7)
        self.fc = nn.Linear(128, 1)
        self.reg = nn.Linear(128, 1) if width_head else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        f = torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1)
        return self.fc(f).squeeze(1), None if self.reg is None else self.reg(f).squeeze(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", choices=("line", "detection"), required=True)
    parser.add_argument("--iters", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    d = args.data_dir / args.task
    x = torch.tensor(np.load(d / f"{args.task}_imgs.npy"), dtype=torch.float32)[:, None]
    y = torch.tensor(np.load(d / f"{args.task}_labs.npy"), dtype=torch.float32)
    w = None
    if args.task == "detection":
        w = torch.tensor(np.load(d / "detection_width.npy"), dtype=torch.float32)
    for seed, iters in enumerate(map(int, args.iters.split(","))):
        curves = train(seed, iters, x, y, w)
        if seed == 0:
            plot(curves, args.out, args.task)
        print(args.task, f"seed {seed}:", iters, "iterations, final accuracy", curves["accuracy"][-1])


def train(seed: int, iters: int, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> dict:
    torch.manual_seed(seed)
    net = Net(w is not None)
    for name, p in net.named_parameters():
        nn.init.trunc_normal_(p, std=0.1, a=-0.2, b=0.2) if name.endswith("weight") else nn.init.constant_(p, 0.1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    curves: dict[str, list[float]] = {"ce": [], "accuracy": [], "l2": [], "width_accuracy": []}
    for _ in range(iters + 1):
        logits, pred = net(x)
        ce = nn.functional.binary_cross_entropy_with_logits(logits, y)
        loss = ce
        curves["ce"].append(ce.item())
        curves["accuracy"].append(((logits > 0).float() == y).float().mean().item())
        if w is not None:
            l2 = ((pred - w) ** 2).mean()
            loss = ce + 0.01 * l2
            curves["l2"].append(l2.item())
            curves["width_accuracy"].append(((pred - w).abs() < 0.5).float().mean().item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return curves


def plot(curves: dict[str, list[float]], out: Path, task: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, values in curves.items():
        if values:
            plt.figure()
            plt.plot(values)
            plt.title(f"{task}: {name}")
            plt.savefig(out / f"plain_{task}_{name}.png")
            plt.close()


if __name__ == "__main__":
    main()
