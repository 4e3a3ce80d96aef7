"""Tests for part1_loss_gradient.py: closed-form gradients, stable cross-entropy, the CLI, run_main.

Tolerances, all in float64:
- closed form vs torch autograd over whole grids: |ours - torch| <= 1e-15 + 1e-10 |torch|
  (the two differ only in rounding; far out in the tails torch's 1 - sigmoid(z) loses digits
  that ours keeps, which the absolute term covers: those gradients are below 1e-15 anyway);
- closed form vs central finite differences (L(w + h) - L(w - h)) / 2h with h = 1e-6:
  |ours - fd| <= 1e-8 + 1e-6 |fd| (truncation ~h^2 = 1e-12, rounding ~1e-16 / h = 1e-10).
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import part1_loss_gradient as p1

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


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The CLI with its defaults, run twice into two fresh folders."""
    outs = tmp_path_factory.mktemp("run1") / "figs", tmp_path_factory.mktemp("run2") / "figs"
    for out in outs:
        assert p1.run_main(p1.main, ["--out", str(out)]) == 0
    return outs


def test_cli_writes_every_figure_and_the_json(two_runs: tuple[Path, Path]) -> None:
    out = two_runs[0]
    assert {path.name for path in out.iterdir()} == EXPECTED_FILES  # no temporary files left
    results = json.loads((out / "part1_loss_gradient.json").read_text())
    assert set(results) == {"config", "versions", "figures", "z_range", "saturated_share",
                            "saturation_threshold", "losses", "corners"}
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
