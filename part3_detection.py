"""Part 3.2: 3.1's conv net with a width head, on the detection dataset (handout question 3.2).

    python part3_detection.py              # the handout's run: one seed
    python part3_detection.py --seeds 20 --control-no-width-head --control-width-lr-x10   # `make all`

Each image holds one object: label 0 = a diamond, label 1 = an axis-aligned square. Its width w is
the half-extent in pixels (the bounding box is (2w + 1) x (2w + 1)). One network classifies the object
and predicts its width; how long until every class and every width is right, and why so long?

Read top to bottom: the network (3.1's LineNet plus a width head), the training loop (forward, the
objective, the SGD step, the stop rule) and `main`; then the 3.2 study (many seeds, which images are
slow and why, the two controls); then the figures and the printed summary. 3.1's network, its start
and its figures come from part3_line.py; flags, data, processes and statistics from part2_fc.py.

Two learning rates (handout): the classifier learns by cross-entropy CE at --lr 0.1, the width by
L2 = mean over the images of (predicted - true width)^2 (no factor 1/2) at --lr-reg 0.001. One plain
SGD step of size lr on  CE + (lr_reg / lr) L2  moves the classifier (fc) by lr dCE, the width head by
lr_reg dL2 and the shared conv layers by both: exactly the two rates. A width is right when
|predicted - true| < 0.5 pixels; a run stops at its first 100% width accuracy (the handout's rule),
at a non-finite loss (diverged) or at the cap.

Controls: --control-no-width-head trains 3.1's network alone (CE only, stop at 100% classification);
--control-width-lr-x10 trains 3.2 with the width's rate times 10; --control-confusable trains 3.1's
network alone without the confusable images, and without as many others drawn at random. With
--seeds N every study trains seeds first-seed .. first-seed + N - 1 from the same start; each
(study, seed) is one job, the jobs spread over --workers processes (one job: no extra process).

Outputs in --out: part3_detection.json (written first: no figure can lose it),
part3_detection_classification.png (3.2 (1)-(2)), _width.png
((3)-(4)), _width_scatter.png, _kernels.png, _feature_maps.png; with --seeds > 1 also
_share_reached.png, _loss_band.png and _slow_images.png.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from part2_fc import (
    FIGURE_SIZE,
    PROGRESS_SECONDS,
    Config,
    Dataset,
    Parser,
    check_resources,
    config_from_args,
    load_dataset,
    paired_counts,
    results_header,
    run_jobs,
    run_main,
    save_figure,
    seed_list,
    summarize_stops,
    summarize_values,
    typical_seed,
    write_json,
)
from part3_line import (
    CHANNELS,
    KERNEL,
    PADDINGS,
    SHARPNESS_ITERATIONS,
    LineNet,
    add_part3_args,
    conv_sizes,
    finite_or_none,
    initial_model,
    nearest_similarity,
    plot_feature_maps,
    plot_kernels,
    sharpness_replay,
)

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WIDTH_TOLERANCE = 0.5  # a width is right when |predicted - true| < 0.5 pixels (strictly)
CLASSES = {0: "diamond", 1: "square"}  # the labels' meaning in the course's files
# study -> its name in figures: the handout's 3.2; --control-no-width-head: 3.1's network alone (CE
# only, stop at 100% classification); --control-width-lr-x10: 3.2 with the width's rate x10
STUDIES = {"3.2": "3.2", "no_width_head": "no width head", "width_lr_x10": "width rate x10",
           "frozen_features": "features frozen once classified"}
# --control-confusable: 3.1's network alone without the confusable images (those more like an image of
# the other class than like any of their own), and without as many others of each label drawn at random
DROP_STUDIES = ("without_confusable", "without_random")
NO_WIDTH_HEAD = ("no_width_head", *DROP_STUDIES)  # the studies that train 3.1's network alone
CURVES = ("objective", "ce", "l2", "accuracy", "width_accuracy")  # what the loop records at every iteration


# ===== 3.2: Figure 4 with the width head, CE + (lr_reg / lr) L2, plain SGD until every width is right =====


class DetectionNet(LineNet):
    """3.1's network (conv1, conv2 and fc, the class logit) plus 3.2's width head: a second fully
    connected layer off the same conv2 features, one linear unit, the object's width in pixels.
    forward: images x (B, 1, H, W) -> (class logits (B,), widths (B,))."""

    def __init__(self, image: tuple[int, int], padding: str = "valid") -> None:
        super().__init__(image, padding)
        self.width_head = nn.Linear(self.fc.in_features, 1)  # declared last: a seed starts 3.1's layers as in 3.1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return self.heads(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """conv2's maps after ReLU, flattened: (B, 8 * H2 * W2), what both heads read."""
        return self.feature_maps(x)[1].flatten(1)

    def heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits (B,), widths (B,)) from the features (B, 8 * H2 * W2)."""
        return self.fc(features).squeeze(1), self.width_head(features).squeeze(1)


@dataclass
class SeedRun:
    """One seed's training. Numpy and plain numbers only: it crosses processes, where torch tensors
    would travel as open file descriptors. T = stop + 1 evaluations (iterations 0 .. stop), B images."""

    study: str  # a key of STUDIES
    seed: int
    stop: int  # the last iteration evaluated
    iterations: int | None  # = stop where the stop rule was met, else None
    diverged_at: int | None  # = stop where the loss was not finite, else None
    curves: dict[str, np.ndarray]  # CURVES -> (T,): objective, ce, l2 (pixels^2), accuracy, width_accuracy
    logits: np.ndarray  # (T, B) every image's class logit at every iteration
    widths: np.ndarray  # (T, B) every image's predicted width (pixels); NaN without the width head
    conv2_means: np.ndarray  # (B, 8) each conv2 map's mean (after ReLU) per image, at the stop
    weights: dict[str, np.ndarray]  # the network's parameters at the stop
    sharpness: dict[str, float | None]  # head_sharpness at the first 100% classification and at the stop


def train(study: str, seed: int, cfg: Config, data: Dataset) -> SeedRun:
    """The handout's loop for one seed of `study`: forward, objective, backward, SGD step, until the
    stop. Iteration t evaluates the weights after t updates; its forward pass also gives update
    t + 1's gradient. Stop at the first t with every width right (the control without the width head:
    every class right), at a non-finite objective (diverged; opt-in: above diverge_factor x the
    initial one) or at the cap. The frozen-features control keeps conv2's features from its first
    100% classification on and trains the width head alone. Every tensor lives on cfg.device."""
    width_head = study not in NO_WIDTH_HEAD
    x = torch.tensor(data.images[:, None], dtype=cfg.dtype, device=cfg.device)  # (B, 1, H, W)
    y, w = (torch.tensor(v, dtype=cfg.dtype, device=cfg.device) for v in (data.labels, data.widths))  # (B,)
    net = initial_model(DetectionNet if width_head else LineNet, seed, tuple(data.images.shape[1:]), cfg)
    logits_at = torch.full((cfg.max_iters + 1, len(y)), math.nan, dtype=cfg.dtype, device=cfg.device)
    widths_at = torch.full_like(logits_at, math.nan)
    rows: list[dict[str, float]] = []  # per iteration: CURVES -> value
    frozen: torch.Tensor | None = None  # the frozen-features control: conv2's features, once classified
    sharpness: dict[str, float | None] = {"classified": None, "stop": None}
    last_print = time.perf_counter()
    for t in range(cfg.max_iters + 1):
        if width_head:
            features = net.features(x) if frozen is None else frozen  # (B, 8 * H2 * W2)
            logits, predicted = net.heads(features)  # (B,) each
        else:
            logits, predicted = net(x), torch.full_like(w, math.nan)
        ce = F.binary_cross_entropy_with_logits(logits, y)  # 3.1's loss, mean over the images
        l2 = ((predicted - w) ** 2).mean()  # pixels^2, no factor 1/2
        objective = ce + (cfg.lr_reg / cfg.lr) * l2 if width_head else ce  # one step of lr: both rates
        logits_at[t], widths_at[t] = logits.detach(), predicted.detach()
        accuracy = ((logits > 0) == (y > 0.5)).to(cfg.dtype).mean()
        width_accuracy = ((predicted - w).abs() < WIDTH_TOLERANCE).to(cfg.dtype).mean()
        now = dict(zip(CURVES, torch.stack([objective, ce, l2, accuracy, width_accuracy]).tolist(), strict=True))
        rows.append(now)  # one read from the device per iteration
        diverged = not math.isfinite(now["objective"]) or (  # a non-finite loss, or the opt-in rule
            cfg.diverge_factor is not None and now["objective"] > cfg.diverge_factor * rows[0]["objective"])
        reached = now["width_accuracy" if width_head else "accuracy"] == 1 and not diverged  # the handout's rule
        if width_head and sharpness["classified"] is None and now["accuracy"] == 1 and not diverged:
            sharpness["classified"] = head_sharpness(features, cfg.lr_reg)
            frozen = features.detach() if study == "frozen_features" else None
        if reached or diverged or t == cfg.max_iters:
            break
        objective.backward()
        with torch.no_grad():
            for p in net.parameters() if frozen is None else net.width_head.parameters():
                # p -= lr * dL/dp (as optim.SGD computes it: one fused multiply-add); the objective's
                # weights give the two rates
                p.add_(p.grad, alpha=-cfg.lr)
            for p in net.parameters():
                p.grad = None
        if cfg.log and time.perf_counter() - last_print > PROGRESS_SECONDS:  # a long seed says where it is
            last_print = time.perf_counter()
            print(f"  {study}, seed {seed}: iteration {t}, {100 * now['accuracy']:.1f}% classified, "
                  f"{100 * now['width_accuracy']:.1f}% of widths right", flush=True)
    with torch.no_grad():
        conv2 = net.feature_maps(x)[1].mean((2, 3))  # (B, 8) at the stop: which maps are dead
    if width_head and not diverged:
        sharpness["stop"] = head_sharpness(features, cfg.lr_reg)
    finite = np.isfinite([r["objective"] for r in rows])  # (T,): a diverged iteration records nothing
    return SeedRun(study, seed, t, t if reached else None, t if diverged else None,
                   {name: np.where(finite, [r[name] for r in rows], np.nan) for name in CURVES},
                   *(np.where(finite[:, None], v[:t + 1].cpu().numpy(), np.nan) for v in (logits_at, widths_at)),
                   conv2.double().cpu().numpy(), {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()},
                   sharpness)


def early_sharpness(run: SeedRun, settled: int | None, cfg: Config, data: Dataset) -> dict[str, list[float | None]]:
    """The median seed replayed (sharpness_replay) with its step's objective, CE + (lr_reg / lr) L2,
    from the start until 20 iterations after every image stays classified right (`settled`; None:
    never; at most SHARPNESS_ITERATIONS and the stop): "sharpness", lr x the objective's steepest curvature in all
    the weights, and the run's own "objective" at the same iterations."""
    x = torch.tensor(data.images[:, None], dtype=cfg.dtype, device=cfg.device)  # (B, 1, H, W)
    y, w = (torch.tensor(v, dtype=cfg.dtype, device=cfg.device) for v in (data.labels, data.widths))  # (B,)

    def objective(net: nn.Module) -> torch.Tensor:
        logits, predicted = net(x)
        return F.binary_cross_entropy_with_logits(logits, y) + (cfg.lr_reg / cfg.lr) * ((predicted - w) ** 2).mean()

    steps = min(run.stop, run.stop if settled is None else settled + 20, SHARPNESS_ITERATIONS)
    start = initial_model(DetectionNet, run.seed, tuple(data.images.shape[1:]), cfg)
    _, sharpness = sharpness_replay(start, objective, cfg.lr, steps)
    objective_at = [finite_or_none(v) for v in run.curves["objective"][:steps + 1].tolist()]
    return {"sharpness": sharpness, "objective": objective_at}


def head_sharpness(features: torch.Tensor, lr_reg: float) -> float:
    """The width head's rate x the largest curvature of its L2 loss in the head's weights: the largest
    eigenvalue of (2 / B) [F 1]^T [F 1] for the features F (B, n). Plain gradient descent on the head
    alone overshoots along that direction when this exceeds 2; far below 2, the step is small there."""
    design = torch.cat([features.detach().double(), features.new_ones(len(features), 1).double()], 1)
    return float(lr_reg * torch.linalg.eigvalsh(2 / len(design) * design.T @ design).max())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args, {"--lr-reg": (args.lr_reg, math.ulp(0.0), 1e6)}, padding=args.padding,
                           lr_reg=args.lr_reg)
    data = load_dataset(args.data_dir, "detection")
    conv_sizes(tuple(data.images.shape[1:]), args.padding)  # the images fit two 7x7 convolutions
    studies = {"3.2": cfg} | ({"no_width_head": cfg} if args.control_no_width_head else {}) | (
        {"width_lr_x10": replace(cfg, lr_reg=10 * cfg.lr_reg)} if args.control_width_lr_x10 else {}) | (
        {"frozen_features": cfg} if args.control_frozen_features else {})
    seeds = seed_list(args.first_seed, args.seeds)
    drops = confusable_drops(data, seeds) if args.control_confusable else {}  # (study, seed) -> images left out
    if drops:  # 3.1's network alone (as the no-width-head control), on all the images and on fewer
        studies |= {"no_width_head": cfg} | {study: cfg for study in DROP_STUDIES}
    jobs = [(study, seed, study_cfg, without(data, drops[study, seed]) if (study, seed) in drops else data)
            for seed in seeds for study, study_cfg in studies.items()]
    # memory per run: its (T, B) logits and widths, kept until the end, and the activations
    history = (args.max_iters + 1) * (2 * len(data.labels) * cfg.dtype.itemsize + 5 * 8)
    args.workers = check_resources(args, cfg, len(jobs), -(-len(jobs) // min(args.workers, len(jobs))),
                                   history // 3 + data.images.size * (1 + CHANNELS[0] + CHANNELS[1]) * 8)
    print(f"Part 3.2: {len(seeds)} seed(s) x {len(studies)} stud{'y' if len(studies) == 1 else 'ies'} on "
          f"{data.describe}, lr {cfg.lr:g} (CE) and {cfg.lr_reg:g} (width L2), {args.dtype} on {cfg.device}, "
          f"{args.workers} process(es)", flush=True)
    runs = run_jobs(train, jobs, args.workers, (lambda i, run: print(
        f"  {run.study}, seed {run.seed}: " + ("done" if run.iterations is not None else "diverged" if
                                              run.diverged_at is not None else "not done by the cap")
        + f" at iteration {run.stop} (job {i + 1} of {len(jobs)})", flush=True)) if cfg.log and len(jobs) > 1
        else lambda i, run: None)
    by_study = {study: [r for r in runs if r.study == study] for study in studies}
    results = detection_results(args, cfg, data, by_study, drops)
    write_json(args.out / "part3_detection.json", results | {"figures": []})  # no figure can lose the numbers
    drawn = {study: r for study, r in by_study.items() if study not in DROP_STUDIES}
    results["figures"] = draw_figures(results, drawn, cfg, data, args.out)
    write_json(args.out / "part3_detection.json", results)
    print_summary(results, args.out)
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(prog="part3_detection.py", description="Part 3.2: the conv net with a width head.")
    add_part3_args(parser)
    add = parser.add_argument
    add("--lr-reg", type=float, default=0.001,
        help="learning rate of the width's L2 loss (handout: 0.001); --lr is the classifier's")
    add("--control-no-width-head", action="store_true",
        help="control: also train 3.1's network alone (CE only), stop at 100%% classification")
    add("--control-width-lr-x10", action="store_true", help="control: also train with --lr-reg x 10")
    add("--control-frozen-features", action="store_true",
        help="control: also train with conv2's features frozen from the first 100%% classification on "
             "(the width head alone learns after it)")
    add("--control-confusable", action="store_true",
        help="control: also train 3.1's network alone (CE only) without the images more like one of the other "
             "class than like any of their own, and without as many others per label drawn at random (per seed)")
    return parser.parse_args(argv)


# ===== 3.2, the study: every seed measured, which images are slow and why, the two controls =====


def seed_record(run: SeedRun, data: Dataset, groups: dict[str, np.ndarray], baseline_mse: float,
                chance_ce: float) -> dict[str, Any]:
    """One seed's measurements: the first 100%
    classification; the relapses after it (images wrong again at a later iteration); per image and
    per group the iteration from which it stays classified right; each image's initial margin (its
    logit signed by the label: negative = wrong at the start); the steps at which either accuracy
    falls; the width loss's 20x fall, the first 90% of widths right, and where it
    beats predicting the mean width; the dead conv2 maps and the collapse to a constant prediction."""
    # (T, B): each image classified right at each iteration (a non-finite logit is not right)
    classified = ((run.logits > 0) == (data.labels > 0.5)) & np.isfinite(run.logits)
    everyone, wrong = classified.all(1), ~classified
    first = int(everyone.argmax()) if everyone.any() else None  # the first 100% classification
    last_wrong = len(wrong) - 1 - wrong[::-1].argmax(0)  # per image the last iteration it was wrong, if ever
    # per image, the iteration from which it stays right to the stop: None = wrong at the stop
    stays = [None if wrong[-1, i] else int(last_wrong[i]) + 1 if wrong[:, i].any() else 0
             for i in range(wrong.shape[1])]
    group_right = {name: classified[:, rows].all(1) for name, rows in groups.items()}  # (T,) per group
    final = run.stop - (run.diverged_at is not None)  # the last iteration with finite numbers (-1: none)
    ce, accuracy = (float(run.curves[k][final]) if final >= 0 else None for k in ("ce", "accuracy"))
    l2, width_accuracy = run.curves["l2"], run.curves["width_accuracy"]
    hits = {"l2_fall_20x": np.flatnonzero(l2 <= l2[0] / 20), "beats_mean_width": np.flatnonzero(l2 < baseline_mse),
            "widths_90": np.flatnonzero(width_accuracy >= 0.9)}  # the first time 90% of the widths are right
    record = {
        "classification_iterations": first,
        "all_classified_from": None if None in stays else max(stays),
        "relapsed_images": None if first is None else np.flatnonzero(wrong[first + 1:].any(0)).tolist(),
        "relapse_iterations": None if first is None else int((~everyone[first + 1:]).sum()),
        "image_classified_from": stays,
        "initial_margin": [v if math.isfinite(v) else None for v in ((2 * data.labels - 1) * run.logits[0]).tolist()],
        "group_classification_iterations": {
            name: None if any(stays[i] is None for i in rows) else max(stays[i] for i in rows)
            for name, rows in groups.items()},
        "group_first_classified": {name: int(ok.argmax()) if ok.any() else None for name, ok in group_right.items()},
        "final_ce": ce, "final_accuracy": accuracy,
        "accuracy_falls": int((np.diff(run.curves["accuracy"]) < 0).sum()),  # steps that made the accuracy worse
        "collapsed": ce is not None and abs(ce - chance_ce) < 1e-3 and accuracy <= max(
            float(data.labels.mean()), 1 - float(data.labels.mean())),
        "dead_conv2_maps": int((run.conv2_means == 0).all(0).sum()) if np.isfinite(run.conv2_means).all() else None,
        "head_sharpness": run.sharpness,
    }
    if run.study in NO_WIDTH_HEAD:  # no widths to measure
        return record
    width_wrong = ~(np.abs(run.widths - data.widths) < WIDTH_TOLERANCE)  # (T, B): NaN counts as wrong
    width_last_wrong = len(width_wrong) - 1 - width_wrong[::-1].argmax(0)
    return record | {
        # per image, the iteration from which its width stays right to the stop: None = wrong at the stop
        "width_right_from": [None if width_wrong[-1, i] else int(width_last_wrong[i]) + 1 if width_wrong[:, i].any()
                             else 0 for i in range(width_wrong.shape[1])],
        "final_l2": float(l2[final]) if final >= 0 else None,
        "width_accuracy_falls": int((np.diff(width_accuracy) < 0).sum()),
        "final_width_accuracy": float(width_accuracy[final]) if final >= 0 else None,
        "final_max_width_error": float(np.abs(run.widths[final] - data.widths).max()) if final >= 0 else None,
    } | {key: {"iteration": int(t[0]), "width_accuracy": float(width_accuracy[t[0]]), "rms": float(np.sqrt(l2[t[0]]))}
         if t.size else None for key, t in hits.items()}


def study_record(runs: list[SeedRun], per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One study over its seeds: per seed the stop and the measurements, their summaries over seeds,
    and the seeds that collapsed to a constant prediction (listed by seed number)."""
    its, div = [r.iterations for r in runs], [r.diverged_at for r in runs]
    classification = [m["classification_iterations"] for m in per_seed]
    return {"iterations": its, "diverged_at": div, "diverged": [d is not None for d in div],
            "summary": summarize_stops(its, div), "classification_iterations": classification,
            "classification_summary": summarize_stops(classification, div),
            "final_loss": [m["final_ce"] for m in per_seed], "final_accuracy": [m["final_accuracy"] for m in per_seed],
            "collapsed_seeds": [r.seed for r, m in zip(runs, per_seed, strict=True) if m["collapsed"]],
            "head_sharpness": {when: summarize_values([m["head_sharpness"][when] for m in per_seed])
                               for when in ("classified", "stop")},
            "measurements": per_seed}


def detection_results(args: argparse.Namespace, cfg: Config, data: Dataset, by_study: dict[str, list[SeedRun]],
                      drops: dict[tuple[str, int], np.ndarray]) -> dict[str, Any]:
    """The results record: the header, 3.2's study at the top level (the keys the report reads), its
    median seed, the data's groups and their confound, the slow images, and the controls. drops: the
    images (B,) bool that --control-confusable's runs left out, by (study, seed); every other run
    trained on all of them."""
    image = tuple(data.images.shape[1:])
    (h1, w1), (h2, w2) = conv_sizes(image, cfg.padding)
    label_rows = {c: np.flatnonzero(data.labels == c) for c in CLASSES}
    width_rows = {w: np.flatnonzero(data.widths == w) for w in np.unique(data.widths)}
    groups = {f"label {c}": r for c, r in label_rows.items() if r.size} | {f"width {w:g}": r for w, r in
                                                                           width_rows.items()}
    baseline_mse = float(np.mean((data.widths - data.widths.mean()) ** 2))  # predicting the mean width
    share = float(data.labels.mean())

    def record(run: SeedRun) -> dict[str, Any]:  # fewer images: no groups, its own share of labels
        if (run.study, run.seed) not in drops:
            return seed_record(run, data, groups, baseline_mse, chance_ce(data.labels))
        own = without(data, drops[run.study, run.seed])
        return seed_record(run, own, {}, baseline_mse, chance_ce(own.labels))

    studies = {study: study_record(runs, [record(r) for r in runs]) for study, runs in by_study.items()}
    main_study, runs = studies["3.2"], by_study["3.2"]
    seeds = [r.seed for r in runs]
    seed, percentile = typical_seed(seeds, main_study["iterations"]) if len(runs) > 1 else (seeds[0], 0.0)
    one = main_study["measurements"][seeds.index(seed)]
    if len(runs) > 1:  # the study's median seed only: a single run does not pay for the replay
        one = one | early_sharpness(runs[seeds.index(seed)], one["all_classified_from"], cfg, data)
    return results_header("part3_detection.py", args, data, cfg) | main_study | {
        "network": {"image_size": list(image), "padding": cfg.padding, "pad_pixels": PADDINGS[cfg.padding],
                    "kernel": KERNEL, "feature_maps": [[CHANNELS[0], h1, w1], [CHANNELS[1], h2, w2]],
                    "fc_inputs": CHANNELS[1] * h2 * w2, "parameters": sum(v.size for v in runs[0].weights.values())},
        "workers": args.workers, "width_tolerance": WIDTH_TOLERANCE,
        "mean_width_baseline": {"mse": baseline_mse, "rms": baseline_mse ** 0.5},
        "collapse_rule": {"chance_ce": chance_ce(data.labels), "within": 1e-3,
                          "accuracy_at_most": max(share, 1 - share)},
        "groups": {"label": {str(c): int(r.size) for c, r in label_rows.items()},
                   "width": {f"{w:g}": int(r.size) for w, r in width_rows.items()},
                   "label_by_width": {f"{w:g}": {str(c): int((data.labels[r] == c).sum()) for c in CLASSES}
                                      for w, r in width_rows.items()}},
        "final_regression_accuracy": [m["final_width_accuracy"] for m in main_study["measurements"]],
        "final_l2_loss": [m["final_l2"] for m in main_study["measurements"]],
        "max_width_error": [m["final_max_width_error"] for m in main_study["measurements"]],
        "single": {"seed": seed, "percentile": percentile, "iterations": main_study["iterations"][seeds.index(seed)],
                   "diverged_at": main_study["diverged_at"][seeds.index(seed)]} | one,
        "relapses": relapse_summary(main_study, groups) if len(runs) > 1 else None,
        "slow_images": slow_images(main_study["measurements"], data) if len(runs) > 1 else None,
        "slow_widths": slow_widths(main_study["measurements"], data) if len(runs) > 1 else None,
        "conv2_class_means": {str(c): [float(v) if math.isfinite(v) else None for v in
                                       runs[seeds.index(seed)].conv2_means[r].mean(0)] for c, r in label_rows.items()
                              if r.size},
        "controls": {study: None if study not in studies else studies[study] | (
            {"compared_with_3_2": compare_with_3_2(study, studies[study], main_study)})
            for study in ("no_width_head", "width_lr_x10", "frozen_features")},
        "confusable_control": confusable_record(studies, by_study, drops) if drops else None,
    }


def chance_ce(labels: np.ndarray) -> float:
    """The cross-entropy of predicting the share of label 1 for every image (nats)."""
    share = float(labels.mean())
    return -sum(p * math.log(p) for p in (share, 1 - share) if p > 0)


def confusable_images(data: Dataset) -> np.ndarray:
    """(B,) bool: the images more like an image of the other class than like any of their own (cosine
    of the pixel vectors), the ones slow_images finds classified right last."""
    cos_same, cos_other = nearest_similarity(data.images, data.labels)
    return cos_other > cos_same


def confusable_drops(data: Dataset, seeds: list[int]) -> dict[tuple[str, int], np.ndarray]:
    """--control-confusable's images to leave out, (B,) bool by (study, seed): the confusable ones
    ("without_confusable"), and as many others of each label drawn at random per seed ("without_random")."""
    confusable = confusable_images(data)
    drops = {}
    for seed in seeds:
        drops[("without_confusable", seed)] = confusable
        drops[("without_random", seed)] = random_like(confusable, data.labels, seed)
    return drops


def random_like(drop: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """(B,) bool: as many images of each label as `drop` holds, drawn at random (numpy's generator
    seeded with `seed`) from the images `drop` leaves, so that the control drops the same count."""
    rng, out = np.random.default_rng(seed), np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        pool = np.flatnonzero(~drop & (labels == c))
        out[rng.choice(pool, size=min(int((drop & (labels == c)).sum()), len(pool)), replace=False)] = True
    return out


def without(data: Dataset, drop: np.ndarray) -> Dataset:
    """The dataset without the images where `drop` (B,) is True."""
    keep = ~drop
    return replace(data, images=data.images[keep], labels=data.labels[keep], widths=data.widths[keep],
                   describe=f"{data.describe}, {int(drop.sum())} image(s) left out")


def confusable_record(studies: dict[str, Any], by_study: dict[str, list[SeedRun]],
                      drops: dict[tuple[str, int], np.ndarray]) -> dict[str, Any]:
    """--control-confusable: 3.1's network alone on all the images (no_width_head), without the
    confusable ones, and without as many others at random; each seed starts from the same weights in
    all three, so they pair seed by seed. Per study its classification stops (the stop of these
    runs) and their summary; each drop against all the images (median_ratio above 1 = faster without),
    and the confusable drop against the random one (wins = seeds where dropping the confusable images
    is faster). dropped: the images left out (indices into the full dataset), the random ones per seed."""
    seeds = [r.seed for r in by_study["without_random"]]
    out = {study: {"classification_iterations": studies[study]["classification_iterations"],
                   "classification_summary": studies[study]["classification_summary"],
                   "final_loss": studies[study]["final_loss"], "collapsed_seeds": studies[study]["collapsed_seeds"]}
           for study in NO_WIDTH_HEAD}
    for study in DROP_STUDIES:
        out[study]["compared_with_all_images"] = compare_with_3_2(study, studies[study], studies["no_width_head"])
    confusable = drops["without_confusable", seeds[0]]  # the same images in every seed
    out["without_confusable"]["dropped"] = np.flatnonzero(confusable).tolist()
    out["without_random"]["dropped"] = [np.flatnonzero(drops["without_random", s]).tolist() for s in seeds]
    out["confusable_vs_random"] = compare_with_3_2("without_confusable", studies["without_confusable"],
                                                   studies["without_random"])["classification_iterations"]
    out["n_images"] = {"all": len(confusable), "without": len(confusable) - int(confusable.sum())}
    return out


def relapse_summary(study: dict[str, Any], groups: dict[str, np.ndarray]) -> dict[str, Any]:
    """After a seed's first 100% classification, images can be classified wrong again (relapse); a
    group then stays right only from a later iteration. Per group, over seeds: the median of its
    first iteration with all its images right, of the iteration from which they stay right, and the
    seeds in which one of its images relapses (exactly the seeds where the latter comes after the
    seed's first 100%)."""
    m = study["measurements"]
    relapsed = [x["relapsed_images"] for x in m]
    median = {key: {name: summarize_stops([x[key][name] for x in m], study["diverged_at"])["median"]
                    for name in groups} for key in ("group_first_classified", "group_classification_iterations")}
    return {"seeds_with_relapses": sum(bool(r) for r in relapsed), "n_seeds": len(m),
            "relapsed_images": summarize_values([None if r is None else len(r) for r in relapsed]),
            "classification_median": study["classification_summary"]["median"],
            "all_classified_from_median": summarize_stops([x["all_classified_from"] for x in m],
                                                          study["diverged_at"])["median"],
            "groups": {name: {"first_classified_median": median["group_first_classified"][name],
                              "classified_from_median": median["group_classification_iterations"][name],
                              "seeds_relapsing": sum(bool(set(r or ()) & set(rows.tolist())) for r in relapsed)}
                       for name, rows in groups.items()}}


def slow_images(per_seed: list[dict[str, Any]], data: Dataset) -> dict[str, Any]:
    """Why some images are classified right last. Per image, its most similar other image (cosine of
    the pixel vectors) in its own class and in the other class: an image more like one of the other
    class than like any of its own ("nearest_other") is hard to separate. Measured: the iteration from
    which each image stays right (median over seeds) by that, and per seed the rank correlation of
    that iteration with the similarity margin (cos_other - cos_same), the initial margin, the width
    and the label; how often the last image of a seed is a nearest_other one; per image, its label and in
    how many seeds it relapses and in how many it is the last to stay right."""
    cos_same, cos_other = nearest_similarity(data.images, data.labels)
    nearest_other, n_images = cos_other > cos_same, len(data.images)
    stays = np.array([[np.inf if v is None else v for v in s["image_classified_from"]] for s in per_seed])  # (S, B)
    last = [np.flatnonzero(row == row.max()) for row in stays]  # each seed's last image(s) to stay right
    relapsed = [i for s in per_seed for i in s["relapsed_images"] or []]
    predictors = {"similarity_margin": [cos_other - cos_same] * len(stays), "width": [data.widths] * len(stays),
                  "label": [data.labels] * len(stays),
                  "initial_margin": [[np.nan if v is None else v for v in s["initial_margin"]] for s in per_seed]}
    rho = {name: [rank_correlation(row, v) for row, v in zip(stays, values, strict=True)]
           for name, values in predictors.items()}
    median = {key: float(np.median(stays[:, mask])) if mask.any() and np.isfinite(np.median(stays[:, mask]))
              else None for key, mask in (("nearest_other", nearest_other), ("nearest_same", ~nearest_other))}
    return {"similarity": "cosine of the pixel vectors",
            **{key: [float(v) if np.isfinite(v) else None for v in values]  # -inf: no other image of that class
               for key, values in (("cos_other", cos_other), ("cos_same", cos_same))},
            "nearest_other": nearest_other.tolist(), "n_nearest_other": int(nearest_other.sum()),
            "image_classified_from_median": [float(v) if np.isfinite(v) else None for v in np.median(stays, 0)],
            "classified_from_median": median,
            "last_image_nearest_other": sum(bool(nearest_other[i].all()) for i in last), "n_seeds": len(stays),
            "relapses": len(relapsed), "relapses_nearest_other": int(nearest_other[relapsed].sum()) if relapsed else 0,
            "labels": data.labels.astype(int).tolist(),  # per image, so that what follows can be split by label
            "widths": data.widths.tolist(),  # and by true width
            "relapsing_seeds_per_image": np.bincount(np.array(relapsed, dtype=int), minlength=n_images).tolist(),
            "last_seeds_per_image": np.bincount(np.concatenate(last).astype(int), minlength=n_images).tolist(),
            "rank_correlation": {name: {"per_seed": r, "median": summarize_values(r)["median"]}
                                 for name, r in rho.items()}}


def slow_widths(per_seed: list[dict[str, Any]], data: Dataset) -> dict[str, Any]:
    """Which widths are right last. Per seed, the rank correlation of the iteration from which each
    image's width stays right with its true width's distance from the mean width (a linear head
    fitted under L2 starts near the mean: the far widths have the furthest to go) and with the true
    width; per true width, in how many seeds the last width to stay right is one of that width."""
    stays = np.array([[np.inf if v is None else v for v in s["width_right_from"]] for s in per_seed])  # (S, B)
    distance = np.abs(data.widths - data.widths.mean())
    rho = {name: [rank_correlation(row, values) for row in stays]
           for name, values in (("distance_from_mean", distance), ("width", data.widths))}
    last = [np.unique(data.widths[row == row.max()]) for row in stays]  # the true width(s) of each seed's last
    return {"mean_width": float(data.widths.mean()),
            "rank_correlation": {name: {"per_seed": r, "median": summarize_values(r)["median"]}
                                 for name, r in rho.items()},
            "last_width_seeds": {f"{w:g}": sum(bool((ws == w).any()) for ws in last) for w in np.unique(data.widths)},
            "n_seeds": len(stays)}


def rank_correlation(a: np.ndarray, b: Any) -> float | None:
    """Spearman's rho: the correlation of the ranks (tied values share their mean rank); None where
    either side is constant."""
    ranks = []
    for values in (np.asarray(a, dtype=float), np.asarray(b, dtype=float)):
        _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        ranks.append((first + (counts - 1) / 2)[inverse])
    if min(r.std() for r in ranks) == 0:
        return None
    return float(np.corrcoef(*ranks)[0, 1])


def compare_with_3_2(study: str, control: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """A control against 3.2 (for --control-confusable: against another study, `base`), seed for seed:
    the base's median over the control's, for the first 100% classification and (controls with the
    width head) for the stop; above 1 = the control is faster.
    Paired counts: wins = seeds where the control is faster."""
    out = {}
    keys = {"classification_iterations": "classification_summary"} | (
        {"iterations": "summary"} if study not in NO_WIDTH_HEAD else {})
    for key, summary in keys.items():
        a, b = base[summary]["median"], control[summary]["median"]
        out[key] = {"median_ratio": None if a is None or not b else a / b,
                    "paired": paired_counts({"control": control[key], "3.2": base[key]})["control"]["3.2"]}
    return out


# ===== Figures (for print: a text width, 9 pt) and the printed summary =====

# one per study; 3.2's own network in a colour that no other figure of the report uses for anything else
COLOURS = {"3.2": "tab:brown", "no_width_head": "tab:orange", "width_lr_x10": "tab:green",
           "frozen_features": "tab:red"}
CLASS_COLOURS = {0: "#6b6b00", 1: "0.3"}  # diamonds (a dark olive), squares: dark enough for grey print, not the net's


def draw_figures(results: dict[str, Any], by_study: dict[str, list[SeedRun]], cfg: Config, data: Dataset,
                 out: Path) -> list[str]:
    """The median seed's curves (3.2 (1)-(4)), widths, kernels and feature maps; with more than one
    seed the studies' share at 100%, loss bands and the slow images. Returns the names drawn."""
    image = tuple(data.images.shape[1:])
    seed = results["single"]["seed"]
    one = next(r for r in by_study["3.2"] if r.seed == seed)
    net = DetectionNet(image, cfg.padding).to(cfg.dtype)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in one.weights.items()})
    start = initial_model(DetectionNet, seed, image, replace(cfg, device="cpu"))
    which = f"seed {seed}" + (" (median seed)" if len(by_study["3.2"]) > 1 else "")
    samples = [(i, f"label {c}: {name}, width {data.widths[i]:g}") for c, name in CLASSES.items()
               for i in np.flatnonzero(data.labels == c)[:1].tolist()]
    first = results["single"]["classification_iterations"]
    figures = {
        "part3_detection_classification.png": (plot_curves, one, "ce", "accuracy", first,
                                               f"3.2 (1)-(2): classes, seed {seed}"),
        "part3_detection_width.png": (plot_curves, one, "l2", "width_accuracy", first,
                                      f"3.2 (3)-(4): widths, seed {seed}"),
        "part3_detection_width_scatter.png": (plot_width_scatter, one.widths[-1], data,
                                              f"3.2: predicted widths at the stop, {which}"),
        "part3_detection_kernels.png": (plot_kernels, net, start, f"3.2: conv1 kernels, {which}"),
        "part3_detection_feature_maps.png": (plot_feature_maps, net, data, samples, f"3.2: feature maps, {which}")}
    if len(by_study["3.2"]) > 1:
        figures |= {"part3_detection_share_reached.png": (plot_share_reached, results, cfg.max_iters),
                    "part3_detection_loss_band.png": (plot_loss_bands, by_study),
                    "part3_detection_slow_images.png": (plot_slow_images, results["slow_images"], data)}
    return [name for name, (draw, *args) in figures.items() if save_figure(out / name, draw, *args)]


def plot_curves(run: SeedRun, loss: str, accuracy: str, first: int | None, title: str) -> Any:
    """One run's loss (log axis) and accuracy (from 0%) against iteration + 1 on a log axis, so that
    the first hundred iterations, where classification is learnt, get as much room as the long tail
    where the widths are learnt (the same axis for the classes and the widths); dotted: the first 100%
    classification, dashed: the stop."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator

    names = {"ce": "cross-entropy", "l2": "width L2 loss (px$^2$)", "accuracy": "class accuracy (%)",
             "width_accuracy": "width accuracy (%)"}
    # drawn at the width the report prints each at (6.3 in, one figure above the other): 8 pt ticks on paper
    fig, axes = plt.subplots(1, 2, figsize=(6.3, 2.0), layout="constrained")
    shift = 1  # iteration + 1: iteration 0 fits a log axis
    t = np.arange(shift, run.stop + 1 + shift)
    axes[0].plot(t, run.curves[loss], color=COLOURS[run.study], lw=1.4)
    axes[1].plot(t, 100 * run.curves[accuracy], color=COLOURS[run.study], lw=1.4)
    axes[1].plot(t[-1], 100 * run.curves[accuracy][-1], "o", ms=4, color=COLOURS[run.study], zorder=3)  # the end,
    # visible where it sits on the stop's dashed line
    if accuracy == "accuracy" and first is not None:  # after the first 100%: the iterations with an image wrong again
        again = (np.arange(len(t)) > first) & (run.curves[accuracy] < 1)
        begins = again & ~np.concatenate([[False], again[:-1]])  # one marker per stretch: adjacent ones overlap
        if begins.any():  # above the panel's top, pointing down at the stretch, so that the dip stays visible
            axes[1].plot(t[begins], np.full(begins.sum(), 108.0), "v", ms=5, color="black", zorder=4, clip_on=False,
                         label="wrong again")
    axes[0].set(xscale="log", yscale="log", xlabel="iteration + 1", ylabel=names[loss])
    axes[0].yaxis.set_major_locator(LogLocator(base=10, numticks=12))  # every decade labelled, however short
    axes[1].set(xscale="log", xlabel="iteration + 1", ylabel=names[accuracy], ylim=(0, 102))
    for ax in axes:  # the legend (below the panels) takes its labels from the left panel
        if first is not None:
            ax.axvline(first + shift, color="grey", ls=":", lw=1.2, label=f"classified ({first})" if ax is axes[0]
                       else None)
        if run.iterations is not None:
            ax.axvline(run.iterations + shift, color="tab:red", ls="--", lw=1,
                       label=f"widths right ({run.iterations})" if ax is axes[0] else None)
        ax.xaxis.label.set_size(8.5)
        ax.yaxis.label.set_size(8.5)
        ax.tick_params(labelsize=8)
    if first is not None or run.iterations is not None:
        fig.legend(loc="outside lower center", ncols=3, fontsize=8, handlelength=1.0, columnspacing=0.5,
                   handletextpad=0.3)
    fig.get_layout_engine().set(wspace=0.08)  # room between the left panel's ticks and the right one's label
    fig.suptitle(title, fontsize=9)
    return fig


def plot_width_scatter(predicted: np.ndarray, data: Dataset, title: str) -> Any:
    """Predicted against true width, one marker per class at its true width (hollow diamonds and
    squares, so that both stay visible where they overlap); shaded: the band of right predictions,
    |error| < 0.5, around the diagonal."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=FIGURE_SIZE, layout="constrained")
    line = np.array([data.widths.min() - 1, data.widths.max() + 1])
    ax.fill_between(line, line - WIDTH_TOLERANCE, line + WIDTH_TOLERANCE, color="grey", alpha=0.2, lw=0,
                    label=f"right: |error| < {WIDTH_TOLERANCE:g}")
    for c, marker in {0: "D", 1: "s"}.items():  # both hollow, so overlaps stay visible (filled means other things)
        keep = (data.labels == c) & np.isfinite(predicted)
        wrong = int((keep & ~(np.abs(predicted - data.widths) < WIDTH_TOLERANCE)).sum())
        ax.scatter(data.widths[keep], predicted[keep], marker=marker, s=22, alpha=0.8, linewidths=1.1,
                   facecolors="none", edgecolors=CLASS_COLOURS[c],
                   label=f"label {c}: {CLASSES[c]} ({wrong} wrong)")
    ax.set(xlabel="true width (pixels)", ylabel="predicted width (pixels)", title=title)
    ax.legend(loc="upper left")
    return fig


# --- With more than one seed.


def plot_share_reached(results: dict[str, Any], max_iters: int) -> Any:
    """The share of seeds at 100% classification (left) and with every width right (right) against
    iteration + 1 (log axis), one line per study."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=FIGURE_SIZE, layout="constrained", sharey=True)
    studies = {"3.2": results} | {k: v for k, v in results["controls"].items() if v is not None}
    t = np.unique(np.geomspace(1, max_iters + 1, 400).astype(int))
    for study, record in studies.items():
        for ax, key in zip(axes, ("classification_iterations", "iterations"), strict=True):
            if key == "iterations" and study == "no_width_head":
                continue
            its = np.sort([i for i in record[key] if i is not None])
            ax.step(t, 100 * np.searchsorted(its, t - 1, side="right") / len(record[key]), where="post",
                    color=COLOURS[study], lw=1.6, label=f"{STUDIES[study]} ({len(its)}/{len(record[key])})")
    for ax, what in zip(axes, ("100% classified", "every width right"), strict=True):
        ax.set(xscale="log", xlabel="iteration + 1", ylim=(0, 102), title=what)
        ax.legend(loc="lower right", fontsize=8.5)
    axes[0].set_ylabel("seeds (%)")
    fig.suptitle(f"3.2: share of {len(results['seeds'])} seeds")
    return fig


def plot_loss_bands(by_study: dict[str, list[SeedRun]]) -> Any:
    """Cross-entropy (left) and width L2 loss (right) over seeds: median and interquartile band per
    study; a stopped seed holds its last value. Log-log."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=FIGURE_SIZE, layout="constrained")
    for study, runs in by_study.items():
        last = max(r.stop for r in runs)
        for ax, key in zip(axes, ("ce", "l2"), strict=True):
            if key == "l2" and study == "no_width_head":
                continue
            curves = np.array([np.pad(r.curves[key], (0, last - r.stop), mode="edge") for r in runs])
            q1, median, q3 = np.nanquantile(curves, [0.25, 0.5, 0.75], axis=0)
            t = np.arange(1, last + 2)
            ax.plot(t, median, color=COLOURS[study], lw=1.4, label=STUDIES[study])
            ax.fill_between(t, q1, q3, color=COLOURS[study], alpha=0.2, lw=0)
    axes[0].set(xscale="log", yscale="log", xlabel="iteration + 1", ylabel="cross-entropy")
    axes[1].set(xscale="log", yscale="log", xlabel="iteration + 1", ylabel="width L2 loss (pixels$^2$)")
    axes[0].legend(fontsize=8.5)
    fig.suptitle(f"3.2: training losses over {len(by_study['3.2'])} seeds (median, interquartile band)")
    return fig


def plot_slow_images(slow: dict[str, Any], data: Dataset) -> Any:
    """Per image, the iteration from which it stays classified right (median over seeds) against its
    similarity margin (left) and its width (right); colour and shape: its label (diamond, square),
    filled: more similar to an image of the other class than to any of its own."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(FIGURE_SIZE[0], FIGURE_SIZE[1] + 0.5), layout="constrained", sharey=True)
    its = np.array(slow["image_classified_from_median"], dtype=float)  # None (never right) -> NaN
    margin = np.array(slow["cos_other"], dtype=float) - np.array(slow["cos_same"], dtype=float)
    nearest_other = np.array(slow["nearest_other"])
    jitter = 0.25 * (np.arange(len(its)) % 5 - 2) / 2
    for c, name in CLASSES.items():
        for filled in (True, False):
            keep = (data.labels == c) & (nearest_other == filled)
            style = {"color": CLASS_COLOURS[c]} if filled else {"facecolors": "none", "edgecolors": CLASS_COLOURS[c],
                                                               "linewidths": 1.2}
            label = f"{name}s, nearest image: {'other' if filled else 'same'} class"
            marker = "D" if c == 0 else "s"  # the class's shape, as in the width scatter
            axes[0].scatter(margin[keep], its[keep], s=22, marker=marker, label=label, **style)
            axes[1].scatter(data.widths[keep] + jitter[keep], its[keep], s=22, marker=marker, **style)
    axes[0].axvline(0, color="grey", lw=0.8)
    axes[0].set(xlabel="similarity margin: cos(other class) - cos(own class)",
                ylabel="stays classified right from\n(iteration, median over seeds)")
    axes[1].set(xlabel="true width (px; points spread apart)")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8.5)
    fig.suptitle(f"3.2: which images come last ({slow['n_seeds']} seeds)")
    return fig


def print_summary(results: dict[str, Any], out: Path) -> None:
    """The answers in a few lines ("-" = not reached)."""
    one, n = results["single"], len(results["seeds"])
    studies = {"3.2": results} | {k: v for k, v in results["controls"].items() if v is not None}
    text = {(study, key): "-" if value is None else f"{value:g}" for study, r in studies.items() for key, value in (
        ("stop", r["summary"]["median"]), ("classified", r["classification_summary"]["median"]))} | {
        ("one", key): "-" if one[key] is None else str(one[key]) for key in ("iterations", "classification_iterations")}
    print(f"\n3.2 detection dataset, {n} seed(s); seed {one['seed']}" + (" (median seed)" if n > 1 else "")
          + f": every class right after {text['one', 'classification_iterations']}, every width after "
          f"{text['one', 'iterations']} iterations")
    for study, record in studies.items():
        line = f"  {STUDIES[study]:<15} 100% classified: median {text[study, 'classified']}"
        if study != "no_width_head":
            line += (f"; every width right: median {text[study, 'stop']} ({record['summary']['reached']}/"
                     f"{record['summary']['n_seeds']} seeds)")
        if record["collapsed_seeds"]:
            line += f"; collapsed to a constant output: seed(s) {', '.join(map(str, record['collapsed_seeds']))}"
        print(line)
    if results["relapses"]:
        r = results["relapses"]
        print(f"  {r['seeds_with_relapses']}/{r['n_seeds']} seeds have images classified wrong again after the "
              f"first 100%")
    if results["slow_images"]:
        s = results["slow_images"]
        print(f"  the last image to stay classified right looks more like an image of the other class in "
              f"{s['last_image_nearest_other']}/{s['n_seeds']} seeds ({s['n_nearest_other']}/"
              f"{len(s['nearest_other'])} images do)")
    if results.get("confusable_control"):
        c = results["confusable_control"]
        med = {k: c[k]["classification_summary"]["median"] for k in NO_WIDTH_HEAD}
        text = {k: "-" if v is None else f"{v:g}" for k, v in med.items()}
        print(f"  3.1's network alone, 100% classified (median): all images {text['no_width_head']}, without the "
              f"{len(c['without_confusable']['dropped'])} confusable ones {text['without_confusable']}, without as "
              f"many others at random {text['without_random']}")
    print(f"Wrote part3_detection.json and {len(results['figures'])} figure(s) to {out}/")


if __name__ == "__main__":
    sys.exit(run_main(main))
