"""Part 3.1: the conv net of the handout's Figure 4 on the line dataset (question 3.1).

    python part3_line.py                   # the handout's run: one seed
    python part3_line.py --seeds 20 --holdout 16 --control-fc    # what `make all` runs

How fast does the conv net learn to tell "square left of the bar" (label 1) from "square right of
the bar" (label 0)? --holdout N: does it learn a rule (right on images it never saw) or memorise?
--control-fc: part 2's fully connected net (4 hidden ReLU units, same rule) on the same images.

Which file holds what: this file, 3.1's network (LineNet), its loss, and the training loop that
3.2 reuses; part3_detection.py, 3.2's network (the width head) and objective; part2_fc.py (its
fenced last section), what all parts share: data loader, seeds, processes, statistics, figures.

The network, for H x W images (the course's are 16 x 16; the size is read from the data):
    image (1, H, W) -> conv 7x7, 16 kernels -> ReLU -> conv 7x7, 8 kernels -> ReLU
                    -> flatten -> fully connected -> 1 logit -> sigmoid -> cross-entropy
Stride 1, no pooling; --padding valid (default): 16 -> 10 -> 4 pixels, the FC layer sees 128 inputs.
Training as in the handout: truncated normal weights (std 0.1), biases 0.1, plain full-batch SGD at
lr 0.1, stop at the first 100% training accuracy, at most 10,000 updates. Many seeds: the same loop,
one seed at a time in each of --workers processes (one torch thread each: a seed's numbers do not
depend on which process trains it or what else trains).

Outputs in --out: part3_line_curves.png (the median seed's loss and accuracy), _kernels.png,
_feature_maps.png, with --seeds > 1 _share_reached.png and _loss_band.png; part3_line.json.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from part1_loss_gradient import InputError, Parser, check_out_dir, run_main, save_figure, write_json
from part2_fc import (
    Config,
    Dataset,
    accuracy_fn,
    add_training_args,
    bounded_int,
    check_memory,
    config_from_args,
    describe,
    fmt,
    load_dataset,
    loss_fn,
    new_figure,
    plot_bands,
    plot_share_reached,
    pool_map,
    results_header,
    seed_generator,
    seed_list,
    start_workers,
    summarize_stops,
    train,
    truncated_normal,
    typical_seed,
    worker_count,
    worker_init,
)

import numpy as np
import torch
from torch import nn

KERNEL, CHANNELS = 7, (16, 8)  # Figure 4: 16 kernels of 7x7, then 8
PADDINGS = {"valid": 0, "same": KERNEL // 2}  # zeros added on each side before each convolution
LINE_CLASSES = {0: "square right of the bar", 1: "square left of the bar"}  # the data's meaning
HOLDOUT_SEED = 0  # draws the held-out images: the same split on every run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(prog="part3_line.py", description="Part 3.1: the conv net of Figure 4 on line images.")
    add_part3_args(parser)
    add = parser.add_argument
    add("--holdout", type=bounded_int(0, 10**6), default=0,
        help="hold out N distinct images (half of each class), report accuracy on them (0 = off)")
    add("--control-fc", action="store_true",
        help="control: part 2's fully connected net (4 ReLU units, cross-entropy) on the line images")
    return parser.parse_args(argv)


def add_part3_args(parser: Parser) -> None:
    """The flags of both part-3 scripts: the training flags plus the padding."""
    add_training_args(parser)
    parser.add_argument("--padding", choices=tuple(PADDINGS), default="valid",
                        help="valid: no padding, 16 -> 10 -> 4 pixels (default); same: keep the size")


# --- The network of Figure 4 and 3.1's objective: cross-entropy, stop at 100% accuracy.


class LineNet(nn.Module):
    """Figure 4. forward: images x (B, 1, H, W) -> logits (B,) (the sigmoid is in the loss)."""

    def __init__(self, image: tuple[int, int], padding: str = "valid") -> None:
        super().__init__()
        h2, w2 = conv_sizes(image, padding)[1]
        self.conv1 = nn.Conv2d(1, CHANNELS[0], KERNEL, padding=PADDINGS[padding])
        self.conv2 = nn.Conv2d(CHANNELS[0], CHANNELS[1], KERNEL, padding=PADDINGS[padding])
        self.fc = nn.Linear(CHANNELS[1] * h2 * w2, 1)

    def feature_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ReLU outputs of conv1 (B, 16, H1, W1) and conv2 (B, 8, H2, W2)."""
        a1 = torch.relu(self.conv1(x))
        return a1, torch.relu(self.conv2(a1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.feature_maps(x)[1].flatten(1)).squeeze(1)

    def objective(self, batch: dict[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
        """3.1: SGD minimises "objective", the mean cross-entropy; the run is done at 100% accuracy.
        Every value is a 0-d tensor (the loop reads them all at once)."""
        logits = self(batch["x"])
        ce, accuracy = loss_fn("ce", logits, batch["y"]), accuracy_fn(logits, batch["y"])
        return {"objective": ce, "ce": ce, "accuracy": accuracy, "done": accuracy == 1,
                "finite": torch.isfinite(logits).all()}


def conv_sizes(image: tuple[int, int], padding: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(H1, W1) of the conv1 maps and (H2, W2) of the conv2 maps; InputError when none is left."""
    shrink = KERNEL - 1 - 2 * PADDINGS[padding]
    h, w = image
    if min(h, w) - 2 * shrink < 1:
        raise InputError(f"--padding {padding}: {h}x{w} images are too small for two {KERNEL}x{KERNEL} "
                         f"convolutions (need {2 * shrink + 1}x{2 * shrink + 1}); use --padding same")
    return (h - shrink, w - shrink), (h - 2 * shrink, w - 2 * shrink)


def initial_model(net_class: type[LineNet], seed: int, image: tuple[int, int], cfg: Config) -> LineNet:
    """Seed `seed`'s network: truncated normal weights from the seed's own generator, drawn in the
    order the layers are declared (so 3.1 and 3.2 start the same trunk and classifier from one
    seed), every bias init_bias."""
    net = net_class(image, cfg.padding).to(cfg.torch_dtype)
    gen = seed_generator(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            param.copy_(truncated_normal(tuple(param.shape), cfg.init_std, gen) if name.endswith("weight")
                        else torch.full(param.shape, cfg.init_bias, dtype=torch.float64))
    return net.to(cfg.device)


@dataclass
class SeedRun:
    """One seed's run: its curves (metric -> (T,) values at iterations 0..stop), how it ended, and its
    weights at the stop (state_dict, on the CPU)."""

    seed: int
    curves: dict[str, np.ndarray]
    reached: bool
    diverged: bool
    params: dict[str, torch.Tensor] = field(repr=False)

    @property
    def stop(self) -> int:
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


def train_seed(seed: int, cfg: Config, batch: dict[str, np.ndarray], net_class: type[LineNet] = LineNet) -> SeedRun:
    """The handout's loop for one seed: forward, loss, backward, SGD step, until the stop.
    batch: x (B, 1, H, W), y (B,) (and widths (B,) for 3.2), numpy.

    Iteration t evaluates the weights after t updates; its forward pass also gives update t + 1's
    gradient. Stop at the first t where the objective says done, at a non-finite loss or logit
    (diverged; with cfg.diverge_factor also above that times the initial loss), or at the cap."""
    torch.set_num_threads(1)  # the same arithmetic in every process
    data = {k: torch.tensor(v, dtype=cfg.torch_dtype, device=cfg.device) for k, v in batch.items()}
    net = initial_model(net_class, seed, tuple(batch["x"].shape[2:]), cfg)
    curves: list[list[float]] = []
    for t in range(cfg.max_iters + 1):
        metrics = net.objective(data, cfg)
        values = torch.stack([v.to(cfg.torch_dtype) for v in metrics.values()]).tolist()  # one sync
        record = dict(zip(metrics, values, strict=True))
        diverged = not (record["finite"] and all(np.isfinite(values)))
        if cfg.diverge_factor is not None and t:
            diverged |= record["objective"] > cfg.diverge_factor * curves[0][0]
        curves.append(values)
        if diverged or record["done"] or t == cfg.max_iters:
            break
        net.zero_grad()
        metrics["objective"].backward()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(p.grad, alpha=-cfg.lr)  # p -= lr * dL/dp: plain gradient descent
    table = np.array(curves)
    table[~np.isfinite(table).all(1)] = np.nan  # a diverged iteration records nothing
    return SeedRun(seed, dict(zip(metrics, table.T, strict=True)), bool(record["done"]) and not diverged,
                   diverged, {k: v.detach().cpu().clone() for k, v in net.state_dict().items()})


def train_seeds(studies: dict[str, tuple[Config, dict[str, np.ndarray], type[LineNet]]], seeds: list[int],
                workers: int, log: bool) -> dict[str, list[SeedRun]]:
    """Every seed of every study (name -> (cfg, batch, network)), spread over `workers` processes,
    the studies interleaved (seed k of each study, then seed k + 1) so no study is left for last."""
    jobs = [(name, seed) for seed in seeds for name in studies]

    finished = []

    def done(index: int, run: SeedRun) -> None:
        finished.append(index)
        if log:
            end = "done" if run.reached else "diverged" if run.diverged else "not done by the cap"
            print(f"  {jobs[index][0]}, seed {run.seed}: {end} at iteration {run.stop} "
                  f"({len(finished)}/{len(jobs)} runs)", flush=True)

    runs = pool_map(train_seed, [(seed, *studies[name]) for name, seed in jobs], workers, done)
    return {name: [r for (n, _), r in zip(jobs, runs, strict=True) if n == name] for name in studies}


# --- 3.1: the typical run, the held-out images, the fully connected control.


def typical_run(runs: list[SeedRun]) -> tuple[SeedRun, float]:
    """The run at the lower median of the iterations (part 2's rule) and its percentile."""
    seed, percentile = typical_seed([r.seed for r in runs], [r.iterations for r in runs])
    return next(r for r in runs if r.seed == seed), percentile


def holdout_split(images: np.ndarray, labels: np.ndarray, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows): n_test distinct images, half from each class, drawn by a fixed
    generator; every copy of a held-out image (pixel-identical) leaves the training set too."""
    flat = images.reshape(len(images), -1)
    _, first, group = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    distinct = [first[np.flatnonzero(labels[first] == c)] for c in (0, 1)]
    if n_test % 2 or n_test // 2 >= min(len(d) for d in distinct):
        raise InputError(f"--holdout {n_test}: must be even and leave distinct images of both classes to "
                         f"train on ({len(distinct[0])} and {len(distinct[1])} distinct images)")
    rng = np.random.default_rng(HOLDOUT_SEED)
    test = np.sort(np.concatenate([rng.permutation(d)[:n_test // 2] for d in distinct]))
    train_rows = np.flatnonzero(~np.isin(group.ravel(), group.ravel()[test]))
    return train_rows, test


def trained_model(run: SeedRun, cfg: Config, image: tuple[int, int], net_class: type[LineNet] = LineNet) -> LineNet:
    """The network (CPU) holding the run's weights at its stop."""
    net = net_class(image, cfg.padding).to(cfg.torch_dtype)
    net.load_state_dict(run.params)
    return net


def holdout_record(runs: list[SeedRun], cfg: Config, data: Dataset, rows: tuple[np.ndarray, np.ndarray]) -> dict:
    """Accuracy on the held-out images of each seed trained on the rest (at its stop)."""
    train_rows, test = rows
    x = torch.tensor(data.images[test][:, None], dtype=cfg.torch_dtype)
    y = torch.tensor(data.labels[test], dtype=cfg.torch_dtype)
    image = data.images.shape[1:]
    with torch.no_grad():
        accuracy = [float(accuracy_fn(trained_model(r, cfg, image)(x), y)) for r in runs]
    chance = max(float(y.mean()), 1 - float(y.mean()))
    return {"n_train": len(train_rows), "n_test": len(test), "test_indices": test.tolist(),
            "dropped_duplicates": len(data.labels) - len(train_rows) - len(test), "test_accuracy": accuracy,
            "iterations": [r.iterations for r in runs],
            "summary": {"median": float(np.median(accuracy)), "mean": float(np.mean(accuracy)),
                        "min": min(accuracy), "max": max(accuracy), "chance": chance}}


def fc_control(data: Dataset, seeds: list[int], cfg: Config) -> dict[str, Any]:
    """Part 2's network (4 ReLU hidden units, cross-entropy, the same stop rule), all seeds stacked,
    on the line images flattened: separates the conv net from the data (the conv net cannot run on
    part 2's 4x4 images: two 7x7 convolutions need at least 13x13)."""
    x = torch.tensor(data.images.reshape(len(data.images), -1), dtype=cfg.torch_dtype, device=cfg.device)
    y = torch.tensor(data.labels, dtype=cfg.torch_dtype, device=cfg.device)
    runs = train("relu-ce", [(seed, cfg.lr) for seed in seeds], x, y, replace(cfg, hidden=4))["runs"]
    its = [r["iterations"] for r in runs]
    return {"network": f"{x.shape[1]}-4-1 fully connected, ReLU, cross-entropy", "iterations": its,
            "summary": summarize_stops(its, [r["diverged_at"] for r in runs])}


def prepare(args: argparse.Namespace, name: str) -> tuple[Config, Dataset, list[int]]:
    """The checked config, dataset (its images fit the network) and seeds of a part-3 run."""
    cfg, data = config_from_args(args), load_dataset(args.data_dir, name)
    conv_sizes(tuple(data.images.shape[1:]), args.padding)
    return cfg, data, seed_list(args)


def check_run(args: argparse.Namespace, cfg: Config, runs: int, floats_per_iteration: int) -> None:
    """Before the first iteration: the processes to use, the memory the curves need, the output folder."""
    args.workers = worker_count(args.workers, runs, cfg)
    check_memory(runs, 8 * floats_per_iteration * args.max_iters + 4 * 30_000, "--seeds/--max-iters")
    check_out_dir(args.out)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg, data, seeds = prepare(args, "line")
    image = tuple(data.images.shape[1:])
    rows = holdout_split(data.images, data.labels, args.holdout) if args.holdout else None
    studies = {"3.1": (cfg, batch_of(data), LineNet)}
    if rows is not None:
        studies["3.1 holdout"] = (cfg, batch_of(data, rows[0]), LineNet)
    check_run(args, cfg, len(seeds) * len(studies), 8)
    print(f"Part 3.1: {len(seeds)} seed(s) on {data.describe()}, padding {args.padding}, {args.dtype} on "
          f"{args.device}, {args.workers} process(es)", flush=True)
    with figure_workers(cfg) as drawers:  # they load matplotlib while the seeds train
        trained = train_seeds(studies, seeds, args.workers, cfg.log)
        runs = trained["3.1"]
        one, percentile = typical_run(runs)
        results = results_header("part3_line.py", args, data, cfg) | run_record(runs) | {
            "network": network_record(cfg, image), "workers": args.workers,
            "single": single_record(one, percentile, "accuracy", "ce"),
            "conv2_class_means": conv2_class_means(trained_model(one, cfg, image), data),
            "holdout": None if rows is None else holdout_record(trained["3.1 holdout"], cfg, data, rows),
            "controls": {"fc": fc_control(data, seeds, cfg) if args.control_fc else None},
        }
        write_json(args.out / "part3_line.json", results | {"figures": []})  # no figure can lose the numbers
        figures = typical_figures(one, cfg, data, "part3_line", "3.1",
                                  {"curves": [("ce", "cross-entropy loss"), ("accuracy", "accuracy (%)")]})
        figures += many_figures(runs, {"cross-entropy loss": "ce"}, "part3_line", "3.1",
                                {"conv net, line images": [r.iterations for r in runs]})
        results["figures"] = draw_figures(args.out, figures, drawers)
    write_json(args.out / "part3_line.json", results)
    print_summary(results, args.out, "part3_line.json")
    return 0


# --- Records and figures (3.2 uses them too).


def batch_of(data: Dataset, rows: np.ndarray | slice = slice(None)) -> dict[str, np.ndarray]:
    """The training batch: x (B, 1, H, W), y (B,) and, for the detection set, widths (B,)."""
    batch = {"x": data.images[rows][:, None], "y": data.labels[rows]}
    return batch | ({"widths": data.widths[rows]} if data.widths is not None else {})


def run_record(runs: list[SeedRun]) -> dict[str, Any]:
    """Per-seed stops and finals, and the summary over seeds."""
    its, div = [r.iterations for r in runs], [r.diverged_at for r in runs]
    return {"iterations": its, "diverged_at": div, "diverged": [d is not None for d in div],
            "final_accuracy": [r.final("accuracy") for r in runs], "final_loss": [r.final("ce") for r in runs],
            "summary": summarize_stops(its, div)}


def single_record(run: SeedRun, percentile: float, *metrics: str) -> dict[str, Any]:
    return {"seed": run.seed, "percentile": percentile, "iterations": run.iterations,
            "diverged_at": run.diverged_at} | {f"final_{m}": run.final(m) for m in metrics}


def network_record(cfg: Config, image: tuple[int, int], net_class: type[LineNet] = LineNet) -> dict[str, Any]:
    (h1, w1), (h2, w2) = conv_sizes(image, cfg.padding)
    return {"image_size": list(image), "padding": cfg.padding, "pad_pixels": PADDINGS[cfg.padding],
            "kernel": KERNEL, "feature_maps": [[CHANNELS[0], h1, w1], [CHANNELS[1], h2, w2]],
            "fc_inputs": CHANNELS[1] * h2 * w2,
            "parameters": sum(p.numel() for p in net_class(image, cfg.padding).parameters())}


def conv2_class_means(net: LineNet, data: Dataset) -> dict[str, list[float]]:
    """Per class, the mean of each conv2 map (after ReLU) over that class's images and positions."""
    x = torch.tensor(data.images[:, None], dtype=next(net.parameters()).dtype)
    with torch.no_grad():
        maps = net.feature_maps(x)[1].mean((2, 3)).double().numpy()  # (B, 8)
    means = {str(c): maps[data.labels == c].mean(0) for c in (0, 1) if (data.labels == c).any()}
    return {c: [float(v) if np.isfinite(v) else None for v in m] for c, m in means.items()}


Figure = tuple[str, Callable[..., Any], tuple]  # file name, draw function, its arguments


def figure_workers(cfg: Config) -> Any:
    """Two processes that draw the figures, started before training so that they load matplotlib
    meanwhile (a figure costs a good part of a second); on CUDA none: figures are drawn here."""
    return start_workers(1 if cfg.device == "cuda" else min(2, os.cpu_count() or 1), figure_worker_init)


def figure_worker_init() -> None:
    worker_init()
    import matplotlib.pyplot as plt

    plt.figure().suptitle("warm-up: fonts loaded once").figure.savefig(io.BytesIO(), format="png")
    plt.close("all")


def draw_figures(out: Path, figures: list[Figure], drawers: Any) -> list[str]:
    """Draw and save the figures with the figure_workers; returns the names of those drawn."""
    drawn = pool_map(draw_one, [(out / name, fn, args) for name, fn, args in figures], 1, pool=drawers)
    return [name for (name, _, _), ok in zip(figures, drawn, strict=True) if ok]


def draw_one(path: Path, draw: Callable[..., Any], args: tuple) -> bool:
    """save_figure, looked up when called (a worker gets this function by name)."""
    return save_figure(path, draw, *args)


def typical_figures(run: SeedRun, cfg: Config, data: Dataset, prefix: str, question: str,
                    curves: dict[str, list[tuple[str, str]]], net_class: type[LineNet] = LineNet,
                    classes: dict[int, str] = LINE_CLASSES) -> list[Figure]:
    """The typical run's curves (per name, two panels: (metric, axis label)), its conv1 kernels and
    its feature maps."""
    net = trained_model(run, cfg, data.images.shape[1:], net_class)
    start = initial_model(net_class, run.seed, data.images.shape[1:], replace(cfg, device="cpu"))
    state = f"seed {run.seed} (median seed), " + describe(run.iterations, run.diverged_at, None).split(",")[0]
    samples = [(int(np.flatnonzero(data.labels == c)[0]), f"label {c}: {name}") for c, name in classes.items()
               if (data.labels == c).any()]
    return [(f"{prefix}_{name}.png", plot_curves, (run, panels, f"{question}: {state}"))
            for name, panels in curves.items()] + [
        (f"{prefix}_kernels.png", plot_kernels, (net, start, f"{question}: conv1 kernels, {state}")),
        (f"{prefix}_feature_maps.png", plot_feature_maps, (net, data, samples, f"{question}: feature maps, {state}"))]


def many_figures(runs: list[SeedRun], losses: dict[str, str], prefix: str, question: str,
                 stops: dict[str, list[int | None]]) -> list[Figure]:
    """With more than one seed: the share of seeds at the stop, and the loss bands over seeds."""
    if len(runs) < 2:
        return []
    last = max(r.stop for r in runs)
    # per loss, (3, T) quartiles over seeds at each iteration; a stopped run holds its last value
    with warnings.catch_warnings():  # iterations where every seed's loss is NaN (diverged) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        bands = {label: (np.nanquantile([np.pad(r.curves[metric], (0, last - r.stop), mode="edge") for r in runs],
                                        [0.25, 0.5, 0.75], axis=0), 1) for label, metric in losses.items()}
    return [(f"{prefix}_share_reached.png", plot_share_reached,
             (stops, last, f"{question}: share of {len(runs)} seeds at 100%")),
            (f"{prefix}_loss_band.png", plot_bands,
             (bands, f"{question}: training loss over {len(runs)} seeds (median, IQR)", "loss"))]


def plot_curves(run: SeedRun, panels: list[tuple[str, str]], title: str) -> Any:
    """Two metrics of one run against iteration, side by side; losses on a log axis; the stop marked."""
    fig, axes = new_figure(2)
    for ax, (metric, ylabel) in zip(axes, panels, strict=True):
        values = run.curves[metric] * (100 if "%" in ylabel else 1)
        ax.plot(np.arange(len(values)), values, lw=1.4)
        ax.set(xlabel="iteration (SGD updates)", ylabel=ylabel, yscale="linear" if "%" in ylabel else "log")
        if run.iterations is not None:
            ax.axvline(run.iterations, color="tab:red", ls="--", lw=1)
    fig.suptitle(title)
    return fig


def mosaic(ax: Any, maps: np.ndarray, cols: int, cmap: str, vmin: float, vmax: float) -> Any:
    """Tile maps (N, h, w), `cols` per row, separated by grey gaps; columns numbered from 1."""
    import matplotlib

    n, h, w = maps.shape
    rows = -(-n // cols)
    tiles = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for k in range(n):
        r, c = divmod(k, cols)
        tiles[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = maps[k]
    colours = matplotlib.colormaps[cmap].with_extremes(bad="#9aa5b1")
    image = ax.imshow(np.ma.masked_invalid(tiles), cmap=colours, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([c * (w + 1) + (w - 1) / 2 for c in range(min(cols, n))], [str(c + 1) for c in range(min(cols, n))])
    ax.set_yticks([r * (h + 1) + (h - 1) / 2 for r in range(rows)], [f"{r * cols + 1}-" for r in range(rows)])
    ax.tick_params(length=0, labelsize=8)
    return image


def plot_kernels(net: LineNet, start: LineNet, title: str) -> Any:
    """The 16 conv1 kernels at the stop, and their change from the start (blue < 0 < red)."""
    after = net.conv1.weight.detach()[:, 0].double().numpy()
    change = after - start.conv1.weight.detach()[:, 0].double().numpy()
    fig, axes = new_figure(2)
    for ax, values, label in ((axes[0], after, "at the stop"), (axes[1], change, "change from the start")):
        limit = float(np.abs(values).max()) or 1.0
        fig.colorbar(mosaic(ax, values, 4, "coolwarm", -limit, limit), ax=ax, shrink=0.9)
        ax.set_title(f"conv1 kernels {label}")
    fig.suptitle(title)
    return fig


def plot_feature_maps(net: LineNet, data: Dataset, samples: list[tuple[int, str]], title: str) -> Any:
    """Per sample image: the image, its 16 conv1 maps and its 8 conv2 maps after ReLU."""
    import matplotlib.pyplot as plt

    x = torch.tensor(data.images[[i for i, _ in samples]][:, None], dtype=next(net.parameters()).dtype)
    with torch.no_grad():
        maps = [m.double().numpy() for m in net.feature_maps(x)]
    fig, axes = plt.subplots(len(samples), 3, figsize=(6.5, 2.2 * len(samples) + 0.6), squeeze=False,
                             width_ratios=(1, 2.2, 1.2), layout="constrained")
    for row, (index, caption) in enumerate(samples):
        axes[row, 0].imshow(x[row, 0].double().numpy(), cmap="gray_r", vmin=0, vmax=1)
        axes[row, 0].set(xticks=[], yticks=[])
        axes[row, 0].set_title(f"image {index}\n{caption}", fontsize=8)
        for layer, (m, cols) in enumerate(zip(maps, (4, 4), strict=True)):
            shown = mosaic(axes[row, layer + 1], m[row], cols, "Greys", 0, float(m.max()) or 1.0)
            axes[row, layer + 1].set_title(f"conv{layer + 1} + ReLU, maps 1-{m.shape[1]}", fontsize=8)
        if row == len(samples) - 1:
            fig.colorbar(shown, ax=axes[:, 1:], shrink=0.6, location="bottom", aspect=40)
    fig.suptitle(title, fontsize=9)
    return fig


def summary_line(summary: dict[str, Any]) -> str:
    """One line on a distribution of iterations over seeds ("-" = among seeds that never stopped)."""
    line = (f"median {fmt(summary['median'])} (IQR {fmt(summary['q1'])}-{fmt(summary['q3'])}), "
            f"reached {summary['reached']}/{summary['n_seeds']}")
    return line + (f", {summary['diverged']} diverged" if summary["diverged"] else "")


def print_summary(results: dict[str, Any], out: Path, name: str) -> None:
    one = results["single"]
    print(f"\n3.1 line dataset, {len(results['seeds'])} seed(s): median seed {one['seed']}: "
          + describe(one["iterations"], one["diverged_at"], one["final_accuracy"]))
    print(f"  all seeds: {summary_line(results['summary'])}")
    if results["holdout"]:
        h = results["holdout"]
        print(f"  {h['n_test']} held-out images (trained on {h['n_train']}): accuracy median "
              f"{100 * h['summary']['median']:.1f}% (min {100 * h['summary']['min']:.1f}%, chance "
              f"{100 * h['summary']['chance']:.0f}%)")
    if results["controls"]["fc"]:
        print(f"  control, part 2's FC net on these images: {summary_line(results['controls']['fc']['summary'])}")
    print(f"Wrote {name} and {len(results['figures'])} figure(s) to {out}/")


if __name__ == "__main__":
    sys.exit(run_main(main))
