"""Tests for part3_detection.py: the two learning rates, the width rule, the regression stop,
batched == plain with the width head, divergence, the CLI.

Tolerances (float64): as in test_part3_line.py, engines agree to 1e-12 + 1e-9 |value|. The
update check compares lr * grad computed two ways (one combined backward against two separate
ones): they differ by rounding only, |difference| <= 1e-15 + 1e-12 |update|.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import part3_detection as p32
import part3_line as p3
from part1_loss_gradient import run_main
from part2_fc import DTYPE, load_dataset

ENGINE_TOL = {"rtol": 1e-9, "atol": 1e-12}
SMALL = np.r_[0:3, 32:35]  # 3 diamonds and 3 squares of the stand-in set: regression 100% in < 80 steps


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One torch thread (see test_part3_line.py: two threads stall on a shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def detection_tensors(data_dir: Path, rows: np.ndarray | slice = slice(None),
                      crop: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images x (N, 1, H, W), labels y (N,) and widths (N,) of the detection set (a subset of rows,
    top-left crop x crop when given)."""
    data = load_dataset(data_dir, "detection")
    assert data.widths is not None
    images = data.images[rows] if crop is None else data.images[rows, :crop, :crop]
    return (torch.tensor(images[:, None], dtype=DTYPE), torch.tensor(data.labels[rows], dtype=DTYPE),
            torch.tensor(data.widths[rows], dtype=DTYPE))


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_main(p32.main, argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the rules --------------------------------------------------------------------------------


def test_width_is_correct_strictly_within_half_a_pixel() -> None:
    truth = torch.tensor([3.0, 3.0, 3.0, 3.0, 3.0], dtype=DTYPE)
    pred = torch.tensor([3.49, 3.5, 2.5, 2.51, 3.0], dtype=DTYPE)
    assert p3.width_accuracy(pred[:, None], truth[:, None]).tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert float(p3.width_accuracy(pred, truth)) == 3 / 5
    assert float(p3.width_l2(pred, truth)) == pytest.approx(np.mean((pred.numpy() - 3) ** 2), rel=1e-15)


@pytest.mark.parametrize("engine", ["plain", "batched"])
@pytest.mark.parametrize(("lr", "lr_reg"), [(0.1, 0.001), (0.05, 0.02)])
def test_one_step_moves_each_weight_by_lr_ce_grad_plus_lr_reg_l2_grad(
        standin_dir: Path, engine: str, lr: float, lr_reg: float) -> None:
    x, y, widths = detection_tensors(standin_dir)
    geo = p3.conv_geometry((16, 16), "valid")
    cfg = p3.ConvConfig(lr=lr, lr_reg=lr_reg, max_iters=1)
    net = p3.initial_model(0, geo, cfg, regression=True)
    params = dict(net.named_parameters())
    logits, pred = net(x)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    l2 = ((pred - widths) ** 2).mean()
    g_ce = dict(zip(params, torch.autograd.grad(ce, list(params.values()), allow_unused=True,
                                                retain_graph=True), strict=True))
    g_l2 = dict(zip(params, torch.autograd.grad(l2, list(params.values()), allow_unused=True), strict=True))
    # each head learns from its own loss only; the conv layers from both
    assert g_ce["reg.weight"] is None and g_l2["fc.weight"] is None
    runs = p3.ENGINES[engine]([0], x, y, widths, geo, cfg, True)
    assert runs.iterations == [None] and runs.diverged_at == [None]  # one update, then the cap
    for name, before in params.items():
        zero = torch.zeros_like(before)
        intended = lr * (g_ce[name] if g_ce[name] is not None else zero) \
            + lr_reg * (g_l2[name] if g_l2[name] is not None else zero)
        change = before.detach() - runs.final_params[0][name]
        assert intended.abs().max() > 0
        torch.testing.assert_close(change, intended, rtol=1e-12, atol=1e-15, msg=name)


def manual_regression_stop(x: torch.Tensor, y: torch.Tensor, widths: torch.Tensor, seed: int,
                           geo: p3.Geometry, max_iters: int) -> tuple[int | None, int | None]:
    """(updates before 100% regression accuracy, before 100% classification accuracy), by the
    direct loop: two SGD optimisers, the classifier's at 0.1 on CE, the width's at 0.001 on L2,
    both stepping the shared conv layers."""
    net = p3.initial_model(seed, geo, p3.ConvConfig(), regression=True)
    trunk = [*net.conv1.parameters(), *net.conv2.parameters()]
    opt_ce = torch.optim.SGD(trunk + list(net.fc.parameters()), lr=0.1)
    opt_l2 = torch.optim.SGD(trunk + list(net.reg.parameters()), lr=0.001)
    class_stop = None
    for t in range(max_iters + 1):
        logits, pred = net(x)
        if class_stop is None and bool(((logits > 0) == (y == 1)).all()):
            class_stop = t
        if bool(((pred - widths).abs() < 0.5).all()):
            return t, class_stop
        ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        l2 = ((pred - widths) ** 2).mean()
        opt_ce.zero_grad()
        opt_l2.zero_grad()
        g_ce = torch.autograd.grad(ce, trunk + list(net.fc.parameters()), retain_graph=True)
        g_l2 = torch.autograd.grad(l2, trunk + list(net.reg.parameters()))
        for p, g in zip(trunk + list(net.fc.parameters()), g_ce, strict=True):
            p.grad = g
        opt_ce.step()
        for p, g in zip(trunk + list(net.reg.parameters()), g_l2, strict=True):
            p.grad = g
        opt_l2.step()
    return None, class_stop


def test_regression_stop_and_first_classification_100(standin_dir: Path) -> None:
    x, y, widths = detection_tensors(standin_dir, SMALL)
    geo = p3.conv_geometry((16, 16), "valid")
    expected, expected_class = manual_regression_stop(x, y, widths, 2, geo, 150)
    assert expected is not None and expected_class is not None and expected_class < expected
    for engine in ("plain", "batched"):
        runs = p3.ENGINES[engine]([2], x, y, widths, geo, p3.ConvConfig(max_iters=150), True)
        assert runs.iterations == [expected], engine
        assert p32.classification_iterations(runs) == [expected_class]
        assert runs.reg_accuracies is not None
        reg = runs.reg_accuracies[:, 0]
        assert reg[expected] == 1.0 and (reg[:expected] < 1).all() and np.isnan(reg[expected + 1:]).all()


@pytest.mark.parametrize(("crop", "padding"), [(None, "valid"), (8, "same")])
def test_batched_equals_plain_with_the_width_head(standin_dir: Path, crop: int | None, padding: str) -> None:
    x, y, widths = detection_tensors(standin_dir, SMALL if crop is None else slice(None), crop)
    geo = p3.conv_geometry(tuple(x.shape[2:]), padding)
    cfg = p3.ConvConfig(max_iters=60 if crop is None else 10)
    seeds = [0, 1, 2] if crop is None else [0, 1]
    plain = p3.train_plain(seeds, x, y, widths, geo, cfg, True)
    batched = p3.train_batched(seeds, x, y, widths, geo, cfg, True)
    assert batched.iterations == plain.iterations and batched.diverged_at == plain.diverged_at
    if crop is None:
        assert plain.iterations[2] is not None and None in plain.iterations  # a stop and a cap
    for name, history in plain.histories().items():
        np.testing.assert_allclose(batched.histories()[name], history, equal_nan=True, **ENGINE_TOL)


def test_huge_width_learning_rate_diverges_per_seed(standin_dir: Path) -> None:
    x, y, widths = detection_tensors(standin_dir)
    geo = p3.conv_geometry((16, 16), "valid")
    cfg = p3.ConvConfig(lr_reg=5.0, max_iters=20)
    runs = p3.train_batched([0, 1], x, y, widths, geo, cfg, True)
    assert all(d is not None for d in runs.diverged_at) and runs.iterations == [None, None]
    assert p3.train_plain([0, 1], x, y, widths, geo, cfg, True).diverged_at == runs.diverged_at


# --- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "message"), [
    (["--lr-reg", "0"], "--lr-reg"),
    (["--lr-reg", "-0.001"], "--lr-reg"),
    (["--lr-reg", "nan"], "--lr-reg"),
    (["--seeds", "-2"], "--seeds"),
    (["--padding", "half"], "--padding"),
    (["--max-iters", "ten"], "--max-iters"),
    (["--init-bias", "inf"], "--init-bias"),
])
def test_bad_flags_one_line_exit_2_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   flags: list[str], message: str) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = run(["--out", str(out), *flags], capsys)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and message in stderr and "Traceback" not in stderr
    assert not out.exists()


def test_cli_writes_figures_and_deterministic_json(tmp_path: Path, standin_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    line = {"data": {"provenance": "stand-in"}, "config": {"padding": "valid"}, "single": {"iterations": 26},
            "summary": {"n_seeds": 2, "reached": 2, "reach_rate": 1.0, "diverged": 0, "median": 26,
                        "q1": 26, "q3": 37, "p10": 26, "p90": 37}}
    (out / "part3_line.json").write_text(json.dumps(line))
    argv = ["--data-dir", str(standin_dir), "--out", str(out), "--seeds", "2", "--max-iters", "12", "--quiet"]
    code, stdout, _ = run(argv, capsys)
    assert code == 0 and "3.1 line dataset" in stdout
    first = (out / "part3_detection.json").read_bytes()
    results = json.loads(first)
    assert set(results["figures"]) == {
        f"part3_detection_{name}.png" for name in (
            "ce_loss", "accuracy", "l2_loss", "regression_accuracy", "kernels", "feature_maps",
            "width_scatter", "share_reached", "loss_band")}
    assert {p.name for p in out.iterdir()} == set(results["figures"]) | {"part3_detection.json",
                                                                          "part3_line.json"}
    assert results["iterations"] == [None, None] and len(results["classification_iterations"]) == 2
    assert results["config"]["lr_reg"] == 0.001 and results["network"]["parameters"] == 7338
    assert results["comparison_line"]["summary"]["median"] == 26
    for key in ("final_regression_accuracy", "final_classification_accuracy", "final_ce_loss",
                "final_l2_loss"):
        assert len(results[key]) == 2 and results[key][0] == results["single"][key]
    assert run(argv, capsys)[0] == 0
    assert (out / "part3_detection.json").read_bytes() == first


def test_cli_reports_divergence_and_writes_only_finite_numbers(tmp_path: Path, standin_dir: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, _ = run(["--data-dir", str(standin_dir), "--out", str(out), "--lr", "50",
                           "--max-iters", "20", "--quiet"], capsys)
    assert code == 0 and "diverged at iteration" in stdout
    results = json.loads((out / "part3_detection.json").read_text())  # strict JSON: no NaN in it
    assert results["diverged"] == [True] and results["iterations"] == [None]
    assert results["summary"]["diverged"] == 1 and results["summary"]["median"] is None
