"""Part 1: loss and gradient surfaces of one sigmoid neuron (handout questions 1.1-1.6).

One neuron (handout Figure 1): input x, weight w, bias b, pre-activation z = w*x + b,
output yhat = sigmoid(z), target y. Defaults as in the handout: x = 1, y = 0.5.

    python part1_loss_gradient.py [--out figures/] [--extent 4] [--x 1] [--y 0.5] [--grid 101]

Every surface is drawn over the same square grid, weight w on the x-axis and bias b on the
y-axis, both on [-extent, extent] (centred at 0, as the handout asks); `--grid` points per axis,
odd so that w = 0 and b = 0 lie on the grid. Arrays are (grid, grid): rows = bias, columns =
weight. All quantities are dimensionless.

The last section of this file, fenced off, holds the plumbing that parts 2 and 3 import (one-line
errors, atomic writes, the data loader); part 1 itself reads top to bottom before it.

Why extent 4 by default. With x = 1 every surface depends on w and b only through z = w + b, so
the grid covers z in [-8, 8]. There about 40% of the grid is saturated (yhat < 0.05 or
> 0.95; sigmoid(8) = 0.99966), which is where L2 and cross-entropy part ways, while the active
band |z| < 3, where the L2 gradient has its two bumps (largest |dL2/dw| about 0.096, near |z| = 1.3),
still covers more than half of the grid and is resolved by dozens of grid points. The handout's
own Figure 2 uses extent 2: there only 7% of the grid is saturated and the collapse of the L2
gradient hardly shows; from extent 8 on, the active band shrinks to a thin diagonal stripe.
Any extent up to 1000 works (cross-entropy stays finite: it is computed from z, never from
log(yhat)); the tests run extent 50.

Figures (PNG, into --out), same colour map (coolwarm, as the handout's Figure 2), colour bar,
axis labels and a title with the formula on every surface; on signed surfaces (the gradients)
white is exactly 0, so white means "no gradient":
    part1_1.1_sigmoid_output.png      1.1  yhat = sigmoid(wx + b)
    part1_1.2_l2_loss.png             1.2  L2 = (yhat - y)^2
    part1_1.3_l2_gradient.png         1.3  dL2/dw
    part1_1.4_ce_loss.png             1.4  CE = -(y log yhat + (1 - y) log(1 - yhat))
    part1_1.5_ce_gradient.png         1.5  dCE/dw
    part1_1.6_loss_and_gradient_vs_z.png  1.6  both losses and |gradients| against z = wx + b
                                           (each surface takes exactly these values), log scale
    part1_fig2_relu_output.png        handout Figure 2, left:   relu(wx + b)
    part1_fig2_relu_l2_loss.png       handout Figure 2, middle: (relu(wx + b) - y)^2
    part1_fig2_relu_l2_gradient.png   handout Figure 2, right:  its gradient w.r.t. w

Results: part1_loss_gradient.json in --out (sorted keys, no timestamps: the same command gives the
same bytes); README.md lists its keys.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

os.environ["MPLBACKEND"] = "Agg"  # the scripts only write files: any terminal or notebook works

# =============================================================================================
# Part 1. Everything below answers the handout's questions 1.1-1.6; read it top to bottom.
# =============================================================================================

FIGURE_CMAP = "coolwarm"  # the handout's Figure 2 look: blue = low, red = high
SATURATED = 0.05  # the neuron counts as saturated where yhat < 0.05 or yhat > 0.95
MAX_EXTENT = 1000.0  # |z| stays <= 1e6: far inside float64, and saturated beyond any doubt
MAX_ABS_X = 1000.0
MAX_GRID = 2001  # 2001 x 2001 float64 arrays: 32 MB each; finer shows nothing new


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Arguments, all validated here, before anything is computed or written."""
    parser = Parser(
        prog="part1_loss_gradient.py",
        description="Part 1: loss and gradient surfaces of one sigmoid neuron (questions 1.1-1.6).",
    )
    parser.add_argument("--out", type=Path, default=Path("figures"),
                        help="folder for the PNG figures and part1_loss_gradient.json (default figures/)")
    parser.add_argument("--extent", type=positive(float), default=4.0,
                        help="weight and bias both run over [-extent, extent] (default 4; at most 1000)")
    parser.add_argument("--x", type=finite_float, default=1.0,
                        help="input to the neuron, handout Figure 1 (default 1)")
    parser.add_argument("--y", type=probability, default=0.5,
                        help="target in [0, 1], handout 1.2 and 1.4 (default 0.5)")
    parser.add_argument("--grid", type=odd_grid_size, default=101,
                        help="grid points per axis, odd so w = 0 and b = 0 lie on the grid (default 101)")
    args = parser.parse_args(argv)
    if args.extent > MAX_EXTENT:
        parser.error(f"argument --extent: {args.extent:g} is too large (at most {MAX_EXTENT:g})")
    if abs(args.x) > MAX_ABS_X:
        parser.error(f"argument --x: {args.x:g} is too large (|x| at most {MAX_ABS_X:g})")
    return args


def odd_grid_size(text: str) -> int:
    """argparse type: an odd integer in [3, MAX_GRID]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 3 or value > MAX_GRID or value % 2 == 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be an odd integer from 3 to {MAX_GRID}")
    return value


# ---------------------------------------------------------------------------------------------
# The neuron of Figure 1 on the (weight, bias) grid. Every function below takes the
# pre-activation z = w*x + b elementwise (any shape) and returns the same shape.
# ---------------------------------------------------------------------------------------------


def weight_bias_grid(extent: float, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """W, B of shape (grid, grid) covering [-extent, extent]^2; rows = bias, columns = weight."""
    half = grid // 2
    # i / half is exact in sign, so the axis is exactly symmetric, 0 in the middle, +-extent at the ends.
    axis = extent * (np.arange(-half, half + 1) / half)
    W, B = np.meshgrid(axis, axis)
    return W, B


# 1.1 Sigmoid output ---------------------------------------------------------------------------


def sigmoid(z: np.ndarray) -> np.ndarray:
    """yhat = 1 / (1 + e^-z), evaluated with e^-|z| so that nothing overflows for any z."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# 1.2 L2 loss ----------------------------------------------------------------------------------


def l2_loss(yhat: np.ndarray, y: float) -> np.ndarray:
    """L2 = (yhat - y)^2."""
    return (yhat - y) ** 2


# 1.3 Back-propagation with L2 loss ------------------------------------------------------------


def l2_gradient_w(z: np.ndarray, x: float, y: float) -> np.ndarray:
    """dL2/dw = 2 (yhat - y) * yhat (1 - yhat) * x, by the chain rule through the sigmoid."""
    yhat = sigmoid(z)
    # 1 - yhat is written sigmoid(-z): 1 - sigmoid(z) rounds to 0 beyond z = 37 in float64,
    # sigmoid(-z) keeps the tiny (but non-zero) slope that L2 really has out there.
    return 2.0 * (yhat - y) * yhat * sigmoid(-z) * x


# 1.4 Cross-entropy loss -----------------------------------------------------------------------


def cross_entropy_loss(z: np.ndarray, y: float) -> np.ndarray:
    """CE = -(y log yhat + (1 - y) log(1 - yhat)), computed from the logit z.

    With yhat = sigmoid(z) this is exactly softplus(z) - y z. Written as
    max(z, 0) - y z + log1p(e^-|z|) it never takes log(0) and never overflows, so it is finite
    for every finite z (log(yhat) would give -inf once yhat rounds to 0 or 1).
    """
    return np.maximum(z, 0.0) - y * z + np.log1p(np.exp(-np.abs(z)))


# 1.5 Back-propagation with cross-entropy loss -------------------------------------------------


def cross_entropy_gradient_w(z: np.ndarray, x: float, y: float) -> np.ndarray:
    """dCE/dw = (yhat - y) * x.

    The sigmoid's slope yhat (1 - yhat) cancels against the 1 / (yhat (1 - yhat)) from the log,
    so, unlike L2, nothing shrinks the gradient where the neuron saturates.
    """
    return (sigmoid(z) - y) * x


# Figure 2, the handout's example: ReLU instead of sigmoid, L2 loss ---------------------------


def relu(z: np.ndarray) -> np.ndarray:
    """yhat = max(z, 0)."""
    return np.maximum(z, 0.0)


def relu_l2_gradient_w(z: np.ndarray, x: float, y: float) -> np.ndarray:
    """d/dw (relu(z) - y)^2 = 2 (relu(z) - y) * [z > 0] * x; slope 0 at z = 0 (as torch takes it)."""
    return 2.0 * (relu(z) - y) * (z > 0) * x


def neuron_surfaces(extent: float, grid: int, x: float, y: float) -> dict[str, np.ndarray]:
    """Every surface of part 1 on the grid, each (grid, grid): rows = bias, columns = weight."""
    W, B = weight_bias_grid(extent, grid)
    z = W * x + B
    yhat = sigmoid(z)
    return {
        "W": W, "B": B, "z": z,
        "sigmoid_output": yhat,                                # 1.1
        "l2_loss": l2_loss(yhat, y),                           # 1.2
        "l2_gradient": l2_gradient_w(z, x, y),                 # 1.3
        "ce_loss": cross_entropy_loss(z, y),                   # 1.4
        "ce_gradient": cross_entropy_gradient_w(z, x, y),      # 1.5
        "relu_output": relu(z),                                # Figure 2
        "relu_l2_loss": l2_loss(relu(z), y),
        "relu_l2_gradient": relu_l2_gradient_w(z, x, y),
    }


# ---------------------------------------------------------------------------------------------
# How every surface looks (1.1-1.5 and Figure 2): one function, so they all look the same.
# ---------------------------------------------------------------------------------------------


def surface_figure(W: np.ndarray, B: np.ndarray, values: np.ndarray, title: str, zlabel: str,
                   signed: bool) -> Any:
    """A 3D surface of `values` (grid, grid) over weight W and bias B, with a colour bar.

    signed: the colour scale's white sits at 0 (for gradients), blue below, red above.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize, TwoSlopeNorm
    from matplotlib.ticker import MaxNLocator, StrMethodFormatter

    low, high = float(values.min()), float(values.max())
    if signed and low < 0 < high and not 0.5 < -low / high < 2.0:
        # Lopsided (Figure 2's ReLU gradient: -1 against +15): each sign gets its full colours.
        norm: Normalize = TwoSlopeNorm(0.0, low, high)
    elif signed:
        bound = max(abs(low), abs(high)) or 1.0
        norm = Normalize(-bound, bound)
    else:
        norm = Normalize(low, high) if low < high else Normalize(low - 1.0, high + 1.0)
    fig = plt.figure(figsize=(5.0, 4.2))
    # Axes placed by hand: a 3D axes leaves wide margins; this keeps the surface large and the
    # z-axis label clear of the colour bar.
    ax = fig.add_axes((-0.07, 0.0, 0.9, 0.9), projection="3d", computed_zorder=False)
    count = min(W.shape[0], 51)  # 51 x 51 facets: smooth at report size, a quarter the drawing time
    surface = ax.plot_surface(W, B, values, cmap=FIGURE_CMAP, norm=norm, rcount=count,
                              ccount=count, linewidth=0, antialiased=False)
    ax.set_xlabel("weight $w$", labelpad=1, fontsize=11)
    ax.set_ylabel("bias $b$", labelpad=1, fontsize=11)
    ax.set_zlabel(zlabel, labelpad=10, fontsize=11)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_major_locator(MaxNLocator(5))
    ax.tick_params(axis="both", labelsize=9, pad=-2)
    ax.tick_params(axis="z", labelsize=9, pad=4)
    ax.view_init(elev=28, azim=-60)
    ax.set_box_aspect(None, zoom=0.92)
    fig.suptitle(title, fontsize=12, y=0.975)
    colour_bar = fig.colorbar(surface, cax=fig.add_axes((0.875, 0.22, 0.03, 0.52)))
    colour_bar.ax.tick_params(labelsize=9)
    if isinstance(norm, TwoSlopeNorm):  # the two halves have different scales: tick each one
        ticks = np.concatenate([MaxNLocator(3).tick_values(low, 0.0), MaxNLocator(5).tick_values(0.0, high)])
        colour_bar.set_ticks(np.unique(ticks[(ticks >= low) & (ticks <= high)]))
        colour_bar.ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    else:
        colour_bar.ax.yaxis.set_major_locator(MaxNLocator(6))
    return fig


# ---------------------------------------------------------------------------------------------
# 1.6: the comparison at a glance. With input x, every surface depends on (w, b) only through
# z = w x + b, so curves against z show exactly the values each surface takes on the grid.
# ---------------------------------------------------------------------------------------------


def comparison_figure(z_range: tuple[float, float], x: float, y: float) -> Any:
    """Left: both losses against z. Right: |dL/dw| of both against z, log scale; saturated band shaded."""
    import matplotlib.pyplot as plt

    z = np.linspace(z_range[0], z_range[1], 2001)
    l2_grad = np.abs(l2_gradient_w(z, x, y))
    ce_grad = np.abs(cross_entropy_gradient_w(z, x, y))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.8))
    styles = {"L2": {"color": "tab:blue"}, "CE": {"color": "tab:red"}}

    left.plot(z, l2_loss(sigmoid(z), y), label=r"L2 $(\hat y - y)^2$", lw=2, **styles["L2"])
    left.plot(z, cross_entropy_loss(z, y), label="cross-entropy", lw=2, **styles["CE"])
    left.set_ylabel("loss")
    left.set_title(f"loss (target $y$ = {y:g})", fontsize=11)

    # Log scale: the L2 gradient falls by orders of magnitude where CE's stays at |yhat - y|.
    positive_values = np.concatenate([l2_grad[l2_grad > 0], ce_grad[ce_grad > 0]])
    if positive_values.size:
        right.set_yscale("log")
        right.set_ylim(positive_values.min() / 3, positive_values.max() * 3)
    right.plot(z, l2_grad, label=r"$|\partial\mathcal{L}_{L2}/\partial w|$", lw=2, **styles["L2"])
    right.plot(z, ce_grad, label=r"$|\partial\mathcal{L}_{CE}/\partial w|$", lw=2, **styles["CE"])
    right.set_ylabel(r"$|\partial\mathcal{L}/\partial w|$")
    # Where the grid is most saturated (its largest z), mark how many times larger CE's gradient is.
    if l2_grad[-1] > 0:
        at = z_range[1] - 0.015 * (z_range[1] - z_range[0])
        low, high = float(np.abs(l2_gradient_w(at, x, y))), float(np.abs(cross_entropy_gradient_w(at, x, y)))
        right.annotate("", xy=(at, high), xytext=(at, low),
                       arrowprops={"arrowstyle": "<->", "color": "0.2", "lw": 1.2})
        ratio = ce_grad[-1] / l2_grad[-1]
        ratio_text = f"{ratio:,.0f}" if ratio < 1e6 else f"{ratio:.2e}"
        right.text(at - 0.01 * (z_range[1] - z_range[0]), high * 0.45,
                   f"CE/L2 = {ratio_text}×\nat z = {z_range[1]:g}", ha="right", va="top", fontsize=9)
    right.set_title("gradient magnitude (log scale)", fontsize=11)

    edge = float(np.log(1.0 / SATURATED - 1.0))  # |z| beyond which yhat < 0.05 or > 0.95
    for ax in (left, right):
        for start, stop in ((z_range[0], -edge), (edge, z_range[1])):
            if start < stop:
                ax.axvspan(start, stop, color="0.88", lw=0, zorder=0)
        ax.set_xlim(*z_range)
        ax.set_xlabel(r"pre-activation $z = wx + b$")
        ax.grid(alpha=0.3)
    left.axvspan(0, 0, color="0.88", label=r"saturated: $\hat y<0.05$ or $>0.95$")  # legend entry only
    left.legend(fontsize=9, loc="upper center")
    right.legend(fontsize=9, loc="lower center")
    fig.suptitle(f"1.6  L2 vs cross-entropy for one sigmoid neuron (x = {x:g}); "
                 "each surface takes exactly these values", fontsize=11)
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.14, top=0.83, wspace=0.22)
    return fig


def gradient_statistics(loss: np.ndarray, grad: np.ndarray, W: np.ndarray, B: np.ndarray,
                        z: np.ndarray, saturated: np.ndarray | None) -> dict[str, Any]:
    """The numbers 1.6 quotes for one loss over the grid (see the module docstring for the keys).

    saturated: (grid, grid) bool mask of the sigmoid's saturated points, None for ReLU.
    """
    magnitude = np.abs(grad)
    peak = np.unravel_index(int(np.argmax(magnitude)), magnitude.shape)
    largest = float(magnitude[peak])
    stats = {
        "loss_min": float(loss.min()),
        "loss_max": float(loss.max()),
        "grad_abs_max": largest,
        "grad_abs_max_w": float(W[peak]),
        "grad_abs_max_b": float(B[peak]),
        "grad_abs_max_z": float(z[peak]),
        "grad_abs_mean": float(magnitude.mean()),
        "share_grad_below_1pct": float((magnitude < 0.01 * largest).mean()),
        "share_grad_below_10pct": float((magnitude < 0.10 * largest).mean()),
    }
    if saturated is not None:
        stats["grad_abs_mean_saturated"] = float(magnitude[saturated].mean()) if saturated.any() else None
    return stats


def corner_values(extent: float, x: float, y: float) -> dict[str, dict[str, float | None]]:
    """Both losses and gradients at the grid's four corners, where |z| is largest (or z = 0)."""
    corners = {}
    for name, (w, b) in {"w_pos_b_pos": (extent, extent), "w_neg_b_neg": (-extent, -extent),
                         "w_pos_b_neg": (extent, -extent), "w_neg_b_pos": (-extent, extent)}.items():
        z = np.float64(w * x + b)
        l2_grad = float(l2_gradient_w(z, x, y))
        ce_grad = float(cross_entropy_gradient_w(z, x, y))
        corners[name] = {
            "w": w, "b": b, "z": float(z), "yhat": float(sigmoid(z)),
            "l2_loss": float(l2_loss(sigmoid(z), y)), "ce_loss": float(cross_entropy_loss(z, y)),
            "l2_grad": l2_grad + 0.0, "ce_grad": ce_grad + 0.0,  # + 0.0 turns -0.0 into 0.0
            # null, not infinity, where the L2 gradient is exactly 0 (JSON has no infinity)
            "ratio_ce_to_l2": abs(ce_grad) / abs(l2_grad) if l2_grad != 0 else None,
        }
    return corners


def measure_1_6(surfaces: dict[str, np.ndarray], extent: float, x: float, y: float) -> dict[str, Any]:
    """The numbers that answer 1.6 (keys in the module docstring); all JSON-ready, none NaN."""
    W, B, z, yhat = surfaces["W"], surfaces["B"], surfaces["z"], surfaces["sigmoid_output"]
    saturated = (yhat < SATURATED) | (yhat > 1.0 - SATURATED)
    return {
        "z_range": [float(z.min()), float(z.max())],
        "saturated_share": float(saturated.mean()),
        "saturation_threshold": SATURATED,
        "losses": {
            "l2": gradient_statistics(surfaces["l2_loss"], surfaces["l2_gradient"], W, B, z, saturated),
            "ce": gradient_statistics(surfaces["ce_loss"], surfaces["ce_gradient"], W, B, z, saturated),
            "relu_l2": gradient_statistics(surfaces["relu_l2_loss"], surfaces["relu_l2_gradient"],
                                           W, B, z, None),
        },
        "corners": corner_values(extent, x, y),
    }


# ---------------------------------------------------------------------------------------------
# main: compute the surfaces, draw 1.1-1.5, Figure 2 and 1.6, measure 1.6, write the JSON.
# ---------------------------------------------------------------------------------------------

L2, CE = r"\mathcal{L}_{L2}", r"\mathcal{L}_{CE}"
# id (a key of neuron_surfaces), question, file name, title, z-axis label, signed, what it shows
SURFACE_FIGURES = [
    ("sigmoid_output", "1.1", "part1_1.1_sigmoid_output.png",
     "1.1  Sigmoid output\n" r"$\hat y = \sigma(wx + b)$", r"output $\hat y$", False,
     "sigmoid output against weight and bias"),
    ("l2_loss", "1.2", "part1_1.2_l2_loss.png",
     "1.2  L2 loss\n" rf"${L2} = (\hat y - y)^2$", "L2 loss", False,
     "L2 loss against weight and bias"),
    ("l2_gradient", "1.3", "part1_1.3_l2_gradient.png",
     "1.3  Gradient of L2 loss\n" rf"$\partial {L2}/\partial w = 2(\hat y - y)\,\hat y(1-\hat y)\,x$",
     rf"$\partial {L2}/\partial w$", True,
     "gradient of the L2 loss with respect to the weight"),
    ("ce_loss", "1.4", "part1_1.4_ce_loss.png",
     "1.4  Cross-entropy loss\n" rf"${CE} = -(y\log\hat y + (1-y)\log(1-\hat y))$", "CE loss", False,
     "cross-entropy loss against weight and bias"),
    ("ce_gradient", "1.5", "part1_1.5_ce_gradient.png",
     "1.5  Gradient of cross-entropy loss\n" rf"$\partial {CE}/\partial w = (\hat y - y)\,x$",
     rf"$\partial {CE}/\partial w$", True,
     "gradient of the cross-entropy loss with respect to the weight"),
    ("relu_output", "figure 2", "part1_fig2_relu_output.png",
     "Figure 2: ReLU output\n" r"$\hat y = \max(0,\, wx + b)$", r"output $\hat y$", False,
     "ReLU output, as the handout's Figure 2 (left)"),
    ("relu_l2_loss", "figure 2", "part1_fig2_relu_l2_loss.png",
     "Figure 2: L2 loss of ReLU\n" rf"${L2} = (\hat y - y)^2$", "L2 loss", False,
     "L2 loss of the ReLU neuron, as the handout's Figure 2 (middle)"),
    ("relu_l2_gradient", "figure 2", "part1_fig2_relu_l2_gradient.png",
     "Figure 2: gradient of L2 loss of ReLU\n" rf"$\partial {L2}/\partial w = 2(\hat y - y)\,[wx+b>0]\,x$",
     rf"$\partial {L2}/\partial w$", True,
     "gradient of the ReLU neuron's L2 loss, as the handout's Figure 2 (right)"),
]
COMPARISON_FIGURE = ("comparison", "1.6", "part1_1.6_loss_and_gradient_vs_z.png",
                     "both losses and gradient magnitudes against z = wx + b, log scale")
RESULTS_FILE = "part1_loss_gradient.json"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_out_dir(args.out)
    surfaces = neuron_surfaces(args.extent, args.grid, args.x, args.y)

    # 1.1-1.5 and Figure 2: one surface each.
    figures = []
    for key, question, name, title, zlabel, signed, shows in SURFACE_FIGURES:
        save_figure(args.out / name, surface_figure, surfaces["W"], surfaces["B"], surfaces[key], title,
                    zlabel, signed)
        figures.append({"id": key, "question": question, "file": name, "shows": shows})
        print(f"wrote {args.out / name}")

    # 1.6: the picture and the numbers.
    key, question, name, shows = COMPARISON_FIGURE
    z = surfaces["z"]
    save_figure(args.out / name, comparison_figure, (float(z.min()), float(z.max())), args.x, args.y)
    figures.insert(5, {"id": key, "question": question, "file": name, "shows": shows})  # after 1.5
    print(f"wrote {args.out / name}")
    results = {
        "config": {"extent": args.extent, "grid": args.grid, "x": args.x, "y": args.y},
        "versions": library_versions(),
        "figures": figures,
        **measure_1_6(surfaces, args.extent, args.x, args.y),
    }
    write_json(args.out / RESULTS_FILE, results)
    print(f"wrote {args.out / RESULTS_FILE}")
    print_summary(results)
    return 0


def print_summary(results: dict[str, Any]) -> None:
    """The 1.6 numbers in a few lines."""
    config, losses = results["config"], results["losses"]
    print(f"\n1.6 summary (x = {config['x']:g}, y = {config['y']:g}, w and b in "
          f"[{-config['extent']:g}, {config['extent']:g}], {config['grid']}^2 points, "
          f"{results['saturated_share']:.0%} of them saturated):")
    for key, label in (("l2", "L2"), ("ce", "CE")):
        stats = losses[key]
        mean_saturated = stats["grad_abs_mean_saturated"]
        print(f"  {label}: loss {stats['loss_min']:.3g}..{stats['loss_max']:.3g}; "
              f"max |dL/dw| {stats['grad_abs_max']:.4g} at |z| = {abs(stats['grad_abs_max_z']):.3g}; "
              f"|dL/dw| < 1% of max on {stats['share_grad_below_1pct']:.0%} of the grid; "
              "mean |dL/dw| where saturated "
              + ("n/a" if mean_saturated is None else f"{mean_saturated:.3g}"))
    for name, corner in results["corners"].items():
        ratio = corner["ratio_ce_to_l2"]
        print(f"  corner {name} (z = {corner['z']:g}): dL2/dw = {corner['l2_grad']:.3g}, "
              f"dCE/dw = {corner['ce_grad']:.4g}, |CE|/|L2| = "
              + ("n/a (L2 gradient is 0)" if ratio is None else f"{ratio:,.0f}" if ratio < 1e6
                 else f"{ratio:.3g}"))


# =============================================================================================
# Plumbing, fenced off (parts 2 and 3 import it: the zip holds only the four scripts). One-line
# errors, signals that stop a run cleanly, files written whole or not at all.
# =============================================================================================


class InputError(Exception):
    """Bad input from the user (a flag, a data file, an output folder): one line naming it."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP; `signum` gives the exit status 128 + signum."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.signum = signum


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`prog: error: ...`) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise InputError(message)


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a script's `main`: bad input -> one line, exit 2; Ctrl-C/SIGTERM/SIGHUP -> one line, exit
    128 + signal (worker processes end with the parent); a closed stdout -> quiet exit; an unwritable
    output -> one line, exit 1. Never a traceback for these."""
    prog = Path(sys.argv[0]).name if argv is None else "main"
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupted)
    try:
        return main(argv)
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
        print(f"{prog}: interrupted ({signal.Signals(signum).name}); files written before stay whole",
              file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except OSError as err:
        print(f"{prog}: error: cannot write {err.filename or 'the output'}: {err.strerror}", file=sys.stderr)
        return 1


def positive(kind: type = float) -> Callable[[str], Any]:
    """argparse type: a finite number of `kind` that is > 0."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


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
    """argparse type: a number in [0, 1] (a probability or a share)."""
    value = finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must lie in [0, 1]")
    return value


TEMP_MARK = ".tmp-"  # temporary files are .<name>.tmp-XXXX: hidden, and recognisable as ours


def check_out_dir(out: Path) -> None:
    """Before any work: --out is (or can be made) a writable folder. Removes temporary files that a
    killed run left there (a run stopped by a signal removes its own)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(f".*{TEMP_MARK}*"):
            stale.unlink(missing_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe" + TEMP_MARK, dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputError(f"--out {out}: not a writable folder ({err.strerror})") from None


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` through a temporary file in the same folder, then rename it into place: an error
    or a signal mid-write leaves the previous file whole and no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write `data` as deterministic JSON (sorted keys, fixed indent), atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_figure(path: Path, draw: Callable[..., Any], *args: Any) -> bool:
    """fig = draw(*args), saved atomically (no timestamp: same data, same bytes). A figure that cannot
    be drawn for the data at hand is skipped with one line; the run's results are never lost to it."""
    import matplotlib.pyplot as plt

    try:
        fig = draw(*args)
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=200, metadata={"Software": None}))
    except (ValueError, IndexError, ZeroDivisionError, OverflowError, RuntimeError) as err:
        print(f"skipped figure {path.name}: {err}", file=sys.stderr)
        return False
    finally:
        plt.close("all")
    return True


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that made the numbers (metadata: no torch import)."""
    versions = {"python": platform.python_version()}
    for name in ("torch", "numpy", "matplotlib"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


if __name__ == "__main__":
    sys.exit(run_main(main))
