"""Part 3.2: the conv net of 3.1 plus a width regressor, on the detection dataset (question 3.2).

    python part3_detection.py [--data-dir data] [--out figures/] [--seeds 1] [--lr-reg 0.001] ...

Each detection image holds one filled object: label 0 = a diamond, label 1 = an axis-aligned
square; its width is the half-extent in pixels (bounding box (2w + 1) x (2w + 1), w = 1..7).

The network is 3.1's (part3_line.ConvNet, handout Figure 5) with a second fully connected layer
straight off the flattened conv2 output: 1 unit, linear, the predicted width. Both heads share
the two conv layers; the same flags (--padding, initialisation, --lr, --max-iters, engines) apply.

The two learning rates. The classifier learns by cross-entropy at --lr 0.1, the width by
L2 = mean over the batch of (predicted - true width)^2 at --lr-reg 0.001 (handout). One plain SGD
step of size lr on  CE + (lr_reg / lr) * L2  (= CE + 0.01 L2) moves every weight by
lr * dCE/dw + lr_reg * dL2/dw: the classification head gets only the CE part at 0.1, the
regression head only the L2 part at 0.001, and the shared conv layers both. This is how it is
implemented (part3_line.evaluate); a test checks the update of every tensor against the two
gradients taken separately.

A width prediction is correct when |predicted - true width| < 0.5, strictly: an error of exactly
0.5 pixels counts as wrong (rounding to the nearest integer would be ambiguous there).
Training stops at the first full-batch evaluation with 100% regression accuracy (the handout's
rule), after --max-iters updates, or at divergence. Iterations are counted as in parts 2 and 3.1
(updates made before that evaluation). The first iteration with 100% classification accuracy is
recorded too (null when it did not happen before the stop).

Outputs in --out (single-run figures: seed --first-seed):
    part3_detection_ce_loss.png, part3_detection_accuracy.png       3.2 (1) and (2): the classifier
    part3_detection_l2_loss.png, part3_detection_regression_accuracy.png   3.2 (3) and (4)
    part3_detection_kernels.png, part3_detection_feature_maps.png   as in 3.1
    part3_detection_width_scatter.png   predicted against true width at the stop, the +-0.5 band
    part3_detection_share_reached.png   (--seeds > 1) share of seeds at 100% against iteration
    part3_detection_loss_band.png       (--seeds > 1) median CE and L2 with interquartile bands
    part3_detection.json   (sorted keys, no timestamps):
        script, command, config, seeds, data, versions   (part 2's results header)
        iteration_rule, network, width_rule
        iterations [regression stop, int | null per seed], classification_iterations,
        diverged, diverged_at, final_regression_accuracy, final_classification_accuracy,
        final_ce_loss, final_l2_loss [per seed, at the stop],
        summary (regression stop), classification_summary (part 2's summarize_stops),
        single {seed, iterations, classification_iterations, diverged_at, final_*,
                width_abs_error_max}, figures,
        comparison_line: the summary of <out>/part3_line.json (null if absent)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from part1_loss_gradient import (
    InputError,
    Parser,
    positive,
    run_main,
    save_figure,
    use_headless_matplotlib,
    write_json,
)
from part2_fc import (
    DTYPE,
    add_training_args,
    describe,
    plot_curve,
    plot_median_band,
    plot_share_stopped,
    results_header,
    summarize_stops,
)
from part3_line import (
    LINE_RESULTS_FILE,
    WIDTH_TOLERANCE,
    ConvRuns,
    add_conv_args,
    fmt,
    horizon,
    network_record,
    prepare,
    read_results,
    single_run_figures,
    summary_line,
    train_seeds,
    trained_model,
)

RESULTS_FILE = "part3_detection.json"
DETECTION_CLASSES = {0: "diamond", 1: "square"}  # the data's meaning (labels 0 and 1)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The flags, all checked here before anything is computed or written."""
    parser = Parser(prog="part3_detection.py",
                    description="Part 3.2: the conv net with a width regressor on the detection dataset.")
    add_training_args(parser)  # --data-dir --out --seeds --first-seed --lr --max-iters ...
    add_conv_args(parser)  # --padding
    parser.add_argument("--lr-reg", type=positive(float), default=0.001,
                        help="learning rate of the width's L2 loss (handout: 0.001); --lr: the classifier's")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# 3.2 Training: part3_line's engines with the width head; here the first 100% classification.
# ---------------------------------------------------------------------------------------------


def classification_iterations(runs: ConvRuns) -> list[int | None]:
    """Per run, the first iteration at 100% classification accuracy up to its stop, else None."""
    out: list[int | None] = []
    for s in range(len(runs.iterations)):
        hits = np.flatnonzero(runs.accuracies[:, s] == 1.0)
        out.append(int(hits[0]) if hits.size else None)
    return out


def predicted_widths(runs: ConvRuns, s: int, x: torch.Tensor, geo: Any) -> np.ndarray:
    """Run s's width predictions (B,) for the images x (B, 1, H, W), with its weights at the stop."""
    with torch.no_grad():
        return trained_model(runs, s, geo)(x)[1].numpy()


def plot_width_scatter(pred: np.ndarray, true: np.ndarray, labels: np.ndarray, title: str,
                       path: Path) -> None:
    """Predicted against true width (pixels), one marker per class (shifted sideways a little so the
    two classes do not hide each other), the band of correct predictions |error| < 0.5 shaded;
    non-finite predictions are left out."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.2), layout="constrained")
    lo, hi = float(true.min()) - 1, float(true.max()) + 1
    line = np.array([lo, hi])
    ax.fill_between(line, line - WIDTH_TOLERANCE, line + WIDTH_TOLERANCE, color="tab:green", alpha=0.15,
                    lw=0, label=f"correct: |error| < {WIDTH_TOLERANCE:g}")
    ax.plot(line, line, color="tab:green", lw=1)
    for c, (name, marker, shift) in {0: ("diamond", "D", -0.12), 1: ("square", "s", 0.12)}.items():
        keep = (labels == c) & np.isfinite(pred)
        wrong = keep & ~(np.abs(pred - true) < WIDTH_TOLERANCE)
        ax.scatter(true[keep] + shift, pred[keep], marker=marker, s=22, alpha=0.75,
                   label=f"label {c}: {name} ({int(wrong.sum())} wrong)")
    finite = pred[np.isfinite(pred)]
    ax.set(xlabel="true width (pixels, half-extent)", ylabel="predicted width (pixels)", title=title,
           xlim=(lo, hi), ylim=(min(lo, float(finite.min(initial=lo))) - 0.2,
                                max(hi, float(finite.max(initial=hi))) + 0.2))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    save_figure(fig, path)


def line_comparison(out: Path) -> dict[str, Any] | None:
    """3.1's distribution of iterations to 100%, read from its results file in --out."""
    path = out / LINE_RESULTS_FILE
    data = read_results(path)
    if data is None:
        return None
    try:
        keys = ("n_seeds", "reached", "reach_rate", "diverged", "median", "q1", "q3", "p10", "p90")
        return {"file": LINE_RESULTS_FILE, "data_provenance": data["data"]["provenance"],
                "padding": data["config"]["padding"], "single_iterations": data["single"]["iterations"],
                "summary": {k: data["summary"][k] for k in keys}}
    except (KeyError, TypeError) as err:
        raise InputError(f"{path}: not a part-3.1 results file (missing {err}); rerun part3_line.py "
                         "or delete it") from None


ITERATION_RULE = (
    "iterations = the number of SGD updates made before the first full-batch evaluation at 100% "
    "regression accuracy (the stop); classification_iterations = the same for 100% classification "
    "accuracy, counted up to the stop; null = not reached"
)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data, geo = prepare(args, "detection")
    comparison = line_comparison(args.out)
    use_headless_matplotlib()
    print(f"Part 3.2: {args.seeds} seed(s) on {data.data_dir}/detection ({data.provenance}, "
          f"{geo.image[0]}x{geo.image[1]} images), padding {args.padding}, lr {args.lr:g} (CE) and "
          f"{args.lr_reg:g} (L2), {args.engine} engine")
    started = time.perf_counter()
    runs = train_seeds(args, data, geo, regression=True)
    seconds = time.perf_counter() - started
    assert runs.l2 is not None and runs.reg_accuracies is not None and data.widths is not None
    class_iters = classification_iterations(runs)

    # 3.2 (1)-(4): the single run (seed --first-seed); each figure marks its own 100%
    stop, class_stop = runs.iterations[0], class_iters[0]
    curves = [
        ("ce_loss", runs.losses[:, 0], "cross-entropy loss", "(1) classification loss", class_stop),
        ("accuracy", 100 * runs.accuracies[:, 0], "classification accuracy (%)",
         "(2) classification accuracy", class_stop),
        ("l2_loss", runs.l2[:, 0], "L2 loss of the width (pixels$^2$)", "(3) width regression loss", stop),
        ("regression_accuracy", 100 * runs.reg_accuracies[:, 0], "regression accuracy (%)",
         "(4) regression accuracy", stop),
    ]
    figures = []
    for key, values, ylabel, what, marked in curves:
        figures.append(f"part3_detection_{key}.png")
        plot_curve(values, ylabel, f"3.2 Detection: {what}", args.out / figures[-1], marked)
    figures += single_run_figures(runs, data, geo, args, "part3_detection", "3.2", DETECTION_CLASSES)
    x = torch.tensor(data.images[:, None], dtype=DTYPE)
    pred = predicted_widths(runs, 0, x, geo)
    state = describe(stop, runs.diverged_at[0], runs.final(runs.reg_accuracies, 0))
    figures.append("part3_detection_width_scatter.png")
    plot_width_scatter(pred, data.widths, data.labels, f"3.2 Widths at the stop, seed {args.first_seed} "
                       f"({state})", args.out / figures[-1])
    if args.seeds > 1:
        end = horizon(runs)
        plot_share_stopped({"100% regression accuracy (the stop)": runs.iterations,
                            "100% classification accuracy": class_iters}, end,
                           f"3.2 Share of {args.seeds} seeds at 100% training accuracy",
                           "seeds at 100% (%)", args.out / "part3_detection_share_reached.png")
        plot_median_band({"cross-entropy": runs.losses[:end + 1], "L2 of the width": runs.l2[:end + 1]},
                         "loss (median, IQR band)", f"3.2 Training losses over {args.seeds} seeds",
                         args.out / "part3_detection_loss_band.png", log_y=True)
        figures += ["part3_detection_share_reached.png", "part3_detection_loss_band.png"]

    n = args.seeds

    def finals(values: np.ndarray) -> list[float | None]:
        return [runs.final(values, s) for s in range(n)]

    errors = np.abs(pred - data.widths)
    results = results_header("part3_detection.py", args, data)
    results |= {
        "iteration_rule": ITERATION_RULE,
        "width_rule": f"a width prediction is correct when |predicted - true| < {WIDTH_TOLERANCE:g} "
                      "pixels (strict: an error of exactly 0.5 is wrong)",
        "network": network_record(geo, regression=True),
        "iterations": runs.iterations,
        "classification_iterations": class_iters,
        "diverged": [d is not None for d in runs.diverged_at],
        "diverged_at": runs.diverged_at,
        "final_regression_accuracy": finals(runs.reg_accuracies),
        "final_classification_accuracy": finals(runs.accuracies),
        "final_ce_loss": finals(runs.losses),
        "final_l2_loss": finals(runs.l2),
        "summary": summarize_stops(runs.iterations, runs.diverged_at),
        "classification_summary": summarize_stops(class_iters, runs.diverged_at),
        "single": {
            "seed": args.first_seed, "iterations": stop, "classification_iterations": class_stop,
            "diverged_at": runs.diverged_at[0],
            "final_regression_accuracy": runs.final(runs.reg_accuracies, 0),
            "final_classification_accuracy": runs.final(runs.accuracies, 0),
            "final_ce_loss": runs.final(runs.losses, 0), "final_l2_loss": runs.final(runs.l2, 0),
            "width_abs_error_max": float(errors.max()) if np.isfinite(errors).all() else None,
        },
        "figures": figures,
        "comparison_line": comparison,
    }
    write_json(args.out / RESULTS_FILE, results)
    print_summary(results, seconds, args.out)
    return 0


def print_summary(results: dict[str, Any], seconds: float, out: Path) -> None:
    """What a person reads at the end of the run."""
    single, n = results["single"], len(results["seeds"])
    print(f"\n3.2 detection dataset, {n} seed(s), {seconds:.1f} s of training:")
    line = f"  seed {single['seed']}: " + describe(single["iterations"], single["diverged_at"],
                                                   single["final_regression_accuracy"])
    if single["iterations"] is not None:
        line += " to 100% regression accuracy"
    class_stop = single["classification_iterations"]
    print(line + ("; classification never at 100% up to the stop" if class_stop is None
                  else f"; 100% classification accuracy after {class_stop}"))
    if n > 1:
        print(f"  {n} seeds, 100% regression (the stop): {summary_line(results['summary'])}")
        print(f"  {n} seeds, 100% classification:      {summary_line(results['classification_summary'])}")
    comparison = results["comparison_line"]
    if comparison is None:
        print(f"  3.1: no {LINE_RESULTS_FILE} in {out}/ to compare with (run part3_line.py --out {out})")
    else:
        s = comparison["summary"]
        print(f"  3.1 line dataset ({comparison['data_provenance']}): single seed "
              f"{fmt(comparison['single_iterations'])} iterations; {summary_line(s)}")
    print(f"Wrote {len(results['figures'])} figures and {RESULTS_FILE} to {out}/")


if __name__ == "__main__":
    sys.exit(run_main(main))
