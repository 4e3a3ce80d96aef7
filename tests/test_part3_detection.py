"""Tests for part3_detection.py: the width rule, the two learning rates (every tensor's update), the
engine against a plain reference loop (float64), the regression stop on the full 64-image set
(float32), the controls' JSON, divergence and the CLI.

Tolerances (float64): engine and reference agree within 1e-9 relative over 30 iterations (summation
order only); one update computed two ways (one combined backward, two separate ones) within 1e-12.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import part3_detection as p32
import part3_line as p3
from part1_loss_gradient import load_dataset, run_main

F64 = p3.Config(image=(16, 16), width_head=True, dtype="float64")


def detection_batch(data_dir: Path) -> dict[str, np.ndarray]:
    return p3.batch_of(load_dataset(data_dir, "detection"))


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_main(p32.main, argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_width_is_correct_strictly_within_half_a_pixel() -> None:
    truth = torch.full((5,), 3.0, dtype=torch.float64)
    pred = torch.tensor([3.49, 3.5, 2.5, 2.51, 3.0], dtype=torch.float64)
    assert p32.width_accuracy(pred[:, None], truth[:, None]).tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert float(p32.width_l2(pred, truth)) == pytest.approx(float(((pred - 3) ** 2).mean()), rel=1e-15)


@pytest.mark.parametrize(("lr", "lr_reg"), [(0.1, 0.001), (0.05, 0.02)])
def test_one_step_moves_each_weight_by_lr_ce_grad_plus_lr_reg_l2_grad(standin_dir: Path, lr: float,
                                                                      lr_reg: float) -> None:
    batch = detection_batch(standin_dir)
    cfg = p3.replace(F64, lr=lr, lr_reg=lr_reg, max_iters=1)
    net = p3.initial_model(0, cfg)
    params = dict(net.named_parameters())
    logits, pred = net(torch.tensor(batch["x"]))
    ce = nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor(batch["y"]))
    l2 = ((pred - torch.tensor(batch["widths"])) ** 2).mean()
    g_ce = torch.autograd.grad(ce, list(params.values()), allow_unused=True, retain_graph=True)
    g_l2 = torch.autograd.grad(l2, list(params.values()), allow_unused=True)
    run0 = p3.train_seed(0, cfg, batch, p32.detection_task)  # one update, then the cap
    assert run0.stop == 1 and run0.iterations is None
    for (name, before), a, b in zip(params.items(), g_ce, g_l2, strict=True):
        assert (a is None) == name.startswith("reg.") and (b is None) == name.startswith("fc.")
        intended = lr * (a if a is not None else 0) + lr_reg * (b if b is not None else 0)
        torch.testing.assert_close(before.detach() - run0.params[name], intended, rtol=1e-12, atol=1e-15,
                                   msg=name)


class ReferenceNet(nn.Module):
    """Figure 4 with the width head, written out again: two heads off the conv2 features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 7), nn.Conv2d(16, 8, 7)
        self.fc, self.reg = nn.Linear(128, 1), nn.Linear(128, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1)
        return self.fc(f).squeeze(1), self.reg(f).squeeze(1)


def test_engine_equals_a_two_optimiser_reference_in_float64(standin_dir: Path) -> None:
    """The reference steps two optimisers, the classifier's at 0.1 on CE and the width's at 0.001
    on L2, both moving the shared conv layers: the handout's two learning rates, literally."""
    batch = detection_batch(standin_dir)
    x, y, widths = (torch.tensor(batch[k]) for k in ("x", "y", "widths"))
    runs = [p3.train_seed(s, p3.replace(F64, max_iters=30), batch, p32.detection_task) for s in [0, 1]]
    for r in runs:
        net = ReferenceNet().double()
        net.load_state_dict(p3.initial_model(r.seed, F64).state_dict())
        trunk = [*net.conv1.parameters(), *net.conv2.parameters()]
        heads = {"ce": (trunk + list(net.fc.parameters()), 0.1),
                 "l2": (trunk + list(net.reg.parameters()), 0.001)}
        curves: dict[str, list[float]] = {"ce": [], "l2": []}
        for _ in range(31):
            logits, pred = net(x)
            losses = {"ce": nn.functional.binary_cross_entropy_with_logits(logits, y),
                      "l2": ((pred - widths) ** 2).mean()}
            grads = {k: torch.autograd.grad(losses[k], heads[k][0], retain_graph=True) for k in losses}
            with torch.no_grad():
                for k, (tensors, lr) in heads.items():
                    curves[k].append(losses[k].item())
                    for p, g in zip(tensors, grads[k], strict=True):
                        p -= lr * g
        for k, curve in curves.items():
            np.testing.assert_allclose(r.curves[k], curve, rtol=1e-9, atol=0, err_msg=k)


def test_regression_stop_on_the_full_detection_set(standin_dir: Path) -> None:
    """float32, 64 images: the run stops at the first iteration where every width is within 0.5,
    checked from the returned weights with a plain forward pass, at the stop and one update before."""
    batch = detection_batch(standin_dir)
    cfg = p3.Config(image=(16, 16), width_head=True)
    x, widths = torch.tensor(batch["x"]).float(), torch.tensor(batch["widths"]).float()

    def width_errors(r: p3.SeedRun) -> torch.Tensor:
        with torch.no_grad():
            return (p3.trained_model(r, cfg)(x)[1] - widths).abs()

    done = p3.train_seed(10, cfg, batch, p32.detection_task)
    assert done.iterations is not None and done.iterations == done.stop
    accuracy = done.curves["width_accuracy"]
    assert accuracy[-1] == 1.0 and (accuracy[:-1] < 1.0).all()
    assert bool((width_errors(done) < 0.5).all())
    assert done.final("max_width_error") == pytest.approx(float(width_errors(done).max()), abs=1e-4)
    before = p3.train_seed(10, p3.replace(cfg, max_iters=done.stop - 1), batch, p32.detection_task)
    assert before.iterations is None and not bool((width_errors(before) < 0.5).all())
    assert p32.width_l2_fall_20x(done) == p32.first_iteration(done.curves["l2"] < done.curves["l2"][0] / 20)


def test_huge_width_learning_rate_diverges(standin_dir: Path) -> None:
    cfg = p3.Config(image=(16, 16), width_head=True, lr_reg=1e6, max_iters=40)
    for r in [p3.train_seed(s, cfg, detection_batch(standin_dir), p32.detection_task) for s in [0, 1]]:
        assert r.diverged and r.iterations is None and not np.isfinite(r.curves["objective"][-1])


@pytest.mark.parametrize(("flags", "message"), [
    (["--lr-reg", "0"], "--lr-reg"),
    (["--lr-reg", "nan"], "--lr-reg"),
    (["--seeds", "-2"], "--seeds"),
    (["--padding", "half"], "--padding"),
    (["--max-iters", "ten"], "--max-iters"),
    (["--device", "tpu"], "--device"),
])
def test_bad_flags_one_line_exit_2_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   flags: list[str], message: str) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = run(["--out", str(out), *flags], capsys)
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1 and message in stderr
    assert not out.exists()


def test_cli_controls_layout_and_same_bytes_on_rerun(tmp_path: Path, standin_dir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["--data-dir", str(standin_dir), "--out", str(out), "--seeds", "2", "--max-iters", "8",
            "--control-no-width-head", "--control-width-lr-x10", "--workers", "1", "--quiet"]
    assert run(argv, capsys)[0] == 0
    first = (out / "part3_detection.json").read_bytes()
    results = json.loads(first)
    assert set(results["figures"]) == {f"part3_detection_{name}.png" for name in (
        "ce_loss", "accuracy", "l2_loss", "regression_accuracy", "kernels", "feature_maps",
        "width_scatter", "share_reached", "loss_band")}
    assert {p.name for p in out.iterdir()} == set(results["figures"]) | {"part3_detection.json"}
    assert results["width_tolerance"] == 0.5 and "comparison_line" not in results
    assert results["torch_threads"] == 1 and results["workers"] == 1
    assert results["config"]["dtype"] == "float32" and results["config"]["diverge_factor"] is None
    net = p3.ConvNet((16, 16), "valid", width_head=True)
    assert results["network"]["parameters"] == sum(p.numel() for p in net.parameters())
    assert results["network"]["parameters"] == (49 + 1) * 16 + (16 * 49 + 1) * 8 + 2 * (128 + 1)
    for key in ("iterations", "classification_iterations", "width_l2_fall_20x", "max_width_error",
                "final_regression_accuracy", "final_ce_loss"):
        assert len(results[key]) == 2
    assert results["max_width_error"][0] is not None and results["single"]["percentile"] == 0.0
    no_head, x10 = results["controls"]["no_width_head"], results["controls"]["width_lr_x10"]
    assert len(no_head["iterations"]) == 2 and no_head["summary"]["n_seeds"] == 2
    assert x10["lr_reg"] == 0.01 and len(x10["iterations"]) == 2 and x10["summary"]["n_seeds"] == 2
    assert set(results["conv2_class_means"]) == {"0", "1"}
    assert run(argv, capsys)[0] == 0
    assert (out / "part3_detection.json").read_bytes() == first
    plain = [a for a in argv if not a.startswith("--control")]
    assert run(plain, capsys)[0] == 0  # without the control flags: null
    assert json.loads((out / "part3_detection.json").read_text())["controls"] == {
        "no_width_head": None, "width_lr_x10": None}
