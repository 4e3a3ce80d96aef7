"""Part 2: the 16-4-1 fully connected network on the random dataset (handout questions 2.1-2.5).

How many SGD iterations does the network of the handout's Figure 3 need to reach 100% training
accuracy with sigmoid or ReLU hidden units and L2 or cross-entropy loss (2.1-2.4)? Which is fastest,
and why (2.5)?

    python part2_fc.py                 # the handout's run: one seed per setting
    python part2_fc.py --seeds 100 --lrs 0.01,0.03,0.1,0.3,1,3,10,30,100 --sweep-seeds 20 \\
                       --control-half-lr --control-slope     # what `make all` runs for the report

Read top to bottom: the network, the two losses, the training loop (forward, loss, backward, SGD
step, the stop rule) and `main`; then the 2.5 study (many seeds, the rate sweep, the controls); then,
fenced off, what part 3 shares (flags, data loader, processes, statistics) and the plumbing.

One seed is one copy of the network. With --seeds N every parameter gets a leading run axis, so the
same forward pass, loss and SGD step train N copies at once; seed k starts from the same weights in
every setting and at every rate, and its numbers do not depend on its company (tested). The four
settings train side by side in --workers processes (default 2).

Outputs in --out: part2_fc.json (written first: no figure can lose it), part2_curves.png (2.1-2.4),
and with --seeds > 1 part2_share_reached.png and part2_loss_band.png (2.5), with --lrs
part2_lr_sweep.png.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import re
import signal
import stat
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# setting -> (hidden activation f, loss, handout question); the output unit is always a sigmoid
SETTINGS = {"sigmoid-l2": ("sigmoid", "l2", "2.1"), "sigmoid-ce": ("sigmoid", "ce", "2.2"),
            "relu-l2": ("relu", "l2", "2.3"), "relu-ce": ("relu", "ce", "2.4")}
LABELS = {s: f"{'ReLU' if act == 'relu' else act} + {loss.upper()}" for s, (act, loss, _) in SETTINGS.items()}


# ===== 2.1-2.4: the network of Figure 3, its two losses, plain SGD until 100% accuracy =====


class FCNet(nn.Module):
    """Figure 3: 16 pixels -> FC -> H hidden units f(W1 x + b1) -> FC -> 1 logit (sigmoid in the loss).
    R copies (runs) side by side: every parameter has a leading run axis, R = 1 is the handout's net.
    Every run sees the same images x (B, n_in); each run's numbers are the same whatever R is (tested)."""

    def __init__(self, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                 activation: str, slope: float = 1.0, spread: float = 1.0, mean: float = 1.0) -> None:
        super().__init__()
        # w1 (R, H, n_in), b1 (R, H, 1), w2 (R, H, 1), b2 (R, 1)
        self.w1, self.b1, self.w2, self.b2 = (nn.Parameter(w) for w in (w1, b1, w2, b2))
        self.activation = activation  # the hidden layer's f: "sigmoid" or "relu"
        self.controls = (slope, spread, mean)  # all 1 = the handout's net; else 2.5's controls (see seen)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden outputs h = f(W1 x + b1), (R, H, B)."""
        a = self.w1 @ x.T + self.b1
        return torch.relu(a) if self.activation == "relu" else torch.sigmoid(a)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Logits z = w2 . h + b2, (R, B), from the hidden outputs h (R, H, B)."""
        if self.controls != (1, 1, 1):  # 2.5's controls only, never the handout's run
            h = self.seen(h)
        return (self.w2 * h).sum(1) + self.b2

    def seen(self, h: torch.Tensor) -> torch.Tensor:
        """2.5's controls: what the output layer sees of h (R, H, B). Forward: each unit's mean over the
        images x mean, each image's difference from that mean x spread. Backward: whatever those values,
        autograd passes back slope x f'(a) to the hidden weights."""
        slope, spread, mean = self.controls
        values = h
        if (spread, mean) != (1, 1):
            centre = h.mean(-1, keepdim=True)  # (R, H, 1): each unit's mean over the images
            values = mean * centre + spread * (h - centre)
        return values.detach() + slope * (h - h.detach())


def loss_fn(kind: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the images (last axis). L2 = (sigmoid(z) - y)^2, no factor 1/2. CE = binary
    cross-entropy of sigmoid(z), computed from z so it stays finite where sigmoid(z) rounds to 0 or 1."""
    if kind == "l2":
        return ((torch.sigmoid(logits) - y) ** 2).mean(-1)
    return F.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none").mean(-1)


def accuracy_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Share of images classified right (last axis); the prediction is 1 where sigmoid(z) > 0.5."""
    return ((logits > 0) == (y > 0.5)).to(logits.dtype).mean(-1)


@dataclass(frozen=True)
class Config:
    """How a run trains (parts 2 and 3); every field is a flag, the defaults are the handout's."""

    lr: float = 0.1  # SGD step size, no momentum
    max_iters: int = 10_000  # cap on SGD updates
    init_std: float = 0.1  # std of the truncated normal weights (redrawn beyond 2 std)
    init_bias: float = 0.1  # every bias starts here
    diverge_factor: float | None = None  # opt-in: a loss above this times the initial loss = diverged
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    hidden: int = 4  # part 2: hidden units (Figure 3)
    padding: str = "valid"  # part 3: "valid" (16 -> 10 -> 4 pixels) or "same"
    lr_reg: float = 0.001  # 3.2: the width loss's learning rate
    log: bool = True  # progress lines


def train(setting: str, runs: Sequence[tuple[int, float]], x: np.ndarray, y: np.ndarray, cfg: Config,
          band_runs: int = 0, keep_curves: bool = False, controls: tuple[float, float, float] = (1, 1, 1)
          ) -> dict[str, Any]:
    """The handout's loop for the runs (seed, learning rate) of `setting`, all trained together on
    images x (B, n_in) and labels y (B,). Iteration t evaluates the weights after t updates; a run
    stops at its first 100% accuracy (iterations = t), at a non-finite loss (diverged_at = t) or at
    the cap, and leaves the stack. Returns numpy and plain numbers only (see Measurements.results).
    controls: (slope, spread, mean), all 1 but in 2.5's controls (FCNet.seen)."""
    activation, kind, _ = SETTINGS[setting]
    x, y = (torch.tensor(v, dtype=cfg.dtype, device=cfg.device) for v in (x, y))
    model = FCNet(*initial_weights([seed for seed, _ in runs], x.shape[1], cfg), activation, *controls)
    rates = torch.tensor([lr for _, lr in runs], dtype=cfg.dtype, device=cfg.device)  # (R,), per run
    measured = Measurements(len(runs), activation == "relu", band_runs, keep_curves, cfg)
    last_print = time.perf_counter()
    for t in range(cfg.max_iters + 1):
        h = model.hidden(x)  # (R, H, B)
        logits = model(h)  # (R, B)
        loss, accuracy = loss_fn(kind, logits, y), accuracy_fn(logits, y)  # (R,) each
        diverged = measured.observe(t, logits, loss, accuracy, h, y)  # (R,): non-finite loss (or the opt-in rule)
        stop = (accuracy == 1) | diverged | (t == cfg.max_iters)  # the handout's stop rule, plus safety
        if stop.any():
            measured.finish(stop, h, accuracy == 1, diverged)
            if stop.all():
                break
        loss.sum().backward()  # runs share no weights: the sum gives each run its own gradient
        with torch.no_grad():
            for p in model.parameters():
                # p -= lr * dL/dp, plain gradient descent, each run at its own rate; one fused multiply-add,
                # as optim.SGD computes it, so float32 numbers are SGD's to the last bit
                p.addcmul_(rates.view(-1, *[1] * (p.dim() - 1)), p.grad, value=-1)
                p.grad = None
        if stop.any():  # the stopped runs leave the stack
            model = FCNet(*(p.detach()[~stop] for p in model.parameters()), activation, *controls)
            rates = rates[~stop]
        if cfg.log and time.perf_counter() - last_print > PROGRESS_SECONDS:
            last_print = time.perf_counter()
            print(f"  {setting}: iteration {t}, {len(rates)}/{len(runs)} run(s) training", flush=True)
    return measured.results()


def initial_weights(seeds: Sequence[int], n_in: int, cfg: Config) -> list[torch.Tensor]:
    """w1 (R, H, n_in), b1 (R, H, 1), w2 (R, H, 1), b2 (R, 1): run r from seed seeds[r] alone, so a seed
    starts the same in every setting. Each seed draws its (n_in, H) input weights, then (H, 1)."""
    w1, w2 = [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)  # the seed's own stream: its weights and nothing else
        w1.append(truncated_normal((n_in, cfg.hidden), cfg.init_std, gen).T)
        w2.append(truncated_normal((cfg.hidden, 1), cfg.init_std, gen))
    n = len(seeds)
    bias = [torch.full(shape, cfg.init_bias, dtype=torch.float64) for shape in ((n, cfg.hidden, 1), (n, 1))]
    weights = [torch.stack(w1), bias[0], torch.stack(w2), bias[1]]
    return [w.to(device=cfg.device, dtype=cfg.dtype).contiguous() for w in weights]


def truncated_normal(shape: tuple[int, ...], std: float, gen: torch.Generator) -> torch.Tensor:
    """float64 draws of N(0, std^2), those beyond 2 std drawn again (TensorFlow's truncated_normal);
    float64 so that a seed starts from the same weights in float32 and float64."""
    out = torch.empty(shape, dtype=torch.float64)
    return nn.init.trunc_normal_(out, mean=0.0, std=std, a=-2 * std, b=2 * std, generator=gen)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sweep_seeds = 1 if args.sweep_seeds is None else args.sweep_seeds
    cfg = config_from_args(args, {"--hidden": (args.hidden, 1, 10_000), "--sweep-seeds": (sweep_seeds, 1, MAX_SEEDS),
                                  "--min-reach": (args.min_reach, 0, 1)}, hidden=args.hidden)
    data = load_dataset(args.data_dir, "random")
    plans = {s: plan_runs(args, s) for s in args.settings}
    args.workers = check_resources(args, cfg, len(plans), max(map(len, plans.values())),
                                   (args.hidden * 8 + 16) * len(data.labels) * 4 + args.max_iters // 500 * 8,
                                   "--seeds/--hidden/--max-iters")
    x, y = data.images.reshape(len(data.images), -1), data.labels
    print(f"Part 2: {len(args.settings)} settings x {args.seeds} seed(s), {max(map(len, plans.values()))} run(s) "
          f"per setting, on {data.describe}, {args.dtype} on {args.device}, {args.workers} process(es)", flush=True)
    band = args.seeds if args.seeds > 1 else 0
    jobs = [(s, plans[s], x, y, cfg, band, len(plans[s]) == 1) for s in args.settings]
    started = time.perf_counter()
    done = run_jobs(train, jobs, args.workers, (lambda i, _: print(
        f"  {args.settings[i]}: {len(jobs[i][1])} run(s) done", flush=True)) if cfg.log else lambda i, _: None)
    trained = dict(zip(args.settings, done, strict=True))

    results = results_header("part2_fc.py", args, data, cfg) | {"workers": args.workers}
    results["settings"] = {s: setting_record(s, plans[s], trained[s], args) for s in args.settings}
    results |= study_results(results["settings"], trained, plans, args) if args.seeds > 1 else {}
    if args.control_slope:  # 2.5's activation controls: a second round, never part of a default run
        results["controls"] |= activation_controls(results["settings"], x, y, cfg, args)
    if args.control_past_cap and args.seeds > 1:  # slow or stuck? The seeds that miss, run on past the cap
        results["controls"]["past_cap"] = past_cap_control(results["settings"], x, y, cfg, args)
    seconds = time.perf_counter() - started
    settings = results["settings"]
    its = {s: settings[s]["single"]["iterations"] for s in args.settings}
    single = sorted(args.settings, key=lambda s: (its[s] is None, its[s] or 0))  # by one seed; not reached last
    results["ranking"] = {"single_seed": single, "many_seeds": sorted(
        args.settings, key=lambda s: rank_key(settings[s]["summary"])) if args.seeds > 1 else single}
    write_json(args.out / "part2_fc.json", results | {"figures": []})  # no figure can lose the numbers
    results["figures"] = draw_figures(results, trained, x, y, cfg, args)
    write_json(args.out / "part2_fc.json", results)
    print_summary(results, seconds, args.out)
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(prog="part2_fc.py", description="Part 2: the 16-4-1 network, four settings (2.1-2.5).")
    add_training_args(parser)
    add = parser.add_argument
    add("--hidden", type=int, default=4, help="hidden units (Figure 3: 4; 1 to 10,000)")
    add("--settings", default=",".join(SETTINGS), help="comma-separated subset of " + ", ".join(SETTINGS))
    add("--lrs", default=None, help="2.5 sweep: comma-separated learning rates, every setting at each (default: none)")
    add("--sweep-seeds", type=int, default=None, help="seeds of the sweep (default --seeds)")
    add("--min-reach", type=float, default=0.9,
        help="a sweep's best rate needs this share of seeds at 100%% (default 0.9)")
    add("--control-half-lr", action="store_true", help="2.5 control: the CE settings again at lr / 2")
    add("--control-past-cap", type=int, default=None, metavar="K",
        help="2.5 control: each setting with seeds that miss the cap (not diverged) again, its seeds run on to K x "
             "--max-iters (K from 2 to 100): slow or stuck?")
    add("--control-slope", action="store_true",
        help="2.5 controls (needs relu-ce and sigmoid-ce): each CE setting again with the other's measured mean "
             "slope f'(a) in the backward pass; then with that slope and, in what the output layer sees, the "
             "other's spread of h across the images or its mean over them")
    args = parser.parse_args(argv)
    args.settings = args.settings.split(",")
    if set(args.settings) - set(SETTINGS) or len(set(args.settings)) != len(args.settings):
        raise InputError(f"argument --settings: give distinct settings from {', '.join(SETTINGS)}")
    args.lrs = None if args.lrs is None else sorted(positive_rate(item, args.lrs) for item in args.lrs.split(","))
    if args.lrs and len(set(args.lrs)) != len(args.lrs):
        raise InputError(f"argument --lrs: {','.join(map(str, args.lrs))} repeats a rate")
    seed_list(args.first_seed, max(args.seeds, args.sweep_seeds or 0))  # the sweep's seeds stay in range too
    if (args.lrs or args.control_half_lr or args.control_slope or args.control_past_cap) and args.seeds < 2:
        raise InputError("--lrs, --control-half-lr, --control-slope and --control-past-cap are 2.5's many-seed "
                         "studies: give --seeds 2 or more")
    if args.control_past_cap is not None and not 2 <= args.control_past_cap <= 100:
        raise InputError(f"argument --control-past-cap: {args.control_past_cap} is not a whole number from 2 to 100")
    if args.control_slope and not set(CE_PAIR) <= set(args.settings):
        raise InputError("--control-slope swaps what the two CE settings measured: "
                         f"give --settings with {' and '.join(CE_PAIR)}")
    return args


# ===== 2.5: many seeds, the measurements behind "why", the rate sweep and the half-rate control =====


class Measurements:
    """What train() measures on the way, apart from the stop rule. Per run: its stop, final loss and
    accuracy (the last finite ones), dead hidden units (output 0 on every image: no gradient again)
    at the start and at the stop, how many images the untrained net calls 1, the first iteration whose
    accuracy beats calling every image the commoner label (beyond_majority_at), and gradient factors
    averaged over every `stride`-th iteration:
      l2_factor        mean over images of 2 yhat (1 - yhat): L2's dL/dz over cross-entropy's;
      l2_factor_wrong  the same over the images still classified wrong (those decide the stop);
      hidden_slope     mean f'(a) over units and images (ReLU: the share of active units), which
                       scales the hidden weights' gradients;
      hidden_output    mean h = f(a) over units and images;
      hidden_spread    mean over units of the std of h across images: what the output layer can
                       tell the images apart by (also at the start: hidden_spread_start).
    With band_runs: the quartiles of the loss over the first band_runs runs (a stopped run holds its
    last loss) every stride-th iteration. With keep_curves (one run): its loss and accuracy (T,).
    Its tensors are aligned with the rows still training; `rows` maps each row to its run."""

    FACTORS = ("l2_factor", "l2_factor_wrong", "hidden_slope", "hidden_output", "hidden_spread")

    def __init__(self, n: int, relu: bool, band_runs: int, keep_curves: bool, cfg: Config) -> None:
        self.cfg, self.relu, self.t = cfg, relu, 0
        on = {"dtype": cfg.dtype, "device": cfg.device}  # every tensor lives where the run trains
        self.rows = torch.arange(n, device=cfg.device)  # rows: which run each row of the stack is
        self.out: list[dict[str, Any]] = [{"iterations": None, "diverged_at": None} for _ in range(n)]
        self.sums = torch.zeros(len(self.FACTORS), n, **on)  # factor sums over the sampled iterations
        self.counts = torch.zeros(len(self.FACTORS), n, **on)
        self.last = torch.full((2, n), math.nan, **on)  # last finite loss and accuracy
        self.beyond = torch.full((n,), -1, dtype=torch.long, device=cfg.device)  # first t above the majority score
        self.stride = max(1, cfg.max_iters // 2000)
        self.band_runs, self.band_points = band_runs, 0
        self.held = torch.full((band_runs,), math.nan, **on)
        self.quartiles = torch.tensor([0.25, 0.5, 0.75], **on)
        # allocated once: small tensors kept between the big transient ones would fragment the heap
        self.band = torch.full((3, cfg.max_iters // self.stride + 1), math.nan, **on)
        self.curves: list[torch.Tensor] | None = [] if keep_curves else None

    def observe(self, t: int, logits: torch.Tensor, loss: torch.Tensor, accuracy: torch.Tensor, h: torch.Tensor,
                y: torch.Tensor) -> torch.Tensor:
        """Record iteration t of the runs in the stack; returns the (R,) mask of the diverged ones: a
        non-finite loss, or (opt-in) a loss above diverge_factor x the initial loss."""
        with torch.no_grad():
            loss = loss.detach()
            finite = torch.isfinite(loss)
            self.last = torch.where(finite, torch.stack([loss, accuracy]), self.last)
            self.t = t
            if t == 0:  # the untrained net: its loss, dead units and how many images it calls 1; and the
                # score of calling every image the commoner label, once (the labels do not change)
                self.majority = max(float(y.mean()), 1 - float(y.mean()))
                self.initial, self.dead_start, self.ones_start = loss, (h == 0).all(2).sum(-1), (logits > 0).sum(-1)
            self.beyond = torch.where((self.beyond < 0) & (accuracy > self.majority + 1e-9), t, self.beyond)
            if self.curves is not None:
                self.curves.append(torch.stack([loss, accuracy])[:, 0])
            if t % self.stride == 0:  # sampled: the gradient factors of the runs with a finite loss
                p = torch.sigmoid(logits)
                factor, wrong = 2 * p * (1 - p), ((logits > 0) != (y > 0.5)).to(p.dtype)
                # three passes over h (R, H, B), the stack's largest tensor: each unit's mean and mean square
                # over the images give the mean output, the spread across images (population std) and,
                # for the sigmoid, its slope h (1 - h); ReLU's slope is the share of units with h > 0
                mean, mean_square = h.mean(2), torch.linalg.vector_norm(h, dim=2).square() / h.shape[2]  # (R, H)
                spread = (mean_square - mean * mean).clamp(min=0).sqrt().mean(1)
                slope = (torch.count_nonzero(h, dim=(1, 2)).to(h.dtype) / h[0].numel() if self.relu else
                         (mean - mean_square).mean(1))  # the sigmoid's f' = f (1 - f), averaged
                n_wrong = wrong.sum(-1)
                values = torch.stack([factor.mean(-1), (factor * wrong).sum(-1) / n_wrong.clamp(min=1), slope,
                                      mean.mean(1), spread])
                self.spread_start = spread if t == 0 else self.spread_start
                has = finite.expand(len(self.FACTORS), -1).clone()
                has[1] &= n_wrong > 0  # the wrong images' factor: only while some image is wrong
                self.sums += torch.where(has, values, 0.0)
                self.counts += has
            if self.band_runs and t % self.stride == 0:
                in_band = self.rows < self.band_runs
                self.held[self.rows[in_band]] = self.last[0][in_band]
                self.band[:, t // self.stride] = torch.nanquantile(self.held, self.quartiles)
                self.band_points = t // self.stride + 1
            diverged = ~finite
            if self.cfg.diverge_factor is not None and t > 0:
                diverged |= loss > self.cfg.diverge_factor * self.initial
            return diverged

    def finish(self, stop: torch.Tensor, h: torch.Tensor, reached: torch.Tensor, diverged: torch.Tensor) -> None:
        """Write out the runs that stop at this iteration (stop (R,) bool), then forget them."""
        means = torch.where(self.counts > 0, self.sums / self.counts.clamp(min=1), math.nan)
        columns = torch.stack([*self.last, *means, (h == 0).all(2).sum(-1), reached, diverged]).T[stop]
        beyond = self.beyond[stop].tolist()
        for row, values, past in zip(self.rows[stop].tolist(), columns.double().tolist(), beyond, strict=True):
            loss, accuracy, *factors, dead_end, hit, div = values
            named = {"final_loss": loss, "final_accuracy": accuracy, **dict(zip(self.FACTORS, factors, strict=True)),
                     "hidden_spread_start": self.spread_start[row].item()}
            record = self.out[row]
            record.update({k: v if math.isfinite(v) else None for k, v in named.items()},  # JSON has no NaN
                          dead_start=int(self.dead_start[row]), dead_end=int(dead_end),
                          predicted_ones_start=int(self.ones_start[row]), beyond_majority_at=None if past < 0 else past)
            if div:
                record["diverged_at"] = self.t
            elif hit:
                record["iterations"] = self.t
        if self.band_runs:  # a stopped run's band value: its last loss
            in_band = stop & (self.rows < self.band_runs)
            self.held[self.rows[in_band]] = self.last[0][in_band]
        keep = ~stop
        self.rows, self.sums, self.counts, self.last = self.rows[keep], self.sums[:, keep], self.counts[:, keep], \
            self.last[:, keep]
        self.beyond = self.beyond[keep]
        self.initial = self.initial[keep]

    def results(self) -> dict[str, Any]:
        """{"runs": per run (in the order given) its record; "band": (3, T) loss quartiles (numpy) or
        None, "band_stride"; "curves": {"loss", "accuracy"} (T,) numpy of a lone run, else None}."""
        band = self.band[:, :self.band_points].double().cpu().numpy() if self.band_points else None
        curves = torch.stack(self.curves).double().cpu().numpy() if self.curves else None
        return {"runs": self.out, "band": band, "band_stride": self.stride,
                "curves": None if curves is None else {"loss": curves[:, 0], "accuracy": curves[:, 1]}}


def plan_runs(args: argparse.Namespace, setting: str) -> list[tuple[int, float]]:
    """The (seed, rate) runs of one setting: the main study first (its band is drawn), then the
    half-rate control and the sweep; a run asked for twice trains once."""
    seeds = seed_list(args.first_seed, args.seeds)
    runs = [(seed, args.lr) for seed in seeds]
    if args.control_half_lr and SETTINGS[setting][1] == "ce":
        runs += [(seed, args.lr / 2) for seed in seeds]
    if args.lrs:
        runs += [(seed, lr) for lr in args.lrs for seed in seed_list(args.first_seed, args.sweep_seeds or args.seeds)]
    return list(dict.fromkeys(runs))


def setting_record(setting: str, plan: list[tuple[int, float]], trained: dict[str, Any],
                   args: argparse.Namespace) -> dict[str, Any]:
    """One setting's main study: per seed (in seed order) every measured value, and its single run
    (the median seed; with one seed, that seed)."""
    activation, loss, question = SETTINGS[setting]
    by_run = dict(zip(plan, trained["runs"], strict=True))
    seeds = seed_list(args.first_seed, args.seeds)
    per_seed = {key: [by_run[(seed, args.lr)][key] for seed in seeds] for key in by_run[(seeds[0], args.lr)]}
    seed, percentile = (typical_seed(seeds, per_seed["iterations"], per_seed["final_loss"]) if len(seeds) > 1
                        else (seeds[0], 0.0))
    k = seeds.index(seed)
    single = {"seed": seed, "percentile": percentile} | {
        key: per_seed[key][k] for key in ("iterations", "diverged_at", "final_accuracy", "final_loss")}
    return per_seed | {"question": question, "activation": activation, "loss": loss, "label": LABELS[setting],
                       "diverged": [d is not None for d in per_seed["diverged_at"]], "single": single}


def study_results(settings: dict[str, Any], trained: dict[str, Any], plans: dict[str, list[tuple[int, float]]],
                  args: argparse.Namespace) -> dict[str, Any]:
    """2.5 over many seeds: adds each setting's summary, dead units and factor summaries; returns
    the paired comparisons, the factor table, the half-rate control and the sweep."""
    for rec in settings.values():
        rec["summary"] = summarize_stops(rec["iterations"], rec["diverged_at"])
        rec["dead_units_summary"] = dead_units_summary(rec["iterations"], rec["dead_end"])
        rec["factors"] = {k: summarize_values(rec[k]) for k in (*Measurements.FACTORS, "hidden_spread_start")}
    out: dict[str, Any] = {"paired": paired_counts({s: settings[s]["iterations"] for s in settings})}
    by_run = {s: dict(zip(plans[s], trained[s]["runs"], strict=True)) for s in settings}
    half, out["controls"] = None, {}
    if args.control_half_lr:
        seeds = seed_list(args.first_seed, args.seeds)
        half = {s: control_record([by_run[s][(seed, args.lr / 2)] for seed in seeds], settings[s])
                for s in settings if SETTINGS[s][1] == "ce"}
        out["controls"]["half_lr_ce"] = {"lr": args.lr / 2, "settings": half}
    out["factors"] = factor_table(settings, half)
    out["bootstrap"] = {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95}  # factors' intervals
    if args.lrs:
        out["lr_sweep"] = sweep_results(by_run, args)
    return out


def dead_units_summary(iterations: list[int | None], dead_end: list[int]) -> dict[str, int]:
    """How the seeds with a dead hidden unit at their stop relate to those that missed 100%."""
    missed, dead = [i is None for i in iterations], [d > 0 for d in dead_end]
    both = sum(m and d for m, d in zip(missed, dead, strict=True))
    return {"seeds_with_dead_end": sum(dead), "missed": sum(missed), "missed_with_dead_end": both,
            "reached_with_dead_end": sum(dead) - both}


# 2.5's activation controls: each CE setting given the other activation's measured slope in the
# backward pass ("slope"); then also, in what the output layer sees, the other's spread of h across
# the images ("spread") or its mean over them ("mean"). factors: {"slope", "spread", "mean"} -> x.
CONTROLS = {"slope": lambda f: (f["slope"], 1.0, 1.0), "spread": lambda f: (f["slope"], f["spread"], 1.0),
            "mean": lambda f: (f["slope"], 1.0, f["mean"])}
SWAPPED = {"slope": "hidden_slope", "spread": "hidden_spread", "mean": "hidden_output"}  # factor -> measurement
CE_PAIR = ("relu-ce", "sigmoid-ce")


def swap_factors(settings: dict[str, Any]) -> dict[str, dict[str, float]] | None:
    """{CE setting: {factor: the other CE setting's median over seeds of the run average / its own}}:
    what turns one activation's measured slope, spread and mean into the other's (None: not measured)."""
    med = {(s, f): settings[s]["factors"][key]["median"] for s in CE_PAIR for f, key in SWAPPED.items()}
    if any(v is None or not v > 0 for v in med.values()):
        return None
    return {s: {f: med[(o, f)] / med[(s, f)] for f in SWAPPED} for s, o in (CE_PAIR, CE_PAIR[::-1])}


def activation_controls(settings: dict[str, Any], x: np.ndarray, y: np.ndarray, cfg: Config,
                        args: argparse.Namespace) -> dict[str, Any]:
    """2.5's activation controls (CONTROLS) on the main study's seeds, each CE setting with the other's
    measured factors (swap_factors); spread and mean also against the slope control, the one thing
    they change. Returns {"slope_ce", "spread_ce", "mean_ce"} for results["controls"]."""
    swaps = swap_factors(settings)
    if swaps is None:  # every seed diverged at once: nothing measured to swap (the main study is kept)
        print("  2.5's activation controls not run: the CE settings' slope, spread or mean was not measured")
        return {}
    runs = [(seed, args.lr) for seed in seed_list(args.first_seed, args.seeds)]
    keys = [(kind, s) for kind in CONTROLS for s in CE_PAIR]
    jobs = [(s, runs, x, y, cfg, 0, False, CONTROLS[kind](swaps[s])) for kind, s in keys]

    def progress(i: int, _: Any) -> None:
        what = " and ".join(dict.fromkeys(("slope", keys[i][0])))
        print(f"  {keys[i][1]} with the other's {what}: {len(runs)} run(s) done", flush=True)

    done = run_jobs(train, jobs, args.workers, progress if cfg.log else lambda i, _: None)
    trained = {key: d["runs"] for key, d in zip(keys, done, strict=True)}
    return {f"{kind}_ce": {"factors": swaps, "settings": {
        s: slope_record(trained[(kind, s)], settings, s, swaps[s]["slope"]) | {"controls": CONTROLS[kind](swaps[s])} | (
            {} if kind == "slope" else {"vs_slope_control": ratio_record(trained[(kind, s)], trained[("slope", s)])})
        for s in CE_PAIR}} for kind in CONTROLS}


def past_cap_control(settings: dict[str, Any], x: np.ndarray, y: np.ndarray, cfg: Config,
                     args: argparse.Namespace) -> dict[str, Any]:
    """2.5 control: are the seeds that miss the cap slow or stuck? Each setting with a seed that misses
    (not diverged) trains its main seeds again from the same starts, the cap times args.control_past_cap
    (a seed that reached 100% within the cap stops where it did). Per setting: iterations per seed,
    their summary, the seeds that missed and how many of them reach 100% now."""
    longer = replace(cfg, max_iters=cfg.max_iters * args.control_past_cap)
    seeds = seed_list(args.first_seed, args.seeds)

    def missed(s: str) -> list[int]:
        rec = settings[s]
        return [k for k, (i, d) in enumerate(zip(rec["iterations"], rec["diverged_at"], strict=True))
                if i is None and d is None]

    names = [s for s in settings if missed(s)]
    jobs = [(s, [(seed, args.lr) for seed in seeds], x, y, longer) for s in names]
    done = run_jobs(train, jobs, args.workers, (lambda i, _: print(
        f"  {names[i]} past the cap (to {longer.max_iters:,}): {len(seeds)} run(s) done", flush=True))
        if cfg.log else lambda i, _: None)
    out: dict[str, Any] = {"max_iters": longer.max_iters, "settings": {}}
    for s, result in zip(names, done, strict=True):
        its, div_at = [r["iterations"] for r in result["runs"]], [r["diverged_at"] for r in result["runs"]]
        out["settings"][s] = {"iterations": its, "summary": summarize_stops(its, div_at),
                              "missed_seeds": [seeds[k] for k in missed(s)],
                              "missed_reached": sum(its[k] is not None for k in missed(s)),
                              "dead_end": [result["runs"][k]["dead_end"] for k in missed(s)]}
    return out


def ratio_record(runs: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """Two controls of one setting, seed for seed: the ratio of their medians and the paired counts."""
    its, base = [r["iterations"] for r in runs], [r["iterations"] for r in other]
    median = [summarize_stops(i, [None] * len(i))["median"] for i in (its, base)]
    return {"ratio": div(*median), "paired": paired_counts({"a": its, "b": base})["a"]["b"]}


def slope_record(runs: list[dict[str, Any]], settings: dict[str, Any], setting: str, scale: float) -> dict[str, Any]:
    """2.5 slope control of one CE setting, seed for seed against the setting itself and against the
    other activation's CE setting ("other", when it ran); effective_slope: scale x the median over
    seeds of the mean f'(a), the slope the hidden weights' gradients see."""
    record = control_record(runs, settings[setting])
    slope = summarize_values([r["hidden_slope"] for r in runs])["median"]
    record |= {"scale": scale, "effective_slope": None if slope is None else scale * slope, "other": None}
    other = f"{'sigmoid' if SETTINGS[setting][0] == 'relu' else 'relu'}-{SETTINGS[setting][1]}"
    if other in settings:
        its = record["iterations"]
        record["other"] = {"setting": other, "ratio": div(record["summary"]["median"],
                                                          settings[other]["summary"]["median"]),
                           "paired": paired_counts({"control": its, "other": settings[other]["iterations"]})
                           ["control"]["other"]}
    return record


def control_record(runs: list[dict[str, Any]], base: dict[str, Any]) -> dict[str, Any]:
    """2.5 control: a setting's seeds again, changed in one thing, seed for seed; ratio_to_base = its
    median iterations over the setting's own (the half-rate control: 1/rate predicts 2)."""
    its = [r["iterations"] for r in runs]
    summary = summarize_stops(its, [r["diverged_at"] for r in runs])
    return {"iterations": its, "summary": summary, "ratio_to_base": div(summary["median"], base["summary"]["median"]),
            "paired_vs_base": paired_counts({"half": its, "base": base["iterations"]})["half"]["base"]}


def factor_table(settings: dict[str, Any], half: dict[str, Any] | None) -> list[dict[str, Any]]:
    """2.5, why: ratios of median iterations, measured, against what the measured gradient factors
    predict to first order (time to 100% ~ 1 / gradient size). L2 against CE: 1 / (the L2 runs' mean
    2 yhat (1 - yhat)), over all images ("predicted") and over the images still wrong
    ("predicted_wrong"). Sigmoid against ReLU: ReLU's mean f'(a) / sigmoid's. L2 against CE at half the
    rate: the same predictions halved."""
    med = {s: settings[s]["summary"]["median"] for s in settings}
    its = {s: settings[s]["iterations"] for s in settings}
    fac = {s: {k: v["median"] for k, v in settings[s]["factors"].items()} for s in settings}
    rows = []  # (id, numerator, denominator, measured, both iterations lists, predicted, predicted_wrong, basis)
    for act in ("sigmoid", "relu"):
        l2, ce = f"{act}-l2", f"{act}-ce"
        if l2 in med and ce in med:
            rows.append((f"l2_over_ce_{act}", l2, ce, div(med[l2], med[ce]), its[l2], its[ce],
                         div(1, fac[l2]["l2_factor"]), div(1, fac[l2]["l2_factor_wrong"]),
                         "1 / mean 2yhat(1-yhat) of the L2 runs"))
        if half and l2 in med and ce in half:
            rows.append((f"l2_over_half_lr_ce_{act}", l2, f"{ce} at lr/2", div(med[l2], half[ce]["summary"]["median"]),
                         its[l2], half[ce]["iterations"], div(0.5, fac[l2]["l2_factor"]),
                         div(0.5, fac[l2]["l2_factor_wrong"]), "1 / (2 x mean 2yhat(1-yhat) of the L2 runs)"))
    for loss in ("l2", "ce"):
        sig, relu = f"sigmoid-{loss}", f"relu-{loss}"
        if sig in med and relu in med:
            rows.append((f"sigmoid_over_relu_{loss}", sig, relu, div(med[sig], med[relu]), its[sig], its[relu],
                         div(fac[relu]["hidden_slope"], fac[sig]["hidden_slope"]), None,
                         "ReLU's share of active units / sigmoid's mean sigmoid'(a)"))
    # measured is None where a median is not reached (then a / b >= cap / b when only a is missing)
    return [{"id": i, "numerator": num, "denominator": den, "measured": measured,
             "measured_ci95": ratio_interval(a, b), "predicted": pred, "predicted_wrong": pred_wrong, "basis": basis}
            for i, num, den, measured, a, b, pred, pred_wrong, basis in rows]


BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 10_000, 0


def ratio_interval(numerator: list[int | None], denominator: list[int | None]) -> list[float | None] | None:
    """95% percentile bootstrap interval of median(numerator) / median(denominator), iterations of the
    same seeds (paired): the seeds are resampled with replacement, both lists by the same draw,
    BOOTSTRAP_RESAMPLES times from a fixed generator. A seed that never reaches 100% counts as
    infinitely slow, so an end beyond every finite ratio is None; None where a ratio is undefined."""
    a, b = (np.array([math.inf if v is None else v for v in its], dtype=float) for its in (numerator, denominator))
    draws = np.random.default_rng(BOOTSTRAP_SEED).integers(0, len(a), size=(BOOTSTRAP_RESAMPLES, len(a)))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.median(a[draws], axis=1) / np.median(b[draws], axis=1)
    if np.isnan(ratios).any():
        return None
    ends = np.quantile(ratios, [0.025, 0.975], method="inverted_cdf")  # no interpolation: an infinite end stays
    return [float(e) if math.isfinite(e) else None for e in ends]


def div(a: float | None, b: float | None) -> float | None:
    """a / b, or None where either is missing or b is 0."""
    return None if a is None or not b else a / b


def sweep_results(by_run: dict[str, dict[tuple[int, float], dict]], args: argparse.Namespace) -> dict[str, Any]:
    """Per setting and rate: every seed's iterations, their median, reach rate and median x rate
    (constant where time to 100% scales as 1 / rate); the best rate (smallest median among rates
    where >= min_reach of the seeds reach 100%); rankings at the base and best rates, and paired win
    counts at the best rates."""
    seeds, settings, best_its = seed_list(args.first_seed, args.sweep_seeds or args.seeds), {}, {}
    for setting, runs in by_run.items():
        its = [[runs[(seed, lr)]["iterations"] for seed in seeds] for lr in args.lrs]
        summaries = [summarize_stops(i, [runs[(seed, lr)]["diverged_at"] for seed in seeds])
                     for i, lr in zip(its, args.lrs, strict=True)]
        fit = [k for k, s in enumerate(summaries) if s["reach_rate"] >= args.min_reach and s["median"] is not None]
        best = min(fit, key=lambda k: summaries[k]["median"], default=None)
        settings[setting] = {"iterations": its, "median": [s["median"] for s in summaries],
                             "reach_rate": [s["reach_rate"] for s in summaries],
                             "diverged_rate": [s["diverged"] / s["n_seeds"] for s in summaries],  # non-finite loss
                             "median_x_rate": [div(s["median"], 1 / lr) for s, lr in zip(summaries, args.lrs,
                                                                                          strict=True)],
                             "best": None}
        if best is not None:
            settings[setting]["best"] = {"lr": args.lrs[best], "median": summaries[best]["median"],
                                         "reach_rate": summaries[best]["reach_rate"],
                                         "at_edge": best in (0, len(args.lrs) - 1)}
            best_its[setting] = its[best]
    at_best = sorted(best_its, key=lambda s: settings[s]["best"]["median"])
    base = args.lrs.index(args.lr) if args.lr in args.lrs else None
    at_base = None if base is None else sorted(settings, key=lambda s: rank_key(
        summarize_stops(settings[s]["iterations"][base], [None] * len(seeds))))
    return {"lrs": args.lrs, "seeds": seeds, "min_reach": args.min_reach, "settings": settings,
            "ranking_at_best": at_best, "ranking_at_base": at_base,
            "ranking_survives": None if at_base is None else [s for s in at_base if s in at_best] == at_best,
            "paired_at_best": paired_counts(best_its)}


# Figures, drawn for print: a full text width, 9 pt text; one colour per setting in every figure.

COLOURS = {"relu-ce": "tab:blue", "relu-l2": "tab:orange", "sigmoid-ce": "tab:green", "sigmoid-l2": "black"}


def draw_figures(results: dict[str, Any], trained: dict[str, Any], x: np.ndarray, y: np.ndarray, cfg: Config,
                 args: argparse.Namespace) -> list[str]:
    """The figures of 2.1-2.5; returns the names of those drawn. The median seed's curves: kept when
    it trained alone, else it trains again alone (the same numbers, tested)."""
    settings, out, order = results["settings"], args.out, results["ranking"]["many_seeds"]
    curves = {s: trained[s]["curves"] or train(s, [(settings[s]["single"]["seed"], cfg.lr)], x, y, cfg,
                                                 keep_curves=True)["curves"] for s in order}
    drawn = {"part2_curves.png": save_figure(out / "part2_curves.png", plot_typical_curves, curves, settings,
                                             "2.1-2.4: the median seed of each setting" if args.seeds > 1 else
                                             f"2.1-2.4: seed {args.first_seed} in each setting")}
    if args.seeds > 1:
        drawn["part2_share_reached.png"] = save_figure(
            out / "part2_share_reached.png", plot_share_reached,
            {LABELS[s]: (settings[s]["iterations"], COLOURS[s]) for s in order}, args.max_iters,
            f"2.5: share of {args.seeds} seeds at 100% training accuracy")
        bands = {LABELS[s]: (trained[s]["band"], trained[s]["band_stride"], COLOURS[s]) for s in order}
        drawn["part2_loss_band.png"] = save_figure(out / "part2_loss_band.png", plot_bands, bands,
                                                   f"2.5: training loss over {args.seeds} seeds (median, IQR)")
    if args.lrs and "lr_sweep" in results:
        drawn["part2_lr_sweep.png"] = save_figure(out / "part2_lr_sweep.png", plot_sweep, results["lr_sweep"])
    return [name for name, ok in drawn.items() if ok]


def plot_typical_curves(curves: dict[str, dict[str, np.ndarray]], settings: dict[str, Any], title: str) -> Any:
    """Per loss a row of two panels, its loss (log axis) and the training accuracy from 0%, the two
    activations in each: L2 on top, cross-entropy below (two settings per panel, the
    sigmoid's dashed, so that accuracy curves on the shared majority-class plateau stay apart)."""
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, 2, figsize=(FIGURE_SIZE[0], 3.7), layout="constrained", sharex=True)
    axes = grid.ravel()  # 0, 1: L2's loss and accuracy (top row); 2, 3: cross-entropy's (bottom row)
    for s, c in curves.items():
        t = np.arange(1, len(c["loss"]) + 1)  # iteration + 1, so iteration 0 fits a log axis
        label = f"{LABELS[s]} (seed {settings[s]['single']['seed']})"
        col = 0 if SETTINGS[s][1] == "l2" else 2
        style = "--" if SETTINGS[s][0] == "sigmoid" else "-"  # dashed over solid: both visible where they overlap
        axes[col].plot(t, c["loss"], style, lw=1.4, color=COLOURS[s], label=label)
        axes[col + 1].plot(t, 100 * c["accuracy"], style, lw=1.3, color=COLOURS[s])
        end = 100 * c["accuracy"][-1]  # where the run ends; one that never reaches 100% says so
        axes[col + 1].plot(t[-1], end, "o", ms=3.5, color=COLOURS[s])
        if end < 100:
            axes[col + 1].annotate(f"{end:.1f}%", (t[-1], end), xytext=(0, -32), textcoords="offset points",
                                   ha="right", fontsize=8.5, color=COLOURS[s], arrowprops={"arrowstyle": "-", "lw": 0.6,
                                                                                         "color": COLOURS[s]})
    from matplotlib.ticker import FuncFormatter

    def decimal(v: float, _: int) -> str:  # 0.3, not 3 x 10^-1: narrow labels leave the panels more width
        mantissa = round(v / 10 ** math.floor(math.log10(v)), 6) if v > 0 else 0
        return f"{v:g}" if mantissa in (1, 2, 5) else ""

    for col, name in ((0, "L2"), (2, "CE")):
        axes[col].set(xscale="log", yscale="log", xlabel="iteration + 1", ylabel=f"{name} loss")
        axes[col].yaxis.set_major_formatter(FuncFormatter(decimal))
        axes[col].yaxis.set_minor_formatter(FuncFormatter(decimal))
        axes[col + 1].set(xscale="log", xlabel="iteration + 1", ylabel=f"{name}: accuracy (%)", ylim=(0, 102))
    for ax in axes:  # a label every decade: the runs end between 10^2 and 10^4
        ax.set_xticks([1, 10, 100, 1000, 10_000], ["1", "10", "$10^2$", "$10^3$", "$10^4$"])
        ax.tick_params(labelbottom=True)  # sharex hides the top row's labels; each panel keeps its own
    handles = [h for ax in axes[::2] for h in ax.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8.5)  # off the data
    fig.get_layout_engine().set(wspace=0.06, hspace=0.04)
    fig.suptitle(title)
    return fig


def plot_sweep(sweep: dict[str, Any]) -> Any:
    """Left: median iterations to 100% against the rate (star: best rate; hollow: a rate where under
    min_reach of the seeds reach 100%); right: the share of seeds reaching 100%."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, (left, right) = plt.subplots(1, 2, figsize=FIGURE_SIZE, layout="constrained")
    lrs = np.array(sweep["lrs"])
    for k, (s, row) in enumerate(sweep["settings"].items()):
        med = np.array([np.nan if m is None else m for m in row["median"]], dtype=float)
        few = np.array(row["reach_rate"]) < sweep["min_reach"]  # a median over too few seeds at 100%: hollow
        style = "--" if SETTINGS[s][0] == "sigmoid" else "-"  # as in the curves figure: the sigmoid dashed
        mark = "s" if SETTINGS[s][1] == "l2" else "o"  # and L2 squares, so that print in grey tells all four apart
        left.plot(lrs, med, style, marker=mark, ms=4, color=COLOURS[s], label=LABELS[s])
        left.plot(lrs[few], med[few], mark, ms=4, mfc="white", mec=COLOURS[s], mew=1.2)
        if row["best"]:  # stars offset a little sideways so that two at one rate stay visible
            left.plot(row["best"]["lr"] * 1.15 ** (k - 1.5), row["best"]["median"], "*", ms=8, color=COLOURS[s],
                      mec="k", mew=0.5)
        right.plot(lrs, 100 * np.array(row["reach_rate"]), style, marker=mark, ms=4, color=COLOURS[s])
    left.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="median iterations to 100%")
    right.axhline(100 * sweep["min_reach"], color="grey", ls=":", lw=1)
    right.set(xscale="log", xlabel="learning rate", ylabel="seeds at 100% (%)", ylim=(0, 103))
    keys = [Line2D([], [], ls="", marker="*", ms=8, color="grey", mec="k", mew=0.5, label="best rate"),
            Line2D([], [], ls="", marker="o", ms=4, mfc="white", mec="grey", mew=1.2,
                   label=f"hollow: under {100 * sweep['min_reach']:g}% of seeds at 100%")]
    fig.legend(handles=left.get_legend_handles_labels()[0] + keys, loc="outside lower center", ncols=3, fontsize=8.5)
    fig.suptitle(f"2.5: learning-rate sweep, {len(sweep['seeds'])} seeds per rate")
    return fig


def print_summary(results: dict[str, Any], seconds: float, out: Path) -> None:
    """The answers in a few lines a person reads at the end of the run."""
    settings, n = results["settings"], len(results["seeds"])
    print(f"\n2.1-2.5 ({n} seed(s), {seconds:.1f} s of training), fastest first:")
    for s in results["ranking"]["many_seeds" if n > 1 else "single_seed"]:
        one = settings[s]["single"]
        line = f"  {s:<11} seed {one['seed']}: " + (
            f"{one['iterations']} iterations" if one["iterations"] is not None else
            f"diverged at iteration {one['diverged_at']}" if one["diverged_at"] is not None else
            f"not reached, final accuracy {100 * (one['final_accuracy'] or 0):.1f}%")
        if n > 1:
            summ = settings[s]["summary"]
            line += (f"; over {n} seeds median {fmt(summ['median'])} (IQR {fmt(summ['q1'])}-{fmt(summ['q3'])}), "
                     f"{summ['reached']}/{n} reached")
        print(line)
    for f in results.get("factors", []):
        measured, predicted = ("-" if f[k] is None else f"{f[k]:.2f}" for k in ("measured", "predicted"))
        print(f"  {f['id']:<26} ratio of medians {measured:>5}, predicted from the gradient factor {predicted}")
    for s, c in results.get("controls", {}).get("slope_ce", {}).get("settings", {}).items():
        print(f"  {s} with its slope x {c['scale']:.3g}: median {fmt(c['summary']['median'])}, "
              f"{fmt(c['ratio_to_base'] and round(c['ratio_to_base'], 3))} x its own")
    if "lr_sweep" in results:
        sweep = results["lr_sweep"]
        print("  best rates: " + ", ".join(f"{s} {row['best']['lr']:g}" if row["best"] else f"{s} none"
                                            for s, row in sweep["settings"].items()))
    print(f"Wrote part2_fc.json and {len(results['figures'])} figure(s) to {out}/")


# =============================================================================================
# Shared with part 3, fenced off: flags, seeds, data loader, processes, statistics, figures, and
# the plumbing (one-line errors, signals, files written whole or not at all). The zip holds only
# the four scripts, so what parts 2 and 3 share lives here.
# =============================================================================================

MAX_SEEDS = 10**6
SEED_RANGE = 2**32  # torch's generator keeps 32 bits of a seed: larger seeds would repeat
TORCH_THREADS = 1  # per process, whatever the number of seeds: float32 results depend on it
PROGRESS_SECONDS = 10.0  # at most one progress line per this many seconds and process
TEMP_MARK = ".tmp-"  # temporary files are .<name>.tmp-<pid>-XXXX: hidden, ours, and whose
STALE_SECONDS = 3600  # a temporary file this old is stale even where its writer cannot be asked

os.environ.setdefault("MPLBACKEND", "Agg")  # the scripts only write files: any terminal or notebook works
if "MPLCONFIGDIR" not in os.environ:  # an unwritable home: matplotlib's cache goes to a folder removed at exit
    _cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "matplotlib"
    try:
        _cache.mkdir(parents=True, exist_ok=True)
        _writable = os.access(_cache, os.W_OK)
    except OSError:
        _writable = False
    if not _writable:
        import atexit
        import shutil

        os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix=".matplotlib-")
        atexit.register(shutil.rmtree, os.environ["MPLCONFIGDIR"], True)


class InputError(Exception):
    """Bad input from the user (a flag, a data file, an output folder): one line naming it, exit 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`prog: error: ...`, exit 2), and that reads
    negative numbers in e-notation (--init-bias -1e-3) as values, not as flags."""

    def error(self, message: str) -> NoReturn:
        raise InputError(message)


NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-inf$|^-nan$", re.IGNORECASE)


def add_training_args(parser: Parser) -> None:
    """The flags of every training script; the defaults are the handout's. config_from_args checks
    their ranges."""
    parser._negative_number_matcher = NEGATIVE_NUMBER  # argparse's own misses -1e-3
    add = parser.add_argument
    add("--data-dir", type=Path, default=Path("data"), help="folder with the course-layout .npy files")
    add("--out", type=Path, default=Path("figures"), help="folder for the figures and the results JSON")
    add("--seeds", type=int, default=1, help=f"number of seeds, paired across settings (1 to {MAX_SEEDS:,})")
    add("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed + 1, ... (below 2**32)")
    add("--lr", type=float, default=0.1, help="SGD learning rate (handout: 0.1)")
    add("--max-iters", type=int, default=10_000, help="cap on SGD updates (handout: 10,000; at most 100,000)")
    add("--init-std", type=float, default=0.1, help="std of the truncated normal weights (handout: 0.1)")
    add("--init-bias", type=float, default=0.1, help="initial value of every bias (handout: 0.1)")
    add("--diverge-factor", type=float, default=None,
        help="opt-in: a loss above this many times the initial loss also counts as diverged")
    add("--dtype", choices=("float32", "float64"), default="float32", help="float32 (default) or float64")
    add("--device", choices=("cpu", "cuda"), default="cpu", help="where to train")
    add("--workers", type=int, default=2, help="processes training side by side (cpu; default 2, at most 64)")
    add("--quiet", action="store_true", help="no progress lines")


def positive_rate(text: str, flag_text: str) -> float:
    """One learning rate of a comma-separated list: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"argument --lrs: {text!r} in {flag_text!r} is not a number") from None
    if not 0 < value < 1e6:
        raise InputError(f"argument --lrs: {text!r} must be a finite number > 0 (and below 1e6)")
    return value


def seed_list(first: int, count: int) -> list[int]:
    """The seeds first, first + 1, ..., first + count - 1; InputError where they pass 2**32."""
    if first + count > SEED_RANGE:
        raise InputError(f"--first-seed {first} with {count} seed(s): seeds must stay below 2**32 "
                         "(torch keeps 32 bits of a seed)")
    return list(range(first, first + count))


def config_from_args(args: argparse.Namespace, ranges: dict[str, tuple[float, float, float]] | None = None,
                     **part: Any) -> Config:
    """The Config of the common flags plus a part's own fields (hidden, padding, lr_reg), after every
    number flag is checked against its range (ranges: a script's own flags, flag -> (value, low,
    high)) and the seeds against 2**32; InputError naming the flag otherwise. CUDA is set up for
    reproducible numbers."""
    ranges = {"--seeds": (args.seeds, 1, MAX_SEEDS), "--first-seed": (args.first_seed, 0, SEED_RANGE - 1),
              "--max-iters": (args.max_iters, 0, 100_000), "--workers": (args.workers, 1, 64),
              "--init-bias": (args.init_bias, -1e6, 1e6), "--lr": (args.lr, math.ulp(0.0), 1e6),
              "--init-std": (args.init_std, math.ulp(0.0), 1e6),
              "--diverge-factor": (1.0 if args.diverge_factor is None else args.diverge_factor, math.ulp(0.0), 1e6),
              } | (ranges or {})
    for flag, (value, low, high) in ranges.items():
        if not low <= value <= high:  # False for NaN too
            raise InputError(f"argument {flag}: {value:g} must lie between {low:g} and {high:g}")
    seed_list(args.first_seed, args.seeds)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available here; use --device cpu")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(TORCH_THREADS)
    return Config(lr=args.lr, max_iters=args.max_iters, init_std=args.init_std, init_bias=args.init_bias,
                  diverge_factor=args.diverge_factor, dtype=getattr(torch, args.dtype), device=args.device,
                  log=not args.quiet, **part)


def check_resources(args: argparse.Namespace, cfg: Config, jobs: int, runs_per_job: int, bytes_per_run: int,
                    flags: str = "--seeds/--max-iters") -> int:
    """Before the first iteration: the memory suffices (else InputError naming `flags`), the output
    folder is writable (made only then), and the number of processes to use (never more than the jobs
    or the usable cores; one on CUDA) is returned."""
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may use (taskset, cpusets)
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    try:  # a CPU quota (containers, cgroup v2): "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        cores = min(cores, max(1, math.ceil(int(quota) / int(period)))) if quota != "max" else cores
    except (OSError, ValueError):
        pass
    workers = 1 if cfg.device == "cuda" else min(args.workers, jobs, cores)
    if workers < min(args.workers, jobs) and cfg.log:
        print(f"note: --workers {args.workers}: using {workers} ({cores} usable core(s))", flush=True)
    need = 3 * runs_per_job * min(workers, jobs) * bytes_per_run + 300 * 2**20  # autograd: ~3 copies; torch itself
    free = None  # Linux: the available pages; macOS has only the physical total: half of it
    for pages, share in (("SC_AVPHYS_PAGES", 1), ("SC_PHYS_PAGES", 2)):
        try:
            free = os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE") // share
            break
        except (ValueError, OSError, AttributeError):  # Windows has no sysconf: no check there
            continue
    if free is not None and need > free:
        raise InputError(f"{flags}: this run needs about {need / 2**30:.1f} GiB of memory, "
                         f"{free / 2**30:.1f} GiB are free; use a smaller run")
    check_out_dir(args.out)
    return workers


def results_header(script: str, args: argparse.Namespace, data: Dataset, cfg: Config) -> dict[str, Any]:
    """What every results file says about how it was made (same command, same data: same header):
    the flags, the seeds, the data, the device, the library versions."""
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())
              if k not in ("quiet", "data_dir", "out", "workers")}
    device = {"device": "cpu", "torch_threads": TORCH_THREADS}
    if cfg.device == "cuda":
        device = {"device": "cuda", "name": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                  "cudnn": torch.backends.cudnn.version(), "tf32": False, "deterministic_algorithms": True}
    versions = {"python": platform.python_version()} | {
        name: importlib.metadata.version(name) for name in ("torch", "numpy", "matplotlib")}
    return {"script": script, "config": config, "seeds": seed_list(args.first_seed, args.seeds), "data": data.record,
            "device": device, "versions": versions, "iteration_rule": ITERATION_RULE}


ITERATION_RULE = ("iterations to 100% = the number of SGD updates made before the first full-batch "
                  "evaluation at 100% training accuracy; null = not reached within the cap")


# --- Processes: jobs over worker processes that never hang the run.


def run_jobs(fn: Callable[..., Any], jobs: list[tuple], workers: int,
             done: Callable[[int, Any], None] = lambda index, result: None) -> list[Any]:
    """[fn(*job) for job in jobs], in `workers` processes (each takes the next job when free) or, for
    one worker, here; done(index, result) as each job finishes. fn must be a module-level function;
    jobs and results cross processes pickled, so they hold plain numbers and numpy arrays only (torch
    tensors would travel as open file descriptors). Processes start the system's way (fork on Linux,
    spawn on macOS and Windows, where forking a process that loaded torch is unsafe). A worker that
    dies (say, the out-of-memory killer) or fails ends the run within a second: ChildProcessError,
    one line. Ctrl-C, SIGTERM or SIGHUP here end the workers too; a worker whose parent died ends."""
    results: list[Any] = [None] * len(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for index, job in enumerate(jobs):
            results[index] = fn(*job)
            done(index, results[index])
        return results
    context, todo, busy, procs = multiprocessing.get_context(), list(enumerate(jobs))[::-1], {}, {}
    try:
        for _ in range(min(workers, len(jobs))):
            here, there = context.Pipe()
            procs[here] = context.Process(target=serve_jobs, args=(there, fn), daemon=True)
            procs[here].start()
            there.close()
        idle = list(procs)
        while todo or busy:
            while todo and idle:  # each free worker takes the next job
                conn = idle.pop()
                busy[conn] = todo.pop()[0]
                conn.send((busy[conn], jobs[busy[conn]]))
            multiprocessing.connection.wait([*busy, *(procs[c].sentinel for c in busy)], timeout=0.5)
            for conn in [c for c in busy if c.poll() or not procs[c].is_alive()]:  # a dead worker polls as EOF
                try:
                    ok, value = conn.recv()
                except (EOFError, OSError):
                    raise_worker_death(procs[conn])
                if not ok:
                    raise ChildProcessError(f"a worker process failed: {value}")
                index = busy.pop(conn)
                results[index] = value
                done(index, value)
                idle.append(conn)
    finally:
        end_workers(procs)
    return results


def end_workers(procs: dict[Any, multiprocessing.process.BaseProcess]) -> None:
    """Close the pipes and end the workers: SIGTERM, two seconds' grace, then SIGKILL (both harmless
    for a worker that has ended)."""
    for conn, proc in procs.items():
        conn.close()
        proc.terminate()
    for proc in procs.values():
        proc.join(timeout=2)
        proc.kill()
        proc.join()


def raise_worker_death(proc: multiprocessing.process.BaseProcess) -> NoReturn:
    """One line on a worker that ended without its result. Killed by a signal that this process got
    too (a signal to the whole group): a moment for that signal to arrive, so it decides the exit."""
    proc.join(timeout=1)
    code = proc.exitcode
    if code is not None and code < 0:
        time.sleep(0.3)  # our own SIGTERM/SIGHUP/SIGINT, if the group got one, arrives meanwhile
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        raise ChildProcessError(f"a worker process was killed by {name}"
                                + (" (out of memory?)" if name == "SIGKILL" else "") + "; nothing was written")
    raise ChildProcessError(f"a worker process ended (exit status {code}) without its result; nothing was written")


def serve_jobs(conn: multiprocessing.connection.Connection, fn: Callable[..., Any]) -> None:
    """A worker process: one torch thread; Ctrl-C is the parent's to handle, SIGTERM and SIGHUP end
    it at once; it ends itself when the parent is gone (however it died). Runs fn(*job) for each
    (index, job) received and sends back (True, result) or (False, one line on the error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    torch.set_num_threads(TORCH_THREADS)
    parent = multiprocessing.parent_process()
    if parent is not None:  # a watchdog: the parent's sentinel becomes ready when it exits
        threading.Thread(target=lambda: (multiprocessing.connection.wait([parent.sentinel]), os._exit(1)),
                         daemon=True).start()
    while True:
        try:
            index, job = conn.recv()
        except (EOFError, OSError):
            return
        try:
            result = (True, fn(*job))
        except Exception as err:  # reported to the parent as one line
            frame = err.__traceback__
            while frame and frame.tb_next:
                frame = frame.tb_next
            where = f" ({Path(frame.tb_frame.f_code.co_filename).name}:{frame.tb_lineno})" if frame else ""
            result = (False, f"job {index}: {type(err).__name__}: {err}{where}")
        conn.send(result)


# --- Statistics over seeds. Not reached counts as slower than any run that reached; a quantile that
# falls among those runs is None ("not reached"), never a made-up number.


def summarize_stops(iterations: list[int | None], diverged_at: list[int | None]) -> dict[str, Any]:
    """Distribution of the iterations to the stop over seeds: true quantiles (linear interpolation
    between order statistics, so the median of an even count is the mean of the middle two)."""
    reached = sorted(i for i in iterations if i is not None)
    ranked = reached + [math.inf] * (len(iterations) - len(reached))
    q = {name: quantile(ranked, p) for name, p in
         (("median", 0.5), ("q1", 0.25), ("q3", 0.75), ("p10", 0.1), ("p90", 0.9))}
    return q | {"n_seeds": len(iterations), "reached": len(reached), "reach_rate": len(reached) / len(iterations),
                "diverged": sum(d is not None for d in diverged_at),
                "min": reached[0] if reached else None, "max_reached": reached[-1] if reached else None,
                "mean_reached": float(np.mean(reached)) if reached else None}


def quantile(ranked: list[float], p: float) -> float | None:
    """The p-quantile of sorted values (numpy's default, 'linear'); None where it needs an inf."""
    pos = p * (len(ranked) - 1)
    lo, hi = ranked[math.floor(pos)], ranked[math.ceil(pos)]
    return None if math.isinf(hi) else float(lo + (hi - lo) * (pos - math.floor(pos)))


def summarize_values(values: list[float | None]) -> dict[str, Any]:
    """Median, quartiles and extremes of finite per-seed measurements."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if not v.size:
        return {"n": 0, "median": None, "q1": None, "q3": None, "min": None, "max": None}
    q1, median, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    return {"n": int(v.size), "median": float(median), "q1": float(q1), "q3": float(q3),
            "min": float(v.min()), "max": float(v.max())}


def as_rank(iterations: int | None) -> float:
    return math.inf if iterations is None else iterations


def rank_key(summary: dict[str, Any]) -> tuple[float, float]:
    """"Which is fastest": the median iterations (not reached = inf), then the share not reached."""
    return (as_rank(summary["median"]), 1 - summary["reach_rate"])


def typical_seed(seeds: list[int], iterations: list[int | None],
                 final_loss: list[float | None] | None = None) -> tuple[int, float]:
    """The median seed: sort the seeds by iterations (not reached last, those by their final loss when
    given, lowest first: the nearest to done; remaining ties by seed number) and take the one at
    position (n - 1) // 2 from the start (for an even n, the lower of the middle two); and its
    percentile: the share of seeds with strictly fewer iterations."""
    losses = final_loss or [None] * len(seeds)
    order = sorted(zip(iterations, losses, seeds, strict=True), key=lambda p: (
        as_rank(p[0]), math.inf if p[0] is not None or p[1] is None else p[1], p[2]))
    its, _, seed = order[(len(order) - 1) // 2]
    return seed, sum(as_rank(i) < as_rank(its) for i in iterations) / len(iterations)


def paired_counts(iterations: dict[str, list[int | None]]) -> dict[str, dict[str, dict[str, Any]]]:
    """For each pair a, b: in how many seeds a reached 100% in fewer iterations than b from the same
    initial weights (wins), more (losses), as many (ties); and the two-sided sign-test p-value."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for a, ia in iterations.items():
        for b, ib in iterations.items():
            if a != b:
                pairs = [(as_rank(i), as_rank(j)) for i, j in zip(ia, ib, strict=True)]
                wins, losses = sum(i < j for i, j in pairs), sum(i > j for i, j in pairs)
                out.setdefault(a, {})[b] = {"wins": wins, "losses": losses, "ties": len(pairs) - wins - losses,
                                            "sign_test_p": sign_test(wins, losses)}
    return out


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: how likely a split at least this uneven is if wins and losses
    were equally likely (ties dropped)."""
    n = wins + losses
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n if n else 1.0
    return min(1.0, 2 * tail)


def fmt(value: float | None) -> str:
    """An iteration count for a printed summary ("-" = not reached)."""
    return "-" if value is None else f"{value:g}"


# --- Figures for print: 6.5 x 2.7 inches (a text width), 9 pt text.


FIGURE_SIZE = (6.5, 2.7)  # inches: a text width; save_figure sets 9 pt text
FIGURE_STYLE = {"font.size": 9, "axes.titlesize": 9, "legend.fontsize": 8.5, "figure.titlesize": 10,
                "axes.grid": True, "grid.alpha": 0.3}  # printed at 6.3 in: nothing under 8 pt on paper


def plot_share_reached(iterations: dict[str, tuple[list[int | None], str | None]], max_iters: int, title: str) -> Any:
    """Share of seeds at the stop rule against iteration (log axis), one line per label: (per-seed
    iterations, colour or None)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=FIGURE_SIZE, layout="constrained")
    t = np.unique(np.geomspace(1, max_iters + 1, 400).astype(int)) - 1
    for label, (its, colour) in iterations.items():
        share = np.searchsorted(np.sort([i for i in its if i is not None]), t, side="right") / len(its)
        ax.step(t + 1, 100 * share, where="post", lw=1.6, color=colour,
                label=f"{label} ({sum(i is not None for i in its)}/{len(its)})")
    ax.set(xscale="log", xlabel="iteration + 1", ylabel="seeds at 100% (%)", ylim=(0, 102), title=title)
    ax.legend(loc="upper left")
    return fig


def plot_bands(bands: dict[str, tuple[np.ndarray, int, str | None]], title: str, ylabel: str = "training loss") -> Any:
    """Median and interquartile band per label: (quartiles (3, T) every `stride` iterations, stride,
    colour or None); log-log."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=FIGURE_SIZE, layout="constrained")
    for label, (band, stride, colour) in bands.items():
        t = 1 + stride * np.arange(band.shape[1])
        (line,) = ax.plot(t, band[1], lw=1.4, color=colour, label=label)
        ax.fill_between(t, band[0], band[2], color=line.get_color(), alpha=0.2, lw=0)
    ax.set(xscale="log", yscale="log", xlabel="iteration + 1", ylabel=ylabel, title=title)
    ax.legend()
    return fig


# --- The data: one validated loader for every part. The course's files, in the course's layout.

DATASET_FILES = {
    "random": {"images": "random/random_imgs.npy", "labels": "random/random_labs.npy"},
    "line": {"images": "line/line_imgs.npy", "labels": "line/line_labs.npy"},
    "detection": {"images": "detection/detection_imgs.npy", "labels": "detection/detection_labs.npy",
                  "widths": "detection/detection_width.npy"},
}
MAX_VALUES = 10**8  # per file: far above any dataset of this assignment, far below a machine's memory
# sha256 of the course's own files (the course repository) and of our stand-ins (data/make_standins.py)
COURSE_SHA256 = {
    "random/random_imgs.npy": "a671e6e9e57f89e41d768a4c2da6038a3706383467da267d607afc3583fd4a12",
    "random/random_labs.npy": "420a533486ac6e58964c2c09f4e2d6531174e5f3d8f3e61d40ac9c15e3632cf7",
    "line/line_imgs.npy": "9d8d09f61820711abc2a0db5cb5d4f4d5a0424c269d60949bacbc29dbc4c5a05",
    "line/line_labs.npy": "2b65647ee1af1e154539d4b25c8146b9040ac15ee520613e6598d713855b12a2",
    "detection/detection_imgs.npy": "a750b95934a620757ff4399f01012ea089feec4b8df8530bd1e1390c54cbccfd",
    "detection/detection_labs.npy": "8d32857fd713faa01397ed9b867d34d1a21d441c76e5c75f378920184ad493af",
    "detection/detection_width.npy": "351e417718a42d70a8bbb68b178df19e245bcfef722d6bfc296df80cebb43b20",
}
STANDIN_SHA256 = {
    "random/random_imgs.npy": "784620833d233b07fbaf3866c19a3583da811a7456c528fc8e9b978a17e13bfe",
    "random/random_labs.npy": "fd3219e7042a4f932fa95fa52097eee271e0d19988d5a7d5f1ed4bf693115cdf",
    "line/line_imgs.npy": "afdabdc70c4fed1ee4fdbf650a4eaf2d35dcc4d7c81d42becd661ad6fbd06156",
    "line/line_labs.npy": "4b1cc6fb65f511aab7cd937c168a1aa5c0b97829ec8809af79147a916f26fdd2",
    "detection/detection_imgs.npy": "1c6818b30f42bff70bbf7b2ee1e7cb21b1c225818d2814f60b08b0e69ba72833",
    "detection/detection_labs.npy": "ccb23edcb0eee2be7665ecd255e94c5f31ea909d06c64f3f34119aa299dd23da",
    "detection/detection_width.npy": "cc02f74b59d0fdd5b24ba1494ca8fa0881418a44f92a03159dc8bfbf7420c57e",
}


@dataclass(frozen=True)
class Dataset:
    """One validated dataset of N images of H x W pixels: images (N, H, W) float64 in [0, 1], labels
    (N,) in {0, 1}, widths (N,) in (0, max(H, W)] (half-extents in pixels; detection only, else None).
    record: what a results file says about the data (sha256 of the very bytes trained on);
    describe: the folder, name and provenance ("course data", "stand-in" or "other") in words."""

    images: np.ndarray
    labels: np.ndarray
    widths: np.ndarray | None
    record: dict[str, Any]
    describe: str


def load_dataset(data_dir: Path | str, name: str) -> Dataset:
    """Load and check dataset `name` ("random", "line" or "detection") from data_dir; any problem is an
    InputError naming the file. Each file is read once: its hash and its array come from the same bytes."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"--data-dir {root}: no such folder")
    paths = {role: root / rel for role, rel in DATASET_FILES[name].items()}
    raw = {role: read_npy(path) for role, path in paths.items()}
    arrays = {role: array for role, (_, array) in raw.items()}
    images, n = arrays["images"], len(arrays["images"])
    expected = {"images": ("(N, H, W) images", 3), "labels": ("(N,) labels", 1), "widths": ("(N,) widths", 1)}
    for role, array in arrays.items():
        what, ndim = expected[role]
        if array.ndim != ndim or 0 in array.shape:
            raise InputError(f"{paths[role]}: expected {what}, found shape {array.shape}")
        if len(array) != n:
            raise InputError(f"{paths[role]}: {len(array)} {role} for {n} images")
    if images.min() < 0 or images.max() > 1:
        raise InputError(f"{paths['images']}: pixel values must lie in [0, 1], "
                         f"found {images.min():g}..{images.max():g}")
    if not np.isin(arrays["labels"], (0, 1)).all():
        raise InputError(f"{paths['labels']}: labels must be 0 or 1, found {np.unique(arrays['labels'])[:5]}")
    widths = arrays.get("widths")
    if widths is not None and not (widths.min() > 0 and widths.max() <= max(images.shape[1:])):
        raise InputError(f"{paths['widths']}: widths (half-extents in pixels) must lie in (0, {max(images.shape[1:])}] "
                         f"for {images.shape[1]}x{images.shape[2]} images, found {widths.min():g}..{widths.max():g}")
    digests = {DATASET_FILES[name][role]: hashlib.sha256(data).hexdigest() for role, (data, _) in raw.items()}
    provenance = next((label for label, table in (("course data", COURSE_SHA256), ("stand-in", STANDIN_SHA256))
                       if all(table[rel] == d for rel, d in digests.items())), "other")
    labels = arrays["labels"].astype(np.float64)
    record = {"name": name, "provenance": provenance, "sha256": digests, "n_images": n,
              "image_size": list(images.shape[1:]), "label_counts": {str(c): int((labels == c).sum()) for c in (0, 1)}}
    return Dataset(images.astype(np.float64), labels, None if widths is None else widths.astype(np.float64), record,
                   f"{data_dir}/{name} ({provenance})")


def read_npy(path: Path) -> tuple[bytes, np.ndarray]:
    """A .npy file's bytes and the array they hold, so that its hash and its array are the same
    file. Only a regular file is opened (a FIFO or a device would block or never end), non-blocking
    where the system has that flag; pickle disabled; the size and the header's shape and type are
    checked before anything large is allocated; NaN and infinities refused."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > 8 * MAX_VALUES + 2**16:
            raise InputError(f"{path}: " + ("not a regular file" if not stat.S_ISREG(info.st_mode) else
                                            f"{info.st_size:,} bytes, more than {MAX_VALUES:,} numbers"))
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)),
                       "rb") as file:
            data = file.read(info.st_size + 1)
        if data[:6] != b"\x93NUMPY":
            raise InputError(f"{path}: " + ("file is empty" if not data else "holds an archive, not one array"
                                            if data.startswith(b"PK") else "not a .npy file (no .npy header)"))
        header = io.BytesIO(data)
        version = np.lib.format.read_magic(header)
        shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                           np.lib.format.read_array_header_2_0)(header)
        if dtype.hasobject or dtype.kind not in "biuf" or math.prod(shape) > MAX_VALUES:
            raise InputError(f"{path}: " + ("holds Python objects (pickle); refusing to load it" if dtype.hasobject
                                            else f"values must be numbers, found dtype {dtype}"
                                            if dtype.kind not in "biuf" else
                                            f"claims shape {shape}, more than {MAX_VALUES:,} numbers"))
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: file is missing") from None
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{path}: not a readable .npy array ({getattr(err, 'strerror', None) or err})") from None
    with np.errstate(over="ignore"):
        if not np.isfinite(array.astype(np.float64)).all():
            raise InputError(f"{path}: holds NaN or infinite values")
    return data, array


# --- Plumbing: one-line errors, signals that stop a run cleanly, files written whole or not at all.


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signum)


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a script's `main`: bad input -> one line, exit 2; Ctrl-C, SIGTERM, SIGHUP (where the system
    has it) -> one line, exit 128 + signal, worker processes ended; a worker that died or failed ->
    one line, exit 1; a closed stdout -> quiet exit 141; an unwritable output -> one line, exit 1."""
    prog = Path(sys.argv[0]).name if argv is None else "main"
    for name in ("SIGTERM", "SIGHUP", "SIGBREAK"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:  # under nohup, SIGHUP stays ignored
            signal.signal(sig, _raise_interrupt)
    try:
        return main(argv)
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        signum = err.args[0] if err.args and isinstance(err.args[0], int) else signal.SIGINT
        print(f"{prog}: interrupted ({signal.Signals(signum).name}); files written before stay whole", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except ChildProcessError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"{prog}: error: cannot write {err.filename or 'the output'}: {err.strerror}", file=sys.stderr)
        return 1


def check_out_dir(out: Path) -> None:
    """Before any work: --out is (or can be made) a writable folder. Removes the temporary files of
    runs that were killed (their process is gone, or the file is an hour old); a run stopped by a
    signal removes its own."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".probe{TEMP_MARK}{os.getpid()}-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputError(f"--out {out}: not a writable folder ({err.strerror})") from None
    for temp in out.glob(f".*{TEMP_MARK}*"):
        writer = temp.name.split(TEMP_MARK, 1)[1].split("-", 1)[0]
        try:
            if os.name == "posix" and writer.isdigit():
                stale = not process_alive(int(writer))
            else:  # Windows, or a name without a process id: by age
                stale = time.time() - temp.stat().st_mtime > STALE_SECONDS
            if stale:
                temp.unlink()
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            continue


def process_alive(pid: int) -> bool:
    """POSIX: whether process pid exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` through a temporary file in the same folder (named with this process's id), then
    rename it into place: an error or a signal mid-write leaves the previous file whole and no
    temporary file behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}{os.getpid()}-", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):  # name the file the user knows, not the temporary one
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise


def write_json(path: Path, data: Any) -> None:
    """Write `data` as deterministic JSON (sorted keys, fixed indent, no NaN), atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_figure(path: Path, draw: Callable[..., Any], *args: Any) -> bool:
    """fig = draw(*args), saved atomically (no timestamp: same data, same bytes). A figure that cannot
    be drawn for the data at hand is skipped with one line; the run's results are never lost to it."""
    import matplotlib.pyplot as plt

    try:  # the style for this figure only: a script run in-process (tests) leaves matplotlib as it found it
        with warnings.catch_warnings(), plt.rc_context(FIGURE_STYLE):  # NaN or inf in a diverged run's data:
            warnings.simplefilter("ignore")  # the figure says enough
            fig = draw(*args)
            atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=200, metadata={"Software": None}))
    except (ValueError, IndexError, ZeroDivisionError, OverflowError, RuntimeError, TypeError) as err:
        print(f"skipped figure {path.name}: {err}", file=sys.stderr)
        return False
    finally:
        plt.close("all")
    return True


if __name__ == "__main__":
    sys.exit(run_main(main))
