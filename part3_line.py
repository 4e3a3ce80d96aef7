"""Part 3.1: the conv net of the handout's Figure 4 on the line dataset (question 3.1).

    python part3_line.py                   # the handout's run: one seed
    python part3_line.py --seeds 20 --holdout 16 --control-fc    # what `make all` runs

How fast does the conv net learn to tell "square left of the bar" (label 1) from "square right of
the bar" (label 0)? --holdout N: does it learn a rule (right on images it never saw) or memorise?
--control-fc: why is it faster than part 2, and why does a conv net suit these images? Part 2's
fully connected net on the same images, as is, rescaled to part 2's input scale (also with the labels
shuffled: no rule to learn), and grown to the conv net's size; each also trained on the held-out split
(see the 3.1 controls section).

The network, for H x W images (the course's are 16 x 16; the size is read from the data):
    image (1, H, W) -> conv 7x7, 16 kernels -> ReLU -> conv 7x7, 8 kernels -> ReLU
                    -> flatten -> fully connected -> 1 logit -> sigmoid -> cross-entropy
Stride 1, no pooling; --padding valid (default): 16 -> 10 -> 4 pixels, the FC layer sees 128 inputs.
Training as in the handout: truncated normal weights (std 0.1), biases 0.1, plain full-batch SGD at
lr 0.1, stop at the first 100% training accuracy, at most 10,000 updates. Many seeds: the same loop,
one seed at a time in each of --workers processes (one torch thread each: a seed's numbers do not
depend on which process trains it or what else trains).

Read top to bottom: the network, the training loop (forward, loss, backward, SGD step, the stop
rule) and `main`; then the 3.1 study (held-out images, the fully connected controls); then the
records and figures. What all parts share (flags, data loader, processes, statistics) is part2_fc.py's.

Outputs in --out: part3_line.json (written first: no figure can lose it), part3_line_curves.png
(the median seed's loss and accuracy), _kernels.png, _feature_maps.png, with --seeds > 1
_share_reached.png and _loss_band.png.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from part2_fc import (
    FIGURE_SIZE,
    PROGRESS_SECONDS,
    Config,
    Dataset,
    FCNet,
    InputError,
    Parser,
    accuracy_fn,
    add_training_args,
    check_resources,
    config_from_args,
    fmt,
    initial_weights,
    load_dataset,
    loss_fn,
    plot_bands,
    plot_share_reached,
    results_header,
    run_jobs,
    run_main,
    save_figure,
    seed_list,
    summarize_stops,
    truncated_normal,
    typical_seed,
    write_json,
)
from part2_fc import train as train_fc

import numpy as np
import torch
from torch import nn

KERNEL, CHANNELS = 7, (16, 8)  # Figure 4: 16 kernels of 7x7, then 8
PADDINGS = {"valid": 0, "same": KERNEL // 2}  # zeros added on each side before each convolution
LINE_CLASSES = {0: "square right of the bar", 1: "square left of the bar"}  # the data's meaning


# ===== 3.1: the network of Figure 4, cross-entropy, plain SGD until 100% accuracy =====


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


def conv_sizes(image: tuple[int, int], padding: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(H1, W1) of the conv1 maps and (H2, W2) of the conv2 maps; InputError when none is left."""
    shrink = KERNEL - 1 - 2 * PADDINGS[padding]
    h, w = image
    if min(h, w) - 2 * shrink < 1:
        raise InputError(f"--padding {padding}: {h}x{w} images are too small for two {KERNEL}x{KERNEL} "
                         f"convolutions (need {2 * shrink + 1}x{2 * shrink + 1}); use --padding same")
    return (h - shrink, w - shrink), (h - 2 * shrink, w - 2 * shrink)


def initial_model(net_class: type[LineNet], seed: int, image: tuple[int, int], cfg: Config) -> LineNet:
    """Seed `seed`'s network on cfg.device in cfg.dtype: truncated normal weights (std init_std) from
    the seed's own generator, drawn in the order the layers are declared (so 3.1 and 3.2 start the
    same trunk and classifier from one seed), every bias init_bias. The draws are float64 on the CPU
    (the generator's device), so a seed starts the same in float32 and float64 and on every device."""
    with torch.device(cfg.device):
        net = net_class(image, cfg.padding).to(cfg.dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad(), torch.device("cpu"):
        for name, param in net.named_parameters():
            param.copy_(truncated_normal(tuple(param.shape), cfg.init_std, gen) if name.endswith("weight")
                        else torch.full(param.shape, cfg.init_bias, dtype=torch.float64))  # beyond float32: inf
    return net


@dataclass(frozen=True)
class SeedRun:
    """One seed's run, numpy and plain numbers only (it crosses processes as vars(run)).
    loss, accuracy: (T,) at iterations 0..stop (NaN at a non-finite iteration); final_*: the last
    finite ones (None if none); weights: the parameters at the stop (name -> array, float64)."""

    seed: int
    iterations: int | None  # SGD updates before the first 100% training accuracy; None = not reached
    diverged_at: int | None  # the iteration whose loss was non-finite (or above the opt-in factor)
    loss: np.ndarray
    accuracy: np.ndarray
    final_loss: float | None
    final_accuracy: float | None
    weights: dict[str, np.ndarray]


def train_seed(seed: int, x: np.ndarray, y: np.ndarray, cfg: Config) -> dict[str, Any]:
    """The handout's loop for one seed on images x (B, 1, H, W) with labels y (B,): forward, loss,
    backward, SGD step. Iteration t evaluates the weights after t updates; the run stops at its first
    100% training accuracy (iterations = t), at a non-finite loss (diverged_at = t; opt-in: a loss
    above diverge_factor x the first), or at the cap. Returns vars(SeedRun): plain values only."""
    x, y = (torch.tensor(v, dtype=cfg.dtype, device=cfg.device) for v in (x, y))
    net = initial_model(LineNet, seed, tuple(x.shape[2:]), cfg)
    curve: list[list[float]] = []  # per iteration [loss, accuracy]
    last_print = time.perf_counter()
    for t in range(cfg.max_iters + 1):
        logits = net(x)  # (B,)
        loss, accuracy = loss_fn("ce", logits, y), accuracy_fn(logits, y)  # 0-d each
        loss_now, accuracy_now = torch.stack([loss.detach(), accuracy]).tolist()  # one read from the device
        curve.append([loss_now, accuracy_now])
        diverged = not math.isfinite(loss_now) or (
            cfg.diverge_factor is not None and t > 0 and loss_now > cfg.diverge_factor * curve[0][0])
        if accuracy_now == 1 or diverged or t == cfg.max_iters:  # the handout's stop rule, plus safety
            break
        loss.backward()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(p.grad, alpha=-cfg.lr)  # p -= lr * dL/dp, as optim.SGD computes it (one fused multiply-add)
                p.grad = None
        if cfg.log and time.perf_counter() - last_print > PROGRESS_SECONDS:  # a long seed says where it is
            last_print = time.perf_counter()
            print(f"  seed {seed}: iteration {t}, loss {loss_now:.4g}, accuracy {100 * accuracy_now:.1f}%", flush=True)
    reached = accuracy_now == 1 and not diverged
    table = np.array(curve)  # (T, 2): loss and accuracy at iterations 0..t
    table[~np.isfinite(table[:, 0])] = np.nan  # a non-finite iteration records nothing
    finite = table[np.isfinite(table[:, 0])]
    final_loss, final_accuracy = finite[-1].tolist() if len(finite) else (None, None)
    weights = {name: value.detach().double().cpu().numpy() for name, value in net.state_dict().items()}
    return vars(SeedRun(seed, t if reached else None, t if diverged else None, table[:, 0], table[:, 1], final_loss,
                        final_accuracy, weights))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args, {"--holdout": (args.holdout, 0, 10**6)}, padding=args.padding)
    data = load_dataset(args.data_dir, "line")
    conv_sizes(tuple(data.images.shape[1:]), args.padding)  # the images fit the network
    split = holdout_split(data.images, data.labels, args.holdout) if args.holdout else None  # (train, test) rows
    random_data = load_dataset(args.data_dir, "random") if args.control_fc else None  # part 2's input scale
    seeds = seed_list(args.first_seed, args.seeds)
    x, y = data.images[:, None], data.labels
    jobs = [(seed, x, y, cfg) for seed in seeds]
    if split is not None:  # the same seeds again, trained on the images not held out
        train_rows, _ = split
        jobs += [(seed, x[train_rows], y[train_rows], cfg) for seed in seeds]
    if args.control_half_lr:  # the same seeds at half the rate: do the loss's rises come from steps too large?
        jobs += [(seed, x, y, replace(cfg, lr=cfg.lr / 2)) for seed in seeds]
    args.workers = check_resources(args, cfg, len(jobs), 1, 16 * args.max_iters + 8 * x.size * (1 + sum(CHANNELS)))
    print(f"Part 3.1: {len(seeds)} seed(s) on {data.describe}, padding {args.padding}, {args.dtype} on {args.device}, "
          f"{args.workers} process(es)", flush=True)
    done = partial(print_seed_done, len(seeds)) if cfg.log and len(jobs) > 1 else lambda index, result: None
    trained = [SeedRun(**result) for result in run_jobs(train_seed, jobs, args.workers, done)]
    n = len(seeds)  # all images; the held-out split's training rows; half the rate
    runs, held_runs = trained[:n], trained[n:2 * n] if split is not None else []
    half_runs = trained[len(trained) - n:] if args.control_half_lr else []
    half_cfg = replace(cfg, lr=cfg.lr / 2)
    replays: dict[str, dict[int, dict[str, list[float | None]]]] = {"full": {}, "half": {}}
    if len(seeds) > 1 and half_runs:  # the half-rate control, many seeds: every run replayed, at both rates
        studies = {"full": (runs, cfg), "half": (half_runs, half_cfg)}
        replay_jobs = [(r.seed, x, y, c, replay_steps(r)) for rs, c in studies.values() for r in rs]
        if cfg.log:
            print(f"  replaying {len(replay_jobs)} run(s) for the rate x sharpness of every step", flush=True)
        done_replays = iter(run_jobs(replay_job, replay_jobs, args.workers))
        replays = {name: {r.seed: next(done_replays) for r in rs} for name, (rs, _) in studies.items()}
    study = study_record(runs, cfg, data, replays["full"])
    results = results_header("part3_line.py", args, data, cfg) | study | {
        "overshoot": {name: overshoot_counts(rs, [replays[name][r.seed]["sharpness"] for r in rs])
                      for name, rs in (("full", runs), ("half", half_runs))} if replays["full"] else None,
        "workers": args.workers, "holdout": None if split is None else holdout_record(held_runs, split, data, cfg),
        "half_lr": None if not half_runs else half_lr_record(half_runs, half_cfg, data, study["single"]["seed"],
                                                               replays["half"])}
    results |= fc_controls(data, random_data, split, seeds, cfg, results["network"]["parameters"]) if random_data \
        else {"controls": {"fc": None}, "comparison": None}
    write_json(args.out / "part3_line.json", results | {"figures": []})  # no figure can lose the numbers
    results["figures"] = draw_figures(results, runs, data, cfg, args.out)
    write_json(args.out / "part3_line.json", results)
    print_summary(results, args.out)
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(prog="part3_line.py", description="Part 3.1: the conv net of Figure 4 on line images.")
    add_part3_args(parser)
    add = parser.add_argument
    add("--holdout", type=int, default=0,
        help="hold out N distinct images (half of each class), report accuracy on them (0 = off)")
    add("--control-fc", action="store_true",
        help="controls: part 2's fully connected net (ReLU, cross-entropy) on the line images: as is, rescaled "
             "to part 2's input scale (also with shuffled labels), and with as many parameters as the conv net "
             "(each also on --holdout)")
    add("--control-half-lr", action="store_true",
        help="control: the conv net again at half the rate (are the loss's rises steps that overshoot?)")
    return parser.parse_args(argv)


def add_part3_args(parser: Parser) -> None:
    """The flags of both part-3 scripts: the training flags plus the padding."""
    add_training_args(parser)
    parser.add_argument("--padding", choices=tuple(PADDINGS), default="valid",
                        help="valid: no padding, 16 -> 10 -> 4 pixels (default); same: keep the size")


def print_seed_done(n_seeds: int, index: int, result: dict[str, Any]) -> None:
    """A progress line as job `index` (a seed; from n_seeds on, a seed trained on the held-out split) ends."""
    print(f"  seed {result['seed']}{' (holdout split)' if index >= n_seeds else ''}: "
          + ending(result["iterations"], result["diverged_at"], len(result["loss"]) - 1), flush=True)


def ending(iterations: int | None, diverged_at: int | None, stop: int) -> str:
    """How a run ended, in words."""
    return (f"100% after {iterations} iterations" if iterations is not None else
            f"diverged at iteration {diverged_at}" if diverged_at is not None else f"not 100% by the cap ({stop})")


# ===== 3.1 study: the held-out images; the fully connected controls (data, input scale, size, architecture) =====

HOLDOUT_SEED = 0  # draws the held-out images: the same split on every run
SHUFFLE_SEED = 0  # with each training seed, draws its label permutation for "fc_rescaled_shuffled" (shuffled_labels)
FC_SETTING = "relu-ce"  # part 2's network of 2.4: 4 ReLU hidden units, cross-entropy


Split = tuple[np.ndarray, np.ndarray]  # rows of the dataset: (trained on, held out)


def holdout_split(images: np.ndarray, labels: np.ndarray, n_test: int) -> Split:
    """(train rows, test rows): n_test distinct images, half from each class, drawn by a fixed
    generator, held out; every copy of a held-out image (pixel-identical) leaves the training rows too."""
    flat = images.reshape(len(images), -1)
    _, first, group = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    distinct = [first[np.flatnonzero(labels[first] == c)] for c in (0, 1)]
    if n_test % 2 or n_test // 2 >= min(len(d) for d in distinct):
        raise InputError(f"--holdout {n_test}: must be even and leave distinct images of both classes to "
                         f"train on ({len(distinct[0])} and {len(distinct[1])} distinct images)")
    rng = np.random.default_rng(HOLDOUT_SEED)
    test = np.sort(np.concatenate([rng.permutation(d)[:n_test // 2] for d in distinct]))
    return np.flatnonzero(~np.isin(group.ravel(), group.ravel()[test])), test


def trained_model(run: SeedRun, image: tuple[int, int], cfg: Config) -> LineNet:
    """The network holding the run's weights at its stop, on cfg.device."""
    with torch.device(cfg.device):
        net = LineNet(image, cfg.padding).to(cfg.dtype)
    net.load_state_dict({k: torch.tensor(v, dtype=cfg.dtype, device=cfg.device) for k, v in run.weights.items()})
    return net


def holdout_record(runs: list[SeedRun], split: Split, data: Dataset, cfg: Config) -> dict[str, Any]:
    """Each seed trained on the split's training rows, measured at its stop on its held-out rows
    (a diverged seed: None)."""
    train_rows, test_rows = split
    x = torch.tensor(data.images[test_rows][:, None], dtype=cfg.dtype, device=cfg.device)
    y = torch.tensor(data.labels[test_rows], dtype=cfg.dtype, device=cfg.device)
    with torch.no_grad():
        accuracy = [None if r.diverged_at is not None else
                    accuracy_fn(trained_model(r, data.images.shape[1:], cfg)(x), y).item() for r in runs]
    return {"n_train": len(train_rows), "n_test": len(test_rows), "test_indices": test_rows.tolist(),
            "dropped_duplicates": len(data.labels) - len(train_rows) - len(test_rows),
            "iterations": [r.iterations for r in runs], "diverged_at": [r.diverged_at for r in runs],
            "test_accuracy": accuracy, "summary": accuracy_summary(accuracy, data.labels[test_rows])}


def accuracy_summary(accuracy: list[float | None], y_test: np.ndarray) -> dict[str, Any]:
    """Over seeds (diverged ones left out): median, mean, min, max; chance = the held-out majority share."""
    a = np.array([v for v in accuracy if v is not None])
    values = [float(f(a)) if a.size else None for f in (np.median, np.mean, np.min, np.max)]
    return dict(zip(("median", "mean", "min", "max"), values, strict=True)) | {
        "chance": float(max(y_test.mean(), 1 - y_test.mean())), "n": int(a.size)}


def mean_squared_norm(images: np.ndarray) -> float:
    """Mean over the images of ||x||^2 (the sum of squared pixels): the input scale the first layer sees."""
    return float((images.reshape(len(images), -1) ** 2).sum(1).mean())


def fc_parameters(n_in: int, hidden: int) -> int:
    """Weights and biases of an n_in-hidden-1 fully connected net."""
    return (n_in + 1) * hidden + hidden + 1


def fc_controls(data: Dataset, random_data: Dataset, split: Split | None, seeds: list[int], cfg: Config,
                conv: int) -> dict[str, Any]:
    """3.1 controlled. Part 2's network (ReLU hidden units, cross-entropy, the same stop rule, part 2's
    train) on the line images, flattened, four ways: "fc" as is (4 hidden units: the data changed,
    the network not); "fc_rescaled" with every image scaled so that the mean ||x||^2 is the random
    images' (the data changed at part 2's input scale); "fc_matched" with the hidden units that bring
    its parameter count closest to the conv net's `conv` (the architecture changed, not the size);
    "fc_rescaled_shuffled" as "fc_rescaled" but seed k's image i labelled labels[label_permutations[k][i]]
    (each seed its own permutation: the same 32/32 counts, no rule linking label to image, as part 2's
    random data; label_conflicts > 0 if one split pixel-identical images, putting 100% out of reach). With a split,
    each also trains on its training rows and is measured on its held-out rows, like the conv net: a conv
    net's local, shared kernels should carry over to unseen images better than FC weights per pixel."""
    x = data.images.reshape(len(data.images), -1)
    scale = {"line": mean_squared_norm(data.images), "random": mean_squared_norm(random_data.images)}
    factor = math.sqrt(scale["random"] / scale["line"])
    matched = min(range(1, conv + 1), key=lambda h: abs(fc_parameters(x.shape[1], h) - conv))
    variants = {"fc": (1.0, 4), "fc_rescaled": (factor, 4), "fc_matched": (1.0, matched)}  # (input factor, hidden)
    controls = {}
    for name, (f, hidden) in variants.items():
        controls[name] = fc_control(x * f, data.labels, split, seeds, replace(cfg, hidden=hidden)) | {
            "input_factor": f, "input_scale": mean_squared_norm(x * f), "labels_shuffled": False,
            "label_conflicts": label_conflicts(x, data.labels)}
    controls["fc_rescaled_shuffled"] = shuffled_control(x, data.labels, factor, split, seeds, replace(cfg, hidden=4))
    comparison = {"input_scale": scale | {"rescale_factor": factor},
                  "inputs": {"line": x.shape[1], "random": int(np.prod(random_data.images.shape[1:]))},
                  "parameters": {"conv": conv, "part2_fc": fc_parameters(int(np.prod(random_data.images.shape[1:])), 4)}
                  | {name: c["parameters"] for name, c in controls.items()},
                  "label_counts": {"line": data.record["label_counts"], "random": random_data.record["label_counts"]}}
    return {"controls": controls, "comparison": comparison}


def shuffled_control(x: np.ndarray, labels: np.ndarray, factor: float, split: Split | None, seeds: list[int],
                     cfg: Config) -> dict[str, Any]:
    """"fc_rescaled" with each seed's own shuffle of the labels (shuffled_labels): no rule left to
    learn, the same label counts; one fc_control per seed, their records joined seed by seed."""
    runs = []
    for seed in seeds:
        permutation, attempt = shuffled_labels(x, labels, seed)
        runs.append((permutation, attempt, fc_control(x * factor, labels[permutation], split, [seed], cfg)))
    first = runs[0][2]
    its = [i for _, _, r in runs for i in r["iterations"]]
    div = [d for _, _, r in runs for d in r["diverged_at"]]
    record = first | {"iterations": its, "diverged_at": div, "summary": summarize_stops(its, div),
                      "input_factor": factor, "input_scale": mean_squared_norm(x * factor), "labels_shuffled": True,
                      "label_conflicts": max(label_conflicts(x, labels[p]) for p, _, _ in runs),
                      "label_permutations": [p.tolist() for p, _, _ in runs],
                      "shuffle_attempts": [a for _, a, _ in runs]}
    if split is not None:
        held = {key: [v for _, _, r in runs for v in r["holdout"][key]]
                for key in ("iterations", "train_accuracy", "test_accuracy")}
        train_rows, test_rows = split
        # guessing without the test labels: always the training rows' majority label (a coin on a tie)
        guess = [float(np.mean(y[test_rows] == (y[train_rows].mean() > 0.5))) if y[train_rows].mean() != 0.5 else 0.5
                 for y in (labels[p] for p, _, _ in runs)]
        record["holdout"] = held | {"summary": accuracy_summary(held["test_accuracy"], labels[test_rows]) | {
            "chance": 0.5, "training_majority": float(np.mean(guess))}}  # chance: a coin (labels without a rule)
    return record


def shuffled_labels(x: np.ndarray, labels: np.ndarray, seed: int, tries: int = 100) -> tuple[np.ndarray, int]:
    """Training seed `seed`'s own permutation of the labels (B,) for images x (B, n_in): the first one
    drawn by np.random.default_rng((SHUFFLE_SEED, seed, attempt)), attempt = 0, 1, ..., that gives
    pixel-identical images one label, so that 100% stays reachable (the course's line images hold a
    duplicate pair). Returns (permutation, attempt); after `tries` attempts, the first permutation
    (its label_conflicts are recorded)."""
    for attempt in range(tries):
        permutation = np.random.default_rng((SHUFFLE_SEED, seed, attempt)).permutation(len(labels))
        if label_conflicts(x, labels[permutation]) == 0:
            return permutation, attempt
    return np.random.default_rng((SHUFFLE_SEED, seed, 0)).permutation(len(labels)), 0


def label_conflicts(x: np.ndarray, y: np.ndarray) -> int:
    """Groups of pixel-identical images x (B, n_in) whose labels y (B,) differ: each puts 100% training
    accuracy out of reach (shuffled labels can split a duplicate)."""
    _, group = np.unique(x, axis=0, return_inverse=True)
    group = group.ravel()
    return sum(len(np.unique(y[group == g])) > 1 for g in np.unique(group))


def fc_control(x: np.ndarray, y: np.ndarray, split: Split | None, seeds: list[int], cfg: Config) -> dict[str, Any]:
    """Part 2's train for `seeds` on x (B, n_in), cfg.hidden ReLU units; with a split also on its
    training rows, then measured on its held-out rows."""
    runs = train_fc(FC_SETTING, [(seed, cfg.lr) for seed in seeds], x, y, cfg)["runs"]
    its, div = [r["iterations"] for r in runs], [r["diverged_at"] for r in runs]
    record = {"network": f"{x.shape[1]}-{cfg.hidden}-1 fully connected, ReLU, cross-entropy", "setting": FC_SETTING,
              "inputs": x.shape[1], "hidden": cfg.hidden, "parameters": fc_parameters(x.shape[1], cfg.hidden),
              "iterations": its, "diverged_at": div, "summary": summarize_stops(its, div), "holdout": None}
    if split is not None:
        train_rows, test_rows = split
        held = train_fc(FC_SETTING, [(seed, cfg.lr) for seed in seeds], x[train_rows], y[train_rows], cfg)["runs"]
        stops = [r["iterations"] if r["iterations"] is not None else r["diverged_at"] if r["diverged_at"] is not None
                 else cfg.max_iters for r in held]
        train_acc, test_acc = fc_replay_accuracy(seeds, stops, x, y, split, cfg)
        test_acc = [None if r["diverged_at"] is not None else a for r, a in zip(held, test_acc, strict=True)]
        record["holdout"] = {"iterations": [r["iterations"] for r in held], "train_accuracy": train_acc,
                             "test_accuracy": test_acc, "summary": accuracy_summary(test_acc, y[test_rows])}
    return record


def fc_replay_accuracy(seeds: list[int], stops: list[int], x: np.ndarray, y: np.ndarray, split: Split,
                       cfg: Config) -> tuple[list[float], list[float]]:
    """Part 2's train returns no weights: replay its updates (the same initial weights, the same
    step p -= lr * dL/dp) on the split's training rows, each seed up to its stop, and measure the
    weights there: (accuracy on the training rows, which is 1 for a seed that reached 100%; accuracy
    on the held-out rows)."""
    train_rows, test_rows = split
    x_train, y_train, x_test, y_test = (torch.tensor(v, dtype=cfg.dtype, device=cfg.device) for v in (
        x[train_rows], y[train_rows], x[test_rows], y[test_rows]))
    with torch.device("cpu"):  # part 2's draws: float64 on the CPU (the generator's device), then moved to cfg.device
        model = FCNet(*initial_weights(seeds, x.shape[1], cfg), "relu")
    steps = torch.tensor(stops, device=cfg.device)
    for t in range(max(stops)):
        rates = torch.where(steps > t, cfg.lr, 0.0).to(cfg.dtype)  # (R,): a seed past its stop stays put
        loss_fn("ce", model(model.hidden(x_train)), y_train).sum().backward()
        with torch.no_grad():
            for p in model.parameters():
                p.addcmul_(rates.view(-1, *[1] * (p.dim() - 1)), p.grad, value=-1)  # as part2_fc.train steps
                p.grad = None
    with torch.no_grad():
        return (accuracy_fn(model(model.hidden(x_train)), y_train).tolist(),
                accuracy_fn(model(model.hidden(x_test)), y_test).tolist())


# ===== Records and figures =====

CONV_COLOUR = "tab:purple"  # the conv net in every figure; the FC controls keep their colours below
CONTROL_COLOURS = {"fc": "tab:blue", "fc_rescaled": "tab:cyan", "fc_matched": "tab:brown",  # fc: part 2's ReLU + CE
                   "fc_rescaled_shuffled": "tab:gray"}
CONTROL_LABELS = {"fc": "FC 4 hidden", "fc_rescaled": "FC 4 hidden, rescaled", "fc_matched": "FC, conv's size",
                  "fc_rescaled_shuffled": "FC 4 hidden, rescaled, labels shuffled"}


def study_record(runs: list[SeedRun], cfg: Config, data: Dataset,
                 replays: dict[int, dict[str, list[float | None]]] | None = None) -> dict[str, Any]:
    """Per seed its stop and finals, the summary over seeds, the median seed ("single"; for many seeds
    with its replay, taken from `replays` by seed where given), the mean of each conv2 map per class for
    the median seed at its stop, and the network's sizes."""
    its, div = [r.iterations for r in runs], [r.diverged_at for r in runs]
    seed, percentile = typical_seed([r.seed for r in runs], its) if len(runs) > 1 else (runs[0].seed, 0.0)
    one = next(r for r in runs if r.seed == seed)
    x = torch.tensor(data.images[:, None], dtype=cfg.dtype, device=cfg.device)
    with torch.no_grad():
        one_net = trained_model(one, data.images.shape[1:], cfg)
        maps = one_net.feature_maps(x)[1].mean((2, 3)).double().cpu().numpy()  # (B, 8)
        kernels = kernel_change(one_net, initial_model(LineNet, seed, data.images.shape[1:], cfg))
    replay = {}  # a single run does not pay for the replay
    if len(runs) > 1:
        replay = (replays or {}).get(seed) or replay_seed(one, cfg, data)
    means = {str(c): maps[data.labels == c].mean(0) for c in (0, 1) if (data.labels == c).any()}
    (h1, w1), (h2, w2) = conv_sizes(data.images.shape[1:], cfg.padding)
    network = {"image_size": list(data.images.shape[1:]), "padding": cfg.padding, "pad_pixels": PADDINGS[cfg.padding],
               "kernel": KERNEL, "feature_maps": [[CHANNELS[0], h1, w1], [CHANNELS[1], h2, w2]],
               "fc_inputs": CHANNELS[1] * h2 * w2, "parameters": sum(p.numel() for p in one_net.parameters())}
    return {"network": network, "iterations": its, "diverged_at": div, "diverged": [d is not None for d in div],
            "final_accuracy": [r.final_accuracy for r in runs], "final_loss": [r.final_loss for r in runs],
            "summary": summarize_stops(its, div),
            "loss_rises": [loss_rises(r.loss).size for r in runs],
            "single": {"seed": seed, "percentile": percentile, "iterations": one.iterations, "diverged_at":
                       one.diverged_at, "final_accuracy": one.final_accuracy, "final_ce": one.final_loss,
                       "loss_rises_at": loss_rises(one.loss).tolist(), "accuracy": one.accuracy.tolist(),
                       "kernel_change": kernels} | replay,
            "n_nearest_other": int(np.greater(*nearest_similarity(data.images, data.labels)[::-1]).sum()),
            "conv2_class_means": {c: [float(v) if np.isfinite(v) else None for v in m] for c, m in means.items()}}


def nearest_similarity(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image (B,), the cosine similarity of its pixel vector to the most similar other image of
    its own class and of the other class: (cos_same, cos_other). An image with cos_other > cos_same
    looks more like one of the other class than like any of its own, and is hard to separate."""
    x = images.reshape(len(images), -1).astype(np.float64)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    cos, other = unit @ unit.T, labels[:, None] != labels[None]
    same = ~other & ~np.eye(len(x), dtype=bool)
    cos_same, cos_other = (np.where(mask, cos, -np.inf).max(1) for mask in (same, other))
    return cos_same, cos_other


def kernel_change(net: LineNet, start: LineNet) -> dict[str, float | None]:
    """Figure 12 in numbers: the first layer's 16 kernels (7 x 7) at the stop against their start.
    relative_change: the norm of the change over the norm of the start, all kernels together.
    With each kernel's mean change removed, pooled over the kernels: column_share (row_share), the
    share of the change's sum of squares that the kernels' column (row) means explain, i.e. how much
    of it is constant down each column: vertical (horizontal) stripes. The two shares add up to at
    most 1; independent noise gives each about 6/48 = 1/8."""
    before = start.conv1.weight.detach()[:, 0].double().cpu().numpy()  # (16, 7, 7)
    change = net.conv1.weight.detach()[:, 0].double().cpu().numpy() - before
    centred = change - change.mean((1, 2), keepdims=True)
    total = float((centred ** 2).sum())
    varies = total > 1e-12 * float((change ** 2).sum())  # beyond rounding: not a run stopped before its first step

    def share(axis: int) -> float | None:  # None: no variation to share
        means = np.broadcast_to(centred.mean(axis, keepdims=True), centred.shape)
        return float((means ** 2).sum()) / total if varies and total > 0 else None

    return {"relative_change": float(np.linalg.norm(change) / np.linalg.norm(before)),
            "column_share": share(1), "row_share": share(2)}


def half_lr_record(runs: list[SeedRun], half: Config, data: Dataset, seed: int,
                   replays: dict[int, dict[str, list[float | None]]] | None = None) -> dict[str, Any]:
    """3.1's half-rate control (`half`: the config at lr / 2): the seeds' stops and how often each one's
    loss rises; for many seeds also "single", the study's median `seed` at this rate replayed (from
    `replays` where given): does its rate x sharpness climb past 2 again?"""
    its, div = [r.iterations for r in runs], [r.diverged_at for r in runs]
    record = {"lr": half.lr, "iterations": its, "summary": summarize_stops(its, div),
              "loss_rises": [loss_rises(r.loss).size for r in runs]}
    if len(runs) > 1:
        one = next(r for r in runs if r.seed == seed)
        record["single"] = {"seed": seed, "iterations": one.iterations,
                            "loss_rises_at": loss_rises(one.loss).tolist()} | ((replays or {}).get(seed)
                                                                                or replay_seed(one, half, data))
    return record


def replay_steps(run: SeedRun) -> int:
    """How many of a run's iterations its replay measures: all of them, at most SHARPNESS_ITERATIONS."""
    return min(len(run.loss) - 1, SHARPNESS_ITERATIONS)


def replay_job(seed: int, x: np.ndarray, y: np.ndarray, cfg: Config, steps: int) -> dict[str, list[float | None]]:
    """seed's run on images x (B, 1, H, W), labels y (B,), replayed from its start at cfg.lr over its
    first `steps` iterations (sharpness_replay; a worker's job, plain floats back): "sharpness", lr x
    the loss's steepest curvature at each iteration, and "replayed_loss"."""
    xt, yt = (torch.tensor(v, dtype=cfg.dtype, device=cfg.device) for v in (x, y))
    net = initial_model(LineNet, seed, tuple(x.shape[2:]), cfg)
    replayed, sharpness = sharpness_replay(net, lambda n: loss_fn("ce", n(xt), yt), cfg.lr, steps)
    return {"sharpness": sharpness, "replayed_loss": replayed}


def overshoot_counts(runs: list[SeedRun], sharpness: list[list[float | None]]) -> dict[str, int]:
    """Pooled over the runs: the steps whose rate x sharpness is above 2 ("above") and at or below 2
    ("below"), and after how many of each the run's own loss rises (the step at t: loss[t + 1] > loss[t])."""
    counts = dict.fromkeys(("above", "rises_above", "below", "rises_below"), 0)
    for run, sharp in zip(runs, sharpness, strict=True):
        for t in range(min(len(sharp), len(run.loss)) - 1):
            if sharp[t] is not None:
                side = "above" if sharp[t] > 2 else "below"
                counts[side] += 1
                counts["rises_" + side] += int(run.loss[t + 1] > run.loss[t])
    return counts


def replay_seed(run: SeedRun, cfg: Config, data: Dataset) -> dict[str, list[float | None]]:
    """A run replayed here, in this process (replay_job on all of data's images)."""
    return replay_job(run.seed, data.images[:, None], data.labels, cfg, replay_steps(run))


SHARPNESS_STEPS = 10  # power-iteration steps per iteration, each warm-started from the last direction
SHARPNESS_ITERATIONS = 200  # the median seed's replay measures at most its first 200 iterations


def step_sharpness(grads: Sequence[torch.Tensor], params: list[torch.Tensor], lr: float,
                   direction: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
    """lr x the objective's curvature along its steepest direction in all the parameters (the
    Hessian's eigenvalue of largest size: power iteration on Hessian-vector products, which autograd
    gives by differentiating the gradient `grads` again, taken with create_graph=True), from
    `direction` (a warm start). Why it matters:
    plain gradient descent at rate lr multiplies the error along a direction of curvature c by
    |1 - lr c| per step, so where lr c > 2 a step overshoots and the loss can rise.
    Returns (lr x curvature, the direction found)."""
    v, curvature = direction, math.nan
    for _ in range(SHARPNESS_STEPS):
        norm = torch.sqrt(sum((u * u).sum() for u in v))
        v = [u / norm for u in v]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        curvature = float(sum((a * b).sum() for a, b in zip(hv, v, strict=True)))  # v is a unit vector
        v = [h.detach() for h in hv]
    return lr * curvature, v


def sharpness_replay(net: nn.Module, objective: Callable[[nn.Module], torch.Tensor], lr: float,
                     steps: int) -> tuple[list[float], list[float]]:
    """A seed replayed from its start `net` (trained in place) for `steps` updates with the loop's own
    step, p -= lr * dL/dp: at every iteration 0..steps the objective and lr x its sharpness
    (step_sharpness). Returns (objective, sharpness), steps + 1 values each (None where not finite)."""
    params = list(net.parameters())
    gen = torch.Generator().manual_seed(0)  # a fixed first direction: the same numbers every run
    direction = [torch.randn(p.shape, generator=gen, dtype=torch.float64, device="cpu").to(p) for p in params]
    losses, sharpness = [], []
    for t in range(steps + 1):
        loss = objective(net)
        grads = torch.autograd.grad(loss, params, create_graph=True)  # once: for the curvature and the step
        value, direction = step_sharpness(grads, params, lr, direction)
        losses.append(float(loss.detach()))
        sharpness.append(value)
        if t < steps:
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    p.add_(g, alpha=-lr)
    return [finite_or_none(v) for v in losses], [finite_or_none(v) for v in sharpness]


def finite_or_none(value: float) -> float | None:
    """A number for the JSON: None where it is NaN or infinite (a diverged replay)."""
    return value if math.isfinite(value) else None


def loss_rises(loss: np.ndarray) -> np.ndarray:
    """The iterations t at which the loss (T,) is higher than at t - 1: a step that overshot."""
    return np.flatnonzero(np.diff(loss) > 0) + 1


def draw_figures(results: dict[str, Any], runs: list[SeedRun], data: Dataset, cfg: Config, out: Path) -> list[str]:
    """The figures of 3.1, drawn here (no process to start); returns the names of those drawn."""
    one = next(r for r in runs if r.seed == results["single"]["seed"])
    image = data.images.shape[1:]
    net, start = trained_model(one, image, cfg), initial_model(LineNet, one.seed, image, cfg)
    state = (f"seed {one.seed}" + (" (median seed)" if len(runs) > 1 else "") + ", "
             + ending(one.iterations, one.diverged_at, len(one.loss) - 1))
    samples = [(int(np.flatnonzero(data.labels == c)[0]), f"label {c}: {name}") for c, name in LINE_CLASSES.items()
               if (data.labels == c).any()]
    figures = {"part3_line_curves.png": (plot_curves, one, results["single"].get("sharpness"), f"3.1: {state}"),
               "part3_line_kernels.png": (plot_kernels, net, start, f"3.1: conv1 kernels, {state}"),
               "part3_line_feature_maps.png": (plot_feature_maps, net, data, samples, f"3.1: feature maps, {state}")}
    if len(runs) > 1:
        stops = {"conv net": ([r.iterations for r in runs], CONV_COLOUR)} | {
            CONTROL_LABELS[k]: (c["iterations"], CONTROL_COLOURS[k]) for k, c in results["controls"].items() if c}
        reached = [i for its, _ in stops.values() for i in its]  # the axis ends at twice the slowest, if all reached
        axis_end = cfg.max_iters if None in reached else min(cfg.max_iters, 2 * max(reached) + 1)
        figures["part3_line_share_reached.png"] = (plot_share_reached, stops, axis_end,
                                                   f"3.1: share of {len(runs)} seeds at 100% training accuracy")
        last = max(len(r.loss) for r in runs)  # a stopped run holds its last loss
        losses = np.array([np.pad(r.loss, (0, last - len(r.loss)), mode="edge") for r in runs])
        with warnings.catch_warnings():  # iterations where every seed's loss is NaN (diverged) stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            band = np.nanquantile(losses, [0.25, 0.5, 0.75], axis=0)
        figures["part3_line_loss_band.png"] = (plot_bands, {"conv net": (band, 1, CONV_COLOUR)},
                                               f"3.1: training loss over {len(runs)} seeds (median, IQR)",
                                               "cross-entropy loss")
    return [name for name, (draw, *args) in figures.items() if save_figure(out / name, draw, *args)]


def plot_curves(run: SeedRun, sharpness: list[float | None] | None, title: str) -> Any:
    """The run's cross-entropy (log axis), training accuracy (from 0%) and, where the study measured
    it, rate x sharpness (the replay's, step_sharpness; dotted: 2, above which the error along the
    steepest direction grows) against iteration; the stop dashed."""
    import matplotlib.pyplot as plt

    panels = 2 if sharpness is None else 3
    fig, axes = plt.subplots(1, panels, figsize=(FIGURE_SIZE[0], 1.95), layout="constrained")  # flat: page budget
    t = np.arange(len(run.loss))
    if sharpness is not None:
        values = np.array(sharpness, dtype=float)  # None: NaN, a gap in the line
        axes[2].plot(np.arange(len(values)), values, lw=1.4, color=CONV_COLOUR)
        axes[2].axhline(2, color="black", ls=":", lw=1)
        axes[2].set(xlabel="iteration (gradient steps)", ylabel="rate × sharpness", ylim=(0, None))
    axes[0].plot(t, run.loss, lw=1.4, color=CONV_COLOUR)
    axes[0].set(xlabel="iteration (gradient steps)", ylabel="cross-entropy loss", yscale="log")
    axes[1].plot(t, 100 * run.accuracy, lw=1.4, color=CONV_COLOUR)
    axes[1].set(xlabel="iteration (gradient steps)", ylabel="training accuracy (%)", ylim=(0, 102))
    for ax in axes if run.iterations is not None else ():
        ax.axvline(run.iterations, color="grey", ls="--", lw=1)
    fig.suptitle(title)
    return fig


def mosaic(ax: Any, maps: np.ndarray, cols: int, cmap: str, vmin: float, vmax: float) -> Any:
    """Tile maps (N, h, w), `cols` per row, separated by grey gaps; columns numbered from 1, rows by
    their first map. Returns the image (for a colour bar)."""
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
    ax.tick_params(length=0, labelsize=10)
    ax.grid(False)
    return image


def plot_kernels(net: LineNet, start: LineNet, title: str) -> Any:
    """The 16 conv1 kernels at the stop, and their change from the start (blue < 0 < red)."""
    import matplotlib.pyplot as plt

    after = net.conv1.weight.detach()[:, 0].double().cpu().numpy()
    change = after - start.conv1.weight.detach()[:, 0].double().cpu().numpy()
    fig, axes = plt.subplots(1, 2, figsize=FIGURE_SIZE, layout="constrained")
    for ax, values, label in ((axes[0], after, "weight"), (axes[1], change, "weight change")):
        limit = float(np.abs(values).max()) or 1.0
        fig.colorbar(mosaic(ax, values, 4, "coolwarm", -limit, limit), ax=ax, shrink=0.9, label=label)
    axes[0].set_title("conv1 kernels at the stop")
    axes[1].set_title("their change from the start")
    fig.suptitle(title)
    return fig


def plot_feature_maps(net: LineNet, data: Dataset, samples: list[tuple[int, str]], title: str) -> Any:
    """Per sample (image index, caption): the image, its 16 conv1 maps and its 8 conv2 maps after ReLU;
    each layer on its own grey scale (a labelled colour bar under its column)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    param = next(net.parameters())
    x = torch.tensor(data.images[[i for i, _ in samples]][:, None], dtype=param.dtype, device=param.device)
    with torch.no_grad():
        maps = [m.double().cpu().numpy() for m in net.feature_maps(x)]
    fig, axes = plt.subplots(len(samples), 3, figsize=(6.5, 2.0 * len(samples) + 1.0), squeeze=False,
                             width_ratios=(1, 2.2, 1.2), layout="constrained")
    for row, (index, caption) in enumerate(samples):
        axes[row, 0].imshow(data.images[index], cmap="gray_r", vmin=0, vmax=1)
        axes[row, 0].set(xticks=[], yticks=[])
        axes[row, 0].set_title(f"image {index}, {caption.replace(': ', ':' + chr(10))}", fontsize=9.5)
    for layer, m in enumerate(maps):  # one grey scale per layer, from 0 (white) to its largest activation
        for row in range(len(samples)):
            shown = mosaic(axes[row, layer + 1], m[row], 4, "Greys", 0, float(m.max()) or 1.0)
            axes[row, layer + 1].set_title(f"conv{layer + 1} + ReLU, maps 1-{m.shape[1]}", fontsize=9.5)
        bar = fig.colorbar(shown, ax=axes[:, layer + 1], location="bottom", shrink=0.8, aspect=25,
                           label=f"conv{layer + 1} activation")
        bar.locator = MaxNLocator(4)  # at least three ticks on a short bar
        bar.update_ticks()
    fig.suptitle(title)
    return fig


def print_summary(results: dict[str, Any], out: Path) -> None:
    """The answers in a few lines a person reads at the end of the run."""
    one, n = results["single"], len(results["seeds"])
    print(f"\n3.1 line dataset, {n} seed(s): {'median seed' if n > 1 else 'seed'} {one['seed']}: "
          + ending(one["iterations"], one["diverged_at"], results["config"]["max_iters"]))
    rows = {"conv net": (results["summary"], results["holdout"])} | {
        CONTROL_LABELS[k]: (c["summary"], c["holdout"]) for k, c in results["controls"].items() if c}
    width = max(map(len, rows))
    for label, (summary, held) in rows.items():
        iqr = (f"IQR {fmt(summary['q1'])}-{fmt(summary['q3'])}" if summary["q3"] is not None else
               f"q1 {fmt(summary['q1'])}, q3 not reached" if summary["q1"] is not None else "quartiles not reached")
        line = (f"  {label:<{width}} median {fmt(summary['median'])} iterations ({iqr}), "
                f"{summary['reached']}/{summary['n_seeds']} reached")
        if held and held["summary"]["median"] is not None:
            line += f"; held-out accuracy median {100 * held['summary']['median']:.1f}%"
        print(line)
    print(f"Wrote part3_line.json and {len(results['figures'])} figure(s) to {out}/")


if __name__ == "__main__":
    sys.exit(run_main(main))
