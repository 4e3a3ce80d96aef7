"""Tests for part1_loss_gradient.py: closed-form gradients, the built-in gradient check, stable
cross-entropy, figure sizes and fonts, the CLI, run_main.

Tolerances, all in float64:
- closed form vs torch autograd over whole grids: |ours - torch| <= 1e-15 + 1e-10 |torch|
  (the two differ only in rounding; far out in the tails torch's 1 - sigmoid(z) loses digits
  that ours keeps, which the absolute term covers: those gradients are below 1e-15 anyway);
- closed form vs central finite differences (L(w + h) - L(w - h)) / 2h with h = 1e-6:
  |ours - fd| <= 1e-8 + 1e-6 |fd| (truncation ~h^2 = 1e-12, rounding ~1e-16 / h = 1e-10).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import part1_loss_gradient as p1

import numpy as np
import pytest
import torch

AUTOGRAD_TOL = {"atol": 1e-15, "rtol": 1e-10}
FD_STEP = 1e-6
FD_TOL = {"atol": 1e-8, "rtol": 1e-6}

EXPECTED_FILES = {
    "part1_1.1_sigmoid_output.png",
    "part1_1.2_l2_loss.png",
    "part1_1.3_l2_gradient.png",
    "part1_1.4_ce_loss.png",
    "part1_1.5_ce_gradient.png",
    "part1_1.6_loss_and_gradient_vs_z.png",
    "part1_fig2_relu_output.png",
    "part1_fig2_relu_l2_loss.png",
    "part1_fig2_relu_l2_gradient.png",
    "part1_loss_gradient.json",
}

# (extent, x, y): the handout's neuron, the extent-50 stress case, and other inputs and targets.
CASES = [(4.0, 1.0, 0.5), (50.0, 1.0, 0.5), (3.0, -2.0, 0.9), (6.0, 0.5, 0.0), (2.0, 1.5, 1.0)]


def torch_gradients(extent: float, grid: int, x: float, y: float) -> dict[str, np.ndarray]:
    """dL/dw for every grid point by torch autograd (each point is its own neuron; sum = no mixing)."""
    W, B = p1.weight_bias_grid(extent, grid)
    grads = {}
    for name in ("l2", "ce", "relu_l2"):
        w = torch.tensor(W, dtype=torch.float64, requires_grad=True)
        z = w * x + torch.tensor(B, dtype=torch.float64)
        target = torch.full_like(z, y)
        if name == "l2":
            loss = (torch.sigmoid(z) - target) ** 2
        elif name == "ce":
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z, target, reduction="none")
        else:
            loss = (torch.relu(z) - target) ** 2
        loss.sum().backward()
        grads[name] = w.grad.numpy()
    return grads


@pytest.mark.parametrize(("extent", "x", "y"), CASES)
def test_closed_form_gradients_match_autograd_over_the_whole_grid(extent: float, x: float, y: float) -> None:
    W, B = p1.weight_bias_grid(extent, 101)
    z = W * x + B
    expected = torch_gradients(extent, 101, x, y)
    np.testing.assert_allclose(p1.l2_gradient_w(z, x, y), expected["l2"], **AUTOGRAD_TOL)
    np.testing.assert_allclose(p1.cross_entropy_gradient_w(z, x, y), expected["ce"], **AUTOGRAD_TOL)
    np.testing.assert_allclose(p1.relu_l2_gradient_w(z, x, y), expected["relu_l2"], **AUTOGRAD_TOL)


@pytest.mark.parametrize(("extent", "x", "y"), CASES)
def test_closed_form_gradients_match_central_finite_differences(extent: float, x: float, y: float) -> None:
    rng = np.random.default_rng(581)
    w = np.concatenate([rng.uniform(-extent, extent, 40), [extent, -extent, extent, -extent, 0.3]])
    b = np.concatenate([rng.uniform(-extent, extent, 40), [extent, -extent, -extent, extent, -0.1]])
    w_up, w_down = w + FD_STEP, w - FD_STEP

    def fd(loss_of_z):  # d/dw of loss(w x + b), central difference
        return (loss_of_z(w_up * x + b) - loss_of_z(w_down * x + b)) / (2 * FD_STEP)

    z = w * x + b
    np.testing.assert_allclose(p1.l2_gradient_w(z, x, y),
                               fd(lambda t: p1.l2_loss(p1.sigmoid(t), y)), **FD_TOL)
    np.testing.assert_allclose(p1.cross_entropy_gradient_w(z, x, y),
                               fd(lambda t: p1.cross_entropy_loss(t, y)), **FD_TOL)
    away_from_kink = np.abs(z) > 1e-3  # relu has no derivative at z = 0
    np.testing.assert_allclose(p1.relu_l2_gradient_w(z, x, y)[away_from_kink],
                               fd(lambda t: p1.l2_loss(p1.relu(t), y))[away_from_kink], **FD_TOL)


def test_cross_entropy_is_finite_at_extent_50_and_equals_torch() -> None:
    W, B = p1.weight_bias_grid(50.0, 101)
    z = W + B  # x = 1: z runs over [-100, 100]
    ce = p1.cross_entropy_loss(z, 0.5)
    assert np.isfinite(ce).all()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(z), torch.full(z.shape, 0.5, dtype=torch.float64), reduction="none").numpy()
    np.testing.assert_allclose(ce, expected, rtol=1e-12, atol=1e-15)
    assert ce.max() == pytest.approx(50.0, rel=1e-12)  # log(2 cosh(z/2)) ~ |z|/2 at |z| = 100
    # The textbook formula from yhat breaks exactly here: 1 - sigmoid(100) is 0 in float64.
    yhat = p1.sigmoid(np.float64(100.0))
    with np.errstate(divide="ignore"):
        assert np.isinf(-(0.5 * np.log(yhat) + 0.5 * np.log(1 - yhat)))


def test_cross_entropy_equals_the_handout_formula_where_that_is_finite() -> None:
    z = np.linspace(-8, 8, 161)
    for y in (0.0, 0.3, 0.5, 1.0):
        yhat = p1.sigmoid(z)
        handout = -(y * np.log(yhat) + (1 - y) * np.log(1 - yhat))
        np.testing.assert_allclose(p1.cross_entropy_loss(z, y), handout, rtol=1e-10, atol=1e-12)


def test_ce_gradient_is_at_least_twice_the_l2_gradient_everywhere() -> None:
    # |dCE/dw| / |dL2/dw| = 1 / (2 yhat (1 - yhat)) >= 2: the fact behind 1.6, checked on a grid.
    W, B = p1.weight_bias_grid(6.0, 101)
    for x, y in ((1.0, 0.5), (-2.0, 0.9), (0.5, 0.0)):
        z = W * x + B
        l2, ce = np.abs(p1.l2_gradient_w(z, x, y)), np.abs(p1.cross_entropy_gradient_w(z, x, y))
        assert (ce >= 2 * l2 * (1 - 1e-12)).all()


def test_grid_is_symmetric_centred_and_spans_the_extent() -> None:
    W, B = p1.weight_bias_grid(4.0, 101)
    assert W.shape == B.shape == (101, 101)
    assert W[0, 0] == -4.0 and W[0, -1] == 4.0 and B[0, 0] == -4.0 and B[-1, 0] == 4.0
    assert W[0, 50] == 0.0 and B[50, 0] == 0.0
    np.testing.assert_array_equal(W[0], -W[0, ::-1])
    assert (B[:, :1] == B).all()  # rows = bias


# The gradient check that every run makes and records (part1_loss_gradient.json: gradient_check)


def check(name: str, x: float = 1.0, y: float = 0.5, gradient=None, kink=None, extent: float = 4.0):
    loss, closed_form, has_kink = p1.LOSSES[name]
    W, B = p1.weight_bias_grid(extent, 101)
    return p1.check_gradient(loss, gradient or closed_form, W, B, x, y, has_kink if kink is None else kink)


@pytest.mark.parametrize(("extent", "x", "y"), CASES)
def test_gradient_check_passes_for_the_closed_forms(extent: float, x: float, y: float) -> None:
    for name in ("l2", "ce", "relu_l2"):
        result = check(name, x, y, extent=extent)
        assert result["passed"] and result["max_rel_diff"] < 1e-6, (name, result)
        assert result["step"] == p1.FD_STEP == 1e-6 and result["tolerance"] == 1e-6


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


# Figures sized for the report: surfaces at half the text width, the 1.6 comparison at full width


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


@pytest.mark.parametrize("index", [2, 3, 7])  # the longest titles: 1.3, 1.4 and Figure 2's gradient
def test_surface_figure_is_3_2_inches_wide_with_fonts_of_8_5_pt_or_more_and_nothing_clipped(index: int) -> None:
    import matplotlib.pyplot as plt

    key, _, title, label, _ = p1.SURFACE_FIGURES[index]
    surfaces = p1.neuron_surfaces(4.0, 101, 1.0, 0.5)
    fig = p1.surface_figure(surfaces["W"], surfaces["B"], surfaces[key], title, label, "gradient" in key)
    try:
        assert fig.get_size_inches()[0] == pytest.approx(3.2)
        fig.canvas.draw()
        texts = texts_inside(fig)
        assert any(t.get_text() == label for t in texts)  # the colour bar names the quantity
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
        # the ratio it marks is the closed forms' at z = 8: |dCE/dw| / |dL2/dw| = 1 / (2 yhat (1 - yhat))
        ratio = 1 / (2 * p1.sigmoid(np.float64(8.0)) * p1.sigmoid(np.float64(-8.0)))
        assert any(f"CE/L2 = {ratio:,.0f}×" in t.get_text() for t in texts)
    finally:
        plt.close(fig)


def test_part1_imports_no_other_part_and_no_torch(repo_root: Path) -> None:
    code = ("import sys; import part1_loss_gradient; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'part2_fc', 'part3_line', "
            "'part3_detection')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo_root,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The CLI with its defaults, run twice into two fresh folders; what it prints is kept beside each."""
    outs = tmp_path_factory.mktemp("run1") / "figs", tmp_path_factory.mktemp("run2") / "figs"
    for out in outs:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert p1.run_main(p1.main, ["--out", str(out)]) == 0
        (out.parent / "stdout.txt").write_text(printed.getvalue())
    return outs


def test_cli_records_and_prints_the_gradient_check(two_runs: tuple[Path, Path]) -> None:
    out = two_runs[0]
    recorded = json.loads((out / "part1_loss_gradient.json").read_text())["gradient_check"]
    assert set(recorded) == {"l2", "ce", "relu_l2"}
    W, B = p1.weight_bias_grid(4.0, 101)
    for name, (loss, gradient, kink) in p1.LOSSES.items():
        assert recorded[name] == p1.check_gradient(loss, gradient, W, B, 1.0, 0.5, kink)
        assert recorded[name]["passed"] and 0 < recorded[name]["max_rel_diff"] < 1e-6
        assert recorded[name]["max_abs_diff"] < 1e-6 * (15.0 if name == "relu_l2" else 0.5)
    lines = [line for line in (out.parent / "stdout.txt").read_text().splitlines() if "gradient check" in line]
    assert len(lines) == 1 and "h = 1e-06" in lines[0] and "all within 1e-06" in lines[0], lines
    for name in recorded:
        assert f"{name} {recorded[name]['max_rel_diff']:.1e}" in lines[0]


def test_cli_figures_have_the_report_sizes_at_200_dpi(two_runs: tuple[Path, Path]) -> None:
    out = two_runs[0]
    for name, _, file, _ in [(f["id"], f["question"], f["file"], f["shows"])
                             for f in json.loads((out / "part1_loss_gradient.json").read_text())["figures"]]:
        width, height = png_size(out / file)
        assert width == (1300 if name == "comparison" else 640), file  # 6.5 in and 3.2 in at 200 dpi
        assert height < width, file


def test_cli_writes_every_figure_and_the_json(two_runs: tuple[Path, Path]) -> None:
    out = two_runs[0]
    assert {path.name for path in out.iterdir()} == EXPECTED_FILES  # no temporary files left
    results = json.loads((out / "part1_loss_gradient.json").read_text())
    assert set(results) == {"config", "versions", "figures", "z_range", "saturated_share",
                            "saturation_threshold", "losses", "corners", "gradient_check"}
    assert results["saturation_threshold"] == p1.SATURATED
    assert results["config"] == {"extent": 4.0, "grid": 101, "x": 1.0, "y": 0.5}
    assert results["versions"]["torch"] == torch.__version__
    listed = {figure["file"] for figure in results["figures"]}
    assert listed == EXPECTED_FILES - {"part1_loss_gradient.json"}
    assert [f["question"] for f in results["figures"][:6]] == ["1.1", "1.2", "1.3", "1.4", "1.5", "1.6"]
    for name in listed:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The measured 1.6 numbers agree with the closed forms at the corners and with each other.
    assert results["z_range"] == [-8.0, 8.0]
    corner = results["corners"]["w_pos_b_pos"]
    assert corner["z"] == 8.0
    assert corner["l2_grad"] == pytest.approx(float(p1.l2_gradient_w(np.float64(8.0), 1.0, 0.5)), rel=1e-12)
    assert corner["ce_grad"] == pytest.approx(float(p1.sigmoid(np.float64(8.0))) - 0.5, rel=1e-12)
    assert corner["ratio_ce_to_l2"] == pytest.approx(abs(corner["ce_grad"] / corner["l2_grad"]), rel=1e-12)
    assert corner["ratio_ce_to_l2"] > 1000
    at_optimum = results["corners"]["w_pos_b_neg"]  # z = 0: yhat = y, both gradients vanish
    assert at_optimum["z"] == 0.0 and at_optimum["ratio_ce_to_l2"] is None
    l2, ce = results["losses"]["l2"], results["losses"]["ce"]
    assert l2["grad_abs_max"] == pytest.approx(0.0962, abs=5e-4)  # peak of the L2 gradient, |z| ~ 1.3
    assert abs(l2["grad_abs_max_z"]) == pytest.approx(1.28)  # the grid point nearest |z| = 1.317
    assert ce["grad_abs_max"] == pytest.approx(corner["ce_grad"]) and abs(ce["grad_abs_max_z"]) == 8.0
    assert l2["loss_min"] == 0.0 and l2["loss_max"] < 0.25
    assert ce["loss_min"] == pytest.approx(np.log(2.0))  # the target's own entropy: CE's floor at y = 0.5
    assert ce["grad_abs_mean_saturated"] > 30 * l2["grad_abs_mean_saturated"]
    assert "grad_abs_mean_saturated" not in results["losses"]["relu_l2"]


def test_cli_outputs_are_byte_identical_across_runs(two_runs: tuple[Path, Path]) -> None:
    first, second = two_runs
    for name in sorted(EXPECTED_FILES):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_measurements_at_extent_50_are_finite_and_json_ready() -> None:
    results = p1.measure_1_6(p1.neuron_surfaces(50.0, 101, 1.0, 0.5), 50.0, 1.0, 0.5)
    json.dumps(results, allow_nan=False)  # what write_json does: fails on NaN or infinity
    assert results["losses"]["ce"]["loss_max"] == pytest.approx(50.0)
    corner = results["corners"]["w_pos_b_pos"]
    assert corner["l2_grad"] > 0  # tiny (about 4e-44) but not rounded to 0
    assert corner["ratio_ce_to_l2"] > 1e40
    for surface in p1.neuron_surfaces(50.0, 101, 1.0, 0.5).values():
        assert np.isfinite(surface).all()


@pytest.mark.parametrize(("flag", "value"), [
    ("--extent", "0"), ("--extent", "-1"), ("--extent", "abc"), ("--extent", "nan"), ("--extent", "inf"),
    ("--extent", "1e9"), ("--y", "2"), ("--y", "-0.1"), ("--x", "inf"), ("--grid", "1"), ("--grid", "2"),
    ("--grid", "100"), ("--grid", "ten"), ("--grid", "100001"),
])
def test_bad_flags_give_one_line_exit_2_and_write_nothing(flag: str, value: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert p1.run_main(p1.main, ["--out", str(out), flag, value]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in captured.err, captured.err
    assert not out.exists()


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "figures"
    target.write_text("keep me")
    assert p1.run_main(p1.main, ["--out", str(target)]) == 2
    assert "--out" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_script_bad_flag_from_the_command_line(tmp_path: Path, repo_root: Path) -> None:
    result = subprocess.run([sys.executable, str(repo_root / "part1_loss_gradient.py"), "--out",
                             str(tmp_path / "out"), "--extent", "0"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "part1_loss_gradient.py: error: argument --extent: '0' must be a finite number > 0"]
    assert not (tmp_path / "out").exists()


def test_run_main_returns_mains_status_and_turns_input_errors_into_exit_2(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert p1.run_main(lambda argv: 0, []) == 0
    assert p1.run_main(lambda argv: 3, []) == 3

    def bad_input(argv):
        raise p1.InputError("--thing: must be positive")

    assert p1.run_main(bad_input, []) == 2
    assert capsys.readouterr().err == "main: error: --thing: must be positive\n"

    def interrupted(argv):
        raise KeyboardInterrupt

    assert p1.run_main(interrupted, []) == 130
    assert "interrupted" in capsys.readouterr().err

    def bug(argv):
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):  # a bug is not bad input: it keeps its traceback
        p1.run_main(bug, [])


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        p1.main(["--help"])
    assert stop.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--out", "--extent", "--x", "--y", "--grid"):
        assert flag in help_text


def test_library_versions_match_the_imported_modules() -> None:
    versions = p1.library_versions()
    assert versions["torch"] == torch.__version__ == importlib.metadata.version("torch")
    assert versions["numpy"] == np.__version__
    assert set(versions) == {"python", "torch", "numpy", "matplotlib"}
