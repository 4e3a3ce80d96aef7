"""Part 2: the 16-4-1 fully connected network on the random dataset (handout questions 2.1-2.5).

How many SGD iterations does the network of Figure 3 need to reach 100% training accuracy with
sigmoid or ReLU hidden units and L2 or cross-entropy loss (2.1-2.4), which is fastest, and why (2.5)?

    python part2_fc.py                 # the handout's run: one seed per setting
    python part2_fc.py --seeds 100 --lrs 0.01,0.03,0.1,0.3,1,3,10,30,100 --sweep-seeds 20 \\
                       --control-half-lr      # what `make all` runs for the report

One seed is one copy of the network. Many seeds train together: every parameter has a leading run
axis, so the same forward pass, loss and SGD step train R copies at once; seed k starts from the same
weights in every setting and at every rate, and its numbers do not depend on its company (tested).
With --workers 2 (default) two settings train side by side in two processes.

Outputs in --out: part2_curves.png (2.1-2.4: loss and accuracy of each setting's median seed),
part2_share_reached.png and part2_loss_band.png (2.5, --seeds > 1), part2_lr_sweep.png (--lrs), and
part2_fc.json (per setting and seed: iterations to 100%, divergence, final loss and accuracy, dead
units, the measured gradient factors; the rankings, paired comparisons, sweep and control).
The last section of this file, fenced off, holds the data loader and what part 3 shares.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from part1_loss_gradient import (
    InputError,
    Parser,
    check_out_dir,
    finite_float,
    library_versions,
    positive,
    probability,
    run_main,
    save_figure,
    write_json,
)

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# setting -> (hidden activation f, loss, handout question); the output unit is always a sigmoid
SETTINGS = {"sigmoid-l2": ("sigmoid", "l2", "2.1"), "sigmoid-ce": ("sigmoid", "ce", "2.2"),
            "relu-l2": ("relu", "l2", "2.3"), "relu-ce": ("relu", "ce", "2.4")}
LABELS = {s: f"{'ReLU' if act == 'relu' else act} + {loss.upper()}" for s, (act, loss, _) in SETTINGS.items()}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(prog="part2_fc.py", description="Part 2: the 16-4-1 network, four settings (2.1-2.5).")
    add_training_args(parser)
    add = parser.add_argument
    add("--hidden", type=bounded_int(1, 10_000), default=4, help="hidden units (Figure 3: 4)")
    add("--settings", type=setting_list, default=list(SETTINGS), help="comma-separated subset of "
        + ", ".join(SETTINGS))
    add("--lrs", type=learning_rates, default=None,
        help="2.5 sweep: comma-separated learning rates, every setting at each (default: no sweep)")
    add("--sweep-seeds", type=bounded_int(1, MAX_SEEDS), default=None, help="seeds of the sweep (default --seeds)")
    add("--min-reach", type=probability, default=0.9,
        help="a sweep's best rate needs this share of seeds at 100%% (default 0.9)")
    add("--control-half-lr", action="store_true", help="2.5 control: the CE settings again at lr / 2")
    return parser.parse_args(argv)


def setting_list(text: str) -> list[str]:
    """argparse type: comma-separated settings, no repeats."""
    names = text.split(",")
    if set(names) - set(SETTINGS) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct settings from {', '.join(SETTINGS)}")
    return names


def learning_rates(text: str) -> list[float]:
    """argparse type: comma-separated positive finite numbers, no repeats; returned sorted."""
    rates = [positive(float)(item.strip()) for item in text.split(",")]
    if len(set(rates)) != len(rates):
        raise argparse.ArgumentTypeError(f"{text!r} repeats a rate")
    return sorted(rates)


# --- The network of Figure 3: 16 pixels -> FC -> 4 units, f(Wx + b) -> FC -> 1 unit -> sigmoid.


class FCNet(nn.Module):
    """R copies of the network (runs), one per row of every parameter; R = 1 is the handout's net.
    Every run sees the same images x (B, n_in); forward gives the logits (R, B) (sigmoid in the loss).
    The hidden layer is one matrix product of all runs' (R, H, n_in) weights with x^T; each run's
    numbers come out the same whatever R is (tested)."""

    def __init__(self, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                 activation: str) -> None:
        super().__init__()
        self.w1, self.b1, self.w2, self.b2 = (nn.Parameter(w) for w in (w1, b1, w2, b2))
        self.activation = activation  # the hidden layer's f: "sigmoid" or "relu"

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden outputs f(W1 x + b1), (R, H, B)."""
        a = self.w1 @ x.T + self.b1
        return torch.relu(a) if self.activation == "relu" else torch.sigmoid(a)

    def output(self, h: torch.Tensor) -> torch.Tensor:
        """Logits (R, B): w2 . h + b2."""
        return (self.w2 * h).sum(1) + self.b2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(x))

    def rows(self, keep: torch.Tensor) -> FCNet:
        """The runs picked by the bool mask keep (R,), as a new module."""
        return FCNet(*(p.detach()[keep] for p in (self.w1, self.b1, self.w2, self.b2)), self.activation)


def loss_fn(kind: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the images (last axis). L2 = (sigmoid(z) - y)^2, no factor 1/2. CE = binary
    cross-entropy of sigmoid(z), computed from z so it stays finite where sigmoid(z) rounds to 0 or 1."""
    if kind == "l2":
        return ((torch.sigmoid(logits) - y) ** 2).mean(-1)
    return F.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none").mean(-1)


def accuracy_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Share of images classified right (last axis); the prediction is 1 where sigmoid(z) > 0.5."""
    return ((logits > 0) == (y > 0.5)).to(logits.dtype).mean(-1)


# --- Training, as the handout fixes it: plain full-batch SGD, stop at the first 100% accuracy.


@dataclass(frozen=True)
class Config:
    """One run's training settings (parts 2 and 3); every field is a flag, defaults the handout's."""

    lr: float = 0.1  # SGD step size, no momentum
    max_iters: int = 10_000  # cap on SGD updates
    init_std: float = 0.1  # std of the truncated normal weights (redrawn beyond 2 std)
    init_bias: float = 0.1  # every bias starts here
    diverge_factor: float | None = None  # opt-in: a loss above this times the initial loss = diverged
    dtype: str = "float32"
    device: str = "cpu"
    hidden: int = 4  # part 2: hidden units (Figure 3)
    padding: str = "valid"  # part 3: "valid" (16 -> 10 -> 4 pixels) or "same"
    lr_reg: float = 0.001  # 3.2: the width loss's learning rate
    log: bool = True  # progress lines

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def train(setting: str, runs: Sequence[tuple[int, float]], x: torch.Tensor, y: torch.Tensor,
          cfg: Config, band_runs: int = 0, keep_curves: bool = False) -> dict[str, Any]:
    """Train the runs (seed, learning rate) of `setting` together on images x (B, n_in), labels y (B,).
    Iteration t evaluates the weights after t updates. A run stops at its first 100% (iterations = t),
    a non-finite loss (diverged_at = t) or the cap, and leaves the stack. Returns "runs" (a record per
    run) and "band" (see Record) and, with keep_curves (one run only), its "curves": loss, accuracy (T,)."""
    activation, kind, _ = SETTINGS[setting]
    model = FCNet(*initial_weights([seed for seed, _ in runs], x.shape[1], cfg), activation)
    # A run at rate lr_r minimises (lr_r / lr) * its loss: the same step as SGD at lr_r (exact for
    # a factor 1.0 or 0.5); no run's loss depends on another's weights.
    scale = torch.tensor([lr / cfg.lr for _, lr in runs], dtype=cfg.torch_dtype, device=cfg.device)
    scale = None if bool((scale == 1).all()) else scale  # all at the base rate: nothing to scale
    record = Record(len(runs), activation, band_runs, keep_curves, cfg)
    last_print = time.perf_counter()
    for t in range(cfg.max_iters + 1):
        h = model.hidden(x)  # (R, H, B)
        logits = model.output(h)  # (R, B)
        loss = loss_fn(kind, logits, y)  # (R,)
        stop = record.step(t, logits, loss, h, y)  # (R,): True where a run stops at iteration t
        if t < cfg.max_iters:
            (loss if scale is None else scale * loss).sum().backward()
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-cfg.lr)  # p -= lr * dL/dp: plain gradient descent
                    p.grad = None
        if cfg.log and t % 100 == 0 and time.perf_counter() - last_print > PROGRESS_SECONDS:
            last_print = time.perf_counter()
            print(f"  {setting}: iteration {t}, {len(record.rows)}/{len(runs)} run(s) training", flush=True)
        if stop.any():
            keep = ~stop
            model, scale = model.rows(keep), None if scale is None else scale[keep]
            record.drop(keep)
            if not keep.any():
                break
    return record.results()


def initial_weights(seeds: Sequence[int], n_in: int, cfg: Config) -> list[torch.Tensor]:
    """w1 (R, H, n_in), b1 (R, H, 1), w2 (R, H, 1), b2 (R, 1): run r from seed seeds[r] alone, so a seed
    starts the same in every setting. Each seed draws its (n_in, H) input weights, then (H, 1)."""
    w1, w2 = [], []
    for seed in seeds:
        gen = seed_generator(seed)
        w1.append(truncated_normal((n_in, cfg.hidden), cfg.init_std, gen).T)
        w2.append(truncated_normal((cfg.hidden, 1), cfg.init_std, gen))
    n = len(seeds)
    bias = [torch.full(shape, cfg.init_bias, dtype=torch.float64) for shape in ((n, cfg.hidden, 1), (n, 1))]
    weights = [torch.stack(w1), bias[0], torch.stack(w2), bias[1]]
    return [w.to(device=cfg.device, dtype=cfg.torch_dtype).contiguous() for w in weights]


def seed_generator(seed: int) -> torch.Generator:
    """Seed `seed`'s own random stream: it draws that seed's initial weights and nothing else."""
    return torch.Generator().manual_seed(seed)


def truncated_normal(shape: tuple[int, ...], std: float, gen: torch.Generator) -> torch.Tensor:
    """float64 draws of N(0, std^2), those beyond 2 std drawn again (TensorFlow's truncated_normal);
    float64 so that a seed starts from the same weights in float32 and float64."""
    out = torch.empty(shape, dtype=torch.float64)
    return nn.init.trunc_normal_(out, mean=0.0, std=std, a=-2 * std, b=2 * std, generator=gen)


class Record:
    """What train() keeps of R runs; its tensors are aligned with the rows still training.

    Per run: iterations to 100% (None if not reached), diverged_at, final loss and accuracy (the
    last finite ones), dead hidden units (output 0 on every image: no gradient ever again) at the
    start and at the stop, and three gradient factors averaged over the run's iterations (every
    `stride`-th, from 0):
    l2_factor = mean over images of 2 yhat (1 - yhat), the factor by which L2's dL/dz is smaller
    than cross-entropy's; hidden_slope = mean of f'(a) over units and images (for ReLU: the share
    of active units), which scales the hidden weights' gradients; hidden_output = mean of
    h = f(a), which scales the output weights' gradients. The band: quartiles of the loss over the
    first band_runs runs (a stopped run holds its last value), every `stride` iterations."""

    def __init__(self, n: int, activation: str, band_runs: int, keep_curves: bool, cfg: Config) -> None:
        self.cfg, self.relu, self.rows = cfg, activation == "relu", torch.arange(n)
        self.out: list[dict[str, Any]] = [{"iterations": None, "diverged_at": None} for _ in range(n)]
        self.factors = torch.zeros(3, n, dtype=cfg.torch_dtype, device=cfg.device)  # sums, sampled
        self.now: tuple[torch.Tensor, ...] = ()  # (loss, accuracy) (R,) of this iteration
        self.band_runs, self.stride = band_runs, max(1, cfg.max_iters // 2000)
        self.held = torch.full((band_runs,), math.nan, dtype=torch.float64)
        # one column per sampled iteration, allocated once: small tensors kept between the big
        # transient ones of every step would fragment the heap (memory grew with the iterations)
        self.band = torch.full((3, cfg.max_iters // self.stride + 1), math.nan, dtype=torch.float64)
        self.quartiles, self.band_points = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), 0
        self.curves: list[torch.Tensor] | None = [] if keep_curves else None

    def step(self, t: int, logits: torch.Tensor, loss: torch.Tensor, h: torch.Tensor,
             y: torch.Tensor) -> torch.Tensor:
        """Record iteration t (logits (R, B), loss (R,), hidden outputs h (R, H, B)); returns the (R,)
        mask of the runs that stop here."""
        with torch.no_grad():
            if t == 0:
                self.initial, self.dead_start = loss.detach(), dead_units(h)
            acc = accuracy_fn(logits, y)
            self.prev, self.now = self.now, (loss.detach(), acc)
            self.t, self.h, self.finite = t, h, torch.isfinite(loss)
            if t % self.stride == 0:  # the factors and the band, sampled
                p = torch.sigmoid(logits)
                self.factors[0] += (2 * p * (1 - p)).mean(-1)
                self.factors[1] += ((h > 0).to(h.dtype) if self.relu else h * (1 - h)).mean((1, 2))
                self.factors[2] += h.mean((1, 2))
                if self.band_runs:
                    self.record_band()
            if self.curves is not None:
                self.curves.append(torch.stack(self.now))
            if t == self.cfg.max_iters:
                return torch.ones_like(self.finite)
            return self.diverged() | (acc == 1)

    def last_finite(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's loss and accuracy at its last iteration with a finite loss (NaN if none yet)."""
        before = self.prev or tuple(torch.full_like(v, math.nan) for v in self.now)
        return tuple(torch.where(self.finite, now, old) for now, old in zip(self.now, before, strict=True))

    def diverged(self) -> torch.Tensor:
        bad = ~self.finite
        if self.cfg.diverge_factor is not None and self.t > 0:
            bad |= self.now[0] > self.cfg.diverge_factor * self.initial
        return bad

    def record_band(self) -> None:
        in_band = self.rows < self.band_runs
        self.held[self.rows[in_band]] = self.last_finite()[0][in_band].double().cpu()
        self.band[:, self.t // self.stride] = torch.nanquantile(self.held, self.quartiles)
        self.band_points = self.t // self.stride + 1

    def drop(self, keep: torch.Tensor) -> None:
        """Write out the runs that stopped at this iteration (keep False), then forget them."""
        stop, t = ~keep, self.t
        loss, acc = self.last_finite()
        in_band = stop & (self.rows < self.band_runs)  # a stopped run's band value: its last loss
        self.held[self.rows[in_band]] = loss[in_band].double().cpu()
        columns = [loss, acc, *self.factors, dead_units(self.h), self.diverged()]
        samples = t // self.stride + 1
        for run, (loss_r, acc_r, l2f, slope, out, dead, div) in zip(
                self.rows[stop].tolist(), zip(*(c[stop].tolist() for c in columns), strict=True), strict=True):
            self.out[run].update(final_loss=finite_or_none(loss_r), final_accuracy=finite_or_none(acc_r),
                                 dead_start=int(self.dead_start[run]), dead_end=dead,
                                 l2_factor=finite_or_none(l2f / samples), hidden_slope=finite_or_none(slope / samples),
                                 hidden_output=finite_or_none(out / samples))
            if div or acc_r == 1:
                self.out[run]["diverged_at" if div else "iterations"] = t
        self.rows, self.factors, self.initial = self.rows[keep], self.factors[:, keep], self.initial[keep]
        self.now, self.finite = tuple(v[keep] for v in self.now), self.finite[keep]

    def results(self) -> dict[str, Any]:
        band = self.band[:, :self.band_points].numpy() if self.band_points else None
        curves = torch.stack(self.curves).double().cpu().numpy() if self.curves else None
        return {"runs": self.out, "band": band, "band_stride": self.stride,
                "curves": None if curves is None else {"loss": curves[:, 0, 0], "accuracy": curves[:, 1, 0]}}


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def dead_units(h: torch.Tensor) -> torch.Tensor:
    """Per run (R,), hidden units whose output is exactly 0 on every image (h (R, H, B)): a dead ReLU
    gets no gradient again. A sigmoid unit never outputs exactly 0, so it counts 0 by the same rule."""
    return (h == 0).all(dim=2).sum(-1).cpu()


# --- 2.1-2.5: the settings side by side, their typical seeds, the statistics over seeds.


def plan_runs(args: argparse.Namespace, setting: str) -> list[tuple[int, float]]:
    """The (seed, rate) runs of one setting: the main study first (its band is drawn), then the
    half-rate control and the sweep; a run asked for twice trains once."""
    runs = [(seed, args.lr) for seed in seed_list(args)]
    if args.control_half_lr and SETTINGS[setting][1] == "ce":
        runs += [(seed, args.lr / 2) for seed in seed_list(args)]
    if args.lrs:
        runs += [(seed, lr) for lr in args.lrs for seed in sweep_seeds(args)]
    return list(dict.fromkeys(runs))


def sweep_seeds(args: argparse.Namespace) -> list[int]:
    return list(range(args.first_seed, args.first_seed + (args.sweep_seeds or args.seeds)))


def train_settings(args: argparse.Namespace, cfg: Config, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Every setting's runs (plan_runs), the settings spread over --workers processes. Returns per
    setting {"by_run": (seed, lr) -> record, "band", "band_stride", "curves" (a lone run's only)}."""
    plans = {s: plan_runs(args, s) for s in args.settings}
    band = args.seeds if args.seeds > 1 else 0
    jobs = [(s, plans[s], x, y, cfg, band, len(plans[s]) == 1) for s in args.settings]

    def done(index: int, result: dict[str, Any]) -> None:
        if cfg.log:
            print(f"  {args.settings[index]}: {len(plans[args.settings[index]])} run(s) done", flush=True)

    out = dict(zip(args.settings, pool_map(train, jobs, args.workers, done), strict=True))
    for setting, result in out.items():
        result["by_run"] = dict(zip(plans[setting], result.pop("runs"), strict=True))
    return out


def setting_record(setting: str, seeds: list[int], by_run: dict[tuple[int, float], dict],
                   lr: float) -> dict[str, Any]:
    """The main study's per-seed results of one setting, and their summary."""
    activation, loss, question = SETTINGS[setting]
    runs = [by_run[(seed, lr)] for seed in seeds]
    per_seed = {key: [r[key] for r in runs] for key in runs[0] if key != "dead_end"}
    its, dead = per_seed["iterations"], [r["dead_end"] for r in runs]
    return per_seed | {
        "question": question, "activation": activation, "loss": loss, "label": LABELS[setting],
        "diverged": [d is not None for d in per_seed["diverged_at"]], "dead_units": dead,
        "dead_units_summary": dead_units_summary(its, dead),
        "summary": summarize_stops(its, per_seed["diverged_at"]),
        "factors": {k: summarize_values(per_seed[k]) for k in ("l2_factor", "hidden_slope", "hidden_output")},
    }


def dead_units_summary(iterations: list[int | None], dead_end: list[int]) -> dict[str, int]:
    """How the seeds with a dead hidden unit at their stop relate to those that missed 100%."""
    missed, dead = [i is None for i in iterations], [d > 0 for d in dead_end]
    both = sum(m and d for m, d in zip(missed, dead, strict=True))
    return {"seeds_with_dead_end": sum(dead), "missed": sum(missed), "missed_with_dead_end": both,
            "reached_with_dead_end": sum(dead) - both}


def factor_table(settings: dict[str, Any], half: dict[str, Any] | None) -> list[dict[str, Any]]:
    """2.5, why: ratios of median iterations, measured, against what the measured gradient factors
    predict to first order (time to 100% ~ 1 / gradient size). L2 against CE: 1 / (L2 run's mean
    2 yhat (1 - yhat)). Sigmoid against ReLU: ReLU's mean f'(a) / sigmoid's. L2 against CE at half
    the rate: predicted 1 / (2 x the L2 run's factor)."""
    med = {s: settings[s]["summary"]["median"] for s in settings}
    fac = {s: {k: v["median"] for k, v in settings[s]["factors"].items()} for s in settings}
    rows = []  # (id, numerator, denominator, measured ratio, predicted ratio, basis of the prediction)
    for act in ("sigmoid", "relu"):
        l2, ce = f"{act}-l2", f"{act}-ce"
        if l2 in med and ce in med:
            rows.append((f"l2_over_ce_{act}", l2, ce, div(med[l2], med[ce]), div(1, fac[l2]["l2_factor"]),
                         "1 / mean 2yhat(1-yhat) of the L2 runs"))
        if half and l2 in med and ce in half:
            rows.append((f"l2_over_half_lr_ce_{act}", l2, f"{ce} at lr/2", div(med[l2], half[ce]["summary"]["median"]),
                         div(0.5, fac[l2]["l2_factor"]), "1 / (2 x mean 2yhat(1-yhat) of the L2 runs)"))
    for loss in ("l2", "ce"):
        sig, relu = f"sigmoid-{loss}", f"relu-{loss}"
        if sig in med and relu in med:
            rows.append((f"sigmoid_over_relu_{loss}", sig, relu, div(med[sig], med[relu]),
                         div(fac[relu]["hidden_slope"], fac[sig]["hidden_slope"]),
                         "ReLU's share of active units / sigmoid's mean sigmoid'(a)"))
    # a measured ratio is None where a median is not reached (then a / b >= cap / b when only a is missing)
    return [{"id": i, "numerator": num, "denominator": den, "predicted": pred, "basis": basis, "measured": measured}
            for i, num, den, measured, pred, basis in rows]


def div(a: float | None, b: float | None) -> float | None:
    """a / b, or None where either is missing or b is 0."""
    return None if a is None or not b else a / b


def sweep_results(trained: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Per setting and rate: every seed's iterations, their median and reach rate, the best rate
    (smallest median among rates where >= min_reach of the seeds reach 100%); the rankings at the
    base and at the best rates, and paired win counts at the best rates."""
    seeds, settings, best_its = sweep_seeds(args), {}, {}
    for setting, result in trained.items():
        its = [[result["by_run"][(seed, lr)]["iterations"] for seed in seeds] for lr in args.lrs]
        summaries = [summarize_stops(i, [None] * len(i)) for i in its]
        fit = [k for k, s in enumerate(summaries) if s["reach_rate"] >= args.min_reach and s["median"] is not None]
        best = min(fit, key=lambda k: summaries[k]["median"], default=None)
        settings[setting] = {"iterations": its, "median": [s["median"] for s in summaries],
                             "reach_rate": [s["reach_rate"] for s in summaries], "best": None}
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args)
    data = load_dataset(args.data_dir, "random")
    runs_per_setting = max(len(plan_runs(args, s)) for s in args.settings)
    check_memory(runs_per_setting * min(args.workers, len(args.settings)),
                 (args.hidden * 8 + 16) * len(data.labels) * 4 + args.max_iters // 500 * 8, "--seeds/--hidden")
    args.workers = worker_count(args.workers, len(args.settings), cfg)
    check_out_dir(args.out)
    x = torch.tensor(data.images.reshape(len(data.images), -1), dtype=cfg.torch_dtype, device=cfg.device)
    y = torch.tensor(data.labels, dtype=cfg.torch_dtype, device=cfg.device)
    seeds = seed_list(args)
    print(f"Part 2: {len(args.settings)} settings x {len(seeds)} seed(s), {runs_per_setting} run(s) per setting, "
          f"on {data.describe()}, {args.dtype} on {args.device}, {args.workers} process(es)", flush=True)
    started = time.perf_counter()
    trained = train_settings(args, cfg, x, y)

    results = results_header("part2_fc.py", args, data, cfg) | {"settings": {}, "workers": args.workers}
    settings = results["settings"]
    for setting, result in trained.items():
        rec = settings[setting] = setting_record(setting, seeds, result["by_run"], args.lr)
        seed, percentile = typical_seed(seeds, rec["iterations"])
        k = seeds.index(seed)
        rec["single"] = {"seed": seed, "percentile": percentile, "iterations": rec["iterations"][k],
                         "diverged_at": rec["diverged_at"][k], "final_accuracy": rec["final_accuracy"][k],
                         "final_loss": rec["final_loss"][k]}
        # its curves: kept when it trained alone, else trained again alone (the same numbers, tested)
        result["typical"] = result["curves"] or train(setting, [(seed, cfg.lr)], x, y, cfg, keep_curves=True)["curves"]
    seconds = time.perf_counter() - started
    results["ranking"] = {
        "single_seed": sorted(settings, key=lambda s: as_rank(settings[s]["single"]["iterations"])),
        "many_seeds": sorted(settings, key=lambda s: rank_key(settings[s]["summary"])),
    }
    results["paired"] = paired_counts({s: settings[s]["iterations"] for s in settings})
    half = None
    if args.control_half_lr:
        half = {s: control_record(trained[s]["by_run"], seeds, args.lr / 2) for s in settings
                if SETTINGS[s][1] == "ce"}
        results["controls"] = {"half_lr_ce": {"lr": args.lr / 2, "settings": half}}
    results["factors"] = factor_table(settings, half)
    if args.lrs:
        results["lr_sweep"] = sweep_results(trained, args)
    write_json(args.out / "part2_fc.json", results | {"figures": []})  # no figure can lose the numbers
    results["figures"] = draw_figures(results, trained, args)
    write_json(args.out / "part2_fc.json", results)
    print_summary(results, seconds, args.out)
    return 0


def control_record(by_run: dict[tuple[int, float], dict], seeds: list[int], lr: float) -> dict[str, Any]:
    """2.5 control: a setting's iterations at rate lr (half the base rate), seed for seed."""
    runs = [by_run[(seed, lr)] for seed in seeds]
    its = [r["iterations"] for r in runs]
    return {"iterations": its, "summary": summarize_stops(its, [r["diverged_at"] for r in runs])}


# --- Figures, drawn for print: a full text width, 9 pt text; one comparative panel per quantity.


def draw_figures(results: dict[str, Any], trained: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The figures of 2.1-2.5; returns the names of those drawn."""
    settings, out = results["settings"], args.out
    order = results["ranking"]["many_seeds"]
    typical = {LABELS[s] + f" (seed {settings[s]['single']['seed']})": trained[s]["typical"] for s in order}
    drawn = {"part2_curves.png": save_figure(out / "part2_curves.png", plot_typical_curves, typical,
                                             "2.1-2.4: the median seed of each setting")}
    if args.seeds > 1:
        drawn["part2_share_reached.png"] = save_figure(
            out / "part2_share_reached.png", plot_share_reached, {LABELS[s]: settings[s]["iterations"] for s in order},
            args.max_iters, f"2.5: share of {args.seeds} seeds at 100% training accuracy")
        bands = {LABELS[s]: (trained[s]["band"], trained[s]["band_stride"]) for s in order}
        drawn["part2_loss_band.png"] = save_figure(out / "part2_loss_band.png", plot_bands, bands,
                                                   f"2.5: training loss over {args.seeds} seeds (median, IQR)")
    if args.lrs:
        drawn["part2_lr_sweep.png"] = save_figure(out / "part2_lr_sweep.png", plot_sweep, results["lr_sweep"])
    return [name for name, ok in drawn.items() if ok]


def plot_typical_curves(curves: dict[str, dict[str, np.ndarray]], title: str) -> Any:
    """Left: the loss of each curve set (log-log: L2 and CE on one scale); right: the accuracy."""
    fig, (left, right) = new_figure(2)
    for label, c in curves.items():
        t = np.arange(1, len(c["loss"]) + 1)  # iteration + 1, so iteration 0 fits a log axis
        (line,) = left.plot(t, c["loss"], lw=1.4, label=label)
        right.plot(t, 100 * c["accuracy"], lw=1.2, color=line.get_color())
    left.set(xscale="log", yscale="log", xlabel="iteration + 1", ylabel="training loss")
    right.set(xscale="log", xlabel="iteration + 1", ylabel="training accuracy (%)", ylim=(40, 101))
    left.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def plot_sweep(sweep: dict[str, Any]) -> Any:
    """Left: median iterations to 100% against the rate (star: best rate); right: share reached."""
    fig, (left, right) = new_figure(2)
    lrs = np.array(sweep["lrs"])
    for s, row in sweep["settings"].items():
        med = np.array([np.nan if m is None else m for m in row["median"]], dtype=float)
        (line,) = left.plot(lrs, med, "o-", ms=3, label=LABELS[s])
        if row["best"]:
            left.plot(row["best"]["lr"], row["best"]["median"], "*", ms=11, color=line.get_color(), mec="k")
        right.plot(lrs, 100 * np.array(row["reach_rate"]), "o-", ms=3, color=line.get_color())
    left.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="median iterations to 100%")
    right.axhline(100 * sweep["min_reach"], color="grey", ls=":", lw=1)
    right.set(xscale="log", xlabel="learning rate", ylabel="seeds at 100% (%)", ylim=(-3, 103))
    left.legend(fontsize=8)
    fig.suptitle(f"2.5: learning-rate sweep, {len(sweep['seeds'])} seeds per rate (star: best rate)")
    return fig


# =============================================================================================
# Shared with part 3, fenced off: flags, seeds, processes, statistics, figures, the data loader.
# =============================================================================================

MAX_SEEDS = 10**6
SEED_RANGE = 2**32  # torch's generator keeps 32 bits of a seed: larger seeds would repeat


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """argparse type: a whole number in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} must be between {low} and {high}")
        return value

    return parse


def add_training_args(parser: Parser) -> None:
    """The flags of every training script; the defaults are the handout's."""
    add = parser.add_argument
    add("--data-dir", type=Path, default=Path("data"), help="folder with the course-layout .npy files")
    add("--out", type=Path, default=Path("figures"), help="folder for the figures and the results JSON")
    add("--seeds", type=bounded_int(1, MAX_SEEDS), default=1, help="number of seeds (paired across settings)")
    add("--first-seed", type=bounded_int(0, SEED_RANGE - 1), default=0,
        help="seeds are first-seed, first-seed + 1, ... (below 2**32)")
    add("--lr", type=positive(float), default=0.1, help="SGD learning rate (handout: 0.1)")
    add("--max-iters", type=bounded_int(0, 100_000), default=10_000, help="cap on SGD updates (handout: 10,000)")
    add("--init-std", type=positive(float), default=0.1, help="std of the truncated normal weights (handout: 0.1)")
    add("--init-bias", type=finite_float, default=0.1, help="initial value of every bias (handout: 0.1)")
    add("--diverge-factor", type=positive(float), default=None,
        help="opt-in: a loss above this many times the initial loss also counts as diverged")
    add("--dtype", choices=("float32", "float64"), default="float32", help="float32 (default) or float64")
    add("--device", choices=("cpu", "cuda"), default="cpu", help="where to train")
    add("--workers", type=bounded_int(1, 64), default=2, help="processes training side by side (cpu; default 2)")
    add("--quiet", action="store_true", help="no progress lines")


def seed_list(args: argparse.Namespace) -> list[int]:
    if args.first_seed + args.seeds > SEED_RANGE:
        raise InputError(f"--first-seed {args.first_seed} + --seeds {args.seeds}: seeds must stay below 2**32 "
                         "(torch keeps 32 bits of a seed)")
    return list(range(args.first_seed, args.first_seed + args.seeds))


def config_from_args(args: argparse.Namespace) -> Config:
    """The Config of the flags, after the device check (and CUDA set for reproducible numbers)."""
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available here; use --device cpu")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    seed_list(args)
    torch.set_num_threads(TORCH_THREADS)
    fields = {k: getattr(args, k) for k in Config.__dataclass_fields__ if hasattr(args, k)}
    return Config(**fields, log=not args.quiet)


PROGRESS_SECONDS = 10.0  # at most one progress line per this many seconds and process
TORCH_THREADS = 1  # per process, whatever the number of seeds: float32 results depend on it


def device_record(cfg: Config) -> dict[str, Any]:
    """Where the numbers were computed (CUDA: the device, CUDA and cuDNN versions)."""
    if cfg.device != "cuda":
        return {"device": "cpu", "torch_threads": TORCH_THREADS}
    return {"device": "cuda", "name": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "tf32": False, "deterministic_algorithms": True}


def worker_count(asked: int, jobs: int, cfg: Config) -> int:
    """Processes to use: never more than jobs or CPU cores (said in one line), one on CUDA."""
    usable = 1 if cfg.device == "cuda" else min(asked, jobs, os.cpu_count() or 1)
    if usable < min(asked, jobs) and cfg.log:
        print(f"note: --workers {asked}: using {usable} (cores or device available)", flush=True)
    return usable


def check_memory(runs: int, bytes_per_run: int, flags: str) -> None:
    """Refuse, before training, a run whose estimated memory exceeds what the machine has free."""
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    need = 3 * runs * bytes_per_run + 300 * 2**20  # autograd keeps about 3 copies; plus torch itself
    if need > free:
        raise InputError(f"{flags}: this run needs about {need / 2**30:.1f} GiB of memory, "
                         f"{free / 2**30:.1f} GiB are free; use fewer seeds, or a smaller network")


def worker_init() -> None:
    """A worker process: one torch thread; Ctrl-C is the parent's to handle; dies with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    torch.set_num_threads(TORCH_THREADS)
    try:  # Linux: SIGTERM when the parent dies, however it dies
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _call(job: tuple[int, Callable[..., Any], tuple]) -> tuple[int, Any]:
    index, fn, args = job
    return index, fn(*args)


def start_workers(workers: int, initializer: Callable[[], None] = worker_init) -> Any:
    """`workers` forked processes, as a context manager (they end with it, Ctrl-C and SIGTERM
    included); for one worker, a null context (work stays in this process)."""
    if workers <= 1:
        return contextlib.nullcontext()
    return multiprocessing.get_context("fork").Pool(workers, initializer=initializer)


def pool_map(fn: Callable[..., Any], jobs: list[tuple], workers: int,
             done: Callable[[int, Any], None] | None = None, pool: Any = None) -> list[Any]:
    """[fn(*job) for job in jobs], in `workers` forked processes when workers > 1, or in the running
    `pool` (each job to the next free process; `done(index, result)` as each finishes). Forked: no
    second start-up. A job's result is the same in any process."""
    results: list[Any] = [None] * len(jobs)
    indexed = [(i, fn, job) for i, job in enumerate(jobs)]
    with contextlib.nullcontext(pool) if pool else start_workers(workers) as running:
        for index, result in running.imap_unordered(_call, indexed) if running else map(_call, indexed):
            results[index] = result
            if done:
                done(index, result)
    return results


def results_header(script: str, args: argparse.Namespace, data: Dataset, cfg: Config) -> dict[str, Any]:
    """What every results file says about how it was made. Same command, same data: same header."""
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())
              if k not in ("quiet", "data_dir", "out")}
    return {"script": script, "config": config, "seeds": seed_list(args), "data": data.record(),
            "device": device_record(cfg), "versions": library_versions(), "iteration_rule": ITERATION_RULE}


ITERATION_RULE = ("iterations to 100% = the number of SGD updates made before the first full-batch "
                  "evaluation at 100% training accuracy; null = not reached within the cap")


# Statistics over seeds. Not reached counts as slower than any run that reached; a quantile that
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


def typical_seed(seeds: list[int], iterations: list[int | None]) -> tuple[int, float]:
    """The seed at the lower median of the iterations (not reached ranked last, ties to the smaller
    seed), and its percentile: the share of seeds with strictly fewer iterations."""
    order = sorted(zip(iterations, seeds, strict=True), key=lambda p: (as_rank(p[0]), p[1]))
    its, seed = order[(len(order) - 1) // 2]
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


# Figures for print: 6.5 x 2.7 inches (a text width), 9 pt text, at most two panels side by side.


def new_figure(panels: int = 1) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "legend.fontsize": 8, "figure.titlesize": 10,
                         "axes.grid": True, "grid.alpha": 0.3})
    return plt.subplots(1, panels, figsize=(6.5, 2.7), layout="constrained")


def plot_share_reached(iterations: dict[str, list[int | None]], max_iters: int, title: str) -> Any:
    """Share of seeds at the stop rule against iteration (log axis), one line per label."""
    fig, ax = new_figure()
    t = np.unique(np.geomspace(1, max_iters + 1, 400).astype(int)) - 1
    for label, its in iterations.items():
        share = np.searchsorted(np.sort([i for i in its if i is not None]), t, side="right") / len(its)
        ax.step(t + 1, 100 * share, where="post", lw=1.6,
                label=f"{label} ({sum(i is not None for i in its)}/{len(its)})")
    ax.set(xscale="log", xlabel="iteration + 1", ylabel="seeds at 100% (%)", ylim=(-2, 102), title=title)
    ax.legend(loc="upper left")
    return fig


def plot_bands(bands: dict[str, tuple[np.ndarray, int]], title: str, ylabel: str = "training loss") -> Any:
    """Median and interquartile band (quartiles (3, T) every `stride` iterations) per label, log-log."""
    fig, ax = new_figure()
    for label, (band, stride) in bands.items():
        t = 1 + stride * np.arange(band.shape[1])
        (line,) = ax.plot(t, band[1], lw=1.4, label=label)
        ax.fill_between(t, band[0], band[2], color=line.get_color(), alpha=0.2, lw=0)
    ax.set(xscale="log", yscale="log", xlabel="iteration + 1", ylabel=ylabel, title=title)
    ax.legend()
    return fig


def describe(iterations: int | None, diverged_at: int | None, final_accuracy: float | None) -> str:
    """A run's outcome in words."""
    if iterations is not None:
        return f"{iterations} iteration{'s' * (iterations != 1)}"
    if diverged_at is not None:
        return f"diverged at iteration {diverged_at}"
    return f"not reached, final accuracy {100 * (final_accuracy or 0):.1f}%"


def fmt(value: float | None) -> str:
    """An iteration count for a printed summary ("-" = not reached)."""
    return "-" if value is None else f"{value:g}"


def print_summary(results: dict[str, Any], seconds: float, out: Path) -> None:
    """The 2.5 answers, a few lines a person reads at the end of the run."""
    settings, n = results["settings"], len(results["seeds"])
    print(f"\n2.5 ranking ({n} seed(s), {seconds:.1f} s); single run = the median seed:")
    print(f"  {'setting':<11} {'single run':<34} {'median':>7} {'IQR':>12} {'reached':>8}  dead units at stop")
    for s in results["ranking"]["many_seeds"]:
        one, summ, dead = settings[s]["single"], settings[s]["summary"], settings[s]["dead_units_summary"]
        single = f"seed {one['seed']}: " + describe(one["iterations"], one["diverged_at"], one["final_accuracy"])
        print(f"  {s:<11} {single:<34} {fmt(summ['median']):>7} {fmt(summ['q1']) + '-' + fmt(summ['q3']):>12} "
              f"{summ['reached']:>3}/{n:<4}  {dead['seeds_with_dead_end']} seed(s)")
    for f in results["factors"]:
        measured, predicted = ("-" if f[k] is None else f"{f[k]:.2f}" for k in ("measured", "predicted"))
        print(f"  {f['id']:<26} median ratio {measured:>5}, first-order prediction {predicted}")
    if "lr_sweep" in results:
        sweep = results["lr_sweep"]
        print("  best rates: " + ", ".join(f"{s} {row['best']['lr']:g}" if row["best"] else f"{s} none"
                                            for s, row in sweep["settings"].items()))
        print(f"  ranking at the best rates: {', '.join(sweep['ranking_at_best'])}")
    print(f"Wrote part2_fc.json and {len(results['figures'])} figure(s) to {out}/")


# The data: one validated loader for every part. The course's files, in the course's layout.
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
    (N,) in {0, 1}, widths (N,) > 0 (half-extents in pixels; detection only, else None)."""

    name: str
    data_dir: str
    images: np.ndarray
    labels: np.ndarray
    widths: np.ndarray | None
    provenance: str  # "course data", "stand-in" or "other"
    sha256: dict[str, str]

    def record(self) -> dict[str, Any]:
        """What a results file says about its data."""
        n, h, w = self.images.shape
        return {"name": self.name, "provenance": self.provenance, "sha256": self.sha256, "n_images": n,
                "image_size": [h, w], "label_counts": {str(c): int((self.labels == c).sum()) for c in (0, 1)}}

    def describe(self) -> str:
        return f"{self.data_dir}/{self.name} ({self.provenance})"


def load_npy(path: Path) -> np.ndarray:
    """One .npy file, pickle disabled, its header's size checked before anything is allocated; any
    problem is an InputError naming the file."""
    try:
        with path.open("rb") as file:
            magic = file.read(6)
            if magic != b"\x93NUMPY":
                raise InputError(f"{path}: " + ("file is empty" if not magic else "holds an archive, not one array"
                                 if magic.startswith(b"PK") else "not a .npy file (no .npy header)"))
            file.seek(0)
            version = np.lib.format.read_magic(file)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(file)
            if dtype.hasobject:
                raise InputError(f"{path}: holds Python objects (pickle); refusing to load it")
            if dtype.kind not in "biuf":
                raise InputError(f"{path}: values must be numbers, found dtype {dtype}")
            if math.prod(shape) > MAX_VALUES:
                raise InputError(f"{path}: claims shape {shape}, more than {MAX_VALUES:,} numbers")
            array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: file is missing") from None
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{path}: not a readable .npy array ({err})") from None
    if not np.isfinite(array.astype(np.float64)).all():
        raise InputError(f"{path}: holds NaN or infinite values")
    return array


def load_dataset(data_dir: Path | str, name: str) -> Dataset:
    """Load and check dataset `name` ("random", "line" or "detection") from data_dir."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"--data-dir {root}: no such folder")
    paths = {role: root / rel for role, rel in DATASET_FILES[name].items()}
    arrays = {role: load_npy(path) for role, path in paths.items()}
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
    if "widths" in arrays and arrays["widths"].min() <= 0:
        raise InputError(f"{paths['widths']}: widths must be > 0, found {arrays['widths'].min():g}")
    digests = {rel: hashlib.sha256(paths[role].read_bytes()).hexdigest() for role, rel in DATASET_FILES[name].items()}
    provenance = next((label for label, table in (("course data", COURSE_SHA256), ("stand-in", STANDIN_SHA256))
                       if all(table[rel] == d for rel, d in digests.items())), "other")
    widths = arrays.get("widths")
    return Dataset(name, str(data_dir), images.astype(np.float64), arrays["labels"].astype(np.float64),
                   None if widths is None else widths.astype(np.float64), provenance, digests)


if __name__ == "__main__":
    sys.exit(run_main(main))
