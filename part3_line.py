"""Part 3.1: the convolutional network of Figure 5 on the line dataset (handout question 3.1).

    python part3_line.py [--data-dir data] [--out figures/] [--seeds 1] [--padding valid] ...

The network (handout Figure 5), for 1-channel H x W images (the size is read from the data: the
course's files are 16 x 16, although the handout's text says 8 x 8):

    image (1, H, W) -> conv 7x7, 16 kernels -> ReLU -> conv 7x7, 8 kernels -> ReLU
                    -> flatten -> fully connected -> 1 logit -> sigmoid -> cross-entropy

Stride 1 and no pooling. The figure gives no padding; by default none (`--padding valid`, what
most published solutions used): 16 -> 10 -> 4 pixels, so the FC layer sees 8 * 4 * 4 = 128
inputs; images smaller than 13 x 13 are refused. `--padding same` keeps the size (3 pixels of
zeros on each side): 16 -> 16 -> 16, 2048 FC inputs; it also works for 8 x 8 images.
Part 3.2 (part3_detection.py) adds a second FC layer off the same 128 features: 1 unit, linear,
the object's width. ConvNet below carries that head when asked (`regression=True`).

Initialisation and training as the handout fixes them (as in part 2, whose code this imports):
weights truncated normal, mean 0, std 0.1, redrawn beyond 2 std; every bias 0.1; plain SGD,
lr 0.1, no momentum, the full batch of all N = 64 images at every step, at most 10,000 updates.
Seed s draws its weights from its own generator (part 2's seed_generator), in a fixed order:
conv1.weight (16, 1, 7, 7), conv2.weight (8, 16, 7, 7), fc.weight (1, F), then, with the
regression head, reg.weight (1, F). So 3.1 and 3.2 start the same trunk from the same seed.

Iterations are counted as in part 2: "iterations to 100%" = the number of SGD updates made
before the first full-batch evaluation at 100% training accuracy (iteration t evaluates the
weights after t updates; its forward pass also gives the gradient of update t + 1). A run stops
there, after --max-iters updates, or when it diverges (a non-finite output or loss, or a loss
above --diverge-factor times its initial loss, part 2's rule; in 3.2 "loss" is the objective
CE + (lr_reg / lr) L2 that SGD minimises); diverged runs are reported as such.

Two engines give the same numbers seed for seed (float64; the tests check it):
    --engine plain    the reference: nn.Module + optim.SGD, one seed after another.
    --engine batched  (default) every seed at once: the seeds' weights are stacked and one set
                      of large matrix products runs all of them, see "Training many seeds at once".

Outputs in --out (PNG figures; seed = --first-seed for the single-run figures):
    part3_line_loss.png, part3_line_accuracy.png   3.1: loss and accuracy against iteration
    part3_line_kernels.png        the 16 first-layer 7x7 kernels after training (one colour scale)
                                  and their change from the initial weights
    part3_line_feature_maps.png   conv1 and conv2 feature maps (after ReLU) of the first image of
                                  each class
    part3_line_share_reached.png  (--seeds > 1) share of seeds at 100% against iteration
    part3_line_loss_band.png      (--seeds > 1) median loss with the interquartile band
    part3_line.json               the results (sorted keys, no timestamps: same command, same bytes):
        script, command, config, seeds, data, versions   (part 2's results header)
        iteration_rule, network {image_size, padding, feature_maps, fc_inputs, parameters}
        iterations [int | null per seed], diverged [bool], diverged_at [int | null],
        final_accuracy, final_loss [per seed, at the stop], summary (part 2's summarize_stops),
        single {seed, iterations, diverged_at, final_accuracy, final_loss}, figures [file names],
        comparison_part2: medians and reach rates read from <out>/part2_fc.json (null if absent;
            an unreadable one is refused before anything is trained)
Long runs print a progress line every 10 s; the end prints a short summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from part1_loss_gradient import InputError, Parser, run_main, save_figure, use_headless_matplotlib, write_json
from part2_fc import (
    DTYPE,
    ITERATION_RULE,
    Dataset,
    Runs,
    add_training_args,
    check_out_dir,
    describe,
    empty_history,
    fmt,
    is_diverged,
    load_dataset,
    loss_from_logits,
    make_logger,
    plot_curve,
    plot_median_band,
    plot_share_stopped,
    results_header,
    seed_generator,
    seed_list,
    summarize_stops,
    truncated_normal,
)
from part2_fc import accuracy_from_logits as class_accuracy

LINE_RESULTS_FILE = "part3_line.json"
PART2_RESULTS = "part2_fc.json"
KERNEL = 7  # Figure 5: 7x7 kernels in both conv layers, stride 1
CHANNELS = (16, 8)  # Figure 5: 16 kernels, then 8
PADDINGS = {"valid": 0, "same": KERNEL // 2}  # zeros added on each side of every map
WIDTH_TOLERANCE = 0.5  # 3.2: a width prediction is correct when |prediction - width| < 0.5 (strict)
LINE_CLASSES = {0: "square right of the bar", 1: "square left of the bar"}  # the data's meaning
PROGRESS_SECONDS = 10.0  # long runs print a progress line this often


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The flags, all checked here before anything is computed or written."""
    parser = Parser(prog="part3_line.py",
                    description="Part 3.1: the conv net of Figure 5 on the line dataset.")
    add_training_args(parser)  # --data-dir --out --seeds --first-seed --lr --max-iters --init-std ...
    add_conv_args(parser)
    return parser.parse_args(argv)


def add_conv_args(parser: Parser) -> None:
    """The flag both part-3 scripts add to part 2's: how the convolutions pad."""
    parser.add_argument("--padding", choices=tuple(PADDINGS), default="valid",
                        help="valid: no padding, 16 -> 10 -> 4 pixels (default); same: keep the size")


# ---------------------------------------------------------------------------------------------
# The network of Figure 5. Shared with 3.2 (part3_detection.py imports everything from here).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """Sizes through the network, in pixels: H x W input, H1 x W1 conv1 maps, H2 x W2 conv2 maps."""

    image: tuple[int, int]
    pad: int  # zeros added on each side before each convolution
    conv1: tuple[int, int]
    conv2: tuple[int, int]

    @property
    def n_features(self) -> int:
        """Inputs of the FC layer(s): the 8 conv2 maps, flattened."""
        return CHANNELS[1] * self.conv2[0] * self.conv2[1]


def conv_geometry(image: tuple[int, int], padding: str) -> Geometry:
    """Geometry of H x W images; InputError when two 7x7 convolutions leave nothing."""
    pad = PADDINGS[padding]
    shrink = KERNEL - 1 - 2 * pad  # each convolution takes this many pixels off H and W
    h, w = image
    if min(h, w) - 2 * shrink < 1:
        raise InputError(f"--padding {padding}: the images are {h}x{w} pixels, too small for two "
                         f"{KERNEL}x{KERNEL} convolutions without padding (need at least "
                         f"{2 * shrink + 1}x{2 * shrink + 1}); use --padding same")
    return Geometry(image, pad, (h - shrink, w - shrink), (h - 2 * shrink, w - 2 * shrink))


@dataclass(frozen=True)
class ConvConfig:
    """Training of part 3; every field is a flag."""

    lr: float = 0.1  # plain SGD step size (handout)
    lr_reg: float = 0.001  # 3.2 only: learning rate of the width's L2 loss (handout)
    max_iters: int = 10_000  # cap on SGD updates (handout)
    init_std: float = 0.1  # std of the truncated normal weights (handout)
    init_bias: float = 0.1  # every bias starts here (handout)
    diverge_factor: float = 5.0  # diverged: loss above this times the initial loss (part 2's rule)


class ConvNet(nn.Module):
    """Figure 5. x (B, 1, H, W) -> logits (B,) and, with the regression head (3.2), the predicted
    widths (B,) in pixels, else None. The sigmoid is applied in the loss (part 2's
    loss_from_logits), so the logit's sign is the prediction."""

    def __init__(self, geo: Geometry, regression: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, CHANNELS[0], KERNEL, padding=geo.pad, dtype=DTYPE)
        self.conv2 = nn.Conv2d(CHANNELS[0], CHANNELS[1], KERNEL, padding=geo.pad, dtype=DTYPE)
        self.fc = nn.Linear(geo.n_features, 1, dtype=DTYPE)  # classifier: 1 logit
        self.reg = nn.Linear(geo.n_features, 1, dtype=DTYPE) if regression else None  # width, linear

    def feature_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ReLU outputs of conv1 (B, 16, H1, W1) and conv2 (B, 8, H2, W2)."""
        a1 = torch.relu(self.conv1(x))
        return a1, torch.relu(self.conv2(a1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.feature_maps(x)[1].flatten(1)  # (B, F), F ordered (channel, row, column)
        width = self.reg(features).squeeze(1) if self.reg is not None else None
        return self.fc(features).squeeze(1), width


def initial_model(seed: int, geo: Geometry, cfg: ConvConfig, regression: bool = False) -> ConvNet:
    """A ConvNet holding seed `seed`'s initial weights: truncated normal weights drawn in the
    order the layers are declared (conv1, conv2, fc, reg), every bias cfg.init_bias."""
    net = ConvNet(geo, regression)
    gen = seed_generator(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.endswith("weight"):
                param.copy_(truncated_normal(tuple(param.shape), cfg.init_std, gen))
            else:
                param.fill_(cfg.init_bias)
    return net


# 3.2's pieces, here because one training loop serves both tasks: the width's loss and accuracy.


def width_l2(pred: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Mean over the batch (last axis) of (predicted width - true width)^2, pixels^2."""
    return ((pred - widths) ** 2).mean(-1)


def width_accuracy(pred: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Share (last axis) of predictions within WIDTH_TOLERANCE of the truth; strictly within:
    an error of exactly 0.5 pixels counts as wrong."""
    return ((pred - widths).abs() < WIDTH_TOLERANCE).to(DTYPE).mean(-1)


def evaluate(logits: torch.Tensor, pred_widths: torch.Tensor | None, y: torch.Tensor,
             widths: torch.Tensor | None, cfg: ConvConfig) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every run's numbers over the batch (last axis of logits and pred_widths: (B,) or (S, B)).

    Returns the metrics (shape without the batch axis) and `finite` (all outputs finite):
        ce        mean cross-entropy of the classifier
        accuracy  classification accuracy
        l2, reg_accuracy   (with the width head) the width's L2 loss and accuracy
        objective what SGD minimises: ce, plus (lr_reg / lr) * l2 with the width head. One SGD
                  step of size lr on it moves every weight by lr * dCE + lr_reg * dL2: the
                  classifier learns at lr, the width regressor at lr_reg, and the shared conv
                  layers get both (3.2).
    """
    metrics = {"ce": loss_from_logits("ce", logits, y), "accuracy": class_accuracy(logits, y)}
    finite = torch.isfinite(logits).all(-1)
    metrics["objective"] = metrics["ce"]
    if pred_widths is not None:
        assert widths is not None
        metrics["l2"] = width_l2(pred_widths, widths)
        metrics["reg_accuracy"] = width_accuracy(pred_widths, widths)
        metrics["objective"] = metrics["ce"] + (cfg.lr_reg / cfg.lr) * metrics["l2"]
        finite = finite & torch.isfinite(pred_widths).all(-1)
    return metrics, finite & torch.isfinite(metrics["objective"])


# ---------------------------------------------------------------------------------------------
# 3.1 Training, one seed at a time: the plain loop (nn.Module + optim.SGD), the reference.
#
# Both engines record through record_iteration, so they apply the same stop and divergence rules.
# Without the width head a run stops at 100% classification accuracy (3.1), with it at 100%
# regression accuracy (3.2, the handout's rule).
# ---------------------------------------------------------------------------------------------


@dataclass
class ConvRuns(Runs):
    """S runs (part 2's Runs: losses = cross-entropy, accuracies = classification accuracy, each
    (max_iters + 1, S), NaN after the stop) plus, with the width head, l2 and reg_accuracies in
    the same layout, and each run's weights at its stop (ConvNet state_dict names)."""

    l2: np.ndarray | None = None
    reg_accuracies: np.ndarray | None = None
    final_params: list[dict[str, torch.Tensor]] = field(default_factory=list)

    @classmethod
    def empty(cls, n_runs: int, max_iters: int, regression: bool) -> ConvRuns:
        def history() -> np.ndarray:
            return empty_history(max_iters, n_runs)

        return cls([None] * n_runs, [None] * n_runs, history(), history(),
                   history() if regression else None, history() if regression else None,
                   [{} for _ in range(n_runs)])

    def histories(self) -> dict[str, np.ndarray]:
        """Metric name (as evaluate names it) -> its (max_iters + 1, S) history."""
        out = {"ce": self.losses, "accuracy": self.accuracies}
        if self.l2 is not None and self.reg_accuracies is not None:
            out |= {"l2": self.l2, "reg_accuracy": self.reg_accuracies}
        return out

    @property
    def stop_metric(self) -> np.ndarray:
        """The history the stop rule watches: regression accuracy with the width head, else
        classification accuracy."""
        return self.reg_accuracies if self.reg_accuracies is not None else self.accuracies

    def stop_iteration(self, s: int) -> int:
        """The last iteration run s evaluated: where it reached the stop rule, diverged, or the cap."""
        for t in (self.iterations[s], self.diverged_at[s]):
            if t is not None:
                return t
        return len(self.losses) - 1


def record_iteration(runs: ConvRuns, t: int, cols: np.ndarray, metrics: dict[str, torch.Tensor],
                     finite: torch.Tensor, initial_objective: torch.Tensor, cfg: ConvConfig) -> np.ndarray:
    """Store iteration t of the runs `cols` (numbers as evaluate gives them, one per run) and
    apply the stop rules; returns, per run, whether it stops here (reached, diverged or cap)."""
    ok = finite.reshape(-1).numpy()
    for name, history in runs.histories().items():
        history[t, cols] = np.where(ok, metrics[name].detach().reshape(-1).numpy(), np.nan)
    objective = metrics["objective"].detach().reshape(-1).masked_fill(~finite.reshape(-1), np.nan)
    diverged = is_diverged(objective, initial_objective.reshape(-1), cfg.diverge_factor).numpy()
    reached = ~diverged & (runs.stop_metric[t, cols] == 1.0)
    for col in cols[diverged]:
        runs.diverged_at[col] = t
    for col in cols[reached]:
        runs.iterations[col] = t
    return diverged | reached | (t == cfg.max_iters)


def train_one(net: ConvNet, x: torch.Tensor, y: torch.Tensor, widths: torch.Tensor | None,
              cfg: ConvConfig) -> ConvRuns:
    """Train one model by optim.SGD on the full batch: x (B, 1, H, W), labels y (B,), widths (B,)
    (used only when the model has the width head)."""
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr)
    runs = ConvRuns.empty(1, cfg.max_iters, net.reg is not None)
    cols = np.zeros(1, dtype=np.int64)
    initial = None
    for t in range(cfg.max_iters + 1):
        logits, pred_widths = net(x)
        metrics, finite = evaluate(logits, pred_widths, y, widths, cfg)
        if initial is None:
            initial = metrics["objective"].detach().masked_fill(~finite, np.nan)
        if record_iteration(runs, t, cols, metrics, finite, initial, cfg)[0]:
            break
        opt.zero_grad()
        metrics["objective"].backward()
        opt.step()
    runs.final_params[0] = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return runs


def train_plain(seeds: list[int], x: torch.Tensor, y: torch.Tensor, widths: torch.Tensor | None,
                geo: Geometry, cfg: ConvConfig, regression: bool,
                log: Callable[[str], None] | None = None) -> ConvRuns:
    """Every seed with train_one, one after another; results side by side as one ConvRuns."""
    per_seed = []
    for seed in seeds:
        started = time.perf_counter()
        per_seed.append(train_one(initial_model(seed, geo, cfg, regression), x, y, widths, cfg))
        if log:
            r = per_seed[-1]
            log(f"  seed {seed}: {describe(r.iterations[0], r.diverged_at[0], r.final(r.stop_metric, 0))}"
                f" ({time.perf_counter() - started:.1f} s)")
    runs = ConvRuns.empty(len(seeds), cfg.max_iters, regression)
    for s, one in enumerate(per_seed):
        runs.iterations[s], runs.diverged_at[s] = one.iterations[0], one.diverged_at[0]
        for name, history in runs.histories().items():
            history[:, s] = one.histories()[name][:, 0]
        runs.final_params[s] = one.final_params[0]
    return runs


# ---------------------------------------------------------------------------------------------
# Training many seeds at once: the same loop on stacked weights (--engine batched).
#
# Seed s's weights are row s of each stacked tensor (names as in ConvNet). Per step:
# - conv1: the input never changes, so its 7x7 patches are cut out once (im2col); conv1 of all
#   seeds is then one matrix product (B * H1 * W1, 49) @ (49, S * 16).
# - conv2, no padding: each seed's conv2 is a linear map from its 16 x H1 x W1 conv1 maps to its
#   8 x H2 x W2 outputs; written as a matrix (zeros where the kernel does not reach, about half
#   of it for 16 x 16 images), all seeds' conv2 is one batched matrix product. Despite the extra
#   zeros that runs about 1.5x faster than a grouped convolution (one group per seed): torch has
#   no fast float64 convolution on the CPU, it loops over images and groups.
#   With --padding same that matrix would be mostly zeros: there the grouped convolution does it.
# - the FC heads: one batched matrix product each.
# Autograd differentiates the sum of the seeds' objectives; seed s's weights only touch seed s's
# objective, so each gets exactly its own gradient; the update is optim.SGD's (w -= lr * grad).
# Seeds that stopped are dropped from the stack.
# ---------------------------------------------------------------------------------------------


def image_patches(x: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """x (B, 1, H, W) -> every 7x7 patch conv1 sees, (B * H1 * W1, 49), rows ordered (image,
    row, column), columns as conv1.weight flattens its 7x7."""
    patches = F.unfold(F.pad(x, (geo.pad,) * 4), KERNEL)  # (B, 49, H1 * W1)
    return patches.transpose(1, 2).reshape(-1, KERNEL * KERNEL)


class Conv2Matrix(torch.autograd.Function):
    """Stacked conv2 kernels w2 (S, 8, 16, 7, 7) -> one matrix per seed, (S, H1 * W1 * 16,
    H2 * W2 * 8), such that conv2 (no padding) of conv1 maps a flattened (row, column, channel)
    is a @ matrix, output columns ordered (row, column, channel). Column (i, j, o) holds kernel o
    placed at output pixel (i, j), zeros where it does not reach.

    An autograd Function because autograd's generic path for "copy the kernel to H2 * W2 places"
    (pad + stack) costs as much as the matrix products; here the backward is just the sum of the
    placed copies' gradients."""

    @staticmethod
    def forward(ctx: Any, w2: torch.Tensor, geo: Geometry) -> torch.Tensor:
        ctx.geo = geo
        S, c2, c1 = w2.shape[:3]
        (h1, w1), (h2, w2_) = geo.conv1, geo.conv2
        kernel = w2.permute(0, 3, 4, 2, 1).contiguous()  # (S, 7, 7, 16 in, 8 out); contiguous copies faster
        matrix = w2.new_zeros(S, h1, w1, c1, h2, w2_, c2)
        for i in range(h2):
            for j in range(w2_):
                matrix[:, i:i + KERNEL, j:j + KERNEL, :, i, j, :] = kernel
        return matrix.view(S, h1 * w1 * c1, h2 * w2_ * c2)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (h1, w1), (h2, w2_) = ctx.geo.conv1, ctx.geo.conv2
        g = grad.view(len(grad), h1, w1, CHANNELS[0], h2, w2_, CHANNELS[1])
        kernel = sum(g[:, i:i + KERNEL, j:j + KERNEL, :, i, j, :] for i in range(h2) for j in range(w2_))
        return kernel.permute(0, 4, 3, 1, 2), None


def stacked_forward(p: dict[str, torch.Tensor], patches: torch.Tensor,
                    geo: Geometry) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ConvNet.forward for S stacked seeds: logits (S, B) and widths (S, B) or None."""
    S, c1, c2 = len(p["conv1.weight"]), CHANNELS[0], CHANNELS[1]
    (h1, w1), (h2, w2) = geo.conv1, geo.conv2
    B = patches.shape[0] // (h1 * w1)
    z1 = patches @ p["conv1.weight"].reshape(S * c1, -1).T + p["conv1.bias"].reshape(-1)
    a1 = torch.relu(z1).view(B, h1, w1, S, c1)
    if geo.pad == 0:
        a1 = a1.permute(3, 0, 1, 2, 4).reshape(S, B, h1 * w1 * c1)
        z2 = torch.bmm(a1, Conv2Matrix.apply(p["conv2.weight"], geo))
        z2 = z2 + p["conv2.bias"].repeat(1, h2 * w2)[:, None]
        order = (0, 1, 3, 2)  # features come out (row, column, channel): reorder the FC weights
    else:
        a1 = a1.permute(0, 3, 4, 1, 2).reshape(B, S * c1, h1, w1)
        z2 = F.conv2d(a1, p["conv2.weight"].reshape(S * c2, c1, KERNEL, KERNEL),
                      p["conv2.bias"].reshape(-1), padding=geo.pad, groups=S)
        z2 = z2.reshape(B, S, -1).transpose(0, 1)
        order = (0, 1, 2, 3)
    features = torch.relu(z2)  # (S, B, F)

    def head(name: str) -> torch.Tensor:
        weight = p[f"{name}.weight"].view(S, 1, c2, h2 * w2).permute(order).reshape(S, 1, -1)
        return (features @ weight.transpose(1, 2)).squeeze(2) + p[f"{name}.bias"]

    return head("fc"), (head("reg") if "reg.weight" in p else None)


def train_batched(seeds: list[int], x: torch.Tensor, y: torch.Tensor, widths: torch.Tensor | None,
                  geo: Geometry, cfg: ConvConfig, regression: bool,
                  log: Callable[[str], None] | None = None) -> ConvRuns:
    """Every seed at once; equals train_plain seed for seed (same stops, curves to rounding)."""
    nets = [initial_model(seed, geo, cfg, regression).state_dict() for seed in seeds]
    p = {name: torch.stack([net[name] for net in nets]).requires_grad_() for name in nets[0]}
    patches = image_patches(x, geo)
    runs = ConvRuns.empty(len(seeds), cfg.max_iters, regression)
    rows = np.arange(len(seeds))  # which seed each stacked row holds
    initial = None
    started = last_log = time.perf_counter()
    for t in range(cfg.max_iters + 1):
        logits, pred_widths = stacked_forward(p, patches, geo)
        metrics, finite = evaluate(logits, pred_widths, y, widths, cfg)
        if initial is None:
            initial = metrics["objective"].detach().masked_fill(~finite, np.nan)
        stopped = record_iteration(runs, t, rows, metrics, finite, initial, cfg)
        for i in np.flatnonzero(stopped):
            runs.final_params[rows[i]] = {k: v[i].detach().clone() for k, v in p.items()}
        if stopped.all():
            break
        keep = torch.from_numpy(~stopped)
        grads = torch.autograd.grad(metrics["objective"][keep].sum(), list(p.values()))
        with torch.no_grad():
            torch._foreach_add_(list(p.values()), list(grads), alpha=-cfg.lr)
        if stopped.any():
            p = {k: v.detach()[keep].requires_grad_() for k, v in p.items()}
            rows, initial = rows[~stopped], initial[keep]
        if log and time.perf_counter() - last_log > PROGRESS_SECONDS:
            last_log = time.perf_counter()
            log(f"  iteration {t + 1:>6}: {len(rows)}/{len(seeds)} seeds still training "
                f"({last_log - started:.0f} s)")
    return runs


ENGINES = {"batched": train_batched, "plain": train_plain}


# ---------------------------------------------------------------------------------------------
# What the network learned: the first-layer kernels and the feature maps (beyond the handout).
# ---------------------------------------------------------------------------------------------


def trained_model(runs: ConvRuns, s: int, geo: Geometry) -> ConvNet:
    """A ConvNet holding run s's weights at its stop."""
    net = ConvNet(geo, regression=runs.l2 is not None)
    net.load_state_dict(runs.final_params[s])
    return net


def symmetric_limit(values: np.ndarray) -> float:
    """Colour-scale limit: the largest finite |value| (1 when there is none), so 0 is the middle."""
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def mosaic(maps: np.ndarray, cols: int) -> np.ndarray:
    """Tile maps (N, h, w) into one image, `cols` per row, one pixel of NaN between tiles;
    row-major, so tile k sits at row k // cols, column k % cols."""
    n, h, w = maps.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for k in range(n):
        r, c = divmod(k, cols)
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = maps[k]
    return out


def show_mosaic(ax: Any, maps: np.ndarray, cols: int, cmap: str, vmin: float, vmax: float,
                first: int = 1) -> Any:
    """Draw mosaic(maps, cols) on ax, each tile framed and numbered (from `first`) on the axes'
    ticks; the gaps and non-finite values are white."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n, h, w = maps.shape
    colours = plt.get_cmap(cmap).with_extremes(bad="white")
    image = ax.imshow(np.ma.masked_invalid(mosaic(maps, cols)), cmap=colours, vmin=vmin, vmax=vmax,
                      interpolation="nearest")
    for k in range(n):
        r, c = divmod(k, cols)
        ax.add_patch(Rectangle((c * (w + 1) - 0.5, r * (h + 1) - 0.5), w, h, fill=False, lw=0.6,
                               edgecolor="0.35", clip_on=False))
    rows = -(-n // cols)
    ax.set_xticks([c * (w + 1) + (w - 1) / 2 for c in range(min(cols, n))],
                  [str(first + c) for c in range(min(cols, n))], fontsize=6)
    ax.set_yticks([r * (h + 1) + (h - 1) / 2 for r in range(rows)],
                  [f"{first + r * cols}-{min(first + (r + 1) * cols, first + n) - 1}" for r in range(rows)],
                  fontsize=6)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return image


def plot_kernels(kernels: np.ndarray, initial: np.ndarray, title: str, path: Path) -> None:
    """The 16 conv1 kernels (16, 7, 7) after training, and how far each moved from its initial
    weights; one colour scale per panel (blue < 0 < red), non-finite values grey."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(7.5, 5.2), layout="constrained")
    for ax, values, label in ((axes[0], kernels, "after training"),
                              (axes[1], kernels - initial, "change from the initial weights")):
        limit = symmetric_limit(values)
        image = show_mosaic(ax, values, 8, "coolwarm", -limit, limit)
        ax.set_title(f"{label} (kernels 1-{len(values)}, {KERNEL}x{KERNEL} each)", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.9)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_feature_maps(net: ConvNet, x: torch.Tensor, samples: list[tuple[int, str]], title: str,
                      path: Path) -> None:
    """For each (image index, caption), one row: the input, its 16 conv1 maps and its 8 conv2 maps
    after ReLU; each layer on one colour scale shared by all samples (0 = white)."""
    import matplotlib.pyplot as plt

    with torch.no_grad():
        maps = [m.numpy() for m in net.feature_maps(x[[i for i, _ in samples]])]
    limits = [symmetric_limit(m) for m in maps]
    fig, axes = plt.subplots(len(samples), 3, figsize=(11, 2.3 * len(samples) + 0.5), squeeze=False,
                             width_ratios=(1, 3.6, 1.6), layout="constrained")
    for row, (index, caption) in enumerate(samples):
        ax = axes[row, 0]
        ax.imshow(x[index, 0].numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"image {index}\n{caption}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        for layer, (m, limit, cols) in enumerate(zip(maps, limits, (8, 4), strict=True)):
            ax = axes[row, layer + 1]
            image = show_mosaic(ax, m[row], cols, "Greys", 0, limit)
            ax.set_title(f"conv{layer + 1} + ReLU: {m.shape[1]} maps of {m.shape[2]}x{m.shape[3]}",
                         fontsize=8)
            if row == len(samples) - 1:
                fig.colorbar(image, ax=axes[:, layer + 1], shrink=0.8, location="bottom", aspect=30)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def first_of_each_class(labels: np.ndarray, names: dict[int, str],
                        widths: np.ndarray | None = None) -> list[tuple[int, str]]:
    """(index, caption) of the first image of each class, class 0 first; the caption names the
    class and, for the detection set, the width."""
    samples = []
    for c, name in names.items():
        if (labels == c).any():
            i = int(np.flatnonzero(labels == c)[0])
            width = "" if widths is None else f", width {widths[i]:g}"
            samples.append((i, f"label {c}: {name}{width}"))
    return samples


def horizon(runs: ConvRuns) -> int:
    """The x-range of the many-seed figures: the last iteration any run evaluated, plus 5% (so a
    last step shows), within the cap."""
    last = max(runs.stop_iteration(s) for s in range(len(runs.iterations)))
    return min(len(runs.losses) - 1, last + max(2, last // 20))


# ---------------------------------------------------------------------------------------------
# Comparison with part 2 (read from its results file when it is in --out).
# ---------------------------------------------------------------------------------------------


def read_results(path: Path) -> dict[str, Any] | None:
    """A results JSON of an earlier part, None when absent; InputError when it is unreadable."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a readable results file ({err}); rerun that part or delete "
                         "the file") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a results file (expected a JSON object)")
    return data


def part2_comparison(out: Path) -> dict[str, Any] | None:
    """Per part-2 setting: its single-seed iterations and its median, quartiles and reach rate."""
    path = out / PART2_RESULTS
    data = read_results(path)
    if data is None:
        return None
    try:
        settings = {
            name: {"label": s.get("label", name), "single_iterations": s["single"]["iterations"],
                   **{k: s["summary"][k] for k in ("n_seeds", "median", "q1", "q3", "reach_rate")}}
            for name, s in data["settings"].items()
        }
        provenance = data["data"]["provenance"]
    except (KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: not a part-2 results file (missing {err}); rerun part2_fc.py "
                         "or delete it") from None
    return {"file": PART2_RESULTS, "data_provenance": provenance, "settings": settings}


# ---------------------------------------------------------------------------------------------
# 3.1: train, plot, save, summarise.
# ---------------------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> ConvConfig:
    return ConvConfig(lr=args.lr, lr_reg=getattr(args, "lr_reg", ConvConfig.lr_reg),
                      max_iters=args.max_iters, init_std=args.init_std, init_bias=args.init_bias,
                      diverge_factor=args.diverge_factor)


def prepare(args: argparse.Namespace, dataset_name: str) -> tuple[Dataset, Geometry]:
    """Everything that can reject the input, before any training or writing."""
    check_out_dir(args.out)
    data = load_dataset(args.data_dir, dataset_name)
    geo = conv_geometry(data.images.shape[1:], args.padding)
    return data, geo


def train_seeds(args: argparse.Namespace, data: Dataset, geo: Geometry, regression: bool) -> ConvRuns:
    """Every seed of the flags, with the engine they chose (the caller times it; timings are
    printed, never written to the results file)."""
    torch.manual_seed(args.first_seed)  # nothing draws from it; each seed has its own generator
    x = torch.tensor(data.images[:, None], dtype=DTYPE)  # (B, 1, H, W)
    y = torch.tensor(data.labels, dtype=DTYPE)  # (B,)
    widths = torch.tensor(data.widths, dtype=DTYPE) if regression and data.widths is not None else None
    engine = ENGINES[args.engine]
    return engine(seed_list(args), x, y, widths, geo, config_from_args(args), regression, make_logger(args))


def network_record(geo: Geometry, regression: bool) -> dict[str, Any]:
    """The network's shapes, for the results file."""
    net = ConvNet(geo, regression)
    return {
        "image_size": list(geo.image),
        "padding": {0: "valid"}.get(geo.pad, "same"),
        "pad_pixels": geo.pad,
        "kernel": KERNEL,
        "feature_maps": [[CHANNELS[0], *geo.conv1], [CHANNELS[1], *geo.conv2]],
        "fc_inputs": geo.n_features,
        "parameters": sum(p.numel() for p in net.parameters()),
    }


def single_run_figures(runs: ConvRuns, data: Dataset, geo: Geometry, args: argparse.Namespace,
                       prefix: str, question: str, classes: dict[int, str]) -> list[str]:
    """Kernels and feature maps of the single run (seed --first-seed); returns the file names."""
    net = trained_model(runs, 0, geo)
    initial = initial_model(args.first_seed, geo, config_from_args(args), runs.l2 is not None)
    state = describe(runs.iterations[0], runs.diverged_at[0], runs.final(runs.stop_metric, 0))
    kernels, feature_maps = f"{prefix}_kernels.png", f"{prefix}_feature_maps.png"
    plot_kernels(net.conv1.weight.detach()[:, 0].numpy(), initial.conv1.weight.detach()[:, 0].numpy(),
                 f"{question} conv1 kernels, seed {args.first_seed} at the stop ({state})",
                 args.out / kernels)
    x = torch.tensor(data.images[:, None], dtype=DTYPE)
    plot_feature_maps(net, x, first_of_each_class(data.labels, classes, data.widths),
                      f"{question} feature maps, seed {args.first_seed} at the stop ({state})",
                      args.out / feature_maps)
    return [kernels, feature_maps]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data, geo = prepare(args, "line")
    comparison = part2_comparison(args.out)
    use_headless_matplotlib()
    print(f"Part 3.1: {args.seeds} seed(s) on {data.data_dir}/line ({data.provenance}, "
          f"{geo.image[0]}x{geo.image[1]} images), padding {args.padding}, {args.engine} engine")
    started = time.perf_counter()
    runs = train_seeds(args, data, geo, regression=False)
    seconds = time.perf_counter() - started

    # 3.1: the single run the handout asks for (seed --first-seed)
    stop = runs.iterations[0]
    figures = ["part3_line_loss.png", "part3_line_accuracy.png"]
    plot_curve(runs.losses[:, 0], "cross-entropy loss", "3.1 Line dataset: training loss",
               args.out / figures[0], stop)
    plot_curve(100 * runs.accuracies[:, 0], "training accuracy (%)", "3.1 Line dataset: training accuracy",
               args.out / figures[1], stop)
    figures += single_run_figures(runs, data, geo, args, "part3_line", "3.1", LINE_CLASSES)
    if args.seeds > 1:
        end = horizon(runs)
        plot_share_stopped({"conv net, line dataset": runs.iterations}, end,
                           f"3.1 Share of {args.seeds} seeds at 100% training accuracy",
                           "seeds at 100% accuracy (%)", args.out / "part3_line_share_reached.png")
        plot_median_band({"cross-entropy": runs.losses[:end + 1]}, "loss (median, IQR band)",
                         f"3.1 Training loss over {args.seeds} seeds", args.out / "part3_line_loss_band.png",
                         log_y=True)
        figures += ["part3_line_share_reached.png", "part3_line_loss_band.png"]

    n = args.seeds
    finals_acc = [runs.final(runs.accuracies, s) for s in range(n)]
    finals_loss = [runs.final(runs.losses, s) for s in range(n)]
    results = results_header("part3_line.py", args, data)
    results |= {
        "iteration_rule": ITERATION_RULE,
        "network": network_record(geo, regression=False),
        "iterations": runs.iterations,
        "diverged": [d is not None for d in runs.diverged_at],
        "diverged_at": runs.diverged_at,
        "final_accuracy": finals_acc,
        "final_loss": finals_loss,
        "summary": summarize_stops(runs.iterations, runs.diverged_at),
        "single": {"seed": args.first_seed, "iterations": stop, "diverged_at": runs.diverged_at[0],
                   "final_accuracy": finals_acc[0], "final_loss": finals_loss[0]},
        "figures": figures,
        "comparison_part2": comparison,
    }
    write_json(args.out / LINE_RESULTS_FILE, results)
    print_summary(results, seconds, args.out)
    return 0


def summary_line(summary: dict[str, Any]) -> str:
    """One line on a distribution of iterations over seeds (part 2's summarize_stops); a quantile
    that falls among seeds which never reached the stop is printed as "-"."""
    line = (f"median {fmt(summary['median'])} (IQR [{fmt(summary['q1'])}, {fmt(summary['q3'])}], "
            f"p10-p90 [{fmt(summary['p10'])}, {fmt(summary['p90'])}]), reached "
            f"{summary['reached']}/{summary['n_seeds']}")
    return line + (f", {summary['diverged']} diverged" if summary["diverged"] else "")


def print_summary(results: dict[str, Any], seconds: float, out: Path) -> None:
    """What a person reads at the end of the run."""
    single, n = results["single"], len(results["seeds"])
    print(f"\n3.1 line dataset, {n} seed(s), {seconds:.1f} s of training:")
    print(f"  seed {single['seed']}: "
          + describe(single["iterations"], single["diverged_at"], single["final_accuracy"])
          + " to 100% training accuracy" * (single["iterations"] is not None))
    if n > 1:
        print(f"  {n} seeds: {summary_line(results['summary'])}")
    comparison = results["comparison_part2"]
    if comparison is None:
        print(f"  part 2: no {PART2_RESULTS} in {out}/ to compare with (run part2_fc.py --out {out})")
    else:
        print(f"  part 2 ({comparison['data_provenance']}, iterations to 100% on the random dataset):")
        for name, s in comparison["settings"].items():
            print(f"    {name:<12} single seed {fmt(s['single_iterations']):>6}; over {s['n_seeds']} seeds "
                  f"median {fmt(s['median'])}, reached {100 * s['reach_rate']:.0f}%")
    print(f"Wrote {len(results['figures'])} figures and {LINE_RESULTS_FILE} to {out}/")


if __name__ == "__main__":
    sys.exit(run_main(main))
