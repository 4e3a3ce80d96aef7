"""Part 1: loss and gradient surfaces of one sigmoid neuron (handout questions 1.1-1.6).

    python part1_loss_gradient.py [--out figures/] [--extent 4] [--x 1] [--y 0.5] [--grid 101]

One neuron (handout Figure 1): input x, weight w, bias b, z = w x + b, output yhat = sigmoid(z),
target y (handout: x = 1, y = 0.5). Top to bottom: the neuron, its two losses and their gradients
(checked against central differences on every run), the surfaces 1.1-1.5 and the handout's Figure 2
(ReLU, L2) over weight w and bias b in [-extent, extent], then 1.6. With x = 1, extent 4 gives z in
[-8, 8]: 41% of the grid is saturated (yhat < 0.05 or > 0.95), where L2 and cross-entropy part
ways (7% at the handout's extent 2), and half of it lies in |z| < 3, where the L2 gradient peaks.
Writes nine PNG figures and part1_loss_gradient.json (sorted keys, no timestamps: same command,
same bytes) into --out. The fenced section at the end is plumbing that parts 2 and 3 import.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.metadata
import json
import os
import platform
import signal
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

os.environ["MPLBACKEND"] = "Agg"  # the scripts only write files: any terminal or notebook works


def _quiet_interrupt(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    """Ctrl-C before run_main (while the libraries load): one line, no traceback (exit status 130)."""
    if issubclass(kind, KeyboardInterrupt):
        print(f"{Path(sys.argv[0]).name}: interrupted while starting; nothing was written", file=sys.stderr)
    else:
        sys.__excepthook__(kind, value, tb)


sys.excepthook = _quiet_interrupt

# ===== Part 1. Everything down to the fence answers the handout's questions 1.1-1.6, in order. =====

SATURATED = 0.05  # the neuron counts as saturated where yhat < 0.05 or yhat > 0.95
# Gradient check by central differences in float64, step h in w: truncation ~ (h x)^2 |L'''(z)|
# ~ 1e-13, rounding ~ 1e-16 |L| / h ~ 1e-10: far below the tolerance (relative to the largest |dL/dw|)
# unless |x| is in the hundreds, where the difference's own truncation error reaches it.
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


def check_gradient(loss: Callable[..., Any], gradient: Callable[..., Any], W: np.ndarray, B: np.ndarray,
                   x: float, y: float, kink: bool = False, h: float = FD_STEP) -> dict[str, Any]:
    """A closed-form dL/dw against the central difference (L(w + h) - L(w - h)) / 2h at every point.
    max_rel_diff = max_abs_diff / the largest |dL/dw| (pointwise ratios mean nothing where dL/dw = 0).
    kink: skip the points whose probes straddle z = 0, where ReLU has no derivative."""
    up, down = W + h, W - h
    numeric = (loss(up * x + B, y) - loss(down * x + B, y)) / (up - down)  # up - down: the step taken
    z = W * x + B
    keep = np.abs(z) > 2.0 * h * abs(x) if kink else np.ones(z.shape, bool)
    max_abs = float(np.abs(gradient(z, x, y) - numeric)[keep].max(initial=0.0))
    scale = float(np.abs(numeric[keep]).max(initial=0.0))
    max_rel = max_abs / scale if scale > 0 else max_abs
    return {"max_abs_diff": max_abs, "max_rel_diff": max_rel, "step": h, "points": int(keep.sum()),
            "tolerance": FD_TOLERANCE, "passed": max_rel <= FD_TOLERANCE}


# 1.1-1.5 and Figure 2: the surfaces over the (weight, bias) grid.

def weight_bias_grid(extent: float, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """W, B of shape (grid, grid) covering [-extent, extent]^2; rows = bias, columns = weight."""
    half = grid // 2
    axis = extent * (np.arange(-half, half + 1) / half)  # exactly symmetric, 0 in the middle
    return tuple(np.meshgrid(axis, axis))


def neuron_surfaces(extent: float, grid: int, x: float, y: float) -> dict[str, np.ndarray]:
    """Every surface of part 1 on the grid, each (grid, grid)."""
    W, B = weight_bias_grid(extent, grid)
    z = W * x + B
    return {"W": W, "B": B, "z": z, "sigmoid_output": sigmoid(z),                  # 1.1
            "l2_loss": l2_loss(sigmoid(z), y), "l2_gradient": l2_gradient_w(z, x, y),  # 1.2, 1.3
            "ce_loss": cross_entropy_loss(z, y), "ce_gradient": cross_entropy_gradient_w(z, x, y),
            "relu_output": relu(z), "relu_l2_loss": l2_loss(relu(z), y),        # Figure 2
            "relu_l2_gradient": relu_l2_gradient_w(z, x, y)}


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
    norm = Normalize(-max(-low, high), max(-low, high)) if signed else Normalize(low, high)
    if signed and low < 0 < high and not 0.5 < -low / high < 2.0:
        norm = TwoSlopeNorm(0.0, low, high)
    surface = ax.plot_surface(W, B, values, cmap="coolwarm", norm=norm, rcount=count, ccount=count,
                              linewidth=0, antialiased=False)
    for axis, bins, name in ((ax.xaxis, 4, "weight $w$"), (ax.yaxis, 4, "bias $b$"), (ax.zaxis, 3, "")):
        axis.set_major_locator(MaxNLocator(bins, steps=[1, 2, 4, 5, 10]))
        axis.set_label_text(name, fontsize=9)
        axis.labelpad = -5
    ax.tick_params(labelsize=8.5, pad=-3)
    ax.tick_params(axis="z", pad=0)
    ax.view_init(elev=28, azim=-60)
    ax.set_box_aspect(None, zoom=0.9)
    fig.suptitle(title, fontsize=9.5, y=0.985, va="top")
    bar = fig.colorbar(surface, cax=fig.add_axes((0.76, 0.2, 0.03, 0.55)), format="{x:g}")
    bar.set_label(label, fontsize=9, labelpad=2)
    bar.ax.tick_params(labelsize=8.5)
    if isinstance(norm, TwoSlopeNorm):  # the two halves have different scales: ticks on each
        ticks = np.append(MaxNLocator(2).tick_values(norm.vmin, 0), MaxNLocator(4).tick_values(0, norm.vmax))
        bar.set_ticks(np.unique(ticks[(ticks >= norm.vmin) & (ticks <= norm.vmax)]))
    return fig


# 1.6: every surface depends on (w, b) only through z = w x + b, so curves against z show exactly
# the values each surface takes on the grid.

def comparison_figure(z_range: tuple[float, float], x: float, y: float) -> Any:
    """Left: both losses against z. Right: |dL/dw| of both, log scale. Saturated bands shaded."""
    import matplotlib.pyplot as plt

    z = np.linspace(z_range[0], z_range[1], 2001)
    grads = {"L2": np.abs(l2_gradient_w(z, x, y)), "CE": np.abs(cross_entropy_gradient_w(z, x, y))}
    fig, (left, right) = plt.subplots(1, 2, figsize=(6.5, 2.8), layout="constrained")
    left.plot(z, l2_loss(sigmoid(z), y), "tab:blue", lw=1.8, label=r"L2 $(\hat y - y)^2$")
    left.plot(z, cross_entropy_loss(z, y), "tab:red", lw=1.8, label="cross-entropy")
    left.set_ylabel("loss")
    left.set_title(f"loss (target $y$ = {y:g})", fontsize=10)
    positive_values = np.concatenate([g[g > 0] for g in grads.values()])
    if positive_values.size:  # log scale: L2's gradient falls by orders of magnitude, CE's does not
        right.set_yscale("log")
        right.set_ylim(positive_values.min() / 3, positive_values.max() * 8)
    for (name, grad), colour in zip(grads.items(), ("tab:blue", "tab:red"), strict=True):
        right.plot(z, grad, colour, lw=1.8, label=rf"$|\partial\mathcal{{L}}_{{{name}}}/\partial w|$")
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
    left.legend(fontsize=8.5, loc="upper center")
    right.legend(fontsize=8.5, loc="lower center")
    fig.suptitle(f"1.6  L2 against cross-entropy along $z = wx + b$ ($x$ = {x:g})", fontsize=11)
    return fig


def gradient_statistics(loss: np.ndarray, grad: np.ndarray, W: np.ndarray, B: np.ndarray,
                        z: np.ndarray, saturated: np.ndarray | None) -> dict[str, Any]:
    """The numbers 1.6 quotes for one loss over the grid; saturated: the sigmoid's mask, None for ReLU."""
    magnitude = np.abs(grad)
    peak = np.unravel_index(int(np.argmax(magnitude)), magnitude.shape)
    largest = float(magnitude[peak])
    stats = {"loss_min": float(loss.min()), "loss_max": float(loss.max()), "grad_abs_max": largest,
             "grad_abs_max_w": float(W[peak]), "grad_abs_max_b": float(B[peak]),
             "grad_abs_max_z": float(z[peak]), "grad_abs_mean": float(magnitude.mean()),
             "share_grad_below_1pct": float((magnitude < 0.01 * largest).mean()),
             "share_grad_below_10pct": float((magnitude < 0.10 * largest).mean())}
    if saturated is not None:
        stats["grad_abs_mean_saturated"] = float(magnitude[saturated].mean()) if saturated.any() else None
    return stats


def corner_values(extent: float, x: float, y: float) -> dict[str, dict[str, float | None]]:
    """Both losses and gradients at the grid's four corners, where |z| is largest (or z = 0)."""
    corners = {}
    for name, (w, b) in {"w_pos_b_pos": (extent, extent), "w_neg_b_neg": (-extent, -extent),
                         "w_pos_b_neg": (extent, -extent), "w_neg_b_pos": (-extent, extent)}.items():
        z = np.float64(w * x + b)
        l2_grad, ce_grad = float(l2_gradient_w(z, x, y)), float(cross_entropy_gradient_w(z, x, y))
        corners[name] = {"w": w, "b": b, "z": float(z), "yhat": float(sigmoid(z)),
                         "l2_loss": float(l2_loss(sigmoid(z), y)), "ce_loss": float(cross_entropy_loss(z, y)),
                         "l2_grad": l2_grad + 0.0, "ce_grad": ce_grad + 0.0,  # + 0.0: -0.0 becomes 0.0
                         # null, not infinity, where the L2 gradient is exactly 0 (JSON has no infinity)
                         "ratio_ce_to_l2": abs(ce_grad) / abs(l2_grad) if l2_grad != 0 else None}
    return corners


def measure_1_6(surfaces: dict[str, np.ndarray], extent: float, x: float, y: float) -> dict[str, Any]:
    """The numbers that answer 1.6, all JSON-ready, none NaN: the range of z, the saturated share of
    the grid, per loss its statistics (gradient_statistics), and the four corners."""
    W, B, z, yhat = surfaces["W"], surfaces["B"], surfaces["z"], surfaces["sigmoid_output"]
    saturated = (yhat < SATURATED) | (yhat > 1.0 - SATURATED)
    return {"z_range": [float(z.min()), float(z.max())], "saturated_share": float(saturated.mean()),
            "saturation_threshold": SATURATED, "corners": corner_values(extent, x, y),
            "losses": {name: gradient_statistics(surfaces[f"{name}_loss"], surfaces[f"{name}_gradient"], W, B,
                                                 z, None if kink else saturated)
                       for name, (_, _, kink) in LOSSES.items()}}


# main: check the gradients, draw 1.1-1.5, 1.6 and Figure 2, measure 1.6, write the JSON.

L2, CE, DW = r"\mathcal{L}_{L2}", r"\mathcal{L}_{CE}", r"/\partial w"
# id (a key of neuron_surfaces), question, title with the formula, colour-bar label, what it shows
SURFACE_FIGURES = [
    ("sigmoid_output", "1.1", r"1.1  Sigmoid output $\hat y = \sigma(wx + b)$", r"output $\hat y$",
     "sigmoid output against weight and bias"),
    ("l2_loss", "1.2", rf"1.2  L2 loss ${L2} = (\hat y - y)^2$", "L2 loss", "L2 loss against weight and bias"),
    ("l2_gradient", "1.3", "1.3  Gradient of L2\n" rf"$\partial {L2}{DW} = 2(\hat y - y)\,\hat y(1-\hat y)\,x$",
     rf"$\partial {L2}{DW}$", "gradient of the L2 loss with respect to the weight"),
    ("ce_loss", "1.4", f"1.4  Cross-entropy loss\n${CE} = -(y\\log\\hat y + (1-y)\\log(1-\\hat y))$",
     "CE loss", "cross-entropy loss against weight and bias"),
    ("ce_gradient", "1.5", rf"1.5  Gradient of CE $\partial {CE}{DW} = (\hat y - y)\,x$", rf"$\partial {CE}{DW}$",
     "gradient of the cross-entropy loss with respect to the weight"),
    ("relu_output", "figure 2", r"Fig. 2  ReLU output $\hat y = \max(0, wx + b)$", r"output $\hat y$",
     "ReLU output, as the handout's Figure 2 (left)"),
    ("relu_l2_loss", "figure 2", rf"Fig. 2  L2 loss of ReLU ${L2} = (\hat y - y)^2$", "L2 loss",
     "L2 loss of the ReLU neuron, as the handout's Figure 2 (middle)"),
    ("relu_l2_gradient", "figure 2", "Fig. 2  Gradient of L2 of ReLU\n" rf"$\partial {L2}{DW} = 2(\hat y - y)"
     r"\,[wx+b>0]\,x$", rf"$\partial {L2}{DW}$",
     "gradient of the ReLU neuron's L2 loss, as the handout's Figure 2 (right)"),
]
COMPARISON_FIGURE = {"id": "comparison", "question": "1.6", "file": "part1_1.6_loss_and_gradient_vs_z.png",
                     "shows": "both losses and gradient magnitudes against z = wx + b, log scale"}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_out_dir(args.out)
    s = neuron_surfaces(args.extent, args.grid, args.x, args.y)
    checks = {name: check_gradient(loss, gradient, s["W"], s["B"], args.x, args.y, kink)
              for name, (loss, gradient, kink) in LOSSES.items()}
    diffs = ", ".join(f"{name} {check['max_rel_diff']:.1e}" for name, check in checks.items())
    verdict = "all" if all(c["passed"] for c in checks.values()) else "NOT all"
    print(f"gradient check, central differences (h = {FD_STEP:g}): largest |closed form - numeric| / "
          f"largest |dL/dw|: {diffs} ({verdict} within {FD_TOLERANCE:g})")
    figures = []
    for key, question, title, label, shows in SURFACE_FIGURES:
        name = f"part1_{question.replace('figure ', 'fig')}_{key}.png"
        save_figure(args.out / name, surface_figure, s["W"], s["B"], s[key], title, label, "gradient" in key)
        figures.append({"id": key, "question": question, "file": name, "shows": shows})
    save_figure(args.out / COMPARISON_FIGURE["file"], comparison_figure,
                (float(s["z"].min()), float(s["z"].max())), args.x, args.y)
    figures.insert(5, COMPARISON_FIGURE)  # after 1.5, before Figure 2
    results = {"config": {"extent": args.extent, "grid": args.grid, "x": args.x, "y": args.y},
               "versions": library_versions(), "figures": figures, "gradient_check": checks,
               **measure_1_6(s, args.extent, args.x, args.y)}
    write_json(args.out / "part1_loss_gradient.json", results)
    print(f"wrote {len(figures)} figures and part1_loss_gradient.json into {args.out}")
    ratio = results["corners"]["w_pos_b_pos"]["ratio_ce_to_l2"]  # the 1.6 numbers in a few lines
    print(f"1.6: {results['saturated_share']:.0%} of the grid saturated; at its corner w = b = extent, "
          "|dCE/dw| / |dL2/dw| = " + ("n/a (dL2/dw = 0)" if ratio is None else f"{ratio:,.4g}"))
    for key, stats in results["losses"].items():
        print(f"  {key}: loss {stats['loss_min']:.3g} to {stats['loss_max']:.3g}, largest |dL/dw| "
              f"{stats['grad_abs_max']:.4g} (at z = {stats['grad_abs_max_z']:g}), mean {stats['grad_abs_mean']:.3g}")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Arguments, all validated here, before anything is computed or written."""
    parser = Parser(prog="part1_loss_gradient.py",
                    description="Part 1: loss and gradient surfaces of one sigmoid neuron (1.1-1.6).")
    parser.add_argument("--out", type=Path, default=Path("figures"), help="output folder (default figures/)")
    parser.add_argument("--extent", type=positive(float), default=4.0,
                        help="weight and bias both run over [-extent, extent] (default 4; at most 1000)")
    parser.add_argument("--x", type=finite_float, default=1.0, help="input to the neuron (default 1)")
    parser.add_argument("--y", type=probability, default=0.5, help="target in [0, 1] (default 0.5)")
    parser.add_argument("--grid", type=int, default=101,
                        help=f"points per axis, odd: w = 0, b = 0 lie on the grid (default 101; 3 to {MAX_GRID})")
    args = parser.parse_args(argv)
    if args.extent > MAX_EXTENT:
        parser.error(f"argument --extent: {args.extent:g} is too large (at most {MAX_EXTENT:g})")
    if abs(args.x) > MAX_ABS_X:
        parser.error(f"argument --x: {args.x:g} is too large (|x| at most {MAX_ABS_X:g})")
    if not 3 <= args.grid <= MAX_GRID or args.grid % 2 == 0:
        parser.error(f"argument --grid: {args.grid} must be an odd integer from 3 to {MAX_GRID}")
    return args


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
        if signal.getsignal(sig) is not signal.SIG_IGN:  # under nohup, SIGHUP stays ignored
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
            with stale.open("rb") as file:
                try:  # a file another run is still writing is locked: leave it
                    fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
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
    try:
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
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    """Write `data` as deterministic JSON (sorted keys, fixed indent), atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_figure(path: Path, draw: Callable[..., Any], *args: Any) -> bool:
    """fig = draw(*args), saved atomically (no timestamp: same data, same bytes). A figure that cannot
    be drawn for the data at hand is skipped with one line; the run's results are never lost to it."""
    import matplotlib.pyplot as plt

    try:
        with warnings.catch_warnings():  # NaN or inf in a diverged run's data: the figure says enough
            warnings.simplefilter("ignore")
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
