"""Part 2: the 16-4-1 fully connected network on the random dataset (handout questions 2.1-2.5).

Answers: how many SGD iterations does the network of Figure 3 need to reach 100% training
accuracy with sigmoid or ReLU hidden units (2.1-2.4) and L2 or cross-entropy loss, and which
setting is fastest, and why (2.5)? Over many seeds, paired: seed k starts from the same weights
in every setting and at every learning rate.

    python part2_fc.py                             # the handout's single run per setting
    python part2_fc.py --seeds 100 --lrs 0.01,0.03,0.1,0.3,1,3,10,30,100 --sweep-seeds 20 \\
                       --control-half-lr           # what `make all` runs

Every setting trains its seeds (and sweep and control runs) as one stack on one thread; with
--workers 2 (default) two settings train side by side in separate processes, with the same results.

Outputs in --out: part2_<setting>_loss.png and part2_<setting>_accuracy.png (2.1-2.4: the seed
with the median iteration count), part2_share_reached.png and part2_loss_band.png (2.5, with
--seeds > 1), part2_lr_sweep.png (with --lrs), and part2_fc.json: per setting and seed the
iterations to 100% (null = not reached), divergence, final loss and accuracy, dead hidden units;
the ranking; the learning-rate sweep; the half-rate control with predicted against measured factors.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
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
    probability,
    run_main,
    save_figure,
    use_headless_matplotlib,
    write_json,
)

# setting -> (hidden activation f, loss, handout question); the output unit is always a sigmoid
SETTINGS: dict[str, tuple[str, str, str]] = {
    "sigmoid-l2": ("sigmoid", "l2", "2.1"),
    "sigmoid-ce": ("sigmoid", "ce", "2.2"),
    "relu-l2": ("relu", "l2", "2.3"),
    "relu-ce": ("relu", "ce", "2.4"),
}
ITERATION_RULE = (
    "iterations to 100% = the number of SGD updates made before the first full-batch evaluation "
    "at 100% training accuracy; iteration t evaluates the weights after t updates, and its "
    "forward pass also gives the gradient of update t + 1; null = not reached within the cap"
)
TORCH_THREADS = 1  # fixed whatever the number of seeds (float32 results depend on it); 2 lose under load
MAX_SEEDS = 10**6
MAX_FIRST_SEED = 2**62  # so that every seed fits torch's 64-bit generator seed


# ---------------------------------------------------------------------------------------------
# Arguments: the handout's settings are the defaults (add_training_args is shared with part 3).
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
    add("--diverge-factor", type=positive(float), default=None,
        help="opt-in: a loss above this many times the initial loss also counts as diverged "
             "(default: only a non-finite loss)")
    add("--dtype", choices=("float32", "float64"), default="float32",
        help="float32 (default, as the handout's TensorFlow) or float64 for exactness checks")
    add("--device", choices=("cpu", "cuda"), default="cpu", help="where to train")
    add("--quiet", action="store_true", help="no progress lines")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(description="Part 2: the 16-4-1 network on the random dataset, four settings (2.1-2.5).")
    add_training_args(parser)
    add = parser.add_argument
    add("--hidden", type=positive(int), default=4, help="hidden units (Figure 3: 4)")
    add("--settings", default=",".join(SETTINGS), help="comma-separated subset of " + ", ".join(SETTINGS))
    add("--lrs", type=learning_rates, default=None,
        help="2.5 sweep: comma-separated learning rates, every setting at each (default: no sweep)")
    add("--sweep-seeds", type=bounded_int(1, MAX_SEEDS), default=None,
        help="seeds of the sweep, from --first-seed (default: --seeds)")
    add("--min-reach", type=probability, default=0.9,
        help="a sweep's best rate needs at least this share of seeds at 100%% (default 0.9)")
    add("--control-half-lr", action="store_true",
        help="2.5 control: the cross-entropy settings again at half the learning rate")
    add("--workers", type=bounded_int(1, 64), default=2,
        help="processes training settings side by side, each on one thread (cpu; default 2)")
    args = parser.parse_args(argv)
    args.settings = args.settings.split(",")
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown or len(set(args.settings)) != len(args.settings):
        raise InputError(f"--settings: unknown or repeated setting {unknown or args.settings}; "
                         f"choose from {', '.join(SETTINGS)}")
    check_device(args.device)
    return args


def check_device(device: str) -> None:
    """Refuse --device cuda, in one line, on a machine without a CUDA device (parts 2 and 3)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available here; use --device cpu")


def learning_rates(text: str) -> list[float]:
    """argparse type: comma-separated positive finite numbers, no repeats; returned sorted."""
    rates = [positive(float)(item.strip()) for item in text.split(",")]
    if len(set(rates)) != len(rates):
        raise argparse.ArgumentTypeError(f"{text!r} repeats a rate")
    return sorted(rates)


def seed_list(args: argparse.Namespace) -> list[int]:
    return list(range(args.first_seed, args.first_seed + args.seeds))


# ---------------------------------------------------------------------------------------------
# The network of Figure 3: inputs -> FC -> 4 units, f(Wx+b) -> FC -> 1 unit -> sigmoid.
# ---------------------------------------------------------------------------------------------


class FCNet(nn.Module):
    """R copies of the network (runs), one per row of every parameter; R = 1 is the single run.
    Every run sees the same batch x (B, n_in); forward returns the logits (R, B) (sigmoid in the loss).
    Layout: the hidden layer is one matrix product of all runs' (R * H, n_in) weights with x^T, and
    the output unit a weighted sum over the H units; both compute each run's numbers the same way
    whatever R is (tested), and cost less than a batched matmul over the runs."""

    def __init__(self, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                 activation: str) -> None:
        super().__init__()
        self.w1, self.b1, self.w2, self.b2 = (nn.Parameter(w) for w in (w1, b1, w2, b2))
        self.activation = activation  # "sigmoid" or "relu": the hidden layer's f

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden outputs f(W1 x + b1), (R, H, B), from the images x (B, n_in)."""
        z = self.w1 @ x.T + self.b1
        return torch.relu(z) if self.activation == "relu" else torch.sigmoid(z)

    def output(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits (R, B) of the output unit, w2 . h + b2, from the hidden outputs (R, H, B)."""
        return (self.w2 * hidden).sum(1) + self.b2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(x))

    def rows(self, keep: torch.Tensor) -> FCNet:
        """The runs selected by the bool mask keep (R,), as a new module."""
        return FCNet(*(p.detach()[keep] for p in (self.w1, self.b1, self.w2, self.b2)), self.activation)


def loss_from_logits(kind: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean loss over the batch (last axis) of logits z against labels y (broadcast).
    L2 = mean of (sigmoid(z) - y)^2, no factor 1/2. CE = binary cross-entropy of sigmoid(z),
    computed from z itself, so it stays finite where sigmoid(z) rounds to 0 or 1."""
    if kind == "l2":
        return ((torch.sigmoid(logits) - y) ** 2).mean(-1)
    return F.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none").mean(-1)


def accuracy_from_logits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Share of correct predictions (last axis); prediction = 1 when sigmoid(z) > 0.5."""
    return ((torch.sigmoid(logits) > 0.5) == (y > 0.5)).to(logits.dtype).mean(-1)


def is_diverged(loss: torch.Tensor, initial_loss: torch.Tensor, factor: float | None) -> torch.Tensor:
    """A run diverged when its loss is not finite or, only with the opt-in `factor`, has grown past
    `factor` times its loss at iteration 0. Elementwise."""
    bad = ~torch.isfinite(loss)
    return bad if factor is None else bad | (loss > factor * initial_loss)


def dead_units(model: FCNet, x: torch.Tensor) -> torch.Tensor:
    """Per run (R,), hidden units whose output is exactly 0 on every image: a dead ReLU gets no
    gradient again. A sigmoid unit is never exactly 0 here, so it counts 0 by the same rule."""
    with torch.no_grad():
        return (model.hidden(x) == 0).all(dim=2).sum(-1)


# ---------------------------------------------------------------------------------------------
# The handout's training settings, and seeding: seed k draws its initial weights from its own
# generator and nothing else draws.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Training as the handout fixes it; every field is a flag of the script."""

    lr: float = 0.1  # plain SGD step size, no momentum
    max_iters: int = 10_000  # cap on SGD updates
    init_std: float = 0.1  # std of the truncated normal weights
    init_bias: float = 0.1  # every bias starts at this constant
    hidden: int = 4  # units in the hidden layer (Figure 3)
    diverge_factor: float | None = None  # opt-in: loss above this times the initial loss = diverged
    dtype: torch.dtype = torch.float32
    device: str = "cpu"


def seed_generator(seed: int) -> torch.Generator:
    """The one random stream of seed `seed`: it draws that seed's initial weights, nothing else."""
    return torch.Generator().manual_seed(seed)


def truncated_normal(shape: tuple[int, ...], std: float, generator: torch.Generator) -> torch.Tensor:
    """float64 weights ~ N(0, std^2) with draws beyond two standard deviations redrawn (TensorFlow's
    truncated_normal), so every value lies in [-2 std, 2 std]. Drawn in float64 and cast by the caller,
    so a seed starts from the same weights in float32 and float64. torch's bounds a, b are absolute."""
    out = torch.empty(shape, dtype=torch.float64)
    return torch.nn.init.trunc_normal_(out, mean=0.0, std=std, a=-2 * std, b=2 * std, generator=generator)


def initial_weights(seeds: Sequence[int], n_in: int, cfg: TrainConfig) -> list[torch.Tensor]:
    """Initial weights of R = len(seeds) runs, run r from seed seeds[r] alone: w1 (R, H, n_in) (as
    nn.Linear's weight), b1 (R, H, 1), w2 (R, H, 1), b2 (R, 1). The same seed gives the same weights
    in every setting. Each seed draws its (n_in, H) input weights, then its (H, 1) output weights."""
    w1, w2 = [], []
    for seed in seeds:
        gen = seed_generator(seed)
        w1.append(truncated_normal((n_in, cfg.hidden), cfg.init_std, gen).T)
        w2.append(truncated_normal((cfg.hidden, 1), cfg.init_std, gen))
    n = len(seeds)
    weights = [torch.stack(w1), torch.full((n, cfg.hidden, 1), cfg.init_bias, dtype=torch.float64),
               torch.stack(w2), torch.full((n, 1), cfg.init_bias, dtype=torch.float64)]
    return [w.to(device=cfg.device, dtype=cfg.dtype).contiguous() for w in weights]


# ---------------------------------------------------------------------------------------------
# Training: plain SGD on many runs of one setting at once, with optim.SGD and autograd.
#
# The objective is the sum over runs of scale_r * (run r's mean loss): its gradient w.r.t. run r's
# weights is scale_r times run r's own gradient, since no run's loss depends on another's weights.
# Plain SGD at rate lr then moves run r by lr * scale_r * grad_r, exactly the step of rate
# lr_r = lr * scale_r. At the base rate scale_r = 1.0 changes no bit, and at lr / 2 the factor 0.5
# is a power of two, so its steps are bit for bit those of SGD at lr / 2 (rounding commutes with it).
# Each run's arithmetic never mixes with another's, so a run's result is the same alone or in any
# company (tests check it). Runs that stop are dropped from the stack; plain SGD keeps no state.
# ---------------------------------------------------------------------------------------------


def train_stack(setting: str, runs: Sequence[tuple[int, float]], x: torch.Tensor, y: torch.Tensor,
                cfg: TrainConfig, band_runs: int = 0, keep_curves: bool = False,
                log: Callable[[str], None] | None = None, chunk: int | None = None) -> dict[str, Any]:
    """Train the runs (seed, learning rate) of `setting` together on x (B, n_in), labels y (B,).

    Returns "runs": per run {iterations, diverged_at (None unless diverged), final_loss and
    final_accuracy (at the last iteration up to the stop with a finite loss), dead_start, dead_end
    (dead hidden units at iteration 0 and at the stop)}; "band": (3, T) quartiles of the loss over the
    first band_runs runs at iterations 0..T-1 (a stopped run holds its last value), or None;
    "curves": {"loss", "accuracy"} (T,) of the first run, when keep_curves.
    The loop only steps and keeps each iteration's logits; the stop rule is applied to a chunk of
    iterations at a time (fewer small operations per step; by default up to 100 iterations, fewer
    for big stacks so that a chunk's logits stay within 2**22 numbers). A run's path up to its stop does not
    depend on the steps it takes after it, which are discarded with the run.
    """
    activation, loss_kind, _ = SETTINGS[setting]
    n = len(runs)
    model = FCNet(*initial_weights([seed for seed, _ in runs], x.shape[1], cfg), activation)
    scale = torch.tensor([lr / cfg.lr for _, lr in runs], dtype=cfg.dtype, device=cfg.device)
    active = np.arange(n)  # which run each row of the stack holds
    out = [{"iterations": None, "diverged_at": None} for _ in runs]
    last = np.full((2, n), np.nan)  # per run: last finite loss and its accuracy
    bands, curves = [], []
    t0 = 0
    while len(active):
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)  # plain SGD has no state to carry
        logits, alive = [], []
        length = chunk or int(np.clip(2**22 // (len(active) * x.shape[0]), 1, 100))
        for t in range(t0, min(t0 + length, cfg.max_iters + 1)):
            hidden = model.hidden(x)
            z = model.output(hidden)
            logits.append(z.detach())
            alive.append(hidden.detach().amax(dim=2) > 0)  # (R, H) unit not dead (outputs are >= 0)
            if t < cfg.max_iters:  # update t + 1, from iteration t's forward pass
                opt.zero_grad()
                (scale * loss_from_logits(loss_kind, z, y)).sum().backward()
                opt.step()
        with torch.no_grad():
            z = torch.stack(logits)  # (k, R, B)
            loss = loss_from_logits(loss_kind, z, y).double().cpu().numpy()  # (k, R)
            acc = accuracy_from_logits(z, y).double().cpu().numpy()
            dead = cfg.hidden - torch.stack(alive).sum(-1).cpu().numpy()  # (k, R)
        k, ts = len(logits), np.arange(t0, t0 + len(logits))
        if t0 == 0:
            initial, dead_start = loss[0], dead[0]
        diverged = is_diverged(torch.from_numpy(loss), torch.from_numpy(initial[active]),
                               cfg.diverge_factor).numpy()
        stop = diverged | (acc == 1.0) | (ts == cfg.max_iters)[:, None]
        first = np.where(stop.any(0), stop.argmax(0), k - 1)  # each run's last iteration that counts
        counts = np.arange(k)[:, None] <= first
        # hold each run's last finite loss (and its accuracy) through the chunk, up to its stop
        src = np.maximum.accumulate(np.where(np.isfinite(loss) & counts, np.arange(k)[:, None], -1), axis=0)
        cols = np.arange(len(active))
        held_loss = np.where(src >= 0, loss[src, cols], last[0, active])
        held_acc = np.where(src >= 0, acc[src, cols], last[1, active])
        last[:, active] = held_loss[-1], held_acc[-1]
        if band_runs:
            frame = np.tile(last[0, :band_runs], (k, 1))
            main = active < band_runs
            frame[:, active[main]] = held_loss[:, main]
            bands.append(np.nanquantile(frame, [0.25, 0.5, 0.75], axis=1))
        if keep_curves and active[0] == 0:  # the first run's curves, while it trains
            curves.append(np.where(counts, np.stack([loss, acc]), np.nan)[:, :, 0])
        for i in np.flatnonzero(stop.any(0)):
            j, r = first[i], active[i]
            key = "diverged_at" if diverged[j, i] else "iterations" if acc[j, i] == 1.0 else None
            if key:
                out[r][key] = t0 + int(j)
            out[r].update(final_loss=last[0, r], final_accuracy=last[1, r],
                          dead_start=int(dead_start[r]), dead_end=int(dead[j, i]))
        keep = ~stop.any(0)
        model, scale, active = model.rows(torch.from_numpy(keep).to(cfg.device)), scale[keep], active[keep]
        t0 += k
        if log and t0 % 1000 == 0:
            log(f"  {setting}: iteration {t0:>6}, {len(active)}/{n} runs still training")
    for record in out:  # plain floats for the results file; a loss never finite has no final value
        record.update({f: float(record[f]) if np.isfinite(record[f]) else None
                       for f in ("final_loss", "final_accuracy")})
    if keep_curves:  # up to the first run's stop
        end = next((out[0][k] for k in ("iterations", "diverged_at") if out[0][k] is not None), cfg.max_iters)
        loss_curve, acc_curve = np.concatenate(curves, axis=1)[:, :end + 1]
    return {"runs": out, "band": np.concatenate(bands, axis=1) if bands else None,
            "curves": {"loss": loss_curve, "accuracy": acc_curve} if keep_curves else None}


# ---------------------------------------------------------------------------------------------
# Statistics over seeds (2.5), shared with part 3.
# ---------------------------------------------------------------------------------------------


def summarize_stops(iterations: list[int | None], diverged_at: list[int | None]) -> dict[str, Any]:
    """Distribution of iterations to the stop rule over seeds. A run that never stopped counts as
    slower than every run that did, so a quantile that falls among those runs is None ("not
    reached"), never a made-up number. Quantiles are order statistics (the lower median)."""
    n = len(iterations)
    reached = sorted(i for i in iterations if i is not None)
    ranked = np.array(reached + [np.inf] * (n - len(reached)))

    def quantile(q: float) -> float | None:
        value = float(np.quantile(ranked, q, method="inverted_cdf"))
        return value if np.isfinite(value) else None

    return {
        "n_seeds": n, "reached": len(reached), "reach_rate": len(reached) / n,
        "diverged": sum(d is not None for d in diverged_at),
        "median": quantile(0.5), "q1": quantile(0.25), "q3": quantile(0.75),
        "p10": quantile(0.1), "p90": quantile(0.9),
        "min": reached[0] if reached else None, "max_reached": reached[-1] if reached else None,
        "mean_reached": float(np.mean(reached)) if reached else None,
    }


def rank_key(summary: dict[str, Any]) -> tuple[float, float]:
    """Order for "which setting is fastest": the median iterations (not reached = infinite), then
    the share of seeds that never reached the stop."""
    median = summary["median"]
    return (np.inf if median is None else median, 1 - summary["reach_rate"])


def as_rank(iterations: int | None) -> float:
    return math.inf if iterations is None else iterations


def typical_seed(seeds: list[int], iterations: list[int | None]) -> tuple[int, float]:
    """The seed with the (lower) median iteration count, not reached ranked last, ties to the
    smallest seed; and its percentile, the share of seeds with strictly fewer iterations."""
    order = sorted(zip(iterations, seeds, strict=True), key=lambda p: (as_rank(p[0]), p[1]))
    its, seed = order[(len(order) - 1) // 2]
    return seed, sum(as_rank(i) < as_rank(its) for i in iterations) / len(iterations)


def paired_faster(iterations: dict[str, list[int | None]]) -> dict[str, dict[str, float]]:
    """share[a][b] = share of seeds where setting a reached 100% in strictly fewer iterations than
    setting b from the same initial weights (not reached counts as infinitely slow)."""
    return {a: {b: float(np.mean([as_rank(i) < as_rank(j) for i, j in zip(ia, ib, strict=True)]))
                for b, ib in iterations.items() if b != a}
            for a, ia in iterations.items()}


def dead_units_summary(iterations: list[int | None], dead_end: list[int]) -> dict[str, int]:
    """How the seeds with a dead hidden unit at the end relate to those that missed 100%."""
    missed = [i is None for i in iterations]
    dead = [d > 0 for d in dead_end]
    return {"seeds_with_dead_end": sum(dead), "missed": sum(missed),
            "missed_with_dead_end": sum(m and d for m, d in zip(missed, dead, strict=True)),
            "reached_with_dead_end": sum(d and not m for m, d in zip(missed, dead, strict=True))}


# ---------------------------------------------------------------------------------------------
# 2.5: the learning-rate sweep (is the ranking fair?) and the half-rate control (why is L2 slow?).
# ---------------------------------------------------------------------------------------------


def sweep_results(runs: dict[str, dict[tuple[int, float], dict]], lrs: list[float], seeds: list[int],
                  base_lr: float, min_reach: float) -> dict[str, Any]:
    """Per setting and rate the iterations of every seed, their median and reach rate, the best rate
    (smallest median among rates reached by >= min_reach of the seeds), and the rankings."""
    settings, at_base = {}, {}
    for setting, by_run in runs.items():
        its = [[by_run[(seed, lr)]["iterations"] for seed in seeds] for lr in lrs]
        divs = [[by_run[(seed, lr)]["diverged_at"] for seed in seeds] for lr in lrs]
        summaries = [summarize_stops(i, d) for i, d in zip(its, divs, strict=True)]
        fit = [k for k, s in enumerate(summaries) if s["reach_rate"] >= min_reach and s["median"] is not None]
        best = min(fit, key=lambda k: summaries[k]["median"], default=None)
        settings[setting] = {
            "iterations": its, "median": [s["median"] for s in summaries],
            "reach_rate": [s["reach_rate"] for s in summaries],
            "best": None if best is None else {"lr": lrs[best], "median": summaries[best]["median"],
                                               "reach_rate": summaries[best]["reach_rate"],
                                               "at_edge": best in (0, len(lrs) - 1)},
        }
        if base_lr in lrs:
            at_base[setting] = summaries[lrs.index(base_lr)]
    best_rank = sorted(settings, key=lambda s: math.inf if settings[s]["best"] is None
                       else settings[s]["best"]["median"])
    base_rank = sorted(at_base, key=lambda s: rank_key(at_base[s])) if at_base else None
    return {"lrs": lrs, "seeds": seeds, "min_reach": min_reach, "settings": settings,
            "ranking_at_best": best_rank, "ranking_at_base": base_rank,
            "ranking_survives": None if base_rank is None else base_rank == best_rank}


# (id, numerator, denominator, predicted, kind, basis); "<setting>@half" = that setting at lr / 2
FACTORS = [
    ("l2_over_ce_sigmoid", "sigmoid-l2", "sigmoid-ce", 2.0, "approx", "L2_CE"),
    ("l2_over_ce_relu", "relu-l2", "relu-ce", 2.0, "approx", "L2_CE"),
    ("sigmoid_over_relu_l2", "sigmoid-l2", "relu-l2", 4.0, "upper bound", "ACT"),
    ("sigmoid_over_relu_ce", "sigmoid-ce", "relu-ce", 4.0, "upper bound", "ACT"),
    ("l2_over_half_lr_ce_sigmoid", "sigmoid-l2", "sigmoid-ce@half", 1.0, "approx", "HALF"),
    ("l2_over_half_lr_ce_relu", "relu-l2", "relu-ce@half", 1.0, "approx", "HALF"),
]
BASES = {
    "L2_CE": "dL2/dz = 2*yhat*(1-yhat)*dCE/dz, and 2*yhat*(1-yhat) = 1/2 at yhat = 1/2",
    "ACT": "sigmoid' <= 1/4, ReLU' = 1 where active: an upper bound on how much slower sigmoid units learn",
    "HALF": "L2's gradient is about 1/2 of CE's near yhat = 1/2, so CE at half the rate should match L2",
}


def factor_table(medians: dict[str, float | None]) -> list[dict[str, Any]]:
    """Predicted against measured ratios of median iterations (null where a median is not reached)."""
    rows = []
    for fid, num, den, predicted, kind, basis in FACTORS:
        if num in medians and den in medians:
            a, b = medians[num], medians[den]
            rows.append({"id": fid, "numerator": num, "denominator": den.replace("@half", " at lr/2"),
                         "predicted": predicted, "predicted_kind": kind, "basis": BASES[basis],
                         "measured": None if a is None or b is None or b == 0 else a / b})
    return rows


# ---------------------------------------------------------------------------------------------
# Figures (plot_curve, plot_share_stopped and plot_median_band are shared with part 3).
# ---------------------------------------------------------------------------------------------


def plot_curve(values: np.ndarray, ylabel: str, title: str, path: Path, stop: int | None,
               log_y: bool = False) -> None:
    """One run's loss or accuracy (T,) against iteration, NaN ignored; the stop iteration is marked."""
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


def log_scale(values: np.ndarray) -> bool:
    """Log axis when the positive values span more than a decade."""
    v = values[np.isfinite(values) & (values > 0)]
    return bool(v.size) and v.max() > 10 * v.min()


def share_stopped(iterations: list[int | None], max_iters: int) -> np.ndarray:
    """(max_iters + 1,) share of runs whose stop rule held by iteration t."""
    counts = np.bincount([i for i in iterations if i is not None], minlength=max_iters + 1)
    return np.cumsum(counts[:max_iters + 1]) / len(iterations)


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


def draw_band(ax: Any, band: np.ndarray, label: str) -> None:
    """Median line and interquartile band from quartiles band (3, T)."""
    t = np.arange(band.shape[1])
    (line,) = ax.plot(t, band[1], lw=1.5, label=label)
    ax.fill_between(t, band[0], band[2], color=line.get_color(), alpha=0.2, lw=0)


def plot_median_band(curves: dict[str, np.ndarray], ylabel: str, title: str, path: Path,
                     log_y: bool = False) -> None:
    """Median over seeds with the interquartile band, full curves (T, S) per label (part 3). After a
    run stopped (NaN) its last value is held, so every seed counts at every iteration."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    for label, values in curves.items():
        held = values.copy()
        for s in range(held.shape[1]):
            finite = np.flatnonzero(np.isfinite(held[:, s]))
            if finite.size:
                held[finite[-1] + 1:, s] = held[finite[-1], s]
        draw_band(ax, np.nanquantile(held[~np.isnan(held).all(1)], [0.25, 0.5, 0.75], axis=1), label)
    ax.set(xlabel="iteration (SGD updates)", ylabel=ylabel, title=title, yscale="log" if log_y else "linear")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    save_figure(fig, path)


def plot_loss_bands(bands: dict[str, np.ndarray], labels: dict[str, str], n_seeds: int, path: Path) -> None:
    """2.5: median loss and interquartile band per setting, L2 and cross-entropy on separate axes
    (their scales differ), log scale."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    for ax, kind, name in zip(axes, ("l2", "ce"), ("L2", "cross-entropy"), strict=True):
        for s in [s for s in bands if SETTINGS[s][1] == kind]:
            draw_band(ax, bands[s], labels[s])
        ax.set(xlabel="iteration (SGD updates)", ylabel=f"{name} loss (median, IQR)", yscale="log",
               title=f"2.5 {name} loss over {n_seeds} seeds")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    save_figure(fig, path)


def plot_sweep(sweep: dict[str, Any], labels: dict[str, str], path: Path) -> None:
    """Median iterations to 100% against learning rate (log-log) with each setting's best rate
    starred; below, the share of seeds that reached 100%."""
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True, layout="constrained",
                                      height_ratios=(2, 1))
    lrs = np.array(sweep["lrs"])
    for s, row in sweep["settings"].items():
        med = np.array([np.nan if m is None else m for m in row["median"]])
        (line,) = top.plot(lrs, med, "o-", lw=1.5, label=labels[s])
        if row["best"]:
            top.plot(row["best"]["lr"], row["best"]["median"], "*", ms=14, color=line.get_color(), mec="k")
        bottom.plot(lrs, 100 * np.array(row["reach_rate"]), "o-", lw=1.5, color=line.get_color())
    top.set(xscale="log", yscale="log", ylabel="median iterations to 100%",
            title=f"2.5 Learning-rate sweep, {len(sweep['seeds'])} seeds (star: best rate)")
    bottom.axhline(100 * sweep["min_reach"], color="grey", ls=":", lw=1)
    bottom.set(xlabel="learning rate", ylabel="seeds at 100% (%)", ylim=(-3, 103))
    for ax in (top, bottom):
        ax.grid(alpha=0.3, which="both")
    top.legend(loc="best", fontsize=8)
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# main: 2.1-2.4 (the typical single run per setting) and 2.5 (seeds, sweep, control).
# ---------------------------------------------------------------------------------------------


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
    return None if args.quiet else progress


def progress(line: str) -> None:
    """A progress line, printed at once (a module-level function: it travels to worker processes)."""
    print(line, flush=True)


def plan_runs(args: argparse.Namespace, setting: str) -> list[tuple[int, float]]:
    """The (seed, learning rate) runs of one setting: the main study first (its loss band is drawn),
    then the half-rate control and the sweep; a run asked for twice trains once."""
    runs = [(seed, args.lr) for seed in seed_list(args)]
    if args.control_half_lr and SETTINGS[setting][1] == "ce":
        runs += [(seed, args.lr / 2) for seed in seed_list(args)]
    if args.lrs:
        runs += [(seed, lr) for lr in args.lrs for seed in sweep_seeds(args)]
    return list(dict.fromkeys(runs))


def sweep_seeds(args: argparse.Namespace) -> list[int]:
    return list(range(args.first_seed, args.first_seed + (args.sweep_seeds or args.seeds)))


def half_lr_control(by_run: dict[str, dict[tuple[int, float], dict]], seeds: list[int],
                    lr: float) -> dict[str, Any]:
    """2.5 control: the cross-entropy settings' iterations at rate lr (half the base rate)."""
    out = {}
    for setting in [s for s in by_run if SETTINGS[s][1] == "ce"]:
        runs = [by_run[setting][(seed, lr)] for seed in seeds]
        its = [r["iterations"] for r in runs]
        out[setting] = {"iterations": its, "summary": summarize_stops(its, [r["diverged_at"] for r in runs])}
    return out


def setting_record(setting: str, seeds: list[int], by_run: dict[tuple[int, float], dict],
                   lr: float) -> dict[str, Any]:
    """The main study's per-seed results of one setting at rate lr."""
    activation, loss, question = SETTINGS[setting]
    runs = [by_run[(seed, lr)] for seed in seeds]
    its, div = [r["iterations"] for r in runs], [r["diverged_at"] for r in runs]
    return {
        "question": question, "activation": activation, "loss": loss,
        "label": f"{activation} + {'L2' if loss == 'l2' else 'cross-entropy'}",
        "iterations": its, "diverged": [d is not None for d in div], "diverged_at": div,
        "final_accuracy": [r["final_accuracy"] for r in runs], "final_loss": [r["final_loss"] for r in runs],
        "dead_units": [r["dead_end"] for r in runs], "dead_units_start": [r["dead_start"] for r in runs],
        "dead_units_summary": dead_units_summary(its, [r["dead_end"] for r in runs]),
        "summary": summarize_stops(its, div),
    }


def single_run(setting: str, rec: dict[str, Any], seeds: list[int], x: torch.Tensor, y: torch.Tensor,
               cfg: TrainConfig, out: Path) -> dict[str, Any]:
    """2.1-2.4: the seed with the median iteration count, trained again alone for its full curves
    (a seed's run does not depend on its company, so it must stop where it stopped in the stack)."""
    seed, percentile = typical_seed(seeds, rec["iterations"])
    k = seeds.index(seed)
    result = train_stack(setting, [(seed, cfg.lr)], x, y, cfg, keep_curves=True)
    alone = result["runs"][0]
    if (alone["iterations"], alone["diverged_at"]) != (rec["iterations"][k], rec["diverged_at"][k]):
        raise RuntimeError(f"{setting} seed {seed}: alone {alone} differs from the stack (company matters)")
    loss_png, acc_png = f"part2_{setting}_loss.png", f"part2_{setting}_accuracy.png"
    losses, stop = result["curves"]["loss"], alone["iterations"]
    title = f"{rec['question']} {rec['label']}, seed {seed} (median)"
    plot_curve(losses, f"{'L2' if rec['loss'] == 'l2' else 'cross-entropy'} loss", f"{title}: loss",
               out / loss_png, stop, log_y=log_scale(losses))
    plot_curve(100 * result["curves"]["accuracy"], "training accuracy (%)", f"{title}: accuracy",
               out / acc_png, stop)
    return {"seed": seed, "percentile": percentile, "iterations": stop, "diverged_at": alone["diverged_at"],
            "final_accuracy": alone["final_accuracy"], "final_loss": alone["final_loss"],
            "loss_figure": loss_png, "accuracy_figure": acc_png}


def train_settings(settings: list[str], plans: list[list[tuple[int, float]]], x: torch.Tensor,
                   y: torch.Tensor, cfg: TrainConfig, band: list[int], log: Callable[[str], None] | None,
                   workers: int) -> list[dict[str, Any]]:
    """train_stack for every setting, with its runs plans[i] and band runs band[i]; with workers > 1,
    one setting per spawned process at a time, each on TORCH_THREADS threads (the same arithmetic,
    so the same results as in this process)."""
    if workers == 1:
        return [train_stack(s, runs, x, y, cfg, b, log=log)
                for s, runs, b in zip(settings, plans, band, strict=True)]
    if log:
        log(f"  training {len(plans)} settings in {workers} processes ...")
    context = multiprocessing.get_context("spawn")
    n = len(plans)
    with ProcessPoolExecutor(workers, context, initializer=torch.set_num_threads,
                             initargs=(TORCH_THREADS,)) as pool:
        return list(pool.map(train_stack, settings, plans, [x] * n, [y] * n, [cfg] * n, band,
                             [False] * n, [log] * n))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_out_dir(args.out)
    data = load_dataset(args.data_dir, "random")
    use_headless_matplotlib()
    torch.set_num_threads(TORCH_THREADS)
    cfg = TrainConfig(lr=args.lr, max_iters=args.max_iters, init_std=args.init_std, init_bias=args.init_bias,
                      hidden=args.hidden, diverge_factor=args.diverge_factor,
                      dtype=getattr(torch, args.dtype), device=args.device)
    x = torch.tensor(data.images.reshape(len(data.images), -1), dtype=cfg.dtype, device=cfg.device)  # (B, 16)
    y = torch.tensor(data.labels, dtype=cfg.dtype, device=cfg.device)  # (64,)
    seeds, log = seed_list(args), make_logger(args)
    print(f"Part 2: {len(args.settings)} settings x {args.seeds} seed(s) on {data.data_dir} "
          f"({data.provenance}), "
          f"{args.dtype} on {args.device}" + (f"; sweep of {len(args.lrs)} rates" if args.lrs else ""))
    started = time.perf_counter()
    plans = [plan_runs(args, setting) for setting in args.settings]
    band = [len(seeds) if len(seeds) > 1 else 0] * len(plans)
    workers = min(args.workers, len(plans)) if args.device == "cpu" else 1
    stacks = train_settings(args.settings, plans, x, y, cfg, band, log, workers)
    by_run = {s: dict(zip(runs, stack["runs"], strict=True))
              for s, runs, stack in zip(args.settings, plans, stacks, strict=True)}
    bands = {s: stack["band"] for s, stack in zip(args.settings, stacks, strict=True)}

    results = results_header("part2_fc.py", args, data)
    results.update(iteration_rule=ITERATION_RULE, torch_threads=TORCH_THREADS, workers=workers, settings={})
    figures = []
    for setting in args.settings:
        rec = setting_record(setting, seeds, by_run[setting], args.lr)
        rec["single"] = single_run(setting, rec, seeds, x, y, cfg, args.out)
        figures += [rec["single"]["loss_figure"], rec["single"]["accuracy_figure"]]
        results["settings"][setting] = rec
    seconds = time.perf_counter() - started

    # 2.5: rank the settings, by the typical single runs and by the distribution over seeds
    settings = results["settings"]
    labels = {s: settings[s]["label"] for s in settings}
    results["ranking"] = {
        "single_seed": sorted(settings, key=lambda s: as_rank(settings[s]["single"]["iterations"])),
        "many_seeds": sorted(settings, key=lambda s: rank_key(settings[s]["summary"])),
    }
    results["paired_faster"] = paired_faster({s: settings[s]["iterations"] for s in settings})
    if args.seeds > 1:
        order = results["ranking"]["many_seeds"]
        plot_share_stopped({labels[s]: settings[s]["iterations"] for s in order}, args.max_iters,
                           f"2.5 Share of {args.seeds} seeds at 100% training accuracy",
                           "seeds at 100% accuracy (%)", args.out / "part2_share_reached.png")
        plot_loss_bands({s: bands[s] for s in order}, labels, args.seeds, args.out / "part2_loss_band.png")
        figures += ["part2_share_reached.png", "part2_loss_band.png"]
    if args.lrs:
        results["lr_sweep"] = sweep_results(by_run, args.lrs, sweep_seeds(args), args.lr, args.min_reach)
        plot_sweep(results["lr_sweep"], labels, args.out / "part2_lr_sweep.png")
        figures.append("part2_lr_sweep.png")
    if args.control_half_lr:
        half = half_lr_control(by_run, seeds, args.lr / 2)
        medians = {s: settings[s]["summary"]["median"] for s in settings}
        medians.update({f"{s}@half": half[s]["summary"]["median"] for s in half})
        results["controls"] = {"half_lr_ce": {"lr": args.lr / 2, "settings": half},
                               "factors": factor_table(medians)}
    results["figures"] = figures
    write_json(args.out / "part2_fc.json", results)
    print_summary(results, seconds, args.out)
    return 0


def describe(iterations: int | None, diverged_at: int | None, final_accuracy: float | None) -> str:
    """A run's outcome in words, for the printed tables."""
    if iterations is not None:
        return f"{iterations} iteration{'s' * (iterations != 1)}"
    if diverged_at is not None:
        return f"diverged at iteration {diverged_at}"
    return f"not reached, final accuracy {100 * (final_accuracy or 0):.1f}%"


def fmt(value: float | None) -> str:
    """An iteration count for a printed summary ("-" = not reached)."""
    return "-" if value is None else f"{value:.0f}"


def print_summary(results: dict[str, Any], seconds: float, out: Path) -> None:
    """The 2.5 answers a person reads at the end of the run."""
    settings, n = results["settings"], len(results["seeds"])
    print(f"\n2.5 ranking ({n} seed(s), {seconds:.1f} s of training); single run = the median seed:")
    print(f"  {'setting':<12} {'single run':<40} {'median':>7} {'IQR':>13} {'reached':>9}  dead units at end")
    for s in results["ranking"]["many_seeds"]:
        one, summ, dead = settings[s]["single"], settings[s]["summary"], settings[s]["dead_units_summary"]
        single = f"seed {one['seed']} (p{100 * one['percentile']:.0f}): " + describe(
            one["iterations"], one["diverged_at"], one["final_accuracy"])
        iqr = fmt(summ["q1"]) + "-" + fmt(summ["q3"])
        print(f"  {s:<12} {single:<40} {fmt(summ['median']):>7} {iqr:>13} "
              f"{summ['reached']:>4}/{n:<4}  {dead['seeds_with_dead_end']} seeds "
              f"({dead['missed_with_dead_end']} of the {dead['missed']} that missed 100%)"
              + (f"; {summ['diverged']} diverged" if summ["diverged"] else ""))
    if "lr_sweep" in results:
        sweep = results["lr_sweep"]
        print(f"Learning-rate sweep ({len(sweep['seeds'])} seeds; best = smallest median with >= "
              f"{100 * sweep['min_reach']:.0f}% reached):")
        for s, row in sweep["settings"].items():
            b = row["best"]
            print(f"  {s:<12} " + ("no rate qualifies" if b is None else
                  f"best lr {b['lr']:g}: median {fmt(b['median'])}, {100 * b['reach_rate']:.0f}% reached"
                  + (" (at the edge of the sweep)" if b["at_edge"] else "")))
        print(f"  ranking at the best rates: {', '.join(sweep['ranking_at_best'])}; at the base rate: "
              f"{', '.join(sweep['ranking_at_base'] or ['-'])}; survives: {sweep['ranking_survives']}")
    if "controls" in results:
        print(f"Control: cross-entropy at lr {results['controls']['half_lr_ce']['lr']:g}; median ratios:")
        for f in results["controls"]["factors"]:
            measured = "-" if f["measured"] is None else f"{f['measured']:.2f}"
            print(f"  {f['id']:<28} predicted {f['predicted']:g} ({f['predicted_kind']}), "
                  f"measured {measured}")
    print(f"Wrote {len(results['figures'])} figures and part2_fc.json to {out}/")


if __name__ == "__main__":
    sys.exit(run_main(main))
