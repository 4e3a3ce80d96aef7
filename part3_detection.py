"""Part 3.2: the conv net of 3.1 with a width head, on the detection dataset (question 3.2).

    python part3_detection.py [--seeds 20] [--lr-reg 0.001] [--control-no-width-head]
                              [--control-width-lr-x10] [--workers 2] [--out figures/]

Each image holds one object: label 0 = a diamond, label 1 = an axis-aligned square; its width is
the half-extent in pixels (bounding box (2w + 1) x (2w + 1)). The network is 3.1's ConvNet with the
width head (a second FC layer off the conv2 features, one linear unit). How long until it classifies
every image and gets every width right, and what makes the width slow?

Two learning rates: the classifier learns by cross-entropy at --lr 0.1, the width by
L2 = mean over the images of (predicted - true width)^2 (no factor 1/2) at --lr-reg 0.001. One plain
SGD step of size lr on  CE + (lr_reg / lr) L2  (= CE + 0.01 L2) moves the classifier by lr dCE, the
width head by lr_reg dL2 and the shared conv layers by both: exactly the two rates.
A width is correct when |predicted - true| < 0.5, strictly. Training stops at the first 100% width
accuracy (the handout's rule); the first 100% classification accuracy is recorded too.

Controls (each a flag): --control-no-width-head trains the classifier alone (no width gradient in the
shared layers) and stops at 100% classification; --control-width-lr-x10 runs the width loss at 10x its
rate. Training, seeds, workers and threads as in part3_line.py.

Outputs in --out: part3_detection_{ce_loss,accuracy,l2_loss,regression_accuracy}.png (3.2 (1)-(4),
the typical seed), _kernels, _feature_maps, _width_scatter, and with --seeds > 1 _share_reached and
_loss_band; part3_detection.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from part1_loss_gradient import (
    Parser,
    check_out_dir,
    load_dataset,
    positive,
    run_main,
    save_figure,
    use_headless_matplotlib,
    write_json,
)
from part2_fc import (
    describe,
    log_scale,
    plot_curve,
    plot_median_band,
    plot_share_stopped,
    results_header,
    seed_list,
    summarize_stops,
)
from part3_line import (
    TORCH_THREADS,
    Config,
    SeedRun,
    Study,
    add_part3_args,
    batch_of,
    classification_task,
    config_from_args,
    conv2_class_means,
    curves_table,
    network_record,
    run_record,
    run_studies,
    summary_line,
    trained_model,
    typical_figures,
    typical_run,
)

RESULTS_FILE = "part3_detection.json"
WIDTH_TOLERANCE = 0.5  # a width is correct when |predicted - true| < 0.5 pixels (strict)
DETECTION_CLASSES = {0: "diamond", 1: "square"}
ITERATION_RULE = (
    "iterations = the number of SGD updates made before the first full-batch evaluation at 100% "
    "regression accuracy (the stop); classification_iterations = the same for 100% classification "
    "accuracy, counted up to the stop; null = not reached"
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(prog="part3_detection.py",
                    description="Part 3.2: the conv net with a width head on the detection dataset.")
    add_part3_args(parser)
    add = parser.add_argument
    add("--lr-reg", type=positive(float), default=0.001,
        help="learning rate of the width's L2 loss (handout: 0.001); --lr is the classifier's")
    add("--control-no-width-head", action="store_true",
        help="control: also train the classifier alone (no width head), stop at 100%% classification")
    add("--control-width-lr-x10", action="store_true", help="control: also train with --lr-reg x 10")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# 3.2's loss: cross-entropy plus the width's L2 at its own rate; stop at 100% width accuracy.
# ---------------------------------------------------------------------------------------------


def width_l2(pred: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Mean over the images (last axis) of (predicted - true width)^2, pixels^2."""
    return ((pred - widths) ** 2).mean(-1)


def width_accuracy(pred: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Share (last axis) of widths predicted within WIDTH_TOLERANCE, strictly (0.5 is wrong)."""
    return ((pred - widths).abs() < WIDTH_TOLERANCE).to(pred.dtype).mean(-1)


def detection_task(logits: torch.Tensor, pred: torch.Tensor | None, batch: dict[str, torch.Tensor],
                   cfg: Config) -> dict[str, torch.Tensor]:
    """Objective CE + (lr_reg / lr) L2: one SGD step at lr moves the classifier by lr dCE, the width
    head by lr_reg dL2 and the shared layers by both. Stop at 100% width accuracy."""
    assert pred is not None
    metrics = classification_task(logits, None, batch, cfg)
    l2 = width_l2(pred, batch["widths"])
    accuracy = width_accuracy(pred, batch["widths"])
    metrics |= {"objective": metrics["ce"] + (cfg.lr_reg / cfg.lr) * l2, "l2": l2, "width_accuracy": accuracy,
                "max_width_error": (pred - batch["widths"]).abs().max(), "done": (accuracy == 1).to(l2.dtype)}
    return metrics


# ---------------------------------------------------------------------------------------------
# Measurements: first 100% classification, when the width loss fell 20x, the final largest error.
# ---------------------------------------------------------------------------------------------


def first_iteration(holds: np.ndarray) -> int | None:
    """The first iteration where `holds` (bool per iteration) is True, else None."""
    hits = np.flatnonzero(holds)
    return int(hits[0]) if hits.size else None


def classification_iterations(run: SeedRun) -> int | None:
    """First iteration at 100% classification accuracy, up to the run's stop."""
    return first_iteration(run.curves["accuracy"] == 1)


def width_l2_fall_20x(run: SeedRun) -> int | None:
    """First iteration where the width L2 is below 1/20 of its initial value."""
    return first_iteration(run.curves["l2"] < run.curves["l2"][0] / 20)


def plot_width_scatter(pred: np.ndarray, true: np.ndarray, labels: np.ndarray, title: str,
                       path: Path) -> None:
    """Predicted against true width, one marker per class (shifted sideways a little), the band of
    correct predictions |error| < 0.5 shaded."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.2), layout="constrained")
    line = np.array([true.min() - 1, true.max() + 1])
    ax.fill_between(line, line - WIDTH_TOLERANCE, line + WIDTH_TOLERANCE, color="tab:green", alpha=0.15,
                    lw=0, label=f"correct: |error| < {WIDTH_TOLERANCE:g}")
    ax.plot(line, line, color="tab:green", lw=1)
    for c, (name, marker, shift) in {0: ("diamond", "D", -0.12), 1: ("square", "s", 0.12)}.items():
        keep = (labels == c) & np.isfinite(pred)
        wrong = int((keep & ~(np.abs(pred - true) < WIDTH_TOLERANCE)).sum())
        ax.scatter(true[keep] + shift, pred[keep], marker=marker, s=22, alpha=0.75,
                   label=f"label {c}: {name} ({wrong} wrong)")
    ax.set(xlabel="true width (pixels, half-extent)", ylabel="predicted width (pixels)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# 3.2: train (with the controls), plot, save, summarise.
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_out_dir(args.out)
    data = load_dataset(args.data_dir, "detection")
    assert data.widths is not None
    cfg = config_from_args(args, data, width_head=True, label="3.2")
    use_headless_matplotlib()
    torch.set_num_threads(TORCH_THREADS)
    seeds, batch = seed_list(args), batch_of(data)
    studies = {"main": Study(seeds, cfg, batch, detection_task)}
    if args.control_no_width_head:
        studies["no_width_head"] = Study(seeds, replace(cfg, width_head=False, label="3.2 no width head"),
                                         batch, classification_task)
    if args.control_width_lr_x10:
        x10 = replace(cfg, lr_reg=10 * args.lr_reg, label="3.2 width lr x10")
        studies["width_lr_x10"] = Study(seeds, x10, batch, detection_task)
    workers = min(args.workers, len(seeds))
    print(f"Part 3.2: {len(seeds)} seed(s) on {data.data_dir}/detection ({data.provenance}), lr "
          f"{args.lr:g} (CE) and {args.lr_reg:g} (L2), {args.dtype} on {args.device}, {workers} worker(s)",
          flush=True)
    started = time.perf_counter()
    trained = run_studies(studies, workers)
    seconds = time.perf_counter() - started
    runs = trained["main"]
    class_iters = [classification_iterations(r) for r in runs]

    # 3.2 (1)-(4): the typical run (median iterations); each figure marks its own 100%
    one, percentile = typical_run(runs)
    figures = []
    for key, metric, ylabel, what, marked in (
        ("ce_loss", "ce", "cross-entropy loss", "(1) classification loss", classification_iterations(one)),
        ("accuracy", "accuracy", "classification accuracy (%)", "(2) classification accuracy",
         classification_iterations(one)),
        ("l2_loss", "l2", "L2 loss of the width (pixels$^2$)", "(3) width regression loss", one.iterations),
        ("regression_accuracy", "width_accuracy", "regression accuracy (%)", "(4) regression accuracy",
         one.iterations),
    ):
        figures.append(f"part3_detection_{key}.png")
        values = one.curves[metric] * (100 if "accuracy" in metric else 1)
        plot_curve(values, ylabel, f"3.2 Detection: {what}, seed {one.seed}", args.out / figures[-1], marked,
                   log_y=log_scale(values) and "accuracy" not in metric)
    figures += typical_figures(one, percentile, cfg, data, args.out, "part3_detection", "3.2",
                               DETECTION_CLASSES, "width_accuracy")
    net = trained_model(one, cfg)
    x = torch.tensor(data.images[:, None], dtype=getattr(torch, cfg.dtype))
    with torch.no_grad():
        pred = net(x)[1].double().numpy()
    figures.append("part3_detection_width_scatter.png")
    plot_width_scatter(pred, data.widths, data.labels, f"3.2 Widths at the stop, seed {one.seed} ("
                       + describe(one.iterations, one.diverged_at, one.final("width_accuracy")) + ")",
                       args.out / figures[-1])
    if len(runs) > 1:
        ce, l2 = curves_table(runs, "ce"), curves_table(runs, "l2")
        plot_share_stopped({"100% regression accuracy (the stop)": [r.iterations for r in runs],
                            "100% classification accuracy": class_iters}, len(ce) - 1,
                           f"3.2 Share of {len(runs)} seeds at 100% training accuracy", "seeds at 100% (%)",
                           args.out / "part3_detection_share_reached.png")
        plot_median_band({"cross-entropy": ce, "L2 of the width (pixels$^2$)": l2}, "loss (median, IQR band)",
                         f"3.2 Training losses over {len(runs)} seeds (log scale)",
                         args.out / "part3_detection_loss_band.png", log_y=True)
        figures += ["part3_detection_share_reached.png", "part3_detection_loss_band.png"]

    results = results_header("part3_detection.py", args, data) | run_record(runs)
    results |= {
        "iteration_rule": ITERATION_RULE,
        "width_tolerance": WIDTH_TOLERANCE,
        "width_rule": f"a width prediction is correct when |predicted - true| < {WIDTH_TOLERANCE:g} "
                      f"pixels (strict: an error of exactly {WIDTH_TOLERANCE:g} is wrong)",
        "network": network_record(cfg),
        "torch_threads": TORCH_THREADS,
        "workers": workers,
        "classification_iterations": class_iters,
        "classification_summary": summarize_stops(class_iters, [r.diverged_at for r in runs]),
        "width_l2_fall_20x": [width_l2_fall_20x(r) for r in runs],
        "max_width_error": [r.final("max_width_error") for r in runs],
        "diverged": [r.diverged for r in runs],
        "diverged_at": [r.diverged_at for r in runs],
        "final_regression_accuracy": [r.final("width_accuracy") for r in runs],
        "final_classification_accuracy": [r.final("accuracy") for r in runs],
        "final_ce_loss": [r.final("ce") for r in runs],
        "final_l2_loss": [r.final("l2") for r in runs],
        "single": {
            "seed": one.seed, "percentile": percentile, "iterations": one.iterations,
            "classification_iterations": classification_iterations(one), "diverged_at": one.diverged_at,
            "final_regression_accuracy": one.final("width_accuracy"),
            "final_classification_accuracy": one.final("accuracy"),
            "final_ce_loss": one.final("ce"), "final_l2_loss": one.final("l2"),
            "width_abs_error_max": one.final("max_width_error"),
        },
        "conv2_class_means": conv2_class_means(net, x, data.labels),
        "controls": {
            "no_width_head": run_record(trained["no_width_head"]) if "no_width_head" in trained else None,
            "width_lr_x10": ({"lr_reg": 10 * args.lr_reg} | run_record(trained["width_lr_x10"])
                             if "width_lr_x10" in trained else None),
        },
        "figures": figures,
    }
    write_json(args.out / RESULTS_FILE, results)
    print_summary(results, seconds, args.out)
    return 0


def print_summary(results: dict[str, Any], seconds: float, out: Path) -> None:
    single = results["single"]
    print(f"\n3.2 detection dataset, {len(results['seeds'])} seed(s), {seconds:.1f} s of training:")
    print(f"  typical seed {single['seed']}: "
          + describe(single["iterations"], single["diverged_at"], single["final_regression_accuracy"])
          + f" to 100% width accuracy; 100% classification after {single['classification_iterations']}")
    print(f"  all seeds, 100% widths (the stop): {summary_line(results['summary'])}")
    print(f"  all seeds, 100% classification:    {summary_line(results['classification_summary'])}")
    for name, control in results["controls"].items():
        if control is not None:
            print(f"  control {name}: {summary_line(control['summary'])}")
    print(f"Wrote {len(results['figures'])} figures and {RESULTS_FILE} to {out}/")


if __name__ == "__main__":
    sys.exit(run_main(main))
