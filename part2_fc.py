"""Part 2: the 16-4-1 fully connected network on the random dataset (handout questions 2.1-2.5).

PART2_DOC_PLACEHOLDER
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from part1_loss_gradient import (
    Dataset,
    InputError,
    Parser,
    bounded_int,
    check_out_dir,
    finite_float,
    library_versions,
    load_dataset,
    positive,
    run_main,
    save_figure,
    use_headless_matplotlib,
    write_json,
)

aten = torch.ops.aten  # autograd's own backward kernels, used by the batched engine

# ---------------------------------------------------------------------------------------------
# Initialisation, shared with part 3: TensorFlow's truncated normal and constant biases.
# ---------------------------------------------------------------------------------------------

DTYPE = torch.float64  # float64 so the batched engine and the plain loop agree seed for seed


def truncated_normal(shape: tuple[int, ...], std: float, generator: torch.Generator) -> torch.Tensor:
    """Weights ~ N(0, std^2) with draws beyond two standard deviations redrawn (TensorFlow's
    truncated_normal), so every value lies in [-2 std, 2 std]. torch's bounds a, b are absolute."""
    out = torch.empty(shape, dtype=DTYPE)
    return torch.nn.init.trunc_normal_(out, mean=0.0, std=std, a=-2 * std, b=2 * std, generator=generator)


def seed_generator(seed: int) -> torch.Generator:
    """The one random stream of seed `seed`: it draws that seed's initial weights, nothing else."""
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# The network of Figure 3: inputs -> FC -> 4 units, f(Wx+b) -> FC -> 1 unit -> sigmoid.
# ---------------------------------------------------------------------------------------------

# setting -> (hidden activation f, loss, handout question)
SETTINGS: dict[str, tuple[str, str, str]] = {
    "sigmoid-l2": ("sigmoid", "l2", "2.1"),
    "sigmoid-ce": ("sigmoid", "ce", "2.2"),
    "relu-l2": ("relu", "l2", "2.3"),
    "relu-ce": ("relu", "ce", "2.4"),
}


@dataclass(frozen=True)
class TrainConfig:
    """Training as the handout fixes it; every field is a flag of the script."""

    lr: float = 0.1  # plain SGD step size, no momentum
    max_iters: int = 10_000  # cap on SGD updates
    init_std: float = 0.1  # std of the truncated normal weights
    init_bias: float = 0.1  # every bias starts at this constant
    hidden: int = 4  # units in the hidden layer (Figure 3)
    diverge_factor: float = 5.0  # a run diverged when its loss exceeds this times its initial loss


def init_fc_params(seed: int, n_in: int, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Initial weights of seed `seed`, laid out like nn.Linear: w1 (hidden, n_in), b1 (hidden,),
    w2 (1, hidden), b2 (1,). The same seed gives the same weights in all four settings (paired)."""
    gen = seed_generator(seed)
    w1 = truncated_normal((cfg.hidden, n_in), cfg.init_std, gen)
    w2 = truncated_normal((1, cfg.hidden), cfg.init_std, gen)
    return {
        "w1": w1,
        "b1": torch.full((cfg.hidden,), cfg.init_bias, dtype=DTYPE),
        "w2": w2,
        "b2": torch.full((1,), cfg.init_bias, dtype=DTYPE),
    }


class FCNet(nn.Module):
    """16 -> hidden (activation f) -> 1; forward returns the logit (B,), the sigmoid comes in the loss."""

    def __init__(self, n_in: int, hidden: int, activation: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden, dtype=DTYPE)
        self.act = nn.ReLU() if activation == "relu" else nn.Sigmoid()
        self.fc2 = nn.Linear(hidden, 1, dtype=DTYPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x))).squeeze(1)


def loss_from_logits(kind: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean loss over the batch (last axis) of logits z against labels y.

    L2 = (sigmoid(z) - y)^2. CE = -(y log p + (1 - y) log(1 - p)) with p = sigmoid(z), written
    as softplus(z) - y z: the same value, finite even where p rounds to 0 or 1.
    """
    if kind == "l2":
        return ((torch.sigmoid(logits) - y) ** 2).mean(-1)
    return (F.softplus(logits) - y * logits).mean(-1)


def accuracy_from_logits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Share of correct predictions (last axis); prediction = 1 when sigmoid(z) > 0.5."""
    return ((torch.sigmoid(logits) > 0.5) == (y > 0.5)).to(DTYPE).mean(-1)


# ---------------------------------------------------------------------------------------------
# Training, one seed at a time: the plain loop of 2.1-2.4 (nn.Module + optim.SGD).
#
# "Iterations to 100%" = the number of SGD updates made before the first full-batch evaluation
# at 100% accuracy. Iteration t evaluates the weights after t updates (t = 0 is the initial
# weights) and its forward pass also gives the gradient of update t + 1. A run stops at its first
# 100%, after max_iters updates, or when it diverges (non-finite logit or loss).
# ---------------------------------------------------------------------------------------------


@dataclass
class Runs:
    """S training runs. losses, accuracies: (max_iters + 1, S), value at iteration t; NaN after a
    run stopped and at the iteration where it diverged. iterations[s]: iterations to the stop
    rule, None if not reached; diverged_at[s]: the first iteration whose logits or loss were
    non-finite, else None."""

    iterations: list[int | None]
    diverged_at: list[int | None]
    losses: np.ndarray
    accuracies: np.ndarray

    def final(self, values: np.ndarray, s: int) -> float | None:
        """Run s's value of `values` at its last finite iteration (None if it has none)."""
        column = values[:, s]
        finite = np.flatnonzero(np.isfinite(column))
        return float(column[finite[-1]]) if finite.size else None


def empty_history(max_iters: int, n_runs: int) -> np.ndarray:
    return np.full((max_iters + 1, n_runs), np.nan)


def is_diverged(loss: torch.Tensor, initial_loss: torch.Tensor, factor: float) -> torch.Tensor:
    """A run diverged when its loss (NaN where a logit or the loss was not finite) is not finite
    or has grown past `factor` times its loss at iteration 0. Works elementwise on any shape."""
    return ~torch.isfinite(loss) | (loss > factor * initial_loss)


def train_plain(model: FCNet, x: torch.Tensor, y: torch.Tensor, loss_kind: str, cfg: TrainConfig) -> Runs:
    """Train one model with optim.SGD on the full batch x (B, n_in), labels y (B,)."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    runs = Runs([None], [None], empty_history(cfg.max_iters, 1), empty_history(cfg.max_iters, 1))
    for t in range(cfg.max_iters + 1):
        logits = model(x)
        loss = loss_from_logits(loss_kind, logits, y)
        if torch.isfinite(logits).all() and torch.isfinite(loss):
            runs.accuracies[t, 0] = accuracy_from_logits(logits, y).item()
            runs.losses[t, 0] = loss.item()
        if is_diverged(torch.tensor(runs.losses[t, 0]), torch.tensor(runs.losses[0, 0]), cfg.diverge_factor):
            runs.diverged_at[0] = t
            break
        if runs.accuracies[t, 0] == 1.0:
            runs.iterations[0] = t
            break
        if t < cfg.max_iters:
            opt.zero_grad()
            loss.backward()
            opt.step()
    return runs


def plain_model(setting: str, seed: int, n_in: int, cfg: TrainConfig) -> FCNet:
    """An FCNet of `setting` holding seed `seed`'s initial weights."""
    model = FCNet(n_in, cfg.hidden, SETTINGS[setting][0])
    params = init_fc_params(seed, n_in, cfg)
    with torch.no_grad():
        model.fc1.weight.copy_(params["w1"])
        model.fc1.bias.copy_(params["b1"])
        model.fc2.weight.copy_(params["w2"])
        model.fc2.bias.copy_(params["b2"])
    return model


# ---------------------------------------------------------------------------------------------
# Training, many seeds at once: the same loop on stacked weights, with closed-form gradients.
#
# Run r has its own weights w1[r], b1[r], w2[r], b2[r]; all runs see the same 64 images, so each
# layer is one matrix product over all runs. Runs that stopped are dropped from the stack.
# ---------------------------------------------------------------------------------------------


def stack_params(seeds: list[int], n_in: int, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Initial weights of S = len(seeds) runs, runs on the last axis so that each layer is one
    matrix product over all runs: w1 (n_in, hidden, S) (w1[..., r] is run r's fc1.weight
    transposed), b1 (hidden, S), w2 (hidden, S), b2 (S,)."""
    per_seed = [init_fc_params(seed, n_in, cfg) for seed in seeds]
    return {
        "w1": torch.stack([p["w1"].T for p in per_seed], dim=-1),
        "b1": torch.stack([p["b1"] for p in per_seed], dim=-1),
        "w2": torch.stack([p["w2"][0] for p in per_seed], dim=-1),
        "b2": torch.stack([p["b2"][0] for p in per_seed], dim=-1),
    }


def batched_grads(
    p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, activation: str, ce: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward and backward of S runs (weights as from stack_params) on the batch x (B, n_in),
    y (B,). All runs use hidden `activation`; ce: (S,) bool, True where a run uses CE, else L2.
    Returns the logits (B, S) and the gradients of each run's loss w.r.t. its own weights.

    The backward is written out by hand, with the kernels autograd itself uses for sigmoid and
    ReLU, so that it matches nn.Module + autograd to rounding.
    """
    B = x.shape[0]
    D, H, S = p["w1"].shape
    z1 = (x @ p["w1"].view(D, H * S)).view(B, H, S) + p["b1"]
    a1 = torch.relu(z1) if activation == "relu" else torch.sigmoid(z1)
    logits = (a1 * p["w2"]).sum(1) + p["b2"]
    prob = torch.sigmoid(logits)
    # dLoss/dprob = 2 (p - y) / B for L2; for CE dLoss/dlogit = (p - y) / B directly
    scaled_err = (prob - y[:, None]) * torch.where(ce, 1.0 / B, 2.0 / B)
    g2 = torch.where(ce, scaled_err, aten.sigmoid_backward(scaled_err, prob))  # dLoss/dlogit
    g_a1 = g2[:, None, :] * p["w2"]
    # ReLU passes the gradient where z1 > 0 (not at 0, as in torch); sigmoid' = a1 (1 - a1)
    relu = activation == "relu"
    g1 = aten.threshold_backward(g_a1, a1, 0) if relu else aten.sigmoid_backward(g_a1, a1)
    grads = {
        "w1": (x.T @ g1.view(B, H * S)).view(D, H, S),
        "b1": g1.sum(0),
        "w2": (g2[:, None, :] * a1).sum(0),
        "b2": g2.sum(0),
    }
    return logits, grads


def stack_losses(
    logits: torch.Tensor, y: torch.Tensor, ce: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and accuracy (T, S) of S runs over T iterations from their logits (T, B, S); NaN
    where a logit or the loss was not finite."""
    z = logits.transpose(1, 2)  # (T, S, B)
    loss = torch.where(ce, loss_from_logits("ce", z, y), loss_from_logits("l2", z, y))
    bad = ~(torch.isfinite(z).all(-1) & torch.isfinite(loss))
    nan = float("nan")
    return loss.masked_fill(bad, nan), accuracy_from_logits(z, y).masked_fill(bad, nan)


def first_stop(stop: torch.Tensor) -> torch.Tensor:
    """Per run (column of stop (T, S) bool), the first row where stop holds, else -1."""
    first = stop.to(torch.int8).argmax(0)
    return torch.where(stop.any(0), first, -1)


def train_stack(
    activation: str,
    ce: torch.Tensor,
    p: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    log: Callable[[str], None] | None = None,
    chunk: int = 100,
) -> Runs:
    """Train S runs that share the hidden `activation` (ce: (S,) bool picks each run's loss) from
    the stacked weights p, by plain SGD with the stop rule of train_plain.

    The loop only steps and keeps the logits; losses, accuracies and stops are worked out after
    each chunk of iterations. A run's path up to its stop does not depend on what it computes
    after it, so looking later costs a few extra steps and saves many small operations per step.
    Runs that stopped are then dropped from the stack.
    """
    n_runs = len(ce)
    rows = torch.arange(n_runs)  # which run each stacked row is
    runs = Runs([None] * n_runs, [None] * n_runs, empty_history(cfg.max_iters, n_runs),
                empty_history(cfg.max_iters, n_runs))
    initial_loss = None  # (S,) each run's loss at iteration 0, for the divergence rule
    t0 = 0
    while t0 <= cfg.max_iters and len(rows):
        t1 = min(t0 + chunk, cfg.max_iters + 1)
        logits = torch.empty(t1 - t0, x.shape[0], len(rows), dtype=DTYPE)
        for t in range(t0, t1):
            logits[t - t0], grads = batched_grads(p, x, y, activation, ce)
            if t < cfg.max_iters:
                torch._foreach_add_(list(p.values()), list(grads.values()), alpha=-cfg.lr)
        losses, accs = stack_losses(logits, y, ce)
        initial_loss = losses[0] if initial_loss is None else initial_loss
        diverged = is_diverged(losses, initial_loss, cfg.diverge_factor)
        stop = first_stop(diverged | (accs == 1.0)).numpy()
        after_stop = np.arange(t1 - t0)[:, None] > np.where(stop < 0, t1, stop)
        cols = rows.numpy()
        runs.losses[t0:t1, cols] = np.where(after_stop, np.nan, losses.numpy())
        runs.accuracies[t0:t1, cols] = np.where(after_stop, np.nan, accs.numpy())
        for i in np.flatnonzero(stop >= 0):
            if diverged[stop[i], i]:
                runs.diverged_at[cols[i]] = t0 + int(stop[i])
            else:
                runs.iterations[cols[i]] = t0 + int(stop[i])
        keep = torch.from_numpy(stop < 0)
        p = {k: v[..., keep] for k, v in p.items()}
        ce, rows, initial_loss = ce[keep], rows[keep], initial_loss[keep]
        t0 = t1
        if log and (t0 % 1000 == 0 or not len(rows) or t0 > cfg.max_iters):
            log(f"  {activation} hidden units, iteration {t0 - 1:>6}: {len(rows)}/{n_runs} runs training")
    return runs


def train_batched(
    settings: list[str],
    seeds: list[int],
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    log: Callable[[str], None] | None = None,
) -> dict[str, Runs]:
    """Train every (setting, seed) pair; seed k starts from the same weights in every setting.
    Settings that share the hidden activation train as one stack. Per setting, the result equals
    seed for seed what train_plain gives (the tests check this). x (B, n_in), y (B,)."""
    out: dict[str, Runs] = {}
    for activation in ("sigmoid", "relu"):
        group = [s for s in settings if SETTINGS[s][0] == activation]
        if not group:
            continue
        one = stack_params(seeds, x.shape[1], cfg)
        p = {k: torch.cat([v] * len(group), dim=-1) for k, v in one.items()}
        ce = torch.tensor([SETTINGS[s][1] == "ce" for s in group for _ in seeds])
        runs = train_stack(activation, ce, p, x, y, cfg, log)
        n = len(seeds)
        for i, s in enumerate(group):
            cols = slice(i * n, (i + 1) * n)
            out[s] = Runs(runs.iterations[cols], runs.diverged_at[cols],
                          runs.losses[:, cols], runs.accuracies[:, cols])
    return {s: out[s] for s in settings}


# ---------------------------------------------------------------------------------------------
# Statistics over seeds and figures (2.5), shared with part 3.
# ---------------------------------------------------------------------------------------------


def summarize_stops(iterations: list[int | None], diverged_at: list[int | None]) -> dict[str, Any]:
    """Distribution of iterations to the stop rule over seeds. A run that never stopped counts as
    slower than every run that did, so a quantile that falls among those runs is None ("not
    reached"), never a made-up number."""
    n = len(iterations)
    reached = sorted(i for i in iterations if i is not None)
    ranked = np.array(reached + [np.inf] * (n - len(reached)))

    def quantile(q: float) -> float | None:
        value = float(np.quantile(ranked, q, method="inverted_cdf"))
        return value if np.isfinite(value) else None

    return {
        "n_seeds": n,
        "reached": len(reached),
        "reach_rate": len(reached) / n,
        "diverged": sum(d is not None for d in diverged_at),
        "median": quantile(0.5),
        "q1": quantile(0.25),
        "q3": quantile(0.75),
        "p10": quantile(0.1),
        "p90": quantile(0.9),
        "min": reached[0] if reached else None,
        "max_reached": reached[-1] if reached else None,
        "mean_reached": float(np.mean(reached)) if reached else None,
    }


def rank_key(summary: dict[str, Any]) -> tuple[float, float]:
    """Order for "which setting is fastest": the median iterations (not reached = infinite), then
    the share of seeds that never reached the stop."""
    median = summary["median"]
    return (np.inf if median is None else median, 1 - summary["reach_rate"])


def share_stopped(iterations: list[int | None], max_iters: int) -> np.ndarray:
    """(max_iters + 1,) share of runs whose stop rule held by iteration t."""
    counts = np.zeros(max_iters + 1)
    for i in iterations:
        if i is not None:
            counts[i] += 1
    return np.cumsum(counts) / len(iterations)


def plot_curve(values: np.ndarray, ylabel: str, title: str, path: Path, stop: int | None,
               log_y: bool = False) -> None:
    """One run's loss or accuracy (max_iters + 1,) against iteration, NaN after the stop ignored;
    the stop iteration is marked."""
    import matplotlib.pyplot as plt

    t = np.flatnonzero(~np.isnan(values))
    fig, ax = plt.subplots(figsize=(5, 3.4), layout="constrained")
    ax.plot(t, values[t], lw=1.5)
    if stop is not None:
        ax.axvline(stop, color="tab:red", ls="--", lw=1, label=f"100% at iteration {stop}")
        ax.legend(loc="best", fontsize=8)
    ax.set(xlabel="iteration (SGD updates)", ylabel=ylabel, title=title)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_share_stopped(iterations: dict[str, list[int | None]], max_iters: int, title: str,
                       ylabel: str, path: Path) -> None:
    """The share of seeds that reached the stop rule against iteration, one line per label."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    t = np.arange(max_iters + 1)
    for label, its in iterations.items():
        ax.step(t, 100 * share_stopped(its, max_iters), where="post", lw=1.8,
                label=f"{label} ({sum(i is not None for i in its)}/{len(its)})")
    ax.set(xlabel="iteration (SGD updates)", ylabel=ylabel, title=title, ylim=(-2, 102))
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=8)
    save_figure(fig, path)


def plot_median_band(curves: dict[str, np.ndarray], ylabel: str, title: str, path: Path,
                     log_y: bool = False) -> None:
    """Median over seeds with the interquartile band, curves (max_iters + 1, S) per label. After a
    run stopped its last value is held, so every seed counts at every iteration."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    for label, values in curves.items():
        held = hold_last(values)
        t = np.flatnonzero(~np.isnan(held).all(1))
        q1, med, q3 = np.nanquantile(held[t], [0.25, 0.5, 0.75], axis=1)
        (line,) = ax.plot(t, med, lw=1.5, label=label)
        ax.fill_between(t, q1, q3, color=line.get_color(), alpha=0.2, lw=0)
    ax.set(xlabel="iteration (SGD updates)", ylabel=ylabel, title=title)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    save_figure(fig, path)


def hold_last(values: np.ndarray) -> np.ndarray:
    """(T, S) with each column's NaN tail filled by its last finite value."""
    held = values.copy()
    for s in range(held.shape[1]):
        finite = np.flatnonzero(np.isfinite(held[:, s]))
        if finite.size:
            held[finite[-1] + 1:, s] = held[finite[-1], s]
    return held


# ---------------------------------------------------------------------------------------------
# Command line, shared with part 3: the handout's training settings, each a flag.
# ---------------------------------------------------------------------------------------------


def add_training_args(parser: Parser) -> None:
    """Flags every training script has; defaults are the handout's."""
    add = parser.add_argument
    add("--data-dir", type=Path, default=Path("data"), help="folder with the course-layout .npy files")
    add("--out", type=Path, default=Path("figures"), help="folder for the figures and the results JSON")
    add("--seeds", type=bounded_int(1, MAX_SEEDS), default=1, help="number of seeds (paired across settings)")
    add("--first-seed", type=bounded_int(0, MAX_FIRST_SEED), default=0,
        help="seeds are first-seed, first-seed + 1, ...")
    add("--lr", type=positive(float), default=0.1, help="SGD learning rate (handout: 0.1)")
    add("--max-iters", type=bounded_int(0, 100_000), default=10_000,
        help="cap on SGD updates (handout: 10,000)")
    add("--init-std", type=positive(float), default=0.1,
        help="std of the truncated normal weights, redrawn beyond 2 std (handout: 0.1)")
    add("--init-bias", type=finite_float, default=0.1, help="initial value of every bias (handout: 0.1)")
    add("--engine", choices=("batched", "plain"), default="batched",
        help="batched: all seeds trained together; plain: nn.Module + optim.SGD, one seed at a time")
    add("--diverge-factor", type=positive(float), default=5.0,
        help="a run diverged when its loss exceeds this many times its initial loss (or is not finite)")
    add("--quiet", action="store_true", help="no progress lines")


MAX_SEEDS = 10**6
MAX_FIRST_SEED = 2**62  # so that every seed fits torch's 64-bit generator seed


def seed_list(args: argparse.Namespace) -> list[int]:
    return list(range(args.first_seed, args.first_seed + args.seeds))


def results_header(script: str, args: argparse.Namespace, dataset: Dataset) -> dict[str, Any]:
    """What every results file says about how it was made: the flags, the seeds, the data, the
    library versions. The same command on the same data gives the same header."""
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())}
    config.pop("quiet", None)
    return {
        "script": script,
        "command": f"python {script} " + " ".join(sys.argv[1:]) if Path(sys.argv[0]).name == script
        else None,
        "config": config,
        "seeds": seed_list(args),
        "data": dataset.record(),
        "versions": library_versions(),
    }


def make_logger(args: argparse.Namespace) -> Callable[[str], None] | None:
    return None if args.quiet else (lambda line: print(line, flush=True))


# ---------------------------------------------------------------------------------------------
# 2.1-2.5: the four settings, the single run the handout asks for, and the seed statistics.
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(description="Part 2: the 16-4-1 network on the random dataset, four settings (2.1-2.5).")
    add_training_args(parser)
    parser.add_argument("--hidden", type=positive(int), default=4, help="hidden units (Figure 3: 4)")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="comma-separated subset of " + ", ".join(SETTINGS))
    args = parser.parse_args(argv)
    args.settings = args.settings.split(",")
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown or len(set(args.settings)) != len(args.settings):
        raise InputError(f"--settings: unknown or repeated setting {unknown or args.settings}; "
                         f"choose from {', '.join(SETTINGS)}")
    return args


def train_settings(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor,
                   cfg: TrainConfig) -> dict[str, Runs]:
    """Every setting x every seed, with the engine the flags chose."""
    seeds, log = seed_list(args), make_logger(args)
    if args.engine == "batched":
        return train_batched(args.settings, seeds, x, y, cfg, log)
    out = {}
    for setting in args.settings:
        per_seed = [train_plain(plain_model(setting, seed, x.shape[1], cfg), x, y, SETTINGS[setting][1], cfg)
                    for seed in seeds]
        out[setting] = Runs(
            [r.iterations[0] for r in per_seed], [r.diverged_at[0] for r in per_seed],
            np.concatenate([r.losses for r in per_seed], axis=1),
            np.concatenate([r.accuracies for r in per_seed], axis=1),
        )
        if log:
            log(f"  {setting}: {len(seeds)} seeds done")
    return out


def describe(iterations: int | None, diverged_at: int | None, final_accuracy: float | None) -> str:
    """A run's outcome in words, for the printed tables."""
    if iterations is not None:
        return f"{iterations} iteration{'s' * (iterations != 1)}"
    if diverged_at is not None:
        return f"diverged at iteration {diverged_at}"
    return f"not reached, final accuracy {100 * (final_accuracy or 0):.1f}%"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_out_dir(args.out)
    data = load_dataset(args.data_dir, "random")
    use_headless_matplotlib()
    torch.manual_seed(args.first_seed)  # nothing below draws from it; weights come from seed_generator
    cfg = TrainConfig(lr=args.lr, max_iters=args.max_iters, init_std=args.init_std,
                      init_bias=args.init_bias, hidden=args.hidden, diverge_factor=args.diverge_factor)
    x = torch.tensor(data.images.reshape(len(data.images), -1), dtype=DTYPE)  # (64, 16)
    y = torch.tensor(data.labels, dtype=DTYPE)  # (64,)
    print(f"Part 2: {len(args.settings)} settings x {args.seeds} seed(s) on {data.data_dir} "
          f"({data.provenance}), {args.engine} engine")
    started = time.perf_counter()
    runs = train_settings(args, x, y, cfg)
    seconds = time.perf_counter() - started

    results = results_header("part2_fc.py", args, data)
    results["iteration_rule"] = ITERATION_RULE
    results["settings"] = {}
    figures = []
    for setting, r in runs.items():
        activation, loss, question = SETTINGS[setting]
        finals_acc = [r.final(r.accuracies, s) for s in range(args.seeds)]
        finals_loss = [r.final(r.losses, s) for s in range(args.seeds)]
        # 2.1-2.4: the single run (the first seed) as the handout asks for it
        name = f"{activation} + {'L2' if loss == 'l2' else 'cross-entropy'}"
        stop = r.iterations[0]
        loss_png, acc_png = f"part2_{setting}_loss.png", f"part2_{setting}_accuracy.png"
        plot_curve(r.losses[:, 0], f"{'L2' if loss == 'l2' else 'cross-entropy'} loss",
                   f"{question} {name}: loss", args.out / loss_png, stop)
        plot_curve(100 * r.accuracies[:, 0], "training accuracy (%)",
                   f"{question} {name}: accuracy", args.out / acc_png, stop)
        figures += [loss_png, acc_png]
        results["settings"][setting] = {
            "question": question,
            "activation": activation,
            "loss": loss,
            "label": name,
            "iterations": r.iterations,
            "diverged": [d is not None for d in r.diverged_at],
            "diverged_at": r.diverged_at,
            "final_accuracy": finals_acc,
            "final_loss": finals_loss,
            "summary": summarize_stops(r.iterations, r.diverged_at),
            "single": {"seed": args.first_seed, "iterations": stop, "diverged_at": r.diverged_at[0],
                       "final_accuracy": finals_acc[0], "final_loss": finals_loss[0],
                       "loss_figure": loss_png, "accuracy_figure": acc_png},
        }

    # 2.5: rank the settings, by the single run and by the distribution over seeds
    settings = results["settings"]
    single_order = sorted(settings, key=lambda s: (settings[s]["single"]["iterations"] is None,
                                                   settings[s]["single"]["iterations"] or 0))
    seed_order = sorted(settings, key=lambda s: rank_key(settings[s]["summary"]))
    results["ranking"] = {"single_seed": single_order, "many_seeds": seed_order}
    results["paired_faster"] = paired_faster({s: r.iterations for s, r in runs.items()})
    if args.seeds > 1:
        labels = {s: settings[s]["label"] for s in settings}
        plot_share_stopped({labels[s]: runs[s].iterations for s in seed_order}, args.max_iters,
                           f"2.5 Share of {args.seeds} seeds at 100% training accuracy",
                           "seeds at 100% accuracy (%)", args.out / "part2_share_reached.png")
        plot_median_band({labels[s]: runs[s].losses for s in seed_order}, "loss (median, IQR band)",
                         f"2.5 Training loss over {args.seeds} seeds", args.out / "part2_loss_band.png",
                         log_y=True)
        figures += ["part2_share_reached.png", "part2_loss_band.png"]
    results["figures"] = figures
    write_json(args.out / "part2_fc.json", results)
    print_summary(results, seconds, args.out)
    return 0


ITERATION_RULE = (
    "iterations to 100% = the number of SGD updates made before the first full-batch evaluation "
    "at 100% training accuracy; iteration t evaluates the weights after t updates, and its "
    "forward pass also gives the gradient of update t + 1; null = not reached within the cap"
)


def paired_faster(iterations: dict[str, list[int | None]]) -> dict[str, dict[str, float]]:
    """share[a][b] = share of seeds where setting a reached 100% in strictly fewer iterations than
    setting b from the same initial weights (not reached counts as infinitely slow)."""
    def key(i: int | None) -> float:
        return np.inf if i is None else i

    return {
        a: {b: float(np.mean([key(i) < key(j) for i, j in zip(ia, ib, strict=True)]))
            for b, ib in iterations.items() if b != a}
        for a, ia in iterations.items()
    }


def fmt(value: float | None) -> str:
    """An iteration count for a printed summary ("-" = not reached)."""
    return "-" if value is None else f"{value:.0f}"


def print_summary(results: dict[str, Any], seconds: float, out: Path) -> None:
    """The 2.5 table a person reads at the end of the run."""
    settings = results["settings"]
    n = len(results["seeds"])
    print(f"\n2.5 ranking ({n} seed(s), {seconds:.1f} s of training):")
    print(f"  {'setting':<12} {'seed ' + str(results['seeds'][0]):<34} "
          + (f"{'median':>7} {'IQR':>13} {'reached':>9}" if n > 1 else ""))
    for s in results["ranking"]["many_seeds"]:
        one, summ = settings[s]["single"], settings[s]["summary"]
        line = f"  {s:<12} {describe(one['iterations'], one['diverged_at'], one['final_accuracy']):<34} "
        if n > 1:
            line += (f"{fmt(summ['median']):>7} {fmt(summ['q1']) + '-' + fmt(summ['q3']):>13} "
                     f"{summ['reached']:>4}/{n:<4}")
            if summ["diverged"]:
                line += f" ({summ['diverged']} diverged)"
        print(line)
    print(f"Wrote {len(results['figures'])} figures and part2_fc.json to {out}/")


if __name__ == "__main__":
    sys.exit(run_main(main))
