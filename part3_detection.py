"""Part 3.2: 3.1's conv net with a width head, on the detection dataset (question 3.2).

    python part3_detection.py              # the handout's run: one seed
    python part3_detection.py --seeds 20 --control-no-width-head --control-width-lr-x10   # `make all`

Each image holds one object: label 0 = a diamond, label 1 = an axis-aligned square; its width w is
the half-extent in pixels (bounding box (2w + 1) x (2w + 1)). How long until the network classifies
every image and gets every width right, and what makes the width slow? This file holds 3.2's
network and objective; the training loop and the figures are part3_line.py's (see its docstring).

Two learning rates (handout): the classifier learns by cross-entropy at --lr 0.1, the width by
L2 = mean over the images of (predicted - true width)^2 (no factor 1/2) at --lr-reg 0.001. One plain
SGD step of size lr on  CE + (lr_reg / lr) L2  (= CE + 0.01 L2) moves the classifier by lr dCE, the
width head by lr_reg dL2 and the shared conv layers by both: exactly the two rates. A width is right
when |predicted - true| < 0.5. Training stops at the first 100% width accuracy (the handout's rule).
Controls: --control-no-width-head (the classifier alone, stop at 100% classification),
--control-width-lr-x10 (the width loss at 10x its rate).

Outputs in --out: part3_detection_classification.png (3.2 (1), (2)), _width.png ((3), (4)),
_width_scatter.png, _kernels.png, _feature_maps.png, with --seeds > 1 _share_reached.png and
_loss_band.png; part3_detection.json.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from part1_loss_gradient import Parser, positive, run_main, write_json
from part2_fc import (
    Config,
    Dataset,
    new_figure,
    results_header,
    summarize_stops,
)
from part3_line import (
    LineNet,
    SeedRun,
    add_part3_args,
    batch_of,
    check_run,
    conv2_class_means,
    draw_figures,
    figure_workers,
    many_figures,
    network_record,
    prepare,
    run_record,
    single_record,
    summary_line,
    train_seeds,
    trained_model,
    typical_figures,
    typical_run,
)

import numpy as np
import torch
from torch import nn

WIDTH_TOLERANCE = 0.5  # a width is right when |predicted - true| < 0.5 pixels (strictly)
DETECTION_CLASSES = {0: "diamond", 1: "square"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(prog="part3_detection.py", description="Part 3.2: the conv net with a width head.")
    add_part3_args(parser)
    add = parser.add_argument
    add("--lr-reg", type=positive(float), default=0.001,
        help="learning rate of the width's L2 loss (handout: 0.001); --lr is the classifier's")
    add("--control-no-width-head", action="store_true",
        help="control: also train the classifier alone, stop at 100%% classification")
    add("--control-width-lr-x10", action="store_true", help="control: also train with --lr-reg x 10")
    return parser.parse_args(argv)


# --- The network of Figure 4 with the width head, and 3.2's objective.


class DetectionNet(LineNet):
    """3.1's network plus a second FC layer off the same conv2 features: one linear unit, the
    object's width in pixels. forward: x (B, 1, H, W) -> (logits (B,), widths (B,))."""

    def __init__(self, image: tuple[int, int], padding: str = "valid") -> None:
        super().__init__(image, padding)
        self.reg = nn.Linear(self.fc.in_features, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        features = self.feature_maps(x)[1].flatten(1)
        return self.fc(features).squeeze(1), self.reg(features).squeeze(1)

    def objective(self, batch: dict[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
        """SGD minimises CE + (lr_reg / lr) L2; done at 100% width accuracy. Also measured: the
        classification accuracy of each class, and of each true width (how classification
        progresses with the object's size)."""
        logits, pred = self(batch["x"])
        y, widths = batch["y"], batch["widths"]
        ce = nn.functional.binary_cross_entropy_with_logits(logits, y)
        l2 = ((pred - widths) ** 2).mean()
        error = (pred - widths).abs()
        width_accuracy = (error < WIDTH_TOLERANCE).to(l2.dtype).mean()
        correct = ((logits > 0) == (y > 0.5)).to(l2.dtype)
        groups = batch["groups"] @ correct  # accuracy within each group of images (group_matrix)
        return {"objective": ce + (cfg.lr_reg / cfg.lr) * l2, "ce": ce, "l2": l2, "accuracy": correct.mean(),
                "width_accuracy": width_accuracy, "max_width_error": error.max(), "done": width_accuracy == 1,
                "finite": torch.isfinite(logits).all() & torch.isfinite(pred).all()} | {
                    f"group_{i}": g for i, g in enumerate(groups.unbind())}


# Measurements over training: first 100% classification, per class and width; the width against
# the mean-width baseline.


def group_matrix(data: Dataset) -> tuple[list[str], np.ndarray]:
    """Names and (G, B) averaging rows of the image groups: each label, then each true width."""
    masks = {f"label {c}": data.labels == c for c in (0, 1)}
    masks |= {f"width {w:g}": data.widths == w for w in np.unique(data.widths)}
    masks = {k: m for k, m in masks.items() if m.any()}
    return list(masks), np.array([m / m.sum() for m in masks.values()])


def first_at(values: np.ndarray, level: float = 1.0) -> int | None:
    """The first iteration where values >= level (at most up to the run's stop), else None."""
    hits = np.flatnonzero(values >= level)
    return int(hits[0]) if hits.size else None


def width_measurements(run: SeedRun, baseline_mse: float, groups: list[str]) -> dict[str, Any]:
    """When classification first reached 100% of all images, and from when on each class's and each
    width's images stay classified right (a one-class group is all right whenever the net calls every
    image that class, so the first time says little); when the width loss first fell 20x and first
    beat the mean-width predictor, with the width accuracy and RMS error (pixels) there."""
    c, stays = run.curves, {}
    for i, name in enumerate(groups):  # from when on the group stays at 1 (None if not 1 at the stop)
        below = np.flatnonzero(c[f"group_{i}"] < 1)
        stays[name] = None if c[f"group_{i}"][-1] < 1 else int(below[-1] + 1) if below.size else 0
    l2, width_accuracy = c["l2"], c["width_accuracy"]
    hits = {"l2_fall_20x": np.flatnonzero(l2 <= l2[0] / 20), "beats_mean_width": np.flatnonzero(l2 < baseline_mse)}
    return {"classification_iterations": first_at(c["accuracy"]), "group_classification_iterations": stays} | {
        key: {"iteration": int(t[0]), "width_accuracy": float(width_accuracy[t[0]]), "rms": float(np.sqrt(l2[t[0]]))}
        if t.size else None for key, t in hits.items()}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg, data, seeds = prepare(args, "detection")
    groups, matrix = group_matrix(data)
    batch = batch_of(data) | {"groups": matrix}
    studies = {"3.2": (cfg, batch, DetectionNet)}
    if args.control_no_width_head:
        studies["no width head"] = (cfg, batch_of(data), LineNet)
    if args.control_width_lr_x10:
        studies["width lr x10"] = (replace(cfg, lr_reg=10 * args.lr_reg), batch, DetectionNet)
    check_run(args, cfg, len(seeds) * len(studies), 20 + len(groups))
    print(f"Part 3.2: {len(seeds)} seed(s) on {data.describe()}, lr {args.lr:g} (CE) and {args.lr_reg:g} "
          f"(L2), {args.dtype} on {args.device}, {args.workers} process(es)", flush=True)
    with figure_workers(cfg) as drawers:  # they load matplotlib while the seeds train
        trained = train_seeds(studies, seeds, args.workers, cfg.log)
        results, one, class_its = detection_results(args, cfg, data, groups, trained)
        runs = trained["3.2"]
        write_json(args.out / "part3_detection.json", results | {"figures": []})  # no figure can lose the numbers
        results["figures"] = figures(one, runs, class_its, cfg, data, args.out, drawers)
    write_json(args.out / "part3_detection.json", results)
    print_summary(results, args.out)
    return 0


def detection_results(args: argparse.Namespace, cfg: Config, data: Dataset, groups: list[str],
                      trained: dict[str, list[SeedRun]]) -> tuple[dict[str, Any], SeedRun, list[int | None]]:
    """The results record of 3.2, its median seed's run and every seed's first 100% classification."""
    image = tuple(data.images.shape[1:])
    runs = trained["3.2"]
    one, percentile = typical_run(runs)
    baseline = float(np.mean((data.widths - data.widths.mean()) ** 2))
    measured = [width_measurements(r, baseline, groups) for r in runs]
    class_its = [m["classification_iterations"] for m in measured]
    results = results_header("part3_detection.py", args, data, cfg) | run_record(runs) | {
        "network": network_record(cfg, image, DetectionNet), "workers": args.workers,
        "width_tolerance": WIDTH_TOLERANCE, "mean_width_baseline": {"mse": baseline, "rms": baseline ** 0.5},
        "classification_iterations": class_its,
        "classification_summary": summarize_stops(class_its, [r.diverged_at for r in runs]),
        "measurements": measured, "final_regression_accuracy": [r.final("width_accuracy") for r in runs],
        "final_l2_loss": [r.final("l2") for r in runs], "max_width_error": [r.final("max_width_error") for r in runs],
        "single": single_record(one, percentile, "width_accuracy", "accuracy", "ce", "l2", "max_width_error")
        | width_measurements(one, baseline, groups),
        "conv2_class_means": conv2_class_means(trained_model(one, cfg, image, DetectionNet), data),
        "controls": {name.replace(" ", "_"): run_record(trained[name]) if name in trained else None
                     for name in ("no width head", "width lr x10")},
    }
    return results, one, class_its


# --- Figures and the printed summary.


def figures(one: SeedRun, runs: list[SeedRun], class_its: list[int | None], cfg: Config, data: Dataset,
            out: Path, drawers: Any) -> list[str]:
    """3.2 (1)-(4) as two figures, the widths, kernels and feature maps of the median seed; the seeds
    together. Returns the names of those drawn."""
    net = trained_model(one, cfg, data.images.shape[1:], DetectionNet)
    with torch.no_grad():
        pred = net(torch.tensor(data.images[:, None], dtype=cfg.torch_dtype))[1].double().numpy()
    scatter = ("part3_detection_width_scatter.png", plot_width_scatter,
               (pred, data, f"3.2: widths at the stop, seed {one.seed} (median seed)"))
    typical = typical_figures(one, cfg, data, "part3_detection", "3.2", {
        "classification": [("ce", "cross-entropy loss"), ("accuracy", "classification accuracy (%)")],
        "width": [("l2", "width L2 loss (pixels$^2$)"), ("width_accuracy", "width accuracy (%)")]},
        DetectionNet, DETECTION_CLASSES)
    many = many_figures(runs, {"cross-entropy": "ce", "width L2 (pixels$^2$)": "l2"}, "part3_detection", "3.2",
                        {"100% widths (the stop)": [r.iterations for r in runs], "100% classification": class_its})
    return draw_figures(out, [*typical[:2], scatter, *typical[2:], *many], drawers)


def plot_width_scatter(pred: np.ndarray, data: Dataset, title: str) -> Any:
    """Predicted against true width, one marker per class (shifted sideways a little); the band of
    right predictions, |error| < 0.5, shaded."""
    fig, ax = new_figure()
    true = data.widths
    line = np.array([true.min() - 1, true.max() + 1])
    ax.fill_between(line, line - WIDTH_TOLERANCE, line + WIDTH_TOLERANCE, color="tab:green", alpha=0.15, lw=0,
                    label=f"right: |error| < {WIDTH_TOLERANCE:g}")
    for c, (name, marker, shift) in {0: ("diamond", "D", -0.12), 1: ("square", "s", 0.12)}.items():
        keep = (data.labels == c) & np.isfinite(pred)
        wrong = int((keep & ~(np.abs(pred - true) < WIDTH_TOLERANCE)).sum())
        ax.scatter(true[keep] + shift, pred[keep], marker=marker, s=16, alpha=0.75,
                   label=f"label {c}: {name} ({wrong} wrong)")
    ax.set(xlabel="true width (pixels)", ylabel="predicted width (pixels)", title=title)
    ax.legend(loc="upper left")
    return fig


def print_summary(results: dict[str, Any], out: Path) -> None:
    one = results["single"]
    print(f"\n3.2 detection dataset, {len(results['seeds'])} seed(s): median seed {one['seed']}: 100% widths after "
          f"{one['iterations']}, 100% classification after {one['classification_iterations']} iterations")
    print(f"  all seeds, 100% widths (the stop): {summary_line(results['summary'])}")
    print(f"  all seeds, 100% classification:    {summary_line(results['classification_summary'])}")
    for name, control in results["controls"].items():
        if control is not None:
            print(f"  control {name}: {summary_line(control['summary'])}")
    print(f"Wrote part3_detection.json and {len(results['figures'])} figure(s) to {out}/")


if __name__ == "__main__":
    sys.exit(run_main(main))
