"""Part 3.1: the conv net of the handout's Figure 4 on the line dataset (question 3.1).

    python part3_line.py [--seeds 20] [--holdout 16] [--padding valid] [--workers 2] [--out figures/]

How fast does the conv net learn to tell "square left of the bar" (label 1) from "square right of
the bar" (label 0)? With --holdout N: does it learn a rule (right on images it never saw) or
memorise the 64 images?

The network (Figure 4), for H x W images (read from the data; the course's are 16 x 16):
    image (1, H, W) -> conv 7x7, 16 kernels -> ReLU -> conv 7x7, 8 kernels -> ReLU
                    -> flatten -> fully connected -> 1 logit -> sigmoid -> cross-entropy
Stride 1, no pooling. --padding valid (default): 16 -> 10 -> 4 pixels, the FC layer sees 128
inputs; --padding same keeps the size. 3.2 (part3_detection.py) adds the width head: a second FC
off the same features, one linear unit.

Training as the handout fixes it: weights truncated normal (std 0.1, redrawn beyond 2 std), biases
0.1, plain SGD at lr 0.1 on the full batch, at most 10,000 updates, stop at the first 100% training
accuracy. Iterations = SGD updates made before the first evaluation at 100% (part 2's rule). A run
diverges when its loss is not finite (--diverge-factor F: also when above F times its initial loss).

Many seeds: each seed trains in the plain loop above (nn.Module, autograd, optim.SGD), one seed
at a time in each of --workers single-thread processes. Stacking the seeds (vmap, or grouped
convolutions) runs other convolution kernels for a lone seed than for a seed in company
(benchmarks/bench_part3.py); the plain loop gives a seed the same numbers whatever else trains:
one torch thread per process, since the thread count changes float32 convolutions.

Outputs in --out: part3_line_{loss,accuracy,kernels,feature_maps}.png (the typical seed: the median
iteration count), part3_line_{share_reached,loss_band}.png (--seeds > 1), part3_line.json.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from part1_loss_gradient import (
    Dataset,
    InputError,
    Parser,
    bounded_int,
    check_out_dir,
    load_dataset,
    run_main,
    save_figure,
    use_headless_matplotlib,
    write_json,
)
from part2_fc import (
    ITERATION_RULE,
    accuracy_from_logits,
    add_training_args,
    check_device,
    describe,
    fmt,
    log_scale,
    loss_from_logits,
    plot_curve,
    plot_median_band,
    plot_share_stopped,
    results_header,
    seed_generator,
    seed_list,
    summarize_stops,
    truncated_normal,
    typical_seed,
)

RESULTS_FILE = "part3_line.json"
TORCH_THREADS = 1  # per process, whatever the number of seeds: float32 convolutions depend on it
KERNEL, CHANNELS = 7, (16, 8)  # Figure 4: 16 kernels of 7x7, then 8
PADDINGS = {"valid": 0, "same": KERNEL // 2}  # zeros added on each side before each convolution
LINE_CLASSES = {0: "square right of the bar", 1: "square left of the bar"}  # the data's meaning
HOLDOUT_SEED = 0  # the generator that picks the held-out images (fixed: the same split every run)
PROGRESS_SECONDS = 10.0


def add_part3_args(parser: Parser) -> None:
    """The flags of both part-3 scripts: part 2's training flags plus these."""
    add_training_args(parser)  # --data-dir --out --seeds --first-seed --lr --max-iters --init-std ...
    add = parser.add_argument
    add("--padding", choices=tuple(PADDINGS), default="valid",
        help="valid: no padding, 16 -> 10 -> 4 pixels (default); same: keep the size")
    add("--workers", type=bounded_int(1, 64), default=2, help="processes sharing the seeds (default 2)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(prog="part3_line.py", description="Part 3.1: the conv net of Figure 4 on line images.")
    add_part3_args(parser)
    parser.add_argument("--holdout", type=bounded_int(0, 10**6), default=0,
                        help="hold out N images (half of each class), report accuracy on them (0 = off)")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# The network of Figure 4 (3.2's width head is a flag of the same module).
# ---------------------------------------------------------------------------------------------


def conv_sizes(image: tuple[int, int], padding: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(H1, W1) of the conv1 maps and (H2, W2) of the conv2 maps; InputError when nothing is left."""
    shrink = KERNEL - 1 - 2 * PADDINGS[padding]  # pixels each convolution takes off H and W
    h, w = image
    if min(h, w) - 2 * shrink < 1:
        raise InputError(f"--padding {padding}: the images are {h}x{w} pixels, too small for two "
                         f"{KERNEL}x{KERNEL} convolutions without padding (need at least "
                         f"{2 * shrink + 1}x{2 * shrink + 1}); use --padding same")
    return (h - shrink, w - shrink), (h - 2 * shrink, w - 2 * shrink)


class ConvNet(nn.Module):
    """Figure 4. x (B, 1, H, W) -> (logits (B,), predicted widths (B,) or None). The sigmoid is in
    the loss, so the logit's sign is the prediction. width_head (3.2): a second FC layer off the
    same features, one linear unit, the object's width in pixels."""

    def __init__(self, image: tuple[int, int], padding: str = "valid", width_head: bool = False) -> None:
        super().__init__()
        pad = PADDINGS[padding]
        h2, w2 = conv_sizes(image, padding)[1]
        self.conv1 = nn.Conv2d(1, CHANNELS[0], KERNEL, padding=pad)
        self.conv2 = nn.Conv2d(CHANNELS[0], CHANNELS[1], KERNEL, padding=pad)
        self.fc = nn.Linear(CHANNELS[1] * h2 * w2, 1)  # the classifier
        self.reg = nn.Linear(CHANNELS[1] * h2 * w2, 1) if width_head else None  # 3.2: the width

    def feature_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ReLU outputs of conv1 (B, 16, H1, W1) and conv2 (B, 8, H2, W2)."""
        a1 = torch.relu(self.conv1(x))
        return a1, torch.relu(self.conv2(a1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.feature_maps(x)[1].flatten(1)
        width = self.reg(features).squeeze(1) if self.reg is not None else None
        return self.fc(features).squeeze(1), width


@dataclass(frozen=True)
class Config:
    """Everything a training run needs besides the data and the seeds (plain values: it travels
    to the worker processes)."""

    image: tuple[int, int]
    padding: str = "valid"
    width_head: bool = False
    lr: float = 0.1  # SGD step (handout)
    lr_reg: float = 0.001  # 3.2: the width loss's learning rate (handout)
    max_iters: int = 10_000  # cap on SGD updates (handout)
    init_std: float = 0.1  # truncated normal weights (handout)
    init_bias: float = 0.1  # every bias (handout)
    diverge_factor: float | None = None  # opt-in: loss above this times its initial loss = diverged
    dtype: str = "float32"
    device: str = "cpu"
    label: str = "3.1"  # names the study in progress lines
    log: bool = False


def initial_model(seed: int, cfg: Config) -> ConvNet:
    """Seed `seed`'s ConvNet: truncated normal weights from the seed's own generator, drawn in the
    order the layers are declared (conv1, conv2, fc, then the width head), every bias init_bias.
    So 3.1 and 3.2 start the same trunk and classifier from the same seed."""
    net = ConvNet(cfg.image, cfg.padding, cfg.width_head).to(getattr(torch, cfg.dtype))
    gen = seed_generator(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.endswith("weight"):
                param.copy_(truncated_normal(tuple(param.shape), cfg.init_std, gen))
            else:
                param.fill_(cfg.init_bias)
    return net.to(cfg.device)


# ---------------------------------------------------------------------------------------------
# The loss (3.1: cross-entropy; 3.2 passes its own task) and the SGD step.
# ---------------------------------------------------------------------------------------------

# A task: (logits, predicted widths or None, batch, cfg) -> 0-d tensors, among them "objective"
# (what SGD minimises) and "done" (1 where the stop rule holds). Batch: x (B, 1, H, W), y (B,), ...
Task = Callable[[torch.Tensor, Any, dict[str, torch.Tensor], Config], dict[str, torch.Tensor]]


def classification_task(logits: torch.Tensor, widths: torch.Tensor | None, batch: dict[str, torch.Tensor],
                        cfg: Config) -> dict[str, torch.Tensor]:
    """3.1: mean cross-entropy; stop at 100% classification accuracy."""
    ce = loss_from_logits("ce", logits, batch["y"])
    accuracy = accuracy_from_logits(logits, batch["y"]).to(ce.dtype)
    return {"objective": ce, "ce": ce, "accuracy": accuracy, "done": (accuracy == 1).to(ce.dtype)}


@dataclass
class SeedRun:
    """One seed's run: its curves (metric -> value at iterations 0..stop), how it ended, and its
    weights at the stop (ConvNet state_dict names, on the CPU)."""

    seed: int
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    reached: bool = False
    diverged: bool = False
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def stop(self) -> int:
        """The last iteration evaluated: the stop, the divergence or the cap."""
        return len(self.curves["objective"]) - 1

    @property
    def iterations(self) -> int | None:
        return self.stop if self.reached else None

    @property
    def diverged_at(self) -> int | None:
        return self.stop if self.diverged else None

    def final(self, metric: str) -> float | None:
        """The metric at the last iteration where it was finite (None if never)."""
        finite = self.curves[metric][np.isfinite(self.curves[metric])]
        return float(finite[-1]) if finite.size else None


def train_seed(seed: int, cfg: Config, batch: dict[str, np.ndarray], task: Task) -> SeedRun:
    """Train seed `seed` to its stop: the handout's loop, nn.Module + autograd + optim.SGD, full
    batch. batch: numpy arrays, x (B, 1, H, W), y (B,) and, for 3.2, widths (B,).

    Iteration t evaluates the weights after t updates; its forward pass also gives update t + 1's
    gradient. The run stops at the first iteration where the task says done, at a non-finite loss
    (diverged; or above diverge_factor times the initial loss when that is set), or at the cap."""
    torch.set_num_threads(TORCH_THREADS)  # the same arithmetic in every process, whatever the seeds
    data = {k: torch.tensor(v, dtype=getattr(torch, cfg.dtype), device=cfg.device) for k, v in batch.items()}
    net = initial_model(seed, cfg)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr)
    run, curves, initial = SeedRun(seed), {}, None
    last_log = time.perf_counter()
    for t in range(cfg.max_iters + 1):
        logits, widths = net(data["x"])
        metrics = task(logits, widths, data, cfg)
        all_finite = torch.isfinite(logits).all().to(logits.dtype)  # 1.0 when every logit is finite
        *numbers, logits_finite = torch.stack([*metrics.values(), all_finite]).tolist()  # one sync
        values = dict(zip(metrics, numbers, strict=True))
        finite = logits_finite == 1 and all(math.isfinite(v) for v in numbers)
        for k, v in values.items():
            curves.setdefault(k, []).append(v if finite else float("nan"))
        initial = values["objective"] if initial is None else initial
        run.diverged = not finite or (cfg.diverge_factor is not None
                                      and values["objective"] > cfg.diverge_factor * initial)
        run.reached = not run.diverged and values["done"] == 1
        if run.diverged or run.reached or t == cfg.max_iters:
            break
        opt.zero_grad()
        metrics["objective"].backward()
        opt.step()
        if cfg.log and time.perf_counter() - last_log > PROGRESS_SECONDS:
            last_log = time.perf_counter()
            print(f"  {cfg.label}, seed {seed}: iteration {t + 1}", flush=True)
    run.curves = {k: np.array(v) for k, v in curves.items()}
    run.params = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return run


@dataclass(frozen=True)
class Study:
    """Seeds to train with one config, data and task."""

    seeds: list[int]
    cfg: Config
    batch: dict[str, np.ndarray]
    task: Task


def run_studies(studies: dict[str, Study], workers: int) -> dict[str, list[SeedRun]]:
    """Train every seed of every study, one seed at a time in each of `workers` single-thread
    processes (spawned: safe with torch), the next run going to whichever process is free; the
    studies' runs are interleaved (seed 0 of each study, then seed 1, ...) so that no study's long
    runs are left for the end. A seed's run is the same in any process. Results in seed order."""
    order = sorted(((i, name) for name, s in studies.items() for i in range(len(s.seeds))),
                   key=lambda job: job[0])
    jobs = [(studies[name].seeds[i], studies[name].cfg, studies[name].batch, studies[name].task)
            for i, name in order]
    with contextlib.ExitStack() as stack:
        if workers == 1 or any(s.cfg.device != "cpu" for s in studies.values()):
            finished = (train_seed(*job) for job in jobs)
        else:
            spawn = multiprocessing.get_context("spawn")
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=spawn))
            finished = pool.map(train_seed, *zip(*jobs, strict=True))
        out: dict[str, list[SeedRun]] = {name: [] for name in studies}
        for done, ((_, name), run) in enumerate(zip(order, finished, strict=True), start=1):
            out[name].append(run)
            cfg = studies[name].cfg
            if cfg.log:
                end = "done" if run.reached else "diverged" if run.diverged else "not done by the cap"
                print(f"  {cfg.label}, seed {run.seed}: {end} at iteration {run.stop} "
                      f"({done}/{len(jobs)} runs)", flush=True)
    return out


# ---------------------------------------------------------------------------------------------
# The typical run, the held-out control and what the conv2 maps respond to.
# ---------------------------------------------------------------------------------------------


def typical_run(runs: list[SeedRun]) -> tuple[SeedRun, float]:
    """The run of part 2's typical seed (the median iteration count) and its percentile."""
    seed, percentile = typical_seed([r.seed for r in runs], [r.iterations for r in runs])
    return next(r for r in runs if r.seed == seed), percentile


def holdout_split(labels: np.ndarray, n_test: int) -> np.ndarray:
    """Sorted indices of n_test held-out images, half from each class, drawn by a fixed generator."""
    counts = [int((labels == c).sum()) for c in (0, 1)]
    if n_test % 2 or n_test // 2 >= min(counts):
        raise InputError(f"--holdout {n_test}: must be even and leave images of both classes to "
                         f"train on (class counts {counts[0]} and {counts[1]})")
    rng = np.random.default_rng(HOLDOUT_SEED)
    picks = [rng.permutation(np.flatnonzero(labels == c))[:n_test // 2] for c in (0, 1)]
    return np.sort(np.concatenate(picks))


def trained_model(run: SeedRun, cfg: Config) -> ConvNet:
    """A ConvNet (CPU) holding the run's weights at its stop."""
    net = ConvNet(cfg.image, cfg.padding, cfg.width_head).to(getattr(torch, cfg.dtype))
    net.load_state_dict(run.params)
    return net


def conv2_class_means(net: ConvNet, x: torch.Tensor, labels: np.ndarray) -> dict[str, list[float]]:
    """Per class, the mean of each conv2 map (after ReLU) over that class's images and positions."""
    with torch.no_grad():
        maps = net.feature_maps(x)[1].mean((2, 3)).double().numpy()  # (B, 8)
    return {str(c): maps[labels == c].mean(0).tolist() for c in (0, 1) if (labels == c).any()}


# ---------------------------------------------------------------------------------------------
# Figures: the kernels and the feature maps of the typical run (curves: part 2's plot functions).
# ---------------------------------------------------------------------------------------------


def mosaic(ax: Any, maps: np.ndarray, cols: int, cmap: str, vmin: float, vmax: float) -> Any:
    """Tile maps (N, h, w) on ax, `cols` per row, white gaps between tiles; numbered from 1."""
    n, h, w = maps.shape
    rows = -(-n // cols)
    tiles = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for k in range(n):
        r, c = divmod(k, cols)
        tiles[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = maps[k]
    image = ax.imshow(np.ma.masked_invalid(tiles), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([c * (w + 1) + (w - 1) / 2 for c in range(min(cols, n))],
                  [str(c + 1) for c in range(min(cols, n))], fontsize=6)
    ax.set_yticks([r * (h + 1) + (h - 1) / 2 for r in range(rows)],
                  [f"{r * cols + 1}-" for r in range(rows)], fontsize=6)
    ax.tick_params(length=0)
    return image


def plot_kernels(net: ConvNet, initial: ConvNet, title: str, path: Path) -> None:
    """The 16 conv1 kernels at the stop and their change from the initial weights (blue < 0 < red)."""
    import matplotlib.pyplot as plt

    after = net.conv1.weight.detach()[:, 0].double().numpy()
    change = after - initial.conv1.weight.detach()[:, 0].double().numpy()
    fig, axes = plt.subplots(2, 1, figsize=(7.5, 5.2), layout="constrained")
    for ax, values, label in ((axes[0], after, "after training"), (axes[1], change, "change from the start")):
        limit = float(np.abs(values).max()) or 1.0
        fig.colorbar(mosaic(ax, values, 8, "coolwarm", -limit, limit), ax=ax, shrink=0.9)
        ax.set_title(f"conv1 kernels {label}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_feature_maps(net: ConvNet, x: torch.Tensor, samples: list[tuple[int, str]], title: str,
                      path: Path) -> None:
    """Per (image index, caption): the image, its 16 conv1 maps and its 8 conv2 maps after ReLU."""
    import matplotlib.pyplot as plt

    with torch.no_grad():
        maps = [m.double().numpy() for m in net.feature_maps(x[[i for i, _ in samples]])]
    fig, axes = plt.subplots(len(samples), 3, figsize=(11, 2.3 * len(samples) + 0.5), squeeze=False,
                             width_ratios=(1, 3.6, 1.6), layout="constrained")
    for row, (index, caption) in enumerate(samples):
        axes[row, 0].imshow(x[index, 0].double().numpy(), cmap="gray_r", vmin=0, vmax=1)
        axes[row, 0].set(title=f"image {index}\n{caption}", xticks=[], yticks=[])
        axes[row, 0].title.set_fontsize(8)
        for layer, (m, cols) in enumerate(zip(maps, (8, 4), strict=True)):
            image = mosaic(axes[row, layer + 1], m[row], cols, "Greys", 0, float(m.max()) or 1.0)
            axes[row, layer + 1].set_title(f"conv{layer + 1} + ReLU, maps 1-{m.shape[1]}", fontsize=8)
            if row == len(samples) - 1:
                fig.colorbar(image, ax=axes[:, layer + 1], shrink=0.8, location="bottom", aspect=30)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def first_of_each_class(labels: np.ndarray, names: dict[int, str]) -> list[tuple[int, str]]:
    """(index, caption) of the first image of each class."""
    return [(int(np.flatnonzero(labels == c)[0]), f"label {c}: {name}") for c, name in names.items()
            if (labels == c).any()]


def curves_table(runs: list[SeedRun], metric: str) -> np.ndarray:
    """(T, S) metric of every seed, NaN after its stop; T = 5% past the last stop (within the cap)."""
    last = max(r.stop for r in runs)
    table = np.full((last + max(2, last // 20) + 1, len(runs)), np.nan)
    for s, r in enumerate(runs):
        table[:r.stop + 1, s] = r.curves[metric]
    return table


def typical_figures(run: SeedRun, percentile: float, cfg: Config, data: Dataset, out: Path, prefix: str,
                    question: str, classes: dict[int, str], stop_metric: str = "accuracy") -> list[str]:
    """Kernels and feature maps of the typical run; returns the file names."""
    net = trained_model(run, cfg)
    state = (f"seed {run.seed}, median of the seeds ({100 * percentile:.0f}% needed fewer), at the stop: "
             + describe(run.iterations, run.diverged_at, run.final(stop_metric)))
    plot_kernels(net, initial_model(run.seed, replace(cfg, device="cpu")), f"{question} {state}",
                 out / f"{prefix}_kernels.png")
    x = torch.tensor(data.images[:, None], dtype=getattr(torch, cfg.dtype))
    plot_feature_maps(net, x, first_of_each_class(data.labels, classes), f"{question} feature maps, {state}",
                      out / f"{prefix}_feature_maps.png")
    return [f"{prefix}_kernels.png", f"{prefix}_feature_maps.png"]


# ---------------------------------------------------------------------------------------------
# 3.1: train, plot, save, summarise.
# ---------------------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace, data: Dataset, **changes: Any) -> Config:
    """The Config of the flags, checked (image size, device) before anything is trained."""
    check_device(args.device)
    image = tuple(data.images.shape[1:])
    conv_sizes(image, args.padding)
    cfg = Config(image=image, padding=args.padding, lr=args.lr, lr_reg=getattr(args, "lr_reg", 0.001),
                 max_iters=args.max_iters, init_std=args.init_std, init_bias=args.init_bias,
                 diverge_factor=args.diverge_factor, dtype=args.dtype, device=args.device, log=not args.quiet)
    return replace(cfg, **changes)


def batch_of(data: Dataset, rows: np.ndarray | slice = slice(None)) -> dict[str, np.ndarray]:
    """The training batch: x (B, 1, H, W), y (B,) and, for the detection set, widths (B,)."""
    batch = {"x": data.images[rows][:, None], "y": data.labels[rows]}
    return batch | ({"widths": data.widths[rows]} if data.widths is not None else {})


def network_record(cfg: Config) -> dict[str, Any]:
    (h1, w1), (h2, w2) = conv_sizes(cfg.image, cfg.padding)
    net = ConvNet(cfg.image, cfg.padding, cfg.width_head)
    return {"image_size": list(cfg.image), "padding": cfg.padding, "pad_pixels": PADDINGS[cfg.padding],
            "kernel": KERNEL, "feature_maps": [[CHANNELS[0], h1, w1], [CHANNELS[1], h2, w2]],
            "fc_inputs": CHANNELS[1] * h2 * w2,
            "parameters": sum(p.numel() for p in net.parameters())}


def run_record(runs: list[SeedRun]) -> dict[str, Any]:
    """Per-seed stops and the summary (part 2's summarize_stops)."""
    iterations, diverged_at = [r.iterations for r in runs], [r.diverged_at for r in runs]
    return {"iterations": iterations, "summary": summarize_stops(iterations, diverged_at)}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_out_dir(args.out)
    data = load_dataset(args.data_dir, "line")
    cfg = config_from_args(args, data)
    test_rows = holdout_split(data.labels, args.holdout) if args.holdout else None
    use_headless_matplotlib()
    torch.set_num_threads(TORCH_THREADS)
    seeds = seed_list(args)
    studies = {"main": Study(seeds, cfg, batch_of(data), classification_task)}
    if test_rows is not None:
        train_rows = np.setdiff1d(np.arange(len(data.labels)), test_rows)
        studies["holdout"] = Study(seeds, replace(cfg, label="3.1 holdout"), batch_of(data, train_rows),
                                   classification_task)
    workers = min(args.workers, len(seeds))
    print(f"Part 3.1: {len(seeds)} seed(s) on {data.data_dir}/line ({data.provenance}), padding "
          f"{args.padding}, {args.dtype} on {args.device}, {workers} worker(s)", flush=True)
    started = time.perf_counter()
    trained = run_studies(studies, workers)
    seconds = time.perf_counter() - started
    runs = trained["main"]

    # 3.1: the typical run (median iterations), then the seeds together
    one, percentile = typical_run(runs)
    figures = ["part3_line_loss.png", "part3_line_accuracy.png"]
    plot_curve(one.curves["ce"], "cross-entropy loss", f"3.1 Line dataset: training loss, seed {one.seed}",
               args.out / figures[0], one.iterations, log_y=log_scale(one.curves["ce"]))
    plot_curve(100 * one.curves["accuracy"], "training accuracy (%)",
               f"3.1 Line dataset: training accuracy, seed {one.seed}", args.out / figures[1], one.iterations)
    figures += typical_figures(one, percentile, cfg, data, args.out, "part3_line", "3.1", LINE_CLASSES)
    if len(runs) > 1:
        ce = curves_table(runs, "ce")
        plot_share_stopped({"conv net, line dataset": [r.iterations for r in runs]}, len(ce) - 1,
                           f"3.1 Share of {len(runs)} seeds at 100% training accuracy",
                           "seeds at 100% accuracy (%)", args.out / "part3_line_share_reached.png")
        plot_median_band({"cross-entropy": ce}, "loss (median, IQR band)",
                         f"3.1 Training loss over {len(runs)} seeds", args.out / "part3_line_loss_band.png",
                         log_y=True)
        figures += ["part3_line_share_reached.png", "part3_line_loss_band.png"]

    x = torch.tensor(data.images[:, None], dtype=getattr(torch, cfg.dtype))
    results = results_header("part3_line.py", args, data) | run_record(runs)
    results |= {
        "iteration_rule": ITERATION_RULE,
        "network": network_record(cfg),
        "torch_threads": TORCH_THREADS,
        "workers": workers,
        "diverged": [r.diverged for r in runs],
        "diverged_at": [r.diverged_at for r in runs],
        "final_accuracy": [r.final("accuracy") for r in runs],
        "final_loss": [r.final("ce") for r in runs],
        "single": {"seed": one.seed, "percentile": percentile, "iterations": one.iterations,
                   "diverged_at": one.diverged_at, "final_accuracy": one.final("accuracy"),
                   "final_loss": one.final("ce")},
        "conv2_class_means": conv2_class_means(trained_model(one, cfg), x, data.labels),
        "holdout": None if test_rows is None else holdout_record(trained["holdout"], cfg, x, data, test_rows),
        "figures": figures,
    }
    write_json(args.out / RESULTS_FILE, results)
    print_summary(results, seconds, args.out)
    return 0


def holdout_record(runs: list[SeedRun], cfg: Config, x: torch.Tensor, data: Dataset,
                   test_rows: np.ndarray) -> dict[str, Any]:
    """Accuracy on the held-out images of each seed trained on the others (at its stop)."""
    y = torch.tensor(data.labels[test_rows])
    accuracy = []
    for r in runs:
        with torch.no_grad():
            logits = trained_model(r, cfg)(x[test_rows])[0].double()
        accuracy.append(float(((logits > 0) == (y == 1)).double().mean()))
    chance = max(float((y == 0).double().mean()), float((y == 1).double().mean()))
    return {"n_train": len(data.labels) - len(test_rows), "n_test": len(test_rows),
            "test_indices": test_rows.tolist(), "test_accuracy": accuracy,
            "iterations": [r.iterations for r in runs],
            "summary": {"median": float(np.median(accuracy)), "mean": float(np.mean(accuracy)),
                        "min": min(accuracy), "max": max(accuracy), "chance": chance}}


def summary_line(summary: dict[str, Any]) -> str:
    """One line on a distribution of iterations over seeds ("-" = among seeds that never stopped)."""
    line = (f"median {fmt(summary['median'])} (IQR [{fmt(summary['q1'])}, {fmt(summary['q3'])}]), "
            f"reached {summary['reached']}/{summary['n_seeds']}")
    return line + (f", {summary['diverged']} diverged" if summary["diverged"] else "")


def print_summary(results: dict[str, Any], seconds: float, out: Path) -> None:
    single = results["single"]
    print(f"\n3.1 line dataset, {len(results['seeds'])} seed(s), {seconds:.1f} s of training:")
    print(f"  typical seed {single['seed']}: "
          + describe(single["iterations"], single["diverged_at"], single["final_accuracy"]))
    print(f"  all seeds: {summary_line(results['summary'])}")
    if results["holdout"]:
        h = results["holdout"]
        print(f"  held out {h['n_test']} images (trained on {h['n_train']}): test accuracy median "
              f"{100 * h['summary']['median']:.1f}% (min {100 * h['summary']['min']:.1f}%, chance "
              f"{100 * h['summary']['chance']:.0f}%)")
    print(f"Wrote {len(results['figures'])} figures and {RESULTS_FILE} to {out}/")


if __name__ == "__main__":
    sys.exit(run_main(main))
