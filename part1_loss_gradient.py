"""Part 1: loss and gradient surfaces of one sigmoid neuron (handout questions 1.1-1.6).

    python part1_loss_gradient.py [--out figures/] [--extent 4] [--x 1] [--y 0.5] [--grid 101] [--quiet]

One neuron (handout Figure 1): input x, weight w, bias b, z = w x + b, output yhat = sigmoid(z),
target y (handout: x = 1, y = 0.5). Top to bottom: the neuron, its two losses and their gradients,
the surfaces over the (w, b) grid, then `main`, the program: it checks the gradients against central
differences, measures what 1.6 asks, writes part1_loss_gradient.json, then draws the surfaces 1.1-1.5,
the handout's Figure 2 (ReLU, L2) and the 1.6 comparison over w and b in [-extent, extent], and writes
the JSON again with the list of figures. The numbers are written first: a figure that fails, or a
Ctrl-C while drawing, never loses them. With x = 1, extent 4 gives z in [-8, 8]: 41% of the grid is
saturated (yhat < 0.05 or > 0.95), where L2 and cross-entropy part ways (7% at the handout's extent
2), and half of it lies in |z| < 3, where the L2 gradient peaks. Same command, same bytes (sorted
keys, no timestamps). Needs only numpy and matplotlib; runs on Linux, macOS and Windows. --quiet
drops the progress line; the results (gradient check, the 1.6 summary) are printed either way.
Plumbing (flags, signals, atomic writes) is fenced off at the end.
"""

from __future__ import annotations

import argparse
import atexit
import glob
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

try:  # POSIX: a lock marks a temporary file another run is still writing (see atomic_write)
    import fcntl
except ImportError:  # Windows: no fcntl, but a file open in another process cannot be removed there
    fcntl = None

SATURATED = 0.05  # the neuron counts as saturated where yhat < 0.05 or yhat > 0.95
# Gradient check by central differences in float64, step h in w (h |x| in z, see check_gradient):
# relative to the largest |dL/dw|, truncation ~ (h x)^2 |L'''(z)| ~ 1e-13 and rounding ~ 1e-16 |L| / (h |x|)
# ~ 1e-10, far below the tolerance unless |x| is in the hundreds (the truncation error reaches it there).
FD_STEP, FD_TOLERANCE = 1e-6, 1e-6
MAX_EXTENT, MAX_ABS_X = 1000.0, 1000.0  # |z| <= 2e6: far inside float64, and saturated beyond doubt
MAX_GRID = 2001  # 2001 x 2001 float64 arrays: 32 MB each; finer shows nothing new


# 1.1 The neuron. Every function takes z = w x + b elementwise (any shape).

def sigmoid(z: np.ndarray) -> np.ndarray:
    """yhat = 1 / (1 + e^-z), evaluated with e^-|z| so that nothing overflows for any z."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# 1.2 and 1.3: L2 loss and its gradient.

def l2_loss(yhat: np.ndarray, y: float) -> np.ndarray:
    """L2 = (yhat - y)^2."""
    return (yhat - y) ** 2


def l2_gradient_w(z: np.ndarray, x: float, y: float) -> np.ndarray:
    """dL2/dw = 2 (yhat - y) * yhat (1 - yhat) * x, by the chain rule through the sigmoid."""
    # 1 - yhat as sigmoid(-z): 1 - sigmoid(z) is 0 beyond z = 37 in float64, sigmoid(-z) is not.
    return 2.0 * (sigmoid(z) - y) * sigmoid(z) * sigmoid(-z) * x


# 1.4 and 1.5: cross-entropy loss and its gradient.

def cross_entropy_loss(z: np.ndarray, y: float) -> np.ndarray:
    """CE = -(y log yhat + (1 - y) log(1 - yhat)) = softplus(z) - y z, computed from the logit z as
    max(z, 0) - y z + log1p(e^-|z|): finite for every z (log(yhat) is -inf once yhat rounds to 0 or 1)."""
    return np.maximum(z, 0.0) - y * z + np.log1p(np.exp(-np.abs(z)))


def cross_entropy_gradient_w(z: np.ndarray, x: float, y: float) -> np.ndarray:
    """dCE/dw = (yhat - y) * x: the sigmoid's slope yhat (1 - yhat) cancels against the log's
    1 / (yhat (1 - yhat)), so, unlike L2, nothing shrinks the gradient where the neuron saturates."""
    return (sigmoid(z) - y) * x


# The handout's Figure 2: ReLU instead of sigmoid, L2 loss.

def relu(z: np.ndarray) -> np.ndarray:
    """yhat = max(z, 0)."""
    return np.maximum(z, 0.0)


def relu_l2_gradient_w(z: np.ndarray, x: float, y: float) -> np.ndarray:
    """d/dw (relu(z) - y)^2 = 2 (relu(z) - y) [z > 0] x; slope 0 at z = 0 (as torch takes it)."""
    return 2.0 * (relu(z) - y) * (z > 0) * x


# name: (loss as a function of z and y, its closed-form dL/dw, whether it has a kink at z = 0)
LOSSES: dict[str, tuple[Callable[..., Any], Callable[..., Any], bool]] = {
    "l2": (lambda z, y: l2_loss(sigmoid(z), y), l2_gradient_w, False),
    "ce": (cross_entropy_loss, cross_entropy_gradient_w, False),
    "relu_l2": (lambda z, y: l2_loss(relu(z), y), relu_l2_gradient_w, True),
}


# 1.1-1.5 and Figure 2: every surface over the (weight, bias) grid.

def neuron_surfaces(extent: float, grid: int, x: float, y: float) -> dict[str, np.ndarray]:
    """Every surface of part 1, each (grid, grid): rows = bias b, columns = weight w, both running over
    [-extent, extent], exactly symmetric with w = 0 and b = 0 on the grid (grid is odd)."""
    half = grid // 2
    axis = extent * (np.arange(-half, half + 1) / half)
    W, B = np.meshgrid(axis, axis)
    z = W * x + B
    return {"W": W, "B": B, "z": z, "sigmoid_output": sigmoid(z),                  # 1.1
            "l2_loss": l2_loss(sigmoid(z), y), "l2_gradient": l2_gradient_w(z, x, y),  # 1.2, 1.3
            "ce_loss": cross_entropy_loss(z, y), "ce_gradient": cross_entropy_gradient_w(z, x, y),  # 1.4, 1.5
            "relu_output": relu(z), "relu_l2_loss": l2_loss(relu(z), y),        # Figure 2
            "relu_l2_gradient": relu_l2_gradient_w(z, x, y)}


# The program: check the gradients, measure 1.6, write the numbers, draw the figures, list them.

def main(argv: Sequence[str] | None = None) -> int:
    """Part 1 from the command line (argv: the flags, None for sys.argv); returns the exit status, 0."""
    args = parse_args(argv)
    s = neuron_surfaces(args.extent, args.grid, args.x, args.y)
    checks = {name: check_gradient(loss, gradient, s["W"], s["B"], args.x, args.y, kink)
              for name, (loss, gradient, kink) in LOSSES.items()}
    versions = {"python": platform.python_version(), "numpy": np.__version__,  # matplotlib's: read, not imported
                "matplotlib": next((d.version for d in importlib.metadata.distributions(name="matplotlib")), "none")}
    results = {"config": {"extent": args.extent, "grid": args.grid, "x": args.x, "y": args.y,
                          "dtype": str(s["W"].dtype)},  # numpy's float64: the surfaces and the check
               "versions": versions, "figures": [], "gradient_check": checks, **measure_1_6(s)}
    json_path = args.out / "part1_loss_gradient.json"
    write_json(json_path, results)  # the numbers first: a figure that fails, or a Ctrl-C, cannot lose them

    diffs = ", ".join(f"{name} {check['max_rel_diff']:.1e}" for name, check in checks.items())
    verdict = "all" if all(c["passed"] for c in checks.values()) else "NOT all"
    print(f"gradient check, central differences (h = {checks['l2']['step']:g}): largest |closed form - numeric| / "
          f"largest |dL/dw|: {diffs} ({verdict} within {FD_TOLERANCE:g})")
    ratio = results["corners"]["w_pos_b_pos"]["ratio_ce_to_l2"]
    print(f"1.6: {results['saturated_share']:.0%} of the grid saturated; at its corner w = b = extent, "
          "|dCE/dw| / |dL2/dw| = " + ("n/a (dL2/dw = 0)" if ratio is None else f"{ratio:,.4g}"))
    for key, stats in results["losses"].items():
        print(f"  {key}: loss {stats['loss_min']:.3g} to {stats['loss_max']:.3g}, largest |dL/dw| "
              f"{stats['grad_abs_max']:.4g} (at z = {stats['grad_abs_max_z']:g}), mean {stats['grad_abs_mean']:.3g}")
    if not args.quiet:
        print(f"wrote {json_path.name}; drawing {len(FIGURES)} figures into {args.out}", flush=True)

    for figure in FIGURES:
        if figure["id"] == "comparison":
            drawn = save_figure(args.out / figure["file"], comparison_figure,
                                (float(s["z"].min()), float(s["z"].max())), args.x, args.y)
        else:
            drawn = save_figure(args.out / figure["file"], surface_figure, s["W"], s["B"], s[figure["id"]],
                                figure["title"], figure["label"], "gradient" in figure["id"])
        if drawn:
            results["figures"].append({key: figure[key] for key in ("id", "question", "file", "shows")})
    write_json(json_path, results)
    print(f"wrote {len(results['figures'])} figures and {json_path.name} into {args.out}")
    return 0


# =============================================================================================
# Study machinery, by question: the gradient check, the numbers 1.6 quotes, the figures.
# =============================================================================================

def check_gradient(loss: Callable[..., Any], gradient: Callable[..., Any], W: np.ndarray, B: np.ndarray,
                   x: float, y: float, kink: bool = False) -> dict[str, Any]:
    """A closed-form dL/dw against the central difference (L(w + h) - L(w - h)) / 2h at every point.
    max_rel_diff = max_abs_diff / the largest |dL/dw| (pointwise ratios mean nothing where dL/dw = 0).
    kink: skip the points whose probes straddle z = 0, where ReLU has no derivative."""
    # The step h in w is FD_STEP, larger where |x| < 1 so that the step in z = w x + b stays FD_STEP: a
    # smaller one drowns in rounding (at x = 1e-3 the relative difference would reach the tolerance).
    h = FD_STEP / float(np.clip(abs(x), FD_STEP, 1.0))
    up, down = W + h, W - h
    numeric = (loss(up * x + B, y) - loss(down * x + B, y)) / (up - down)  # up - down: the step taken
    z = W * x + B
    keep = np.abs(z) > 2.0 * h * abs(x) if kink else np.ones(z.shape, bool)
    max_abs = float(np.abs(gradient(z, x, y) - numeric)[keep].max(initial=0.0))
    scale = float(np.abs(numeric[keep]).max(initial=0.0))
    max_rel = max_abs / scale if scale > 0 else max_abs
    return {"max_abs_diff": max_abs, "max_rel_diff": max_rel, "step": h, "points": int(keep.sum()),
            "tolerance": FD_TOLERANCE, "passed": max_rel <= FD_TOLERANCE}


# 1.6: every surface depends on (w, b) only through z = w x + b; the numbers below say where the
# gradients are large and where they vanish.

CORNERS = {"w_pos_b_pos": (-1, -1), "w_neg_b_neg": (0, 0), "w_pos_b_neg": (0, -1), "w_neg_b_pos": (-1, 0)}


def measure_1_6(s: dict[str, np.ndarray]) -> dict[str, Any]:
    """The numbers that answer 1.6 (and 1.3's ridge and trough), all JSON-ready, none NaN: the range of z,
    the saturated share of the grid, per loss its range, its largest |dL/dw| and where, the signed largest
    and smallest dL/dw and their z, the mean |dL/dw| (over the saturated points too: not for ReLU), the
    shares below 1% and 10% of the largest; and both losses and gradients at the grid's four corners."""
    W, B, z, yhat = s["W"], s["B"], s["z"], s["sigmoid_output"]
    saturated = (yhat < SATURATED) | (yhat > 1.0 - SATURATED)
    losses = {}
    for name, (_, _, kink) in LOSSES.items():
        grad, loss = s[f"{name}_gradient"], s[f"{name}_loss"]
        magnitude = np.abs(grad)
        peak, high, low = (np.unravel_index(int(i), grad.shape)
                           for i in (np.argmax(magnitude), np.argmax(grad), np.argmin(grad)))
        largest = float(magnitude[peak])
        losses[name] = {"loss_min": float(loss.min()), "loss_max": float(loss.max()), "grad_abs_max": largest,
                        "grad_abs_max_w": float(W[peak]), "grad_abs_max_b": float(B[peak]),
                        "grad_abs_max_z": float(z[peak]), "grad_abs_mean": float(magnitude.mean()),
                        "grad_max": float(grad[high]) + 0.0, "grad_max_z": float(z[high]),  # the ridge
                        "grad_min": float(grad[low]) + 0.0, "grad_min_z": float(z[low]),  # the trough
                        "share_grad_below_1pct": float((magnitude < 0.01 * largest).mean()),
                        "share_grad_below_10pct": float((magnitude < 0.10 * largest).mean())}
        if not kink:
            losses[name]["grad_abs_mean_saturated"] = float(magnitude[saturated].mean()) if saturated.any() else None
    # + 0.0 turns -0.0 into 0.0; the ratio is null, not infinity, where dL2/dw is exactly 0 (JSON has no inf)
    corners = {name: {"w": float(W[i]), "b": float(B[i]), "z": float(z[i]), "yhat": float(yhat[i]),
                      "l2_loss": float(s["l2_loss"][i]), "ce_loss": float(s["ce_loss"][i]),
                      "l2_grad": float(s["l2_gradient"][i]) + 0.0, "ce_grad": float(s["ce_gradient"][i]) + 0.0,
                      "ratio_ce_to_l2": float(abs(s["ce_gradient"][i] / s["l2_gradient"][i]))
                      if s["l2_gradient"][i] != 0 else None}
               for name, i in CORNERS.items()}
    return {"z_range": [float(z.min()), float(z.max())], "saturated_share": float(saturated.mean()),
            "saturation_threshold": SATURATED, "corners": corners, "losses": losses}


# The figures, in the report's order. id: a key of neuron_surfaces (drawn by surface_figure, with its title
# and colour-bar label) or "comparison" (1.6, comparison_figure); shows: what the report says it shows.
L2, CE, DW = r"\mathcal{L}_{L2}", r"\mathcal{L}_{CE}", r"/\partial w"
FIGURES: list[dict[str, str]] = [
    {"id": "sigmoid_output", "question": "1.1", "file": "part1_1.1_sigmoid_output.png",
     "title": r"1.1  Sigmoid output $\hat y = \sigma(wx + b)$", "label": r"output $\hat y$",
     "shows": "sigmoid output against weight and bias"},
    {"id": "l2_loss", "question": "1.2", "file": "part1_1.2_l2_loss.png",
     "title": rf"1.2  L2 loss ${L2} = (\hat y - y)^2$", "label": "L2 loss",
     "shows": "L2 loss against weight and bias"},
    {"id": "l2_gradient", "question": "1.3", "file": "part1_1.3_l2_gradient.png",
     "title": "1.3  Gradient of L2\n" rf"$\partial {L2}{DW} = 2(\hat y - y)\,\hat y(1-\hat y)\,x$",
     "label": rf"$\partial {L2}{DW}$", "shows": "gradient of the L2 loss with respect to the weight"},
    {"id": "ce_loss", "question": "1.4", "file": "part1_1.4_ce_loss.png",
     "title": f"1.4  Cross-entropy loss\n${CE} = -(y\\log\\hat y + (1-y)\\log(1-\\hat y))$", "label": "CE loss",
     "shows": "cross-entropy loss against weight and bias"},
    {"id": "ce_gradient", "question": "1.5", "file": "part1_1.5_ce_gradient.png",
     "title": rf"1.5  Gradient of CE $\partial {CE}{DW} = (\hat y - y)\,x$", "label": rf"$\partial {CE}{DW}$",
     "shows": "gradient of the cross-entropy loss with respect to the weight"},
    {"id": "comparison", "question": "1.6", "file": "part1_1.6_loss_and_gradient_vs_z.png",
     "shows": "both losses and gradient magnitudes against z = wx + b, log scale"},
    {"id": "relu_output", "question": "figure 2", "file": "part1_fig2_relu_output.png",
     "title": r"Fig. 2  ReLU output $\hat y = \max(0, wx + b)$", "label": r"output $\hat y$",
     "shows": "ReLU output, as the handout's Figure 2 (left)"},
    {"id": "relu_l2_loss", "question": "figure 2", "file": "part1_fig2_relu_l2_loss.png",
     "title": rf"Fig. 2  L2 loss of ReLU ${L2} = (\hat y - y)^2$", "label": "L2 loss",
     "shows": "L2 loss of the ReLU neuron, as the handout's Figure 2 (middle)"},
    {"id": "relu_l2_gradient", "question": "figure 2", "file": "part1_fig2_relu_l2_gradient.png",
     "title": "Fig. 2  Gradient of L2 of ReLU\n" rf"$\partial {L2}{DW} = 2(\hat y - y)\,[wx+b>0]\,x$",
     "label": rf"$\partial {L2}{DW}$",
     "shows": "gradient of the ReLU neuron's L2 loss, as the handout's Figure 2 (right)"},
]


def surface_figure(W: np.ndarray, B: np.ndarray, values: np.ndarray, title: str, label: str,
                   signed: bool) -> Any:
    """A 3D surface over (w, b), 3.2 in wide (half a page); the colour bar names the quantity."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize, TwoSlopeNorm
    from matplotlib.ticker import MaxNLocator

    fig = plt.figure(figsize=(3.2, 2.7))
    # Placed by hand: layout engines do not see a 3D axes' wide margins.
    ax = fig.add_axes((-0.1, 0.03, 0.88, 0.86), projection="3d", computed_zorder=False)
    count = min(W.shape[0], 41)  # 41 x 41 facets: smooth at 8 cm, quick to draw
    low, high = float(values.min()), float(values.max())
    # Signed surfaces (the gradients): white exactly at 0; where one sign is much larger (Figure 2's
    # ReLU gradient: -1 against +15), each sign gets its full colours.
    # the z axis and the colour bar share their ticks, at the values' range (2% slack: 0 beside 3e-4)
    span, slack = high - low, 0.02 * (high - low)
    step = min(m * 10.0 ** e for e in range(math.floor(math.log10(span)) - 1, math.floor(math.log10(span)) + 2)
               for m in (1, 2, 5) if m * 10.0 ** e >= span / 2.5)  # 2 or 3 ticks: 1, 2 or 5 x 10^k apart
    ticks = np.arange(math.ceil((low - slack) / step), math.floor((high + slack) / step) + 1) * step
    lo, hi = min(low, ticks.min()), max(high, ticks.max())  # the colours reach the end ticks
    norm = Normalize(-max(-lo, hi), max(-lo, hi)) if signed else Normalize(lo, hi)
    if signed and low < 0 < high and not 0.5 < -low / high < 2.0:
        norm = TwoSlopeNorm(0.0, low, high)
    # signed: a diverging map, white at 0; never negative (the output, the losses): a sequential one
    surface = ax.plot_surface(W, B, values, cmap="coolwarm" if signed else "viridis", norm=norm, rcount=count,
                              linewidth=0, antialiased=False)
    for axis, bins, name in ((ax.xaxis, 4, "weight $w$"), (ax.yaxis, 4, "bias $b$"), (ax.zaxis, 3, "")):
        axis.set_major_locator(MaxNLocator(bins, steps=[1, 2, 4, 5, 10]))
        axis.set_label_text(name, fontsize=10)
        axis.labelpad = -5
    ax.tick_params(labelsize=9.5, pad=-3)
    ax.tick_params(axis="z", pad=0)
    ax.view_init(elev=28, azim=-60)
    ax.set_box_aspect(None, zoom=0.9)
    fig.suptitle(title, fontsize=9.5, y=0.985, va="top")
    bar = fig.colorbar(surface, cax=fig.add_axes((0.78, 0.2, 0.03, 0.55)), format="{x:g}")
    bar.set_label(label, fontsize=10, labelpad=2)
    bar.ax.tick_params(labelsize=9.5)
    if isinstance(norm, TwoSlopeNorm):  # the two halves have different scales: ticks on each
        ticks = np.append(MaxNLocator(2).tick_values(norm.vmin, 0), MaxNLocator(4).tick_values(0, norm.vmax))
        bar.set_ticks(np.unique(ticks[(ticks >= norm.vmin) & (ticks <= norm.vmax)]))
    else:  # the colour bar reads as the z axis: the same ticks on both
        ax.set_zticks(ticks)
        ax.zaxis.set_major_formatter("{x:g}")  # as the bar writes them: 0.4, not 0.40
        bar.set_ticks(ticks)
    return fig


def comparison_figure(z_range: tuple[float, float], x: float, y: float) -> Any:
    """1.6 along z (the surfaces take exactly these values on the grid). Left: both losses against z.
    Right: |dL/dw| of both, log scale, with how much larger CE's is at the largest z. Saturated bands shaded."""
    import matplotlib.pyplot as plt

    z = np.linspace(z_range[0], z_range[1], 2001)
    grads = {"L2": np.abs(l2_gradient_w(z, x, y)), "CE": np.abs(cross_entropy_gradient_w(z, x, y))}
    fig, (left, right) = plt.subplots(1, 2, figsize=(6.5, 2.8), layout="constrained")
    # black and grey: colours mean the four settings in part 2's figures, not the two losses
    left.plot(z, l2_loss(sigmoid(z), y), color="black", lw=1.8, label=r"L2 $(\hat y - y)^2$")
    left.plot(z, cross_entropy_loss(z, y), color="0.5", ls="-.", lw=1.8, label="cross-entropy")
    left.set_ylabel("loss")
    left.set_title(f"loss (target $y$ = {y:g})", fontsize=10)
    positive_values = np.concatenate([g[g > 0] for g in grads.values()])
    if positive_values.size:  # log scale: L2's gradient falls by orders of magnitude, CE's does not
        right.set_yscale("log")
        right.set_ylim(positive_values.min() / 3, positive_values.max() * 8)
    for (name, grad), (colour, style) in zip(grads.items(), (("black", "-"), ("0.5", "-.")), strict=True):
        right.plot(z, grad, color=colour, ls=style, lw=1.8, label=rf"$|\partial\mathcal{{L}}_{{{name}}}/\partial w|$")
    right.set_ylabel(r"$|\partial\mathcal{L}/\partial w|$")
    right.set_title("gradient magnitude (log scale)", fontsize=10)
    if grads["L2"][-1] > 0:  # at the grid's largest z, the most saturated: how much larger CE's gradient is
        at, ratio = -31, grads["CE"][-1] / grads["L2"][-1]  # the arrow stands 1.5% inside the edge
        right.annotate("", (z[at], grads["CE"][at]), (z[at], grads["L2"][at]), arrowprops={"arrowstyle": "<->"})
        right.text(z[at - 20], grads["CE"][at] * 1.5, (f"CE/L2 = {ratio:,.0f}×" if ratio < 1e6 else
                   f"CE/L2 = {ratio:.2e}×") + f" at z = {z[-1]:g}", ha="right", va="bottom")
    edge = float(np.log(1.0 / SATURATED - 1.0))  # |z| beyond which yhat < 0.05 or > 0.95
    for ax in (left, right):
        for start, stop in ((z_range[0], -edge), (edge, z_range[1])):
            ax.axvspan(start, max(start, stop), color="0.88", lw=0, zorder=0)
        ax.set(xlim=z_range, xlabel=r"pre-activation $z = wx + b$")
        ax.grid(alpha=0.3)
    left.axvspan(0, 0, color="0.88", label=r"saturated: $\hat y<0.05$ or $>0.95$")  # legend entry only
    left.set_ylim(top=1.6 * float(np.max(cross_entropy_loss(z, y))))  # headroom: the legend stays off the curves
    left.legend(fontsize=8.5, loc="upper center")
    right.legend(fontsize=8.5, loc="lower center")
    fig.suptitle(f"1.6  L2 against cross-entropy along $z = wx + b$ ($x$ = {x:g})", fontsize=11)
    return fig


# =============================================================================================
# Plumbing, fenced off: flags checked before any work, one-line errors, signals that stop a run
# cleanly, files written whole or not at all. tools/ and data/make_standins.py import InputError,
# Parser, run_main, write_json and atomic_write from here.
# =============================================================================================

# argparse reads '-1e-3' as a flag (its pattern for negative numbers has no exponent): this one has.
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags, each checked, and --out made (a folder a file can be written in), all before anything
    is computed or written."""
    parser = Parser(prog="part1_loss_gradient.py",
                    description="Part 1: loss and gradient surfaces of one sigmoid neuron (1.1-1.6).")
    parser._negative_number_matcher = NEGATIVE_NUMBER
    parser.add_argument("--out", type=Path, default=Path("figures"), help="output folder (default figures/)")
    parser.add_argument("--extent", type=finite_float, default=4.0,
                        help=f"weight and bias both run over [-extent, extent] (default 4; at most {MAX_EXTENT:g})")
    parser.add_argument("--x", type=finite_float, default=1.0,
                        help=f"input to the neuron (default 1; |x| at most {MAX_ABS_X:g})")
    parser.add_argument("--y", type=probability, default=0.5, help="target in [0, 1] (default 0.5)")
    parser.add_argument("--grid", type=int, default=101,
                        help=f"points per axis, odd: w = 0, b = 0 lie on the grid (default 101; 3 to {MAX_GRID})")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress line (the gradient check and the 1.6 summary are printed anyway)")
    args = parser.parse_args(argv)
    if not 0 < args.extent <= MAX_EXTENT:
        parser.error(f"argument --extent: {args.extent:g} must be > 0 and at most {MAX_EXTENT:g}")
    if abs(args.x) > MAX_ABS_X:
        parser.error(f"argument --x: {args.x:g} is too large (|x| at most {MAX_ABS_X:g})")
    if not 3 <= args.grid <= MAX_GRID or args.grid % 2 == 0:
        parser.error(f"argument --grid: {args.grid} must be an odd integer from 3 to {MAX_GRID}")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=args.out):  # permissions alone do not say (ACLs, read-only disks)
            pass
    except OSError as err:
        raise InputError(f"--out {args.out}: not a writable folder ({err.strerror})") from None
    return args


def finite_float(text: str) -> float:
    """argparse type: any finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
    return value


def probability(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    value = finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must lie in [0, 1]")
    return value


class InputError(Exception):
    """Bad input from the user (a flag, a data file, an output folder): one line naming it, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise InputError: run_main prints them as one line
    (`prog: error: ...`) and returns 2."""

    def error(self, message: str) -> NoReturn:
        raise InputError(message)


def _stop(signum: int, _frame: Any) -> None:
    """SIGTERM or SIGHUP: stop the run as Ctrl-C does, carrying the signal's number."""
    raise KeyboardInterrupt(signum)


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a script's `main` and return its exit status: bad input -> one line, 2; Ctrl-C, SIGTERM,
    SIGHUP -> one line, 128 + the signal (130, 143, 129); a closed stdout -> quiet, 141; an unwritable
    output -> one line, 1. Never a traceback for these; a bug keeps its traceback. Files written before
    stay whole and no temporary file stays behind (atomic_write). The signal handlers are put back after."""
    prog = Path(sys.argv[0]).name if argv is None else "main"
    stops = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]  # Windows: no SIGHUP
    # under nohup, SIGHUP stays ignored
    before = {sig: signal.signal(sig, _stop) for sig in stops if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        return main(argv)
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        signum = err.args[0] if err.args and isinstance(err.args[0], int) else signal.SIGINT
        print(f"{prog}: interrupted ({signal.Signals(signum).name}); files written before stay whole",
              file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except OSError as err:
        print(f"{prog}: error: cannot write {err.filename or 'the output'}: {err.strerror}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in before.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


TEMP_MARK = ".tmp-"  # a file's temporary is .<name>.tmp-XXXX: hidden, and recognisable as ours
STALE_SECONDS = 600  # a temporary untouched this long is a killed run's (a write takes seconds at most)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` through a temporary file in the same folder, then rename it into place: an error or
    a signal mid-write leaves the previous file whole and no temporary file behind. First removes this
    file's temporaries that a killed run left: only those untouched for STALE_SECONDS and, where fcntl
    exists, not locked (a live run holds its lock while writing); on Windows, where a file open in
    another process cannot be removed, by age alone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for temp in path.parent.glob(f".{glob.escape(path.name)}{TEMP_MARK}*"):
        try:  # any error (gone meanwhile, locked, open elsewhere, not ours): leave it
            if time.time() - temp.stat().st_mtime < STALE_SECONDS:
                continue
            if fcntl is None:
                temp.unlink()
                continue
            with temp.open("rb") as file:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                temp.unlink()
        except OSError:
            pass
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", dir=path.parent)
    try:
        if fcntl is None:  # Windows: a file open here could be neither renamed nor removed
            os.close(fd)
            fd = -1
        else:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held while writing: no other run removes it as stale
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):  # name the file the user knows, not the temporary one
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def write_json(path: Path, data: Any) -> None:
    """Write `data` as deterministic JSON (sorted keys, fixed indent, no NaN), atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_figure(path: Path, draw: Callable[..., Any], *args: Any) -> bool:
    """fig = draw(*args), saved atomically (no timestamp: same data, same bytes). A figure that cannot
    be drawn for the data at hand is skipped with one line; the run's results are never lost to it."""
    import matplotlib.pyplot as plt

    try:
        with warnings.catch_warnings():  # NaN or inf in the data: the figure says enough
            warnings.simplefilter("ignore")
            fig = draw(*args)
            atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=200, metadata={"Software": None}))
    except (ValueError, IndexError, ZeroDivisionError, OverflowError, RuntimeError) as err:
        print(f"skipped figure {path.name}: {err}", file=sys.stderr)
        return False
    finally:
        plt.close("all")
    return True


# matplotlib (imported when the first figure is drawn): files only, any terminal or none; its settings
# and font cache live in the home folder. Where that cannot be written (HOME unset, read-only, not a
# folder), matplotlib would warn twice and make a temporary folder itself: make it here, quietly, and
# remove it at exit (run_main turns signals into a normal exit, so it goes then too).
os.environ["MPLBACKEND"] = "Agg"
try:
    _home_writable = Path.home().is_dir() and os.access(Path.home(), os.W_OK)
except RuntimeError:  # no home folder at all
    _home_writable = False
if not _home_writable and "MPLCONFIGDIR" not in os.environ:
    os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="part1-matplotlib-")
    atexit.register(shutil.rmtree, os.environ["MPLCONFIGDIR"], ignore_errors=True)


if __name__ == "__main__":
    sys.exit(run_main(main))
