"""Tests for part1_loss_gradient.py: the neuron, its losses and closed-form gradients (against torch
autograd and central differences computed here), the gradient check every run makes, the surfaces and
the 1.6 numbers (against values derived here), the figures' sizes and fonts, and the command line: the
JSON written before the figures, signals, simulated Windows and macOS, an unwritable HOME, --quiet,
negative numbers in e-notation, bad flags, and the plumbing the tools import.

Tolerances, all in float64:
- closed form vs torch autograd over whole grids: |ours - torch| <= 1e-15 + 1e-10 |torch|
  (the two differ only in rounding; far out in the tails torch's 1 - sigmoid(z) loses digits
  that ours keeps, which the absolute term covers: those gradients are below 1e-15 anyway);
- closed form vs central finite differences (L(w + h) - L(w - h)) / 2h with h = 1e-6:
  |ours - fd| <= 1e-8 + 1e-6 |fd| (truncation ~h^2 = 1e-12, rounding ~1e-16 / h = 1e-10).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import part1_loss_gradient as p1

import numpy as np
import pytest
import torch

AUTOGRAD_TOL = {"atol": 1e-15, "rtol": 1e-10}
FD_STEP = 1e-6
FD_TOL = {"atol": 1e-8, "rtol": 1e-6}
SIM = Path(__file__).resolve().parents[2] / "shared" / "platform-sim"  # ../shared beside the checkout

FIGURE_FILES = [  # in the report's order: 1.1-1.6, then the handout's Figure 2
    "part1_1.1_sigmoid_output.png", "part1_1.2_l2_loss.png", "part1_1.3_l2_gradient.png",
    "part1_1.4_ce_loss.png", "part1_1.5_ce_gradient.png", "part1_1.6_loss_and_gradient_vs_z.png",
    "part1_fig2_relu_output.png", "part1_fig2_relu_l2_loss.png", "part1_fig2_relu_l2_gradient.png",
]
JSON_KEYS = {"config", "versions", "figures", "z_range", "saturated_share", "saturation_threshold", "losses",
             "corners", "gradient_check"}

# (extent, x, y): the handout's neuron, the extent-50 stress case, other inputs and targets, a tiny input.
CASES = [(4.0, 1.0, 0.5), (50.0, 1.0, 0.5), (3.0, -2.0, 0.9), (6.0, 0.5, 0.0), (2.0, 1.5, 1.0), (4.0, -1e-3, 0.3)]


def grid(extent: float, points: int) -> tuple[np.ndarray, np.ndarray]:
    """W, B as the handout's plots lay them out (rows = bias, columns = weight), built here."""
    axis = np.linspace(-extent, extent, points)
    return np.meshgrid(axis, axis)


def torch_losses(z: torch.Tensor, y: float) -> dict[str, torch.Tensor]:
    """The three losses as torch writes them, per point."""
    target = torch.full_like(z, y)
    return {"l2": (torch.sigmoid(z) - target) ** 2,
            "ce": torch.nn.functional.binary_cross_entropy_with_logits(z, target, reduction="none"),
            "relu_l2": (torch.relu(z) - target) ** 2}


def torch_surfaces(W: np.ndarray, B: np.ndarray, x: float, y: float) -> dict[str, np.ndarray]:
    """Every loss and its dL/dw by torch autograd (each point is its own neuron; sum = no mixing)."""
    out = {}
    for name in ("l2", "ce", "relu_l2"):
        w = torch.tensor(W, dtype=torch.float64, requires_grad=True)
        loss = torch_losses(w * x + torch.tensor(B, dtype=torch.float64), y)[name]
        loss.sum().backward()
        out[f"{name}_loss"], out[f"{name}_gradient"] = loss.detach().numpy(), w.grad.numpy()
    return out


def textbook_losses(z: np.ndarray, y: float) -> dict[str, np.ndarray]:
    """The handout's formulas written out plainly (exact to ~1e-10 for |z| <= 8; infinite CE beyond ~37)."""
    yhat = 1.0 / (1.0 + np.exp(-z))
    return {"l2": (yhat - y) ** 2, "ce": -(y * np.log(yhat) + (1 - y) * np.log(1 - yhat)),
            "relu_l2": (np.maximum(z, 0.0) - y) ** 2}


def l2_gradient_by_hand(z: float, x: float, y: float) -> float:
    """dL2/dw for one point by torch autograd."""
    w = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    ((torch.sigmoid(w * x + (z - x)) - y) ** 2).backward()
    return float(w.grad)


# The neuron, its losses and their gradients


def test_neuron_and_losses_equal_torch_and_the_handouts_formulas() -> None:
    z = np.concatenate([np.linspace(-100, 100, 2001), [-1e6, 1e6, -745.0, 745.0]])
    zt = torch.tensor(z)
    np.testing.assert_allclose(p1.sigmoid(z), torch.sigmoid(zt).numpy(), rtol=1e-15, atol=1e-320)
    np.testing.assert_array_equal(p1.relu(z), torch.relu(zt).numpy())
    for y in (0.0, 0.3, 0.5, 1.0):
        expected = {name: loss.numpy() for name, loss in torch_losses(zt, y).items()}
        np.testing.assert_allclose(p1.l2_loss(p1.sigmoid(z), y), expected["l2"], rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(p1.cross_entropy_loss(z, y), expected["ce"], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(p1.l2_loss(p1.relu(z), y), expected["relu_l2"], rtol=1e-15)
        inner = np.abs(z) <= 8  # beyond, log(1 - yhat) loses digits to rounding
        handout = textbook_losses(z[inner], y)
        np.testing.assert_allclose(p1.cross_entropy_loss(z[inner], y), handout["ce"], rtol=1e-10, atol=1e-12)
    # The handout's formula for CE breaks at |z| ~ 37 (1 - sigmoid(z) rounds to 0); ours stays exact:
    # log(2 cosh(z/2)) ~ |z|/2 for y = 1/2.
    assert p1.cross_entropy_loss(np.float64(1e6), 0.5) == pytest.approx(5e5, rel=1e-15)
    with np.errstate(divide="ignore"):
        assert np.isinf(textbook_losses(np.float64(100.0), 0.5)["ce"])


@pytest.mark.parametrize(("extent", "x", "y"), CASES)
def test_closed_form_gradients_equal_torch_autograd_over_a_grid(extent: float, x: float, y: float) -> None:
    W, B = grid(extent, 41)
    z = W * x + B
    expected = torch_surfaces(W, B, x, y)
    np.testing.assert_allclose(p1.l2_gradient_w(z, x, y), expected["l2_gradient"], **AUTOGRAD_TOL)
    np.testing.assert_allclose(p1.cross_entropy_gradient_w(z, x, y), expected["ce_gradient"], **AUTOGRAD_TOL)
    np.testing.assert_allclose(p1.relu_l2_gradient_w(z, x, y), expected["relu_l2_gradient"], **AUTOGRAD_TOL)


@pytest.mark.parametrize(("extent", "x", "y"), [case for case in CASES if case[0] <= 6])
def test_closed_form_gradients_equal_central_differences_of_the_handouts_formulas(
        extent: float, x: float, y: float) -> None:
    rng = np.random.default_rng(581)
    w = np.concatenate([rng.uniform(-extent, extent, 40), [extent, -extent, extent, -extent, 0.3]])
    b = np.concatenate([rng.uniform(-extent, extent, 40), [extent, -extent, -extent, extent, -0.1]])
    h = FD_STEP / min(abs(x), 1.0)  # the step in z stays 1e-6 for the tiny input
    up, down = textbook_losses((w + h) * x + b, y), textbook_losses((w - h) * x + b, y)
    fd = {name: (up[name] - down[name]) / (2 * h) for name in up}
    z = w * x + b
    scale = {name: max(np.abs(fd[name]).max(), 1e-300) for name in fd}  # the tiny input's gradients are tiny
    np.testing.assert_allclose(p1.l2_gradient_w(z, x, y) / scale["l2"], fd["l2"] / scale["l2"], **FD_TOL)
    np.testing.assert_allclose(p1.cross_entropy_gradient_w(z, x, y) / scale["ce"], fd["ce"] / scale["ce"], **FD_TOL)
    away_from_kink = np.abs(z) > 1e-3  # relu has no derivative at z = 0
    np.testing.assert_allclose((p1.relu_l2_gradient_w(z, x, y) / scale["relu_l2"])[away_from_kink],
                               (fd["relu_l2"] / scale["relu_l2"])[away_from_kink], **FD_TOL)


def test_ce_gradient_is_at_least_twice_the_l2_gradient_everywhere() -> None:
    # |dCE/dw| / |dL2/dw| = 1 / (2 yhat (1 - yhat)) >= 2: the fact behind 1.6, checked on a grid.
    W, B = grid(6.0, 101)
    for x, y in ((1.0, 0.5), (-2.0, 0.9), (0.5, 0.0)):
        z = W * x + B
        l2, ce = np.abs(p1.l2_gradient_w(z, x, y)), np.abs(p1.cross_entropy_gradient_w(z, x, y))
        assert (ce >= 2 * l2 * (1 - 1e-12)).all()


# The gradient check every run makes and records (part1_loss_gradient.json: gradient_check)


def check(name: str, x: float = 1.0, y: float = 0.5, gradient=None, kink=None, extent: float = 4.0):
    loss, closed_form, has_kink = p1.LOSSES[name]
    W, B = grid(extent, 101)
    return p1.check_gradient(loss, gradient or closed_form, W, B, x, y, has_kink if kink is None else kink)


@pytest.mark.parametrize(("extent", "x", "y"), CASES)
def test_gradient_check_passes_for_the_closed_forms_with_a_step_of_1e_6_in_z(extent: float, x: float,
                                                                             y: float) -> None:
    for name in ("l2", "ce", "relu_l2"):
        result = check(name, x, y, extent=extent)
        assert result["passed"] and result["max_rel_diff"] < 1e-6, (name, result)
        assert result["tolerance"] == 1e-6
        assert result["step"] * min(abs(x), 1.0) == pytest.approx(1e-6, rel=1e-12)  # in w: 1e-3 for x = 1e-3


@pytest.mark.parametrize("name", ["l2", "ce", "relu_l2"])
def test_gradient_check_catches_a_gradient_off_by_a_tenth_of_a_percent(name: str) -> None:
    closed_form = p1.LOSSES[name][1]
    result = check(name, gradient=lambda z, x, y: 1.001 * closed_form(z, x, y))
    assert not result["passed"]
    # max |0.001 g - (fd - g)| = 0.001 max |g| up to the check's own error (< 1e-8 relative)
    assert result["max_rel_diff"] == pytest.approx(1e-3, rel=1e-4)


def test_gradient_check_catches_a_missing_chain_rule_factor() -> None:
    # Forgetting the input x (here -2): the sign flips and the size halves, so the difference is
    # 1.5 times the largest |dL/dw|. Forgetting the factor 2 of L2: half of it.
    result = check("ce", x=-2.0, gradient=lambda z, x, y: p1.sigmoid(z) - y)
    assert not result["passed"] and result["max_rel_diff"] == pytest.approx(1.5, rel=1e-6)
    result = check("l2", gradient=lambda z, x, y: p1.l2_gradient_w(z, x, y) / 2)
    assert not result["passed"] and result["max_rel_diff"] == pytest.approx(0.5, rel=1e-6)


def test_gradient_check_skips_only_the_relu_kink() -> None:
    # With x = 1 the grid's anti-diagonal w = -b (101 points) has z = 0 exactly; there the probes
    # straddle the kink: ((h - y)^2 - y^2) / 2h = -y + h/2, against the closed form's 0. Relative to
    # the largest |dL/dw| = 2 (8 - y) at the corner z = 8 that is y / (2 (8 - y)) = 1/30 for y = 1/2.
    kept = check("relu_l2")
    assert kept["points"] == 101 * 101 - 101 and kept["passed"]
    unguarded = check("relu_l2", kink=False)
    assert unguarded["points"] == 101 * 101 and not unguarded["passed"]
    assert unguarded["max_rel_diff"] == pytest.approx(1 / 30, rel=1e-5)
    assert check("l2")["points"] == check("ce")["points"] == 101 * 101  # smooth: every point


def test_gradient_check_of_a_flat_surface_is_zero() -> None:
    # x = 0: z = b does not depend on w, so every gradient and every difference is exactly 0.
    for name in ("l2", "ce", "relu_l2"):
        result = check(name, x=0.0)
        assert result["max_abs_diff"] == result["max_rel_diff"] == 0.0 and result["passed"]


# The surfaces and the numbers 1.6 quotes


def test_surfaces_lie_on_a_symmetric_grid_with_bias_down_the_rows_and_equal_torch() -> None:
    s = p1.neuron_surfaces(3.0, 7, -2.0, 0.9)
    axis = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    assert s["W"].tolist() == [axis] * 7  # columns = weight, exact: w = 0 and the ends on the grid
    assert s["B"].T.tolist() == [axis] * 7  # rows = bias
    expected = torch_surfaces(s["W"], s["B"], -2.0, 0.9)
    z = torch.tensor(s["W"] * -2.0 + s["B"])
    np.testing.assert_array_equal(s["z"], z.numpy())
    np.testing.assert_allclose(s["sigmoid_output"], torch.sigmoid(z).numpy(), rtol=1e-15)
    np.testing.assert_array_equal(s["relu_output"], torch.relu(z).numpy())
    for key, values in expected.items():
        np.testing.assert_allclose(s[key], values, rtol=1e-12, atol=1e-15, err_msg=key)


def test_the_1_6_numbers_at_the_handouts_neuron_match_values_derived_here() -> None:
    results = p1.measure_1_6(p1.neuron_surfaces(4.0, 101, 1.0, 0.5))
    z_grid = np.round(np.arange(-100, 101) * 0.08, 12)  # z = w + b on the grid: multiples of 8/100
    # 1.3's ridge and trough: |dL2/dw| = 2 |yhat - 1/2| yhat (1 - yhat) peaks at |z| = 1.317 (found by a fine
    # scan); the grid's z nearest to it is 1.28. The ridge is at +1.28 (yhat > y), the trough at -1.28.
    fine = np.linspace(0.0, 4.0, 400_001)  # the slope of the textbook L2 by differences, every 1e-5
    peak = fine[np.argmax(np.abs(textbook_losses(fine + 1e-6, 0.5)["l2"] - textbook_losses(fine - 1e-6, 0.5)["l2"]))]
    assert peak == pytest.approx(1.317, abs=1e-3)
    nearest = float(z_grid[np.argmin(np.abs(z_grid - peak))])
    assert nearest == pytest.approx(1.28)
    l2 = results["losses"]["l2"]
    assert l2["grad_max_z"] == pytest.approx(nearest) and l2["grad_min_z"] == pytest.approx(-nearest)
    assert l2["grad_max"] == pytest.approx(l2_gradient_by_hand(nearest, 1.0, 0.5), rel=1e-12)
    assert l2["grad_min"] == pytest.approx(-l2["grad_max"], rel=1e-12)
    assert l2["grad_abs_max"] == pytest.approx(l2["grad_max"], rel=1e-12)
    assert abs(l2["grad_abs_max_z"]) == pytest.approx(nearest)
    assert l2["loss_min"] == 0.0 and l2["loss_max"] == pytest.approx((1 / (1 + np.exp(-8)) - 0.5) ** 2)
    ce = results["losses"]["ce"]
    assert ce["loss_min"] == pytest.approx(np.log(2.0))  # the target's own entropy: CE's floor at y = 1/2
    assert ce["grad_max"] == pytest.approx(1 / (1 + np.exp(-8)) - 0.5) and ce["grad_max_z"] == 8.0
    relu = results["losses"]["relu_l2"]  # 2 (relu(z) - 1/2) [z > 0]: largest at z = 8, smallest at z = 0.08
    assert relu["grad_max"] == pytest.approx(15.0) and relu["grad_min"] == pytest.approx(-0.84)
    assert relu["grad_min_z"] == pytest.approx(0.08) and "grad_abs_mean_saturated" not in relu
    assert ce["grad_abs_mean_saturated"] > 30 * l2["grad_abs_mean_saturated"]

    # saturated: yhat < 0.05 or > 0.95, i.e. |z| > ln 19 = 2.944; z = w + b over the 101 x 101 grid
    W, B = grid(4.0, 101)
    assert results["saturated_share"] == pytest.approx((np.abs(W + B) > np.log(19.0)).mean(), abs=1e-12)
    assert results["z_range"] == [-8.0, 8.0]
    for name, (w, b) in {"w_pos_b_pos": (4, 4), "w_neg_b_neg": (-4, -4), "w_pos_b_neg": (4, -4),
                         "w_neg_b_pos": (-4, 4)}.items():
        expected = {key: float(v[0, 0]) for key, v in torch_surfaces(np.array([[w]]), np.array([[b]]), 1, 0.5).items()}
        corner = results["corners"][name]
        assert (corner["w"], corner["b"], corner["z"]) == (w, b, w + b)
        assert corner["yhat"] == pytest.approx(1 / (1 + np.exp(-(w + b))), rel=1e-12)
        for key in ("l2_loss", "ce_loss"):
            assert corner[key] == pytest.approx(expected[key], rel=1e-12)
        for ours, theirs in (("l2_grad", "l2_gradient"), ("ce_grad", "ce_gradient")):
            assert corner[ours] == pytest.approx(expected[theirs], rel=1e-10, abs=1e-15)
        if w + b:  # |dCE/dw| / |dL2/dw| = 1 / (2 yhat (1 - yhat)): 1,491 at z = 8
            yhat = 1 / (1 + np.exp(-(w + b)))
            assert corner["ratio_ce_to_l2"] == pytest.approx(1 / (2 * yhat * (1 - yhat)), rel=1e-9)
        else:  # z = 0: yhat = y, both gradients vanish: no ratio
            assert corner["ratio_ce_to_l2"] is None and corner["l2_grad"] == corner["ce_grad"] == 0.0


def test_measurements_at_extent_50_are_finite_and_json_ready() -> None:
    surfaces = p1.neuron_surfaces(50.0, 101, 1.0, 0.5)
    results = p1.measure_1_6(surfaces)
    json.dumps(results, allow_nan=False)  # what write_json does: fails on NaN or infinity
    assert results["losses"]["ce"]["loss_max"] == pytest.approx(50.0)
    corner = results["corners"]["w_pos_b_pos"]
    assert corner["l2_grad"] == pytest.approx(np.exp(-100), rel=1e-6)  # tiny but not rounded to 0
    assert corner["ratio_ce_to_l2"] > 1e40
    for surface in surfaces.values():
        assert np.isfinite(surface).all()


# The figures, sized for the report: surfaces at half the text width, the 1.6 comparison at full width


def png_size(path: Path) -> tuple[int, int]:
    """Width and height in pixels from the PNG header (IHDR)."""
    return struct.unpack(">II", path.read_bytes()[16:24])


def texts_inside(fig) -> list:
    """The texts a drawn figure shows (titles, axis labels, the tick labels in view, legends, notes),
    each checked to lie whole inside the canvas: nothing clipped."""
    renderer = fig.canvas.get_renderer()
    width, height = fig.canvas.get_width_height()
    texts = list(fig.texts)
    for ax in fig.axes:
        texts += [ax.title, *ax.texts, *(ax.get_legend().get_texts() if ax.get_legend() else [])]
        for axis in (ax.xaxis, ax.yaxis, getattr(ax, "zaxis", None)):
            if axis is None:
                continue
            low, high = sorted(axis.get_view_interval())
            texts += [axis.label] + [label for tick in axis.get_major_ticks() if low <= tick.get_loc() <= high
                                     for label in (tick.label1, tick.label2)]
    texts = [t for t in texts if t.get_visible() and t.get_text().strip()]
    for text in texts:
        box = text.get_window_extent(renderer)
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= width + 1 and box.y1 <= height + 1, text.get_text()
    return texts


@pytest.mark.parametrize("key", ["l2_gradient", "ce_loss", "relu_l2_gradient"])  # the longest titles
def test_surface_figure_is_3_2_inches_wide_with_fonts_of_8_5_pt_or_more_and_nothing_clipped(key: str) -> None:
    import matplotlib.pyplot as plt

    spec = next(f for f in p1.FIGURES if f["id"] == key)
    surfaces = p1.neuron_surfaces(4.0, 101, 1.0, 0.5)
    fig = p1.surface_figure(surfaces["W"], surfaces["B"], surfaces[key], spec["title"], spec["label"],
                            "gradient" in key)
    try:
        assert fig.get_size_inches()[0] == pytest.approx(3.2)
        fig.canvas.draw()
        texts = texts_inside(fig)
        assert any(t.get_text() == spec["label"] for t in texts)  # the colour bar names the quantity
        assert min(t.get_fontsize() for t in texts) >= 8.5
    finally:
        plt.close(fig)


def test_comparison_figure_is_6_5_inches_wide_with_fonts_of_8_5_pt_or_more_and_nothing_clipped() -> None:
    import matplotlib.pyplot as plt

    fig = p1.comparison_figure((-8.0, 8.0), 1.0, 0.5)
    try:
        assert fig.get_size_inches()[0] == pytest.approx(6.5)
        fig.canvas.draw()
        texts = texts_inside(fig)
        assert min(t.get_fontsize() for t in texts) >= 8.5
        # the ratio it marks is |dCE/dw| / |dL2/dw| = 1 / (2 yhat (1 - yhat)) at z = 8
        yhat = 1 / (1 + np.exp(-8.0))
        assert any(f"CE/L2 = {1 / (2 * yhat * (1 - yhat)):,.0f}×" in t.get_text() for t in texts)
    finally:
        plt.close(fig)


# The command line: one run in this process, and two as students on other systems would start them
# (simulated where ../shared/platform-sim is there, plain otherwise), started with the module's first
# test so that they run beside the tests in this process.


def script_env(sim: str | None = None, **extra: str) -> dict[str, str]:
    """The environment for running the script: a simulated system's start-up module on PYTHONPATH."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "MPLCONFIGDIR")}
    if sim is not None:
        env["PYTHONPATH"] = str(SIM / sim)
    return {**env, **extra}


def start_script(repo_root: Path, args: list[str], env: dict[str, str], limit: int | None = None) -> subprocess.Popen:
    """part1_loss_gradient.py as a subprocess; limit: a `ulimit -n` to run it under (macOS's is 256)."""
    command = [sys.executable, str(repo_root / "part1_loss_gradient.py"), *args]
    if limit is not None:
        command = ["bash", "-c", f'ulimit -n {limit} && exec "$@"', "bash", *command]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(run: subprocess.Popen, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Wait for a started script (no run may hang: killed after `timeout` s) and return what it printed."""
    try:
        out, err = run.communicate(timeout=timeout)
    finally:
        run.kill()
    return subprocess.CompletedProcess(run.args, run.returncode, out, err)


@pytest.fixture(scope="module", autouse=True)
def elsewhere(tmp_path_factory: pytest.TempPathFactory, repo_root: Path):
    """Two runs at --grid 21 --quiet: under simulated Windows; and on a student's locked-down Mac, under
    simulated macOS with `ulimit -n 256`, HOME below a file (unwritable even for root), TMPDIR a fresh
    folder (to see what is left there) and an input in e-notation, --x -1e-3."""
    windows, mac = tmp_path_factory.mktemp("windows"), tmp_path_factory.mktemp("mac")
    (mac / "a_file").write_text("")
    (mac / "tmp").mkdir()
    sims = {name: name if (SIM / name).is_dir() else None for name in ("windows", "macos")}
    started = {
        "windows": start_script(repo_root, ["--out", str(windows / "figs"), "--grid", "21", "--quiet"],
                                script_env(sims["windows"])),
        "mac": start_script(repo_root, ["--out", str(mac / "figs"), "--grid", "21", "--quiet", "--x", "-1e-3"],
                            script_env(sims["macos"], HOME=str(mac / "a_file" / "home"), TMPDIR=str(mac / "tmp"),
                                       XDG_CONFIG_HOME="", XDG_CACHE_HOME=""), limit=256)}
    finished: dict[str, subprocess.CompletedProcess[str]] = {}

    def result(name: str) -> subprocess.CompletedProcess[str]:
        if name not in finished:
            finished[name] = finish(started[name])
        return finished[name]

    yield {"windows": windows, "mac": mac, "sims": sims, "result": result}
    for name, run in started.items():  # one no test waited for (a test failed first): stopped, not left
        if name not in finished:
            run.kill()
            finish(run)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, elsewhere: dict) -> dict:
    """The CLI at --grid 21 in this process (printing kept), and the simulated Windows run with --quiet."""
    here = tmp_path_factory.mktemp("here") / "figs"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert p1.run_main(p1.main, ["--out", str(here), "--grid", "21"]) == 0
    return {"here": here, "printed": printed.getvalue(), "windows": elsewhere["windows"] / "figs",
            "quiet": elsewhere["result"]("windows"), "sim": elsewhere["sims"]["windows"]}


def test_cli_writes_the_json_and_every_figure_it_lists_and_nothing_else(runs: dict) -> None:
    out = runs["here"]
    assert sorted(path.name for path in out.iterdir()) == sorted([*FIGURE_FILES, "part1_loss_gradient.json"])
    results = json.loads((out / "part1_loss_gradient.json").read_text())
    assert set(results) == JSON_KEYS
    assert results["config"] == {"extent": 4.0, "grid": 21, "x": 1.0, "y": 0.5, "dtype": "float64"}
    import matplotlib

    assert results["versions"] == {"python": ".".join(map(str, sys.version_info[:3])), "numpy": np.__version__,
                                   "matplotlib": matplotlib.__version__}
    assert [f["file"] for f in results["figures"]] == FIGURE_FILES
    assert [f["question"] for f in results["figures"]] == ["1.1", "1.2", "1.3", "1.4", "1.5", "1.6", *["figure 2"] * 3]
    for figure in results["figures"]:
        assert set(figure) == {"id", "question", "file", "shows"} and figure["shows"]
        width, height = png_size(out / figure["file"])
        assert width == (1300 if figure["id"] == "comparison" else 640), figure  # 6.5 in and 3.2 in at 200 dpi
        assert height < width, figure
    for name, recorded in results["gradient_check"].items():
        assert recorded["passed"] and 0 < recorded["max_rel_diff"] < 1e-6, name
        assert recorded["points"] == 21 * 21 - (21 if name == "relu_l2" else 0)  # the kink: z = 0 on w = -b
    assert results["losses"]["l2"]["grad_max_z"] == pytest.approx(1.2)  # 21 points: z in steps of 0.4


def test_cli_prints_the_check_and_1_6_and_quiet_drops_only_the_progress_line(runs: dict) -> None:
    lines = runs["printed"].splitlines()
    results = json.loads((runs["here"] / "part1_loss_gradient.json").read_text())
    checks = results["gradient_check"]
    assert lines[0].startswith("gradient check, central differences (h = 1e-06)") and "all within 1e-06" in lines[0]
    for name, recorded in checks.items():
        assert f"{name} {recorded['max_rel_diff']:.1e}" in lines[0]
    assert lines[1].startswith(f"1.6: {results['saturated_share']:.0%} of the grid saturated")
    assert [line.split(":")[0].strip() for line in lines[2:5]] == ["l2", "ce", "relu_l2"]
    progress = f"wrote part1_loss_gradient.json; drawing 9 figures into {runs['here']}"
    assert lines[5:] == [progress, f"wrote 9 figures and part1_loss_gradient.json into {runs['here']}"]
    quiet = runs["quiet"]
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    expected = [line.replace(str(runs["here"]), str(runs["windows"])) for line in lines if line != progress]
    assert quiet.stdout.splitlines() == expected


def test_cli_outputs_are_byte_identical_across_runs_and_systems(runs: dict) -> None:
    for name in [*FIGURE_FILES, "part1_loss_gradient.json"]:
        assert (runs["here"] / name).read_bytes() == (runs["windows"] / name).read_bytes(), name


def test_simulated_windows_run_finishes_without_fcntl_or_sighup(runs: dict) -> None:
    if runs["sim"] is None:
        pytest.skip(f"no simulated Windows at {SIM}")
    assert runs["quiet"].returncode == 0 and runs["quiet"].stderr == ""
    written = sorted(path.name for path in runs["windows"].iterdir())
    assert written == sorted([*FIGURE_FILES, "part1_loss_gradient.json"])


@pytest.fixture(scope="module")
def locked_down_mac(elsewhere: dict) -> dict:
    """The locked-down Mac's run (see `elsewhere`)."""
    return {"root": elsewhere["mac"], "result": elsewhere["result"]("mac"), "sim": elsewhere["sims"]["macos"]}


def test_simulated_macos_run_with_256_open_files_finishes(locked_down_mac: dict) -> None:
    if locked_down_mac["sim"] is None:
        pytest.skip(f"no simulated macOS at {SIM}")
    result = locked_down_mac["result"]
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert len(list((locked_down_mac["root"] / "figs").glob("*.png"))) == 9


def test_unwritable_home_gives_no_warning_and_leaves_no_temporary_folder(locked_down_mac: dict) -> None:
    result = locked_down_mac["result"]
    assert result.returncode == 0 and result.stderr == "", result.stderr  # matplotlib warned twice here
    assert list((locked_down_mac["root"] / "tmp").iterdir()) == []  # its settings folder: made there, removed
    results = json.loads((locked_down_mac["root"] / "figs" / "part1_loss_gradient.json").read_text())
    assert len(results["figures"]) == 9


def test_an_input_in_e_notation_runs_and_its_gradient_check_passes(locked_down_mac: dict) -> None:
    results = json.loads((locked_down_mac["root"] / "figs" / "part1_loss_gradient.json").read_text())
    assert results["config"]["x"] == -0.001
    assert all(check["passed"] and check["step"] == pytest.approx(1e-3) for check in results["gradient_check"].values())


def test_json_is_written_before_the_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args):
        raise TypeError("a bug in the figure code")

    monkeypatch.setattr(p1, "surface_figure", broken)
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(TypeError):
        p1.run_main(p1.main, ["--out", str(tmp_path), "--grid", "5"])
    results = json.loads((tmp_path / "part1_loss_gradient.json").read_text())
    assert set(results) == JSON_KEYS and results["figures"] == []
    assert results["gradient_check"]["l2"]["passed"] and results["corners"]["w_pos_b_pos"]["z"] == 8.0
    assert [path.name for path in tmp_path.iterdir()] == ["part1_loss_gradient.json"]  # no temporary file


def test_a_figure_that_cannot_be_drawn_is_skipped_in_one_line_and_not_listed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def cannot(*args):
        raise ValueError("no finite values")

    monkeypatch.setattr(p1, "surface_figure", cannot)
    assert p1.run_main(p1.main, ["--out", str(tmp_path), "--grid", "5"]) == 0
    errors = capsys.readouterr().err.splitlines()
    assert errors == [f"skipped figure {name}: no finite values" for name in FIGURE_FILES if "1.6" not in name]
    listed = json.loads((tmp_path / "part1_loss_gradient.json").read_text())["figures"]
    assert [f["file"] for f in listed] == ["part1_1.6_loss_and_gradient_vs_z.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part1_1.6_loss_and_gradient_vs_z.png",
                                                          "part1_loss_gradient.json"]


def test_sigterm_while_drawing_exits_143_in_one_line_keeping_the_json_whole(tmp_path: Path, repo_root: Path) -> None:
    out = tmp_path / "figs"
    command = [sys.executable, str(repo_root / "part1_loss_gradient.py"), "--out", str(out)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=script_env()) as run:
        for line in run.stdout:  # the JSON is written, the figures (about a second) are being drawn
            if line.startswith("wrote part1_loss_gradient.json; drawing"):
                break
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=30)
    assert run.returncode == 143
    assert err == "part1_loss_gradient.py: interrupted (SIGTERM); files written before stay whole\n"
    results = json.loads((out / "part1_loss_gradient.json").read_text())
    assert set(results) == JSON_KEYS and results["figures"] == []  # the numbers, listing no figure yet
    assert all(path.name in FIGURE_FILES or path.name == "part1_loss_gradient.json" for path in out.iterdir())


@pytest.mark.parametrize(("name", "status"), [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_signals_end_the_run_in_one_line_with_128_plus_the_signal(
        name: str, status: int, capsys: pytest.CaptureFixture[str]) -> None:
    if not hasattr(signal, name):
        pytest.skip(f"no {name} here")
    sig = getattr(signal, name)

    def killed(argv):
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the handler raises at once
        return 0

    def ours(signum, frame):  # a handler the caller had: run_main puts it back
        raise AssertionError("run_main's handler was not in place")

    # SIGINT stays Python's own (KeyboardInterrupt); the others get a handler of the caller's
    original = signal.signal(sig, signal.getsignal(sig) if sig == signal.SIGINT else ours)
    try:
        before = signal.getsignal(sig)
        assert p1.run_main(killed, []) == status
        assert signal.getsignal(sig) is before
    finally:
        signal.signal(sig, original)
    assert capsys.readouterr().err == f"main: interrupted ({name}); files written before stay whole\n"


def test_run_main_returns_mains_status_and_one_line_for_bad_input_and_unwritable_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert p1.run_main(lambda argv: 0, []) == 0
    assert p1.run_main(lambda argv: 3, []) == 3

    def bad_input(argv):
        raise p1.InputError("--thing: must be positive")

    assert p1.run_main(bad_input, []) == 2
    assert capsys.readouterr().err == "main: error: --thing: must be positive\n"

    def parser_error(argv):
        p1.Parser(prog="tool").parse_args(["--nope"])

    assert p1.run_main(parser_error, []) == 2  # the tools' Parser: one line, exit 2
    assert capsys.readouterr().err == "main: error: unrecognized arguments: --nope\n"

    def disk_full(argv):
        p1.atomic_write(tmp_path / "x.json", lambda tmp: (_ for _ in ()).throw(OSError(28, "No space left")))

    assert p1.run_main(disk_full, []) == 1  # names the file, not its temporary
    assert capsys.readouterr().err == f"main: error: cannot write {tmp_path / 'x.json'}: No space left\n"

    def bug(argv):
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):  # a bug is not bad input: it keeps its traceback
        p1.run_main(bug, [])


def test_negative_numbers_in_e_notation_are_values_not_flags(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    for text, value in (("-1e-3", -0.001), ("-2.5E+2", -250.0), ("-.5", -0.5), ("-3", -3.0)):
        assert p1.parse_args(["--x", text, "--out", str(tmp_path)]).x == value
    assert p1.run_main(p1.main, ["--out", str(tmp_path / "y"), "--y", "-1e-3"]) == 2
    assert capsys.readouterr().err == "main: error: argument --y: '-1e-3' must lie in [0, 1]\n"


@pytest.mark.parametrize(("flag", "value"), [
    ("--extent", "0"), ("--extent", "-1"), ("--extent", "abc"), ("--extent", "nan"), ("--extent", "inf"),
    ("--extent", "1e9"), ("--y", "2"), ("--y", "-0.1"), ("--x", "inf"), ("--x", "-1e4"), ("--grid", "1"),
    ("--grid", "2"), ("--grid", "100"), ("--grid", "ten"), ("--grid", "100001"), ("--quiet", "yes"),
])
def test_bad_flags_give_one_line_exit_2_and_write_nothing(flag: str, value: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert p1.run_main(p1.main, ["--out", str(out), flag, value]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("main: error: ") and (flag in lines[0] or value in lines[0])
    assert not out.exists()


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_an_out_that_cannot_be_a_folder_is_refused_and_left_alone(where: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "figures"
    target.write_text("keep me")
    out = target if where == "a file" else target / "sub"
    assert p1.run_main(p1.main, ["--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"main: error: --out {out}: not a writable folder")
    assert target.read_text() == "keep me"


def test_a_read_only_out_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "read_only"
    out.mkdir()
    out.chmod(0o555)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("permissions do not bind here (root)")
        assert p1.run_main(p1.main, ["--out", str(out)]) == 2
        assert capsys.readouterr().err.startswith(f"main: error: --out {out}: not a writable folder")
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)


def test_script_from_the_command_line_bad_flag_and_help(tmp_path: Path, repo_root: Path) -> None:
    result = finish(start_script(repo_root, ["--out", str(tmp_path / "out"), "--extent", "0"], script_env()))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        "part1_loss_gradient.py: error: argument --extent: 0 must be > 0 and at most 1000"]
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as stop, contextlib.redirect_stdout(io.StringIO()) as printed:
        p1.parse_args(["--help"])
    assert stop.value.code == 0
    for flag in ("--out", "--extent", "--x", "--y", "--grid", "--quiet"):
        assert flag in printed.getvalue()


def test_importing_part1_loads_neither_torch_nor_matplotlib_nor_another_part(repo_root: Path) -> None:
    # The tools import InputError, Parser, run_main, write_json and atomic_write from here: light and quick.
    code = ("import sys, part1_loss_gradient as p; "
            "print(all(callable(getattr(p, n)) for n in ('InputError', 'Parser', 'run_main', 'write_json', "
            "'atomic_write')), sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'matplotlib', "
            "'part2_fc', 'part3_line', 'part3_detection')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo_root, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "True []", result.stderr


# Writing files: whole or not at all, and never another run's temporary file removed


def test_write_json_is_deterministic_and_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    p1.write_json(path, {"b": 1, "a": [0.5, None]})
    assert path.read_text() == '{\n  "a": [\n    0.5,\n    null\n  ],\n  "b": 1\n}\n'
    with pytest.raises(ValueError):
        p1.write_json(path, {"a": float("nan")})  # no NaN in JSON

    def interrupted(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt(15)  # SIGTERM mid-write

    with pytest.raises(KeyboardInterrupt):
        p1.atomic_write(path, interrupted)
    assert json.loads(path.read_text()) == {"a": [0.5, None], "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize("locks", [True, False], ids=["fcntl", "no fcntl (Windows)"])
def test_only_a_killed_runs_temporary_files_are_removed(locks: bool, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    if locks and p1.fcntl is None:
        pytest.skip("no fcntl here")
    if not locks:
        monkeypatch.setattr(p1, "fcntl", None)
    path = tmp_path / "part1_loss_gradient.json"
    old = time.time() - 2 * p1.STALE_SECONDS
    temps = {name: tmp_path / f".part1_loss_gradient.json.tmp-{name}" for name in ("killed", "live", "held", "other")}
    for name, temp in temps.items():
        temp.write_text(name)
        if name != "live":  # a live run's temporary is seconds old
            os.utime(temp, (old, old))
    temps["other"].rename(tmp_path / ".other.json.tmp-other")  # another file's: not this write's business
    held = open(temps["held"], "rb")  # noqa: SIM115  a run that is still writing holds its lock
    try:
        if locks:
            p1.fcntl.flock(held, p1.fcntl.LOCK_EX)
        p1.write_json(path, {"a": 1})
    finally:
        held.close()
    left = sorted(p.name for p in tmp_path.iterdir())
    expected = {".other.json.tmp-other", ".part1_loss_gradient.json.tmp-live", "part1_loss_gradient.json"}
    if locks:
        expected.add(".part1_loss_gradient.json.tmp-held")
    assert left == sorted(expected)


def test_two_runs_writing_the_same_file_at_once_never_fail(tmp_path: Path, repo_root: Path) -> None:
    code = ("import sys, part1_loss_gradient as p; from pathlib import Path\n"
            "for i in range(100): p.write_json(Path(sys.argv[1]) / 'r.json', {'writer': sys.argv[2], 'i': i})")
    writers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), name], cwd=repo_root,
                                stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for writer in writers:
        _, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["i"] == 99
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
